"""Benchmark: master data sync and the drift gate on an embedded (SQLite) store.

    .venv/bin/python bench/bench_masterdata.py [--customers 20000] [--batch 1000] [--records 50000]

Master data: ``--customers`` synthetic customers synced from the PSA (first load: every field propagates), the same
read again (steady state: nothing changes), then an ERP read changing the ERP-owned credit terms of every customer
and the name of 5% (propagations + stewardship items). Drift: ``--records`` time-entry records through
``intake.accept`` with no snapshot (the gate's cost is one query) and with a snapshot (every payload compared).
Prints records/s per phase.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ledgerbridge.config import default_config
from ledgerbridge.config.schema import MasterDataConfig
from ledgerbridge.flows import drift, masterdata
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.intake import accept
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.model import Customer


def _ctx(wd: Path) -> FlowContext:
    cfg = demo_config(wd, default_config())
    cfg = cfg.model_copy(update={"master_data": MasterDataConfig.model_validate({"entities": {
        "customer": {"authority": "psa", "fields": {"credit_terms_days": "erp"}, "required": ["name"]}}})})
    ctx = FlowContext(cfg, workdir=wd)
    ctx.migrate()
    return ctx


def _timed(label: str, n: int, fn) -> object:  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{label:<52} {n:>8} records  {wall:7.2f} s wall  {n / wall:>10,.0f} rec/s  (cpu {cpu:.2f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--records", type=int, default=50000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _ctx(Path(tmp))
        custs = [Customer(id=f"C{i:06d}", name=f"Customer {i}", legal_entity_id="US01", currency="USD",
                          tax_jurisdiction="US-NY", tax_code="US-NY-STD") for i in range(a.customers)]
        n = len(custs)
        r = _timed("master: first PSA load (all fields propagate)", n,
                   lambda: masterdata.sync_master(ctx, SOURCE, custs, batch_size=a.batch))
        print(f"    propagated {r.propagated} field values in {r.batches} batches")  # type: ignore[attr-defined]
        r = _timed("master: same PSA read again (steady state)", n,
                   lambda: masterdata.sync_master(ctx, SOURCE, custs, batch_size=a.batch))
        print(f"    unchanged {r.unchanged}")  # type: ignore[attr-defined]
        erp = [c.model_copy(update={"credit_terms_days": 45, **({"name": c.name + " Inc"} if i % 20 == 0 else {})})
               for i, c in enumerate(custs)]
        r = _timed("master: ERP read (terms propagate, 5% names -> stewardship)", n,
                   lambda: masterdata.sync_master(ctx, "ledger", erp, batch_size=a.batch))
        print(f"    propagated {r.propagated}, stewardship {r.stewardship}")  # type: ignore[attr-defined]

        recs = [{"entity": "time_entry", "external_id": f"TE-{i:08d}", "version": 1, "payload": {
            "id": f"TE-{i:08d}", "source_system": SOURCE, "version": 1, "project_id": "P1", "resource_id": "R1",
            "work_date": "2026-09-01", "hours": "7.5", "billable": True, "approval_status": "approved",
            "approved_at": None, "updated_at": "2026-09-02T10:00:00+00:00", "description": "", "task": None}}
            for i in range(a.records)]
        half = len(recs) // 2
        _timed("drift: accept without a snapshot (gate = 1 query)", half, lambda: accept(ctx, SOURCE, recs[:half]))
        drift.take_snapshot(ctx, SOURCE, sample=500)
        _timed("drift: accept with a snapshot (every payload compared)", len(recs) - half,
               lambda: accept(ctx, SOURCE, recs[half:]))
        t0 = time.perf_counter()
        snap = drift.load_snapshots(ctx.engine.connect(), SOURCE)[0]["time_entry"]
        used = drift.used_fields(ctx, SOURCE, "time_entry")
        for rec in recs:
            drift.compare(SOURCE, "time_entry", snap, rec["payload"], used)
        dt_ = time.perf_counter() - t0
        print(f"{'drift: compare() alone':<52} {len(recs):>8} records  {dt_:7.2f} s wall  "
              f"{len(recs) / dt_:>10,.0f} rec/s")


if __name__ == "__main__":
    main()
