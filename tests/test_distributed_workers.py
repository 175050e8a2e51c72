"""Distributed mode on the real PostgreSQL: two ``ledgerbridge worker`` processes and a coordinator process the
sample firm and the Beancount ledger equals the embedded run's, byte for byte; a worker SIGKILLed mid-run and
restarted under its executor id resumes its pending work — nothing lost, nothing twice; SIGTERM stops a worker
gracefully (exit code 0)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from distributed_support import WorkerProc, dist_config, fresh_database, workers
from ledgerbridge import runtime as rt
from ledgerbridge.flows import worker as W
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import DemoOptions, run_demo
from ledgerbridge.store import audit, create_store_engine
from ledgerbridge.store.schema import inbox, posted_journals, staging_lines

from flows_support import ledger_text, tiny_firm

BATCH = 200  # small batches: more checkpointed steps per ingest, so a kill lands mid-workflow
START, MONTHS = "2026-09", 2


def _store_facts(url: str) -> dict[str, Any]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(posted_journals.c.id))]
            status = dict(conn.execute(sa.select(staging_lines.c.status, sa.func.count())
                                       .group_by(staging_lines.c.status)).all())
            rows = conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one()
            ok = audit.verify(conn).ok
    finally:
        engine.dispose()
    return {"journal_ids": ids, "staging": status, "inbox_rows": rows, "audit_ok": ok}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The embedded main job (one process, SQLite) on the same firm: the expected ledger and store facts."""
    wd = tmp_path_factory.mktemp("embedded")
    res = run_demo(DemoOptions(workdir=wd, seed=7, employees=6, months=MONTHS, start=START, batch_size=BATCH))
    assert not res.failed, res.ledger_check
    return {"ledger": ledger_text(wd), **_store_facts(f"sqlite:///{wd / 'state.sqlite'}")}


def _check_same_as_embedded(root: Path, url: str, embedded: dict[str, Any]) -> None:
    assert embedded["ledger"], "the embedded run wrote no ledger"
    got = ledger_text(root)
    assert got.keys() == embedded["ledger"].keys()
    for name, text in embedded["ledger"].items():
        assert got[name] == text, f"ledger file {name} differs from the embedded run"
    facts = _store_facts(url)
    dupes = [i for i, n in Counter(facts["journal_ids"]).items() if n > 1]
    assert not dupes, f"journals recorded twice: {dupes}"
    assert sorted(facts["journal_ids"]) == sorted(embedded["journal_ids"])
    assert facts["staging"] == embedded["staging"]
    assert facts["inbox_rows"] == embedded["inbox_rows"]
    assert facts["audit_ok"]


@contextmanager
def cluster(root: Path) -> Iterator[tuple[str, FlowContext, dict[str, WorkerProc], W.Coordinator]]:
    """A fresh database, the coordinator's set-up, workers w1 and w2 and a coordinator client."""
    tiny_firm(root)
    with fresh_database() as url:
        cfg, path = dist_config(root, url)
        ctx = FlowContext(cfg, workdir=root)
        W.prepare(ctx)
        with workers(path) as procs:
            yield url, ctx, procs, W.Coordinator(cfg, poll_interval=0.05)


def test_two_workers_produce_the_embedded_ledger(tmp_path: Path, embedded: dict[str, Any]) -> None:
    root = tmp_path / "dist"
    with cluster(root) as (url, ctx, procs, coord):
        try:
            months = W.run_months(coord, ctx, "psa_files", START, MONTHS, batch_size=BATCH)
            # the coordinator's ids are deterministic: running the loop again (here as the CLI, another
            # process) starts nothing new
            before = len(coord.workflows())
            cli = subprocess.run([sys.executable, "-m", "ledgerbridge.cli", "worker", "run-months", "--start", START,
                                  "--months", str(MONTHS), "--batch-size", str(BATCH), "--config",
                                  str(root / "ledgerbridge.yaml")], capture_output=True, text=True, timeout=120)
            assert cli.returncode == 0, cli.stderr[-2000:]
            assert '"months": 2' in cli.stdout
            assert len(coord.workflows()) == before
            statuses = coord.workflows()
        finally:
            coord.close()
        codes = {i: p.terminate() for i, p in procs.items()}
        _check_same_as_embedded(root, url, embedded)  # inside: the database is dropped on leaving
    assert codes == {"w1": 0, "w2": 0}, "SIGTERM must stop a worker gracefully"
    assert [p["status"] for m in months for p in m["posting"]] == ["posted"] * 6
    assert {s["status"] for s in statuses} == {"SUCCESS"}
    assert {s["executor_id"] for s in statuses} == {"w1", "w2"}, "both workers should have taken work"
    assert {s["app_version"] for s in statuses} == {rt.DEFAULT_APPLICATION_VERSION}


def test_sigkilled_worker_restarted_under_its_id_resumes_its_work(tmp_path: Path,
                                                                  embedded: dict[str, Any]) -> None:
    root = tmp_path / "dist"
    with cluster(root) as (url, ctx, procs, coord):
        outcome: dict[str, Any] = {}

        def coordinate() -> None:
            try:
                outcome["months"] = W.run_months(coord, ctx, "psa_files", START, MONTHS, batch_size=BATCH)
            except BaseException as exc:  # surfaced by the assertion below
                outcome["error"] = exc

        t = threading.Thread(target=coordinate)
        t.start()
        killed: list[str] = []
        deadline = time.monotonic() + 60
        while not killed and t.is_alive() and time.monotonic() < deadline:
            pending = [w for w in coord.workflows(status="PENDING") if w["executor_id"] == "w1"]
            if pending:
                procs["w1"].kill()
                killed = [w["workflow_id"] for w in pending]
            else:
                time.sleep(0.005)
        assert killed, "w1 never held a running workflow to kill (the run finished first)"
        # w1's pending workflows are bound to its executor id: nobody else resumes them. Restart it.
        procs["w1"].start().wait_ready()
        t.join(120)
        assert not t.is_alive(), "the coordinator did not finish after the restart"
        assert "error" not in outcome, outcome.get("error")
        statuses = {w["workflow_id"]: w for w in coord.workflows()}
        coord.close()
        codes = {i: p.terminate() for i, p in procs.items()}
        _check_same_as_embedded(root, url, embedded)  # inside: the database is dropped on leaving
    assert codes == {"w1": 0, "w2": 0}
    assert all(statuses[i]["status"] == "SUCCESS" for i in killed), {i: statuses[i]["status"] for i in killed}
    assert {w["status"] for w in statuses.values()} == {"SUCCESS"}
    assert [p["status"] for m in outcome["months"] for p in m["posting"]] == ["posted"] * 6
    print(f"killed w1 while it ran {killed}; recovered after restart")


def test_worker_refuses_sqlite_with_the_key_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "emb"
    tiny_firm(root)
    from ledgerbridge.flows.main_job import demo_config

    with pytest.raises(W.DistributedConfigError, match=r"runtime.system_database_url and store.url: .*PostgreSQL"):
        W.require_postgres(demo_config(root))


def test_queues_follow_the_configuration(tmp_path: Path) -> None:
    root = tmp_path / "q"
    tiny_firm(root)
    from ledgerbridge.flows.main_job import demo_config

    specs = {s.name: s for s in W.queue_specs_for(demo_config(root))}
    assert set(specs) == {"ledger", "psa_files", W.CONTROL_QUEUE, W.INBOX_QUEUE}
    assert specs["ledger"].partitioned and specs["ledger"].partition_concurrency == 1  # one run per entity
    assert not specs["psa_files"].partitioned
    assert specs[W.INBOX_QUEUE].concurrency == 1




def test_worker_reloads_reference_data_only_when_the_drop_changes(tmp_path: Path) -> None:
    from ledgerbridge.flows.main_job import demo_config

    tiny_firm(tmp_path)
    ctx = W.worker_context(demo_config(tmp_path), tmp_path)
    loaded = ctx.reference
    assert loaded.projects and loaded.entities
    drop = W.refresh_reference(ctx, None)
    assert drop and ctx.reference is not loaded  # unknown drop: loaded again
    again = ctx.reference
    assert W.refresh_reference(ctx, drop) == drop and ctx.reference is again  # same drop: kept
