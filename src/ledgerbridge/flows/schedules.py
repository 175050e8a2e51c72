"""Cron windows per flow (DBOS schedule rows) and backfill of past windows (see docs/schedules.md).

Config (``schedules:``)::

    - name: nightly-ingest
      flow: ingest            # ingest | post | billing | reconcile
      cron: "0 2 * * *"       # 5 fields (or 6 with seconds first); timezone: optional IANA name
      overlap: skip           # skip a tick while the previous window still runs, or queue it behind
      options: {system: psa_files}

- :func:`apply` writes one DBOS schedule row per entry (``runtime.apply_schedules``, repeatable) and a queue per
  schedule (``lb-sched-<name>``, one window at a time). Each tick runs ``lb.schedule_tick``, which computes the window
  ``[live cursor, tick)`` — the live cursor is the end of the last window the schedule ran, kept in the store's
  ``cursors`` table (system ``schedule``, stream = schedule name) — and enqueues ``lb.flow_window`` for it. With
  ``overlap: skip`` a tick that finds the schedule's previous window still queued or running does nothing (the next
  tick's window then covers the gap, because the cursor did not move); with ``queue`` it waits its turn.
- :func:`backfill` re-runs past windows ``[from, to)`` cut by day, week or month. Each window is a workflow with a
  deterministic id (``backfill:<flow>:<start>:<end>:<options digest>``), so a repeated backfill runs nothing twice,
  and it NEVER moves a live cursor (only a live tick's window advances its schedule's cursor).

The flows themselves are idempotent (inbox keys, deterministic run ids), so a window re-run after a fix adds only
what is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledgerbridge import runtime as rt
from ledgerbridge.config.schema import LedgerbridgeConfig, ScheduleConfig
from ledgerbridge.flows.context import FlowContext, current
from ledgerbridge.runtime import schedules as rt_schedules
from ledgerbridge.store import cursors
from ledgerbridge.store import periods as periods_repo

FLOWS = ("ingest", "post", "billing", "reconcile")
CURSOR_SYSTEM = "schedule"
FLOW = "schedules"  # dead letters of failed windows
BACKFILL_QUEUE = "lb-backfill"
_FINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def schedule_queue(name: str) -> str:
    return f"lb-sched-{name}"


# ---------------------------------------------------------------------------------------------------------------------
# config check
# ---------------------------------------------------------------------------------------------------------------------


def check_schedules(cfg: LedgerbridgeConfig) -> list[tuple[tuple[str | int, ...], str]]:
    from croniter import croniter

    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, s in enumerate(cfg.schedules):
        if s.name in seen:
            problems.append((("schedules", i, "name"), f"schedule name {s.name!r} is used twice"))
        seen.add(s.name)
        if not croniter.is_valid(s.cron, second_at_beginning=len(s.cron.split()) == 6):
            problems.append((("schedules", i, "cron"), f"{s.cron!r} is not a cron expression: use 5 fields "
                                                       "(minute hour day month weekday), e.g. \"0 2 * * *\""))
        system = s.options.get("system")
        if system is not None and system not in cfg.systems:
            problems.append((("schedules", i, "options", "system"), f"unknown system {system!r}; configured: "
                                                                    f"{', '.join(sorted(cfg.systems)) or 'none'}"))
        if s.timezone is not None:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(s.timezone)
            except Exception:
                problems.append((("schedules", i, "timezone"), f"unknown time zone {s.timezone!r}; use an IANA name "
                                                               "such as Europe/Paris"))
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# what a window runs
# ---------------------------------------------------------------------------------------------------------------------


def _periods(start: dt.datetime, end: dt.datetime) -> list[str]:
    """Accounting periods (YYYY-MM) the window [start, end) touches."""
    last = end - dt.timedelta(microseconds=1)
    out, y, m = [], start.year, start.month
    while (y, m) <= (last.year, last.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _source_system(ctx: FlowContext, options: dict[str, Any]) -> str:
    if options.get("system"):
        return str(options["system"])
    for name, sc in ctx.config.systems.items():
        if sc.role == "psa":
            return name
    raise ValueError("no source system: set options.system (no system has role psa)")


def _entities(ctx: FlowContext, options: dict[str, Any]) -> list[str]:
    if options.get("entities") is not None:
        return [str(e) for e in options["entities"]]
    if ctx.reference.entities:
        return sorted(ctx.reference.entities)
    with ctx.engine.connect() as conn:
        return sorted({p.legal_entity_id for p in periods_repo.list_periods(conn)})


def _run_ingest(wf_id: str, start: dt.datetime, end: dt.datetime, options: dict[str, Any]) -> dict[str, Any]:
    from ledgerbridge.flows import durable

    system = _source_system(current(), options)
    child = rt.start(durable.ingest_workflow, system, end.isoformat(), int(options.get("batch_size", 5000)),
                     workflow_id=f"{wf_id}:ingest:{system}")
    return {"system": system, "until": end.isoformat(), "result": rt.result(child)}


def _run_post(wf_id: str, start: dt.datetime, end: dt.datetime, options: dict[str, Any]) -> dict[str, Any]:
    from ledgerbridge.flows import durable

    ctx = current()
    runs = []
    for period in _periods(start, end):
        for entity in _entities(ctx, options):
            child = rt.start(durable.posting_workflow, entity, period, options.get("target"),
                             workflow_id=f"{wf_id}:post:{entity}:{period}")
            out = rt.result(child)
            runs.append({"entity": entity, "period": period, "status": out.get("status"), "run_id": out.get("run_id")})
    return {"runs": runs}


def _run_billing(wf_id: str, start: dt.datetime, end: dt.datetime, options: dict[str, Any]) -> dict[str, Any]:
    from ledgerbridge.flows import billing

    kinds = list(options.get("kinds") or billing.DEFAULT_KINDS)
    out = []
    for period in _periods(start, end):
        child = rt.start(billing.billing_workflow, period, options.get("entity"), kinds, None,
                         workflow_id=f"{wf_id}:billing:{period}")
        out.append({"period": period, "result": rt.result(child)})
    return {"runs": out}


@rt.step("lb.schedule_reconcile")
def _reconcile_step(options: dict[str, Any]) -> dict[str, Any]:
    from ledgerbridge.flows.reconcile import reconcile

    ctx = current()
    system = _source_system(ctx, options)
    export = options.get("export_dir") or ctx.config.systems[system].options.get("directory")
    if not export:
        raise ValueError(f"reconcile window: set options.export_dir (system {system} names no directory)")
    mart = options.get("mart_path")
    recon = reconcile(ctx, ctx.resolve_path(str(export)), source_system=system,
                      mart_path=ctx.resolve_path(str(mart)) if mart else None)
    out: dict[str, Any] = json.loads(json.dumps(recon.to_json(items=False), default=str))
    return out


def _run_reconcile(wf_id: str, start: dt.datetime, end: dt.datetime, options: dict[str, Any]) -> dict[str, Any]:
    return _reconcile_step(options)


FlowRunner = Callable[[str, dt.datetime, dt.datetime, dict[str, Any]], dict[str, Any]]
RUNNERS: dict[str, FlowRunner] = {"ingest": _run_ingest, "post": _run_post, "billing": _run_billing,
                                  "reconcile": _run_reconcile}


@rt.step("lb.schedule_advance_cursor")
def _advance_cursor(schedule: str, end: str) -> dict[str, Any]:
    """Move the schedule's live cursor forward to ``end`` (never backwards); close the schedule's open window
    letters (this window covered what they failed on)."""
    from ledgerbridge.store import dead_letters

    with current().engine.begin() as conn:
        open_ids = [lt.id for lt in dead_letters.list_letters(conn, flow=FLOW, system=schedule)]
        dead_letters.mark(conn, open_ids, "replayed", resolution=f"a later window up to {end} succeeded")
        prior = cursors.get_cursor(conn, CURSOR_SYSTEM, schedule)
        if prior and str(prior.get("window_end", "")) >= end:
            return dict(prior)
        value = {"window_end": end}
        cursors.set_cursor(conn, CURSOR_SYSTEM, schedule, value)
        return value


@rt.step("lb.schedule_window_dead_letter")
def _window_dead_letter(flow: str, start: str, end: str, schedule: str | None, wf_id: str, options: dict[str, Any],
                        error_type: str, error: str) -> str:
    """A failed window is an operational dead letter (one open letter per schedule and flow: a window failing again
    bumps its attempts), so it shows in ``ledgerbridge dlq list`` next to the workflow's ERROR status."""
    from ledgerbridge.store import dead_letters

    letter = dead_letters.NewDeadLetter(
        "operational", FLOW, schedule or "backfill", flow,
        f"{schedule}:{flow}:from {start}" if schedule else f"backfill:{flow}:{start}:{end}",
        {"flow": flow, "start": start, "end": end, "schedule": schedule, "workflow_id": wf_id, "options": options,
         "error_type": error_type}, "permanent", "schedule.window_failed",
        f"{flow} window {start} .. {end} ({'schedule ' + schedule if schedule else 'backfill'}) failed: {error} — "
        + ("the live cursor did not move: the next tick retries from it" if schedule else
           "fix the cause, then fork the window's workflow or backfill again with other options"))
    with current().engine.begin() as conn:
        return dead_letters.add(conn, [letter])[0]


@rt.workflow("lb.flow_window")
def window_workflow(flow: str, start: str, end: str, options: dict[str, Any],
                    schedule: str | None = None) -> dict[str, Any]:
    """Run ``flow`` for the window [start, end). ``schedule`` set = a live tick: its cursor moves to ``end`` after
    success. Backfill windows pass None and leave every cursor alone."""
    wf_id = rt.current_workflow_id() or f"window:{flow}:{start}:{end}"
    runner = RUNNERS.get(flow)
    if runner is None:
        raise ValueError(f"unknown flow {flow!r}; use one of {', '.join(FLOWS)}")
    try:
        out = runner(wf_id, dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end), dict(options))
    except Exception as exc:
        _window_dead_letter(flow, start, end, schedule, wf_id, options, type(exc).__name__, str(exc))
        raise
    result = {"flow": flow, "start": start, "end": end, "schedule": schedule, "result": out}
    if schedule is not None:
        result["cursor"] = _advance_cursor(schedule, end)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# live schedules
# ---------------------------------------------------------------------------------------------------------------------


def _previous_tick(cron: str, at: dt.datetime, tz: str | None) -> dt.datetime:
    from zoneinfo import ZoneInfo

    from croniter import croniter

    local = at.astimezone(ZoneInfo(tz)) if tz else at
    it = croniter(cron, local, second_at_beginning=len(cron.split()) == 6)
    prev: dt.datetime = it.get_prev(dt.datetime)
    return prev.astimezone(dt.UTC)


@rt.step("lb.schedule_window")
def _window_step(schedule: str, cron: str, tz: str | None, scheduled_at: str) -> dict[str, Any]:
    """The tick's window [live cursor or previous tick, tick) and whether the previous window is still busy."""
    at = dt.datetime.fromisoformat(scheduled_at).astimezone(dt.UTC)
    with current().engine.connect() as conn:
        cur = cursors.get_cursor(conn, CURSOR_SYSTEM, schedule)
    start = dt.datetime.fromisoformat(cur["window_end"]) if cur else _previous_tick(cron, at, tz)
    busy = [w["workflow_id"] for w in rt.list_workflows(status=["ENQUEUED", "DELAYED", "PENDING"],
                                                        name="lb.flow_window", queue=schedule_queue(schedule),
                                                        limit=20)]
    return {"start": start.isoformat(), "end": at.isoformat(), "busy": busy}


@rt.workflow("lb.schedule_tick")
def tick_workflow(scheduled_at: dt.datetime, context: dict[str, Any]) -> dict[str, Any]:
    """A schedule's tick: compute the window, apply the overlap policy, enqueue the window run."""
    name = context["schedule"]
    win = _window_step(name, context["cron"], context.get("timezone"), scheduled_at.isoformat())
    if win["start"] >= win["end"]:
        return {"schedule": name, "skipped": "empty window (the live cursor is already past this tick)", **win}
    if context.get("overlap", "skip") == "skip" and win["busy"]:
        return {"schedule": name, "skipped": f"previous window still running: {win['busy']}", **win}
    wf = rt.enqueue(schedule_queue(name), window_workflow, context["flow"], win["start"], win["end"],
                    dict(context.get("options") or {}), name,
                    workflow_id=f"window:{name}:{win['start']}:{win['end']}")
    return {"schedule": name, "enqueued": wf, **win}


def schedule_context(s: ScheduleConfig) -> dict[str, Any]:
    return {"schedule": s.name, "flow": s.flow, "cron": s.cron, "overlap": s.overlap, "timezone": s.timezone,
            "options": json.loads(json.dumps(s.options, default=str))}


def apply(ctx: FlowContext) -> list[str]:
    """Create or update every configured schedule (and its queue); remove ``lb``-made schedules no longer in the
    config. Repeatable: call it at every start of the scheduler process. Returns the names applied."""
    specs = ctx.config.schedules
    rt.register_queues([rt.QueueSpec(schedule_queue(s.name), concurrency=1) for s in specs])
    names = rt.apply_schedules([rt.ScheduleSpec(s.name, tick_workflow, s.cron, context=schedule_context(s),
                                                timezone=s.timezone) for s in specs])
    wanted = set(names)
    for row in rt_schedules.list_schedules():
        if row["workflow"] == "lb.schedule_tick" and row["name"] not in wanted:
            rt_schedules.delete_schedule(row["name"])
    return names


def list_schedules(ctx: FlowContext) -> list[dict[str, Any]]:
    """Every applied schedule with its status, last tick and live cursor (window end)."""
    rows = rt_schedules.list_schedules()
    with ctx.engine.connect() as conn:
        curs = cursors.list_cursors(conn, CURSOR_SYSTEM)
    for r in rows:
        ctx_data = r["context"] if isinstance(r["context"], dict) else {}
        r["flow"] = ctx_data.get("flow")
        r["overlap"] = ctx_data.get("overlap")
        cur = curs.get((CURSOR_SYSTEM, r["name"]))
        r["cursor"] = cur[0].get("window_end") if cur else None
    return rows


pause = rt_schedules.pause_schedule
resume = rt_schedules.resume_schedule
trigger = rt_schedules.trigger_schedule


# ---------------------------------------------------------------------------------------------------------------------
# backfill
# ---------------------------------------------------------------------------------------------------------------------


def windows(start: dt.datetime, end: dt.datetime, every: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) cut into day / week / month windows (the last one ends at ``end``)."""
    if start >= end:
        raise ValueError(f"backfill: --from {start.isoformat()} must be before --to {end.isoformat()}")
    out = []
    cur = start
    while cur < end:
        if every == "day":
            nxt = cur + dt.timedelta(days=1)
        elif every == "week":
            nxt = cur + dt.timedelta(days=7)
        elif every == "month":
            nxt = cur.replace(year=cur.year + (cur.month == 12), month=cur.month % 12 + 1, day=1,
                              hour=0, minute=0, second=0, microsecond=0)
        else:
            raise ValueError(f"backfill: every={every!r}; use day, week or month")
        out.append((cur, min(nxt, end)))
        cur = min(nxt, end)
    return out


def parse_instant(text: str) -> dt.datetime:
    """``2026-09-01`` or an ISO timestamp; naive means UTC."""
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def backfill_id(flow: str, start: dt.datetime, end: dt.datetime, options: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"backfill:{flow}:{start.isoformat()}:{end.isoformat()}:{digest}"


@dataclass
class BackfillResult:
    flow: str
    windows: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0
    already: int = 0
    succeeded: int = 0
    failed: int = 0


def backfill(ctx: FlowContext, flow: str, start: dt.datetime, end: dt.datetime, *, every: str | None = None,
             options: dict[str, Any] | None = None, parallel: int = 1, timeout_seconds: float | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> BackfillResult:
    """Re-run ``flow`` over the past windows of [start, end) (default cut: day for ingest, month otherwise).

    Windows already backfilled with the same options are not run again (their workflow ids exist); live cursors
    are never moved. Waits for every window; ``on_progress(done, total)`` after each. The runtime must be
    launched in this process."""
    if flow not in RUNNERS:
        raise ValueError(f"backfill: unknown flow {flow!r}; use one of {', '.join(FLOWS)}")
    opts = dict(options or {})
    cuts = windows(start, end, every or ("day" if flow == "ingest" else "month"))
    if BACKFILL_QUEUE not in rt.Runtime.current().queues:
        rt.register_queues([rt.QueueSpec(BACKFILL_QUEUE, concurrency=max(1, parallel))])
    items: list[tuple[Sequence[Any], str, str | None]] = [
        ([flow, a.isoformat(), b.isoformat(), opts, None], backfill_id(flow, a, b, opts), None) for a, b in cuts]
    inserted = set(rt.enqueue_many(BACKFILL_QUEUE, window_workflow, items))
    res = BackfillResult(flow, started=len(inserted), already=len(items) - len(inserted))
    pending = {wf for _, wf, _ in items}
    states: dict[str, dict[str, Any]] = {}
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    while pending:
        for wf in sorted(pending):
            got = rt.get_workflow(wf, with_data=False)
            if got is not None and got["status"] in _FINAL:
                states[wf] = got
                pending.discard(wf)
                if on_progress is not None:
                    on_progress(len(states), len(items))
        if pending:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"backfill: {len(pending)} window(s) still running: {sorted(pending)[:3]}")
            time.sleep(0.05)
    for (_args, wf, _), (a, b) in zip(items, cuts, strict=True):
        st = states[wf]
        ok = st["status"] == "SUCCESS"
        res.succeeded += ok
        res.failed += not ok
        res.windows.append({"workflow_id": wf, "start": a.isoformat(), "end": b.isoformat(), "status": st["status"],
                            "new": wf in inserted, "error": st.get("error")})
    return res


def live_cursors(ctx: FlowContext) -> dict[str, Any]:
    """Every stored cursor (all systems), to show a backfill left them alone."""
    with ctx.engine.connect() as conn:
        return {f"{s}/{k}": v for (s, k), (v, _at) in cursors.list_cursors(conn).items()}
