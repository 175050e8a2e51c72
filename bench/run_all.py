"""``make bench``: run the benchmarks one after another, each printing its own figures.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Default sizes are the ones the issues ask for (1M generated entries, 1M costed/summarized entries, 1M vs 1M
reconciliation...). ``--quick`` runs every benchmark at a small size (a smoke run, minutes instead of tens of
minutes). Benchmarks that need a live system (Tryton, Redmine, PostgreSQL, NATS) are run only when asked with
``--only``. Each benchmark runs in its own process, so peak RSS figures are per benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

#: name -> (full arguments, quick arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "generator": ([], ["--employees", "200", "--months", "3", "--slice", "20000"]),
    "costing": ([], ["--entries", "100000"]),
    "approvals": ([], ["--items", "100000"]),
    "summarize": ([], ["--postings", "100000", "--combined", "100000"]),
    "billing": ([], ["--entries", "20000", "--expenses", "2000", "--projects", "200"]),
    "store": ([], ["--rows", "20000", "--batch", "5000", "--repeat", "1"]),
    "batch_path": ([], ["--employees", "100", "--events", "50"]),
    "runtime": (["--no-postgres"], ["--events", "50", "--records", "2000", "--sample", "200", "--no-postgres"]),
    "connector_posting": ([], ["--seed-journals", "2000", "--seed-periods", "2", "--run-journals", "200"]),
    "reconcile": ([], ["--rows", "100000"]),
    # SaaS connectors against their sandboxes (loopback HTTP, limits on): throughput, API calls per 10k approved
    # entries, rate-limit utilization and 429 share; about 25-60 s each
    "salesforce": ([], []),
    "kantata": ([], []),
    "jira_tempo": ([], []),
    "netsuite": ([], []),
    "dynamics365": ([], []),
    "xero": ([], []),
    "workday_powerbi": ([], []),
    "sap_oracle": ([], []),
}
LIVE = ("tryton", "tryton_flow", "redmine", "webhooks", "distributed", "latency", "dlt_peer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    names = args.only or list(BENCHES)
    failed = []
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"== {name}: no bench/bench_{name}.py", flush=True)
            continue
        full, quick = BENCHES.get(name, ([], []))
        argv = [sys.executable, str(script), *(quick if args.quick else full)]
        print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
        t = time.monotonic()
        rc = subprocess.call(argv)
        print(f"== {name}: exit {rc} in {time.monotonic() - t:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
