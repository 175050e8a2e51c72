"""Costing: resolve effective-dated cost and bill rates and value time entries and expenses.

Rate resolution (see ``docs/domain-approvals-costing-fx.md``):

- A :class:`~ledgerbridge.model.entities.RateCardLine` applies from ``effective_from`` to ``effective_to``
  (both inclusive; ``effective_to`` None = open-ended) to entries whose resource, role and project match every scope
  field the line sets.
- The most specific matching line wins: resource+project > resource > role+project > role > project-only.
  In general specificity is (names a resource, names a role, names a project) compared in that order, so a line
  naming a resource *and* a role (matched only while the resource has that role) outranks the same line without
  the role.
- Among lines of the same scope covering the date, the latest ``effective_from`` wins: a new rate supersedes an
  open-ended older one without closing it, and a dated line can override a window of a longer one.
- Two lines of the same scope and kind that start on the same day and overlap cannot be ranked: that is a
  validation error (:func:`validate_rate_card`), and costing an entry on such a day raises ``rates.ambiguous_rate``
  rather than guessing.
- No rate is a :class:`DomainError` (``rates.missing_cost_rate`` / ``rates.missing_bill_rate``), never a zero.

:class:`RateBook` pre-resolves each scope's lines into a timeline of non-overlapping segments (a heap sweep,
O(k log k) for k lines), and caches, per (kind, resource, role, project) combination met, the merged timeline
across all specificity levels; a lookup is then one dict access and one ``bisect`` — O(log n) in the number of
rate changes.
"""

from __future__ import annotations

import datetime as dt
import heapq
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol, TypeVar

from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.types import CostedExpense, CostedTime
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import Expense, Project, RateCardLine, RateKind, Resource, TimeEntry
from ledgerbridge.model.money import MINOR_UNITS, minor_unit, quantum, round_money

__all__ = [
    "RateBook",
    "cost_expense",
    "cost_expenses_many",
    "cost_many",
    "cost_time",
    "item_label",
    "specificity",
    "validate_rate_card",
]

_Scope = tuple[str | None, str | None, str | None]  # (resource_id, role, project_id)
_ZERO = Decimal(0)
#: Minor-unit quantum per currency, precomputed (same rounding as ``round_money``, without per-call lookups).
_QUANTA: dict[str, Decimal] = {c: quantum(c) for c in MINOR_UNITS}
_ONE_DAY = dt.timedelta(days=1)


def specificity(line: RateCardLine) -> int:
    """Rank of a line's scope: higher is more specific (resource 4, role 2, project 1, added up)."""
    return (4 if line.resource_id is not None else 0) + (2 if line.role is not None else 0) + (
        1 if line.project_id is not None else 0
    )


def _scope(line: RateCardLine) -> _Scope:
    return (line.resource_id, line.role, line.project_id)


def _describe_scope(scope: _Scope) -> str:
    parts = [f"{name} {value}" for name, value in zip(("resource", "role", "project"), scope, strict=True) if value]
    return " + ".join(parts)


def item_label(entity: str, system: str, item_id: str, version: int) -> str:
    """How an item is named in errors: ``"time_entry psa_files:TE-1@2"``."""
    return f"{entity} {system}:{item_id}@{version}"


@dataclass(frozen=True, slots=True)
class _Pick:
    """What applies on a segment of the timeline: one line, nothing (a gap), or an unresolvable tie."""

    line: RateCardLine | None
    tied: tuple[RateCardLine, ...] = ()


_GAP = _Pick(None)


class _Timeline:
    """Non-overlapping segments ``[starts[i], starts[i+1])`` each with a pick; before ``starts[0]`` is a gap."""

    __slots__ = ("picks", "starts")

    def __init__(self, starts: list[dt.date], picks: list[_Pick]) -> None:
        self.starts = starts
        self.picks = picks

    def at(self, on: dt.date) -> _Pick:
        i = bisect_right(self.starts, on) - 1
        return self.picks[i] if i >= 0 else _GAP

    @classmethod
    def build(cls, boundaries: Iterable[dt.date], pick_at: Callable[[dt.date], _Pick]) -> _Timeline:
        starts: list[dt.date] = []
        picks: list[_Pick] = []
        for b in sorted(set(boundaries)):
            p = pick_at(b)
            if picks and (p is picks[-1] or p == picks[-1]):
                continue  # same pick as the previous segment: extend it
            starts.append(b)
            picks.append(p)
        return cls(starts, picks)


def _scope_timeline(lines: Sequence[RateCardLine]) -> _Timeline:
    """Within one scope: on each date the covering line with the latest ``effective_from`` applies; two covering
    lines sharing that latest start are an unresolvable tie. A sweep over the boundaries with a heap keyed by
    latest start (expired lines dropped lazily): O(k log k) for k lines."""
    by_start = sorted(lines, key=lambda ln: ln.effective_from)
    heap: list[tuple[int, str, int]] = []  # (-start ordinal, line id, index into by_start)
    starts: list[dt.date] = []
    picks: list[_Pick] = []
    nxt = 0
    for b in sorted(set(_line_boundaries(by_start))):
        while nxt < len(by_start) and by_start[nxt].effective_from <= b:
            ln = by_start[nxt]
            heapq.heappush(heap, (-ln.effective_from.toordinal(), ln.id, nxt))
            nxt += 1
        top: list[tuple[int, str, int]] = []
        while heap:
            entry = heap[0]
            end = by_start[entry[2]].effective_to
            if end is not None and end < b:  # expired: never applies again (boundaries only move forward)
                heapq.heappop(heap)
                continue
            if top and entry[0] != top[0][0]:
                break
            top.append(heapq.heappop(heap))
        for entry in top:
            heapq.heappush(heap, entry)
        if not top:
            pick = _GAP
        elif len(top) == 1:
            pick = _Pick(by_start[top[0][2]])
        else:
            pick = _Pick(None, tuple(by_start[e[2]] for e in top))
        if picks and picks[-1] == pick:
            continue
        starts.append(b)
        picks.append(pick)
    return _Timeline(starts, picks)


class _LevelsPick:
    """Across specificity levels (most specific first): the first level that has something on the date."""

    def __init__(self, levels: Sequence[_Timeline]) -> None:
        self.levels = levels

    def __call__(self, on: dt.date) -> _Pick:
        for tl in self.levels:
            p = tl.at(on)
            if p.line is not None or p.tied:
                return p
        return _GAP


def _line_boundaries(lines: Iterable[RateCardLine]) -> list[dt.date]:
    out: list[dt.date] = []
    for ln in lines:
        out.append(ln.effective_from)
        if ln.effective_to is not None and ln.effective_to < dt.date.max:
            out.append(ln.effective_to + _ONE_DAY)
    return out


class RateBook:
    """An index over rate-card lines for fast, exact rate resolution. Build once per batch with
    :meth:`from_lines`; :meth:`line_for` / :meth:`rate_for` are then O(log n)."""

    __slots__ = ("_bill", "_by_scope", "_cost", "_resolved", "lines")

    # Per-kind caches keyed by plain string tuples (hashing an enum member calls Python code: too slow per entry).

    def __init__(self, lines: Sequence[RateCardLine]) -> None:
        self.lines: tuple[RateCardLine, ...] = tuple(lines)
        grouped: dict[tuple[RateKind, _Scope], list[RateCardLine]] = defaultdict(list)
        for ln in self.lines:
            grouped[(ln.kind, _scope(ln))].append(ln)
        self._by_scope: dict[tuple[RateKind, _Scope], _Timeline] = {
            key: _scope_timeline(group) for key, group in grouped.items()
        }
        self._resolved: dict[RateKind, dict[tuple[str, str, str], _Timeline]] = {k: {} for k in RateKind}
        self._cost = self._resolved[RateKind.COST]
        self._bill = self._resolved[RateKind.BILL]

    @classmethod
    def from_lines(cls, lines: Iterable[RateCardLine]) -> RateBook:
        return cls(list(lines))

    def _timeline(self, kind: RateKind, resource_id: str, role: str, project_id: str) -> _Timeline:
        cache = self._resolved[kind]
        key = (resource_id, role, project_id)
        tl = cache.get(key)
        if tl is None:
            candidates: list[_Scope] = [  # most specific first: (resource, role, project) presence, lexicographic
                (resource_id, role, project_id),
                (resource_id, role, None),
                (resource_id, None, project_id),
                (resource_id, None, None),
                (None, role, project_id),
                (None, role, None),
                (None, None, project_id),
            ]
            levels = [t for t in (self._by_scope.get((kind, c)) for c in candidates) if t is not None]
            boundaries = [b for t in levels for b in t.starts]
            tl = _Timeline.build(boundaries, _LevelsPick(levels))
            cache[key] = tl
        return tl

    def line_for(
        self, kind: RateKind, *, resource_id: str, role: str, project_id: str, on: dt.date, item: str = "rate lookup"
    ) -> RateCardLine:
        """The winning line, or :class:`DomainError` naming resource, role, project and date."""
        pick = self._timeline(kind, resource_id, role, project_id).at(on)
        if pick.line is not None:
            return pick.line
        raise _no_rate(pick, kind, resource_id, role, project_id, on, item)

    def rate_for(
        self, kind: RateKind, *, resource_id: str, role: str, project_id: str, on: dt.date
    ) -> tuple[Decimal, str]:
        """``(rate per hour, currency)`` of the winning line."""
        ln = self.line_for(kind, resource_id=resource_id, role=role, project_id=project_id, on=on)
        return ln.rate, ln.currency


def _no_rate(
    pick: _Pick, kind: RateKind, resource_id: str, role: str, project_id: str, on: dt.date, item: str
) -> DomainError:
    if pick.tied:
        ids = ", ".join(ln.id for ln in pick.tied)
        return DomainError(
            item,
            "rates.ambiguous_rate",
            f"{kind.value} rate lines {ids} have the same scope and start date and all cover {on.isoformat()} "
            f"(resource {resource_id}, role {role}, project {project_id})",
            "end-date or remove all but one of these rate-card lines, then replay the item",
        )
    return DomainError(
        item,
        f"rates.missing_{kind.value}_rate",
        f"no {kind.value} rate for resource {resource_id}, role {role}, project {project_id} on {on.isoformat()}",
        f"add a {kind.value} rate-card line covering {on.isoformat()} for this resource, role or project, "
        "then replay the item (a missing rate is never costed at zero)",
    )


def validate_rate_card(lines: Iterable[RateCardLine]) -> list[Violation]:
    """Rate-card checks a finance person would make before loading it:

    - ``rates.duplicate_line_id``: two lines share an id;
    - ``rates.ambiguous_overlap``: two lines of the same kind and scope start on the same day (so they overlap and
      the latest-start rule cannot choose between them).
    """
    out: list[Violation] = []
    by_id: dict[str, int] = defaultdict(int)
    groups: dict[tuple[RateKind, _Scope, dt.date], list[RateCardLine]] = defaultdict(list)
    for ln in lines:
        by_id[ln.id] += 1
        groups[(ln.kind, _scope(ln), ln.effective_from)].append(ln)
    for line_id, n in by_id.items():
        if n > 1:
            out.append(
                Violation(
                    f"rate_card_line {line_id}",
                    "rates.duplicate_line_id",
                    f"{n} rate-card lines share the id {line_id}",
                    "give every rate-card line its own id",
                )
            )
    for (kind, scope, start), group in groups.items():
        if len(group) > 1:
            ids = ", ".join(sorted(ln.id for ln in group))
            out.append(
                Violation(
                    f"rate_card_line {ids}",
                    "rates.ambiguous_overlap",
                    f"{len(group)} {kind.value} rate lines for {_describe_scope(scope)} all start on "
                    f"{start.isoformat()} and overlap, so no single rate applies",
                    "keep one line per scope and start date: end-date or delete the others",
                )
            )
    return out


def _mismatch(item: str, what: str, entry_value: str, given: str) -> DomainError:
    return DomainError(
        item,
        f"costing.{what}_mismatch",
        f"the entry names {what} {entry_value} but {what} {given} was supplied",
        f"look up {what} {entry_value} and cost the entry against it",
    )


def cost_time(entry: TimeEntry, project: Project, resource: Resource, rates: RateBook) -> CostedTime:
    """Value one time-entry version: cost at the cost rate (in the cost rate's currency) and, when billable,
    billable value at the bill rate, which must be in the project currency. Amounts are rounded half-up to the
    currency minor unit (as :func:`~ledgerbridge.model.money.round_money`). Cost center and legal entity are the
    project's (labor cost is charged where the work is billed)."""
    pid, rid, role, on = project.id, resource.id, resource.role, entry.work_date
    if entry.project_id != pid:
        raise _mismatch(_label(entry), "project", entry.project_id, pid)
    if entry.resource_id != rid:
        raise _mismatch(_label(entry), "resource", entry.resource_id, rid)
    hours = entry.hours
    key = (rid, role, pid)
    tl = rates._cost.get(key) or rates._timeline(RateKind.COST, rid, role, pid)
    pick = tl.at(on)
    cost = pick.line
    if cost is None:
        raise _no_rate(pick, RateKind.COST, rid, role, pid, on, _label(entry))
    currency = project.currency
    if entry.billable:
        tl = rates._bill.get(key) or rates._timeline(RateKind.BILL, rid, role, pid)
        pick = tl.at(on)
        bill = pick.line
        if bill is None:
            raise _no_rate(pick, RateKind.BILL, rid, role, pid, on, _label(entry))
        if bill.currency != currency:
            raise DomainError(
                _label(entry),
                "rates.bill_currency_mismatch",
                f"bill rate line {bill.id} is in {bill.currency} but project {pid} bills in {currency}",
                f"add a {currency} bill rate for this scope, or correct the project currency",
            )
        bill_rate = bill.rate
        billable_value = (hours * bill_rate).quantize(_QUANTA[currency], ROUND_HALF_UP)
    else:
        bill_rate = _ZERO
        billable_value = _ZERO.quantize(_QUANTA[currency])
    return CostedTime(
        SourceRef(system=entry.source_system, entity="time_entry", id=entry.id, version=entry.version),
        project.legal_entity_id,
        pid,
        rid,
        project.cost_center,
        on,
        hours,
        entry.billable,
        cost.rate,
        cost.currency,
        (hours * cost.rate).quantize(_QUANTA[cost.currency], ROUND_HALF_UP),
        bill_rate,
        currency,
        billable_value,
    )


def _label(entry: TimeEntry) -> str:
    return item_label("time_entry", entry.source_system, entry.id, entry.version)


def cost_expense(expense: Expense, project: Project, resource: Resource) -> CostedExpense:
    """Carry an expense version to the ledger at its own amount and currency. An amount with more decimals than
    its currency has is refused (``costing.expense_precision``) rather than rounded away."""
    item = item_label("expense", expense.source_system, expense.id, expense.version)
    if expense.project_id != project.id:
        raise _mismatch(item, "project", expense.project_id, project.id)
    if expense.resource_id != resource.id:
        raise _mismatch(item, "resource", expense.resource_id, resource.id)
    if round_money(expense.amount, expense.currency) != expense.amount:
        raise DomainError(
            item,
            "costing.expense_precision",
            f"amount {expense.amount} {expense.currency} has more than {minor_unit(expense.currency)} decimals",
            f"correct the receipt amount in the PSA to whole {expense.currency} minor units and resend it",
        )
    return CostedExpense(
        ref=SourceRef(system=expense.source_system, entity="expense", id=expense.id, version=expense.version),
        legal_entity_id=project.legal_entity_id,
        project_id=project.id,
        resource_id=resource.id,
        cost_center=project.cost_center,
        expense_date=expense.expense_date,
        category=expense.category,
        billable=expense.billable,
        amount=expense.amount,
        currency=expense.currency,
    )


class _SourceItem(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def source_system(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def project_id(self) -> str: ...
    @property
    def resource_id(self) -> str: ...


_I = TypeVar("_I", bound=_SourceItem)
_O = TypeVar("_O")


def _each(
    entity: str,
    items: Iterable[_I],
    projects: Mapping[str, Project],
    resources: Mapping[str, Resource],
    fn: Callable[[_I, Project, Resource], _O],
) -> tuple[list[_O], list[Violation]]:
    """Apply ``fn`` to every item with its project and resource; collect a Violation for each one that fails."""
    out: list[_O] = []
    violations: list[Violation] = []
    for it in items:
        project = projects.get(it.project_id)
        resource = resources.get(it.resource_id)
        if project is None or resource is None:
            what, ident = ("project", it.project_id) if project is None else ("resource", it.resource_id)
            violations.append(
                Violation(
                    item_label(entity, it.source_system, it.id, it.version),
                    f"costing.unknown_{what}",
                    f"{what} {ident} is not in the master data",
                    f"sync {what} {ident} from its source system (or correct the entry), then replay the item",
                )
            )
            continue
        try:
            out.append(fn(it, project, resource))
        except DomainError as e:
            violations.append(e.to_violation())
    return out, violations


def cost_many(
    entries: Iterable[TimeEntry],
    projects: Mapping[str, Project],
    resources: Mapping[str, Resource],
    rates: RateBook,
) -> tuple[list[CostedTime], list[Violation]]:
    """Cost many time-entry versions; an entry that cannot be costed becomes a :class:`Violation` and the batch
    goes on (nothing is dropped silently: ``len(costed) + len(violations) == number of entries``)."""
    return _each("time_entry", entries, projects, resources, lambda e, p, r: cost_time(e, p, r, rates))


def cost_expenses_many(
    expenses: Iterable[Expense], projects: Mapping[str, Project], resources: Mapping[str, Resource]
) -> tuple[list[CostedExpense], list[Violation]]:
    """:func:`cost_expense` over many expenses, collecting violations like :func:`cost_many`."""
    return _each("expense", expenses, projects, resources, cost_expense)
