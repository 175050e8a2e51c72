"""Admin API ``/api/v1``: posting runs, workflows, dead letters, stewardship, periods, xref, audit.

Each route declares its scope (``read`` < ``operate`` < ``admin``); see docs/service.md for the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from ledgerbridge import runtime as rt
from ledgerbridge.domain.periods import check_transition
from ledgerbridge.flows import dlq, posting
from ledgerbridge.flows.periods import close_checklist, close_period
from ledgerbridge.model.entities import PeriodStatus
from ledgerbridge.service import metrics
from ledgerbridge.service.auth import Principal, require
from ledgerbridge.store import audit, dead_letters, journals, stewardship, xref
from ledgerbridge.store import periods as periods_repo
from ledgerbridge.store.dead_letters import DeadLetter
from ledgerbridge.store.periods import Period
from ledgerbridge.store.schema import posted_journal_lines, posted_journals
from ledgerbridge.store.stewardship import StewardshipItem
from ledgerbridge.store.xref import XrefEntry

READ, OPERATE, ADMIN = require("read"), require("operate"), require("admin")

R, OP, AD = Depends(READ), Depends(OPERATE), Depends(ADMIN)


class Message(BaseModel):
    message: str


class RunOut(BaseModel):
    id: str
    legal_entity_id: str
    period: str
    target_system: str
    status: str
    control_totals: Any
    started_at: dt.datetime
    finished_at: dt.datetime | None
    journals: int = 0
    journal_lines: int = 0


class PostRequest(BaseModel):
    entity: str = Field(min_length=1, max_length=64)
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    target: str | None = Field(default=None, max_length=64)


class LettersFilter(BaseModel):
    queue: Literal["operational", "financial"] | None = None
    flow: str | None = None
    system: str | None = None
    entity: str | None = None
    error_kind: Literal["transient", "rate_limited", "permanent", "validation", "conflict"] | None = None
    error_code: str | None = None
    older_than_hours: float | None = Field(default=None, ge=0, le=1e6)
    limit: int = Field(default=1000, ge=1, le=10_000)


class ReplayOut(BaseModel):
    replayed: int
    skipped: int
    failed: int
    details: list[dict[str, str]]


class DiscardRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class DiscardOut(BaseModel):
    discarded: int


class ResolveRequest(BaseModel):
    pick: str | None = Field(default=None, description="a side: a system name, a role (psa/erp) or 'canonical'")
    value: Any = Field(default=None, description="a value to enter instead of picking a side")
    reason: str = Field(min_length=1, max_length=2000)


class PeriodAction(BaseModel):
    force: bool = Field(default=False, description="close despite checklist problems (admin scope; audited)")
    reopen: bool = Field(default=False, description="reopen a closing/closed period (admin scope; audited)")


class PeriodOut(BaseModel):
    legal_entity_id: str
    period: str
    start_date: dt.date
    end_date: dt.date
    status: str
    changed_at: dt.datetime


class ChecklistOut(BaseModel):
    entity: str
    period: str
    ready: bool
    problems: list[str]


class CloseOut(BaseModel):
    entity: str
    period: str
    status: str
    problems: list[str]


class VerifyOut(BaseModel):
    ok: bool
    first_bad_seq: int | None
    checked: int
    reason: str


def _runtime() -> None:
    if not rt.Runtime.is_launched():
        raise HTTPException(409, "the durable runtime is not running in this process (started with --api-only): "
                                 "ask a worker process, or run `ledgerbridge serve` without --api-only")


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def _letter(ctx: Any, letter_id: str) -> DeadLetter:
    with ctx.engine.connect() as conn:
        got = dead_letters.get(conn, letter_id)
    if got is None:
        raise HTTPException(404, f"no dead letter {letter_id!r} (list them with GET /api/v1/dead-letters)")
    return got


def make_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    # ------------------------------------------------------------------ runs
    @r.get("/runs", response_model=list[RunOut], tags=["runs"], summary="Posting runs (scope: read)")
    def list_runs(request: Request, entity: str | None = None, period: str | None = None,
                  status: Literal["started", "posted", "failed", "cancelled"] | None = None, _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            runs = journals.list_runs(conn, legal_entity_id=entity, period=period, status=status)
            counts = {rid: (int(j), int(n)) for rid, j, n in conn.execute(
                sa.select(posted_journals.c.posting_run_id, sa.func.count(sa.distinct(posted_journals.c.id)),
                          sa.func.count(posted_journal_lines.c.line_no))
                .select_from(posted_journals.join(posted_journal_lines,
                                                  posted_journal_lines.c.journal_id == posted_journals.c.id))
                .where(posted_journals.c.posting_run_id.in_([x.id for x in runs] or [""]))
                .group_by(posted_journals.c.posting_run_id))}
        return [RunOut(**dataclasses.asdict(x), journals=counts.get(x.id, (0, 0))[0],
                       journal_lines=counts.get(x.id, (0, 0))[1]) for x in runs]

    @r.get("/runs/{run_id}", response_model=RunOut, tags=["runs"], summary="One posting run (scope: read)")
    def get_run(request: Request, run_id: str, _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            run = journals.get_run(conn, run_id)
            if run is None:
                raise HTTPException(404, f"no posting run {run_id!r} (list them with GET /api/v1/runs)")
            j, n = conn.execute(
                sa.select(sa.func.count(sa.distinct(posted_journals.c.id)),
                          sa.func.count(posted_journal_lines.c.line_no))
                .select_from(posted_journals.join(posted_journal_lines,
                                                  posted_journal_lines.c.journal_id == posted_journals.c.id))
                .where(posted_journals.c.posting_run_id == run_id)).one()
        return RunOut(**dataclasses.asdict(run), journals=int(j), journal_lines=int(n))

    @r.post("/runs", tags=["runs"], summary="Run the posting run of one entity and period (scope: operate)")
    def start_run(request: Request, body: PostRequest, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        if body.entity not in ctx.reference.entities:
            with ctx.engine.connect() as conn:
                if not periods_repo.list_periods(conn, legal_entity_id=body.entity):
                    raise HTTPException(404, f"unknown legal entity {body.entity!r}")
        if body.target is not None and body.target not in ctx.config.systems:
            raise HTTPException(404, f"unknown target system {body.target!r}")
        with ctx.engine.connect() as conn:
            if periods_repo.get_period(conn, body.entity, body.period) is None:
                raise HTTPException(404, f"no period {body.period} for {body.entity} (GET /api/v1/periods)")
        try:
            if getattr(request.app.state, "worker_running", False):  # this app's worker: durable posting run
                from ledgerbridge.flows import durable

                wf = rt.start(durable.posting_workflow, body.entity, body.period, body.target,
                              workflow_id=f"api-post:{body.entity}:{body.period}:{uuid.uuid4().hex[:12]}")
                out = rt.result(wf)
            else:
                out = dataclasses.asdict(posting.post_period(ctx, body.entity, body.period, body.target))
        except Exception:
            metrics.record_flow("posting", False)
            raise
        metrics.record_flow("posting", out.get("status") != "failed")
        with ctx.engine.begin() as conn:
            audit.append(conn, p.actor, "api.post_period", f"{body.entity}/{body.period}",
                         {"run_id": out.get("run_id"), "status": out.get("status")})
        return out

    # ------------------------------------------------------------------ workflows
    @r.get("/workflows", tags=["workflows"], summary="Durable workflows, newest first (scope: read)")
    def list_workflows(status: Literal["ENQUEUED", "DELAYED", "PENDING", "SUCCESS", "ERROR", "CANCELLED",
                                       "MAX_RECOVERY_ATTEMPTS_EXCEEDED"] | None = None,
                       name: str | None = None, queue: str | None = None,
                       limit: int = Query(100, ge=1, le=10_000), _p: Principal = R) -> Any:
        _runtime()
        return rt.list_workflows(status=status, name=name, queue=queue, limit=limit)

    def _wf(workflow_id: str) -> dict[str, Any]:
        _runtime()
        got = rt.get_workflow(workflow_id)
        if got is None:
            raise HTTPException(404, f"no workflow {workflow_id!r} (GET /api/v1/workflows)")
        return got

    @r.get("/workflows/{workflow_id}", tags=["workflows"], summary="One workflow with input/output (scope: read)")
    def get_workflow(workflow_id: str, _p: Principal = R) -> Any:
        return _wf(workflow_id)

    @r.get("/workflows/{workflow_id}/steps", tags=["workflows"], summary="Checkpointed steps (scope: read)")
    def workflow_steps(workflow_id: str, _p: Principal = R) -> Any:
        _wf(workflow_id)
        return rt.workflow_steps(workflow_id)

    @r.post("/workflows/{workflow_id}/cancel", tags=["workflows"], summary="Cancel a workflow (scope: operate)")
    def cancel_workflow(workflow_id: str, _p: Principal = OP) -> Any:
        _wf(workflow_id)
        return rt.cancel(workflow_id)

    @r.post("/workflows/{workflow_id}/resume", tags=["workflows"],
            summary="Resume a cancelled or failed workflow from its last completed step (scope: operate)")
    def resume_workflow(workflow_id: str, _p: Principal = OP) -> Any:
        _wf(workflow_id)
        return rt.resume(workflow_id)

    # ------------------------------------------------------------------ dead letters
    @r.get("/dead-letters", response_model=list[DeadLetter], tags=["dead letters"],
           summary="Dead letters with filters (scope: read)")
    def list_letters(request: Request, queue: Literal["operational", "financial"] | None = None,
                     flow: str | None = None, system: str | None = None, entity: str | None = None,
                     error_kind: Literal["transient", "rate_limited", "permanent", "validation",
                                         "conflict"] | None = None,
                     error_code: str | None = None, older_than_hours: float | None = Query(None, ge=0, le=1e6),
                     status: Literal["open", "replayed", "discarded", "all"] = "open",
                     limit: int = Query(200, ge=1, le=10_000), _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return dead_letters.list_letters(
                conn, queue=queue, flow=flow, system=system, entity=entity, error_kind=error_kind,
                error_code=error_code,
                older_than=dt.timedelta(hours=older_than_hours) if older_than_hours is not None else None,
                status=None if status == "all" else status, limit=limit)

    @r.get("/dead-letters/{letter_id}", response_model=DeadLetter, tags=["dead letters"],
           summary="One dead letter with its payload (scope: read)")
    def show_letter(request: Request, letter_id: str, _p: Principal = R) -> Any:
        return _letter(_ctx(request), letter_id)

    @r.post("/dead-letters/{letter_id}/replay", response_model=ReplayOut, tags=["dead letters"],
            summary="Replay one letter with the current configuration (scope: operate)")
    def replay_letter(request: Request, letter_id: str, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        return dataclasses.asdict(dlq.replay(ctx, [_letter(ctx, letter_id)], actor=p.actor))

    @r.post("/dead-letters/replay", response_model=ReplayOut, tags=["dead letters"],
            summary="Replay every open letter matching the filter (scope: operate)")
    def replay_letters(request: Request, body: LettersFilter, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        with ctx.engine.connect() as conn:
            letters = dead_letters.list_letters(
                conn, queue=body.queue, flow=body.flow, system=body.system, entity=body.entity,
                error_kind=body.error_kind, error_code=body.error_code,
                older_than=dt.timedelta(hours=body.older_than_hours) if body.older_than_hours is not None else None,
                limit=body.limit)
        return dataclasses.asdict(dlq.replay(ctx, letters, actor=p.actor))

    @r.post("/dead-letters/{letter_id}/discard", response_model=DiscardOut, tags=["dead letters"],
            summary="Close a letter without replaying it; the reason is audited (scope: operate)")
    def discard_letter(request: Request, letter_id: str, body: DiscardRequest, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        return {"discarded": dlq.discard(ctx, [_letter(ctx, letter_id)], body.reason, actor=p.actor)}

    # ------------------------------------------------------------------ stewardship
    @r.get("/stewardship", response_model=list[StewardshipItem], tags=["stewardship"],
           summary="Master-data conflicts waiting for a decision (scope: read)")
    def list_stewardship(request: Request, status: Literal["open", "resolved", "all"] = "open",
                         canonical_type: str | None = None, canonical_id: str | None = None,
                         limit: int = Query(1000, ge=1, le=10_000), _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return stewardship.list_items(conn, status=None if status == "all" else status,
                                          canonical_type=canonical_type, canonical_id=canonical_id, limit=limit)

    @r.post("/stewardship/{item_id}/resolve", response_model=StewardshipItem, tags=["stewardship"],
            summary="Record the decision on a conflict (scope: operate)")
    def resolve_stewardship(request: Request, item_id: str, body: ResolveRequest, p: Principal = OP) -> Any:
        """The master-data flow applies the decision: validated like a propagation, made canonical, pushed to the
        targets and audited (the item stays open when the chosen value would make the record invalid)."""
        from ledgerbridge.flows import masterdata

        ctx = _ctx(request)
        with ctx.engine.connect() as conn:
            item = stewardship.get(conn, item_id)
        if item is None:
            raise HTTPException(404, f"no stewardship item {item_id!r} (GET /api/v1/stewardship)")
        if item.status != "open":
            raise HTTPException(409, f"stewardship item {item_id} is already {item.status}")
        if body.pick is not None:
            return masterdata.resolve(ctx, item_id, pick=body.pick, actor=p.actor, reason=body.reason)
        return masterdata.resolve(ctx, item_id, value=body.value, actor=p.actor, reason=body.reason)

    # ------------------------------------------------------------------ periods
    @r.get("/periods", response_model=list[PeriodOut], tags=["periods"], summary="Accounting periods (scope: read)")
    def list_periods(request: Request, entity: str | None = None,
                     status: Literal["open", "closing", "closed", "locked"] | None = None, _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return [dataclasses.asdict(x) for x in periods_repo.list_periods(conn, legal_entity_id=entity,
                                                                             status=status)]

    def _period(ctx: Any, entity: str, period: str) -> Period:
        with ctx.engine.connect() as conn:
            got = periods_repo.get_period(conn, entity, period)
        if got is None:
            raise HTTPException(404, f"no period {period} for {entity} (GET /api/v1/periods)")
        return got

    @r.get("/periods/{entity}/{period}/checklist", response_model=ChecklistOut, tags=["periods"],
           summary="What stands in the way of closing the period (scope: read)")
    def checklist(request: Request, entity: str, period: str, _p: Principal = R) -> Any:
        ctx = _ctx(request)
        _period(ctx, entity, period)
        problems = close_checklist(ctx, entity, period)
        return {"entity": entity, "period": period, "ready": not problems, "problems": problems}

    def _move(request: Request, p: Principal, entity: str, period: str, target: PeriodStatus,
              reopen: bool) -> Any:
        ctx = _ctx(request)
        with ctx.engine.begin() as conn:
            cur = periods_repo.get_period(conn, entity, period)
            if cur is None:
                raise HTTPException(404, f"no period {period} for {entity} (GET /api/v1/periods)")
            check_transition(f"period {entity}/{period}", PeriodStatus(cur.status), target, reopen=reopen)
            periods_repo.set_period(conn, entity, period, target.value, start_date=cur.start_date,
                                    end_date=cur.end_date)
            audit.append(conn, p.actor, f"period.{target.value}", f"{entity}/{period}",
                         {"from": cur.status, "reopen": reopen})
        return dataclasses.asdict(_period(ctx, entity, period))

    @r.post("/periods/{entity}/{period}/open", response_model=PeriodOut, tags=["periods"],
            summary="Open a period: create it (month bounds) if new (scope: operate); reopening a closing or "
                    "closed period needs reopen=true and an admin token")
    def open_period(request: Request, entity: str, period: str, body: PeriodAction, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        try:
            start, end = periods_repo.month_bounds(period)
        except (ValueError, TypeError, IndexError) as exc:
            raise HTTPException(422, f"period {period!r} must be YYYY-MM ({exc})") from None
        with ctx.engine.begin() as conn:
            cur = periods_repo.get_period(conn, entity, period)
            if cur is None:
                if entity not in ctx.reference.entities and not periods_repo.list_periods(conn,
                                                                                          legal_entity_id=entity):
                    raise HTTPException(404, f"unknown legal entity {entity!r}")
                periods_repo.set_period(conn, entity, period, "open", start_date=start, end_date=end)
                audit.append(conn, p.actor, "period.opened", f"{entity}/{period}", {"created": True})
                return dataclasses.asdict(periods_repo.get_period(conn, entity, period))  # type: ignore[arg-type]
        if cur.status != "open" and p.token.scope != "admin":
            raise HTTPException(403, f"reopening {entity}/{period} ({cur.status}) needs an admin token")
        return _move(request, p, entity, period, PeriodStatus.OPEN, body.reopen)

    @r.post("/periods/{entity}/{period}/start-closing", response_model=PeriodOut, tags=["periods"],
            summary="Move an open period to closing (scope: operate)")
    def start_closing(request: Request, entity: str, period: str, p: Principal = OP) -> Any:
        return _move(request, p, entity, period, PeriodStatus.CLOSING, False)

    @r.post("/periods/{entity}/{period}/close", response_model=CloseOut, tags=["periods"],
            responses={409: {"description": "checklist problems block the close"}},
            summary="Run the close checklist and close the period (scope: operate; force needs admin)")
    def close(request: Request, entity: str, period: str, body: PeriodAction, p: Principal = OP) -> Any:
        ctx = _ctx(request)
        _period(ctx, entity, period)
        if body.force and p.token.scope != "admin":
            raise HTTPException(403, "closing despite checklist problems (force) needs an admin token")
        out = close_period(ctx, entity, period, force=body.force, actor=p.actor)
        if out["status"] == "blocked":
            from fastapi.responses import JSONResponse

            return JSONResponse({"message": f"{entity} {period} cannot close: {len(out['problems'])} problem(s)",
                                 **out}, status_code=409)
        return out

    @r.post("/periods/{entity}/{period}/lock", response_model=PeriodOut, tags=["periods"],
            summary="Lock a closed period for good (scope: admin)")
    def lock(request: Request, entity: str, period: str, p: Principal = AD) -> Any:
        return _move(request, p, entity, period, PeriodStatus.LOCKED, False)

    # ------------------------------------------------------------------ xref and audit
    @r.get("/xref/{canonical_type}/{canonical_id}", response_model=list[XrefEntry], tags=["xref"],
           summary="Every system's id of one canonical record (scope: read)")
    def bindings(request: Request, canonical_type: str, canonical_id: str, _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return xref.bindings_of(conn, canonical_type, canonical_id)

    @r.get("/xref/{canonical_type}", response_model=list[XrefEntry], tags=["xref"],
           summary="Look up by a system's external id (scope: read)")
    def by_external(request: Request, canonical_type: str, system: str, external_id: str,
                    _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return list(xref.lookup_external_many(conn, canonical_type, system, [external_id]).values())

    @r.get("/audit/verify", response_model=VerifyOut, tags=["audit"],
           summary="Walk the hash chain of the audit log (scope: read)")
    def verify(request: Request, _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return dataclasses.asdict(audit.verify(conn))

    @r.get("/audit/entries", tags=["audit"], summary="Audit entries, oldest first from since_seq (scope: read)")
    def entries(request: Request, subject: str | None = None, since_seq: int = Query(0, ge=0, le=2**62),
                limit: int = Query(100, ge=1, le=10_000), _p: Principal = R) -> Any:
        with _ctx(request).engine.connect() as conn:
            return [dataclasses.asdict(e) for e in audit.entries(conn, subject=subject, since_seq=since_seq,
                                                                 limit=limit)]

    return r
