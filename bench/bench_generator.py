"""Benchmark: sample-firm generator (about 1M time-entry rows) and reader throughput.

    .venv/bin/python bench/bench_generator.py [--employees 2000] [--months 12] [--slice 200000] [--keep DIR]

Prints generation wall time, time-entry rows/s, peak RSS of the process (resource.getrusage), and reader rows/s on
the first ``--slice`` rows of ``time_entries.csv`` (full ``TimeEntry`` validation of every row). Wall and CPU
(process) time are both shown: on a shared machine the CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from ledgerbridge.samplefirm.generator import generate_firm
from ledgerbridge.samplefirm.reader import iter_expenses, iter_time_entries, load_firm


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read(path: Path, n: int) -> tuple[int, float, float, int]:
    errors: list = []
    t0, c0 = time.perf_counter(), time.process_time()
    count = sum(1 for _ in itertools.islice(iter_time_entries(path, errors), n))
    return count, time.perf_counter() - t0, time.process_time() - c0, len(errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--employees", type=int, default=2000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--slice", type=int, default=200_000, help="rows to read back per reader mode")
    ap.add_argument("--keep", type=Path, default=None, help="write here instead of a temporary directory")
    args = ap.parse_args()

    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (other work on the machine skews wall time)")
    with tempfile.TemporaryDirectory(prefix="lb-bench-gen-") as tmp:
        out = args.keep or Path(tmp)
        rss0 = _rss_mib()
        c0 = time.process_time()
        report = generate_firm(out, seed=args.seed, employees=args.employees, months=args.months, start="2026-09")
        cpu = time.process_time() - c0
        rss1 = _rss_mib()
        te = report.rows("time_entries.csv")
        print(f"generator: {args.employees} employees x {args.months} months, seed {args.seed}")
        print(f"  time_entries.csv rows : {te:,} ({report.stats['time_items']:,} ids)")
        print(f"  expenses.csv rows     : {report.rows('expenses.csv'):,}")
        print(f"  all files             : {report.total_rows:,} rows, {report.total_bytes / 1e6:,.1f} MB")
        print(f"  wall time             : {report.elapsed_seconds:.2f} s  (cpu {cpu:.2f} s, incl. SHA-256 of files)")
        print(f"  time entries / s      : {te / report.elapsed_seconds:,.0f} (wall)  {te / cpu:,.0f} (cpu)")
        print(f"  peak RSS              : {rss1:,.1f} MiB (before generating {rss0:,.1f} MiB)")

        path = out / "time_entries.csv"
        n, wall, cpu_r, errs = _read(path, args.slice)
        print(f"reader (TimeEntry validation): {n:,} rows in {wall:.2f} s -> {n / wall:,.0f} rows/s wall, "
              f"{n / cpu_r:,.0f} rows/s cpu, {errs} errors")

        t0 = time.perf_counter()
        firm = load_firm(out)
        n_exp = sum(1 for _ in iter_expenses(out / "expenses.csv", firm.errors))
        print(f"load_firm + expenses: {len(firm.projects)} projects, {len(firm.resources)} resources, "
              f"{len(firm.rate_cards)} rate lines, {n_exp:,} expense rows in {time.perf_counter() - t0:.2f} s, "
              f"{len(firm.errors)} errors")
        print(f"peak RSS at end       : {_rss_mib():,.1f} MiB; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
