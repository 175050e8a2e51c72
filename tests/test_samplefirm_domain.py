"""The generated firm is consumable by the real domain rules: the rate card validates, and every time-entry
version and expense can be costed with no violation (no missing, ambiguous or wrong-currency rate)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from ledgerbridge.domain.costing import RateBook, cost_expenses_many, cost_many, validate_rate_card
from ledgerbridge.samplefirm import generate_firm, load_firm


def test_generated_firm_costs_cleanly(tmp_path: Path) -> None:
    generate_firm(tmp_path, seed=13, employees=45, months=3, start="2026-09")
    firm = load_firm(tmp_path, strict=True)
    assert validate_rate_card(firm.rate_cards) == []
    book = RateBook.from_lines(firm.rate_cards)
    entries = list(firm.time_entries())
    costed, violations = cost_many(entries, firm.projects, firm.resources, book)
    assert violations == []
    assert len(costed) == len(entries)
    billable = [c for c in costed if c.billable]
    assert billable and all(c.billable_value > 0 and c.bill_currency == firm.projects[c.project_id].currency
                            for c in billable)
    assert all(c.cost_amount > 0 for c in costed)
    # the raise inside the window shows: some resource is costed at two different rates
    rates_by_resource: dict[str, set[Decimal]] = {}
    for c in costed:
        rates_by_resource.setdefault(c.resource_id, set()).add(c.cost_rate)
    assert any(len(v) == 2 for v in rates_by_resource.values())
    expenses, x_violations = cost_expenses_many(firm.expenses(), firm.projects, firm.resources)
    assert x_violations == [] and expenses
