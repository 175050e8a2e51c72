"""Benchmark the Dynamics 365 connector against its sandbox with throttling on.

    .venv/bin/python bench/bench_dynamics365.py                       # defaults: ~30-50 s
    .venv/bin/python bench/bench_dynamics365.py --journals 2000 --limit 40 --window 1

Figures printed:

1. posting throughput: ``--journals`` four-line journals (one changeset each, ``--batch`` per ``$batch``) posted and
   read back by the connector into one company, the sandbox allowing ``--limit`` requests per ``--window`` s and the
   connector pacing itself at 80 % of that: journals/s, API calls per journal, achieved request rate vs the
   allowed rate, the 429 share;
2. the same limit with a connector that does not know it (it learns it from 429 + Retry-After): rate, 429 share;
3. API calls per 10,000 approved time entries: a generated firm (``--employees``, one month) through the real flows
   (land, process, post every legal entity) into the sandbox, without throttling.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.dynamics365 import D365Connector
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.dynamics365 import create_app

TENANT, CLIENT_ID, SECRET = "bench.onmicrosoft.com", "bench-client", "bench-secret"
COMPANIES = {"US01": "usmf", "UK01": "gbsi", "DE01": "demf"}


def app_with(**options: Any) -> Any:
    return create_app(tenant=TENANT, client_id=CLIENT_ID, client_secret=SECRET, delimiter="|",
                      companies="usmf:USD,gbsi:GBP,demf:EUR", default_company="usmf", **options)


def options(base: str, **over: Any) -> dict[str, Any]:
    return {"fo_url": base, "authority": base, "tenant_id": TENANT, "client_id": CLIENT_ID, "companies": COMPANIES,
            "dimensions": ["cost_center", "project"], "delimiter": "|", **over}


def journals(n: int, prefix: str) -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        lines = (JournalLine(line_no=1, account="5000", debit=amt, currency="USD",
                             dimensions={"cost_center": "CC-DEL-US", "project": f"PRJ-{i % 40:05d}"}),
                 JournalLine(line_no=2, account="2100", credit=amt, currency="USD"),
                 JournalLine(line_no=3, account="1200", debit=amt, currency="USD"),
                 JournalLine(line_no=4, account="4000", credit=amt, currency="USD",
                             dimensions={"cost_center": "CC-DEL-US", "project": f"PRJ-{i % 40:05d}"}))
        out.append(JournalEntry(id=f"{prefix}-{i:06d}", legal_entity_id="US01", period="2026-09",
                                entry_date=dt.date(2026, 9, 1 + i % 28), journal_type=JournalType.LABOR_COST,
                                description=f"bench {i}", lines=lines))
    return out


def throttled_run(n: int, batch: int, limit: int, window: float, blind: bool) -> None:
    app = app_with(rate_limit=limit, rate_window=window)
    with serve_in_thread(app) as base:
        paced = {"rate_limit": 1_000_000, "rate_window": 1} if blind else {"rate_limit": limit, "rate_window": window}
        conn = D365Connector.from_options("bench", options(base, batch_journals=batch, **paced), client_secret=SECRET)
        conn.period_status("US01", "2026-09")  # token + warm-up
        app.state.calls.clear()
        app.state.limits.accepted = app.state.limits.refused = 0
        js = journals(n, "BLIND" if blind else "PACED")
        start = time.perf_counter()
        res = conn.post_journals(PostingBatch("bench-run", "US01", "2026-09", js))
        held = conn.read_back([j.id for j in js])
        took = time.perf_counter() - start
        ok = sum(r.status is PostStatus.POSTED for r in res)
        assert ok == n and len(held) == n, (ok, len(held))
        stats = app.state.limits.stats()
        calls = stats["accepted"] + stats["refused"]
        allowed = limit / window
        share = stats["accepted"] / took / allowed
        label = "blind (limit unknown, learnt from 429)" if blind else "paced at 80% of the limit"
        print(f"{label}: {n} journals posted + read back in {took:.1f} s = {n / took:.1f} journals/s; "
              f"{stats['accepted']} accepted calls = {stats['accepted'] / n:.2f} per journal; achieved "
              f"{stats['accepted'] / took:.1f} req/s of {allowed:.1f} allowed ({share:.0%}); "
              f"429 share {stats['refused'] / calls if calls else 0:.3f} ({stats['refused']} of {calls})")


def flow_calls(employees: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.main_job import SOURCE

    from flows_support import make_ctx, records, tiny_firm  # the tests' tiny-firm helpers

    app = app_with()
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(app) as base:
        root = Path(tmp)
        export = tiny_firm(root / "firm", employees=employees, months=1, seed=11)
        ctx = make_ctx(root / "w", export_from=export, failure_mode="line_level")
        import os

        os.environ["LB_BENCH_D365_SECRET"] = SECRET
        erp = SystemConfig(connector="dynamics365", role="erp",
                           secrets={"client_secret": SecretRef("${env:LB_BENCH_D365_SECRET}")},
                           options=options(base, rate_limit=1_000_000, rate_window=1))
        routing = ctx.config.routing.model_copy(update={"by_entity": {
            e: RouteTargets(ledger="erp", invoices="erp") for e in COMPANIES}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp": erp},
                                                   "routing": routing})
        ctx.reset_connectors()
        recs = records(ctx)
        approved = sum(1 for r in recs if r["entity"] == "time_entry"
                       and r["payload"].get("approval_status") == "approved")
        transactions.land(ctx, SOURCE, recs)
        transactions.process_pending(ctx)
        app.state.calls.clear()
        start = time.perf_counter()
        posted = 0
        for e in COMPANIES:
            out = posting.post_period(ctx, e, "2026-09")
            posted += out.journals
        took = time.perf_counter() - start
        calls = len(app.state.calls.calls)
        print(f"flows: {approved} approved time entries -> {posted} journals in {took:.1f} s with {calls} API calls "
              f"(token, periods, lookups, $batch, read-back) = {calls / approved * 10000:.0f} calls per 10,000 "
              "approved time entries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journals", type=int, default=600)
    ap.add_argument("--batch", type=int, default=25, help="journals (changesets) per $batch")
    ap.add_argument("--limit", type=int, default=20, help="sandbox requests per window (F&O user limit: 6000/300 s)")
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--employees", type=int, default=20)
    args = ap.parse_args()
    throttled_run(args.journals, args.batch, args.limit, args.window, blind=False)
    throttled_run(args.journals // 2, args.batch, args.limit, args.window, blind=True)
    flow_calls(args.employees)


if __name__ == "__main__":
    main()
