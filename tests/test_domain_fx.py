"""FX rates by date, inverse pairs, rounding per currency, and batch conversion that never loses a cent."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.fx import (
    Converted,
    FxTable,
    RateDatePolicy,
    allocate_rounding,
    convert_batch,
    rate_date_for,
)
from ledgerbridge.model.entities import FxRate

D = Decimal
day = dt.date


def fx(a: str, b: str, rate: str, on: dt.date) -> FxRate:
    return FxRate(from_currency=a, to_currency=b, rate=D(rate), rate_date=on)


TABLE = FxTable.from_rates(
    [
        fx("GBP", "USD", "1.2500", day(2026, 1, 2)),
        fx("GBP", "USD", "1.2700", day(2026, 1, 30)),
        fx("EUR", "USD", "1.0800", day(2026, 1, 2)),
        fx("USD", "EUR", "0.9300", day(2026, 1, 30)),  # published both ways on different days
        fx("USD", "JPY", "150.25", day(2026, 1, 2)),
    ]
)


# ---------------------------------------------------------------- examples


def test_latest_rate_on_or_before_the_date() -> None:
    assert TABLE.rate_for("GBP", "USD", day(2026, 1, 2)) == (D("1.2500"), day(2026, 1, 2))
    assert TABLE.rate_for("GBP", "USD", day(2026, 1, 29)) == (D("1.2500"), day(2026, 1, 2))
    assert TABLE.rate_for("GBP", "USD", day(2026, 3, 1)) == (D("1.2700"), day(2026, 1, 30))


def test_inverse_is_derived_to_ten_places() -> None:
    assert TABLE.rate_for("USD", "GBP", day(2026, 1, 5)) == (D("0.8000000000"), day(2026, 1, 2))
    assert TABLE.is_derived("USD", "GBP", day(2026, 1, 5))
    # 1/1.27 = 0.78740157480314... -> 0.7874015748
    assert TABLE.rate_for("USD", "GBP", day(2026, 2, 1))[0] == D("0.7874015748")


def test_published_and_derived_mix_by_date() -> None:
    # EUR->USD published on 2 Jan; USD->EUR published on 30 Jan: each direction uses the most recent of the two
    assert TABLE.rate_for("EUR", "USD", day(2026, 1, 15)) == (D("1.0800"), day(2026, 1, 2))
    assert not TABLE.is_derived("EUR", "USD", day(2026, 1, 15))
    assert TABLE.rate_for("EUR", "USD", day(2026, 2, 15)) == ((1 / D("0.93")).quantize(D("1e-10")), day(2026, 1, 30))
    assert TABLE.rate_for("USD", "EUR", day(2026, 2, 15)) == (D("0.9300"), day(2026, 1, 30))


def test_direct_rate_wins_over_derived_on_the_same_day() -> None:
    t = FxTable.from_rates([fx("EUR", "GBP", "0.85", day(2026, 1, 2)), fx("GBP", "EUR", "1.19", day(2026, 1, 2))])
    assert t.rate_for("GBP", "EUR", day(2026, 1, 2)) == (D("1.19"), day(2026, 1, 2))
    assert t.rate_for("EUR", "GBP", day(2026, 1, 2)) == (D("0.85"), day(2026, 1, 2))


def test_identity_rate_is_one_on_the_date() -> None:
    assert TABLE.rate_for("USD", "usd", day(2020, 5, 5)) == (D(1), day(2020, 5, 5))
    c = TABLE.convert(D("10.005"), "USD", "USD", day(2020, 5, 5))
    assert c == Converted(D("10.01"), "USD", D(1), day(2020, 5, 5), D("10.005"))


def test_missing_rate_is_an_error_never_one() -> None:
    with pytest.raises(DomainError) as ei:
        TABLE.rate_for("GBP", "USD", day(2025, 12, 31))
    e = ei.value
    assert e.rule == "fx.missing_rate"
    assert e.item == "fx GBP->USD on 2025-12-31"
    assert "no GBP/USD rate (or inverse) on or before 2025-12-31" in e.message
    assert "first GBP/USD rate is on 2026-01-02" in e.message
    assert "load a GBP/USD or USD/GBP rate" in e.fix
    with pytest.raises(DomainError, match="no GBP/JPY rate"):
        TABLE.convert(D(1), "GBP", "JPY", day(2026, 6, 1))  # no cross rates are invented


def test_unknown_currency_is_a_domain_error() -> None:
    with pytest.raises(DomainError) as ei:
        TABLE.rate_for("GBP", "XYZ", day(2026, 1, 5))
    assert ei.value.rule == "fx.unknown_currency" and "XYZ" in ei.value.message
    with pytest.raises(DomainError, match=r"fx\.unknown_currency"):
        allocate_rounding([D(1)], D(1), "ZZZ")


def test_conflicting_published_rates_refused() -> None:
    with pytest.raises(DomainError) as ei:
        FxTable.from_rates([fx("EUR", "USD", "1.08", day(2026, 1, 2)), fx("EUR", "USD", "1.09", day(2026, 1, 2))])
    assert ei.value.rule == "fx.conflicting_rate" and "1.08 and 1.09" in ei.value.message
    with pytest.raises(DomainError, match="same-currency rate must be 1"):
        FxTable.from_rates([fx("EUR", "EUR", "1.01", day(2026, 1, 2))])
    # an identical duplicate is harmless
    FxTable.from_rates([fx("EUR", "USD", "1.08", day(2026, 1, 2)), fx("EUR", "USD", "1.08", day(2026, 1, 2))])


def test_convert_rounds_half_up_to_minor_unit() -> None:
    c = TABLE.convert(D("100.02"), "GBP", "USD", day(2026, 1, 10))  # 125.025 -> 125.03
    assert (c.amount, c.currency, c.rate, c.rate_date, c.unrounded) == (
        D("125.03"),
        "USD",
        D("1.2500"),
        day(2026, 1, 2),
        D("125.025000"),
    )
    assert TABLE.convert(D("10.01"), "USD", "JPY", day(2026, 1, 10)).amount == D("1504")  # 1504.0025, JPY has 0
    assert TABLE.convert(D("-100.02"), "GBP", "USD", day(2026, 1, 10)).amount == D("-125.03")  # half away from 0


def test_rate_date_policy() -> None:
    txn, end = day(2026, 1, 14), day(2026, 1, 31)
    assert rate_date_for(RateDatePolicy.TRANSACTION_DATE, txn, end) == txn
    assert rate_date_for(RateDatePolicy.PERIOD_END, txn, end) == end
    assert rate_date_for(RateDatePolicy("period_end"), txn, end) == end


def test_allocation_example_three_thirds() -> None:
    # 100 split in three: 33.333.. each; the spare cent goes to the first part (ties by index)
    third = D(100) / 3
    assert allocate_rounding([third, third, third], D(100), "USD") == [D("33.34"), D("33.33"), D("33.33")]
    # largest remainder wins over index
    assert allocate_rounding([D("1.001"), D("1.009"), D("1.000")], D("3.01"), "USD") == [
        D("1.00"),
        D("1.01"),
        D("1.00"),
    ]
    assert allocate_rounding([D("0.5"), D("0.5")], D("1"), "JPY") == [D(1), D(0)]
    assert allocate_rounding([], D(0), "USD") == []
    with pytest.raises(DomainError) as ei:
        allocate_rounding([], D("0.01"), "USD")
    assert ei.value.rule == "fx.allocation_without_parts"


def test_allocation_refuses_floats_and_nan() -> None:
    with pytest.raises(DomainError) as ei:
        allocate_rounding([D(1), 0.5], D("1.5"), "USD")  # type: ignore[list-item]
    e = ei.value
    assert (e.rule, e.item) == ("fx.bad_amount", "rounding target #1")
    assert "0.5 is not a finite Decimal amount" in e.message and "never floats" in e.fix
    with pytest.raises(DomainError, match=r"fx\.bad_amount"):
        allocate_rounding([D("NaN")], D(0), "USD")


def test_convert_batch_summary_equals_sources() -> None:
    # three lines of 0.005 GBP each at 1.25: each alone rounds to 0.01 USD (0.03 total), the summary is 0.02
    parts, total = TABLE.convert_batch([D("0.005")] * 3, "GBP", "USD", day(2026, 1, 5))
    assert total.amount == D("0.02") and total.rate == D("1.2500") and total.rate_date == day(2026, 1, 2)
    assert sum(p.amount for p in parts) == total.amount
    assert [p.amount for p in parts] == [D("0.01"), D("0.01"), D("0.00")]


# ---------------------------------------------------------------- properties

currencies = st.sampled_from(["USD", "JPY", "BHD", "EUR"])
amounts = st.decimals(min_value=D("-1000000"), max_value=D("1000000"), places=4, allow_nan=False, allow_infinity=False)
rates = st.decimals(min_value=D("0.0001"), max_value=D("500"), places=6, allow_nan=False, allow_infinity=False)


def _q(currency: str) -> Decimal:
    return {"USD": D("0.01"), "EUR": D("0.01"), "JPY": D(1), "BHD": D("0.001")}[currency]


@settings(max_examples=300, deadline=None)
@given(st.lists(amounts, max_size=40), currencies)
def test_allocation_never_loses_or_creates_a_unit(targets: list[Decimal], currency: str) -> None:
    total = sum(targets, D(0))
    parts = allocate_rounding(targets, total, currency)
    q = _q(currency)
    assert sum(parts, D(0)) == total.quantize(q, rounding=ROUND_HALF_UP)
    for p, t in zip(parts, targets, strict=True):
        assert p == p.quantize(q)  # whole minor units
        assert abs(p - t) < q  # never more than one unit away from its own target


@settings(max_examples=200, deadline=None)
@given(st.lists(amounts, min_size=1, max_size=20), amounts, currencies)
def test_allocation_hits_any_requested_total(targets: list[Decimal], total: Decimal, currency: str) -> None:
    parts = allocate_rounding(targets, total, currency)
    assert sum(parts, D(0)) == total.quantize(_q(currency), rounding=ROUND_HALF_UP)
    assert parts == allocate_rounding(list(targets), total, currency)  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.lists(amounts, min_size=1, max_size=40), rates, currencies)
def test_batch_conversion_sums_exactly(sources: list[Decimal], rate: Decimal, currency: str) -> None:
    parts, total = convert_batch(sources, rate, currency, day(2026, 1, 31))
    q = _q(currency)
    assert total.amount == (sum(sources, D(0)) * rate).quantize(q, rounding=ROUND_HALF_UP)
    assert sum((p.amount for p in parts), D(0)) == total.amount
    for p, s in zip(parts, sources, strict=True):
        assert p.unrounded == s * rate
        assert abs(p.amount - s * rate) < q
        assert (p.currency, p.rate, p.rate_date) == (currency, rate, day(2026, 1, 31))


pairs = st.sampled_from([("EUR", "USD"), ("USD", "EUR"), ("GBP", "USD"), ("USD", "GBP")])
published = st.lists(
    st.tuples(pairs, rates, st.dates(min_value=day(2026, 1, 1), max_value=day(2026, 3, 31))), max_size=25
)


@settings(max_examples=200, deadline=None)
@given(published, pairs, st.dates(min_value=day(2025, 12, 25), max_value=day(2026, 4, 10)))
def test_rate_lookup_matches_brute_force(
    rows: list[tuple[tuple[str, str], Decimal, dt.date]], pair: tuple[str, str], on: dt.date
) -> None:
    # keep the first rate per (pair, day) so the feed is consistent
    feed: dict[tuple[tuple[str, str], dt.date], Decimal] = {}
    for p, r, d in rows:
        feed.setdefault((p, d), r)
    table = FxTable.from_rates([fx(p[0], p[1], str(r), d) for (p, d), r in feed.items()])
    src, dst = pair
    # brute force: every candidate (date, is_direct, rate) on or before the date; latest date, direct first
    cands = [(d, 1, r) for (p, d), r in feed.items() if p == (src, dst) and d <= on]
    cands += [(d, 0, (1 / r).quantize(D("1e-10"), rounding=ROUND_HALF_UP)) for (p, d), r in feed.items()
              if p == (dst, src) and d <= on]
    if not cands:
        with pytest.raises(DomainError):
            table.rate_for(src, dst, on)
        return
    best = max(cands, key=lambda c: (c[0], c[1]))
    assert table.rate_for(src, dst, on) == (best[2], best[0])
