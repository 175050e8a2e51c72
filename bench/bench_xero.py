"""Xero connector against the Xero sandbox with its limits on: manual journals posted per second, API calls per
10,000 approved time entries (the sample firm's month through the real posting flow), and the limits — achieved
request rate against the allowed rate and the share of 429 answers, with the client's pacing and without it.

    .venv/bin/python bench/bench_xero.py [--journals 500] [--window 2] [--employees 30]

Xero allows 60 calls per minute, 5 in flight and 5,000 per day per organisation. The sandbox enforces the same
counts over a shorter window (``--window`` seconds instead of 60) so a run stays short; rates are reported per
window and as the equivalent per minute. No asserts: figures only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.connectors.xero import XeroLedger
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import xero as sandbox


def opts(base: str, window: float, **extra: object) -> dict[str, object]:
    return {"client_id": sandbox.CLIENT_ID, "legal_entity_id": "US01", "api_url": f"{base}/api.xro/2.0",
            "token_url": f"{base}/connect/token", "connections_url": f"{base}/connections",
            "calls_per_minute": 60, "window_seconds": window, "tax_map": {"US-EXEMPT": "NONE"}, **extra}


def journals(n: int) -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        out.append(JournalEntry(
            id=f"BENCH-{i:05d}", legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 1 + i % 28),
            journal_type=JournalType.LABOR_COST, description=f"labor {i}",
            lines=(JournalLine(line_no=1, account="5000", debit=amt, currency="USD",
                               dimensions={"project": f"P-{i % 7}"}),
                   JournalLine(line_no=2, account="2100", credit=amt, currency="USD",
                               dimensions={"project": f"P-{i % 7}"}))))
    return out


def bench_posting(n: int, window: float) -> None:
    app = sandbox.create_app(window=window)
    with serve_in_thread(app) as base:
        led = XeroLedger.from_options(opts(base, window), client_secret=sandbox.CLIENT_SECRET)
        led.chart()
        calls0 = app.state.calls.count(path_prefix="/api.xro")
        js = journals(n)
        t0 = time.perf_counter()
        res = led.post_journals(PostingBatch("bench", "US01", "2026-09", js))
        took = time.perf_counter() - t0
        ok = sum(r.status is PostStatus.POSTED for r in res)
        calls = app.state.calls.count(path_prefix="/api.xro") - calls0
        print(f"[post] {ok}/{n} manual journals in {took:.2f} s = {ok / took:.0f} journals/s with batches of 50; "
              f"{calls} API calls ({calls * 1000 / n:.0f} per 1,000 journals; 429s: "
              f"{app.state.calls.count(status=429)})")
        t0 = time.perf_counter()
        calls0 = app.state.calls.count(path_prefix="/api.xro")
        again = led.post_journals(PostingBatch("bench-2", "US01", "2026-09", js))
        print(f"[post] re-post of the same {n}: {sum(r.status is PostStatus.POSTED for r in again)} reported posted, "
              f"{len(app.state.store.manual_journals)} held, {app.state.calls.count(path_prefix='/api.xro') - calls0} "
              f"API calls, {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        held = led.read_back([j.id for j in js])
        print(f"[post] read back {len(held)} journals in {time.perf_counter() - t0:.2f} s")
        print(f"[post] at Xero's real 60 calls/min: {n} journals = {calls} calls = {calls / 60:.2f} min of the "
              f"minute allowance; the ceiling is 60 x 50 = 3,000 journals/min (50/s) per organisation")


def bench_flow(employees: int, window: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import os

    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.main_job import SOURCE
    from xero_support import seed_chart, wire

    from flows_support import make_ctx, records, tiny_firm

    os.environ["LB_XERO_CLIENT_SECRET"] = sandbox.CLIENT_SECRET
    app = sandbox.create_app(window=window)
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(app) as base:
        firm = tiny_firm(Path(tmp) / "firm", employees=employees, months=1, seed=11)
        ctx = make_ctx(Path(tmp) / "w", export_from=firm, failure_mode="line_level")
        seed_chart(app.state.store, ctx.reference.accounts)
        wire(ctx, base, calls_per_minute=60, window_seconds=window)
        recs = records(ctx)
        entries = sum(1 for r in recs if r.get("entity") == "time_entry")
        transactions.land(ctx, SOURCE, recs)
        transactions.process_pending(ctx)
        app.state.calls.clear()
        t0 = time.perf_counter()
        out = posting.post_period(ctx, "US01", "2026-09")
        took = time.perf_counter() - t0
        calls = app.state.calls.count(path_prefix="/api.xro") + app.state.calls.count(path_prefix="/connections")
        projects = ctx.reference.projects
        us = sum(1 for r in recs if r.get("entity") == "time_entry" and getattr(
            projects.get((r.get("payload") or {}).get("project_id", "")), "legal_entity_id", None) == "US01")
        print(f"[flow] sample firm ({employees} employees, 1 month, {entries} time-entry versions, {us} of them "
              f"US01): US01 run {out.status}, {out.journals} journals / {out.journal_lines} lines in {took:.2f} s, "
              f"{calls} API calls "
              f"(incl. the first organisation/chart/tracking reads) = {calls * 10000 / max(us, 1):.0f} calls per "
              f"10,000 time entries")


def bench_limits(window: float, threads: int, per_thread: int) -> None:
    for label, paced in (("paced", True), ("unpaced", False)):
        app = sandbox.create_app(window=window)
        with serve_in_thread(app) as base:
            led = XeroLedger.from_options(opts(base, window), client_secret=sandbox.CLIENT_SECRET)
            client = led.client
            client.tenant()
            if not paced:  # a client that knows neither the minute limit nor the concurrency cap
                client.pacer = Pacer(10000, window, concurrency=None)
            app.state.calls.clear()
            done = [0]
            lock = threading.Lock()

            def worker(c=client, d=done, lk=lock) -> None:
                for _ in range(per_thread):
                    try:
                        c.get("Organisation")
                        with lk:
                            d[0] += 1
                    except Exception as exc:  # a figure, not a failure
                        print(f"[limits] {exc}")

            t0 = time.perf_counter()
            ts = [threading.Thread(target=worker) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            took = time.perf_counter() - t0
            total = app.state.calls.count(path_prefix="/api.xro")
            refused = app.state.calls.count(path_prefix="/api.xro", status=429)
            rate = done[0] / took * window
            allowance = 60 * (took / window + 1)  # a sliding window allows one full window at once, then 60 each
            stats = app.state.limits["minute"].stats()
            print(f"[limits] {label}: {done[0]} calls done in {took:.2f} s = {rate:.1f} per {window:g} s window on "
                  f"average (60 allowed); {done[0] / allowance:.0%} of the allowance of that time used; "
                  f"{refused} x 429 of {total} requests ({refused / total:.1%}); peak in flight "
                  f"{stats['peak_in_flight']} of 5; pacer waits {client.pacer.waited:.1f} s, pauses "
                  f"{client.pacer.pauses}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journals", type=int, default=500)
    ap.add_argument("--window", type=float, default=2.0, help="seconds standing in for Xero's 60-second window")
    ap.add_argument("--employees", type=int, default=30)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls", type=int, default=25, help="calls per thread in the limits bench")
    args = ap.parse_args()
    bench_posting(args.journals, args.window)
    bench_flow(args.employees, args.window)
    bench_limits(args.window, args.threads, args.calls)


if __name__ == "__main__":
    main()
