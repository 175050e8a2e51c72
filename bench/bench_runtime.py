"""Durable-runtime throughput: per-event workflows vs one batch step.

    .venv/bin/python bench/bench_runtime.py [--events 300] [--records 10000] [--no-postgres]

Prints:
1. trivial 2-step workflows per second (the per-event path), run one after another and drained from a queue
   (concurrency 8), on SQLite with WAL + synchronous=NORMAL, on SQLite as DBOS configures it, and on PostgreSQL
   (fresh database on 127.0.0.1:5432) when reachable;
2. one workflow whose single step costs 10,000 time entries (Decimal hours x rate) and writes them to a SQLite
   table in ONE transaction, against the same work done as one step per record (on a 1,000-record sample).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge import runtime as rt
from ledgerbridge.runtime.testing import fresh_postgres_database, launched_for_test, postgres_reachable

QUEUE = rt.QueueSpec("bench", concurrency=8)


@rt.step("bench.a")
def step_a(n: int) -> int:
    return n + 1


@rt.step("bench.b")
def step_b(n: int) -> int:
    return n * 2


@rt.workflow("bench.two_steps")
def two_steps(n: int) -> int:
    return step_b(step_a(n))


def _setup_store(path: str, count: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS staged (id TEXT PRIMARY KEY, hours TEXT, rate TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS costed (id TEXT PRIMARY KEY, amount TEXT)")
        conn.execute("DELETE FROM staged")
        conn.execute("DELETE FROM costed")
        conn.executemany(
            "INSERT INTO staged VALUES (?, ?, ?)",
            ((f"TE-{i}", f"{(i % 16) / 2 + 0.5:.2f}", f"{90 + i % 60}.00") for i in range(count)),
        )


def _cost(hours: str, rate: str) -> str:
    return str((Decimal(hours) * Decimal(rate)).quantize(Decimal("0.01")))


@rt.step("bench.cost_batch")
def cost_batch(store: str, first: int, last: int) -> dict[str, Any]:
    """One transaction: read the staged rows, cost them, write them (idempotent by id), return a control total."""
    with sqlite3.connect(store) as conn:
        rows = conn.execute(
            "SELECT id, hours, rate FROM staged WHERE CAST(substr(id, 4) AS INTEGER) BETWEEN ? AND ?", (first, last)
        ).fetchall()
        costed = [(rid, _cost(h, r)) for rid, h, r in rows]
        conn.executemany("INSERT OR IGNORE INTO costed VALUES (?, ?)", costed)
    return {"records": len(costed), "total": str(sum(Decimal(a) for _, a in costed))}


@rt.workflow("bench.batch")
def batch(store: str, first: int, last: int) -> dict[str, Any]:
    return cost_batch(store, first, last)


@rt.step("bench.cost_one")
def cost_one(store: str, rid: str) -> str:
    with sqlite3.connect(store) as conn:
        hours, rate = conn.execute("SELECT hours, rate FROM staged WHERE id = ?", (rid,)).fetchone()
        amount = _cost(hours, rate)
        conn.execute("INSERT OR IGNORE INTO costed VALUES (?, ?)", (rid, amount))
    return amount


@rt.workflow("bench.per_record")
def per_record(store: str, count: int) -> dict[str, Any]:
    total = sum(Decimal(cost_one(store, f"TE-{i}")) for i in range(count))
    return {"records": count, "total": str(total)}


def _per_event(events: int) -> tuple[float, float]:
    started = time.perf_counter()
    for i in range(events):
        assert rt.run(two_steps, i) == (i + 1) * 2
    sequential = events / (time.perf_counter() - started)
    started = time.perf_counter()
    ids = rt.enqueue_many("bench", two_steps, [([i], f"q-{i}", None) for i in range(events)])
    for wf in ids:
        rt.result(wf, timeout_seconds=600)
    queued = events / (time.perf_counter() - started)
    return sequential, queued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=1_000, help="records for the one-step-per-record comparison")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
        base = Path(tmp)
        print(f"per-event path: {args.events} trivial 2-step workflows (each step = 1 committed transaction)")
        print(f"{'system database':<40} {'sequential wf/s':>16} {'queue (c=8) wf/s':>17}")
        setups: list[tuple[str, dict[str, Any]]] = [
            ("SQLite WAL + synchronous=NORMAL", {"sqlite_wal": True}),
            ("SQLite as DBOS configures it", {"sqlite_wal": False}),
        ]
        for label, overrides in setups:
            folder = base / label.split()[1].lower()
            folder.mkdir()
            with launched_for_test(folder, queues=[QUEUE], queue_polling_interval_sec=0.01, **overrides):
                seq, queued = _per_event(args.events)
            print(f"{label:<40} {seq:>16.0f} {queued:>17.0f}")
        reason = None if not args.no_postgres else "--no-postgres"
        reason = reason or postgres_reachable()
        if reason is None:
            with fresh_postgres_database() as url, launched_for_test(base, queues=[QUEUE], system_database_url=url,
                                                                      queue_polling_interval_sec=0.01, reset=False):
                seq, queued = _per_event(args.events)
            print(f"{'PostgreSQL (127.0.0.1)':<40} {seq:>16.0f} {queued:>17.0f}")
        else:
            print(f"PostgreSQL skipped: {reason}")

        store = str(base / "store.sqlite")
        _setup_store(store, args.records)
        with launched_for_test(base / "batch", sqlite_wal=True):
            started = time.perf_counter()
            out = rt.run(batch, store, 0, args.records - 1, workflow_id="batch-1")
            batch_s = time.perf_counter() - started
            assert out["records"] == args.records
            with sqlite3.connect(store) as conn:
                conn.execute("DELETE FROM costed")
            started = time.perf_counter()
            one = rt.run(per_record, store, args.sample, workflow_id="per-record-1")
            per_s = time.perf_counter() - started
        print(f"load average {os.getloadavg()[0]:.1f} after the per-event runs")
        print(f"\nbatch path: cost {args.records} time entries (Decimal) and write them to SQLite")
        print(f"  one step, one transaction : {batch_s:6.3f} s  = {args.records / batch_s:>9.0f} records/s "
              f"(control total {out['total']})")
        print(f"  one step per record       : {per_s:6.3f} s for {args.sample} = {args.sample / per_s:>9.0f} records/s "
              f"-> {args.records / (args.sample / per_s):.1f} s projected for {args.records}")
        assert one["records"] == args.sample


if __name__ == "__main__":
    main()
