"""Stored reconciliation results, for trends and the dashboard's drill-down.

:func:`run_reconciliation` reconciles (``flows.reconcile.reconcile``), keeps the cells of the asked period/entity
and stores them: one ``recon_runs`` row (summary) and one ``recon_cells`` row per cell (figures plus the cell's
JSON with every explaining item). :func:`variance_trend` gives the variance per period across the stored runs
(latest run per period); :func:`latest_run`, :func:`get_run` and :func:`run_cells` read them back.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import typer

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.reconcile import Reconciliation, _txt, reconcile
from ledgerbridge.store.schema import recon_cells as rc_t
from ledgerbridge.store.schema import recon_runs as rr_t

ZERO = Decimal(0)


@dataclass
class StoredRun:
    id: str
    at: dt.datetime
    period: str | None
    legal_entity_id: str | None
    ok: bool
    cells: int
    unexplained_cells: int
    summary: dict[str, Any]


def filter_cells(recon: Reconciliation, *, period: str | None = None, entity: str | None = None) -> Reconciliation:
    """The same result restricted to one period and/or legal entity (findings kept when they name neither)."""
    cells = [c for c in recon.cells if (period is None or c.period == period)
             and (entity is None or c.legal_entity_id == entity)]
    others = {(c.legal_entity_id, c.period) for c in recon.cells} - {(c.legal_entity_id, c.period) for c in cells}
    findings = [f for f in recon.findings if not any(f.startswith(f"{e} {p} ") for e, p in others)]
    return Reconciliation(cells=cells, findings=findings, awaiting_approval=recon.awaiting_approval,
                          psa_errors=recon.psa_errors, sources=dict(recon.sources))


def default_paths(ctx: FlowContext) -> tuple[Path, Path | None]:
    """The PSA export directory (the configured psa_csv system's ``directory``) and the mart (``mart.duckdb`` in
    the work directory, when built)."""
    export: Path | None = None
    for s in ctx.config.systems.values():
        if s.connector == "psa_csv" and s.options.get("directory"):
            export = ctx.resolve_path(str(s.options["directory"]))
            break
    if export is None:
        export = ctx.workdir / "psa-export"
    mart = ctx.workdir / "mart.duckdb"
    return export, (mart if mart.exists() else None)


def store_result(ctx: FlowContext, recon: Reconciliation, *, period: str | None = None, entity: str | None = None,
                 at: dt.datetime | None = None) -> str:
    """Store one reconciliation result (already filtered); returns the run id."""
    run_id = str(uuid.uuid4())
    at = at or dt.datetime.now(dt.UTC)
    summary = {"explanation_counts": recon.explanation_counts(), "findings": recon.findings[:200],
               "psa_errors": recon.psa_errors[:50], "awaiting_approval": len(recon.awaiting_approval),
               "sources": recon.sources,
               "variance_abs": _txt(sum((abs(c.variance) for c in recon.cells), ZERO)),
               "unexplained_abs": _txt(sum((abs(c.unexplained) for c in recon.cells), ZERO))}
    rows = [{"run_id": run_id, "legal_entity_id": c.legal_entity_id, "period": c.period, "measure": c.measure,
             "currency": c.currency, "psa": c.psa, "ledger": c.ledger, "mart": c.mart, "variance": c.variance,
             "explained": c.explained, "unexplained": c.unexplained, "detail": c.to_json()} for c in recon.cells]
    with ctx.engine.begin() as conn:
        conn.execute(rr_t.insert().values(id=run_id, at=at, period=period, legal_entity_id=entity,
                                          ok=1 if recon.ok else 0, cells=len(recon.cells),
                                          unexplained_cells=len(recon.unexplained_cells), summary=summary))
        if rows:
            conn.execute(rc_t.insert(), rows)
    return run_id


def run_reconciliation(ctx: FlowContext, *, period: str | None = None, entity: str | None = None,
                       export_dir: Path | None = None, mart_path: Path | None = None,
                       store: bool = True) -> tuple[Reconciliation, str | None]:
    """Reconcile, keep the asked period/entity, store the result (unless ``store=False``)."""
    d_export, d_mart = default_paths(ctx)
    recon = reconcile(ctx, export_dir or d_export, mart_path=mart_path if mart_path is not None else d_mart)
    recon = filter_cells(recon, period=period, entity=entity)
    if entity is not None and not recon.cells and entity not in ctx.reference.entities:
        raise ValueError(f"reconcile: unknown legal entity {entity!r}; known: "
                         f"{', '.join(sorted(ctx.reference.entities)) or 'none'}")
    run_id = store_result(ctx, recon, period=period, entity=entity) if store else None
    return recon, run_id


def _run(r: Any) -> StoredRun:
    return StoredRun(id=r.id, at=r.at, period=r.period, legal_entity_id=r.legal_entity_id, ok=bool(r.ok),
                     cells=int(r.cells), unexplained_cells=int(r.unexplained_cells), summary=dict(r.summary))


def list_runs(conn: sa.Connection, *, limit: int = 50) -> list[StoredRun]:
    return [_run(r) for r in conn.execute(sa.select(rr_t).order_by(rr_t.c.at.desc(), rr_t.c.id).limit(limit))]


def get_run(conn: sa.Connection, run_id: str) -> StoredRun | None:
    r = conn.execute(sa.select(rr_t).where(rr_t.c.id == run_id)).first()
    return _run(r) if r is not None else None


def latest_run(conn: sa.Connection) -> StoredRun | None:
    runs = list_runs(conn, limit=1)
    return runs[0] if runs else None


def run_cells(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    """The stored cells of a run (each the cell's JSON, with its explaining items)."""
    q = sa.select(rc_t.c.detail).where(rc_t.c.run_id == run_id).order_by(
        rc_t.c.legal_entity_id, rc_t.c.period, rc_t.c.measure, rc_t.c.currency)
    return [dict(d) for (d,) in conn.execute(q)]


def variance_trend(conn: sa.Connection) -> list[dict[str, Any]]:
    """Per legal entity and period, from the newest stored run covering it: absolute variance, explained and
    unexplained of the money cells (hours left out), oldest period first."""
    newest = (sa.select(rc_t.c.legal_entity_id, rc_t.c.period, sa.func.max(rr_t.c.at).label("at"))
              .join(rr_t, rr_t.c.id == rc_t.c.run_id).group_by(rc_t.c.legal_entity_id, rc_t.c.period).subquery())
    q = (sa.select(rc_t.c.run_id, rc_t.c.legal_entity_id, rc_t.c.period, rc_t.c.measure, rc_t.c.variance,
                   rc_t.c.explained, rc_t.c.unexplained)
         .join(rr_t, rr_t.c.id == rc_t.c.run_id)
         .join(newest, sa.and_(newest.c.legal_entity_id == rc_t.c.legal_entity_id,
                               newest.c.period == rc_t.c.period, newest.c.at == rr_t.c.at))
         .where(rc_t.c.measure != "hours"))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in conn.execute(q):
        k = (r.legal_entity_id, r.period)
        row = out.setdefault(k, {"legal_entity_id": k[0], "period": k[1], "run_id": r.run_id, "variance": ZERO,
                                 "explained": ZERO, "unexplained": ZERO})
        row["variance"] += abs(r.variance)
        row["explained"] += abs(r.explained)
        row["unexplained"] += abs(r.unexplained)
    return [out[k] for k in sorted(out, key=lambda k: (k[1], k[0]))]


def reconcile_command(
    period: str | None = typer.Option(None, "--period", "-p", help="Only this period (YYYY-MM)."),
    entity: str | None = typer.Option(None, "--entity", "-e", help="Only this legal entity."),
    export: Path | None = typer.Option(None, "--export", help="PSA export directory (default: the configured "
                                       "psa_csv system's directory)."),
    mart: Path | None = typer.Option(None, "--mart", help="Reporting mart (default: mart.duckdb in the work "
                                     "directory, when built)."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not store the result (trends skip it)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Configuration file."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Reconcile PSA vs ledger vs mart, store the result for trends; exit 1 on unexplained variance."""
    import json
    import re

    from rich.console import Console

    from ledgerbridge.flows.cli import make_context
    from ledgerbridge.flows.reconcile import render

    if period is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise typer.BadParameter(f"--period {period!r}: use YYYY-MM, e.g. 2026-09")
    ctx = make_context(config)
    try:
        recon, run_id = run_reconciliation(ctx, period=period, entity=entity, export_dir=export, mart_path=mart,
                                           store=not no_store)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(recon.to_json() | {"run_id": run_id}, indent=2, default=str))
    else:
        console = Console()
        render(recon, console)
        if run_id:
            console.print(f"Stored as reconciliation run {run_id} (dashboard: /dashboard/reconciliation/{run_id}).")
    if recon.unexplained_cells:
        raise typer.Exit(1)
