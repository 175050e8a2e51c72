"""NetSuite connector figures against the NetSuite sandbox (SuiteTalk REST over real loopback HTTP, the account's
concurrency pool on, a per-request latency standing in for NetSuite's server time):

1. the sample firm through the real flows (approved time entries -> staging -> one posting run per entity and
   month into NetSuite): journal entries posted per second and API calls per 10,000 approved time entries;
2. raw posting throughput: N two-line journals with the client's concurrency equal to the pool — journals/s, API
   calls per journal, peak in flight and utilisation of the pool (busy slot-seconds / (pool x elapsed));
3. a noisy neighbour: the same client configured for twice the pool (another integration took the rest) —
   share of requests refused (429), where the adaptive share settled, and that nothing was posted twice.

    .venv/bin/python bench/bench_netsuite.py [--journals 600] [--pool 5] [--latency 0.05] [--employees 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.netsuite import NetSuiteLedger
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.netsuite import create_app

SUBS = {"US01": 1, "UK01": 2, "DE01": 3}


def options(base: str, concurrency: int) -> dict:
    return {"account_id": "TSTDRV2100000", "base_url": base, "client_id": "lb-sandbox-client",
            "certificate_id": "lb-sandbox-cert", "algorithm": "ES256", "subsidiaries": SUBS,
            "concurrency": concurrency, "limit_wait_seconds": 0.1,
            "item_map": {"4900": "PS-BILL", "4300": "PS-EXP"},
            "tax_map": {"US-EXEMPT": 1, "UK-VAT20": 2, "DE-VAT19": 3}}


def journals(n: int, prefix: str) -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        out.append(JournalEntry(
            id=f"{prefix}-{i:05d}", legal_entity_id="US01", period="2026-03", entry_date=dt.date(2026, 3, 1 + i % 28),
            journal_type=JournalType.LABOR_COST, description=f"labor {i}",
            lines=(JournalLine(line_no=1, account="5000", debit=amt, currency="USD"),
                   JournalLine(line_no=2, account="2100", credit=amt, currency="USD"))))
    return out


def flow_figures(employees: int, pool: int, latency: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.main_job import SOURCE
    from netsuite_support import wire

    from flows_support import make_ctx, records, tiny_firm

    app = create_app(concurrency=pool, latency=latency)
    with serve_in_thread(app) as base, tempfile.TemporaryDirectory() as tmp:
        firm = tiny_firm(Path(tmp) / "firm", employees=employees, months=1, seed=3)
        ctx = make_ctx(Path(tmp) / "w", export_from=firm, failure_mode="line_level")
        wire(ctx, app.state.demo_private_key, base, entities=tuple(SUBS), concurrency=pool, limit_wait_seconds=0.1)
        target = ctx.connector("erp_ns")
        target.push_customers(list(ctx.reference.customers.values()))
        target.push_projects(list(ctx.reference.projects.values()))
        recs = records(ctx)
        approved = sum(1 for r in recs if r["entity"] == "time_entry"
                       and r["payload"].get("approval_status") == "approved")
        transactions.land(ctx, SOURCE, recs)
        transactions.process_pending(ctx)
        calls0 = target.client.calls
        t0 = time.perf_counter()
        posted = 0
        for entity in sorted(SUBS):
            out = posting.post_period(ctx, entity, "2026-09")
            posted += out.journals
        took = time.perf_counter() - t0
        calls = target.client.calls - calls0
        docs = app.state.store.count("journalentry")
        print(f"[flow] sample firm, {employees} employees, Sep 2026: {approved} approved time entries -> {posted} "
              f"journals ({docs} NetSuite journal entries, one per currency) in {took:.2f} s = "
              f"{docs / took:.1f} entries/s; {calls} API calls = {calls * 10_000 / max(approved, 1):.0f} per 10k "
              "approved time entries (summarised journals: a few entries per entity and month)")


def throughput(n: int, pool: int, latency: float) -> None:
    app = create_app(concurrency=pool, latency=latency)
    with serve_in_thread(app) as base:
        for label, conc in (("own share", pool), ("noisy neighbour", 2 * pool)):
            lim = app.state.limits
            lim.accepted = lim.refused = lim.refused_concurrency = lim.peak_in_flight = 0
            led = NetSuiteLedger.from_options("bench_ns", options(base, conc),
                                              {"private_key": app.state.demo_private_key}.__getitem__)
            led.setup()
            led.periods()
            calls0 = led.client.calls
            t0 = time.perf_counter()
            res = led.post_journals(PostingBatch(f"bench-{conc}", "US01", "2026-03", journals(n, f"B{conc}")))
            took = time.perf_counter() - t0
            ok = sum(r.status is PostStatus.POSTED for r in res)
            s = lim.stats()
            busy = s["accepted"] * latency
            print(f"[{label}] client concurrency {conc}, pool {pool}, latency {latency * 1000:.0f} ms: {ok}/{n} "
                  f"journals in {took:.2f} s = {ok / took:.1f} journals/s; {led.client.calls - calls0} API calls "
                  f"({(led.client.calls - calls0) / n:.2f} per journal); peak in flight {s['peak_in_flight']}/{pool}, "
                  f"utilisation {busy / (pool * took):.0%}; refused {s['refused']} of "
                  f"{s['accepted'] + s['refused']} ({s['refused_share']:.1%}); adaptive share settled at "
                  f"{led.client.pacer.share}")
            calls0 = led.client.calls
            t0 = time.perf_counter()
            again = led.post_journals(PostingBatch(f"bench-{conc}", "US01", "2026-03", journals(n, f"B{conc}")))
            assert all(r.status is PostStatus.POSTED for r in again)
            print(f"[{label}]   re-post of the same {n}: {time.perf_counter() - t0:.2f} s, "
                  f"{led.client.calls - calls0} API calls, nothing written twice")
        eids = app.state.store.external_ids("journalentry")
        assert max(Counter(eids).values()) == 1 and len(eids) == 2 * n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--journals", type=int, default=600)
    ap.add_argument("--pool", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--employees", type=int, default=40)
    a = ap.parse_args()
    flow_figures(a.employees, a.pool, a.latency)
    throughput(a.journals, a.pool, a.latency)


if __name__ == "__main__":
    main()
