"""Kill mid-run, rerun, no duplicates: the posting run of a month goes to the Dynamics 365 sandbox from a child
process (config only, one journal per $batch). The sandbox commits the second $batch and holds its answer; the child
is SIGKILLed while it waits — F&O holds a journal the engine never heard of. The rerun (in this process, on the same
store) finds the journals by their Description, creates only the missing one, and every journal is held once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dynamics365_support import SECRET, SYSTEM, cutoff, d365_ctx, serve
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import journals

from flows_support import records, tiny_firm

CHILD = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from dynamics365_support import d365_ctx
from ledgerbridge.flows import posting

class Env:
    def setenv(self, key, value):
        os.environ[key] = value

ctx = d365_ctx(Path({workdir!r}), Path({export!r}), {base!r}, Env(), batch_journals=1)
print("posting", flush=True)
print(posting.post_period(ctx, "US01", "2026-09"), flush=True)
"""


def test_sigkill_mid_run_then_rerun_posts_each_journal_once(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    export = tiny_firm(tmp_path / "firm")
    workdir = tmp_path / "w"
    with serve(hold_after=1) as (app, base):
        store = app.state.store
        ctx = d365_ctx(workdir, export, base, monkeypatch, batch_journals=1)
        transactions.land(ctx, SOURCE, records(ctx, until=cutoff("2026-09")))
        transactions.process_pending(ctx)
        ctx.engine.dispose()
        script = CHILD.format(tests=str(Path(__file__).parent), workdir=str(workdir), export=str(export), base=base)
        child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "LB_TEST_D365_SECRET": SECRET},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30
        while app.state.batches_done[0] < 2:  # the second journal is committed in F&O, its answer held
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the second $batch"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        app.state.release.set()
        held_before = len(store.journals("usmf"))
        assert held_before == 2

        ctx.reset_connectors()
        out = posting.post_period(ctx, "US01", "2026-09")  # picks the killed run up again
        assert out.status == "posted" and out.run_id == "US01-2026-09-erp_d365-r01", out
        refs = Counter(h["Description"] for h in store.journals("usmf"))
        with ctx.engine.connect() as conn:
            recorded = journals.list_journals(conn, legal_entity_id="US01")
        assert len(recorded) == out.journals > held_before
        assert refs == Counter(f"lb:{j.id}" for j in recorded)  # each journal held once, none missing
        assert all(h["IsPosted"] == "Yes" for h in store.journals("usmf"))
        assert app.state.batches_done[0] == len(recorded)  # the rerun sent only the journal F&O lacked
        target = ctx.connector(SYSTEM)
        assert all(target.read_back([j.id])[j.id].matches(j) for j in recorded)
