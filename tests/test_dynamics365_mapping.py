"""The pure Dynamics 365 mapping: display values in the integration format (refusing what F&O would misread), the
per-line exchange rate that gives our functional amount back to the cent (the FX rounding line included), period
statuses both ways, and journals refused before sending with the reason."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledgerbridge.connectors.dynamics365.mapping import (
    PERIOD_STATUS,
    PERIOD_STATUS_TO_FO,
    D365Mapping,
    display_value,
    exchange_rate,
    journal_plan,
)
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType

M = D365Mapping(companies={"US01": "usmf", "UK01": "gbsi"}, account_map={"5000": "600100"},
                dimensions=("cost_center", "project"), ignore_dimensions=frozenset({"location"}), delimiter="|")


def test_display_values_follow_the_integration_format() -> None:
    assert display_value("5000", {"cost_center": "CC-1", "project": "PRJ-1"}, M) == ("600100|CC-1|PRJ-1", [])
    assert display_value("2100", {"project": "PRJ-1"}, M) == ("2100||PRJ-1", [])  # empty middle segment kept
    assert display_value("2100", {"cost_center": "CC-1"}, M) == ("2100|CC-1", [])  # trailing empties dropped
    assert display_value("2100", {"location": "LON"}, M) == ("2100", [])  # deliberately not sent
    _, why = display_value("2100", {"department": "D1"}, M)
    assert why and "department" in why[0] and "options.dimensions" in why[0]
    _, why = display_value("2100", {"project": "PRJ|1"}, M)
    assert why and "delimiter" in why[0]


def line(no: int, amount: str, functional: str, *, debit: bool = True) -> JournalLine:
    a, f = Decimal(amount), Decimal(functional)
    return JournalLine(line_no=no, account="1200", currency="USD", functional_currency="GBP",
                       debit=a if debit else Decimal(0), credit=Decimal(0) if debit else a,
                       functional_debit=f if debit else Decimal(0), functional_credit=Decimal(0) if debit else f,
                       fx_rate=Decimal("0.79"))


@given(cents=st.integers(min_value=1, max_value=10**11), rate=st.decimals(min_value="0.01", max_value="200",
                                                                           places=6),
       nudge=st.sampled_from([-2, -1, 0, 1, 2]))
def test_the_exchange_rate_reproduces_the_functional_amount(cents: int, rate: Decimal, nudge: int) -> None:
    amount = Decimal(cents) / 100
    # a line that absorbed a rounding difference is off the rate by a cent or two
    functional = (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) + Decimal(nudge) / 100
    if functional <= 0:
        return
    got, problems = exchange_rate(line(1, str(amount), str(functional)))
    assert problems == []
    assert (amount * got / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) == functional


def test_functional_currency_lines_keep_rate_100() -> None:
    plain = JournalLine(line_no=1, account="5000", debit=Decimal("5"), currency="GBP")
    assert exchange_rate(plain) == (Decimal(100), [])


def test_period_statuses_round_trip() -> None:
    for ours in ("open", "closed", "locked"):
        assert PERIOD_STATUS[PERIOD_STATUS_TO_FO[ours]] == ours
    assert PERIOD_STATUS_TO_FO["closing"] == "Open"  # closing still accepts postings


def test_a_journal_plan_and_its_refusals() -> None:
    j = JournalEntry(id="UK01-2026-09-invoice-r01-0001", legal_entity_id="UK01", period="2026-09",
                     entry_date=dt.date(2026, 9, 30), journal_type=JournalType.INVOICE, description="inv",
                     lines=(line(1, "100.00", "79.01"), line(2, "100.00", "79.01", debit=False)))
    plan = journal_plan(j, M)
    assert plan.problems == [] and plan.company == "gbsi" and plan.header["Description"] == f"lb:{j.id}"
    assert [ln["TransDate"] for ln in plan.lines] == ["2026-09-30T12:00:00Z"] * 2
    assert plan.lines[0]["ExchangeRate"] == Decimal("79.01") and plan.lines[0]["CurrencyCode"] == "USD"
    long_id = j.model_copy(update={"id": "X" * 60, "legal_entity_id": "DE01"})
    bad = journal_plan(long_id, M)
    assert any("DE01 has no company" in p for p in bad.problems)
    assert any("longer than the 60 characters" in p for p in bad.problems)
