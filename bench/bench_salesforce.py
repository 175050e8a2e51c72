"""Benchmark: the Salesforce connector against its sandbox (real HTTP on loopback).

    .venv/bin/python bench/bench_salesforce.py [--entries 10000] [--limit 10] [--window 2] [--limit-entries 5000]

1. **Certinia sync**: ``entries / 5`` weekly timecards (5 days each = ``entries`` canonical time entries), all
   approved and included in financials, read by a first (full) sync and then an incremental sync with nothing new.
   Prints API calls per 10k time entries (the token call apart), records per second, and the cursor size.
2. **Kimble sync**: ``entries`` one-day time entries (one row each): calls per 10k.
3. **Write-back**: ERP numbers for ``entries / 10`` invoices onto billing events (collections of 200), then the same
   again (idempotent: one query per 200, no write). Invoices per second, calls.
4. **Rate limits**: a daily allocation scaled down to ``limit`` requests per ``window`` seconds (page size 200 so a
   sync needs many calls) with the connector pacing itself by ``Sforce-Limit-Info`` (``budget_share`` 0.9, waits
   up to ``max_wait``): achieved request rate / allowed rate, and the share of answers that were 403
   ``REQUEST_LIMIT_EXCEEDED``; then the same with 70% of the allocation spent by "other integrations" mid-run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.salesforce import SalesforceSource
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.salesforce import connector_options, create_app

T = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=dt.UTC)


def api_calls(app: Any) -> int:
    return app.state.calls.count(path_prefix="/services/data")


def seed_certinia(app: Any, cards: int) -> None:
    st = app.state.store
    proj = st.insert("pse__Proj__c", {"Name": "Bench", "CurrencyIsoCode": "USD"})
    people = [st.insert("Contact", {"Name": f"R{i}", "pse__Is_Resource__c": True}) for i in range(50)]
    start = dt.date(2026, 1, 5)
    for n in range(cards):
        st.insert("pse__Timecard_Header__c", {
            "pse__Project__c": proj, "pse__Resource__c": people[n % 50],
            "pse__Start_Date__c": (start + dt.timedelta(weeks=n // 50)).isoformat(),
            **{f"pse__{d}_Hours__c": Decimal("8") for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")},
            "pse__Status__c": "Approved", "pse__Include_In_Financials__c": True, "pse__Billable__c": True},
            stamp=T + dt.timedelta(seconds=n // 100))  # 100 rows per second: ties everywhere


def seed_kimble(app: Any, entries: int) -> None:
    st = app.state.store
    group = st.insert("KimbleOne__DeliveryGroup__c", {"Name": "Bench"})
    res = st.insert("KimbleOne__Resource__c", {"Name": "R"})
    for n in range(entries):
        st.insert("KimbleOne__TimeEntry__c", {
            "KimbleOne__DeliveryGroup__c": group, "KimbleOne__Resource__c": res,
            "KimbleOne__EntryDate__c": (dt.date(2026, 1, 1) + dt.timedelta(days=n % 300)).isoformat(),
            "KimbleOne__EntryUnits__c": Decimal("7.5"), "KimbleOne__Status__c": "Approved"},
            stamp=T + dt.timedelta(seconds=n // 100))


def sync_figures(package: str, entries: int, seed: Any) -> dict[str, Any]:
    app = create_app(seed=False)
    seed(app)
    with serve_in_thread(app) as base:
        src = SalesforceSource.from_options("bench", connector_options(app, base, package),
                                            private_key=app.state.private_key_pem)
        t0 = time.perf_counter()
        first = src.sync(None)
        t1 = time.perf_counter()
        calls_first = api_calls(app)
        second = src.sync(first.cursor)
        t2 = time.perf_counter()
        calls_second = api_calls(app) - calls_first
    n = len(first.events)
    return {"package": package, "time_entries": n, "full_sync_s": round(t1 - t0, 2),
            "records_per_s": round(n / (t1 - t0)), "calls_full": calls_first,
            "calls_per_10k_full": round(calls_first * 10_000 / max(n, 1), 1),
            "incremental_nothing_new_calls": calls_second, "incremental_s": round(t2 - t1, 2),
            "incremental_events": len(second.events),
            "cursor_kb": round(len(json.dumps(second.cursor)) / 1024)}


def writeback_figures(invoices: int) -> dict[str, Any]:
    app = create_app(seed=False)
    with serve_in_thread(app) as base:
        src = SalesforceSource.from_options("bench", connector_options(app, base, "certinia"),
                                            private_key=app.state.private_key_pem)
        ups = [InvoiceStatusUpdate(key=f"INV-{n:06d}", project_id="a0P000000000001AAA", legal_entity_id="US01",
                                   invoice_date=dt.date(2026, 9, 30), currency="USD", total=Decimal("100.00"),
                                   erp_system="erp", erp_number=f"SI-{n}", status="posted") for n in range(invoices)]
        t0 = time.perf_counter()
        written = src.write_invoice_status(ups)
        t1 = time.perf_counter()
        calls = api_calls(app)
        again = src.write_invoice_status(ups)
        t2 = time.perf_counter()
    return {"invoices": invoices, "written": written, "invoices_per_s": round(invoices / (t1 - t0)),
            "calls": calls, "repeat_written": again, "repeat_calls": api_calls(app) - calls,
            "repeat_s": round(t2 - t1, 2), "billing_events": app.state.store.count("pse__Billing_Event__c")}


def limit_figures(entries: int, limit: int, window: float, others: float) -> dict[str, Any]:
    app = create_app(seed=False, page_size=200, daily_limit=limit, limit_window_seconds=window)
    seed_kimble(app, entries)
    with serve_in_thread(app) as base:
        src = SalesforceSource.from_options("bench", connector_options(app, base, "kimble",
                                                                       limit_wait_seconds=window * 1.05),
                                            private_key=app.state.private_key_pem)
        if others:
            seen = [0]

            def hook(response: Any) -> None:
                seen[0] += 1
                if seen[0] % 10 == 0:  # other integrations spend a share of the allocation meanwhile
                    app.state.consume(int(limit * others / 2))

            src.client._http.event_hooks["response"].append(hook)
        t0 = time.perf_counter()
        cursor, events, runs = None, 0, 0
        while True:
            r = src.sync(cursor)
            cursor, events, runs = r.cursor, events + len(r.events), runs + 1
            if not r.stats["incomplete"]:
                break
        elapsed = time.perf_counter() - t0
    statuses = [s for _, p, s in app.state.calls.calls if p.startswith("/services/data")]
    allowed = limit / window
    return {"others_share": others, "time_entries": events, "api_calls": len(statuses), "seconds": round(elapsed, 2),
            "achieved_rate_per_s": round(len(statuses) / elapsed, 1), "allowed_rate_per_s": round(allowed, 1),
            "utilization": round(len(statuses) / elapsed / allowed, 2),
            "share_403": round(statuses.count(403) / max(1, len(statuses)), 3), "limit_waits": src.client.limit_waits}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--limit-entries", type=int, default=5_000)
    a = ap.parse_args()
    print("sync:", sync_figures("certinia", a.entries, lambda app: seed_certinia(app, a.entries // 5)))
    print("sync:", sync_figures("kimble", a.entries, lambda app: seed_kimble(app, a.entries)))
    print("write-back:", writeback_figures(max(1, a.entries // 10)))
    print("limits:", limit_figures(a.limit_entries, a.limit, a.window, 0.0))
    print("limits:", limit_figures(a.limit_entries, a.limit, a.window, 0.7))


if __name__ == "__main__":
    main()
