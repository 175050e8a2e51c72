"""Period close with its checklist: nothing staged and unposted for the period or before it, no unfinished posting
run, no open financial dead letter for the entity and period. The period moves open -> closing -> closed (the
legal moves of :mod:`ledgerbridge.domain.periods`), the target ledger is told where it tracks periods, and the
decision is audited. Nothing is ever posted into a closed period afterwards: late items follow the late-item
policy (:mod:`ledgerbridge.flows.posting` sweeps them)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ledgerbridge.domain.periods import check_transition
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.model.entities import PeriodStatus
from ledgerbridge.store import audit, journals
from ledgerbridge.store import periods as periods_repo
from ledgerbridge.store.schema import dead_letters as dl_t
from ledgerbridge.store.schema import staging_lines as staging_t


def close_checklist(ctx: FlowContext, entity: str, period: str) -> list[str]:
    """What stands in the way of closing ``entity``/``period`` (empty = ready to close)."""
    problems: list[str] = []
    with ctx.engine.connect() as conn:
        unposted = conn.execute(sa.select(staging_t.c.status, sa.func.count()).where(
            staging_t.c.legal_entity_id == entity, staging_t.c.period <= period,
            staging_t.c.status.in_(("staged", "in_run"))).group_by(staging_t.c.status)).all()
        for status, n in unposted:
            problems.append(f"{n} approved line(s) {status} and not posted for {entity} up to {period}: "
                            "run the posting run first")
        started = [r.id for r in journals.list_runs(conn, legal_entity_id=entity, period=period, status="started")]
        if started:
            problems.append(f"posting run(s) not finished: {', '.join(started)} — execute or cancel them")
        open_fin = conn.execute(sa.select(dl_t.c.payload).where(
            dl_t.c.queue == "financial", dl_t.c.status == "open")).scalars().all()
        mine = [p for p in open_fin if _entity_period(ctx, p) is not None
                and _entity_period(ctx, p)[0] == entity and _entity_period(ctx, p)[1] <= period]
        if mine:
            problems.append(f"{len(mine)} open financial dead letter(s) for {entity} up to {period}: "
                            "replay or discard them (ledgerbridge dlq list --queue financial)")
        problems += _reconciliation_problems(conn, entity, period)
    return problems


def _reconciliation_problems(conn: sa.Connection, entity: str, period: str) -> list[str]:
    """The newest stored reconciliation covering the entity and period must leave 0.00 unexplained."""
    try:
        from ledgerbridge.store.schema import recon_cells, recon_runs
    except ImportError:  # pragma: no cover - older store without reconciliation runs
        return []
    newest = conn.execute(sa.select(recon_runs.c.id).join(recon_cells, recon_cells.c.run_id == recon_runs.c.id)
                          .where(recon_cells.c.legal_entity_id == entity, recon_cells.c.period == period)
                          .order_by(recon_runs.c.at.desc()).limit(1)).scalar()
    if newest is None:
        return []
    bad = conn.execute(sa.select(sa.func.count()).select_from(recon_cells).where(
        recon_cells.c.run_id == newest, recon_cells.c.legal_entity_id == entity, recon_cells.c.period == period,
        recon_cells.c.unexplained != 0)).scalar_one()
    return [f"reconciliation {newest}: {bad} cell(s) of {entity} {period} with unexplained variance — "
            "investigate (ledgerbridge reconcile --period ...) before closing"] if bad else []


def _entity_period(ctx: FlowContext, payload: Any) -> tuple[str, str] | None:
    """The legal entity and period a financial dead letter concerns: named in the payload (posting, billing), or
    derived from the source item it carries (transactions stage: the project's entity, the item's date)."""
    if not isinstance(payload, dict):
        return None
    if payload.get("legal_entity_id"):
        return str(payload["legal_entity_id"]), str(payload.get("period") or payload.get("date", ""))[:7]
    src = payload.get("source")
    if isinstance(src, dict) and src.get("project_id"):
        project = ctx.reference.projects.get(str(src["project_id"]))
        day = str(src.get("work_date") or src.get("expense_date") or "")
        if project is not None and day:
            return project.legal_entity_id, day[:7]
    return None


def close_period(ctx: FlowContext, entity: str, period: str, *, force: bool = False,
                 actor: str = "ledgerbridge") -> dict[str, Any]:
    """Run the checklist and close the period (open -> closing -> closed). ``force`` closes despite problems
    (recorded in the audit log with the problems)."""
    problems = close_checklist(ctx, entity, period)
    if problems and not force:
        return {"entity": entity, "period": period, "status": "blocked", "problems": problems}
    with ctx.engine.begin() as conn:
        current = periods_repo.get_period(conn, entity, period)
        if current is None:
            return {"entity": entity, "period": period, "status": "unknown",
                    "problems": [f"no period {period} for {entity}"]}
        status = PeriodStatus(current.status)
        for nxt in (PeriodStatus.CLOSING, PeriodStatus.CLOSED):
            if status in (PeriodStatus.CLOSED, PeriodStatus.LOCKED):
                break
            check_transition(f"period {entity}/{period}", status, nxt)
            periods_repo.set_period(conn, entity, period, nxt.value, start_date=current.start_date,
                                    end_date=current.end_date)
            status = nxt
        audit.append(conn, actor, "period.closed", f"{entity}/{period}",
                     {"forced": bool(problems and force), "problems": problems})
    target = ctx.connector(ctx.ledger_system(entity))
    if hasattr(target, "set_period_status"):
        target.set_period_status(entity, period, status.value, current.end_date)
    return {"entity": entity, "period": period, "status": status.value, "problems": problems}
