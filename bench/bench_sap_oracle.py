"""Bench: SAP S/4HANA Cloud and Oracle Fusion connectors against their sandboxes (real HTTP on loopback).

Prints, per path: journals posted per second, API calls per 10,000 journals, the idempotent re-post and read-back
cost; for the posting flow on a generated firm, API calls per 10,000 approved time entries; and with a rate limit
on (sandbox window + client pacer at the same rate): achieved request rate / allowed rate and the 429 share.

    .venv/bin/python bench/bench_sap_oracle.py [--journals 2000] [--lines 4] [--rate 40]

No asserts; default run well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.connectors.oracle_fusion import ChartSpec, OracleFusionClient, OracleFusionLedger
from ledgerbridge.connectors.sap_s4 import SapS4Client, SapS4Ledger
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import oracle_fusion as ora_sb
from ledgerbridge.testing.sandboxes import sap_s4 as sap_sb

ACCOUNTS = ["5000", "2100", "1200", "4000"]


def journals(n: int, lines: int, prefix: str) -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        half = lines // 2
        ls = [JournalLine(line_no=k + 1, account=ACCOUNTS[2 * (k % 2)], debit=amt, currency="USD")
              for k in range(half)]
        ls += [JournalLine(line_no=half + k + 1, account=ACCOUNTS[1 + 2 * (k % 2)], credit=amt, currency="USD")
               for k in range(half)]
        out.append(JournalEntry(id=f"{prefix}-{i:06d}", legal_entity_id="US01", period="2026-09",
                                entry_date=dt.date(2026, 9, 1 + i % 28), journal_type=JournalType.LABOR_COST,
                                lines=tuple(ls)))
    return out


def run_target(name: str, ledger: Any, calls: Any, js: list[JournalEntry], chunk: int) -> None:
    t0 = time.perf_counter()
    posted = 0
    for start in range(0, len(js), chunk):
        res = ledger.post_journals(PostingBatch(f"bench-{start}", "US01", "2026-09", js[start:start + chunk]))
        posted += sum(r.status is PostStatus.POSTED for r in res)
    took = time.perf_counter() - t0
    first = len(calls.calls)
    t1 = time.perf_counter()
    for start in range(0, len(js), chunk):
        ledger.post_journals(PostingBatch(f"bench-{start}", "US01", "2026-09", js[start:start + chunk]))
    again = time.perf_counter() - t1
    repost_calls = len(calls.calls) - first
    t2 = time.perf_counter()
    held = ledger.read_back([j.id for j in js])
    rb = time.perf_counter() - t2
    per10k = 10_000 / len(js)
    print(f"{name:<22} {posted:>6} posted  {posted / took:8.1f} journals/s  {first * per10k:8.0f} calls/10k journals"
          f"  re-post {again:5.2f} s ({repost_calls * per10k:5.0f} calls/10k)  read-back {len(held)} in {rb:5.2f} s")


def bench_connectors(n: int, lines: int) -> None:
    print(f"-- connectors: {n} journals of {lines} lines, posted in runs of 500")
    app = sap_sb.create_app(async_delay=0)
    with serve_in_thread(app) as url:
        client = SapS4Client(url, user="COMM_USER_LB", password="Welcome1!",
                             confirmation_url=f"{url}/confirmation-inbox")
        led = SapS4Ledger(client, legal_entity_id="US01", company_code="1710", account_map=sap_sb.DEMO_ACCOUNT_MAP,
                          batch_size=50)
        run_target("SAP sync SOAP (50/msg)", led, app.state.calls, journals(n, lines, "S"), 500)
        led.mode = "async"
        led.poll_interval = 0.01
        app.state.calls.clear()
        run_target("SAP bulk async (50/msg)", led, app.state.calls, journals(n, lines, "A"), 500)
    app = ora_sb.create_app(polls_to_finish=2)
    with serve_in_thread(app) as url:
        ora = OracleFusionLedger(OracleFusionClient(url, user="LB_INTEGRATION", password="Welcome1!"),
                                 legal_entity_id="US01", ledger_id="300000001",
                                 chart=ChartSpec("101", ora_sb.DEMO_ACCOUNT_MAP), data_access_set="300000100",
                                 poll_interval=0.01)
        run_target("Oracle FBDI (500/file)", ora, app.state.calls, journals(n, lines, "O"), 500)


def bench_rate(rate: int, n: int) -> None:
    print(f"-- rate limit: sandbox {rate} req/s (1 s window); one SOAP call per journal")
    for headroom in (1.0, 0.8):
        app = sap_sb.create_app(rate_limit=rate, rate_window=1.0)
        with serve_in_thread(app) as url:
            pacer = Pacer(rate, 1.0, headroom=headroom)
            client = SapS4Client(url, user="COMM_USER_LB", password="Welcome1!", pacer=pacer)
            led = SapS4Ledger(client, legal_entity_id="US01", company_code="1710",
                              account_map=sap_sb.DEMO_ACCOUNT_MAP, batch_size=1)
            t0 = time.perf_counter()
            led.post_journals(PostingBatch("rate", "US01", "2026-09", journals(n, 2, "R")))
            took = time.perf_counter() - t0
            stats = app.state.limits.stats()
            total = stats["accepted"] + stats["refused"]
            print(f"SAP, client pacer at {headroom:.0%} of the limit: {total} requests in {took:.1f} s = "
                  f"{total / took:.1f} req/s; achieved/allowed {total / took / rate:.2f}; 429 share "
                  f"{stats['refused_share']:.3f}")


def bench_flow() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.main_job import SOURCE
    from sap_oracle_flow_support import erp_ctx

    from flows_support import records

    print("-- posting flow, generated firm (6 employees, 2 months), US01 both months")
    os.environ["LB_BENCH_SECRET"] = "Welcome1!"
    for label, create, connector, opts in (
            ("SAP S/4HANA", sap_sb.create_app, "sap_s4",
             {"company_code": "1710", "user": "COMM_USER_LB", "account_map": sap_sb.DEMO_ACCOUNT_MAP}),
            ("Oracle Fusion", lambda: ora_sb.create_app(polls_to_finish=2), "oracle_fusion",
             {"ledger_id": "300000001", "data_access_set": "300000100", "company_segment": "101",
              "user": "LB_INTEGRATION", "account_map": ora_sb.DEMO_ACCOUNT_MAP, "poll_interval": 0.01})):
        app = create()
        with serve_in_thread(app) as url, tempfile.TemporaryDirectory() as tmp:
            ctx = erp_ctx(Path(tmp), "erp", connector, {"url": url, "legal_entity_id": "US01", **opts},
                          {"password": "LB_BENCH_SECRET"})
            recs = records(ctx)
            projects = ctx.reference.projects
            approved = sum(1 for r in recs if r["entity"] == "time_entry"
                           and r["payload"].get("approval_status") == "approved"
                           and getattr(projects.get(r["payload"]["project_id"]), "legal_entity_id", "") == "US01")
            transactions.land(ctx, SOURCE, recs)
            transactions.process_pending(ctx)
            t0 = time.perf_counter()
            outs = [posting.post_period(ctx, "US01", p) for p in ("2026-09", "2026-10")]
            took = time.perf_counter() - t0
            calls = len(app.state.calls.calls)
            posted = sum(o.journals for o in outs)
            print(f"{label:<14} {posted} journals ({sum(o.staged_lines for o in outs)} staged lines) in {took:.2f} s,"
                  f" {calls} API calls; {approved} approved US01 time-entry versions -> "
                  f"{calls * 10_000 / max(approved, 1):.0f} calls per 10k")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journals", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=4)
    ap.add_argument("--rate", type=int, default=40)
    args = ap.parse_args()
    bench_connectors(args.journals, args.lines)
    bench_rate(args.rate, args.rate * 4)
    bench_flow()


if __name__ == "__main__":
    main()
