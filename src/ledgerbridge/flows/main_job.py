"""The embedded main job (``ledgerbridge demo run`` / ``make demo``).

1. Generate the sample consulting firm (deterministic by seed; skipped when the same export is already there).
2. Launch the durable runtime on the embedded default (SQLite system database, WAL).
3. Master reference loading from the PSA export.
4. For each month of the window: the transactional flow ingests what the PSA had produced by the month's cut-off
   (month end + ``cutoff_days``), the posting flow posts each legal entity's month into its ledger (the embedded
   Beancount ledger by default), and the month is closed (checklist first). Edits, recalls and rejections that
   arrive after a month closed become reversals redated into the next open month.
5. The DuckDB reporting mart and the reconciliation summary (PSA vs ledger vs mart, per entity and period).

Every step is durable and idempotent: kill the process at any point and run it again, and the ledger ends
identical to an uninterrupted run (``tests/test_main_job_kill.py``).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ledgerbridge import runtime as rt
from ledgerbridge.config import default_config
from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.flows import billing, dlq, durable, masterdata, subscriptions
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.flows.marts import build_marts
from ledgerbridge.flows.reconcile import reconcile, render
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.samplefirm import generate_firm

SOURCE = "psa_files"


@dataclass
class DemoOptions:
    workdir: Path = Path("out/demo")
    seed: int = 42
    employees: int = 40
    months: int = 3
    start: str = "2026-09"
    cutoff_days: int = 5
    batch_size: int = 2000


@dataclass
class DemoResult:
    workdir: str
    generated: dict[str, int] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    months: list[dict[str, Any]] = field(default_factory=list)
    ledger_check: list[str] = field(default_factory=list)
    marts: dict[str, Any] = field(default_factory=dict)
    reconciliation: dict[str, Any] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    subscriptions: dict[str, Any] = field(default_factory=dict)  # flows/subscriptions.py demo chain
    seconds: float = 0.0
    recon: Any = field(default=None, repr=False, compare=False)  # the Reconciliation object (not in --json)

    @property
    def failed(self) -> bool:
        """A posting run failed, the ledger check reported errors, or reconciliation left money unexplained."""
        unexplained = self.recon is not None and not self.recon.ok
        return unexplained or bool(self.ledger_check) or any(
            p.get("status") == "failed" for m in self.months for p in m.get("posting", []))


def demo_config(workdir: Path, base: LedgerbridgeConfig | None = None) -> LedgerbridgeConfig:
    """The starter configuration with every path inside ``workdir`` (store, runtime, PSA drop, ledger)."""
    cfg = base or default_config()
    wd = workdir.resolve()
    systems = dict(cfg.systems)
    systems[SOURCE] = systems[SOURCE].model_copy(update={"options": {"directory": str(wd / "psa-export")}})
    systems["ledger"] = systems["ledger"].model_copy(update={"options": {"directory": str(wd / "ledger")}})
    return cfg.model_copy(update={
        "store": cfg.store.model_copy(update={"url": f"sqlite:///{wd / 'state.sqlite'}"}),
        "runtime": cfg.runtime.model_copy(update={"system_database_url": f"sqlite:///{wd / 'dbos.sqlite'}",
                                                   "log_level": "WARNING"}),
        "systems": systems,
    })


def months_of(start: str, months: int) -> list[str]:
    y, m = (int(x) for x in start.split("-"))
    out = []
    for _ in range(months):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def cutoff_of(period: str, days: int) -> dt.datetime:
    y, m = (int(x) for x in period.split("-"))
    end = dt.date(y, m, calendar.monthrange(y, m)[1])
    return dt.datetime.combine(end + dt.timedelta(days=days), dt.time(23, 59, 59), tzinfo=dt.UTC)


Progress = Callable[[str, dict[str, Any]], None]


def run_demo(opts: DemoOptions, *, progress: Progress | None = None) -> DemoResult:
    started = time.monotonic()
    say: Progress = progress or (lambda _stage, _info: None)
    wd = opts.workdir
    wd.mkdir(parents=True, exist_ok=True)
    export = wd / "psa-export"
    result = DemoResult(workdir=str(wd))
    params = {"seed": opts.seed, "employees": opts.employees, "months": opts.months, "start": opts.start}
    marker = wd / "generated.json"
    if not (marker.exists() and json.loads(marker.read_text()) == params and (export / "manifest.json").exists()):
        say("generate", params)
        report = generate_firm(export, seed=opts.seed, employees=opts.employees, months=opts.months, start=opts.start)
        marker.write_text(json.dumps(params))
        result.generated = {f.name: f.rows for f in report.files}
    else:
        manifest = json.loads((export / "manifest.json").read_text())
        result.generated = {name: int(info["rows"]) for name, info in manifest.get("files", {}).items()}
    say("generated", result.generated)

    cfg = demo_config(wd)
    ctx = FlowContext(cfg, workdir=wd)
    ctx.migrate()
    ref = load_reference(ctx, SOURCE)
    result.reference = {"counts": ref.counts, "problems": ref.problems[:20], "periods_created": ref.periods_created}
    # master data: field authority applied, stewardship decisions and ERP-owned values kept over the PSA files
    md = masterdata.sync_from_reference(ctx, SOURCE)
    result.reference["master_data"] = {k: v for k, v in dataclasses.asdict(md).items() if isinstance(v, int)}
    say("reference", result.reference)
    set_current(ctx)
    # one durable queue per configured system (concurrency and rate limits from config, with headroom)
    # a one-process job: poll queues and notifications often, so each queued step starts within ~50 ms
    settings = dataclasses.replace(cfg.runtime.to_runtime(), queue_polling_interval_sec=0.05,
                                   notification_polling_interval_sec=0.05)
    rt.Runtime.launch(settings, queues=list(cfg.queue_specs().values()))
    try:
        drop = ctx.connector(SOURCE).drop_id()[:12]
        entities = sorted(ctx.reference.entities)
        # ---- event-driven subscriptions (flows/subscriptions.py): ProjectApproved -> ERP project -> mart -> log
        result.subscriptions = subscriptions.demo_chain(ctx, wd, SOURCE)
        say("subscriptions", result.subscriptions)
        # ---- end subscriptions
        periods = months_of(opts.start, opts.months)
        for i, period in enumerate(periods):
            last = i == len(periods) - 1
            until = None if last else cutoff_of(period, opts.cutoff_days).isoformat()
            month: dict[str, Any] = {"period": period, "cutoff": until or "end of export"}
            wf = rt.enqueue(SOURCE, durable.ingest_workflow, SOURCE, until, opts.batch_size,
                            workflow_id=f"demo:{drop}:ingest:{period}")
            month["ingest"] = rt.result(wf)
            say("ingested", month)
            month["posting"] = []
            for entity in entities:
                wf = rt.enqueue(ctx.ledger_system(entity), durable.posting_workflow, entity, period, None,
                                workflow_id=f"demo:{drop}:post:{entity}:{period}")
                out = rt.result(wf)
                month["posting"].append(out)
                say("posted", out)
            # billing (flows/billing.py): T&M run + milestones of the month, then its invoices posted
            month["billing"] = billing.demo_billing_step(ctx, entities, period, f"demo:{drop}")
            say("billed", month["billing"])
            if not last:
                month["close"] = []
                for entity in entities:
                    wf = rt.start(_close_workflow, entity, period, workflow_id=f"demo:{drop}:close:{entity}:{period}")
                    month["close"].append(rt.result(wf))
                say("closed", {"period": period, "close": month["close"]})
            result.months.append(month)
    finally:
        rt.Runtime.shutdown()
        set_current(None)
    result.ledger_check = ctx.connector("ledger").check()
    say("ledger_checked", {"errors": len(result.ledger_check)})
    mart = build_marts(ctx, wd / "mart.duckdb")
    result.marts = mart.to_json()
    say("marts", result.marts)
    recon = reconcile(ctx, export, mart_path=mart.path, source_system=SOURCE)
    result.reconciliation = recon.to_json(items=False)
    result.recon = recon
    say("reconciled", {"ok": recon.ok, "findings": recon.findings[:20]})
    result.dead_letters = dlq.counts(ctx)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def print_summary(result: DemoResult, console: Console) -> None:
    """The human summary of a demo run: posting runs per month and entity, ledger check, dead letters."""
    table = Table(title="Posting runs (one per legal entity and month)", title_justify="left")
    for col in ("period", "entity", "status", "journals", "lines", "versions", "redated", "DLQ", "debits = credits"):
        table.add_column(col, justify="left" if col in ("period", "entity", "status", "debits = credits") else "right")
    for m in result.months:
        for p in m.get("posting", []):
            ct = p.get("control_totals") or {}
            totals = "\n".join(f"{v} {c}" for c, v in sorted(ct.get("debit", {}).items()))
            table.add_row(m["period"], p["legal_entity_id"], p["status"], str(p["journals"]), str(p["journal_lines"]),
                          str(ct.get("source_versions", 0)), str(p["redated_lines"]), str(p["dead_lettered"]), totals)
    console.print(table)
    state = "[green]0 errors[/green]" if not result.ledger_check else f"[red]{len(result.ledger_check)} errors[/red]"
    console.print(f"Beancount ledger check: {state}; ledger at {result.workdir}/ledger/main.beancount")
    if result.recon is not None:
        render(result.recon, console)
    if result.marts:
        console.print(f"Reporting mart: {result.marts.get('path')} ({sum(result.marts.get('rows', {}).values()):,} "
                      "rows: project margin, utilization, revenue, WIP, GL balances)")
    console.print(f"Open dead letters: {result.dead_letters or 'none'}")
    console.print(f"Finished in {result.seconds:.1f} s (workdir {result.workdir}); run again: nothing is posted twice.")


@rt.workflow("lb.demo_close")
def _close_workflow(entity: str, period: str) -> dict[str, Any]:
    return durable.close_step(entity, period)
