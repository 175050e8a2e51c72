"""Accounting periods per legal entity: status transitions, late-item placement, and the postability check.

Each entity has monthly periods ``"YYYY-MM"`` with a status ``open``, ``closing``, ``closed`` or ``locked``.
Only an ``open`` period accepts postings from the engine; a ``closing`` period is reserved for the accountants'
own period-end adjustments made in the ERP, so the engine treats it like a closed one. Nothing this module places
ever lands in a period that is not ``open``.

Status transitions (anything else raises :class:`DomainError` ``period.transition_illegal``)::

    open -> closing -> closed -> locked          (locked is final)
    closing -> open                              (reopen during close)
    closed -> open                               (only with reopen=True: an explicit, audited decision)

A transition to the status a period already has is a no-op, so a replayed close step is harmless.

A late item (its date falls in a period that is not open) follows the entity's :class:`LatePolicy`:
``reject`` raises ``period.closed`` (the flow sends the item to the financial dead-letter queue);
``next_open_period`` places it in the first ``open`` period after the original one, dated on that period's first
day, with ``redated_from`` recording the original period.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.model.entities import AccountingPeriod, PeriodStatus

__all__ = [
    "LatePolicy",
    "PeriodBook",
    "PlaceFn",
    "Placement",
    "check_transition",
    "month_bounds",
    "monthly_periods",
    "period_of",
]


class LatePolicy(StrEnum):
    """What happens to an item dated in a period that no longer accepts postings."""

    REJECT = "reject"  # raise period.closed -> financial dead-letter queue
    NEXT_OPEN_PERIOD = "next_open_period"  # post to the first open period after, redating recorded


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an item lands: the period, the entry date to use, and the original period when redated."""

    period: str
    entry_date: dt.date
    redated_from: str | None = None


#: ``(legal_entity_id, date) -> Placement``; raises :class:`DomainError` when the item cannot be placed.
PlaceFn = Callable[[str, dt.date], Placement]


def period_of(d: dt.date) -> str:
    """The calendar-month period key of a date: ``"YYYY-MM"``."""
    return f"{d.year:04d}-{d.month:02d}"


def month_bounds(period: str) -> tuple[dt.date, dt.date]:
    """First and last day of a ``"YYYY-MM"`` period."""
    try:
        year, month = int(period[:4]), int(period[5:7])
        if len(period) != 7 or period[4] != "-":
            raise ValueError(period)
        start = dt.date(year, month, 1)
    except ValueError:
        raise DomainError(
            f"period {period!r}", "period.bad_key", "a period key must be YYYY-MM", "use e.g. '2026-03'"
        ) from None
    return start, dt.date(year, month, calendar.monthrange(year, month)[1])


def monthly_periods(
    legal_entity_id: str, first: str, last: str, status: PeriodStatus = PeriodStatus.OPEN
) -> list[AccountingPeriod]:
    """Calendar-month periods ``first``..``last`` inclusive for one entity, all with ``status``."""
    start, _ = month_bounds(first)
    end_start, _ = month_bounds(last)
    out: list[AccountingPeriod] = []
    y, m = start.year, start.month
    while (y, m) <= (end_start.year, end_start.month):
        key = f"{y:04d}-{m:02d}"
        s, e = month_bounds(key)
        out.append(
            AccountingPeriod(legal_entity_id=legal_entity_id, period=key, start_date=s, end_date=e, status=status)
        )
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# Allowed moves: (from, to) -> needs the explicit reopen flag.
_TRANSITIONS: dict[tuple[PeriodStatus, PeriodStatus], bool] = {
    (PeriodStatus.OPEN, PeriodStatus.CLOSING): False,
    (PeriodStatus.CLOSING, PeriodStatus.CLOSED): False,
    (PeriodStatus.CLOSED, PeriodStatus.LOCKED): False,
    (PeriodStatus.CLOSING, PeriodStatus.OPEN): False,
    (PeriodStatus.CLOSED, PeriodStatus.OPEN): True,
}


def check_transition(item: str, current: PeriodStatus, target: PeriodStatus, *, reopen: bool = False) -> None:
    """Raise :class:`DomainError` unless ``current -> target`` is a legal status move (same status: no-op)."""
    if current == target:
        return
    if current is PeriodStatus.LOCKED:
        raise DomainError(
            item, "period.locked", f"a locked period is final and cannot move to {target.value}",
            "post the correction in the next open period instead",
        )
    needs_flag = _TRANSITIONS.get((current, target))
    if needs_flag is None:
        legal = sorted(t.value for (f, t) in _TRANSITIONS if f == current)
        raise DomainError(
            item, "period.transition_illegal", f"cannot move a period from {current.value} to {target.value}",
            f"from {current.value} the allowed moves are: {', '.join(legal)}",
        )
    if needs_flag and not reopen:
        raise DomainError(
            item, "period.reopen_requires_flag", f"reopening a {current.value} period needs an explicit reopen",
            "call transition(..., reopen=True) after the controller approved the reopening",
        )


class PeriodBook:
    """The accounting periods of every legal entity, indexed for date lookups.

    Construction checks the periods: one row per (entity, period), start <= end, no overlaps. The book is
    mutable only through :meth:`transition`, which enforces the legal status moves.
    """

    __slots__ = ("_by_key", "_ends", "_sorted", "_starts")

    def __init__(self, periods: Iterable[AccountingPeriod] = ()) -> None:
        self._by_key: dict[tuple[str, str], AccountingPeriod] = {}
        for p in periods:
            item = f"period {p.legal_entity_id}/{p.period}"
            if (p.legal_entity_id, p.period) in self._by_key:
                raise DomainError(item, "period.duplicate", "the period is defined twice", "keep one row per period")
            if p.start_date > p.end_date:
                raise DomainError(
                    item, "period.bad_dates", f"start {p.start_date} is after end {p.end_date}", "correct the dates"
                )
            self._by_key[(p.legal_entity_id, p.period)] = p
        self._sorted: dict[str, list[AccountingPeriod]] = {}
        self._starts: dict[str, list[dt.date]] = {}
        self._ends: dict[str, list[dt.date]] = {}
        self._reindex()

    def _reindex(self) -> None:
        by_entity: dict[str, list[AccountingPeriod]] = {}
        for p in self._by_key.values():
            by_entity.setdefault(p.legal_entity_id, []).append(p)
        for entity, rows in by_entity.items():
            rows.sort(key=lambda r: r.start_date)
            for a, b in itertools.pairwise(rows):
                if b.start_date <= a.end_date:
                    raise DomainError(
                        f"period {entity}/{b.period}", "period.overlap", f"overlaps period {a.period}",
                        "make each day belong to exactly one period",
                    )
            self._sorted[entity] = rows
            self._starts[entity] = [r.start_date for r in rows]
            self._ends[entity] = [r.end_date for r in rows]

    # ------------------------------------------------------------------ lookups

    def periods(self, legal_entity_id: str) -> list[AccountingPeriod]:
        """The entity's periods in date order."""
        return list(self._sorted.get(legal_entity_id, ()))

    def get(self, legal_entity_id: str, period: str) -> AccountingPeriod | None:
        return self._by_key.get((legal_entity_id, period))

    def require(self, legal_entity_id: str, period: str) -> AccountingPeriod:
        p = self._by_key.get((legal_entity_id, period))
        if p is None:
            raise DomainError(
                f"period {legal_entity_id}/{period}", "period.unknown", "no such accounting period for the entity",
                "create the period (ledgerbridge periods sync) before posting into it",
            )
        return p

    def status(self, legal_entity_id: str, period: str) -> PeriodStatus:
        return self.require(legal_entity_id, period).status

    def containing(self, legal_entity_id: str, d: dt.date) -> AccountingPeriod | None:
        """The entity's period whose start..end contains ``d`` (None when no period covers it)."""
        starts = self._starts.get(legal_entity_id)
        if not starts:
            return None
        i = bisect.bisect_right(starts, d) - 1
        if i >= 0 and d <= self._ends[legal_entity_id][i]:
            return self._sorted[legal_entity_id][i]
        return None

    def next_open(self, legal_entity_id: str, period: str) -> AccountingPeriod | None:
        """The first ``open`` period that starts after ``period`` ends."""
        after = self.require(legal_entity_id, period).end_date
        rows = self._sorted[legal_entity_id]
        i = bisect.bisect_right(self._starts[legal_entity_id], after)
        for p in rows[i:]:
            if p.status is PeriodStatus.OPEN:
                return p
        return None

    # ------------------------------------------------------------------ rules

    def transition(
        self, legal_entity_id: str, period: str, to: PeriodStatus, *, reopen: bool = False
    ) -> AccountingPeriod:
        """Move a period to status ``to``; raises :class:`DomainError` on an illegal move. Returns the new row."""
        current = self.require(legal_entity_id, period)
        check_transition(f"period {legal_entity_id}/{period}", current.status, to, reopen=reopen)
        if current.status == to:
            return current
        new = current.model_copy(update={"status": to})
        self._by_key[(legal_entity_id, period)] = new
        rows = self._sorted[legal_entity_id]
        rows[rows.index(current)] = new
        return new

    def assert_postable(self, legal_entity_id: str, period: str) -> None:
        """Raise :class:`DomainError` unless the period exists and is ``open``."""
        p = self.require(legal_entity_id, period)
        if p.status is not PeriodStatus.OPEN:
            raise DomainError(
                f"period {legal_entity_id}/{period}", "period.not_open",
                f"the period is {p.status.value}; only open periods accept postings",
                "post into the next open period, or ask the controller to reopen this one",
            )

    def place(self, legal_entity_id: str, d: dt.date, policy: LatePolicy) -> Placement:
        """Where an item dated ``d`` lands under ``policy`` (see the module doc). Never a closed/locked period."""
        item = f"{legal_entity_id} item dated {d.isoformat()}"
        p = self.containing(legal_entity_id, d)
        if p is None:
            raise DomainError(
                item, "period.unknown", f"no accounting period of {legal_entity_id} covers {d.isoformat()}",
                "create the period (ledgerbridge periods sync) or correct the item date",
            )
        if p.status is PeriodStatus.OPEN:
            return Placement(p.period, d, None)
        if LatePolicy(policy) is LatePolicy.REJECT:
            raise DomainError(
                item, "period.closed", f"period {p.period} is {p.status.value} and the late-item policy is reject",
                "reopen the period and replay the item, or switch the entity's policy to next_open_period",
            )
        nxt = self.next_open(legal_entity_id, p.period)
        if nxt is None:
            raise DomainError(
                item, "period.no_open_period",
                f"period {p.period} is {p.status.value} and no open period of {legal_entity_id} follows it",
                "open the next period, then replay the item from the financial dead-letter queue",
            )
        return Placement(nxt.period, nxt.start_date, p.period)

    def placer(self, policy: LatePolicy | Mapping[str, LatePolicy]) -> PlaceFn:
        """A ``(entity, date) -> Placement`` function for :func:`ledgerbridge.domain.posting.summarize`.

        ``policy`` is one policy for every entity or a per-entity mapping (an entity missing from the mapping is
        rejected with ``period.no_policy``). Results are cached per (entity, date)."""
        cache: dict[tuple[str, dt.date], Placement] = {}

        def place(legal_entity_id: str, d: dt.date) -> Placement:
            key = (legal_entity_id, d)
            hit = cache.get(key)
            if hit is not None:
                return hit
            if isinstance(policy, Mapping):
                pol = policy.get(legal_entity_id)
                if pol is None:
                    raise DomainError(
                        f"legal entity {legal_entity_id}", "period.no_policy", "no late-item policy configured",
                        "set late_item_policy (reject | next_open_period) for the entity",
                    )
            else:
                pol = policy
            placed = self.place(legal_entity_id, d, pol)
            cache[key] = placed
            return placed

        return place
