"""Benchmark the Kantata OX connector against its sandbox (real HTTP on loopback, limits on).

    .venv/bin/python bench/bench_kantata.py                      # 10,000 approved time entries
    .venv/bin/python bench/bench_kantata.py --entries 2000 --rate-limit 30 --rate-window 1

Figures printed:
- first (full) sync of N approved time entries: records per second, API calls, API calls per 10k approved entries;
- incremental sync after editing 1% of them (events feed + fetch by id) and with the window re-scan on;
- write-back: external references written per second (first run) and the calls of an idempotent re-run;
- rate limit (sandbox: ``--rate-limit`` requests per ``--rate-window`` s, 429 without Retry-After): achieved request
  rate / allowed rate and the 429 share, without client pacing and with the client Pacer set to 80% of the limit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.kantata import Credentials, KantataSource
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.kantata import create_app


def source(base: str, **options: Any) -> KantataSource:
    opts = {"url": f"{base}/api/v1", "rate_limit_wait_seconds": 0.2, "rescan_every": 0, **options}
    return KantataSource.from_options("bench_kt", opts, Credentials("demo-client", "demo-secret", "demo-refresh"))


def seed(store: Any, n: int) -> tuple[str, list[str]]:
    """N approved entries, created and approved two hours ago (so they are history, not recent events)."""
    store.freeze(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    ws = store.add_workspace("Bench", currency="USD")
    users = [store.add_user(f"User {i}") for i in range(20)]
    ids = [store.add_time_entry(ws, users[i % 20], f"2026-11-{1 + i % 28:02d}", 30 + i % 450) for i in range(n)]
    for start in range(0, n, 500):
        store.approve(store.submit(ids[start:start + 500]))
    store.unfreeze()
    return ws, ids


def calls(app: Any, status: int | None = None) -> int:
    return int(app.state.calls.count(path_prefix="/api/v1", status=status))


def sync_figures(n: int) -> None:
    app = create_app()
    store = app.state.store
    t = time.perf_counter()
    ws, ids = seed(store, n)
    print(f"seeded {n} approved time entries in {time.perf_counter() - t:.1f} s")
    with serve_in_thread(app) as base:
        src = source(base)
        t = time.perf_counter()
        first = src.sync(None)
        secs = time.perf_counter() - t
        c = calls(app)
        print(f"full sync: {len(first.records())} records in {secs:.2f} s = {len(first.records()) / secs:.0f} "
              f"records/s; {c} API calls = {c * 10_000 / n:.0f} calls per 10k approved entries; cursor "
              f"{len(json.dumps(first.cursor)) / 1024:.0f} KiB")
        edited = ids[:: max(1, n // (n // 100 or 1))][: max(1, n // 100)]
        for tid in edited:
            store.update_time_entry(tid, notes="edited")
        app.state.calls.clear()
        t = time.perf_counter()
        inc = src.sync(first.cursor)
        print(f"incremental (events) after {len(edited)} edits: {len(inc.records())} records, {calls(app)} API "
              f"calls, {time.perf_counter() - t:.2f} s")
        app.state.calls.clear()
        rescanning = source(base, rescan_every=1, rescan_window_seconds=3600)
        t = time.perf_counter()
        again = rescanning.sync(inc.cursor)
        print(f"incremental with a 1 h window re-scan: {len(again.records())} "
              f"records, {calls(app)} API calls, {time.perf_counter() - t:.2f} s")
        items = tuple((src.system, "time_entry", tid) for tid in ids[:1000])
        update = InvoiceStatusUpdate(key="INV-1", project_id=ws, legal_entity_id="US01",
                                     invoice_date=dt.date(2026, 11, 30), currency="USD", total=Decimal("1"),
                                     erp_system="erp", erp_number="INV-000001", status="posted", items=items)
        app.state.calls.clear()
        t = time.perf_counter()
        src.write_invoice_status([update])
        secs = time.perf_counter() - t
        print(f"write-back: {len(store.rows('external_references'))} external references in {secs:.2f} s = "
              f"{len(items) / secs:.0f} refs/s; {calls(app)} API calls")
        app.state.calls.clear()
        src.write_invoice_status([update])
        print(f"write-back again (idempotent): {calls(app)} API calls, "
              f"{len(store.rows('external_references'))} references held")


def rate_figures(n: int, limit: int, window: float) -> None:
    for label, pacing in (("no client pacing", {}), ("client Pacer at 80%", {"rate_limit": int(limit * 0.8),
                                                                                "rate_window_seconds": window})):
        app = create_app(rate_limit=limit, rate_window=window)
        seed(app.state.store, n)
        with serve_in_thread(app) as base:
            src = source(base, **pacing)
            t = time.perf_counter()
            cursor = src.sync(None).cursor
            while time.perf_counter() - t < 8 * window:
                cursor = src.sync(cursor, full=True).cursor
            secs = time.perf_counter() - t
        ok, refused = calls(app, 200), calls(app, 429)
        allowed = limit / window
        print(f"rate limit {limit}/{window:g}s, {label}: {ok / secs:.1f} req/s answered = "
              f"{ok / secs / allowed:.0%} of the allowed {allowed:.1f} req/s; 429 share "
              f"{refused / max(1, ok + refused):.1%} ({refused} of {ok + refused})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rate-limit", type=int, default=20)
    ap.add_argument("--rate-window", type=float, default=1.0)
    ap.add_argument("--rate-entries", type=int, default=1_000)
    args = ap.parse_args()
    sync_figures(args.entries)
    rate_figures(args.rate_entries, args.rate_limit, args.rate_window)


if __name__ == "__main__":
    main()
