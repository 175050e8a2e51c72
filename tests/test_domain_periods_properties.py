"""Properties (hypothesis): with random period statuses and item dates, nothing is ever placed — or summarized —
into a period that is not open, under either late-item policy; reject raises exactly when the item's own period
is not open; redating goes to the first open period after, on its first day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import LatePolicy, PeriodBook, monthly_periods, period_of
from ledgerbridge.domain.posting import default_rules, summarize
from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import PeriodStatus

ENTITIES = ("US01", "DE01")
MONTHS = [f"2026-{m:02d}" for m in range(1, 9)]
START = dt.date(2026, 1, 1)
RULES = default_rules()

statuses = st.lists(st.sampled_from(list(PeriodStatus)), min_size=len(MONTHS), max_size=len(MONTHS))
days = st.integers(0, (dt.date(2026, 9, 30) - START).days)  # September has no period: period.unknown


def make_book(per_entity: list[list[PeriodStatus]]) -> PeriodBook:
    rows = []
    for entity, sts in zip(ENTITIES, per_entity, strict=True):
        for row, s in zip(monthly_periods(entity, MONTHS[0], MONTHS[-1]), sts, strict=True):
            rows.append(row.model_copy(update={"status": s}))
    return PeriodBook(rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(statuses, min_size=2, max_size=2), st.sampled_from(ENTITIES), days, st.sampled_from(list(LatePolicy)))
def test_placement_never_lands_outside_an_open_period(
    sts: list[list[PeriodStatus]], entity: str, offset: int, policy: LatePolicy
) -> None:
    b = make_book(sts)
    d = START + dt.timedelta(days=offset)
    own = b.get(entity, period_of(d))
    try:
        placed = b.place(entity, d, policy)
    except DomainError as e:
        if own is None:
            assert e.rule == "period.unknown"
        elif own.status is PeriodStatus.OPEN:
            raise AssertionError("an open period refused an item") from e
        elif policy is LatePolicy.REJECT:
            assert e.rule == "period.closed"
        else:
            assert e.rule == "period.no_open_period"
            later = [p for p in b.periods(entity) if p.start_date > own.end_date]
            assert all(p.status is not PeriodStatus.OPEN for p in later)
        return
    target = b.get(entity, placed.period)
    assert target is not None and target.status is PeriodStatus.OPEN
    b.assert_postable(entity, placed.period)
    assert target.start_date <= placed.entry_date <= target.end_date
    assert own is not None
    if own.status is PeriodStatus.OPEN:
        assert (placed.period, placed.entry_date, placed.redated_from) == (own.period, d, None)
    else:
        assert policy is LatePolicy.NEXT_OPEN_PERIOD
        assert placed.redated_from == own.period and placed.entry_date == target.start_date
        between = [p for p in b.periods(entity) if own.end_date < p.start_date < target.start_date]
        assert all(p.status is not PeriodStatus.OPEN for p in between)  # the *first* open period after


@settings(max_examples=60, deadline=None)
@given(
    st.lists(statuses, min_size=2, max_size=2),
    st.lists(st.tuples(st.sampled_from(ENTITIES), days, st.integers(1, 10_000)), max_size=30),
    st.sampled_from(list(LatePolicy)),
)
def test_summarized_journals_only_in_open_periods_and_nothing_lost(
    sts: list[list[PeriodStatus]], items: list[tuple[str, int, int]], policy: LatePolicy
) -> None:
    b = make_book(sts)
    ps = [
        Posting("labor_cost", e, START + dt.timedelta(days=off), "USD", (("cost", Decimal(c) / 100),),
                (("project", "P"),), SourceRef(system="psa", entity="time_entry", id=f"T{n}"))
        for n, (e, off, c) in enumerate(items)
    ]
    s = summarize(ps, RULES, b.placer(policy))
    for j in s.journals:
        b.assert_postable(j.legal_entity_id, j.period)
        p = b.require(j.legal_entity_id, j.period)
        assert p.start_date <= j.entry_date <= p.end_date
    posted = sum(ln.debit for j in s.journals for ln in j.lines)
    refused = sum(r.posting.amount("cost") for r in s.rejected_postings)
    assert posted + refused == sum(p.amount("cost") for p in ps)  # every cent posted or in the dead-letter list
    if policy is LatePolicy.REJECT:
        assert all(j.redated_from is None for j in s.journals)
