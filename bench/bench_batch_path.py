"""Benchmark: the batch path (PSA export file -> inbox -> approvals -> costing -> staging -> summarized, validated
journals) next to raw SQLite ``executemany`` of the same rows in the same run, and the per-event path
(one durable workflow per event) in workflows/s.

    .venv/bin/python bench/bench_batch_path.py [--employees 800] [--months 3] [--events 300]

Figures printed: source versions/s through land + process (one transaction per 5,000-row batch), posting
(summarize + validate, no ledger write) entries/s, the whole file -> staged journals path entries/s, the raw
``sqlite3.executemany`` of the same time-entry rows (the physical limit of writing them at all) and the ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from ledgerbridge import runtime as rt
from ledgerbridge.domain.posting import converter_from_table, summarize
from ledgerbridge.domain.validation import ValidationContext, validate_journals
from ledgerbridge.flows import transactions
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.samplefirm import generate_firm
from ledgerbridge.store import staging


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_sqlite(export: Path, db: Path) -> tuple[int, float, float]:
    """The same time-entry rows written with the stdlib driver in one executemany (WAL, synchronous=NORMAL)."""
    with (export / "time_entries.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(f"CREATE TABLE t ({', '.join(h + ' TEXT' for h in header)})")
    c, t = time.process_time(), time.perf_counter()
    with con:
        con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in header)})", body)
    dt_, dc = time.perf_counter() - t, time.process_time() - c
    con.close()
    return len(body), dt_, dc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--employees", type=int, default=800)
    ap.add_argument("--months", type=int, default=3)
    ap.add_argument("--events", type=int, default=300, help="events for the per-event workflow figure")
    ap.add_argument("--inbox-item-index", action="store_true",
                    help="experiment: add an index inbox(system, entity, external_id) before the run (not in the "
                         "schema: the history read then seeks instead of scanning the inbox once per batch)")
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        generate_firm(wd / "psa-export", seed=1, employees=args.employees, months=args.months, start="2026-09")
        ctx = FlowContext(demo_config(wd), workdir=wd)
        ctx.migrate()
        load_reference(ctx, SOURCE)
        if args.inbox_item_index:
            with ctx.engine.begin() as conn:
                conn.exec_driver_sql("CREATE INDEX bench_inbox_item ON inbox (system, entity, external_id)")
        errors: list = []
        c0, t0 = time.process_time(), time.perf_counter()
        landed = transactions.land(ctx, SOURCE, ctx.connector(SOURCE).read_records(errors), batch_size=args.batch_size)
        c1, t1 = time.process_time(), time.perf_counter()
        processed = transactions.process_pending(ctx, batch_size=args.batch_size)
        c2, t2 = time.process_time(), time.perf_counter()
        with ctx.engine.connect() as conn:
            lines = staging.list_lines(conn, status="staged")
            book = ctx.period_book(conn)
        summary = summarize((ln.posting for ln in lines), ctx.rules, book.placer(ctx.late_policy("US01")),
                            functional_currencies=ctx.reference.functional_currencies,
                            converter=converter_from_table(ctx.reference.fx, ctx.rate_date_policy()))
        vctx = ValidationContext.build(accounts=ctx.reference.accounts, dimension_values=ctx.reference.dimensions,
                                       periods=book, currencies={e: ctx.reference.currencies
                                                                 for e in ctx.reference.entities},
                                       functional_currencies=ctx.reference.functional_currencies)
        violations = validate_journals(summary.journals, vctx)
        c3, t3 = time.process_time(), time.perf_counter()
        n = landed.received
        raw_n, raw_s, raw_c = raw_sqlite(wd / "psa-export", wd / "raw.sqlite")
        path_s = t3 - t0
        print(f"batch path, {n:,} source versions ({raw_n:,} time-entry rows + expenses), "
              f"{args.employees} employees x {args.months} months, {args.batch_size:,}/txn"
              f"{', inbox item index (experiment)' if args.inbox_item_index else ''}")
        print("  wall-clock rate (CPU seconds of this process in brackets: what the code costs on a loaded machine)")
        print(f"  land (read file + inbox)               {n / (t1 - t0):>12,.0f} versions/s  ({t1 - t0:.2f} s, "
              f"cpu {c1 - c0:.2f} s = {n / (c1 - c0):,.0f}/cpu-s)")
        print(f"  process (approvals+costing+staging)   {n / (t2 - t1):>12,.0f} versions/s  ({t2 - t1:.2f} s, "
              f"cpu {c2 - c1:.2f} s = {n / (c2 - c1):,.0f}/cpu-s, {processed.staged_lines:,} staged lines)")
        print(f"  read staged + summarize + validate    {len(lines) / (t3 - t2):>12,.0f} lines/s     "
              f"({t3 - t2:.2f} s, cpu {c3 - c2:.2f} s, {len(summary.journals)} journals, {len(violations)} violations)")
        print(f"  file -> staged journals                {n / path_s:>12,.0f} versions/s  ({path_s:.2f} s, "
              f"cpu {c3 - c0:.2f} s = {n / (c3 - c0):,.0f}/cpu-s)")
        print(f"  raw sqlite3 executemany, same rows     {raw_n / raw_s:>12,.0f} rows/s      ({raw_s:.2f} s, "
              f"cpu {raw_c:.2f} s)")
        print(f"  ratio (path / raw)                     {(n / path_s) / (raw_n / raw_s):>12.3f}      "
              f"(cpu: {(n / (c3 - c0)) / (raw_n / raw_c):.3f})")
        print(f"  peak RSS                               {rss_mib():>12,.0f} MiB")

        # per-event path: one durable workflow per event (land one + process one), DBOS on SQLite WAL
        ev = ctx.connector(SOURCE)
        set_current(ctx)
        rt.Runtime.launch(rt.RuntimeSettings(system_database_url=f"sqlite:///{wd / 'dbos.sqlite'}",
                                             log_level="WARNING", queue_polling_interval_sec=0.01),
                          queues=[rt.QueueSpec("events", concurrency=1)])
        try:
            recs = [r for _, r in zip(range(args.events), ev.read_records(errors), strict=False)]
            with ctx.engine.begin() as conn:  # forget them so the per-event path does real work
                from ledgerbridge.store.schema import inbox as inbox_t

                conn.execute(inbox_t.delete().where(inbox_t.c.external_id.in_([r["external_id"] for r in recs])))
            t = time.perf_counter()
            # through a queue: one embedded SQLite store takes one writer at a time
            ids = [rt.enqueue("events", _per_event, r,
                              workflow_id=f"ev:{r['entity']}:{r['external_id']}:{r['version']}") for r in recs]
            for i in ids:
                rt.result(i)
            s = time.perf_counter() - t
        finally:
            rt.Runtime.shutdown()
            set_current(None)
        print(f"per-event path, {len(recs)} events     {len(recs) / s:>12,.1f} workflows/s ({s:.2f} s)")
    return 0


@rt.step("bench.land_one")
def _land_one(rec: dict) -> int:
    from ledgerbridge.flows.context import current

    return transactions.land(current(), SOURCE, [rec]).new


@rt.step("bench.process_one")
def _process_one() -> int:
    from ledgerbridge.flows.context import current

    return transactions.process_pending(current(), batch_size=50, max_batches=1).rows


@rt.workflow("bench.per_event")
def _per_event(rec: dict) -> int:
    _land_one(rec)
    return _process_one()


if __name__ == "__main__":
    sys.exit(main())
