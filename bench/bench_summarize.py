"""Benchmark: summarizing 1M synthetic postings into balanced journals, in memory.

    .venv/bin/python bench/bench_summarize.py [--postings 1000000] [--combined 1000000] [--seed 11]

1. ``summarize`` over ``--postings`` synthetic postings (3 legal entities, 300 projects, 12 cost centers, a year of
   dates, labor_cost / revenue_accrual / expense, 10% reversals of earlier versions): plain (calendar periods), then
   with a ``PeriodBook`` placer (two closed months, late items redated) and functional-currency conversion of the
   foreign-currency lines.
2. Combined (when ``bench/bench_costing.py`` is present): ``make_synthetic(--combined)`` time entries costed with
   ``costing.cost_many``, turned into postings with ``posting.postings_for_time`` and summarized; prints entries/s
   end to end and per stage. ``--combined 0`` skips it.

3. Floor (``--floor``, on by default): what the same postings cost with everything but the unavoidable CPython work
   taken out: the grouping pass alone (per posting: the (entity, date) placement lookup and the bucket lookup on
   (group, txn_type, dimensions, currency), no amount check, no sum), ``SourceRef.key`` for every posting (the
   lineage digest needs it), and one validated ``JournalLine`` per output line. Their sum bounds what any rewrite
   of ``summarize`` in pure Python on this data model can reach on this machine.

Prints the load average, postings/s (wall and process CPU), journals and lines produced, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import resource
import sys
import time
from decimal import Decimal
from pathlib import Path

from ledgerbridge.domain.periods import LatePolicy, PeriodBook, monthly_periods
from ledgerbridge.domain.posting import default_rules, postings_for_time, summarize
from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import JournalLine, PeriodStatus

ENTITIES = (("US01", "USD"), ("UK01", "GBP"), ("DE01", "EUR"))
START = dt.date(2026, 1, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_postings(n: int, seed: int) -> list[Posting]:
    rnd = random.Random(seed)
    projects = [(f"P{p:04d}", ENTITIES[p % 3]) for p in range(300)]
    ccs = {e: [f"CC-{k}-{e[:2]}" for k in range(4)] for e, _ in ENTITIES}
    out: list[Posting] = []
    i = 0
    while len(out) < n:
        pid, (entity, ccy) = rnd.choice(projects)
        dims = (("cost_center", rnd.choice(ccs[entity])), ("project", pid))
        day = START + dt.timedelta(days=rnd.randrange(365))
        kind = rnd.random()
        version = 2 if rnd.random() < 0.1 else 1
        cents = rnd.randrange(100, 200_000)
        if kind < 0.55:
            txn, name, ent, cur = "labor_cost", "cost", "time_entry", ccy
        elif kind < 0.9:
            txn, name, ent, cur = "revenue_accrual", "billable_value", "time_entry", rnd.choice((ccy, ccy, "USD"))
        else:
            txn, name, ent, cur = "expense", "amount", "expense", ccy
        ref = SourceRef(system="psa", entity=ent, id=f"X{i}", version=version)
        amount = Decimal(cents).scaleb(-2)
        out.append(Posting(txn, entity, day, cur, ((name, amount),), dims, ref, 1))
        if version == 2 and len(out) < n:  # the reversal of version 1 travels with the new version
            v1 = ref.model_copy(update={"version": 1})
            out.append(Posting(txn, entity, day, cur, ((name, amount + 1),), dims, v1, -1))
        i += 1
    return out


def calibrate() -> float:
    c0 = time.process_time()
    x = 0
    for i in range(3_000_000):
        x += i
    return time.process_time() - c0


def fx(amount: Decimal, f: str, t: str, on: dt.date) -> tuple[Decimal, Decimal, dt.date]:
    rate = {("USD", "GBP"): Decimal("0.7912"), ("USD", "EUR"): Decimal("0.9231")}.get((f, t), Decimal("1.0843"))
    return amount * rate, rate, on


def timed(label: str, n: int, fn):  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{label}: {n:,} in {wall:.2f}s wall / {cpu:.2f}s cpu -> {n / wall:,.0f}/s wall, {n / cpu:,.0f}/s cpu")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postings", type=int, default=1_000_000)
    ap.add_argument("--combined", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the floor: grouping pass, SourceRef.key, JournalLine validation")
    args = ap.parse_args()
    print(f"machine: a pure-Python loop of 3M integer adds takes {calibrate():.2f}s cpu "
          "(about 0.10s on an idle modern x86 core; scale the figures below accordingly); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.postings:
        bench_postings(args.postings, args.seed, floor=args.floor)
    if args.combined:
        bench_combined(args.combined)
    return 0


def bench_postings(n: int, seed: int, *, floor: bool = True) -> None:
    rules = default_rules()
    t0 = time.perf_counter()
    ps = make_postings(n, seed)
    print(f"synthetic postings: {len(ps):,} ({time.perf_counter() - t0:.1f}s to build), "
          f"peak RSS {peak_rss_mb():.0f} MB")

    s = timed("summarize (calendar periods)", len(ps), lambda: summarize(ps, rules))
    lines = sum(len(j.lines) for j in s.journals)
    print(f"  -> {len(s.journals):,} journals, {lines:,} lines, {len(s.lineage):,} lineage records, "
          f"{len(s.rejected_postings)} rejected; peak RSS {peak_rss_mb():.0f} MB")

    book = PeriodBook(p for e, _ in ENTITIES for p in monthly_periods(e, "2026-01", "2026-12"))
    for e, _ in ENTITIES:
        for m in ("2026-01", "2026-02"):
            book.transition(e, m, PeriodStatus.CLOSING)
            book.transition(e, m, PeriodStatus.CLOSED)
    s2 = timed(
        "summarize (period book: 2 closed months redated; functional FX)", len(ps),
        lambda: summarize(ps, rules, book.placer(LatePolicy.NEXT_OPEN_PERIOD), batch="B1",
                          functional_currencies=dict(ENTITIES), converter=fx),
    )
    redated = sum(1 for j in s2.journals if j.redated_from)
    print(f"  -> {len(s2.journals):,} journals ({redated} redated), {len(s2.rejected_journals)} rejected journals; "
          f"peak RSS {peak_rss_mb():.0f} MB")
    if floor:
        bench_floor(ps, [ln for j in s.journals for ln in j.lines])


def bench_floor(ps: list[Posting], lines: list[JournalLine]) -> None:
    """Time the work no pure-Python summarize can skip on these postings (see the module doc, item 3)."""
    gc_was = gc.isenabled()
    gc.disable()  # as summarize does
    try:
        placed: dict[tuple[str, dt.date], tuple[int, dt.date]] = {}
        groups: dict[str, int] = {}
        for p in ps:  # setup (not timed): one placement per (entity, date), as summarize caches it
            if (p.legal_entity_id, p.date) not in placed:
                g = groups.setdefault(f"{p.legal_entity_id}-{p.date:%Y-%m}", len(groups))
                placed[(p.legal_entity_id, p.date)] = (g, p.date)

        def grouping() -> int:
            buckets: dict[tuple[int, str, tuple[tuple[str, str], ...], str], list[int]] = {}
            for p in ps:
                at = placed.get((p.legal_entity_id, p.date))
                assert at is not None
                key = (at[0], p.txn_type, p.dimensions, p.currency)
                b = buckets.get(key)
                if b is None:
                    buckets[key] = [0]
            return len(buckets)

        kw = ("line_no", "account", "currency", "dimensions", "debit", "credit", "description", "lineage",
              "lineage_count")
        args = [{k: getattr(ln, k) for k in kw} for ln in lines]
        c_group = _cpu(grouping)
        c_keys = _cpu(lambda: [p.source.key for p in ps])
        c_lines = _cpu(lambda: [JournalLine(**a) for a in args])
    finally:
        if gc_was:
            gc.enable()
    total = c_group + c_keys + c_lines
    print(f"floor: grouping pass {c_group:.2f}s cpu, SourceRef.key {c_keys:.2f}s cpu, {len(lines):,} validated "
          f"JournalLines {c_lines:.2f}s cpu ({c_lines / max(len(lines), 1) * 1e6:.1f} us each) -> {total:.2f}s cpu, "
          f"at most {len(ps) / total:,.0f} postings/cpu-s before any amount check, sum, sort or digest")


def _cpu(fn):  # type: ignore[no-untyped-def]
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def bench_combined(n_entries: int) -> None:
    rules = default_rules()
    here = Path(__file__).resolve().parent
    if not (here / "bench_costing.py").exists():
        print("combined: bench/bench_costing.py not found, skipped")
        return
    sys.path.insert(0, str(here))
    from bench_costing import make_synthetic  # type: ignore[import-not-found]
    from ledgerbridge.domain.costing import cost_many

    firm = make_synthetic(n_entries)
    n = len(firm.entries)
    t0, c0 = time.perf_counter(), time.process_time()
    costed, violations = timed("  cost_many", n, lambda: cost_many(firm.entries, firm.projects, firm.resources,
                                                                    firm.book))
    posts = timed("  postings_for_time", len(costed), lambda: [p for c in costed for p in postings_for_time(c)])
    s3 = timed("  summarize", len(posts), lambda: summarize(posts, rules))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"combined cost+post+summarize: {n:,} time entries -> {len(posts):,} postings -> {len(s3.journals):,} "
          f"journals in {wall:.2f}s wall / {cpu:.2f}s cpu -> {n / wall:,.0f} entries/s wall, "
          f"{n / cpu:,.0f} entries/s cpu ({len(violations)} costing violations); peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
