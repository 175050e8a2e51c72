"""Reconciliation with injected discrepancies in the ERP ledger (a healthy tiny firm run through the real flows
into the Beancount ledger, then the ledger files edited as a person in the ERP would): a missing posting, a
duplicate in the ERP, an FX difference and a manual entry each found with the right reason and the journal named;
results stored per run for trends; ``ledgerbridge reconcile`` exits 1 on unexplained variance."""

from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ledgerbridge.flows import recon_runs
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.reconcile import ERP_SIDE
from ledgerbridge.store.schema import recon_runs as rr_t
from test_dashboard_pages import build_state

from flows_support import make_ctx

BLOCK = re.compile(r'\n(\d{4}-\d{2}-\d{2} \* "(?P<type>[a-z_]+) [^\n]*\n(?:  [^\n]*\n)+)')
POSTING = re.compile(r"^  (?P<acct>[A-Z][\w:-]+)\s+(?P<num>-?\d+(?:\.\d+)?) (?P<ccy>[A-Z]{3})$", re.M)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recon-runs")
    build_state(root, drop_rate=False, reconcile=False)
    return root


def copy_ctx(healthy: Path, tmp_path: Path) -> FlowContext:
    dst = tmp_path / "firm"
    shutil.copytree(healthy, dst, symlinks=True)
    (dst / "run" / "psa-export").unlink()
    return make_ctx(dst / "run", export_from=dst / "src" / "psa-export")


def blocks(ctx: FlowContext, kind: str) -> list[tuple[Path, str, str]]:
    """(period file, transaction text, journal id) of every posted journal of ``kind`` in the ledger files."""
    out = []
    for f in sorted((ctx.workdir / "ledger" / "ledger").glob("*/20*.beancount")):
        for m in BLOCK.finditer(f.read_text()):
            if m.group("type") == kind:
                jid = re.search(r'journal_id: "([^"]+)"', m.group(1))
                assert jid
                out.append((f, m.group(1), jid.group(1)))
    return out


def explanations(recon, kind: str) -> list:
    return [(c, e) for c in recon.cells for e in c.explanations if e.kind == kind]


def test_healthy_run_is_stored_and_clean(healthy: Path, tmp_path: Path) -> None:
    ctx = copy_ctx(healthy, tmp_path)
    recon, run_id = recon_runs.run_reconciliation(ctx, period="2026-09")
    assert recon.ok and run_id and {c.period for c in recon.cells} == {"2026-09"}
    assert not any(e.kind in ERP_SIDE for c in recon.cells for e in c.explanations)
    with ctx.engine.connect() as conn:
        run = recon_runs.get_run(conn, run_id)
        stored = recon_runs.run_cells(conn, run_id)
        trend = recon_runs.variance_trend(conn)
    assert run is not None and run.ok and run.period == "2026-09" and run.cells == len(recon.cells)
    assert [(c["legal_entity_id"], c["measure"], c["currency"], c["variance"]) for c in stored] == sorted(
        (c.legal_entity_id, c.measure, c.currency, c.to_json()["variance"]) for c in recon.cells)
    assert {t["period"] for t in trend} == {"2026-09"}
    assert all(t["unexplained"] == 0 for t in trend)


def test_missing_posting_is_named(healthy: Path, tmp_path: Path) -> None:
    ctx = copy_ctx(healthy, tmp_path)
    f, text, jid = blocks(ctx, "labor_cost")[0]
    f.write_text(f.read_text().replace(text, "", 1))
    recon, _ = recon_runs.run_reconciliation(ctx)
    found = explanations(recon, "missing_in_erp")
    assert found and {e.item_id for _, e in found} == {jid}
    for c, e in found:
        assert e.amount < 0 and c.unexplained == e.amount  # the whole gap, and not explained away
    assert not recon.ok


def test_duplicate_in_erp_is_named(healthy: Path, tmp_path: Path) -> None:
    ctx = copy_ctx(healthy, tmp_path)
    f, text, jid = blocks(ctx, "expense")[0]
    f.write_text(f.read_text() + "\n" + text)  # the ERP imported the same journal twice
    recon, _ = recon_runs.run_reconciliation(ctx)
    found = explanations(recon, "duplicate_in_erp")
    assert found and {e.item_id for _, e in found} == {jid}
    amount = sum(Decimal(m.group("num")) for m in POSTING.finditer(text) if Decimal(m.group("num")) > 0)
    assert sum((e.amount for _, e in found), Decimal(0)) == amount
    assert "2 times" in found[0][1].detail
    assert not recon.ok and not explanations(recon, "posted_in_erp_not_staging")


def test_fx_difference_is_named_with_the_implied_rate(healthy: Path, tmp_path: Path) -> None:
    ctx = copy_ctx(healthy, tmp_path)
    f, text, jid = next(b for b in blocks(ctx, "expense") if len(POSTING.findall(b[1])) == 2)
    posts = list(POSTING.finditer(text))
    ccy = posts[0].group("ccy")
    other = "EUR" if ccy != "EUR" else "USD"
    # the ERP booked the journal in another currency at its own rate (1.25), balanced
    edited = text
    for m in posts:
        value = (Decimal(m.group("num")) * Decimal("1.25")).quantize(Decimal("0.01"))
        edited = edited.replace(m.group(0), f"  {m.group('acct')}  {value} {other}", 1)
    f.write_text(f.read_text().replace(text, edited, 1))
    recon, _ = recon_runs.run_reconciliation(ctx)
    found = explanations(recon, "fx_difference")
    assert {e.item_id for _, e in found} == {jid}
    by_ccy = {c.currency: e.amount for c, e in found}
    posted = abs(Decimal(posts[0].group("num")))
    assert by_ccy == {ccy: -posted, other: (posted * Decimal("1.25")).quantize(Decimal("0.01"))}
    assert "implied rate 1.250000" in found[0][1].detail
    assert not explanations(recon, "duplicate_in_erp") and not explanations(recon, "missing_in_erp")


def test_manual_erp_entry_is_posted_in_erp_not_staging(healthy: Path, tmp_path: Path) -> None:
    ctx = copy_ctx(healthy, tmp_path)
    f, text, _jid = blocks(ctx, "expense")[0]
    posts = list(POSTING.finditer(text))
    debit, credit = posts[0], posts[-1]
    manual = (f'\n2026-09-15 * "manual accrual keyed in the ERP"\n  {debit.group("acct")}  123.45 '
              f'{debit.group("ccy")}\n  {credit.group("acct")}  -123.45 {debit.group("ccy")}\n')
    f.write_text(f.read_text() + manual)
    recon, _ = recon_runs.run_reconciliation(ctx)
    found = explanations(recon, "posted_in_erp_not_staging")
    assert [e.amount for _, e in found] == [Decimal("123.45")]
    assert not recon.ok


def test_cli_reconcile_stores_runs_and_exits_1_on_unexplained(healthy: Path, tmp_path: Path) -> None:
    from ledgerbridge.cli import app

    ctx = copy_ctx(healthy, tmp_path)
    cfg = tmp_path / "lb.yaml"
    runner = CliRunner()
    # the context's own configuration (store, PSA export, ledger systems) as the file the CLI reads (JSON is YAML)
    cfg.write_text(ctx.config.model_dump_json())
    res = runner.invoke(app, ["reconcile", "--period", "2026-09", "--json", "--config", str(cfg),
                              "--export", str(ctx.workdir / "psa-export")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] and doc["run_id"]
    f, text, _ = blocks(ctx, "labor_cost")[0]
    f.write_text(f.read_text().replace(text, "", 1))
    res = runner.invoke(app, ["reconcile", "--json", "--config", str(cfg),
                              "--export", str(ctx.workdir / "psa-export")])
    assert res.exit_code == 1, res.output
    assert json.loads(res.output)["unexplained_cells"] > 0
    res = runner.invoke(app, ["reconcile", "--period", "2026-13", "--config", str(cfg)])
    assert res.exit_code == 2 and "YYYY-MM" in res.output
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rr_t)).scalar_one() == 2


def test_file_target_waiting_for_its_ack_is_awaiting_ack(tmp_path: Path) -> None:
    from ledgerbridge.config.schema import RouteTargets, SystemConfig
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.main_job import SOURCE
    from ledgerbridge.flows.reconcile import reconcile

    from flows_support import records, tiny_firm

    export = tiny_firm(tmp_path / "src", months=1)
    ctx = make_ctx(tmp_path / "w", export_from=export)
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    from ledgerbridge.store.schema import staging_lines

    with ctx.engine.connect() as conn:
        entity = conn.execute(sa.select(staging_lines.c.legal_entity_id).where(
            staging_lines.c.period == "2026-09").group_by(staging_lines.c.legal_entity_id)
            .order_by(sa.func.count().desc())).scalars().first()
    assert entity is not None
    cfg = ctx.config
    systems = {**cfg.systems, "erp_file": SystemConfig(
        connector="file_journal", role="erp",
        options={"outbox": str(tmp_path / "erp" / "outbox"), "inbox": str(tmp_path / "erp" / "inbox")})}
    routing = cfg.routing.model_copy(update={"by_entity": {entity: RouteTargets(ledger="erp_file")}})
    ctx.config = cfg.model_copy(update={"systems": systems, "routing": routing})
    ctx.reset_connectors()
    out = posting.post_period(ctx, entity, "2026-09")
    assert out.status == "awaiting_ack"
    recon = reconcile(ctx, ctx.workdir / "psa-export")
    mine = [c for c in recon.cells if c.legal_entity_id == entity and c.measure != "hours"]
    assert mine and all(c.unexplained == 0 for c in mine), recon.findings
    kinds = {e.kind for c in mine for e in c.explanations}
    assert "awaiting_ack" in kinds and "staged_unposted" not in kinds
    detail = next(e.detail for c in mine for e in c.explanations if e.kind == "awaiting_ack")
    assert out.run_id in detail and "erp_file" in detail
