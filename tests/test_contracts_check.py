"""`ledgerbridge contracts check`: every difference between two exports is classified breaking or non-breaking.

Mutations are applied to copies of the real exported schemas (what pydantic emits, with $ref/$defs and
anyOf-with-null), not to hand-written toy schemas.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledgerbridge.contracts import (
    Change,
    contracts_app,
    diff_exports,
    diff_schemas,
    export_contracts,
    load_export,
    schema_bytes,
)
from ledgerbridge.model import CONTRACTS

try:
    from ledgerbridge.cli import app as _cli_app

    CLI, PREFIX = _cli_app, ["contracts"]
except ImportError:  # pragma: no cover - another sub-app not written yet
    CLI, PREFIX = contracts_app, []

SCHEMAS: dict[str, dict[str, Any]] = {c.contract_name: c.contract_schema() for c in CONTRACTS}


def schema(name: str) -> dict[str, Any]:
    return copy.deepcopy(SCHEMAS[name])


def only(changes: list[Change], **match: Any) -> Change:
    found = [c for c in changes if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one change matching {match}, got {changes}"
    return found[0]


# --------------------------------------------------------------------------- identical


def test_identical_schemas_have_no_changes() -> None:
    for name, s in SCHEMAS.items():
        assert diff_schemas(s, copy.deepcopy(s)) == [], name
    assert diff_exports(SCHEMAS, copy.deepcopy(SCHEMAS)) == []


# --------------------------------------------------------------------------- breaking kinds


def test_field_removed_is_breaking() -> None:
    new = schema("project")
    del new["properties"]["cost_center"]
    new["required"].remove("cost_center")
    ch = only(diff_schemas(SCHEMAS["project"], new), path="cost_center")
    assert ch.kind == "field_removed" and ch.breaking


def test_type_narrowed_string_to_integer_is_breaking() -> None:
    new = schema("customer")
    new["properties"]["tax_code"]["type"] = "integer"
    ch = only(diff_schemas(SCHEMAS["customer"], new), path="tax_code")
    assert ch.breaking and "string -> integer" in ch.detail


def test_number_to_integer_is_narrowing_and_integer_to_number_is_widening() -> None:
    old = schema("customer")  # credit_terms_days: integer, minimum 0
    new = schema("customer")
    new["properties"]["credit_terms_days"]["type"] = "number"
    widened = only(diff_schemas(old, new), path="credit_terms_days")
    assert widened.kind == "type_widened" and not widened.breaking
    narrowed = only(diff_schemas(new, old), path="credit_terms_days")
    assert narrowed.kind == "type_narrowed" and narrowed.breaking


def test_anyof_branch_removed_is_breaking_inside_a_ref() -> None:
    # Invoice.lines[] -> $defs/InvoiceLine.quantity: anyOf [number, string]; drop the string branch
    new = schema("invoice")
    new["$defs"]["InvoiceLine"]["properties"]["quantity"]["anyOf"] = [{"type": "number"}]
    ch = only(diff_schemas(SCHEMAS["invoice"], new), path="lines[].quantity")
    assert ch.breaking and ch.kind == "branch_removed" and "string" in ch.detail


def test_optional_made_non_nullable_is_breaking() -> None:
    new = schema("project")
    new["properties"]["end_date"] = {"format": "date", "title": "End Date", "type": "string", "default": None}
    ch = only(diff_schemas(SCHEMAS["project"], new), path="end_date", breaking=True)
    assert ch.kind == "null_removed"


@pytest.mark.parametrize(
    ("contract", "field", "keyword", "old_value", "new_value"),
    [
        ("legal_entity", "country", "maxLength", 2, 1),  # max lowered
        ("legal_entity", "country", "minLength", 2, 3),  # min raised
        ("customer", "credit_terms_days", "minimum", 0, 1),  # min bound raised
        ("customer", "name", "pattern", None, "^[A-Z]"),  # new pattern
        ("customer", "name", "maxLength", None, 80),  # new maxLength
        ("accounting_period", "period", "pattern", r"^\d{4}-(0[1-9]|1[0-2])$", r"^\d{4}-\d{2}-\d{2}$"),
    ],
)
def test_constraint_tightened_is_breaking(
    contract: str, field: str, keyword: str, old_value: Any, new_value: Any
) -> None:
    base = SCHEMAS[contract]
    assert base["properties"][field].get(keyword) == old_value  # the real export has the value we start from
    new = schema(contract)
    new["properties"][field][keyword] = new_value
    ch = only(diff_schemas(base, new), path=field)
    assert ch.kind == "constraint_tightened" and ch.breaking
    back = only(diff_schemas(new, base), path=field)
    if keyword == "pattern" and old_value is not None:
        assert back.breaking  # a different pattern cannot be proven wider: breaking both ways
    else:  # the opposite direction is a loosening
        assert back.kind == "constraint_loosened" and not back.breaking


def test_inclusive_to_exclusive_bound_is_tightening() -> None:
    new = schema("customer")
    del new["properties"]["credit_terms_days"]["minimum"]
    new["properties"]["credit_terms_days"]["exclusiveMinimum"] = 0  # ge=0 -> gt=0
    ch = only(diff_schemas(SCHEMAS["customer"], new), path="credit_terms_days")
    assert ch.breaking and ">= 0 -> > 0" in ch.detail
    assert not only(diff_schemas(new, SCHEMAS["customer"]), path="credit_terms_days").breaking


def test_new_required_field_is_breaking() -> None:
    new = schema("resource")
    new["properties"]["grade"] = {"title": "Grade", "type": "string"}
    new["required"].append("grade")
    ch = only(diff_schemas(SCHEMAS["resource"], new), path="grade")
    assert ch.kind == "required_field_added" and ch.breaking


def test_field_made_required_is_breaking_and_made_optional_is_not() -> None:
    new = schema("project")
    new["required"].append("end_date")
    ch = only(diff_schemas(SCHEMAS["project"], new), path="end_date", kind="made_required")
    assert ch.breaking
    back = only(diff_schemas(new, SCHEMAS["project"]), path="end_date", kind="made_optional")
    assert not back.breaking


@pytest.mark.parametrize(
    ("mutate", "word"),
    [
        (lambda vals: vals.remove("on_hold"), "removed"),
        (lambda vals: vals.append("archived"), "added"),
    ],
)
def test_any_enum_change_is_breaking(mutate: Any, word: str) -> None:
    new = schema("project")
    mutate(new["$defs"]["ProjectStatus"]["enum"])
    ch = only(diff_schemas(SCHEMAS["project"], new), path="status")
    assert ch.kind == "enum_changed" and ch.breaking and word in ch.detail


def test_enum_inside_nested_event_payload_is_found() -> None:
    new = schema("time_entry_approved")
    new["$defs"]["ApprovalStatus"]["enum"].remove("recalled")
    ch = only(diff_schemas(SCHEMAS["time_entry_approved"], new), path="entry.approval_status")
    assert ch.breaking


def test_contract_removed_is_breaking() -> None:
    new = {k: copy.deepcopy(v) for k, v in SCHEMAS.items() if k != "fx_rate"}
    ch = only(diff_exports(SCHEMAS, new), contract="fx_rate")
    assert ch.kind == "contract_removed" and ch.breaking


def test_dict_value_type_change_is_breaking() -> None:
    new = schema("journal_line")
    new["properties"]["dimensions"]["additionalProperties"] = {"type": "integer"}
    ch = only(diff_schemas(SCHEMAS["journal_line"], new), path="dimensions.*")
    assert ch.breaking


# --------------------------------------------------------------------------- non-breaking kinds


def test_new_optional_field_is_not_breaking() -> None:
    new = schema("invoice")
    new["properties"]["po_number"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    ch = only(diff_schemas(SCHEMAS["invoice"], new), path="po_number")
    assert ch.kind == "optional_field_added" and not ch.breaking


def test_widening_is_not_breaking() -> None:
    new = schema("project")
    new["properties"]["cost_center"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Cost Center"}
    changes = diff_schemas(SCHEMAS["project"], new)
    assert changes and not any(c.breaking for c in changes)
    assert only(changes, path="cost_center").kind == "null_added"


def test_new_contract_is_not_breaking() -> None:
    new = {**copy.deepcopy(SCHEMAS), "payment": {"type": "object", "properties": {}, "x-contract": "payment"}}
    ch = only(diff_exports(SCHEMAS, new), contract="payment")
    assert ch.kind == "contract_added" and not ch.breaking


def test_description_and_title_changes_are_not_breaking() -> None:
    new = schema("invoice")
    new["properties"]["id"]["description"] = "External key of the invoice, stable across retries"
    new["$defs"]["InvoiceLine"]["properties"]["tax_code"]["title"] = "Tax code (ERP)"
    changes = diff_schemas(SCHEMAS["invoice"], new)
    assert {(c.path, c.kind) for c in changes} == {("id", "description_changed"), ("lines[].tax_code", "title_changed")}
    assert not any(c.breaking for c in changes)


# --------------------------------------------------------------------------- versions and CLI


def test_major_bump_is_reported_but_still_breaking() -> None:
    old = {"project": schema("project")}
    bumped = schema("project")
    bumped["x-version"] = "2.0"
    del bumped["properties"]["cost_center"]
    bumped["required"].remove("cost_center")
    changes = diff_exports(old, {"project": bumped})
    removed = only(changes, kind="field_removed")
    assert removed.breaking and removed.major_bumped is True
    unbumped = schema("project")
    del unbumped["properties"]["cost_center"]
    assert only(diff_exports(old, {"project": unbumped}), kind="field_removed").major_bumped is False


def _write(directory: Path, schemas: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True)
    for name, s in schemas.items():
        (directory / f"{name}.json").write_bytes(schema_bytes(s))
    return directory


def test_cli_check_passes_on_identical_exports(tmp_path: Path) -> None:
    export_contracts(tmp_path / "old")
    export_contracts(tmp_path / "new")
    result = CliRunner().invoke(CLI, [*PREFIX, "check", str(tmp_path / "old"), str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert "0 breaking" in result.output


def test_cli_check_fails_with_table_on_breaking_change(tmp_path: Path) -> None:
    export_contracts(tmp_path / "old")
    new = load_export(tmp_path / "old")
    new["tax_code"]["properties"]["rate"]["maximum"] = 0.5
    _write(tmp_path / "new", new)
    result = CliRunner().invoke(CLI, [*PREFIX, "check", str(tmp_path / "old"), str(tmp_path / "new")])
    assert result.exit_code == 1, result.output
    assert "tax_code" in result.output and "rate" in result.output and "breaking" in result.output
    assert "1 breaking" in result.output and "without an x-version major bump" in result.output


def test_cli_check_non_breaking_exits_zero_and_json_output(tmp_path: Path) -> None:
    export_contracts(tmp_path / "old")
    new = load_export(tmp_path / "old")
    new["customer"]["properties"]["website"] = {"type": "string", "default": ""}
    _write(tmp_path / "new", new)
    result = CliRunner().invoke(CLI, [*PREFIX, "check", "--json", str(tmp_path / "old"), str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["summary"]["breaking"] == 0 and payload["summary"]["non_breaking"] == 1
    assert payload["changes"][0]["path"] == "website" and payload["changes"][0]["classification"] == "non-breaking"


def test_cli_check_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    export_contracts(tmp_path / "old")
    result = CliRunner().invoke(CLI, [*PREFIX, "check", str(tmp_path / "old"), str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "not a directory" in result.output


def test_recursive_schemas_terminate_and_report_nested_changes() -> None:
    node = {"$defs": {"Node": {"type": "object", "title": "Node", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "default": []},
    }}}, "$ref": "#/$defs/Node"}
    changed = copy.deepcopy(node)
    changed["$defs"]["Node"]["properties"]["name"]["maxLength"] = 10
    ch = only(diff_schemas(node, changed), path="name")
    assert ch.breaking and ch.kind == "constraint_tightened"
