"""Workday and Power BI connectors against their sandboxes (real HTTP on loopback, limits on).

    .venv/bin/python bench/bench_workday_powerbi.py [--journals 300] [--employees 10] [--rows 50000] [--posts 240]

Workday: journals posted per second (look-up by reference + Submit_Accounting_Journal + read numbers back), a
re-post (look-ups only), read-back; SOAP calls per journal; and through the real posting flow on a generated firm,
SOAP calls per 10,000 approved time-entry versions. Power BI: rows per second pushed (10,000 per POST), and the POST
rate achieved against the per-dataset limit (120 per window; the window is compressed from 60 s to ``--window`` s
so the run stays short: the ratio is what counts) with the share of 429 answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.powerbi import PowerBiClient, PowerBiTarget
from ledgerbridge.connectors.powerbi.connector import MartTable
from ledgerbridge.connectors.workday import WorkdayClient, WorkdayLedger
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import powerbi as pbi_sandbox
from ledgerbridge.testing.sandboxes import workday as wd_sandbox

ACCOUNTS = {"1200": "WD-1200", "2100": "WD-2100", "4000": "WD-4000", "5000": "WD-5000"}


def journals(n: int) -> list[JournalEntry]:
    out = []
    for i in range(n):
        amt = Decimal(f"{(i * 37) % 900 + 1}.{i % 100:02d}")
        out.append(JournalEntry(
            id=f"B-{i:05d}", legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 1 + i % 28),
            journal_type=JournalType.LABOR_COST, description=f"labor {i}",
            lines=(JournalLine(line_no=1, account="5000", debit=amt, currency="USD", dimensions={"project": "P-1"}),
                   JournalLine(line_no=2, account="2100", credit=amt, currency="USD"),
                   JournalLine(line_no=3, account="1200", debit=amt, currency="USD"),
                   JournalLine(line_no=4, account="4000", credit=amt, currency="USD"))))
    return out


def bench_workday_raw(n: int) -> None:
    app = wd_sandbox.create_app()
    app.state.store.accounts = set(ACCOUNTS.values())
    with serve_in_thread(app) as base:
        client = WorkdayClient(base, "acme", "ISU_ledgerbridge", "lb-workday-demo", concurrency=2)
        ledger = WorkdayLedger(client, legal_entity_id="US01", company_id="C-US01", account_map=ACCOUNTS,
                               period_status_report=("ISU_ledgerbridge", "LB_Period_Status"))
        js = journals(n)
        batch = PostingBatch("bench", "US01", "2026-09", js)
        t = time.perf_counter()
        res = ledger.post_journals(batch)
        post_s = time.perf_counter() - t
        assert all(r.status is PostStatus.POSTED for r in res)
        calls = client.calls
        t = time.perf_counter()
        ledger.post_journals(batch)
        repost_s = time.perf_counter() - t
        t = time.perf_counter()
        held = ledger.read_back([j.id for j in js])
        rb_s = time.perf_counter() - t
        assert len(held) == n
        print(f"workday  post {n} four-line journals: {post_s:.2f} s = {n / post_s:.0f} journals/s, "
              f"{calls} calls ({calls / n:.2f} per journal: 1 submit each + look-ups/read of 100 per call)")
        print(f"workday  re-post (idempotent, look-ups only): {repost_s:.2f} s, {client.calls - calls} calls; "
              f"read-back {n}: {rb_s:.2f} s")


def bench_workday_bulk(n: int) -> None:
    app = wd_sandbox.create_app(import_delay=0.05)
    app.state.store.accounts = set(ACCOUNTS.values())
    with serve_in_thread(app) as base:
        client = WorkdayClient(base, "acme", "ISU_ledgerbridge", "lb-workday-demo", concurrency=2)
        ledger = WorkdayLedger(client, legal_entity_id="US01", company_id="C-US01", account_map=ACCOUNTS,
                               bulk_threshold=1, import_batch=100, import_poll=0.1)
        js = journals(n)
        t = time.perf_counter()
        res = ledger.post_journals(PostingBatch("bulk", "US01", "2026-09", js))
        secs = time.perf_counter() - t
        assert all(r.status is PostStatus.POSTED for r in res)
        print(f"workday  bulk Import_Accounting_Journal {n} journals (100 per import, sandbox processes each import "
              f"after 0.05 s; a tenant takes far longer): {secs:.2f} s, {client.calls} calls "
              f"({client.calls / n:.3f} per journal)")


def bench_workday_flow(employees: int) -> None:
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.context import FlowContext
    from ledgerbridge.flows.main_job import SOURCE, demo_config
    from ledgerbridge.flows.reference import load_reference
    from ledgerbridge.samplefirm import generate_firm

    app = wd_sandbox.create_app()
    with tempfile.TemporaryDirectory() as td, serve_in_thread(app) as base:
        wd = Path(td)
        generate_firm(wd / "psa-export", seed=7, employees=employees, months=2, start="2026-09")
        cfg = demo_config(wd)
        import os

        os.environ["LB_WORKDAY_PASSWORD"] = "lb-workday-demo"
        ctx = FlowContext(cfg, workdir=wd)
        ctx.migrate()
        load_reference(ctx, SOURCE)
        app.state.store.accounts = {f"WD-{a.code}" for a in ctx.reference.accounts}
        secret = SecretRef("${env:LB_WORKDAY_PASSWORD}")
        erp = SystemConfig(connector="workday", role="erp", secrets={"password": secret},
                           options={"url": base, "tenant": "acme", "username": "ISU_ledgerbridge",
                                    "legal_entity_id": "US01", "company_id": "C-US01",
                                    "account_map": {a.code: f"WD-{a.code}" for a in ctx.reference.accounts},
                                    "reports": {"period_status": "ISU_ledgerbridge/LB_Period_Status"}})
        routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="wd")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "wd": erp}, "routing": routing})
        ctx.reset_connectors()
        errors: list = []
        transactions.land(ctx, SOURCE, ctx.connector(SOURCE).read_records(errors))
        transactions.process_pending(ctx)
        versions = journals_n = 0
        t = time.perf_counter()
        for period in ("2026-09", "2026-10"):
            out = posting.post_period(ctx, "US01", period)
            versions += int(out.control_totals.get("source_versions", 0))
            journals_n += out.journals
        secs = time.perf_counter() - t
        calls = app.state.calls.count()
        print(f"workday  flow: {employees} employees x 2 months, US01: {versions} source versions -> {journals_n} "
              f"journals in {secs:.2f} s; {calls} Workday calls = {calls / max(versions, 1) * 10_000:.0f} calls per "
              "10k approved time-entry versions (journals are summarized, so calls follow journals, not entries)")


def bench_powerbi(rows: int, posts: int, window: float) -> None:
    app = pbi_sandbox.create_app(post_limit=120, post_window=window)
    with serve_in_thread(app) as base:
        client = PowerBiClient("lb-tenant", "lb-app", "lb-secret", api_url=base, authority=base,
                               posts_per_window=120, window=window, headroom=0.9)
        target = PowerBiTarget(client, group_id="f089354e-8366-4e18-aea3-4cb4a3a50b48", tables=["facts"])
        cols = (("project_id", "VARCHAR"), ("period", "VARCHAR"), ("hours", "DECIMAL(38,10)"),
                ("amount", "DECIMAL(38,10)"), ("billable", "BOOLEAN"))
        data = tuple((f"P-{i % 400:04d}", "2026-09", Decimal(i % 9) + Decimal("0.25"), Decimal(i) / 100, i % 2 == 0)
                     for i in range(rows))
        t = time.perf_counter()
        rep = target.publish_marts({"facts": MartTable("facts", cols, data)}, tables=["facts"])
        secs = time.perf_counter() - t
        print(f"powerbi  {rows} rows in {rep.posts['facts']} POSTs: {secs:.2f} s = {rows / secs:.0f} rows/s "
              "(find dataset + delete + push)")
        client.rows_per_post = 50
        small = {"facts": MartTable("facts", cols, data[: posts * 50])}
        app.state.calls.clear()
        t = time.perf_counter()
        rep = target.publish_marts(small, tables=["facts"])
        secs = time.perf_counter() - t
        n = rep.posts["facts"]
        refused = app.state.calls.count(method="POST", status=429)
        allowed = 120 / window
        print(f"powerbi  {n} POSTs in {secs:.2f} s = {n / secs:.1f} POST/s vs allowed {allowed:.1f}/s "
              f"(120 per {window:g} s window) = {n / secs / allowed:.0%} of the limit; 429 share "
              f"{refused / max(1, refused + n):.1%}; client waited {client.pacer(rep.dataset_id).waited:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--journals", type=int, default=300)
    ap.add_argument("--employees", type=int, default=10)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--posts", type=int, default=240)
    ap.add_argument("--window", type=float, default=6.0, help="the 60 s POST window, compressed (seconds)")
    a = ap.parse_args()
    bench_workday_raw(a.journals)
    bench_workday_bulk(a.journals)
    bench_workday_flow(a.employees)
    bench_powerbi(a.rows, a.posts, a.window)


if __name__ == "__main__":
    main()
