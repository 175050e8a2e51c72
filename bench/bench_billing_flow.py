"""Benchmark: the billing flow end to end on a generated firm (store + Beancount ledger + PSA status file).

    .venv/bin/python bench/bench_billing_flow.py [--employees 40] [--months 3] [--workdir /tmp/lb-bench-billing]

Not timed: generating the firm, ingesting every version and posting every month. Timed per month: the four
stages of ``flows.billing`` (draft: versions on the ledger re-read and costed at their accrued values, T&M run,
milestones, validation, one store transaction; create: one ``create_invoice`` per invoice in the Beancount ledger
plus the store transaction that stages its postings; status poll; PSA write-back), then the posting run that books
the invoices, and finally a re-run of every month (the idempotent steady state: nothing new). Prints seconds and
rates.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config, months_of
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.samplefirm import generate_firm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--employees", type=int, default=40)
    ap.add_argument("--months", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lb-bench-billing"))
    args = ap.parse_args()
    wd: Path = args.workdir
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    generate_firm(wd / "psa-export", seed=42, employees=args.employees, months=args.months, start="2026-09")
    ctx = FlowContext(demo_config(wd), workdir=wd)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    errors: list[object] = []
    transactions.land(ctx, SOURCE, ctx.connector(SOURCE).read_records(errors))
    transactions.process_pending(ctx)
    periods = months_of("2026-09", args.months)
    entities = sorted(ctx.reference.entities)
    for p in periods:
        for e in entities:
            posting.post_period(ctx, e, p)
    print(f"firm: {args.employees} employees, {args.months} months, {len(entities)} entities (setup not timed)")
    total_inv = total_items = 0
    for p in periods:
        t0 = time.perf_counter()
        d = billing.draft_invoices(ctx, p)
        t1 = time.perf_counter()
        c = billing.create_pending(ctx)
        t2 = time.perf_counter()
        billing.sync_status(ctx)
        t3 = time.perf_counter()
        w = billing.write_back(ctx)
        t4 = time.perf_counter()
        for e in entities:
            posting.post_period(ctx, e, p)
        t5 = time.perf_counter()
        with ctx.engine.connect() as conn:
            from ledgerbridge.store import invoices as repo

            rows = [r for r in repo.list_invoices(conn, period=p)]
        items = sum(len(r.lineage) for r in rows)
        total_inv += len(rows)
        total_items += items
        print(f"{p}: {len(d.drafted)} invoices + {len(d.credit_notes)} credit notes ({items} billed item versions); "
              f"draft {t1 - t0:.2f} s, create {t2 - t1:.2f} s ({len(c.created) / max(t2 - t1, 1e-9):.0f} "
              f"invoices/s), status {t3 - t2:.2f} s, write-back {t4 - t3:.2f} s ({w} rows), "
              f"posting the invoices {t5 - t4:.2f} s")
    t0 = time.perf_counter()
    for p in periods:
        again = billing.run_billing(ctx, p)
        assert not again["draft"]["drafted"] and not again["create"]["created"], again
    t1 = time.perf_counter()
    print(f"re-run of {len(periods)} months (nothing new): {t1 - t0:.2f} s; "
          f"{total_inv} invoices, {total_items} item versions billed in all")


if __name__ == "__main__":
    main()
