"""Configuration validation: every error kind is reported with its exact key path and YAML line number."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ledgerbridge.config import (
    ConfigError,
    ConfigIssue,
    LedgerbridgeConfig,
    default_config,
    load_config,
    starter_text,
    validate_file,
    validate_text,
)

STARTER = starter_text()


def issues_of(text: str) -> dict[str, ConfigIssue]:
    found = validate_text(textwrap.dedent(text))
    by_path = {i.path: i for i in found}
    assert len(by_path) == len(found), f"two issues on one path: {found}"
    return by_path


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle`` (so tests do not hard-code numbers)."""
    for n, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in text")


def replace_in_starter(old: str, new: str) -> str:
    assert STARTER.count(old) == 1, f"{old!r} must occur exactly once in the starter"
    return STARTER.replace(old, new)


# --------------------------------------------------------------------------- the starter


def test_starter_validates_and_holds_the_chart_defaults() -> None:
    assert validate_text(STARTER) == []
    cfg = default_config()
    assert set(cfg.systems) == {"ledger", "psa_files"}
    assert cfg.systems["ledger"].connector == "beancount" and cfg.systems["psa_files"].connector == "psa_csv"
    assert cfg.systems["psa_files"].role == "psa"
    assert cfg.store.url == "sqlite:///.ledgerbridge/state.sqlite"
    assert cfg.runtime.system_database_url == "sqlite:///.ledgerbridge/dbos.sqlite"
    roles = cfg.account_roles.default
    assert roles == {
        "receivables": "1100", "unbilled_receivables": "1200", "accrued_payroll": "2100", "employee_payable": "2200",
        "tax_payable": "2300", "deferred_revenue": "2400", "service_revenue": "4000", "fixed_fee_revenue": "4100",
        "milestone_revenue": "4200", "expense_recovery_revenue": "4300", "project_cost": "5000",
        "project_expense": "5100", "rounding": "7900", "invoice_clearing": "4900",
    }
    rules = cfg.posting_config()["posting_rules"]
    assert set(rules) == {"labor_cost", "revenue_accrual", "expense", "invoice", "fixed_fee_revenue",
                          "milestone_revenue", "expense_recovery", "invoice_relief"}
    assert rules["invoice"] == [
        {"debit": "receivables", "credit": "unbilled_receivables", "amount": "net", "dimensions": ["project"]},
        {"debit": "receivables", "credit": "tax_payable", "amount": "tax", "dimensions": []},
    ]
    assert rules["labor_cost"][0] == {"debit": "project_cost", "credit": "accrued_payroll", "amount": "cost",
                                      "dimensions": ["project", "cost_center"]}
    assert cfg.routing.for_entity("UK01").ledger == "ledger"
    assert cfg.policies.late_item.for_entity("DE01") in ("reject", "next_open_period")
    assert cfg.policies.retry.for_type("invoice").max_attempts == 8
    assert cfg.policies.retry.for_type("labor_cost") == cfg.policies.retry.default


def test_minimal_file_gets_documented_defaults() -> None:
    cfg = LedgerbridgeConfig.model_validate({})
    assert cfg.store.url == "sqlite:///.ledgerbridge/state.sqlite"
    assert cfg.runtime.executor_id == "local"
    assert cfg.policies.fx_rate_date == "transaction_date"


# --------------------------------------------------------------------------- structural errors


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "store:\n  url: sqlite:///x\nsystems: [a, b\nrouting: {}\n"
    (issue,) = validate_text(text)
    assert issue.path == "" and issue.line is not None and issue.line >= 3
    assert "YAML syntax error" in issue.message and "column" in issue.message


def test_unknown_key_names_path_line_and_allowed_keys() -> None:
    text = replace_in_starter("      concurrency: 1          # one writer:", "      concurency: 1  # one writer:")
    found = {i.path: i for i in validate_text(text)}
    issue = found["systems.ledger.limits.concurency"]
    assert issue.line == line_of(text, "concurency: 1")
    assert "unknown key 'concurency'" in issue.message and "concurrency" in issue.message


def test_rate_limit_error_has_exact_path_and_line() -> None:
    text = """\
    systems:
      erp_us:
        connector: netsuite
        role: erp
        limits:
          concurrency: 2
          rate:
            limit: 0
            period_seconds: 60
    """
    issue = issues_of(text)["systems.erp_us.limits.rate.limit"]
    assert issue.line == line_of(text, "limit: 0")
    assert "greater than or equal to 1" in issue.message


def test_missing_required_key_points_at_its_parent() -> None:
    text = """\
    systems:
      psa_emea:
        role: psa
    """
    issue = issues_of(text)["systems.psa_emea.connector"]
    assert issue.message == "required key is missing"
    assert issue.line == line_of(text, "psa_emea:")


def test_bad_enum_value_in_policy() -> None:
    text = replace_in_starter("    default: next_open_period", "    default: post_anyway")
    (issue,) = validate_text(text)
    assert issue.path == "policies.late_item.default"
    assert issue.line == line_of(text, "default: post_anyway")
    assert "'reject'" in issue.message and "'next_open_period'" in issue.message


def test_unquoted_account_code_is_refused_with_the_fix() -> None:
    text = replace_in_starter('    receivables: "1100"', "    receivables: 1100")
    (issue,) = validate_text(text)
    assert issue.path == "account_roles.default.receivables"
    assert issue.line == line_of(text, "receivables: 1100")
    assert 'quote it ("1100")' in issue.message


def test_duplicate_key_is_reported() -> None:
    text = "store:\n  url: sqlite:///a.sqlite\nstore:\n  url: sqlite:///b.sqlite\n"
    (issue,) = validate_text(text)
    assert issue.path == "store" and issue.line == 3 and "duplicate key" in issue.message


def test_retry_cap_below_interval() -> None:
    text = replace_in_starter("max_attempts: 5, interval_seconds: 2,", "max_attempts: 5, interval_seconds: 600,")
    (issue,) = validate_text(text)
    assert issue.path == "policies.retry.default"
    assert "max_interval_seconds is below interval_seconds" in issue.message


def test_decimals_not_floats_for_rates() -> None:
    text = """\
    systems:
      erp:
        connector: netsuite
        role: erp
        limits: {rate: {limit: 100, period_seconds: 0.5, headroom: 0.75}}
    """
    assert validate_text(textwrap.dedent(text)) == []
    cfg = LedgerbridgeConfig.model_validate(yaml.safe_load(textwrap.dedent(text)))
    rate = cfg.systems["erp"].limits.rate
    assert rate is not None and rate.period_seconds == Decimal("0.5") and rate.headroom == Decimal("0.75")
    assert rate.effective_limit == 75


# --------------------------------------------------------------------------- cross references


def test_routing_to_unknown_system() -> None:
    text = replace_in_starter("    invoices: ledger\n", "    invoices: ledgr\n")
    (issue,) = validate_text(text)
    assert issue.path == "routing.default.invoices"
    assert issue.line == line_of(text, "invoices: ledgr")
    assert "unknown system 'ledgr'" in issue.message and "ledger, psa_files" in issue.message


def test_per_entity_routing_to_unknown_system() -> None:
    text = replace_in_starter(
        "  by_entity: {}\n  #   UK01: {ledger: erp_uk", "  by_entity:\n    UK01: {ledger: erp_uk}\n#"
    )
    (issue,) = validate_text(text)
    assert issue.path == "routing.by_entity.UK01.ledger" and issue.line == line_of(text, "UK01: {ledger: erp_uk}")


def test_posting_rule_names_unknown_account_role() -> None:
    text = replace_in_starter("credit: tax_payable,", "credit: vat_payable,")
    (issue,) = validate_text(text)
    assert issue.path == "posting_rules.invoice[1].credit"
    assert issue.line == line_of(text, "vat_payable")
    assert "unknown account role 'vat_payable'" in issue.message and "tax_payable" in issue.message


def test_empty_amount_and_dimension() -> None:
    text = replace_in_starter("amount: revenue, dimensions: [project]}\n  milestone_revenue:",
                              "amount: '', dimensions: [project, '']}\n  milestone_revenue:")
    found = {i.path: i for i in validate_text(text)}
    rule = "posting_rules.fixed_fee_revenue[0]"
    assert set(found) == {f"{rule}.amount", f"{rule}.dimensions[1]"}
    line = line_of(text, "amount: '', dimensions")
    assert all(i.line == line for i in found.values())
    assert "empty amount" in found[f"{rule}.amount"].message


def test_per_entity_override_of_unknown_role() -> None:
    text = replace_in_starter("  by_entity: {}\n  #   UK01: {accrued_payroll",
                              "  by_entity:\n    UK01: {accrued_payrol: \"2110\"}\n  #   UK01: {accrued_payroll")
    (issue,) = validate_text(text)
    assert issue.path == "account_roles.by_entity.UK01.accrued_payrol"
    assert issue.line == line_of(text, "accrued_payrol:")
    assert "unknown account role 'accrued_payrol'" in issue.message


def test_failure_mode_for_unknown_system() -> None:
    text = replace_in_starter("      ledger: all_or_nothing", "      erp_us: line_level")
    (issue,) = validate_text(text)
    assert issue.path == "policies.posting_failure_mode.by_system.erp_us"


def test_system_name_with_colon_is_refused() -> None:
    text = "systems:\n  'psa:emea': {connector: kantata, role: psa}\n"
    (issue,) = validate_text(text)
    assert issue.path == "systems.psa:emea" and issue.line == 2 and "idempotency keys" in issue.message


# --------------------------------------------------------------------------- files and the Python API


def test_validate_file_and_load_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(STARTER)
    assert validate_file(good) == []
    assert len(load_config(good).posting_rules) == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(replace_in_starter("    invoices: ledger\n", "    invoices: ledgr\n"))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert [i.path for i in info.value.issues] == ["routing.default.invoices"]
    assert "routing.default.invoices (line" in str(info.value)
    (missing,) = validate_file(tmp_path / "absent.yaml")
    assert "file not found" in missing.message


def test_direct_model_validation_runs_cross_checks() -> None:
    data = yaml.safe_load(replace_in_starter("    invoices: ledger\n", "    invoices: ledgr\n"))
    with pytest.raises(ValidationError, match=r"routing\.default\.invoices: unknown system 'ledgr'"):
        LedgerbridgeConfig.model_validate(data)


def test_unknown_transaction_type() -> None:
    text = replace_in_starter("  milestone_revenue:\n    - {", "  milestone_revenu:\n    - {")
    (issue,) = validate_text(text)
    assert issue.path == "posting_rules.milestone_revenu"
    assert issue.line == line_of(text, "milestone_revenu:")
    assert "milestone_revenue" in issue.message  # the allowed types are listed


def test_section_with_every_entry_commented_out_means_default() -> None:
    old = "  by_entity: {}\n  #   UK01: {ledger: erp_uk"
    text = replace_in_starter(old, old.replace(" {}", ""))
    assert validate_text(text) == []
    assert validate_text("systems:\nposting_rules:\n") == []
    (issue,) = validate_text("systems:\n  erp_us:\n")  # a named system still needs its keys
    assert issue.path == "systems.erp_us" and issue.line == 2
