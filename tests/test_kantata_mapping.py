"""Kantata OX mapping (pure): minutes and cents to exact Decimals, approval from timesheet submissions, the
business fingerprint, versions, deletion versions and master data with custom fields."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ledgerbridge.connectors.kantata.mapping import (
    PROJECT_BASE,
    Defaults,
    FieldMap,
    approval_status,
    compact,
    custom_values,
    deleted_record,
    fingerprint,
    minutes_to_hours,
    next_version,
    to_project,
    to_record,
)
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus, ProjectStatus

ENTRY: dict[str, Any] = {"id": "9", "workspace_id": "1", "user_id": "2", "date_performed": "2026-11-16",
                         "time_in_minutes": 90, "billable": True, "notes": "n", "approved": False,
                         "timesheet_submission_id": "5", "updated_at": "2026-11-16T10:00:00-08:00", "locked": False,
                         "invoice_id": None}


@pytest.mark.parametrize(("minutes", "hours"), [(90, "1.5"), (20, "0.333333"), (1, "0.016667"), (0, "0"),
                                                (1440, "24")])
def test_minutes_become_exact_or_6_place_hours(minutes: int, hours: str) -> None:
    assert minutes_to_hours(minutes, "e", {}) == Decimal(hours)


@pytest.mark.parametrize("bad", [1441, -5, 1.5, "x", True, None])
def test_bad_minutes_are_refused_with_the_rule(bad: Any) -> None:
    with pytest.raises(RecordValidationError, match=r"kantata\.time_in_minutes"):
        minutes_to_hours(bad, "e", {"id": "9"})


@pytest.mark.parametrize(("approved", "status", "expected"), [
    (True, "approved", ApprovalStatus.APPROVED), (False, "pending", ApprovalStatus.SUBMITTED),
    (False, "rejected", ApprovalStatus.REJECTED), (False, "canceled", ApprovalStatus.RECALLED),
    (False, None, ApprovalStatus.DRAFT), (False, "approved", ApprovalStatus.SUBMITTED)])
def test_time_entry_approval_comes_from_the_submission(approved: bool, status: str | None,
                                                       expected: ApprovalStatus) -> None:
    sub = {"id": "5", "status": status} if status else None
    assert approval_status("time_entry", {**ENTRY, "approved": approved}, sub) is expected


def test_expense_amounts_use_the_currency_minor_unit_and_the_configured_approval_field() -> None:
    raw = {"id": "3", "workspace_id": "1", "user_id": "2", "date": "2026-11-16", "amount_in_cents": 12345,
           "currency": "JPY", "category": "Meals", "billable": False, "report_approved": True, "approved": False,
           "updated_at": "2026-11-16T18:00:00Z"}
    exp = to_record("expense", raw, None, system="kt", version=1, expense_approved_field="report_approved")
    assert (exp.amount, exp.currency, exp.approval_status) == (Decimal("12345"), "JPY", ApprovalStatus.APPROVED)
    eur = to_record("expense", {**raw, "currency": "EUR"}, None, system="kt", version=1)
    assert eur.amount == Decimal("123.45") and eur.approval_status is ApprovalStatus.DRAFT
    with pytest.raises(RecordValidationError, match=r"kantata\.amount"):
        to_record("expense", {**raw, "currency": "XXX"}, None, system="kt", version=1)


def test_fingerprint_ignores_locking_invoicing_and_timestamps_but_not_approval() -> None:
    base = fingerprint(ENTRY, ApprovalStatus.SUBMITTED)
    moved = {**ENTRY, "locked": True, "invoice_id": "77", "updated_at": "2026-11-17T00:00:00Z",
             "external_reference_ids": ["4"]}
    assert fingerprint(moved, ApprovalStatus.SUBMITTED) == base
    assert fingerprint(ENTRY, ApprovalStatus.APPROVED) != base
    assert fingerprint({**ENTRY, "time_in_minutes": 91}, ApprovalStatus.SUBMITTED) != base


def test_versions_follow_updated_at_and_never_repeat() -> None:
    first = next_version("2026-11-16T10:00:00-08:00", None)
    assert first == next_version("2026-11-16T18:00:00Z", None)  # offsets normalised
    assert next_version("2026-11-16T18:00:00Z", first) == first + 1  # same second: still a new version
    assert next_version("2026-11-16T17:00:00Z", first + 5) == first + 6  # an older stamp never goes back


def test_a_deleted_approved_entry_is_recalled_and_a_draft_stays_draft() -> None:
    entry = to_record("time_entry", {**ENTRY, "approved": True}, {"status": "approved"}, system="kt", version=10)
    gone = deleted_record("time_entry", "9", "kt", [10, "fp", ENTRY["updated_at"], compact(entry)])
    assert (gone.version, gone.approval_status, gone.hours, gone.id) == (11, ApprovalStatus.RECALLED,
                                                                         Decimal("1.5"), "9")
    draft = to_record("time_entry", ENTRY, None, system="kt", version=10)
    assert deleted_record("time_entry", "9", "kt", [10, "f", "", compact(draft)]).approval_status is \
        ApprovalStatus.DRAFT


def test_projects_take_custom_fields_defaults_and_overrides() -> None:
    raw = {"id": "1", "title": "Apollo", "currency": "GBP", "status": {"message": "Completed"},
           "start_date": "2026-01-01", "custom_field_value_ids": ["c1", "c2"]}
    cfvs = {"c1": {"custom_field_id": "7001", "value": "C-ACME"}, "c2": {"custom_field_id": "7002", "value": ""}}
    fields = FieldMap.from_options({"field_map": {"project.customer_id": 7001, "project.legal_entity_id": "7002"}})
    defaults = Defaults.from_options({"legal_entity_id": "UK01", "overrides": {"1": {"cost_center": "CC-1"}}},
                                     PROJECT_BASE)
    p = to_project(raw, custom_values(raw, cfvs), defaults, fields)
    assert (p.customer_id, p.legal_entity_id, p.currency, p.cost_center, p.status) == (
        "C-ACME", "UK01", "GBP", "CC-1", ProjectStatus.CLOSED)  # empty custom value: the default stays
    with pytest.raises(ValueError, match="field_map"):
        FieldMap.from_options({"field_map": {"customer_id": 1}})
