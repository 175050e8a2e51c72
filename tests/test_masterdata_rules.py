"""Master data rules (pure): field authority by system or role, diff, decide, validation, deactivation proposals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.masterdata import (
    FieldChange,
    Ignore,
    MasterRules,
    Propagate,
    ReferenceValue,
    Steward,
    canonical_id_of,
    deactivation_proposals,
    decide,
    diff,
    merge,
    validate_record,
)

ROLES = {"psa_files": "psa", "netsuite": "erp", "crm": "crm"}
CONFIG = {
    "customer": {"authority": "psa", "fields": {"credit_terms_days": "erp", "tax_code": "netsuite"},
                 "required": ["name", "legal_entity_id"], "dimensions": {"tax_code": "tax_code"},
                 "legal_entity_field": "legal_entity_id", "propagate_to": ["netsuite"]},
    "project": {"fields": {"cost_center": "erp"}, "dimensions": {"cost_center": "cost_center"},
                "legal_entity_field": "legal_entity_id"},
}


@pytest.fixture
def rules() -> MasterRules:
    return MasterRules.from_config(CONFIG, ROLES)


def test_authority_by_role_or_system_name(rules: MasterRules) -> None:
    assert rules.is_authoritative("customer", "name", "psa_files")  # default authority: role psa
    assert not rules.is_authoritative("customer", "name", "netsuite")
    assert rules.is_authoritative("customer", "credit_terms_days", "netsuite")  # role erp
    assert rules.is_authoritative("customer", "tax_code", "netsuite")  # by system name
    assert not rules.is_authoritative("customer", "tax_code", "psa_files")
    # an entity type nobody configured: every field from the PSA
    assert rules.is_authoritative("resource", "cost_center", "psa_files")
    assert not rules.is_authoritative("resource", "cost_center", "crm")


def test_authoritative_change_propagates(rules: MasterRules) -> None:
    ch = FieldChange("name", "Acme", "Acme Ltd")
    d = decide("customer", ch, "psa_files", rules, canonical="Acme")
    assert d == Propagate("name", "Acme Ltd", "Acme")
    assert merge({"id": "C1", "name": "Acme"}, [d]) == {"id": "C1", "name": "Acme Ltd"}


def test_non_authoritative_change_opens_stewardship_with_both_values(rules: MasterRules) -> None:
    d = decide("customer", FieldChange("name", "Acme", "ACME Inc"), "netsuite", rules, canonical="Acme")
    assert isinstance(d, Steward)
    assert d.values == {"netsuite": "ACME Inc", "psa_files": "Acme"}  # the role psa names exactly one system
    assert d.changed_by == "netsuite" and d.authority == "psa"
    assert merge({"name": "Acme"}, [d]) == {"name": "Acme"}  # nothing overwritten


def test_agreeing_value_is_ignored_and_missing_canonical_is_provisional(rules: MasterRules) -> None:
    assert isinstance(decide("customer", FieldChange("name", None, "Acme"), "netsuite", rules, canonical="Acme"),
                      Ignore)
    assert isinstance(decide("customer", FieldChange("name", None, None), "netsuite", rules), Ignore)
    d = decide("customer", FieldChange("credit_terms_days", None, 30), "psa_files", rules, canonical=None)
    assert d == Propagate("credit_terms_days", 30, None, provisional=True)


def test_diff_reports_changed_and_new_fields_only() -> None:
    assert diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": None}) == [FieldChange("b", 2, 3), FieldChange("c", None, None)]
    assert diff({"a": 1, "b": 2}, {"a": 1}) == []  # absent = the system does not hold it, not a change
    assert diff(None, {"x": 1}) == [FieldChange("x", None, 1)]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3)),
       st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3)))
def test_diff_then_apply_reaches_incoming(prev: dict[str, int], new: dict[str, int]) -> None:
    applied = dict(prev)
    for ch in diff(prev, new):
        assert prev.get(ch.field) == ch.old
        applied[ch.field] = ch.new
    assert {k: applied[k] for k in new} == new


def test_validation_names_item_rule_and_fix(rules: MasterRules) -> None:
    values = [ReferenceValue("tax_code", "US-STD"), ReferenceValue("tax_code", "OLD", active=False),
              ReferenceValue("cost_center", "CC-UK", legal_entity_ids=("UK01",))]
    ok = {"id": "C1", "name": "Acme", "legal_entity_id": "US01", "tax_code": "US-STD"}
    assert validate_record("customer", "C1", ok, rules, values) == []
    bad = validate_record("customer", "C1", {**ok, "name": " ", "tax_code": "OLD"}, rules, values)
    assert [v.rule for v in bad] == ["master.required_field", "master.inactive_dimension_value"]
    assert bad[1].item == "customer C1" and "'OLD'" in bad[1].message and "netsuite" in bad[1].fix
    unknown = validate_record("customer", "C1", {**ok, "tax_code": "NOPE"}, rules, values)
    assert [v.rule for v in unknown] == ["master.unknown_dimension_value"]
    wrong_entity = validate_record("project", "P1", {"legal_entity_id": "US01", "cost_center": "CC-UK"}, rules, values)
    assert [v.rule for v in wrong_entity] == ["master.dimension_not_allowed"]
    assert "US01" in wrong_entity[0].message and "UK01" in wrong_entity[0].message


def test_deactivation_only_proposed_by_the_authority(rules: MasterRules) -> None:
    got = deactivation_proposals("customer", ["C1", "C2", "C3"], ["C1", "C3"], "psa_files", rules)
    assert [p.canonical_id for p in got] == ["C2"] and "missing from the full read" in got[0].reason
    assert deactivation_proposals("customer", ["C1", "C2"], [], "netsuite", rules) == []


def test_keys_and_config_errors(rules: MasterRules) -> None:
    assert canonical_id_of("dimension_value", {"dimension": "cost_center", "code": "X"}, rules) == "cost_center:X"
    assert canonical_id_of("account", {"code": "1100", "legal_entity_id": None}, rules) == "1100:*"
    assert canonical_id_of("account", {"code": "1100", "legal_entity_id": "UK01"}, rules) == "1100:UK01"
    with pytest.raises(DomainError, match=r"master\.missing_key"):
        canonical_id_of("customer", {"name": "no id"}, rules)
    with pytest.raises(DomainError, match=r"master\.unknown_authority"):
        MasterRules.from_config({"customer": {"fields": {"name": "sap"}}}, ROLES)
    with pytest.raises(DomainError, match=r"master\.unknown_entity_type"):
        MasterRules.from_config({"invoice": {}}, ROLES)


def test_config_section_is_cross_checked() -> None:
    systems = {"psa_files": {"connector": "psa_csv", "role": "psa"}}
    entities = {"project": {"fields": {"cost_center": "psa"}}}
    cfg = LedgerbridgeConfig.model_validate({"systems": systems, "master_data": {"entities": entities}})
    assert cfg.master_data.rules({"psa_files": "psa"}).is_authoritative("project", "cost_center", "psa_files")
    with pytest.raises(ValueError, match=r"master_data\.entities\.project\.fields\.cost_center.*erp"):
        entities = {"project": {"fields": {"cost_center": "erp"}}}
        LedgerbridgeConfig.model_validate({"systems": systems, "master_data": {"entities": entities}})
