"""Subscription chains and backfill windows on the embedded runtime (DBOS on SQLite, WAL).

    .venv/bin/python bench/bench_subscriptions.py [--events 300] [--keys 20]

Prints:
1. chains per second for ``--events`` project.approved events over ``--keys`` projects (per-key order, queue
   concurrency 8), each chain 3 actions (ERP binding in xref, a row in a SQLite mart table, a log line) = 3 durable
   steps, and the same for a 1-action chain (the per-chain floor);
2. the cost of a duplicate delivery (publish of the same events again: nothing runs);
3. backfill windows per second (the ``post`` flow over empty periods: the per-window overhead) and a repeat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import SubscriptionConfig
from ledgerbridge.flows import schedules
from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.flows.main_job import demo_config
from ledgerbridge.runtime.testing import launched_for_test


def _event(i: int, keys: int) -> dict[str, Any]:
    pid = f"P-{i % keys:04d}"
    return {"event_type": "project.approved", "event_id": f"ev-{i}", "source_system": f"crm{i}",
            "occurred_at": "2026-09-01T09:00:00+00:00",
            "project": {"id": pid, "name": pid, "customer_id": "C-1", "legal_entity_id": "US01",
                        "contract_type": "time_and_materials", "currency": "USD", "cost_center": "CC-1",
                        "start_date": "2026-09-01"}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--keys", type=int, default=20)
    args = ap.parse_args()
    logging.getLogger("ledgerbridge.subscriptions").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        mart = root / "events.sqlite"
        three = {"name": "three", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "erp", "kind": "create_erp_project"},
            {"name": "mart", "kind": "mart", "options": {"path": str(mart)}},
            {"name": "log", "kind": "log"}]}
        one = {"name": "one", "event": "project.approved", "key": "project.id",
               "actions": [{"name": "log", "kind": "log"}]}
        cfg = demo_config(root / "wd")
        ctx = FlowContext(cfg, workdir=root / "wd")
        ctx.migrate()
        set_current(ctx)
        with launched_for_test(root):
            for sub in (three, one):
                ctx.config = cfg.model_copy(update={"subscriptions": [SubscriptionConfig.model_validate(sub)]})
                events = [_event(i, args.keys) for i in range(args.events)]
                t0 = time.perf_counter()
                res = subs.publish(ctx, events)
                t1 = time.perf_counter()
                states = subs.wait(res.workflow_ids, timeout_seconds=600)
                t2 = time.perf_counter()
                assert all(s["status"] == "completed" for s in states)
                n_actions = len(sub["actions"])  # type: ignore[arg-type]
                print(f"{sub['name']}-action chains: {len(states)} events over {args.keys} keys: publish "
                      f"{(t1 - t0) * 1000:.0f} ms, all done in {t2 - t0:.2f} s = {len(states) / (t2 - t0):.0f} "
                      f"chains/s ({len(states) * n_actions / (t2 - t0):.0f} action steps/s)")
                t3 = time.perf_counter()
                again = subs.publish(ctx, events)
                t4 = time.perf_counter()
                print(f"  duplicate delivery of all {len(events)}: {again.enqueued} run, {(t4 - t3) * 1000:.0f} ms")
            start, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
            for parallel in (1, 4):
                t0 = time.perf_counter()
                b = schedules.backfill(ctx, "post", start, end, every="day", options={"entities": [],
                                       "p": parallel}, parallel=parallel)
                t1 = time.perf_counter()
                r = schedules.backfill(ctx, "post", start, end, every="day", options={"entities": [],
                                       "p": parallel}, parallel=parallel)
                t2 = time.perf_counter()
                print(f"backfill --parallel {parallel}: {len(b.windows)} day windows in {t1 - t0:.2f} s = "
                      f"{len(b.windows) / (t1 - t0):.0f} windows/s; repeat: {r.started} run, {t2 - t1:.2f} s")
        set_current(None)


if __name__ == "__main__":
    main()
