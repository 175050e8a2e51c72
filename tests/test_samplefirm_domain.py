"""The generated firm is consumable by the real domain rules: rate card valid and every version costable, every
version history legal under PSA approval practice, and replaying the versions as they arrive ends with exactly the
latest approved version of each item on the ledger."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from ledgerbridge.domain.approvals import check_history, decide, group_histories
from ledgerbridge.domain.costing import RateBook, cost_expenses_many, cost_many, validate_rate_card
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.fx import FxTable
from ledgerbridge.domain.periods import LatePolicy, PeriodBook
from ledgerbridge.domain.types import DeltaAction
from ledgerbridge.model import ApprovalStatus, PeriodStatus
from ledgerbridge.samplefirm import Firm, generate_firm, latest_versions, load_firm


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Firm:
    d = tmp_path_factory.mktemp("firm")
    generate_firm(d, seed=13, employees=45, months=3, start="2026-09")
    return load_firm(d, strict=True)


def test_generated_firm_costs_cleanly(firm: Firm) -> None:
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


@pytest.mark.parametrize("entity", ["time_entry", "expense"])
def test_version_histories_are_legal_and_replay_to_the_latest_approved(firm: Firm, entity: str) -> None:
    items = list(firm.time_entries() if entity == "time_entry" else firm.expenses())
    histories = group_histories(items)
    for key, history in histories.items():
        assert check_history(history, item=key) == [], key

    # replay in file order, one version at a time, as a poller would receive them
    seen: dict[str, list[tuple[int, ApprovalStatus]]] = {}
    posted: dict[str, int | None] = {}
    actions: Counter[DeltaAction] = Counter()
    for it in items:
        key = f"{it.source_system}:{it.id}"
        seen.setdefault(key, []).append((it.version, it.approval_status))
        deltas, posted[key] = decide(seen[key], posted.get(key), entity=entity, item_id=key)
        actions.update(d.action for d in deltas)
    latest = latest_versions(items)
    for item_id, last in latest.items():
        expected = last.version if last.approval_status is ApprovalStatus.APPROVED else None
        assert posted[f"psa_files:{item_id}"] == expected, item_id
    assert actions[DeltaAction.POST] > actions[DeltaAction.REVERSE] > 0  # recalls and edits reverse postings


def test_periods_place_late_items_and_fx_covers_every_date(firm: Firm) -> None:
    book = PeriodBook(firm.periods)
    redated = 0
    rejected = 0
    for e in firm.time_entries():
        entity = firm.projects[e.project_id].legal_entity_id
        placed = book.place(entity, e.work_date, LatePolicy.NEXT_OPEN_PERIOD)
        assert book.status(entity, placed.period) is PeriodStatus.OPEN
        if placed.redated_from is not None:
            redated += 1
            assert placed.redated_from == "2026-08" and placed.period == "2026-09"
            with pytest.raises(DomainError) as exc:
                book.place(entity, e.work_date, LatePolicy.REJECT)
            assert exc.value.rule == "period.closed"
            rejected += 1
    assert redated > 0 and rejected == redated  # the closed month's late items exercise the policy

    fx = FxTable.from_rates(firm.fx_rates)
    functional = {k: v.functional_currency for k, v in firm.legal_entities.items()}
    converted = 0
    for x in firm.expenses():
        target = functional[firm.projects[x.project_id].legal_entity_id]
        c = fx.convert(x.amount, x.currency, target, x.expense_date)
        assert c.amount > 0 and c.rate_date <= x.expense_date and not fx.is_derived(x.currency, target, x.expense_date)
        converted += x.currency != target
    assert converted > 0  # cross-currency expenses exist and convert with a published rate
