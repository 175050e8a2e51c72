"""Pure Jira + Tempo mapping (no I/O): ADF text, hours rounding, local work date, project/billable/approval sources,
fingerprints, versions, deletion versions, option validation, cursor feed positions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from ledgerbridge.connectors.jira_tempo.connector import _advance, _Periods
from ledgerbridge.connectors.jira_tempo.mapping import (
    Approval,
    Context,
    FieldMap,
    IssueInfo,
    TempoFacts,
    adf_text,
    content,
    deleted_entry,
    fingerprint,
    hours_of,
    next_version,
    stamp_seconds,
    tempo_facts,
)
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus

RAW = {"id": "10100", "issueId": "20", "author": {"accountId": "557058:a"}, "timeSpentSeconds": 5400,
       "started": "2026-11-02T23:30:00.000-0500", "updated": "2026-11-03T05:00:00.000+0000",
       "comment": {"type": "doc", "version": 1, "content": [
           {"type": "paragraph", "content": [{"type": "text", "text": "review "},
                                             {"type": "text", "text": "of PR"}]},
           {"type": "paragraph", "content": [{"type": "text", "text": "second"}]}]}}
ISSUE = IssueInfo("ACME-4", "10001", "ACME", "FIN-77")


def ctx(**kw) -> Context:
    base = {"issue": ISSUE, "tempo": TempoFacts(True, "ACC-1", 1_790_000_000),
            "approval": Approval("APPROVED", 1_790_000_100), "tempo_enabled": True}
    return Context(**{**base, **kw})


def test_adf_and_hours_and_local_date() -> None:
    assert adf_text(RAW["comment"]) == "review of PR\nsecond"
    assert adf_text("plain") == "plain" and adf_text(None) == ""
    assert hours_of(1000, 4) == Decimal("0.2778") and hours_of(5400, 2) == Decimal("1.50")
    body = content(RAW, ctx(), FieldMap())
    assert body["work_date"] == "2026-11-02"  # the author's local day, not the UTC one (Nov 3)
    assert (body["hours"], body["project_id"], body["status"], body["task"]) == ("1.5000", "10001", "approved",
                                                                                  "ACME-4")


def test_project_billable_and_approval_sources() -> None:
    fm = FieldMap.from_options({"project_from": "issue_field", "project_field": "customfield_1"})
    assert content(RAW, ctx(), fm)["project_id"] == "FIN-77"
    assert content(RAW, ctx(), FieldMap.from_options({"project_id_style": "key"}))["project_id"] == "ACME"
    assert content(RAW, ctx(), FieldMap.from_options({"project_from": "account"}))["project_id"] == "ACC-1"
    assert content(RAW, ctx(tempo=None), FieldMap(billable_default=False))["billable"] is False
    assert content(RAW, ctx(approval=None), FieldMap())["status"] == "draft"  # period not approved
    assert content(RAW, ctx(approval=Approval("IN_REVIEW", 1)), FieldMap())["status"] == "submitted"
    assert content(RAW, ctx(tempo_enabled=False, approval=None), FieldMap())["status"] == "approved"
    facts = tempo_facts({"billableSeconds": 0, "updatedAt": "2026-11-02T10:00:00Z", "attributes": {"values": [
        {"key": "_Billable_", "value": "Yes"}, {"key": "_Account_", "value": "A9"}]}},
        FieldMap(billable_attribute="_Billable_"))
    assert (facts.billable, facts.account) == (True, "A9")  # the attribute wins over billableSeconds
    assert tempo_facts({"billableSeconds": 0}, FieldMap()).billable is False


def test_unmappable_worklogs_name_rule_and_fix() -> None:
    with pytest.raises(RecordValidationError, match=r"jira\.project"):
        content(RAW, ctx(tempo=TempoFacts(True, None, 1)), FieldMap.from_options({"project_from": "account"}))
    with pytest.raises(RecordValidationError, match=r"jira\.hours_range"):
        content({**RAW, "timeSpentSeconds": 25 * 3600}, ctx(), FieldMap())
    with pytest.raises(RecordValidationError, match=r"jira\.started"):
        content({**RAW, "started": "yesterday"}, ctx(), FieldMap())
    for bad in ({"project_from": "nowhere"}, {"project_from": "issue_field"}, {"approval_values": {"X": "ok"}},
                {"project_id_style": "name"}):
        with pytest.raises(ValueError):
            FieldMap.from_options(bad)


def test_fingerprint_versions_and_deletion() -> None:
    body = content(RAW, ctx(), FieldMap())
    assert fingerprint(body) == fingerprint(dict(body))
    assert fingerprint({**body, "hours": "1.0000"}) != fingerprint(body)
    assert stamp_seconds(RAW, ctx()) == max(int(dt.datetime(2026, 11, 3, 5, tzinfo=dt.UTC).timestamp()),
                                            1_790_000_100)
    assert next_version(100, None) == 100 and next_version(100, 100) == 101 and next_version(50, 100) == 101
    dead = deleted_entry("10100", 7, body, system="psa", fields=FieldMap())
    assert (dead.version, dead.approval_status, dead.hours) == (7, ApprovalStatus.RECALLED, Decimal("1.5000"))
    draft = deleted_entry("10100", 7, {**body, "status": "draft"}, system="psa", fields=FieldMap())
    assert draft.approval_status is ApprovalStatus.DRAFT


def test_feed_position_stays_behind_the_gap_and_never_moves_back() -> None:
    now, lag, overlap = 10_000_000, 60_000, 300_000
    assert _advance(0, None, now, lag, overlap) == 0  # nothing read: stay
    assert _advance(0, now - 10_000, now, lag, overlap) == now - lag - overlap  # a too-young until is capped
    assert _advance(0, 5_000_000, now, lag, overlap) == 5_000_000 - overlap
    assert _advance(9_000_000, 5_000_000, now, lag, overlap) == 9_000_000  # never back
    periods = _Periods([("2026-11-01", "2026-11-30"), ("2026-10-01", "2026-10-31")])
    assert periods.of("2026-11-15") == ("2026-11-01", "2026-11-30") and periods.of("2026-09-30") is None
