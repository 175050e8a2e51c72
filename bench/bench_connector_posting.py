"""Benchmark: posting runs into the two file-based targets.

    .venv/bin/python bench/bench_connector_posting.py [--seed-journals 49000] [--seed-periods 12] [--run-journals 1000]

Beancount ledger: seeds one entity ledger with ``--seed-journals`` journals spread over ``--seed-periods`` monthly
period files (one validated run per period), then appends runs of ``--run-journals`` journals, each validated with
beancount's loader — cold (a new connector that must load the released period first), warm (the connector already
holds its summary), into a new period — re-posts one (idempotent), reads back, and runs bean-check on everything.
File journal: writes a run of the same size (CSV + manifest), re-writes it (no-op), ingests its acknowledgement and
reads it back. Prints wall times and the ledger size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.beancount_ledger import BeancountLedgerConnector
from ledgerbridge.connectors.file_journal import FileJournalConnector
from ledgerbridge.model import Account, AccountType, JournalEntry, JournalLine, JournalType, LegalEntity

CHART = [
    Account(code="1200", name="Unbilled receivables", type=AccountType.ASSET),
    Account(code="2100", name="Accrued payroll", type=AccountType.LIABILITY),
    Account(code="4000", name="Service revenue (T&M)", type=AccountType.REVENUE),
    Account(code="5000", name="Project labor cost", type=AccountType.EXPENSE),
]
US01 = LegalEntity(id="US01", name="Sample US", functional_currency="USD", country="US", tax_jurisdiction="US")


def journals(start: int, count: int, period: str) -> list[JournalEntry]:
    """Summarized labor-cost and revenue-accrual journals, two pairs of lines each (like the posting builder's)."""
    y, m = int(period[:4]), int(period[5:])
    out = []
    for i in range(start, start + count):
        cost = Decimal(1000 + i % 5000) + Decimal(i % 100) / 100
        rev = cost * 2
        dims = {"project": f"P-{i % 300:03d}", "cost_center": "CC-DEL-US"}
        out.append(JournalEntry(
            id=f"US01-{period}-labor-{i:07d}", legal_entity_id="US01", period=period,
            entry_date=dt.date(y, m, 1 + i % 28), journal_type=JournalType.LABOR_COST,
            description=f"Labor and accrual, project P-{i % 300:03d}",
            lines=(
                JournalLine(line_no=1, account="5000", debit=cost, currency="USD", dimensions=dims, lineage_count=12),
                JournalLine(line_no=2, account="2100", credit=cost, currency="USD", dimensions=dims, lineage_count=12),
                JournalLine(line_no=3, account="1200", debit=rev, currency="USD", dimensions=dims, lineage_count=12),
                JournalLine(line_no=4, account="4000", credit=rev, currency="USD", dimensions=dims, lineage_count=12),
            ),
        ))
    return out


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    """Run ``fn``; print wall time and this process's CPU time (the CPU figure is what the work costs on an idle
    core; the wall figure also counts waiting for a shared CPU)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    print(f"  {label:<62} wall {time.perf_counter() - t:7.2f} s   cpu {time.process_time() - c:7.2f} s")
    return out


def bench_beancount(root: Path, seed_n: int, seed_periods: int, run_n: int) -> None:
    print(f"beancount ledger: seed {seed_n} journals over {seed_periods} period(s), then runs of {run_n}")
    ledger = BeancountLedgerConnector(root, CHART, [US01])
    per = seed_n // seed_periods
    periods = [f"2025-{m:02d}" for m in range(1, 13)][-seed_periods:] if seed_periods <= 12 else []
    if len(periods) != seed_periods:
        raise SystemExit("--seed-periods must be between 1 and 12")
    def seed() -> None:
        for k, period in enumerate(periods):
            ledger.post_journals(PostingBatch(f"SEED-{period}", "US01", period, journals(k * per, per, period)))

    timed(f"seed: {len(periods)} validated runs", seed)
    size = sum(p.stat().st_size for p in (root / "ledger").rglob("*.beancount"))
    print(f"  ledger: {size / 1e6:.1f} MB, {per * len(periods)} transactions, {per} per period file")

    last = periods[-1]
    base = per * len(periods)
    cold = BeancountLedgerConnector(root, CHART, [US01])
    run1 = journals(base, run_n, last)
    res = timed(f"cold: {run_n} more into {last} (holds {per}): scan+append+validate",
                lambda: cold.post_journals(PostingBatch("RUN-1", "US01", last, run1)))
    assert all(r.status is PostStatus.POSTED for r in res)
    run2 = journals(base + run_n, run_n, last)
    res = timed(f"warm: {run_n} more into {last}: append + validate + release",
                lambda: cold.post_journals(PostingBatch("RUN-2", "US01", last, run2)))
    assert all(r.status is PostStatus.POSTED for r in res)
    run3 = journals(base + 2 * run_n, run_n, "2026-01")
    res = timed(f"warm: {run_n} into a new period 2026-01",
                lambda: cold.post_journals(PostingBatch("RUN-3", "US01", "2026-01", run3)))
    assert all(r.status is PostStatus.POSTED for r in res)
    timed(f"warm: re-post the same {run_n} (idempotent, nothing appended)",
          lambda: cold.post_journals(PostingBatch("RUN-2", "US01", last, run2)))
    rb = timed(f"warm: read_back {run_n} journal ids", lambda: cold.read_back([j.id for j in run2]))
    assert len(rb) == run_n and all(rb[j.id].matches(j) for j in run2)
    fresh = BeancountLedgerConnector(root, CHART, [US01])
    rb = timed(f"cold: read_back {run_n} journal ids (loads their period)",
               lambda: fresh.read_back([j.id for j in run1]))
    assert len(rb) == run_n
    errors = timed("bean-check of main.beancount (whole ledger)", lambda: fresh.check())
    assert errors == [], errors[:5]


def bench_file(root: Path, run_n: int) -> None:
    print(f"file journal: run of {run_n} journals ({run_n * 4} lines)")
    target = FileJournalConnector(root / "outbox", root / "inbox")
    js = journals(0, run_n, "2026-01")
    batch = PostingBatch("RUN-F1", "US01", "2026-01", js, created_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    timed("write CSV + manifest (atomic)", lambda: target.post_journals(batch))
    timed("re-write same run (hash compare, no-op)", lambda: target.post_journals(batch))
    (root / "inbox").mkdir()
    (root / "inbox" / "RUN-F1.ack.csv").write_text(
        "journal_id,status,target_ref\n" + "".join(f"{j.id},accepted,JE-{i}\n" for i, j in enumerate(js)))
    res = timed("ingest acknowledgement", lambda: target.ingest_ack("RUN-F1"))
    assert res is not None and all(r.status is PostStatus.POSTED for r in res)
    rb = timed("read_back all journals", lambda: target.read_back([j.id for j in js]))
    assert len(rb) == run_n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-journals", type=int, default=49_000)
    ap.add_argument("--seed-periods", type=int, default=12)
    ap.add_argument("--run-journals", type=int, default=1_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_beancount(Path(tmp) / "books", args.seed_journals, args.seed_periods, args.run_journals)
        bench_file(Path(tmp) / "files", args.run_journals)


if __name__ == "__main__":
    main()
