"""Many systems, routed by configuration: one entity's ledger lives in a file-based ERP import (journal CSV + manifest,
then an acknowledgement), the other entities in the embedded Beancount ledger. Adding the system is config only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_checklist
from ledgerbridge.store import dead_letters, journals
from ledgerbridge.store.schema import staging_lines

from flows_support import make_ctx, records, tiny_firm

PERIOD = "2026-09"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), months=1)


def routed_ctx(tmp_path: Path, export: Path):
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    with ctx.engine.connect() as conn:  # route the second-busiest entity to the file-based ERP
        busy = [e for e, _ in conn.execute(sa.select(staging_lines.c.legal_entity_id, sa.func.count()).group_by(
            staging_lines.c.legal_entity_id).order_by(sa.func.count().desc()))]
    assert len(busy) >= 2
    cfg = ctx.config
    systems = {**cfg.systems, "erp_eu": SystemConfig(
        connector="file_journal", role="erp",
        options={"outbox": str(tmp_path / "eu" / "outbox"), "inbox": str(tmp_path / "eu" / "inbox")})}
    routing = cfg.routing.model_copy(update={"by_entity": {busy[1]: RouteTargets(ledger="erp_eu")}})
    ctx.config = cfg.model_copy(update={"systems": systems, "routing": routing})
    ctx.reset_connectors()
    return ctx, busy[0], busy[1]


def journal_ids(tmp_path: Path, run_id: str, entity: str) -> list[str]:
    outbox = tmp_path / "eu" / "outbox"
    manifest = json.loads((outbox / f"{run_id}.manifest.json").read_text())
    with (outbox / manifest["file_name"]).open(newline="") as fh:
        return sorted({r["journal_id"] for r in csv.DictReader(fh) if r["journal_id"].startswith(f"{entity}-")})


def write_ack(tmp_path: Path, run_id: str, ids: list[str], reject: set[str]) -> None:
    """What the ERP's import answers: accepted, or rejected with its own code and text."""
    inbox = tmp_path / "eu" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    with (inbox / f"{run_id}.ack.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["journal_id", "status", "error_code", "error_text"])
        for jid in ids:
            w.writerow([jid, "rejected", "GL-042", "cost center closed in the ERP"] if jid in reject
                       else [jid, "accepted", "", ""])


def test_entities_post_to_their_routed_ledgers_and_the_file_target_waits_for_its_ack(tmp_path: Path,
                                                                                     export: Path) -> None:
    ctx, home, eu = routed_ctx(tmp_path, export)
    us = posting.post_period(ctx, home, PERIOD)
    assert us.status == "posted" and us.target == "ledger"
    de = posting.post_period(ctx, eu, PERIOD)
    assert de.target == "erp_eu" and de.status == "awaiting_ack"
    assert (tmp_path / "eu" / "outbox" / f"{de.run_id}.manifest.json").exists()
    assert not (tmp_path / "w" / "ledger" / "ledger" / eu).exists(), "it never goes to the Beancount ledger"
    assert any("not finished" in p for p in close_checklist(ctx, eu, PERIOD))
    again = posting.post_period(ctx, eu, PERIOD)  # no ack yet: same run, same file, still waiting
    assert again.run_id == de.run_id and again.status == "awaiting_ack"

    ids = journal_ids(tmp_path, de.run_id, eu)
    rejected = {i for i in ids if "-expense-" in i} or {ids[0]}
    write_ack(tmp_path, de.run_id, ids, rejected)
    done = posting.post_period(ctx, eu, PERIOD)
    assert done.status == "posted" and done.run_id == de.run_id
    with ctx.engine.connect() as conn:
        recorded = {j.id for j in journals.list_journals(conn, legal_entity_id=eu)}
        letters = dead_letters.list_letters(conn, flow="posting", system=None)
        left = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.legal_entity_id == eu, staging_lines.c.status.in_(("staged", "in_run")))).scalar_one()
    assert recorded == set(ids) - rejected
    assert letters and all("cost center closed" in lt.error_text for lt in letters)
    assert left == 0
