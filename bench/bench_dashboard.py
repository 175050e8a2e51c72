"""Dashboard and business metrics on a real run: time compute_metrics, run_reconciliation (stored), the overview
and drill-down pages (in-process), and check_alerts, on a work directory produced by ``ledgerbridge demo run``.

    ledgerbridge demo run --workdir out/bench-dash --employees 200 --months 6
    .venv/bin/python bench/bench_dashboard.py out/bench-dash
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from ledgerbridge.flows import alerts, recon_runs
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.testing import issue_token


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    print(f"{label:38} {time.perf_counter() - t:8.3f} s")
    return out


def main(wd: Path) -> None:
    ctx = FlowContext(demo_config(wd), workdir=wd)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    m = timed("compute_metrics", lambda: alerts.compute_metrics(ctx))
    print(f"  versions with posting lag: {len(m.posting_lag_hours):,}; billed versions: {len(m.billing_lag_hours):,}; "
          f"inbox: {m.inbox}")
    recon, run_id = timed("run_reconciliation (stored)", lambda: recon_runs.run_reconciliation(ctx))
    print(f"  cells: {len(recon.cells)}; explaining items: {sum(len(c.explanations) for c in recon.cells):,}")
    client = TestClient(create_app(ctx, ServiceSettings(worker=False)))
    client.post("/dashboard/login", data={"token": issue_token(ctx, "read", "bench")})
    r = timed("GET /dashboard/ (overview)", lambda: client.get("/dashboard/"))
    assert r.status_code == 200, r.text[:300]
    timed("GET /dashboard/trace", lambda: client.get("/dashboard/trace"))
    timed("GET /dashboard/reconciliation/<run>", lambda: client.get(f"/dashboard/reconciliation/{run_id}"))
    timed("check_alerts (no rules, metrics reused)", lambda: alerts.check_alerts(ctx, metrics=m))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo"))
