"""Posting-rule configuration: parsing, validation errors with the key path, role -> account per entity, the
chart.md defaults (identical to the shipped starter config), and the costed-item adapters."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.posting import (
    DEFAULT_ACCOUNT_ROLES,
    DEFAULT_POSTING_RULES,
    PostingRules,
    RuleLine,
    default_rules,
    default_rules_config,
    postings_for_expense,
    postings_for_time,
)
from ledgerbridge.domain.types import CostedExpense, CostedTime
from ledgerbridge.model.base import SourceRef

STARTER = Path(__file__).resolve().parents[1] / "src" / "ledgerbridge" / "config" / "starter.yaml"

CHART_ROLES = {
    "receivables": "1100", "unbilled_receivables": "1200", "accrued_payroll": "2100", "employee_payable": "2200",
    "tax_payable": "2300", "deferred_revenue": "2400", "service_revenue": "4000", "fixed_fee_revenue": "4100",
    "milestone_revenue": "4200", "expense_recovery_revenue": "4300", "project_cost": "5000",
    "project_expense": "5100", "rounding": "7900", "invoice_clearing": "4900",
}


def _cfg() -> dict[str, Any]:
    return default_rules_config()


def _error(account_roles: Any, posting_rules: Any) -> DomainError:
    with pytest.raises(DomainError) as ei:
        PostingRules.from_config(account_roles, posting_rules)
    return ei.value


def test_default_roles_are_the_chart_roles() -> None:
    rules = default_rules()
    for entity in ("US01", "UK01", "DE01"):
        assert {role: rules.account_for(role, entity) for role in CHART_ROLES} == CHART_ROLES


def test_default_templates_match_chart() -> None:
    r = default_rules()
    pairs = {
        txn: [(r.account_for(ln.debit, "US01"), r.account_for(ln.credit, "US01"), ln.amount, ln.dimensions)
              for ln in lines]
        for txn, lines in r.rules.items()
    }
    assert pairs == {
        "labor_cost": [("5000", "2100", "cost", ("project", "cost_center"))],
        "revenue_accrual": [("1200", "4000", "billable_value", ("project", "cost_center"))],
        "expense": [("5100", "2200", "amount", ("project", "cost_center"))],
        "invoice": [("1100", "1200", "net", ("project",)), ("1100", "2300", "tax", ())],
        "fixed_fee_revenue": [("1200", "4100", "revenue", ("project",))],
        "milestone_revenue": [("1200", "4200", "revenue", ("project",))],
        "expense_recovery": [("1200", "4300", "billable_value", ("project", "cost_center"))],
        "invoice_relief": [("4900", "1200", "net", ("project",))],
    }


def test_defaults_identical_to_shipped_starter_config() -> None:
    if not STARTER.exists():
        pytest.skip("config/starter.yaml not shipped yet")
    doc = yaml.safe_load(STARTER.read_text())
    assert doc["posting_rules"] == DEFAULT_POSTING_RULES
    assert doc["account_roles"]["default"] == DEFAULT_ACCOUNT_ROLES["default"]
    assert (doc["account_roles"].get("by_entity") or {}) == DEFAULT_ACCOUNT_ROLES["by_entity"]


def test_default_rules_config_is_a_copy() -> None:
    c = default_rules_config()
    c["posting_rules"]["labor_cost"][0]["debit"] = "rounding"
    assert DEFAULT_POSTING_RULES["labor_cost"][0]["debit"] == "project_cost"


def test_by_entity_override_wins_for_that_entity_only() -> None:
    c = _cfg()
    c["account_roles"]["by_entity"] = {"UK01": {"accrued_payroll": "2110"}}
    r = PostingRules.from_config(c["account_roles"], c["posting_rules"])
    assert r.account_for("accrued_payroll", "UK01") == "2110"
    assert r.account_for("accrued_payroll", "US01") == "2100"
    assert r.account_for("project_cost", "UK01") == "5000"


def test_parsed_rule_lines() -> None:
    r = default_rules()
    assert r.lines_for("invoice")[1] == RuleLine("receivables", "tax_payable", "tax", ())
    with pytest.raises(DomainError) as ei:
        r.lines_for("reversal")
    assert ei.value.rule == "posting.no_rule"


def test_unknown_role_in_rule_names_the_key_path() -> None:
    c = _cfg()
    c["posting_rules"]["invoice"][1]["credit"] = "vat_payable"
    e = _error(c["account_roles"], c["posting_rules"])
    assert e.rule == "posting_rules.unknown_role"
    assert "posting_rules.invoice[1].credit" in e.item
    assert "vat_payable" in e.message


def test_unknown_role_in_override() -> None:
    c = _cfg()
    c["account_roles"]["by_entity"] = {"DE01": {"payroll": "2100"}}
    e = _error(c["account_roles"], c["posting_rules"])
    assert (e.rule, e.item) == ("posting_rules.unknown_role", "posting config account_roles.by_entity.DE01.payroll")


@pytest.mark.parametrize("key", ["debit", "credit", "amount"])
def test_missing_rule_key(key: str) -> None:
    c = _cfg()
    del c["posting_rules"]["expense"][0][key]
    e = _error(c["account_roles"], c["posting_rules"])
    assert e.rule == "posting_rules.missing_key"
    assert e.item == f"posting config posting_rules.expense[0].{key}"


def test_missing_default_roles() -> None:
    e = _error({"by_entity": {}}, DEFAULT_POSTING_RULES)
    assert (e.rule, e.item) == ("posting_rules.missing_key", "posting config account_roles.default")


def test_unknown_key_in_rule_line() -> None:
    c = _cfg()
    c["posting_rules"]["labor_cost"][0]["dimension"] = ["project"]
    e = _error(c["account_roles"], c["posting_rules"])
    assert (e.rule, e.item) == ("posting_rules.unknown_key", "posting config posting_rules.labor_cost[0].dimension")


def test_unknown_txn_type() -> None:
    c = _cfg()
    c["posting_rules"]["labour_cost"] = c["posting_rules"].pop("labor_cost")
    e = _error(c["account_roles"], c["posting_rules"])
    assert e.rule == "posting_rules.unknown_txn_type"
    assert "labor_cost" in e.fix


@pytest.mark.parametrize(
    ("mutate", "rule", "path"),
    [
        (lambda c: c["account_roles"]["default"].update(receivables=1100), "posting_rules.bad_value",
         "account_roles.default.receivables"),
        (lambda c: c["posting_rules"].update(expense=[]), "posting_rules.empty_rule", "posting_rules.expense"),
        (lambda c: c["posting_rules"]["expense"][0].update(credit="project_expense"), "posting_rules.same_role",
         "posting_rules.expense[0]"),
        (lambda c: c["posting_rules"]["expense"][0].update(dimensions="project"), "posting_rules.bad_value",
         "posting_rules.expense[0].dimensions"),
        (lambda c: c["posting_rules"]["expense"][0].update(dimensions=["project", "project"]),
         "posting_rules.bad_value", "posting_rules.expense[0].dimensions"),
        (lambda c: c["posting_rules"].update(expense=["project_expense"]), "posting_rules.bad_value",
         "posting_rules.expense[0]"),
    ],
)
def test_bad_values(mutate: Any, rule: str, path: str) -> None:
    c = copy.deepcopy(_cfg())
    mutate(c)
    e = _error(c["account_roles"], c["posting_rules"])
    assert (e.rule, e.item) == (rule, f"posting config {path}")
    assert e.fix


# --------------------------------------------------------------------------- adapters

REF = SourceRef(system="psa", entity="time_entry", id="TE-1", version=2)


def _time(billable: bool, value: str) -> CostedTime:
    return CostedTime(
        ref=REF, legal_entity_id="UK01", project_id="P-1", resource_id="R-1", cost_center="CC-DEL-UK",
        work_date=dt.date(2026, 3, 4), hours=Decimal("7.5"), billable=billable, cost_rate=Decimal("40"),
        cost_currency="GBP", cost_amount=Decimal("300.00"), bill_rate=Decimal("100"), bill_currency="EUR",
        billable_value=Decimal(value),
    )


def test_postings_for_billable_time() -> None:
    cost, rev = postings_for_time(_time(True, "750.00"), -1)
    assert (cost.txn_type, cost.currency, cost.amount("cost"), cost.sign) == (
        "labor_cost", "GBP", Decimal("300.00"), -1)
    assert (rev.txn_type, rev.currency, rev.amount("billable_value")) == ("revenue_accrual", "EUR", Decimal("750.00"))
    for p in (cost, rev):
        assert dict(p.dimensions) == {"project": "P-1", "cost_center": "CC-DEL-UK"}
        assert (p.source, p.legal_entity_id, p.date) == (REF, "UK01", dt.date(2026, 3, 4))


@pytest.mark.parametrize(("billable", "value"), [(False, "0"), (True, "0.00")])
def test_no_revenue_accrual_when_not_billable_or_zero(billable: bool, value: str) -> None:
    assert [p.txn_type for p in postings_for_time(_time(billable, value))] == ["labor_cost"]


def test_postings_for_expense() -> None:
    ref = SourceRef(system="psa", entity="expense", id="EX-9", version=1)
    c = CostedExpense(ref=ref, legal_entity_id="US01", project_id="P-2", resource_id="R-2", cost_center="CC-DEL-US",
                      expense_date=dt.date(2026, 3, 9), category="travel", billable=True, amount=Decimal("120.50"),
                      currency="USD")
    (p,) = postings_for_expense(c)
    assert (p.txn_type, p.amount("amount"), p.currency, p.sign, p.source) == (
        "expense", Decimal("120.50"), "USD", 1, ref)
    assert dict(p.dimensions) == {"project": "P-2", "cost_center": "CC-DEL-US"}


def test_adapter_refuses_bad_sign() -> None:
    with pytest.raises(DomainError) as ei:
        postings_for_time(_time(True, "1.00"), 0)
    assert ei.value.rule == "posting.bad_sign"


def test_time_on_fixed_fee_and_milestone_projects_accrues_no_revenue() -> None:
    """Their revenue is recognised by percent complete / milestone; accruing it at bill rates would count it twice."""
    import datetime as dt

    from ledgerbridge.domain.types import CostedTime
    from ledgerbridge.model.base import SourceRef

    c = CostedTime(SourceRef(system="psa", entity="time_entry", id="T1"), "US01", "P1", "R1", "CC", dt.date(2026, 9, 1),
                   Decimal("8"), True, Decimal("50"), "USD", Decimal("400.00"), Decimal("150"), "USD",
                   Decimal("1200.00"))
    assert [p.txn_type for p in postings_for_time(c)] == ["labor_cost", "revenue_accrual"]
    assert [p.txn_type for p in postings_for_time(c, accrue_revenue=False)] == ["labor_cost"]
