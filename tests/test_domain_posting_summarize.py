"""Summarization into journals: grouping, netting, dimensions per rule line, ids, lineage, rejections, splitting,
functional currency with rounding allocation, and reversals (worked examples; properties are in
test_domain_posting_properties.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import pytest

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.fx import FxTable
from ledgerbridge.domain.periods import LatePolicy, PeriodBook, Placement, monthly_periods
from ledgerbridge.domain.posting import (
    PostingRules,
    converter_from_table,
    default_rules,
    default_rules_config,
    lineage_digest,
    reversal_of,
    summarize,
)
from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import FxRate, JournalEntry, PeriodStatus

RULES = default_rules()
D = Decimal


def ref(i: int | str, version: int = 1) -> SourceRef:
    return SourceRef(system="psa", entity="time_entry", id=f"TE-{i}", version=version)


def labor(amount: str, *, i: int | str = 1, day: int = 5, month: int = 3, entity: str = "US01", ccy: str = "USD",
          project: str = "P-1", cc: str = "CC-DEL-US", sign: int = 1, version: int = 1) -> Posting:
    return Posting("labor_cost", entity, dt.date(2026, month, day), ccy, (("cost", D(amount)),),
                   (("cost_center", cc), ("project", project)), ref(i, version), sign)


def lines_of(j: JournalEntry) -> list[tuple[str, Decimal, Decimal, str, dict[str, str]]]:
    return [(ln.account, ln.debit, ln.credit, ln.currency, ln.dimensions) for ln in j.lines]


def test_groups_and_nets_per_account_dimensions_currency() -> None:
    s = summarize([labor("100.00", i=1), labor("50.25", i=2, day=9), labor("30.00", i=1, sign=-1),
                   labor("10.00", i=3, project="P-2")], RULES)
    assert s.ok
    (j,) = s.journals
    assert (j.id, j.legal_entity_id, j.period, j.journal_type.value) == ("US01-2026-03-labor_cost-0001", "US01",
                                                                          "2026-03", "labor_cost")
    dims1 = {"cost_center": "CC-DEL-US", "project": "P-1"}
    dims2 = {"cost_center": "CC-DEL-US", "project": "P-2"}
    assert lines_of(j) == [
        ("5000", D("120.25"), D(0), "USD", dims1), ("2100", D(0), D("120.25"), "USD", dims1),
        ("5000", D("10.00"), D(0), "USD", dims2), ("2100", D(0), D("10.00"), "USD", dims2),
    ]
    assert j.entry_date == dt.date(2026, 3, 9)  # latest posting date of the journal


def test_net_negative_debit_becomes_credit() -> None:
    s = summarize([labor("80.00", i=1, sign=-1), labor("20.00", i=2)], RULES)
    (j,) = s.journals
    assert [(a, dr, cr) for a, dr, cr, _, _ in lines_of(j)] == [("2100", D("60.00"), D(0)), ("5000", D(0), D("60.00"))]


def test_zero_groups_dropped_and_empty_journal_not_emitted() -> None:
    s = summarize([labor("100.00", i=1), labor("100.00", i=1, sign=-1),
                   labor("5.00", i=2, project="P-2"), labor("5.00", i=3, project="P-2", sign=-1)], RULES)
    assert s.journals == [] and s.ok


def test_dimensions_only_those_the_rule_line_lists() -> None:
    inv = Posting("invoice", "UK01", dt.date(2026, 3, 31), "GBP", (("net", D("1000.00")), ("tax", D("200.00"))),
                  (("cost_center", "CC-DEL-UK"), ("project", "P-7")), SourceRef(system="lb", entity="invoice", id="I1"))
    (j,) = summarize([inv], RULES).journals
    assert lines_of(j) == [
        ("1100", D("200.00"), D(0), "GBP", {}), ("2300", D(0), D("200.00"), "GBP", {}),
        ("1100", D("1000.00"), D(0), "GBP", {"project": "P-7"}),
        ("1200", D(0), D("1000.00"), "GBP", {"project": "P-7"}),
    ]


def test_zero_tax_component_leaves_no_line() -> None:
    inv = Posting("invoice", "US01", dt.date(2026, 3, 31), "USD", (("net", D("10.00")), ("tax", D("0.00"))),
                  (("project", "P-7"),), SourceRef(system="lb", entity="invoice", id="I2"))
    (j,) = summarize([inv], RULES).journals
    assert [ln.account for ln in j.lines] == ["1100", "1200"]


def test_separate_journals_per_entity_period_type_and_currency_lines() -> None:
    ps = [labor("1.00", entity="US01"), labor("2.00", entity="UK01", ccy="GBP"), labor("3.00", month=4),
          labor("4.00", ccy="EUR", i=9),
          Posting("expense", "US01", dt.date(2026, 3, 2), "USD", (("amount", D("7.00")),), (("project", "P-1"),),
                  SourceRef(system="psa", entity="expense", id="X1"))]
    s = summarize(ps, RULES)
    assert [j.id for j in s.journals] == [
        "UK01-2026-03-labor_cost-0001", "US01-2026-03-expense-0001", "US01-2026-03-labor_cost-0001",
        "US01-2026-04-labor_cost-0001",
    ]
    us_march = s.journals[2]
    assert [(ln.currency, ln.debit + ln.credit) for ln in us_march.lines] == [
        ("EUR", D("4.00")), ("EUR", D("4.00")), ("USD", D("1.00")), ("USD", D("1.00"))]


def test_batch_label_in_journal_id() -> None:
    (j,) = summarize([labor("1.00")], RULES, batch="R7").journals
    assert j.id == "US01-2026-03-labor_cost-R7-0001"


def test_entity_override_account_used() -> None:
    c = default_rules_config()
    c["account_roles"]["by_entity"] = {"UK01": {"accrued_payroll": "2110"}}
    rules = PostingRules.from_config(c["account_roles"], c["posting_rules"])
    s = summarize([labor("1.00", entity="UK01", ccy="GBP"), labor("1.00", entity="US01")], rules)
    assert [[ln.account for ln in j.lines] for j in s.journals] == [["5000", "2110"], ["5000", "2100"]]


# --------------------------------------------------------------------------- lineage


def test_lineage_small_groups_carry_refs() -> None:
    s = summarize([labor("1.00", i=2), labor("1.00", i=1), labor("1.00", i=1, version=2)], RULES)
    (j,) = s.journals
    expected = (ref(1), ref(1, 2), ref(2))
    for ln in j.lines:
        assert ln.lineage == expected and ln.lineage_count == 3
        digest = lineage_digest(expected)
        assert digest == hashlib.sha256("\n".join(r.key for r in expected).encode()).hexdigest()
        assert digest[:16] in ln.description
        assert s.lineage.digest_for(j.id, ln.line_no) == digest
        assert s.lineage.refs_for(j.id, ln.line_no) == expected


def test_lineage_counts_distinct_versions() -> None:
    s = summarize([labor("100.00", i=1), labor("100.00", i=1, sign=-1), labor("7.00", i=2)], RULES)
    (j,) = s.journals
    assert {ln.lineage_count for ln in j.lines} == {2}


def test_lineage_over_limit_keeps_digest_and_index() -> None:
    ps = [labor("0.01", i=n) for n in range(60)]
    s = summarize(ps, RULES, lineage_limit=50)
    (j,) = s.journals
    refs = tuple(sorted((p.source for p in ps), key=lambda r: r.key))
    for ln in j.lines:
        assert ln.lineage == () and ln.lineage_count == 60
        assert ln.debit + ln.credit == D("0.60")
        assert lineage_digest(refs)[:16] in ln.description
        assert s.lineage.refs_for(j.id, ln.line_no) == refs
    assert len(s.lineage) == 2


# --------------------------------------------------------------------------- rejections


def test_bad_postings_rejected_the_rest_posts() -> None:
    good = labor("10.00", i=1)
    bad = [
        Posting("bonus", "US01", dt.date(2026, 3, 5), "USD", (("cost", D(1)),), (), ref("b1")),
        Posting("labor_cost", "US01", dt.date(2026, 3, 5), "USD", (("amount", D(1)),), (), ref("b2")),
        labor("1.005", i="b3"),
        labor("1.00", i="b4", sign=0),
        labor("1.00", i="b5", ccy="XYZ"),
        Posting("labor_cost", "US01", dt.date(2026, 3, 5), "USD", (("cost", D("Infinity")),), (), ref("b6")),
        Posting("invoice", "US01", dt.date(2026, 3, 5), "USD", (("net", D("5.00")),), (), ref("b7")),
    ]
    s = summarize([*bad, good], RULES)
    assert [(r.posting.source.id, r.error.rule) for r in s.rejected_postings] == [
        ("TE-b1", "posting.no_rule"), ("TE-b2", "posting.amount_missing"), ("TE-b3", "posting.unrounded_amount"),
        ("TE-b4", "posting.bad_sign"), ("TE-b5", "posting.unknown_currency"), ("TE-b6", "posting.unrounded_amount"),
        ("TE-b7", "posting.amount_missing"),
    ]
    assert all(r.error.fix for r in s.rejected_postings)
    (j,) = s.journals
    assert [ln.debit + ln.credit for ln in j.lines] == [D("10.00"), D("10.00")]
    assert j.lines[0].lineage == (ref(1),)


def _book(statuses: dict[str, PeriodStatus]) -> PeriodBook:
    book = PeriodBook(monthly_periods("US01", "2026-01", "2026-06"))
    path = [PeriodStatus.CLOSING, PeriodStatus.CLOSED, PeriodStatus.LOCKED]
    for period, status in statuses.items():
        for step in path[: path.index(status) + 1]:
            book.transition("US01", period, step)
    return book


def test_late_items_redated_to_next_open_period() -> None:
    book = _book({"2026-02": PeriodStatus.LOCKED, "2026-03": PeriodStatus.CLOSED})
    ps = [labor("5.00", i=1, month=2, day=27), labor("6.00", i=2, month=3, day=3), labor("7.00", i=3, month=4, day=20)]
    s = summarize(ps, RULES, book.placer(LatePolicy.NEXT_OPEN_PERIOD))
    assert [(j.id, j.period, j.entry_date, j.redated_from, j.lines[0].debit) for j in s.journals] == [
        ("US01-2026-04-labor_cost-0001", "2026-04", dt.date(2026, 4, 20), None, D("7.00")),
        ("US01-2026-04-labor_cost-0002", "2026-04", dt.date(2026, 4, 1), "2026-02", D("5.00")),
        ("US01-2026-04-labor_cost-0003", "2026-04", dt.date(2026, 4, 1), "2026-03", D("6.00")),
    ]
    assert "redated from 2026-02" in s.journals[1].description


def test_late_items_rejected_under_reject_policy() -> None:
    book = _book({"2026-03": PeriodStatus.CLOSING})
    s = summarize([labor("5.00", i=1), labor("6.00", i=2, month=4)], RULES, book.placer(LatePolicy.REJECT))
    assert [(r.posting.source.id, r.error.rule) for r in s.rejected_postings] == [("TE-1", "period.closed")]
    assert [j.period for j in s.journals] == ["2026-04"]


def test_period_resolver_may_return_a_period_key() -> None:
    (j,) = summarize([labor("5.00", day=31)], RULES, lambda entity, d: "2026-04").journals
    assert (j.period, j.entry_date, j.redated_from) == ("2026-04", dt.date(2026, 3, 31), None)


def test_resolver_placement_is_used_verbatim() -> None:
    def place(entity: str, d: dt.date) -> Placement:
        return Placement("2026-05", dt.date(2026, 5, 1), "2026-03")

    (j,) = summarize([labor("5.00")], RULES, place).journals
    assert (j.id, j.period, j.entry_date, j.redated_from) == ("US01-2026-05-labor_cost-0001", "2026-05",
                                                              dt.date(2026, 5, 1), "2026-03")


# --------------------------------------------------------------------------- splitting


def test_large_journal_split_into_balanced_chunks() -> None:
    ps = [labor(f"{n}.00", i=n, project=f"P-{n:02d}") for n in range(1, 8)]
    s = summarize(ps, RULES, max_lines=5)
    assert [j.id for j in s.journals] == [f"US01-2026-03-labor_cost-{n:04d}" for n in (1, 2, 3, 4)]
    assert [len(j.lines) for j in s.journals] == [4, 4, 4, 2]
    assert sum(ln.debit for j in s.journals for ln in j.lines) == sum(D(n) for n in range(1, 8))
    for j in s.journals:  # each chunk keeps whole (dimension, currency) blocks
        assert len({tuple(sorted(ln.dimensions.items())) for ln in j.lines}) == len(j.lines) // 2


# --------------------------------------------------------------------------- functional currency


def _fx(rate: str) -> FxTable:
    return FxTable.from_rates([FxRate(from_currency="USD", to_currency="GBP", rate=D(rate),
                                      rate_date=dt.date(2026, 1, 1))])


def test_functional_amounts_only_on_foreign_lines() -> None:
    ps = [labor("0.01", i=1, entity="UK01", project="A"), labor("0.01", i=2, entity="UK01", project="B"),
          labor("0.01", i=3, entity="UK01", project="C"), labor("1.00", i=4, entity="UK01", project="D"),
          labor("2.00", i=5, entity="UK01", project="E", ccy="GBP")]
    s = summarize(ps, RULES, functional_currencies={"UK01": "GBP"}, converter=converter_from_table(_fx("0.5")))
    (j,) = s.journals
    usd = [ln for ln in j.lines if ln.currency == "USD"]
    gbp = [ln for ln in j.lines if ln.currency == "GBP"]
    assert all(ln.functional_currency is None for ln in gbp)
    assert all((ln.functional_currency, ln.fx_rate, ln.fx_rate_date) == ("GBP", D("0.5"), dt.date(2026, 1, 1))
               for ln in usd)
    # 0.01 USD * 0.5 = 0.005 -> 0.01 GBP (half up) on each of the six small lines, 1.00 -> 0.50
    fdr = sum((ln.functional_debit or D(0)) for ln in usd)
    fcr = sum((ln.functional_credit or D(0)) for ln in usd)
    assert fdr == fcr == D("0.53")


def test_functional_rounding_allocated_to_largest_line() -> None:
    # A converter whose debit-side and credit-side conversions round differently (alternating rates), so the
    # rounded functional sides differ by one penny that must land on the largest converted line.
    calls: list[Decimal] = []

    def asym(amount: Decimal, f: str, t: str, on: dt.date) -> tuple[Decimal, Decimal, dt.date]:
        calls.append(amount)
        rate = D("0.335") if len(calls) % 2 else D("0.3349")
        return amount * rate, rate, on

    ps = [labor("0.03", i=1, entity="UK01", project="A"), labor("9.00", i=3, entity="UK01", project="C")]
    s = summarize(ps, RULES, functional_currencies={"UK01": "GBP"}, converter=asym)
    (j,) = s.journals
    # Lines in order: A debit 0.03 (x.335 = 0.01005 -> 0.01), A credit (x.3349 = 0.010047 -> 0.01),
    # C debit 9.00 (3.015 -> 3.02), C credit (3.0141 -> 3.01): debits exceed credits by 0.01, which the
    # largest line (C debit, 3.02) absorbs.
    f = [(ln.account, ln.dimensions["project"], ln.functional_debit, ln.functional_credit) for ln in j.lines]
    assert f == [("5000", "A", D("0.01"), D(0)), ("2100", "A", D(0), D("0.01")),
                 ("5000", "C", D("3.01"), D(0)), ("2100", "C", D(0), D("3.01"))]
    assert len(calls) == 4


def test_no_converter_rejects_the_journal_with_its_lineage() -> None:
    s = summarize([labor("1.00", i=1, entity="UK01"), labor("2.00", i=2, entity="UK01", ccy="GBP")], RULES,
                  functional_currencies={"UK01": "GBP"})
    assert s.journals == []
    (rj,) = s.rejected_journals
    assert (rj.journal_id, rj.error.rule, rj.lineage) == ("UK01-2026-03-labor_cost-0001", "posting.no_fx_converter",
                                                         (ref(1), ref(2)))


def test_missing_rate_rejects_the_journal() -> None:
    table = FxTable.from_rates([FxRate(from_currency="USD", to_currency="GBP", rate=D("0.8"),
                                       rate_date=dt.date(2026, 6, 1))])
    s = summarize([labor("1.00", entity="UK01")], RULES, functional_currencies={"UK01": "GBP"},
                  converter=converter_from_table(table))
    assert [r.error.rule for r in s.rejected_journals] == ["fx.missing_rate"]


# --------------------------------------------------------------------------- reversal


def test_reversal_swaps_sides_and_links() -> None:
    (j,) = summarize([labor("12.34", entity="UK01"), labor("1.00", i=2, entity="UK01", ccy="GBP")], RULES,
                     functional_currencies={"UK01": "GBP"}, converter=converter_from_table(_fx("0.8"))).journals
    r = reversal_of(j, f"{j.id}-R1", "2026-04", dt.date(2026, 4, 1))
    assert (r.reverses, r.period, r.entry_date, r.journal_type) == (j.id, "2026-04", dt.date(2026, 4, 1),
                                                                    j.journal_type)
    for a, b in zip(j.lines, r.lines, strict=True):
        assert (a.debit, a.credit, a.functional_debit, a.functional_credit) == (
            b.credit, b.debit, b.functional_credit, b.functional_debit)
        assert (a.account, a.dimensions, a.lineage, a.lineage_count) == (b.account, b.dimensions, b.lineage,
                                                                         b.lineage_count)
    with pytest.raises(DomainError) as ei:
        reversal_of(j, j.id, "2026-04", dt.date(2026, 4, 1))
    assert ei.value.rule == "posting.reversal_same_id"


def test_rounding_difference_larger_than_any_line_rejects_the_journal() -> None:
    calls: list[Decimal] = []

    def rogue(amount: Decimal, f: str, t: str, on: dt.date) -> tuple[Decimal, Decimal, dt.date]:
        calls.append(amount)  # debit lines (1st, 3rd call) x5, credit lines (2nd, 4th) to nothing
        return (amount * 5 if len(calls) % 2 else D(0)), D(5), on

    s = summarize([labor("1.00", i=1, entity="UK01", project="A"), labor("1.00", i=2, entity="UK01", project="B")],
                  RULES, functional_currencies={"UK01": "GBP"}, converter=rogue)
    assert s.journals == []
    assert [(r.journal_id, r.error.rule) for r in s.rejected_journals] == [
        ("UK01-2026-03-labor_cost-0001", "posting.fx_rounding")]
