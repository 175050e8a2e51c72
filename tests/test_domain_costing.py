"""Costing: effective-dated, most-specific rate resolution and valuation of time and expenses."""

from __future__ import annotations

import datetime as dt
import itertools
import pickle
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.costing import (
    RateBook,
    cost_expense,
    cost_expenses_many,
    cost_many,
    cost_time,
    specificity,
    validate_rate_card,
)
from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.model.entities import (
    ApprovalStatus,
    ContractType,
    Expense,
    Project,
    RateCardLine,
    RateKind,
    Resource,
    TimeEntry,
)

D = Decimal
day = dt.date
COST, BILL = RateKind.COST, RateKind.BILL


def line(
    id: str,
    kind: RateKind,
    rate: str,
    start: dt.date,
    end: dt.date | None = None,
    *,
    res: str | None = None,
    role: str | None = None,
    proj: str | None = None,
    cur: str = "USD",
) -> RateCardLine:
    return RateCardLine(
        id=id, kind=kind, rate=D(rate), currency=cur, effective_from=start, effective_to=end,
        resource_id=res, role=role, project_id=proj,
    )


def project(id: str = "P1", currency: str = "USD") -> Project:
    return Project(
        id=id, name=id, customer_id="C1", legal_entity_id="US01", contract_type=ContractType.TIME_AND_MATERIALS,
        currency=currency, cost_center="CC-DEL-US", start_date=day(2025, 1, 1),
    )


def resource(id: str = "R1", role: str = "Consultant") -> Resource:
    return Resource(id=id, name=id, role=role, cost_center="CC-ADV-US", home_entity_id="US01")


def entry(
    hours: str = "7.5", on: dt.date = day(2026, 1, 15), billable: bool = True, *, proj: str = "P1", res: str = "R1"
) -> TimeEntry:
    return TimeEntry(
        id="TE-1", source_system="psa_files", version=2, project_id=proj, resource_id=res, work_date=on,
        hours=D(hours), billable=billable, approval_status=ApprovalStatus.APPROVED,
    )


CARD = [
    line("c-role", COST, "80.00", day(2025, 1, 1), role="Consultant"),
    line("c-res", COST, "95.50", day(2025, 6, 1), res="R1"),
    line("b-proj", BILL, "150.00", day(2025, 1, 1), proj="P1"),
    line("b-role-proj", BILL, "180.00", day(2025, 1, 1), day(2026, 1, 31), role="Consultant", proj="P1"),
]
BOOK = RateBook.from_lines(CARD)


# ---------------------------------------------------------------- examples


def test_cost_and_bill_a_billable_entry() -> None:
    c = cost_time(entry(), project(), resource(), BOOK)
    assert (c.cost_rate, c.cost_currency, c.cost_amount) == (D("95.50"), "USD", D("716.25"))  # resource beats role
    assert (c.bill_rate, c.bill_currency, c.billable_value) == (D("180.00"), "USD", D("1350.00"))
    assert (c.legal_entity_id, c.cost_center, c.project_id, c.resource_id) == ("US01", "CC-DEL-US", "P1", "R1")
    assert str(c.ref) == "psa_files:time_entry:TE-1@2" and c.hours == D("7.5") and c.billable


def test_effective_to_is_inclusive_then_falls_back() -> None:
    assert cost_time(entry(on=day(2026, 1, 31)), project(), resource(), BOOK).bill_rate == D("180.00")
    assert cost_time(entry(on=day(2026, 2, 1)), project(), resource(), BOOK).bill_rate == D("150.00")


def test_before_resource_rate_starts_role_rate_applies() -> None:
    assert cost_time(entry(on=day(2025, 5, 31)), project(), resource(), BOOK).cost_rate == D("80.00")


def test_non_billable_has_zero_bill_rate_and_value() -> None:
    c = cost_time(entry(billable=False), project(), resource(), BOOK)
    assert (c.bill_rate, c.billable_value, c.bill_currency) == (D(0), D("0.00"), "USD")
    assert c.cost_amount == D("716.25")


def test_non_billable_needs_no_bill_rate() -> None:
    book = RateBook.from_lines([line("c", COST, "50", day(2025, 1, 1), res="R1")])
    assert cost_time(entry(billable=False), project(), resource(), book).cost_amount == D("375.00")


def test_amounts_round_half_up_to_minor_unit() -> None:
    book = RateBook.from_lines(
        [line("c", COST, "33.33", day(2025, 1, 1), res="R1"), line("b", BILL, "15015", day(2025, 1, 1), proj="P1",
                                                                   cur="JPY")]
    )
    c = cost_time(entry("1.25"), project(currency="JPY"), resource(), book)
    assert c.cost_amount == D("41.66")  # 41.6625
    assert c.billable_value == D("18769")  # 18768.75 JPY, no minor unit
    c = cost_time(entry("0.15"), project(currency="JPY"), resource(), book)
    assert c.cost_amount == D("5.00")  # 4.9995 rounds up
    assert c.billable_value == D("2252")  # 2252.25


def test_new_rate_supersedes_open_ended_older_one_and_windows_override() -> None:
    book = RateBook.from_lines(
        [
            line("old", COST, "90", day(2025, 1, 1), res="R1"),
            line("new", COST, "100", day(2026, 1, 1), res="R1"),
            line("promo", COST, "70", day(2025, 3, 1), day(2025, 3, 31), res="R1"),
        ]
    )

    def rate(on: dt.date) -> Decimal:
        return book.rate_for(COST, resource_id="R1", role="Consultant", project_id="P1", on=on)[0]

    assert [rate(d) for d in (day(2025, 2, 28), day(2025, 3, 1), day(2025, 3, 31), day(2025, 4, 1),
                              day(2025, 12, 31), day(2026, 1, 1))] == [D(90), D(70), D(70), D(90), D(90), D(100)]


def test_precedence_chain() -> None:
    """resource+project > resource > role+project > role > project-only, each taking over when the more
    specific ones end."""
    card = [
        line("rp", COST, "5", day(2026, 1, 1), day(2026, 1, 1), res="R1", proj="P1"),
        line("r", COST, "4", day(2026, 1, 1), day(2026, 1, 2), res="R1"),
        line("lp", COST, "3", day(2026, 1, 1), day(2026, 1, 3), role="Consultant", proj="P1"),
        line("l", COST, "2", day(2026, 1, 1), day(2026, 1, 4), role="Consultant"),
        line("p", COST, "1", day(2026, 1, 1), day(2026, 1, 5), proj="P1"),
        line("other", COST, "9", day(2026, 1, 1), res="R2", role="Consultant", proj="P1"),
    ]
    book = RateBook.from_lines(reversed(card))
    got = [
        book.line_for(COST, resource_id="R1", role="Consultant", project_id="P1", on=day(2026, 1, d)).id
        for d in range(1, 6)
    ]
    assert got == ["rp", "r", "lp", "l", "p"]
    assert [specificity(ln) for ln in card[:5]] == [5, 4, 3, 2, 1]
    with pytest.raises(DomainError, match=r"rates\.missing_cost_rate"):
        book.line_for(COST, resource_id="R1", role="Consultant", project_id="P1", on=day(2026, 1, 6))


def test_missing_cost_rate_names_resource_role_project_and_date() -> None:
    book = RateBook.from_lines([line("b", BILL, "150", day(2025, 1, 1), proj="P1")])
    with pytest.raises(DomainError) as ei:
        cost_time(entry(on=day(2026, 1, 15)), project(), resource(), book)
    e = ei.value
    assert e.rule == "rates.missing_cost_rate"
    assert e.item == "time_entry psa_files:TE-1@2"
    assert e.message == "no cost rate for resource R1, role Consultant, project P1 on 2026-01-15"
    assert "never costed at zero" in e.fix
    assert str(e).startswith("time_entry psa_files:TE-1@2: no cost rate for resource R1")


def test_missing_bill_rate_for_billable_entry() -> None:
    book = RateBook.from_lines([line("c", COST, "50", day(2025, 1, 1), res="R1")])
    with pytest.raises(DomainError) as ei:
        cost_time(entry(), project(), resource(), book)
    assert ei.value.rule == "rates.missing_bill_rate"
    assert "no bill rate for resource R1, role Consultant, project P1 on 2026-01-15" in ei.value.message


def test_bill_rate_in_another_currency_than_the_project_is_refused() -> None:
    with pytest.raises(DomainError) as ei:
        cost_time(entry(), project(currency="EUR"), resource(), BOOK)
    e = ei.value
    assert e.rule == "rates.bill_currency_mismatch"
    assert "b-role-proj is in USD but project P1 bills in EUR" in e.message
    assert "EUR bill rate" in e.fix


def test_cost_currency_follows_the_cost_rate() -> None:
    book = RateBook.from_lines([line("c", COST, "60", day(2025, 1, 1), res="R1", cur="GBP")])
    c = cost_time(entry(billable=False), project(), resource(), book)
    assert (c.cost_currency, c.cost_amount, c.bill_currency) == ("GBP", D("450.00"), "USD")


def test_ambiguous_same_start_lines_raise_only_where_they_overlap() -> None:
    book = RateBook.from_lines(
        [
            line("a", COST, "90", day(2026, 1, 1), day(2026, 1, 10), res="R1"),
            line("b", COST, "95", day(2026, 1, 1), res="R1"),
        ]
    )
    with pytest.raises(DomainError) as ei:
        cost_time(entry(on=day(2026, 1, 5), billable=False), project(), resource(), book)
    assert ei.value.rule == "rates.ambiguous_rate"
    assert "a, b" in ei.value.message and "2026-01-05" in ei.value.message
    # after line a ends, b alone applies
    assert cost_time(entry(on=day(2026, 1, 11), billable=False), project(), resource(), book).cost_rate == D(95)


def test_mismatched_master_data_is_refused() -> None:
    with pytest.raises(DomainError) as ei:
        cost_time(entry(proj="P2"), project("P1"), resource(), BOOK)
    assert ei.value.rule == "costing.project_mismatch" and "P2" in ei.value.message
    with pytest.raises(DomainError, match=r"costing.resource_mismatch"):
        cost_time(entry(), project(), resource("R9"), BOOK)


def test_domain_error_and_violation_render_item_message_rule_fix() -> None:
    e = DomainError("time_entry psa_files:TE-1@2", "rates.missing_cost_rate", "no cost rate", "add one")
    assert isinstance(e, ValueError)
    assert str(e) == "time_entry psa_files:TE-1@2: no cost rate (rates.missing_cost_rate) — fix: add one"
    v = e.to_violation()
    assert v == Violation("time_entry psa_files:TE-1@2", "rates.missing_cost_rate", "no cost rate", "add one")
    assert str(v) == str(e)
    back = pickle.loads(pickle.dumps(v.to_error()))  # crosses process boundaries (durable steps) intact
    assert (back.item, back.rule, back.message, back.fix) == (e.item, e.rule, e.message, e.fix)


def test_validate_rate_card() -> None:
    card = [
        line("x1", COST, "90", day(2026, 1, 1), res="R1"),
        line("x2", COST, "95", day(2026, 1, 1), day(2026, 6, 30), res="R1"),
        line("x3", BILL, "95", day(2026, 1, 1), res="R1"),  # other kind: fine
        line("x4", COST, "95", day(2026, 1, 1), res="R1", proj="P1"),  # other scope: fine
        line("x4", COST, "99", day(2027, 1, 1), role="Analyst"),  # duplicate id
        line("x5", COST, "99", day(2027, 2, 1), role="Analyst"),  # later start: supersedes, fine
    ]
    v = validate_rate_card(card)
    assert sorted(x.rule for x in v) == ["rates.ambiguous_overlap", "rates.duplicate_line_id"]
    overlap = next(x for x in v if x.rule == "rates.ambiguous_overlap")
    assert overlap.item == "rate_card_line x1, x2"
    assert "cost rate lines for resource R1 all start on 2026-01-01" in overlap.message
    dup = next(x for x in v if x.rule == "rates.duplicate_line_id")
    assert (dup.item, dup.message) == ("rate_card_line x4", "2 rate-card lines share the id x4")
    assert validate_rate_card(CARD) == []


def test_cost_many_collects_violations_and_goes_on() -> None:
    entries = [
        entry(),
        entry(proj="P404"),
        entry(res="R404"),
        entry(on=day(2020, 1, 1)),  # before any cost rate
        entry("2", billable=False),
    ]
    costed, violations = cost_many(entries, {"P1": project()}, {"R1": resource()}, BOOK)
    assert len(costed) + len(violations) == len(entries)
    assert [c.cost_amount for c in costed] == [D("716.25"), D("191.00")]
    assert [v.rule for v in violations] == [
        "costing.unknown_project",
        "costing.unknown_resource",
        "rates.missing_cost_rate",
    ]
    assert violations[0].message == "project P404 is not in the master data"
    assert violations[0].item == "time_entry psa_files:TE-1@2"


def _expense(amount: str, currency: str = "USD", proj: str = "P1") -> Expense:
    return Expense(
        id="EX-1", source_system="psa_files", version=1, project_id=proj, resource_id="R1",
        expense_date=day(2026, 1, 9), amount=D(amount), currency=currency, category="travel", billable=True,
        approval_status=ApprovalStatus.APPROVED,
    )


def test_cost_expense() -> None:
    c = cost_expense(_expense("123.40", "GBP"), project(), resource())
    assert (c.amount, c.currency, c.category, c.cost_center, c.legal_entity_id) == (
        D("123.40"), "GBP", "travel", "CC-DEL-US", "US01"
    )
    assert str(c.ref) == "psa_files:expense:EX-1@1"
    with pytest.raises(DomainError) as ei:
        cost_expense(_expense("12.345"), project(), resource())
    assert ei.value.rule == "costing.expense_precision"
    assert ei.value.item == "expense psa_files:EX-1@1"
    assert "more than 2 decimals" in ei.value.message
    costed, violations = cost_expenses_many(
        [_expense("1.00"), _expense("5", "JPY"), _expense("1.5", "JPY"), _expense("1", proj="PX")],
        {"P1": project()}, {"R1": resource()},
    )
    assert [c.amount for c in costed] == [D("1.00"), D("5")]
    assert [v.rule for v in violations] == ["costing.expense_precision", "costing.unknown_project"]


# ---------------------------------------------------------------- property: most specific rate vs brute force

base = day(2026, 1, 1)


@st.composite
def rate_lines(draw: st.DrawFn) -> list[RateCardLine]:
    """Dense cards over a tiny universe (R1/R2, Analyst/Manager, P1/P2, a few weeks) so scopes collide, dates
    overlap and every precedence pair is met; values are biased towards the query R1/Analyst/P1."""
    n = draw(st.integers(0, 14))
    out = []
    for i in range(n):
        res = draw(st.sampled_from([None, None, "R1", "R1", "R2"]))
        role = draw(st.sampled_from([None, None, "Analyst", "Analyst", "Manager"]))
        proj = draw(st.sampled_from([None, "P1", "P1", "P2"]))
        if res is None and role is None and proj is None:
            proj = "P1"
        start = base + dt.timedelta(days=draw(st.integers(0, 20)))
        length = draw(st.one_of(st.none(), st.integers(0, 30)))
        end = None if length is None else start + dt.timedelta(days=length)
        kind = draw(st.sampled_from([COST, COST, BILL]))
        out.append(line(f"L{i}", kind, str(draw(st.integers(1, 300))), start, end, res=res, role=role, proj=proj))
    return out


def _brute_force(lines: list[RateCardLine], kind: RateKind, res: str, role: str, proj: str, on: dt.date) -> object:
    """Reference: filter every line that applies, rank by (resource?, role?, project?, start) and take the top."""

    def applies(ln: RateCardLine) -> bool:
        return (
            ln.kind == kind
            and ln.resource_id in (None, res)
            and ln.role in (None, role)
            and ln.project_id in (None, proj)
            and ln.effective_from <= on <= (ln.effective_to or dt.date.max)
        )

    def rank(ln: RateCardLine) -> tuple[bool, bool, bool, dt.date]:
        return (ln.resource_id is not None, ln.role is not None, ln.project_id is not None, ln.effective_from)

    ok = [ln for ln in lines if applies(ln)]
    if not ok:
        return "missing"
    top = max(rank(ln) for ln in ok)
    winners = [ln for ln in ok if rank(ln) == top]
    return winners[0].id if len(winners) == 1 else "ambiguous"


@settings(max_examples=200, deadline=None)
@given(
    rate_lines(),
    st.sampled_from([COST, BILL]),
    st.sampled_from(["R1", "R1", "R2"]),
    st.sampled_from(["Analyst", "Analyst", "Manager"]),
    st.sampled_from(["P1", "P1", "P2"]),
    st.integers(-3, 60),
)
def test_most_specific_rate_matches_brute_force(
    lines: list[RateCardLine], kind: RateKind, res: str, role: str, proj: str, offset: int
) -> None:
    on = base + dt.timedelta(days=offset)
    book = RateBook.from_lines(lines)
    expected = _brute_force(lines, kind, res, role, proj, on)
    try:
        got: object = book.line_for(kind, resource_id=res, role=role, project_id=proj, on=on).id
    except DomainError as e:
        got = {"rates.ambiguous_rate": "ambiguous", f"rates.missing_{kind.value}_rate": "missing"}[e.rule]
    assert got == expected
    # a second lookup (served from the per-combination cache) answers the same
    try:
        again: object = book.line_for(kind, resource_id=res, role=role, project_id=proj, on=on).id
    except DomainError:
        again = got
    assert again == got


def test_every_combination_of_matching_scopes_ranks_like_brute_force() -> None:
    """Exhaustive: for each subset of the seven scope shapes that can match R1/Analyst/P1 (plus a non-matching
    decoy of each), the winner is the brute-force winner."""
    shapes = list(itertools.product([None, "R1"], [None, "Analyst"], [None, "P1"]))[1:]  # drop the empty scope
    for mask in range(1, 1 << len(shapes)):
        card = []
        for i, (res, role, proj) in enumerate(shapes):
            if mask >> i & 1:
                card.append(line(f"m{i}", COST, str(i + 1), base, res=res, role=role, proj=proj))
                card.append(
                    line(f"d{i}", COST, "999", base, res=res and "R2", role=role and "Manager", proj=proj and "P2")
                )
        book = RateBook.from_lines(card)
        got = book.line_for(COST, resource_id="R1", role="Analyst", project_id="P1", on=base).id
        assert got == _brute_force(card, COST, "R1", "Analyst", "P1", base), [ln.id for ln in card]
