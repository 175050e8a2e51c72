"""Tryton through the real flows: API calls per 10k approved time entries, and moves/invoices per second.

    .venv/bin/python bench/bench_tryton_flow.py [--employees 40] [--months 1]

Starts a live Tryton on a fresh copy of the template database (PostgreSQL, as in CI), generates the sample firm,
routes US01's ledger and invoices to Tryton by configuration, then runs the transactional flow, the posting run of
each month and the billing run, counting every JSON-RPC call the connector makes (the client's own counter). Prints
approved time entries, journals and invoices, RPC calls per 10,000 approved entries for posting and for billing,
and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP, ensure_currency
from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.testing.tryton_server import live_tryton

from flows_support import make_ctx, records, tiny_firm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--employees", type=int, default=40)
    ap.add_argument("--months", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lb-bench-tryton-flow-"))
    export = tiny_firm(tmp / "firm", employees=args.employees, months=args.months, seed=11)
    with live_tryton("postgresql") as tryton:
        os.environ["LB_TRYTON_PASSWORD"] = tryton.password
        ctx = make_ctx(tmp / "w", export_from=export, failure_mode="line_level")
        erp = SystemConfig(connector="tryton", role="erp",
                           secrets={"password": SecretRef("${env:LB_TRYTON_PASSWORD}")},
                           options={"url": tryton.url, "database": tryton.database, "user": tryton.user,
                                    "legal_entity_id": "US01", "account_map": dict(UNIVERSAL_CHART_MAP)})
        routing = ctx.config.routing.model_copy(update={"by_entity": {
            "US01": RouteTargets(ledger="erp_us", invoices="erp_us")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp_us": erp},
                                                   "routing": routing})
        ctx.reset_connectors()
        target = ctx.connector("erp_us")
        for code in sorted(set(ctx.reference.currencies) - {"USD"}):
            ensure_currency(target.client, code)
        target.push_customers(c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")

        recs = records(ctx)
        approved = sum(1 for r in recs if r["entity"] == "time_entry"
                       and r["payload"].get("approval_status") == "approved"
                       and r["payload"].get("project_id", "").startswith("P")
                       and (ctx.reference.projects.get(r["payload"]["project_id"]) is not None
                            and ctx.reference.projects[r["payload"]["project_id"]].legal_entity_id == "US01"))
        transactions.land(ctx, SOURCE, recs)
        transactions.process_pending(ctx)
        periods = sorted({str(r["payload"]["work_date"])[:7] for r in recs if r["entity"] == "time_entry"})
        stats = target.client.stats
        c0, t0, journals = stats.calls, time.perf_counter(), 0
        for period in periods:
            out = posting.post_period(ctx, "US01", period)
            journals += out.journals
        post_s, post_calls = time.perf_counter() - t0, stats.calls - c0
        c1, t1, invoices = stats.calls, time.perf_counter(), 0
        for period in periods:
            res = billing.run_billing(ctx, period, "US01")
            invoices += len(res["create"]["created"])
        bill_s, bill_calls = time.perf_counter() - t1, stats.calls - c1
        c2, t2 = stats.calls, time.perf_counter()
        relief = sum(posting.post_period(ctx, "US01", p).journals for p in periods)
        relief_s, relief_calls = time.perf_counter() - t2, stats.calls - c2
    per10k = 10_000 / max(approved, 1)
    print(f"US01 approved time entries: {approved:,} over {len(periods)} period(s)")
    print(f"posting: {journals} journals in {post_s:.1f} s ({journals / post_s:.1f} moves/s), {post_calls} RPC calls "
          f"= {post_calls * per10k:,.0f} per 10k approved entries")
    print(f"billing: {invoices} invoices created and posted in {bill_s:.1f} s ({invoices / max(bill_s, 1e-9):.1f}/s),"
          f" {bill_calls} RPC calls = {bill_calls * per10k:,.0f} per 10k approved entries")
    print(f"relief posting: {relief} journals in {relief_s:.1f} s, {relief_calls} RPC calls")
    print(f"total RPC calls per 10k approved entries: {(post_calls + bill_calls + relief_calls) * per10k:,.0f}")


if __name__ == "__main__":
    main()
