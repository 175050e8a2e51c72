"""The main job's subscription chain on a tiny generated firm: one ProjectApproved per reference project, each
bound in xref and recorded in the events mart; running it again does nothing twice."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import set_current
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import xref

from flows_support import make_ctx, tiny_firm


def test_demo_chain_binds_every_project_and_records_it_once(tmp_path: Path) -> None:
    export = tiny_firm(tmp_path / "firm", employees=3, months=1)
    ctx = make_ctx(tmp_path / "wd", export_from=export)
    projects = sorted(ctx.reference.projects)
    set_current(ctx)
    try:
        with launched_for_test(tmp_path):
            first = subs.demo_chain(ctx, tmp_path / "wd", SOURCE)
            second = subs.demo_chain(ctx, tmp_path / "wd", SOURCE)
    finally:
        set_current(None)
    n = len(projects)
    assert n > 0
    assert first["status"] == {"completed": n} and first["new"] == n and first["dead_lettered"] == 0
    assert (second["new"], second["already_done"], second["status"]) == (0, n, {"completed": n})
    assert first["erp_bindings"] == n == first["mart_rows"] == second["mart_rows"]
    with ctx.engine.connect() as conn:
        bound = xref.lookup_many(conn, "project", "ledger", projects)
    assert sorted(bound) == projects and all(b.external_id == f"ledgerbridge:{p}" for p, b in bound.items())
    duck = duckdb.connect(str(tmp_path / "wd" / "events.duckdb"), read_only=True)
    try:
        keys = [r[0] for r in duck.execute("SELECT event_key_value FROM approved_projects ORDER BY 1").fetchall()]
    finally:
        duck.close()
    assert keys == projects
