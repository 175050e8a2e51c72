"""Approval-state integrity: which source version of a time entry or expense belongs on the ledger.

A PSA reports each change of a time entry or expense as a new *version* (``system:entity:id:version`` is the
inbound idempotency key, so a connector must give every status change its own version number — the PSA's revision
counter or change timestamp). This module never edits what is posted: it answers, for one item, "given every
version seen so far and the version currently on the ledger, what must be reversed and what must be posted?".

Rules (see ``docs/domain-approvals-costing-fx.md`` for worked examples):

1. **Effective version.** The highest version whose status is ``approved`` — but only when no higher version
   exists. A newer version that is ``draft``, ``submitted``, ``rejected`` or ``recalled`` means the item has been
   un-approved: whatever is posted is reversed and nothing is posted until a newer version is approved.
   Equivalently: the effective version is the highest version if that one is approved, otherwise there is none.
2. **Order and duplicates do not matter.** Versions are de-duplicated by number and the decision depends only on
   the set seen, so late or repeated deliveries give the same ledger. If one version number is reported with two
   different statuses (a connector bug), the status furthest along the lifecycle wins
   (draft < submitted < approved < recalled < rejected): the conservative choice, because it never posts a
   version the PSA may have withdrawn. :func:`check_history` reports such conflicts.
3. **Never an in-place edit.** Moving from posted v2 to effective v3 is two deltas: REVERSE v2, then POST v3.
4. **Un-approved items never move.** Only an approved version is ever POSTed.
5. **The PSA is the system of record for approval.** :func:`decide` follows the latest status even when the PSA
   skipped a step; :func:`check_transition` / :func:`check_history` name transitions that PSA practice does not
   allow (for data-quality monitoring), they do not block postings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.types import DeltaAction, LedgerDelta
from ledgerbridge.model.entities import ApprovalStatus, Expense, TimeEntry

__all__ = [
    "LEGAL_TRANSITIONS",
    "BatchDecision",
    "VersionState",
    "check_history",
    "check_transition",
    "decide",
    "decide_many",
    "effective_version",
    "group_histories",
    "is_legal_transition",
]


class VersionState(NamedTuple):
    """One version of an item as the PSA reported it. A plain ``(version, status)`` tuple works too."""

    version: int
    approval_status: ApprovalStatus


# Lifecycle rank: resolves one version number reported with two statuses (conservative: furthest along wins).
_RANK: dict[ApprovalStatus, int] = {
    ApprovalStatus.DRAFT: 0,
    ApprovalStatus.SUBMITTED: 1,
    ApprovalStatus.APPROVED: 2,
    ApprovalStatus.RECALLED: 3,
    ApprovalStatus.REJECTED: 4,
}

_A = ApprovalStatus
#: Status changes PSA practice allows between consecutive versions (prev -> new). Anything else is illegal.
#: - draft -> approved is allowed: projects without an approval step auto-approve on save.
#: - approved -> approved is allowed: an edit of an auto-approved entry (reversed and re-posted by ``decide``).
#: - approved -> draft is allowed: the PSA reopened the period / unapproved the entry (treated as a recall).
#: - approved -> submitted is NOT allowed: an approved entry must be recalled or rejected before it is edited.
#: - rejected/recalled -> approved is NOT allowed: the entry returns to its owner, who must resubmit it first.
#: - recalled <-> rejected is NOT allowed: a recalled entry is with its owner (nothing to reject) and a rejected
#:   one is no longer with the approver (nothing to recall).
LEGAL_TRANSITIONS: frozenset[tuple[ApprovalStatus, ApprovalStatus]] = frozenset(
    {
        (_A.DRAFT, _A.DRAFT),
        (_A.DRAFT, _A.SUBMITTED),
        (_A.DRAFT, _A.APPROVED),
        (_A.SUBMITTED, _A.SUBMITTED),
        (_A.SUBMITTED, _A.DRAFT),
        (_A.SUBMITTED, _A.APPROVED),
        (_A.SUBMITTED, _A.REJECTED),
        (_A.SUBMITTED, _A.RECALLED),
        (_A.APPROVED, _A.APPROVED),
        (_A.APPROVED, _A.DRAFT),
        (_A.APPROVED, _A.RECALLED),
        (_A.APPROVED, _A.REJECTED),
        (_A.REJECTED, _A.REJECTED),
        (_A.REJECTED, _A.DRAFT),
        (_A.REJECTED, _A.SUBMITTED),
        (_A.RECALLED, _A.RECALLED),
        (_A.RECALLED, _A.DRAFT),
        (_A.RECALLED, _A.SUBMITTED),
    }
)

_TRANSITION_FIX: dict[tuple[ApprovalStatus, ApprovalStatus], str] = {
    (_A.REJECTED, _A.APPROVED): "a rejected entry must be resubmitted (submitted) before it can be approved",
    (_A.RECALLED, _A.APPROVED): "a recalled entry must be resubmitted (submitted) before it can be approved",
    (_A.APPROVED, _A.SUBMITTED): "recall or reject the approved entry before editing and resubmitting it",
    (_A.RECALLED, _A.REJECTED): "a recalled entry is back with its owner; it cannot be rejected until resubmitted",
    (_A.REJECTED, _A.RECALLED): "a rejected entry is back with its owner; there is nothing to recall",
    (_A.DRAFT, _A.REJECTED): "only a submitted entry can be rejected; submit it first",
    (_A.DRAFT, _A.RECALLED): "only a submitted or approved entry can be recalled",
}


def is_legal_transition(prev: ApprovalStatus, new: ApprovalStatus) -> bool:
    return (prev, new) in LEGAL_TRANSITIONS


def check_transition(prev: ApprovalStatus, new: ApprovalStatus, *, item: str = "approval") -> None:
    """Raise :class:`DomainError` (rule ``approvals.illegal_transition``) if PSA practice forbids ``prev -> new``."""
    if (prev, new) in LEGAL_TRANSITIONS:
        return
    fix = _TRANSITION_FIX.get((prev, new), "correct the approval status in the PSA and resend the entry")
    message = f"status changed from {prev.value} to {new.value}, which is not allowed"
    raise DomainError(item, "approvals.illegal_transition", message, fix)


def _statuses(history: Iterable[tuple[int, ApprovalStatus]]) -> dict[int, ApprovalStatus]:
    """De-duplicate by version number; a conflicting duplicate resolves to the status furthest along."""
    seen: dict[int, ApprovalStatus] = {}
    for version, status in history:
        prev = seen.get(version)
        if prev is None or _RANK[status] > _RANK[prev]:
            seen[version] = status
    return seen


def _latest(history: Iterable[tuple[int, ApprovalStatus]]) -> tuple[int, ApprovalStatus] | None:
    """The highest version and its (conflict-resolved) status in one pass, without building a dict."""
    best_v = -1
    best_s: ApprovalStatus | None = None
    for version, status in history:
        if version > best_v:
            best_v, best_s = version, status
        elif version == best_v and best_s is not None and _RANK[status] > _RANK[best_s]:
            best_s = status
    if best_s is None:
        return None
    return best_v, best_s


def effective_version(history: Iterable[tuple[int, ApprovalStatus]]) -> int | None:
    """The version that belongs on the ledger, or None if the item is not (or no longer) approved."""
    latest = _latest(history)
    if latest is None or latest[1] is not ApprovalStatus.APPROVED:
        return None
    return latest[0]


def _unapproved_reason(status: ApprovalStatus, version: int, posted: int) -> str:
    if status is ApprovalStatus.RECALLED:
        return f"recalled after posting: v{version} recalls v{posted}"
    if status is ApprovalStatus.REJECTED:
        return f"rejected after posting: v{version} rejects v{posted}"
    return f"edited after posting: v{version} is {status.value}, awaiting approval; v{posted} reversed"


def _deltas(
    entity: str, item_id: str, posted: int | None, latest: tuple[int, ApprovalStatus] | None
) -> tuple[list[LedgerDelta], int | None]:
    effective = latest[0] if latest is not None and latest[1] is ApprovalStatus.APPROVED else None
    if effective == posted:
        return [], posted
    out: list[LedgerDelta] = []
    if posted is not None:
        if effective is None:
            assert latest is not None  # something newer than the posted version un-approved it
            reason = _unapproved_reason(latest[1], latest[0], posted)
        else:
            reason = f"edited: v{effective} replaces v{posted}"
        out.append(LedgerDelta(DeltaAction.REVERSE, entity, item_id, posted, reason))
    if effective is not None:
        reason = "approved" if posted is None else f"edited: v{effective} replaces v{posted}"
        out.append(LedgerDelta(DeltaAction.POST, entity, item_id, effective, reason))
    return out, effective


def _unknown_posted(entity: str, item_id: str, posted: int, versions: Iterable[int]) -> DomainError:
    known = sorted(set(versions))
    return DomainError(
        f"{entity} {item_id}",
        "approvals.posted_version_unknown",
        f"v{posted} is recorded as posted but is not in the version history seen ({known or 'none'})",
        "load the item's full version history (replay its inbox entries) before deciding",
    )


def decide(
    history: Sequence[tuple[int, ApprovalStatus]],
    posted_version: int | None,
    *,
    entity: str,
    item_id: str,
) -> tuple[list[LedgerDelta], int | None]:
    """Decide the ledger deltas for one item.

    ``history`` is every version of the item seen so far (any order, duplicates allowed); ``posted_version`` is the
    version currently on the ledger (None if nothing). Returns the deltas to apply, in order (REVERSE before POST),
    and the version posted afterwards. Raises :class:`DomainError` (``approvals.posted_version_unknown``) if the
    posted version is not in ``history`` — the history is incomplete and deciding would be guesswork.
    """
    latest = _latest(history)
    if posted_version is not None and not any(v == posted_version for v, _ in history):
        raise _unknown_posted(entity, item_id, posted_version, (v for v, _ in history))
    return _deltas(entity, item_id, posted_version, latest)


@dataclass(slots=True)
class BatchDecision:
    """Result of :func:`decide_many`: deltas for every item, the new posted version per item, and the items
    that could not be decided (left exactly where they were)."""

    deltas: list[LedgerDelta] = field(default_factory=list)
    posted: dict[str, int | None] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)


def decide_many(
    histories: Mapping[str, Sequence[tuple[int, ApprovalStatus]]],
    posted: Mapping[str, int | None],
    *,
    entity: str,
) -> BatchDecision:
    """:func:`decide` over many items (``item_id -> history``; ``posted`` maps item_id -> posted version, items
    missing from it have nothing posted). One pass per history, no per-item allocation beyond the deltas: about
    a second per million items. An item whose history is inconsistent is reported and left unchanged."""
    result = BatchDecision()
    deltas = result.deltas
    new_posted = result.posted
    approved = ApprovalStatus.APPROVED
    rank = _RANK
    for item_id, history in histories.items():
        current = posted.get(item_id)
        best_v = -1
        best_s: ApprovalStatus | None = None
        has_posted = current is None
        for version, status in history:
            if version > best_v:
                best_v, best_s = version, status
            elif version == best_v and best_s is not None and rank[status] > rank[best_s]:
                best_s = status
            if version == current:
                has_posted = True
        if not has_posted:
            assert current is not None
            result.violations.append(_unknown_posted(entity, item_id, current, (v for v, _ in history)).to_violation())
            new_posted[item_id] = current
            continue
        if best_s is None:  # empty history: nothing to do
            new_posted[item_id] = current
            continue
        if (best_v if best_s is approved else None) == current:  # fast path: nothing changes
            new_posted[item_id] = current
            continue
        item_deltas, new = _deltas(entity, item_id, current, (best_v, best_s))
        deltas.extend(item_deltas)
        new_posted[item_id] = new
    return result


def group_histories(items: Iterable[TimeEntry | Expense]) -> dict[str, list[VersionState]]:
    """Group source versions into histories for :func:`decide_many`, keyed ``"{source_system}:{id}"`` (the item
    id used in deltas). Order within a history is arrival order; duplicates are kept (``decide`` ignores them)."""
    out: dict[str, list[VersionState]] = {}
    for it in items:
        key = f"{it.source_system}:{it.id}"
        h = out.get(key)
        if h is None:
            h = out[key] = []
        h.append(VersionState(it.version, it.approval_status))
    return out


def check_history(history: Iterable[tuple[int, ApprovalStatus]], *, item: str) -> list[Violation]:
    """Data-quality checks over one item's history (they do not block :func:`decide`):

    - ``approvals.conflicting_version``: one version number reported with two different statuses;
    - ``approvals.illegal_transition``: consecutive versions (v, v+1) whose status change PSA practice forbids.
      Only adjacent version numbers are compared: a gap may be a version still in flight.
    """
    out: list[Violation] = []
    reported: dict[int, set[ApprovalStatus]] = {}
    for version, status in history:
        reported.setdefault(version, set()).add(status)
    for version in sorted(reported):
        statuses = reported[version]
        if len(statuses) > 1:
            names = ", ".join(sorted(s.value for s in statuses))
            out.append(
                Violation(
                    f"{item}@{version}",
                    "approvals.conflicting_version",
                    f"v{version} was reported with different statuses ({names})",
                    "the connector must give every status change its own version number (PSA revision or change "
                    "timestamp); fix the mapping and replay the item",
                )
            )
    resolved = _statuses((v, s) for v, ss in reported.items() for s in ss)
    for version in sorted(resolved):
        nxt = resolved.get(version + 1)
        if nxt is None:
            continue
        try:
            check_transition(resolved[version], nxt, item=f"{item}@{version + 1}")
        except DomainError as e:
            out.append(e.to_violation())
    return out
