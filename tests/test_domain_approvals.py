"""Approval-state integrity: which version of an item is on the ledger, incremental and batch."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.approvals import (
    LEGAL_TRANSITIONS,
    VersionState,
    check_history,
    check_transition,
    decide,
    decide_many,
    effective_version,
    group_histories,
    is_legal_transition,
)
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.types import DeltaAction, LedgerDelta
from ledgerbridge.model.entities import ApprovalStatus as S
from ledgerbridge.model.entities import TimeEntry

A, SUB, REJ, REC, DR = S.APPROVED, S.SUBMITTED, S.REJECTED, S.RECALLED, S.DRAFT


def _apply(net: Counter[int], deltas: list[LedgerDelta]) -> None:
    for d in deltas:
        net[d.version] += d.sign
        if net[d.version] == 0:
            del net[d.version]


def _reference_effective(statuses: dict[int, S]) -> int | None:
    """Written differently from the module: walk versions downwards, stop at the first one."""
    for v in sorted(statuses, reverse=True):
        return v if statuses[v] == S.APPROVED else None
    return None


# ---------------------------------------------------------------- examples


def test_first_approval_posts() -> None:
    deltas, posted = decide([VersionState(1, SUB), VersionState(2, A)], None, entity="time_entry", item_id="TE-1")
    assert posted == 2
    assert deltas == [LedgerDelta(DeltaAction.POST, "time_entry", "TE-1", 2, "approved")]


def test_submitted_only_never_moves() -> None:
    assert decide([(1, DR), (2, SUB)], None, entity="time_entry", item_id="TE-1") == ([], None)


def test_recall_after_posting_reverses_and_waits() -> None:
    deltas, posted = decide([(1, A), (2, REC)], 1, entity="expense", item_id="EX-9")
    assert posted is None
    assert [(d.action, d.version) for d in deltas] == [(DeltaAction.REVERSE, 1)]
    assert deltas[0].reason.startswith("recalled after posting")
    assert deltas[0].entity == "expense" and deltas[0].item_id == "EX-9"


def test_rejected_after_posting_reverses() -> None:
    deltas, posted = decide([(2, REJ), (1, A)], 1, entity="time_entry", item_id="TE-1")
    assert posted is None
    assert deltas[0].action is DeltaAction.REVERSE and "rejected after posting" in deltas[0].reason


def test_edit_to_draft_reverses_and_waits() -> None:
    deltas, posted = decide([(1, A), (2, DR)], 1, entity="time_entry", item_id="TE-1")
    assert posted is None and len(deltas) == 1
    assert "edited after posting" in deltas[0].reason and "v2 is draft" in deltas[0].reason


def test_edit_is_reverse_then_post_never_in_place() -> None:
    deltas, posted = decide([(2, A), (3, A)], 2, entity="time_entry", item_id="TE-1")
    assert posted == 3
    assert [(d.action, d.version) for d in deltas] == [(DeltaAction.REVERSE, 2), (DeltaAction.POST, 3)]
    assert all(d.reason == "edited: v3 replaces v2" for d in deltas)


def test_newer_unapproved_hides_older_approved() -> None:
    # v2 approved but v3 submitted: the item is un-approved, nothing goes on the ledger
    assert effective_version([(1, A), (2, A), (3, SUB)]) is None
    assert decide([(1, A), (2, A), (3, SUB)], None, entity="time_entry", item_id="TE-1") == ([], None)


def test_already_posted_is_idempotent() -> None:
    assert decide([(1, SUB), (2, A), (2, A)], 2, entity="time_entry", item_id="TE-1") == ([], 2)


def test_conflicting_duplicate_resolves_conservatively() -> None:
    assert effective_version([(2, A), (2, REC)]) is None
    assert effective_version([(2, REC), (2, A)]) is None
    assert effective_version([(2, SUB), (2, A)]) == 2


def test_unknown_posted_version_is_a_domain_error() -> None:
    with pytest.raises(DomainError) as ei:
        decide([(1, A)], 4, entity="time_entry", item_id="psa:TE-7")
    e = ei.value
    assert e.rule == "approvals.posted_version_unknown"
    assert e.item == "time_entry psa:TE-7"
    assert "v4 is recorded as posted" in e.message and "[1]" in e.message
    assert "replay" in e.fix
    assert str(e).startswith("time_entry psa:TE-7: v4 is recorded as posted")


def test_check_transition_names_illegal_moves() -> None:
    with pytest.raises(DomainError) as ei:
        check_transition(REJ, A, item="time_entry psa:TE-1@3")
    assert ei.value.rule == "approvals.illegal_transition"
    assert "rejected to approved" in ei.value.message
    assert "resubmitted" in ei.value.fix
    with pytest.raises(DomainError, match="recall or reject"):
        check_transition(A, SUB)
    with pytest.raises(DomainError):
        check_transition(REC, A)
    for prev, new in [(SUB, A), (A, REC), (A, REJ), (REJ, SUB), (REC, SUB), (DR, A), (A, A)]:
        check_transition(prev, new)  # legal: no error
        assert is_legal_transition(prev, new)


def test_every_status_pair_is_classified() -> None:
    for prev in S:
        for new in S:
            legal = (prev, new) in LEGAL_TRANSITIONS
            try:
                check_transition(prev, new)
                raised = False
            except DomainError:
                raised = True
            assert raised is not legal


def test_check_history_reports_conflicts_and_illegal_adjacent_steps() -> None:
    v = check_history([(1, SUB), (2, REJ), (3, A), (3, SUB), (5, A)], item="time_entry psa:TE-1")
    rules = sorted((x.rule, x.item) for x in v)
    # v3 conflicts (approved vs submitted -> resolves to approved); rejected v2 -> approved v3 is illegal;
    # v5 is not compared with v3 because v4 may still be in flight
    assert rules == [
        ("approvals.conflicting_version", "time_entry psa:TE-1@3"),
        ("approvals.illegal_transition", "time_entry psa:TE-1@3"),
    ]
    assert check_history([(1, DR), (2, SUB), (3, A), (4, REC), (5, SUB), (6, A)], item="x") == []


def test_decide_many_matches_decide_and_reports_bad_items() -> None:
    histories = {
        "a": [(1, A)],
        "b": [(1, A), (2, REC)],
        "c": [(1, A), (2, A)],
        "d": [(1, SUB)],
        "e": [(1, A)],
        "f": [],
    }
    posted = {"b": 1, "c": 1, "e": 3}
    out = decide_many(histories, posted, entity="time_entry")
    assert [v.item for v in out.violations] == ["time_entry e"]
    assert out.violations[0].rule == "approvals.posted_version_unknown"
    assert out.posted == {"a": 1, "b": None, "c": 2, "d": None, "e": 3, "f": None}
    expected: list[LedgerDelta] = []
    for item in ["a", "b", "c", "d"]:
        expected += decide(histories[item], posted.get(item), entity="time_entry", item_id=item)[0]
    assert out.deltas == expected


def test_group_histories_from_source_versions() -> None:
    def te(id: str, version: int, status: S, system: str = "psa") -> TimeEntry:
        return TimeEntry(
            id=id, source_system=system, version=version, project_id="P1", resource_id="R1",
            work_date=dt.date(2026, 1, 5), hours=Decimal(8), billable=True, approval_status=status,
        )

    hs = group_histories([te("TE-1", 2, A), te("TE-2", 1, SUB), te("TE-1", 1, SUB), te("TE-1", 2, A, "other")])
    assert hs == {"psa:TE-1": [(2, A), (1, SUB)], "psa:TE-2": [(1, SUB)], "other:TE-1": [(2, A)]}
    out = decide_many(hs, {}, entity="time_entry")
    assert [(d.item_id, d.version) for d in out.deltas] == [("psa:TE-1", 2), ("other:TE-1", 2)]


# ---------------------------------------------------------------- properties

statuses = st.sampled_from(list(S))


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[dict[int, S], list[tuple[int, S]]]:
    """A version history (one status per version, any statuses in any sequence) and an arrival order with
    duplicates and out-of-order delivery."""
    n = draw(st.integers(1, 8))
    status_of = {v: draw(statuses) for v in range(1, n + 1)}
    events = [(v, s) for v, s in status_of.items()]
    events += draw(st.lists(st.sampled_from(events), max_size=6))  # duplicates
    return status_of, draw(st.permutations(events))


@settings(max_examples=400, deadline=None)
@given(arrivals())
def test_incremental_processing_nets_to_effective_version(case: tuple[dict[int, S], list[tuple[int, S]]]) -> None:
    status_of, events = case
    seen: list[tuple[int, S]] = []
    posted: int | None = None
    net: Counter[int] = Counter()
    for event in events:
        seen.append(event)
        deltas, posted = decide(seen, posted, entity="time_entry", item_id="TE-1")
        for d in deltas:
            if d.action is DeltaAction.POST:
                assert dict(seen)[d.version] == S.APPROVED, "posted an un-approved version"
                assert net[d.version] == 0, "posted a version twice"
            else:
                assert net[d.version] == 1, "reversed a version that is not on the ledger"
        _apply(net, deltas)
        # after every step the ledger holds exactly the effective version of what has been seen
        now = _reference_effective(dict(seen))
        assert dict(net) == ({now: 1} if now is not None else {})
        assert posted == now
    final = _reference_effective(status_of)
    assert dict(net) == ({final: 1} if final is not None else {})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), statuses), min_size=1, max_size=12), st.randoms())
def test_decision_is_independent_of_arrival_order(events: list[tuple[int, S]], rnd: object) -> None:
    # even with conflicting duplicates (same version, different statuses)
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert effective_version(events) == effective_version(shuffled)
    assert decide(events, None, entity="e", item_id="i") == decide(shuffled, None, entity="e", item_id="i")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=3), arrivals(), max_size=10))
def test_batch_equals_item_by_item(items: dict[str, tuple[dict[int, S], list[tuple[int, S]]]]) -> None:
    histories = {k: events for k, (_, events) in items.items()}
    first = decide_many(histories, {}, entity="expense")
    assert not first.violations
    expected: list[LedgerDelta] = []
    for k, h in histories.items():
        expected += decide(h, None, entity="expense", item_id=k)[0]
    assert first.deltas == expected
    # a second run over the same histories with the new posted state moves nothing
    again = decide_many(histories, first.posted, entity="expense")
    assert again.deltas == [] and again.posted == first.posted
