"""Tryton posting throughput against a real Tryton 8.2 (PostgreSQL): moves posted per second with batched calls,
RPC calls per 1,000 journals, an idempotent re-post and a read-back, and a small unbatched run for comparison.

    .venv/bin/python bench/bench_tryton.py [--journals 1000] [--batch 150] [--backend postgresql]

Installs Tryton and builds the template database on first use (scripts/tryton template), copies it, starts a
server on a free port, and drops the copy at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from decimal import Decimal

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.connectors.tryton.connector import TrytonLedger
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing import tryton_server as ts


def journals(n: int, prefix: str, period: str = "2026-03") -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        out.append(JournalEntry(
            id=f"{prefix}-{i:05d}", legal_entity_id="US01", period=period, entry_date=dt.date(2026, 3, 1 + i % 28),
            journal_type=JournalType.LABOR_COST, description=f"labor {i}",
            lines=(JournalLine(line_no=1, account="5000", debit=amt, currency="USD"),
                   JournalLine(line_no=2, account="2100", credit=amt, currency="USD"))))
    return out


def run(client: TrytonClient, n: int, batch: int, label: str, post_batch: int | None = None) -> None:
    ledger = TrytonLedger(client, legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP, batch_size=batch,
                          post_batch_size=post_batch)
    ledger.chart()  # resolve accounts/journals once (not part of the per-run cost)
    js = journals(n, f"{label}-{uuid.uuid4().hex[:6]}")
    batch_run = PostingBatch(run_id=f"bench-{label}", legal_entity_id="US01", period="2026-03", journals=js)
    calls0 = client.stats.calls
    client.stats.seconds_by_method.clear()
    t0 = time.perf_counter()
    res = ledger.post_journals(batch_run)
    took = time.perf_counter() - t0
    calls = client.stats.calls - calls0
    ok = sum(r.status is PostStatus.POSTED for r in res)
    print(f"[{label}] batch {batch}, post batch {ledger.post_batch_size}: posted {ok}/{n} moves in {took:.2f} s "
          f"= {ok / took:.0f} moves/s; "
          f"{calls} RPC calls = {calls * 1000 / n:.0f} per 1,000 journals")
    spent = sorted(client.stats.seconds_by_method.items(), key=lambda kv: -kv[1])[:4]
    print(f"[{label}]   server time by method: " + ", ".join(f"{m.removeprefix('model.')} {s:.1f} s" for m, s in spent))
    if ok != n:
        raise SystemExit(f"only {ok} of {n} posted: {[r.error for r in res if r.error][:3]}")
    calls0 = client.stats.calls
    t0 = time.perf_counter()
    again = ledger.post_journals(batch_run)
    took = time.perf_counter() - t0
    assert all(r.status is PostStatus.POSTED for r in again)
    print(f"[{label}] idempotent re-post (lookup only, nothing created): {took:.2f} s, "
          f"{client.stats.calls - calls0} RPC calls")
    calls0 = client.stats.calls
    t0 = time.perf_counter()
    held = ledger.read_back([j.id for j in js])
    took = time.perf_counter() - t0
    bad = sum(not held[j.id].matches(j) for j in js)
    print(f"[{label}] read_back {len(held)} journals in {took:.2f} s ({client.stats.calls - calls0} RPC calls), "
          f"{bad} mismatches")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--journals", type=int, default=1000)
    p.add_argument("--batch", type=int, default=150)
    p.add_argument("--post-batch", type=int, action="append", help="post call sizes to compare (default: batch)")
    p.add_argument("--unbatched", type=int, default=100, help="journals posted one per call, for comparison")
    p.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    a = p.parse_args()
    t0 = time.perf_counter()
    ts.install()
    template = ts.ensure_template(a.backend)
    name = f"lb_tryton_bench_{uuid.uuid4().hex[:8]}"
    ts.copy_db(template, name, a.backend)
    print(f"install + template + copy: {time.perf_counter() - t0:.1f} s")
    try:
        with ts.TrytonServer(name, a.backend) as server:
            s = server.settings()
            with TrytonClient(s.url, s.database, s.user, s.password) as client:
                for pb in a.post_batch or [a.batch]:
                    run(client, a.journals, a.batch, f"batched-post{pb}", pb)
                if a.unbatched:
                    run(client, a.unbatched, 1, "one-per-call")
    finally:
        ts.drop_db(name, a.backend)


if __name__ == "__main__":
    main()
