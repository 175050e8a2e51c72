"""``ledgerbridge schedules list|apply|pause|resume|trigger|run`` and ``ledgerbridge backfill`` (flows/schedules.py).

Every command launches the durable runtime of the configuration (its system database holds the schedule rows)."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge import runtime as rt
from ledgerbridge.flows import schedules
from ledgerbridge.flows.cli import ConfigOpt, JsonOpt, _emit, _progress, make_context
from ledgerbridge.flows.context import FlowContext, set_current

console = Console()
schedules_app = typer.Typer(no_args_is_help=True, help="Cron windows per flow (DBOS schedules): list, apply, pause, "
                                                       "resume, trigger, run.")


@contextmanager
def _launched(config: Path | None, *, load_master: bool = False, short: bool = True) -> Iterator[FlowContext]:
    from ledgerbridge.flows import billing, durable, subscriptions  # noqa: F401  (workflows register at import)

    ctx = make_context(config, load_master=load_master)
    set_current(ctx)
    # a short command: poll queues and notifications often, so queued work starts (and shutdown returns) promptly
    settings = ctx.config.runtime.to_runtime()
    if short:
        settings = dataclasses.replace(settings, queue_polling_interval_sec=0.05,
                                       notification_polling_interval_sec=0.05)
    rt.Runtime.launch(settings, queues=list(ctx.config.queue_specs().values()))
    try:
        yield ctx
    finally:
        rt.Runtime.shutdown()
        set_current(None)


def _table(rows: list[dict[str, Any]]) -> None:
    t = Table(title=f"Schedules ({len(rows)})", title_justify="left")
    for col in ("name", "flow", "cron", "overlap", "status", "last tick", "live cursor"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], str(r.get("flow") or r["workflow"]), r["cron"], str(r.get("overlap") or ""),
                  r["status"], str(r.get("last_fired_at") or "-"), str(r.get("cursor") or "-"))
    console.print(t)


@schedules_app.command("list")
def list_(config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Applied schedules: flow, cron, overlap policy, ACTIVE/PAUSED, last tick and live cursor."""
    with _launched(config) as ctx:
        rows = schedules.list_schedules(ctx)
    if not _emit(rows, as_json):
        _table(rows)


@schedules_app.command("apply")
def apply_(config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Write the configured schedules to the runtime's database (repeatable; removes schedules dropped from it)."""
    with _launched(config) as ctx:
        names = schedules.apply(ctx)
        rows = schedules.list_schedules(ctx)
    if not _emit(rows, as_json):
        console.print(f"applied {len(names)} schedule(s)")
        _table(rows)


def _one(name: str, action: str, config: Path | None, as_json: bool) -> None:
    with _launched(config) as ctx:
        try:
            if action == "trigger":
                wf = schedules.trigger(name)
                out: Any = {"schedule": name, "workflow_id": wf, "tick": rt.result(wf, timeout_seconds=60)}
            else:
                out = getattr(schedules, action)(name)
        except KeyError as exc:
            raise typer.BadParameter(str(exc.args[0])) from None
        del ctx
    if not _emit(out, as_json):
        console.print(f"{name}: {action} -> {out.get('status') or out.get('tick')}")


@schedules_app.command("pause")
def pause(name: str, config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Stop a schedule firing (its live cursor stays; the next tick after resume covers the gap)."""
    _one(name, "pause", config, as_json)


@schedules_app.command("resume")
def resume(name: str, config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    _one(name, "resume", config, as_json)


@schedules_app.command("trigger")
def trigger(name: str, config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Tick a schedule now: its window [live cursor, now) is queued (overlap policy applies)."""
    _one(name, "trigger", config, as_json)


@schedules_app.command("run")
def run(config: Path | None = ConfigOpt) -> None:
    """Apply the schedules and run their ticks and windows in this process until Ctrl-C / SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _launched(config, load_master=True, short=False) as ctx:
        names = schedules.apply(ctx)
        console.print(f"running {len(names)} schedule(s): {', '.join(names) or 'none configured'} (Ctrl-C stops)")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass


def backfill(
    flow: str = typer.Option(..., "--flow", "-f", help=f"One of: {', '.join(schedules.FLOWS)}."),
    from_: str = typer.Option(..., "--from", help="Start of the first window (date or ISO timestamp, UTC if naive)."),
    to: str = typer.Option(..., "--to", help="End of the last window (exclusive)."),
    every: str | None = typer.Option(None, "--every", help="day | week | month (default: day for ingest, else "
                                                         "month)."),
    schedule: str | None = typer.Option(None, "--schedule", help="Take the options of this configured schedule."),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Windows run at once."),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Re-run past windows of a flow idempotently, without moving any live cursor; a repeated backfill runs
    nothing twice."""
    try:
        start, end = schedules.parse_instant(from_), schedules.parse_instant(to)
    except ValueError as exc:
        raise typer.BadParameter(f"--from/--to: {exc} (use 2026-09-01 or an ISO timestamp)") from None
    with _launched(config, load_master=True) as ctx:
        options: dict[str, Any] = {}
        if schedule is not None:
            found = [s for s in ctx.config.schedules if s.name == schedule]
            if not found:
                raise typer.BadParameter(f"--schedule {schedule}: not configured (known: "
                                         f"{[s.name for s in ctx.config.schedules]})")
            options = dict(found[0].options)
        before = schedules.live_cursors(ctx)
        try:
            with _progress() as prog:
                task = prog.add_task(f"backfill {flow}", total=None)
                res = schedules.backfill(ctx, flow, start, end, every=every, options=options, parallel=parallel,
                                         on_progress=lambda done, total: prog.update(task, completed=done,
                                                                                     total=total))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        moved = before != schedules.live_cursors(ctx)
    out = {"flow": flow, "windows": res.windows, "started": res.started, "already_done": res.already,
           "succeeded": res.succeeded, "failed": res.failed, "live_cursors_moved": moved}
    if not _emit(out, as_json):
        console.print(f"backfill {flow}: {len(res.windows)} window(s) — {res.started} run now, {res.already} already "
                      f"done before; {res.succeeded} succeeded, {res.failed} failed; live cursors "
                      + ("[red]CHANGED meanwhile (a live run?)[/red]" if moved else "untouched"))
        for w in res.windows:
            if w["status"] != "SUCCESS":
                console.print(f"  [red]{w['start']} .. {w['end']}: {w['status']}[/red] {w.get('error')}")
    if res.failed:
        raise typer.Exit(1)
