"""Pure Redmine <-> canonical mapping: hours, statuses, fingerprints, versions, deletions, projects, users, windows."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.connectors.redmine.client import decode
from ledgerbridge.connectors.redmine.connector import CAPABILITIES, month_end, months_between
from ledgerbridge.connectors.redmine.mapping import (
    FieldMap,
    ProjectDefaults,
    ResourceDefaults,
    deleted_entry,
    fingerprint,
    hours_decimal,
    next_version,
    state_row,
    to_project,
    to_resource,
    to_time_entry,
)
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus, ContractType, ProjectStatus


def raw_entry(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 42, "project": {"id": 3, "name": "Apollo"}, "user": {"id": 7, "name": "Ada L"},
        "activity": {"id": 10, "name": "Consulting"}, "hours": Decimal("7.5"), "comments": "design",
        "spent_on": "2026-01-06", "created_on": "2026-01-06T09:00:00Z", "updated_on": "2026-01-06T10:00:00Z",
        "custom_fields": [{"id": 1, "name": "Billable", "value": "1"}, {"id": 2, "name": "Approved", "value": "1"},
                          {"id": 3, "name": "Invoice ref", "value": None}],
    }
    base.update(over)
    return base


def cf(entry: dict[str, Any], fid: int, value: Any) -> dict[str, Any]:
    out = dict(entry)
    out["custom_fields"] = [{**c, "value": value} if c["id"] == fid else c for c in entry["custom_fields"]]
    return out


FIELDS = FieldMap()


def test_time_entry_fields() -> None:
    e = to_time_entry(raw_entry(issue={"id": 99}), system="psa_rm", version=5, fields=FIELDS)
    assert (e.id, e.source_system, e.version, e.project_id, e.resource_id, e.task) == ("42", "psa_rm", 5, "3", "7",
                                                                                      "99")
    assert e.work_date == dt.date(2026, 1, 6) and e.hours == Decimal("7.5") and e.description == "design"
    assert e.billable is True and e.approval_status is ApprovalStatus.APPROVED
    assert e.updated_at == dt.datetime(2026, 1, 6, 10, tzinfo=dt.UTC)


def test_hours_exact_from_the_wire() -> None:
    payload = b'{"hours": 0.1, "big": 0.3333333333333333, "int": 8}'
    data = decode(payload)
    assert hours_decimal(data["hours"]) == Decimal("0.1")
    assert hours_decimal(data["big"]) == Decimal("0.3333333333333333")
    assert hours_decimal(data["int"]) == Decimal(8)
    assert hours_decimal(0.1) == Decimal("0.1")  # a float goes through str(), not binary expansion
    for bad in (None, True, "x", float("nan")):
        with pytest.raises(RecordValidationError, match=r"redmine\.hours"):
            hours_decimal(bad)


def test_approval_and_billable_are_configurable() -> None:
    fields = FieldMap.from_options({
        "approved_field": "Status", "billable_field": "5",
        "approval_values": {"Approved": "approved", "Submitted": "submitted", "Rejected": "rejected"},
        "unapproved_status": "draft", "billable_values": ["yes"], "billable_default": False,
    })
    assert fields.billable == 5  # numeric text is an id
    entry = raw_entry(custom_fields=[{"id": 9, "name": "Status", "value": "Rejected"},
                                     {"id": 5, "name": "Chargeable", "value": "yes"}])
    e = to_time_entry(entry, system="s", version=1, fields=fields)
    assert e.approval_status is ApprovalStatus.REJECTED and e.billable is True
    e = to_time_entry(raw_entry(custom_fields=[]), system="s", version=1, fields=fields)
    assert e.approval_status is ApprovalStatus.DRAFT and e.billable is False  # missing fields -> defaults
    with pytest.raises(ValueError, match=r"approval_values\.X"):
        FieldMap.from_options({"approval_values": {"X": "maybe"}})


def test_default_boolean_fields() -> None:
    assert to_time_entry(cf(raw_entry(), 2, "0"), system="s", version=1, fields=FIELDS).approval_status \
        is ApprovalStatus.DRAFT
    assert to_time_entry(cf(raw_entry(), 2, ""), system="s", version=1, fields=FIELDS).approval_status \
        is ApprovalStatus.DRAFT
    assert to_time_entry(cf(raw_entry(), 1, "0"), system="s", version=1, fields=FIELDS).billable is False


@pytest.mark.parametrize(("over", "rule"), [
    ({"hours": Decimal("25")}, "redmine.hours_range"),
    ({"hours": Decimal("-1")}, "redmine.hours_range"),
    ({"spent_on": "not a date"}, "redmine.spent_on"),
    ({"user": None}, "redmine.references"),
])
def test_bad_entries_name_item_rule_and_fix(over: dict[str, Any], rule: str) -> None:
    with pytest.raises(RecordValidationError) as exc:
        to_time_entry(raw_entry(**over), system="s", version=1, fields=FIELDS)
    assert exc.value.details["rule"] == rule and exc.value.details["item"] == "redmine time entry 42"
    assert exc.value.details["fix"] and "42" in exc.value.message


def test_fingerprint_ignores_timestamps_names_and_write_back() -> None:
    base = fingerprint(raw_entry(), FIELDS)
    assert fingerprint(raw_entry(updated_on="2027-01-01T00:00:00Z", created_on="2020-01-01T00:00:00Z"),
                       FIELDS) == base
    assert fingerprint(raw_entry(user={"id": 7, "name": "Renamed"}), FIELDS) == base
    assert fingerprint(cf(raw_entry(), 3, "INV-1"), FIELDS) == base  # write-back field
    assert fingerprint(raw_entry(hours=Decimal("7.50")), FIELDS) == base  # same number
    for changed in (raw_entry(hours=Decimal("7.25")), raw_entry(spent_on="2026-01-07"), raw_entry(comments="x"),
                    raw_entry(project={"id": 4}), raw_entry(activity={"id": 11}), cf(raw_entry(), 2, "0"),
                    cf(raw_entry(), 1, "0"), raw_entry(issue={"id": 1})):
        assert fingerprint(changed, FIELDS) != base
    ignoring = FieldMap.from_options({"ignore_fields": [1]})
    assert fingerprint(cf(raw_entry(), 1, "0"), ignoring) == fingerprint(raw_entry(), ignoring)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1_600_000_000, max_value=1_900_000_000), st.one_of(st.none(), st.integers(1, 2 * 10**9)))
def test_next_version_is_the_timestamp_but_always_above_previous(stamp: int, previous: int | None) -> None:
    updated = dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    v = next_version(updated, previous)
    assert v >= stamp
    if previous is not None:
        assert v > previous
        assert v == max(stamp, previous + 1)
    else:
        assert v == stamp


def test_deleted_entry_reverses() -> None:
    approved = to_time_entry(raw_entry(), system="s", version=100, fields=FIELDS)
    row = json.loads(json.dumps(state_row(approved, "fp")))  # the cursor survives JSON
    gone = deleted_entry("42", row, system="s", fields=FIELDS)
    assert gone.version == 101 and gone.approval_status is ApprovalStatus.RECALLED
    assert (gone.hours, gone.work_date, gone.project_id, gone.resource_id, gone.billable) == (
        approved.hours, approved.work_date, approved.project_id, approved.resource_id, approved.billable)
    draft = to_time_entry(cf(raw_entry(), 2, "0"), system="s", version=100, fields=FIELDS)
    assert deleted_entry("42", state_row(draft, "fp"), system="s", fields=FIELDS).approval_status \
        is ApprovalStatus.DRAFT


def test_project_and_resource_mapping() -> None:
    raw = {"id": 3, "name": "Apollo", "identifier": "apollo", "status": 5, "created_on": "2025-02-01T08:00:00Z",
           "custom_fields": [{"id": 8, "name": "Customer", "value": "C-ACME"}]}
    defaults = ProjectDefaults.from_options({
        "legal_entity_id": "US01", "currency": "usd", "cost_center": "CC-1", "fields": {"customer_id": "Customer"},
        "overrides": {"apollo": {"contract_type": "fixed_fee", "currency": "EUR"}}})
    p = to_project(raw, defaults)
    assert (p.id, p.name, p.customer_id, p.legal_entity_id, p.currency, p.cost_center) == (
        "3", "Apollo", "C-ACME", "US01", "EUR", "CC-1")
    assert p.contract_type is ContractType.FIXED_FEE and p.status is ProjectStatus.CLOSED
    assert p.start_date == dt.date(2025, 2, 1)
    user = {"id": 7, "login": "ada", "firstname": "Ada", "lastname": "Lovelace", "status": 3}
    r = to_resource(user, ResourceDefaults.from_options({"home_entity_id": "US01",
                                                         "overrides": {"ada": {"role": "architect"}}}))
    assert (r.id, r.name, r.role, r.home_entity_id, r.active) == ("7", "Ada Lovelace", "architect", "US01", False)


def test_months() -> None:
    assert month_end(dt.date(2024, 2, 10)) == dt.date(2024, 2, 29)
    assert month_end(dt.date(2025, 12, 31)) == dt.date(2025, 12, 31)
    assert months_between(dt.date(2025, 11, 15), dt.date(2026, 2, 1)) == [
        dt.date(2025, 11, 1), dt.date(2025, 12, 1), dt.date(2026, 1, 1), dt.date(2026, 2, 1)]
    assert months_between(dt.date(2026, 3, 1), dt.date(2026, 2, 1)) == []


def test_capabilities_declared() -> None:
    assert CAPABILITIES.connector == "redmine"
    assert CAPABILITIES.can_read("time_entry") and CAPABILITIES.can_read("project")
    assert CAPABILITIES.can_read("resource") and CAPABILITIES.can_write("time_entry")
    assert CAPABILITIES.batch_sizes.read == 100


def test_documented_options_build_a_source() -> None:
    import yaml

    from ledgerbridge.connectors.redmine import RedmineSource

    text = Path(__file__).resolve().parents[1].joinpath("docs/connectors/redmine.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    options = yaml.safe_load(block)["systems"]["psa_redmine"]["options"]
    source = RedmineSource.from_options("psa_redmine", options, "key")
    assert source.fields.invoice_ref == "Invoice ref" and source.fields.billable_default is True
    assert source.fields.approval_values == {"1": ApprovalStatus.APPROVED, "0": ApprovalStatus.DRAFT}
    assert (source.sync_options.lookback_days, source.sync_options.rotate_windows) == (45, 3)
    assert source.sync_options.scan_floor == dt.date(2020, 1, 1)
    assert source.project_defaults.legal_entity_id == "US01"
    assert source.project_defaults.fields == {"customer_id": "Customer"}
    assert source.resource_defaults.overrides == {"ada": {"role": "architect"}}
    assert source.client.url == "https://redmine.example.com" and source.client.max_attempts == 4
    source.close()
