"""The transactional flow on a real generated firm and a real embedded store: duplicates, reordering,
un-approval after posting, late items under both policies, and dead letters with replay."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge.domain.approvals import effective_version
from ledgerbridge.domain.costing import cost_expense, cost_time
from ledgerbridge.domain.posting import postings_for_expense, postings_for_time
from ledgerbridge.flows import dlq, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
from ledgerbridge.model.entities import ApprovalStatus, ContractType, Expense, TimeEntry
from ledgerbridge.store import dead_letters, inbox
from ledgerbridge.store.schema import staging_lines

from flows_support import make_ctx, records, tiny_firm


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"))


def staged_net(ctx) -> dict[tuple[str, str, str, str], Decimal]:
    """(entity, item id, txn_type.amount, currency) -> signed sum of every staged line."""
    out: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    with ctx.engine.connect() as conn:
        for r in conn.execute(sa.select(staging_lines)):
            for name, value in r.amounts:
                out[(r.source_entity, r.source_id, f"{r.txn_type}.{name}", r.currency)] += Decimal(value) * r.sign
    return {k: v for k, v in out.items() if v}


def expected_net(ctx, recs) -> dict[tuple[str, str, str, str], Decimal]:
    """What the ledger must hold per item: the costing of its effective approved version only."""
    hist: dict[tuple[str, str], list] = defaultdict(list)
    for r in recs:
        hist[(r["entity"], r["external_id"])].append(r)
    ref = ctx.reference
    out: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    for (entity, item_id), rows in hist.items():
        eff = effective_version([(r["version"], ApprovalStatus(r["payload"]["approval_status"])) for r in rows])
        if eff is None:
            continue
        payload = next(r["payload"] for r in rows if r["version"] == eff)
        if entity == "time_entry":
            e = TimeEntry.model_validate(payload)
            prj = ref.projects[e.project_id]
            ps = postings_for_time(cost_time(e, prj, ref.resources[e.resource_id], ref.rates),
                                   accrue_revenue=prj.contract_type is ContractType.TIME_AND_MATERIALS)
        else:
            x = Expense.model_validate(payload)
            ps = postings_for_expense(cost_expense(x, ref.projects[x.project_id], ref.resources[x.resource_id]))
        for p in ps:
            for name, value in p.amounts:
                out[(entity, item_id, f"{p.txn_type}.{name}", p.currency)] += value
    return {k: v for k, v in out.items() if v}


def test_duplicates_have_no_second_effect(tmp_path: Path, export: Path) -> None:
    ctx = make_ctx(tmp_path / "w", export_from=export)
    recs = records(ctx)
    first = transactions.land(ctx, SOURCE, recs, batch_size=500)
    transactions.process_pending(ctx, batch_size=700)
    before = staged_net(ctx)
    again = transactions.land(ctx, SOURCE, recs + recs[:50], batch_size=333)
    res = transactions.process_pending(ctx)
    assert first.new == len(recs) and again.new == 0 and again.duplicates == len(recs) + 50
    assert res.rows == 0 and staged_net(ctx) == before
    assert before == expected_net(ctx, recs)


def test_reordered_arrival_nets_to_the_effective_version(tmp_path: Path, export: Path) -> None:
    """Versions delivered shuffled, in small batches processed as they arrive (so later versions are often
    decided before earlier ones): the staged effect per item equals its effective approved version exactly."""
    ctx = make_ctx(tmp_path / "w", export_from=export)
    recs = records(ctx)
    shuffled = recs[:]
    random.Random(3).shuffle(shuffled)
    for i in range(0, len(shuffled), 97):
        transactions.land(ctx, SOURCE, shuffled[i:i + 97])
        transactions.process_pending(ctx, batch_size=61)
    assert staged_net(ctx) == expected_net(ctx, recs)
    with ctx.engine.connect() as conn:
        assert inbox.count_by_status(conn) == {"processed": len(recs)}


def _cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return dt.datetime.combine(nxt + dt.timedelta(days=4), dt.time(23, 59, 59), tzinfo=dt.UTC)


def test_change_after_close_is_reversed_into_the_next_open_period(tmp_path: Path, export: Path) -> None:
    ctx = make_ctx(tmp_path / "w", export_from=export)
    transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
    transactions.process_pending(ctx)
    for e in sorted(ctx.reference.entities):
        assert posting.post_period(ctx, e, "2026-09").status in ("posted", "nothing_to_post")
        assert close_period(ctx, e, "2026-09")["status"] == "closed"
    late = records(ctx, since=_cutoff("2026-09"))
    res = transactions.land(ctx, SOURCE, late)
    out = transactions.process_pending(ctx)
    assert res.new == len(late) and out.reversed > 0, "the sample firm recalls/edits some September items later"
    with ctx.engine.connect() as conn:
        rev = conn.execute(sa.select(staging_lines).where(staging_lines.c.sign == -1)).all()
        assert rev and all(r.period >= "2026-10" for r in rev), "nothing may land in the closed September"
        assert all(r.redated_from == "2026-09" for r in rev if r.entry_date < dt.date(2026, 10, 1))
    for e in sorted(ctx.reference.entities):
        out2 = posting.post_period(ctx, e, "2026-10")
        assert out2.status in ("posted", "nothing_to_post")
    assert staged_net(ctx) == expected_net(ctx, records(ctx))
    assert ctx.connector("ledger").check() == []


def test_reject_policy_dead_letters_late_items_and_replay_after_reopen(tmp_path: Path, export: Path) -> None:
    from ledgerbridge.store import periods as prepo

    ctx = make_ctx(tmp_path / "w", export_from=export, late="reject")
    entities = sorted(ctx.reference.entities)
    with ctx.engine.begin() as conn:  # the controller closed September before its items arrived
        for e in entities:
            prepo.set_period(conn, e, "2026-09", "closed")
    transactions.land(ctx, SOURCE, records(ctx))
    out = transactions.process_pending(ctx)
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, queue="financial", error_code="period.closed")
        assert not conn.execute(sa.select(staging_lines).where(staging_lines.c.period == "2026-09")).first()
    assert out.dead_lettered == len(letters) > 0
    assert all("closed" in lt.error_text and lt.payload["source"]["id"] for lt in letters)
    with ctx.engine.begin() as conn:  # reopened: the replay brings the items in, exactly once
        for e in entities:
            prepo.set_period(conn, e, "2026-09", "open")
    res = dlq.replay(ctx, letters)
    assert res.replayed == len(letters) and res.failed == 0
    assert staged_net(ctx) == expected_net(ctx, records(ctx))
    again = dlq.replay(ctx, letters)  # idempotent: closed letters are skipped, nothing staged twice
    assert again.replayed == 0 and staged_net(ctx) == expected_net(ctx, records(ctx))


def test_unknown_master_data_goes_to_the_financial_dlq_and_replays_after_fix(tmp_path: Path, export: Path) -> None:
    ctx = make_ctx(tmp_path / "w", export_from=export)
    removed = sorted(ctx.reference.projects)[0]
    project = ctx.reference.projects.pop(removed)
    recs = records(ctx)
    transactions.land(ctx, SOURCE, recs)
    out = transactions.process_pending(ctx)
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, error_code="master.unknown_project")
    assert out.dead_lettered == len(letters) > 0
    assert all(removed in lt.error_text and lt.payload["source"]["project_id"] == removed for lt in letters)
    ctx.reference.projects[removed] = project
    res = dlq.replay(ctx, letters)
    assert res.replayed == len(letters)
    assert staged_net(ctx) == expected_net(ctx, recs)
    with ctx.engine.connect() as conn:
        assert dead_letters.list_letters(conn, error_code="master.unknown_project") == []


def test_close_checklist_sees_transaction_stage_dead_letters(tmp_path: Path, export: Path) -> None:
    """A financial dead letter from the transactional flow (here: a missing project) blocks the close of its
    entity and period although its payload only carries the source item."""
    from ledgerbridge.flows.periods import close_checklist

    ctx = make_ctx(tmp_path / "w", export_from=export)
    removed = next(p for p in sorted(ctx.reference.projects) if ctx.reference.projects[p].legal_entity_id == "US01")
    project = ctx.reference.projects.pop(removed)
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    ctx.reference.projects[removed] = project  # the checklist knows the project again (master data fixed)
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, error_code="master.unknown_project")
    assert letters
    periods_hit = sorted({lt.payload["source"]["work_date"][:7] for lt in letters if lt.entity == "time_entry"})
    problems = close_checklist(ctx, "US01", periods_hit[-1])
    assert any("dead letter" in p for p in problems), problems
