"""Accounting periods: every status transition (legal and illegal), the book's integrity checks, late-item
placement under both policies, and the postability check."""

from __future__ import annotations

import datetime as dt

import pytest

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import (
    LatePolicy,
    PeriodBook,
    Placement,
    check_transition,
    month_bounds,
    monthly_periods,
    period_of,
)
from ledgerbridge.model.entities import AccountingPeriod, PeriodStatus

OP, CG, CD, LK = PeriodStatus.OPEN, PeriodStatus.CLOSING, PeriodStatus.CLOSED, PeriodStatus.LOCKED


def book(**statuses: PeriodStatus) -> PeriodBook:
    """DE01 periods 2026-01..2026-06, open unless given as m01=..., m02=..."""
    rows = monthly_periods("DE01", "2026-01", "2026-06")
    by = {f"2026-{k[1:]}": v for k, v in statuses.items()}
    return PeriodBook(r.model_copy(update={"status": by.get(r.period, OP)}) for r in rows)


def test_period_of_and_bounds() -> None:
    assert period_of(dt.date(2026, 2, 28)) == "2026-02"
    assert month_bounds("2024-02") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    with pytest.raises(DomainError) as ei:
        month_bounds("2026-13")
    assert ei.value.rule == "period.bad_key"


def test_monthly_periods() -> None:
    rows = monthly_periods("US01", "2025-11", "2026-02")
    assert [(r.period, r.start_date, r.end_date, r.status) for r in rows] == [
        ("2025-11", dt.date(2025, 11, 1), dt.date(2025, 11, 30), OP),
        ("2025-12", dt.date(2025, 12, 1), dt.date(2025, 12, 31), OP),
        ("2026-01", dt.date(2026, 1, 1), dt.date(2026, 1, 31), OP),
        ("2026-02", dt.date(2026, 2, 1), dt.date(2026, 2, 28), OP),
    ]


# --------------------------------------------------------------------------- transitions

LEGAL = [(OP, CG, False), (CG, CD, False), (CD, LK, False), (CG, OP, False), (CD, OP, True)]


@pytest.mark.parametrize(("src", "dst", "flag"), LEGAL)
def test_legal_transitions(src: PeriodStatus, dst: PeriodStatus, flag: bool) -> None:
    b = book(m03=src)
    new = b.transition("DE01", "2026-03", dst, reopen=flag)
    assert new.status is dst
    assert b.status("DE01", "2026-03") is dst
    assert b.periods("DE01")[2].status is dst


@pytest.mark.parametrize(
    ("src", "dst"),
    [(OP, CD), (OP, LK), (CG, LK), (CD, CG)],
)
def test_illegal_transitions(src: PeriodStatus, dst: PeriodStatus) -> None:
    b = book(m03=src)
    with pytest.raises(DomainError) as ei:
        b.transition("DE01", "2026-03", dst, reopen=True)
    assert ei.value.rule == "period.transition_illegal"
    assert ei.value.item == "period DE01/2026-03"
    assert b.status("DE01", "2026-03") is src  # unchanged


@pytest.mark.parametrize("dst", [OP, CG, CD])
def test_locked_is_final(dst: PeriodStatus) -> None:
    b = book(m03=LK)
    with pytest.raises(DomainError) as ei:
        b.transition("DE01", "2026-03", dst, reopen=True)
    assert ei.value.rule == "period.locked"


def test_reopen_closed_needs_flag() -> None:
    b = book(m03=CD)
    with pytest.raises(DomainError) as ei:
        b.transition("DE01", "2026-03", OP)
    assert ei.value.rule == "period.reopen_requires_flag"
    assert "reopen=True" in ei.value.fix
    assert b.status("DE01", "2026-03") is CD


@pytest.mark.parametrize("s", [OP, CG, CD, LK])
def test_same_status_is_a_no_op(s: PeriodStatus) -> None:
    check_transition("x", s, s)
    b = book(m03=s)
    assert b.transition("DE01", "2026-03", s).status is s


def test_transition_unknown_period() -> None:
    with pytest.raises(DomainError) as ei:
        book().transition("DE01", "2027-01", CG)
    assert ei.value.rule == "period.unknown"


# --------------------------------------------------------------------------- book integrity


def _p(period: str, start: dt.date, end: dt.date) -> AccountingPeriod:
    return AccountingPeriod(legal_entity_id="US01", period=period, start_date=start, end_date=end)


def test_duplicate_period_refused() -> None:
    rows = monthly_periods("US01", "2026-01", "2026-01")
    with pytest.raises(DomainError) as ei:
        PeriodBook(rows + rows)
    assert ei.value.rule == "period.duplicate"


def test_overlap_refused() -> None:
    with pytest.raises(DomainError) as ei:
        PeriodBook([_p("2026-01", dt.date(2026, 1, 1), dt.date(2026, 2, 3)),
                    _p("2026-02", dt.date(2026, 2, 1), dt.date(2026, 2, 28))])
    assert ei.value.rule == "period.overlap"


def test_bad_dates_refused() -> None:
    with pytest.raises(DomainError) as ei:
        PeriodBook([_p("2026-01", dt.date(2026, 1, 31), dt.date(2026, 1, 1))])
    assert ei.value.rule == "period.bad_dates"


def test_non_calendar_periods_follow_their_dates() -> None:
    # A 4-4-5 style calendar: the period key is a label, the dates decide.
    b = PeriodBook([_p("2026-01", dt.date(2025, 12, 28), dt.date(2026, 1, 24)),
                    _p("2026-02", dt.date(2026, 1, 25), dt.date(2026, 2, 21))])
    assert b.place("US01", dt.date(2026, 1, 26), LatePolicy.REJECT) == Placement("2026-02", dt.date(2026, 1, 26))
    assert b.containing("US01", dt.date(2025, 12, 27)) is None


# --------------------------------------------------------------------------- placement


def test_open_period_places_as_is_under_both_policies() -> None:
    for policy in LatePolicy:
        assert book().place("DE01", dt.date(2026, 3, 15), policy) == Placement("2026-03", dt.date(2026, 3, 15), None)


@pytest.mark.parametrize("status", [CG, CD, LK])
def test_reject_policy_raises_period_closed(status: PeriodStatus) -> None:
    with pytest.raises(DomainError) as ei:
        book(m03=status).place("DE01", dt.date(2026, 3, 15), LatePolicy.REJECT)
    assert ei.value.rule == "period.closed"
    assert status.value in ei.value.message
    assert ei.value.item == "DE01 item dated 2026-03-15"


def test_next_open_period_skips_every_non_open_period() -> None:
    b = book(m02=LK, m03=CD, m04=CG)
    assert b.place("DE01", dt.date(2026, 2, 10), LatePolicy.NEXT_OPEN_PERIOD) == Placement(
        "2026-05", dt.date(2026, 5, 1), "2026-02")
    assert b.place("DE01", dt.date(2026, 4, 30), "next_open_period") == Placement(  # type: ignore[arg-type]
        "2026-05", dt.date(2026, 5, 1), "2026-04")


def test_next_open_period_never_goes_backwards() -> None:
    b = book(m05=CD, m06=CD)  # January..April open, but only later periods qualify
    with pytest.raises(DomainError) as ei:
        b.place("DE01", dt.date(2026, 5, 3), LatePolicy.NEXT_OPEN_PERIOD)
    assert ei.value.rule == "period.no_open_period"


def test_date_without_period() -> None:
    for policy in LatePolicy:
        with pytest.raises(DomainError) as ei:
            book().place("DE01", dt.date(2026, 7, 1), policy)
        assert ei.value.rule == "period.unknown"
    with pytest.raises(DomainError):
        book().place("XX01", dt.date(2026, 3, 1), LatePolicy.REJECT)


def test_placer_per_entity_policy_and_cache() -> None:
    b = PeriodBook([*monthly_periods("DE01", "2026-01", "2026-03"), *monthly_periods("US01", "2026-01", "2026-03")])
    for e in ("DE01", "US01"):
        b.transition(e, "2026-01", CG)
    place = b.placer({"DE01": LatePolicy.REJECT, "US01": LatePolicy.NEXT_OPEN_PERIOD})
    assert place("US01", dt.date(2026, 1, 9)) == Placement("2026-02", dt.date(2026, 2, 1), "2026-01")
    with pytest.raises(DomainError) as ei:
        place("DE01", dt.date(2026, 1, 9))
    assert ei.value.rule == "period.closed"
    with pytest.raises(DomainError) as ei:
        place("UK01", dt.date(2026, 1, 9))
    assert ei.value.rule == "period.no_policy"


def test_assert_postable() -> None:
    b = book(m02=CG, m03=CD, m04=LK)
    b.assert_postable("DE01", "2026-01")
    for period, status in (("2026-02", CG), ("2026-03", CD), ("2026-04", LK)):
        with pytest.raises(DomainError) as ei:
            b.assert_postable("DE01", period)
        assert ei.value.rule == "period.not_open"
        assert status.value in ei.value.message
    with pytest.raises(DomainError) as ei:
        b.assert_postable("DE01", "2030-01")
    assert ei.value.rule == "period.unknown"
