"""Kill mid-run, rerun, no duplicates: the posting run of US01 September runs in a child process against the
NetSuite sandbox (in this process, so its state survives); the sandbox holds journal upserts after the first one,
the child is SIGKILLed while requests are in flight (the held ones still complete on the server, as they would in
NetSuite), and the rerun in this process finishes the run. Every external id is held once, NetSuite's GL equals the
engine's posted totals, and every journal reads back as posted."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import journals
from netsuite_support import KEY_ENV, sandbox, wire

from flows_support import make_ctx, records, tiny_firm

TESTS = Path(__file__).parent
CHILD = """
import os, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from flows_support import make_ctx
from netsuite_support import KEY_ENV, wire
from ledgerbridge.flows import posting
ctx = make_ctx(Path(sys.argv[2]))
wire(ctx, os.environ[KEY_ENV], sys.argv[3], concurrency=1)  # one upsert at a time: a kill leaves work undone
print(posting.post_period(ctx, "US01", "2026-09"))
"""


def _wait(cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigkill_mid_run_then_rerun_posts_each_journal_once(tmp_path: Path) -> None:
    firm = tiny_firm(tmp_path / "firm", employees=6, months=1, seed=11)
    wd = tmp_path / "w"
    with sandbox(hold_after=1, latency=0.01) as (app, base):
        store = app.state.store
        ctx = make_ctx(wd, export_from=firm, failure_mode="line_level")
        key = app.state.demo_private_key
        wire(ctx, key, base)
        target = ctx.connector("erp_ns")
        target.push_customers([c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01"])
        target.push_projects([p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01"])
        transactions.land(ctx, SOURCE, records(ctx, until=dt.datetime(2026, 10, 5, 23, 59, 59, tzinfo=dt.UTC)))
        transactions.process_pending(ctx)

        child = subprocess.Popen([sys.executable, "-c", CHILD, str(TESTS), str(wd), base],
                                 env={**os.environ, KEY_ENV: key}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        try:
            _wait(lambda: store.journal_puts > 1 or child.poll() is not None, "a held journal upsert")
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        app.state.release_hold()  # requests already sent still complete on the server
        _wait(lambda: app.state.limits._in_flight == 0, "in-flight requests to finish")
        at_kill = store.count("journalentry")
        assert at_kill >= 1

        ctx.reset_connectors()
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.dead_lettered == 0, out
        with ctx.engine.connect() as conn:
            posted = {j.id: j for j in journals.list_journals(conn, legal_entity_id="US01")}
        eids = store.external_ids("journalentry")
        assert max(Counter(eids).values()) == 1 and {e.split("~")[0] for e in eids} == set(posted)
        assert at_kill < len(eids), "the kill must come before the run wrote everything"
        held = ctx.connector("erp_ns").read_back(sorted(posted))
        assert all(held[i].matches(posted[i]) for i in posted)
        print(f"\nkilled after {at_kill} of {len(eids)} journal entries; rerun finished with no duplicates")
