"""Operator commands on the flows: ingest, post, periods, dead letters, audit. Every command takes ``--config``
(default: ``$LEDGERBRIDGE_CONFIG`` or ``./ledgerbridge.yaml``; the packaged starter when neither exists)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledgerbridge.config import default_config, load_config
from ledgerbridge.flows import dlq, posting, transactions
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.periods import close_checklist, close_period
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.store import audit, dead_letters
from ledgerbridge.store import periods as periods_repo

console = Console()
ConfigOpt = typer.Option(None, "--config", "-c", help="Configuration file (default $LEDGERBRIDGE_CONFIG or "
                                                       "./ledgerbridge.yaml, else the packaged starter).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def make_context(config: Path | None, *, load_master: bool = True) -> FlowContext:
    path = config or (Path(os.environ["LEDGERBRIDGE_CONFIG"]) if os.environ.get("LEDGERBRIDGE_CONFIG") else None)
    if path is None and Path("ledgerbridge.yaml").exists():
        path = Path("ledgerbridge.yaml")
    cfg = load_config(path) if path is not None else default_config()
    ctx = FlowContext(cfg, workdir=path.parent.resolve() if path is not None else Path.cwd())
    ctx.migrate()
    if load_master:
        for name, sc in cfg.systems.items():
            if sc.role == "psa" and hasattr(ctx.connector(name), "load_master"):
                load_reference(ctx, name)
    return ctx


def _emit(data: Any, as_json: bool) -> bool:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str, sort_keys=True))
    return as_json


# --------------------------------------------------------------------------------------------------- ingest/post


def ingest(
    system: str = typer.Option(..., "--system", "-s", help="The configured source system to read."),
    until: str | None = typer.Option(None, "--until", help="Only versions updated up to this ISO timestamp."),
    batch_size: int = typer.Option(5000, "--batch-size", min=1),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Read a source into the inbox and run the transactional flow (approvals, costing, staging)."""
    ctx = make_context(config)
    from ledgerbridge.samplefirm import FileError

    errors: list[FileError] = []
    cutoff = dt.datetime.fromisoformat(until) if until else None
    with _progress() as prog:
        t = prog.add_task("landing in the inbox", total=None)
        landed = transactions.land(ctx, system, ctx.connector(system).read_records(errors, until=cutoff),
                                   batch_size=batch_size,
                                   on_batch=lambda r: prog.update(t, completed=r.received))
        t2 = prog.add_task("deciding and staging", total=landed.new or None)
        processed = transactions.process_pending(ctx, batch_size=batch_size,
                                                 on_batch=lambda r: prog.update(t2, completed=r.rows))
    if errors:
        from ledgerbridge.flows.durable import _file_errors_to_dlq

        _file_errors_to_dlq(ctx, system, errors)
    out = {"landed": dataclasses.asdict(landed), "processed": dataclasses.asdict(processed),
           "file_errors": [str(e) for e in errors[:50]]}
    if not _emit(out, as_json):
        console.print(f"landed {landed.new:,} new version(s) ({landed.duplicates:,} duplicate(s)); "
                      f"posted {processed.posted:,}, reversed {processed.reversed:,}, "
                      f"staged {processed.staged_lines:,} line(s), redated {processed.redated:,}, "
                      f"dead-lettered {processed.dead_lettered:,}; {len(errors)} bad row(s)")


def post(
    entity: str = typer.Option(..., "--entity", "-e"),
    period: str = typer.Option(..., "--period", "-p", help="YYYY-MM"),
    target: str | None = typer.Option(None, "--target", help="Target system (default: routing)."),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run the posting run of one legal entity and period into its target ledger."""
    ctx = make_context(config)
    out = posting.post_period(ctx, entity, period, target)
    if not _emit(dataclasses.asdict(out), as_json):
        console.print(f"{out.run_id or '-'}: {out.status} — {out.journals} journal(s), {out.journal_lines} line(s) "
                      f"from {out.staged_lines} staged line(s); {out.dead_lettered} dead-lettered; "
                      f"{out.redated_lines} redated {out.message}")
        for cur, v in sorted(out.control_totals.get("debit", {}).items()):
            console.print(f"  {cur}: debit {v} = credit {out.control_totals['credit'][cur]}")
    if out.status == "failed":
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------- periods

periods_app = typer.Typer(no_args_is_help=True, help="Accounting periods: list, checklist, close.")


@periods_app.command("list")
def periods_list(entity: str | None = typer.Option(None, "--entity", "-e"), config: Path | None = ConfigOpt,
                 as_json: bool = JsonOpt) -> None:
    ctx = make_context(config, load_master=False)
    with ctx.engine.connect() as conn:
        rows = periods_repo.list_periods(conn, legal_entity_id=entity)
    if _emit([dataclasses.asdict(r) for r in rows], as_json):
        return
    table = Table("entity", "period", "start", "end", "status")
    for r in rows:
        table.add_row(r.legal_entity_id, r.period, str(r.start_date), str(r.end_date), r.status)
    console.print(table)


@periods_app.command("close")
def periods_close(entity: str = typer.Option(..., "--entity", "-e"), period: str = typer.Option(..., "--period"),
                  force: bool = typer.Option(False, "--force", help="Close despite checklist problems (audited)."),
                  config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Close a period after its checklist (nothing unposted, no unfinished run, no open financial dead letter)."""
    ctx = make_context(config)
    out = close_period(ctx, entity, period, force=force)
    if not _emit(out, as_json):
        console.print(f"{entity} {period}: {out['status']}")
        for p in out["problems"]:
            console.print(f"  - {p}")
    if out["status"] == "blocked":
        raise typer.Exit(1)


@periods_app.command("checklist")
def periods_checklist(entity: str = typer.Option(..., "--entity", "-e"), period: str = typer.Option(..., "--period"),
                      config: Path | None = ConfigOpt) -> None:
    ctx = make_context(config, load_master=False)
    problems = close_checklist(ctx, entity, period)
    for p in problems:
        console.print(f"- {p}")
    console.print("ready to close" if not problems else f"{len(problems)} problem(s)")
    raise typer.Exit(1 if problems else 0)


# --------------------------------------------------------------------------------------------------- dead letters

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters (operational and financial): list, show, replay, "
                                                 "discard.")


def _filtered(ctx: FlowContext, queue: str | None, flow: str | None, system: str | None, entity: str | None,
              error_kind: str | None, older_than_hours: float | None, status: str | None = "open",
              limit: int = 10_000) -> list[dead_letters.DeadLetter]:
    with ctx.engine.connect() as conn:
        return dead_letters.list_letters(
            conn, queue=queue, flow=flow, system=system, entity=entity, error_kind=error_kind,
            older_than=dt.timedelta(hours=older_than_hours) if older_than_hours is not None else None,
            status=status, limit=limit)


QueueOpt = typer.Option(None, "--queue", help="operational | financial")
FlowOpt = typer.Option(None, "--flow")
SystemOpt = typer.Option(None, "--system")
EntityOpt = typer.Option(None, "--entity")
KindOpt = typer.Option(None, "--error-kind", help="transient | rate_limited | permanent | validation | conflict")
AgeOpt = typer.Option(None, "--older-than-hours")


@dlq_app.command("list")
def dlq_list(queue: str | None = QueueOpt, flow: str | None = FlowOpt, system: str | None = SystemOpt,
             entity: str | None = EntityOpt, error_kind: str | None = KindOpt, older_than_hours: float | None = AgeOpt,
             status: str = typer.Option("open", "--status", help="open | replayed | discarded | all"),
             limit: int = typer.Option(200, "--limit"), config: Path | None = ConfigOpt,
             as_json: bool = JsonOpt) -> None:
    ctx = make_context(config, load_master=False)
    rows = _filtered(ctx, queue, flow, system, entity, error_kind, older_than_hours,
                     None if status == "all" else status, limit)
    if _emit([dataclasses.asdict(r) for r in rows], as_json):
        return
    table = Table("id", "queue", "flow", "system", "entity", "item", "kind", "code", "attempts", "age", "status")
    now = dt.datetime.now(dt.UTC)
    for r in rows:
        first = r.first_seen if r.first_seen.tzinfo else r.first_seen.replace(tzinfo=dt.UTC)
        table.add_row(r.id[:8], r.queue, r.flow, r.system, r.entity, r.item_key, r.error_kind, r.error_code,
                      str(r.attempts), f"{(now - first).total_seconds() / 3600:.1f} h", r.status)
    console.print(table)
    console.print(f"{len(rows)} letter(s)")


def _one(ctx: FlowContext, letter_id: str) -> dead_letters.DeadLetter:
    with ctx.engine.connect() as conn:
        got = dead_letters.get(conn, letter_id)
        if got is None:
            matches = [r for r in dead_letters.list_letters(conn, status=None, limit=100_000)
                       if r.id.startswith(letter_id)]
            got = matches[0] if len(matches) == 1 else None
    if got is None:
        console.print(f"no dead letter {letter_id!r} (give the id or an unambiguous prefix)")
        raise typer.Exit(2)
    return got


@dlq_app.command("show")
def dlq_show(letter_id: str, config: Path | None = ConfigOpt) -> None:
    ctx = make_context(config, load_master=False)
    typer.echo(json.dumps(dataclasses.asdict(_one(ctx, letter_id)), indent=2, default=str))


@dlq_app.command("replay")
def dlq_replay(letter_id: str | None = typer.Argument(None, help="One letter (id or prefix); or filter below."),
               queue: str | None = QueueOpt, flow: str | None = FlowOpt, system: str | None = SystemOpt,
               entity: str | None = EntityOpt, error_kind: str | None = KindOpt,
               older_than_hours: float | None = AgeOpt,
               mapping: str = typer.Option("current", "--mapping",
                                           help="current: today's configuration; original: the posting rules and "
                                                "account roles recorded in each posting letter when it failed"),
               config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Replay one letter, or every open letter matching the filters (progress and counts)."""
    ctx = make_context(config)
    letters = ([_one(ctx, letter_id)] if letter_id else
               _filtered(ctx, queue, flow, system, entity, error_kind, older_than_hours))
    with _progress() as prog:
        t = prog.add_task("replaying", total=len(letters))
        try:
            res = dlq.replay(ctx, letters, mapping=mapping, on_progress=lambda n: prog.update(t, completed=n))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    if not _emit(dataclasses.asdict(res), as_json):
        console.print(f"replayed {res.replayed}, skipped {res.skipped}, failed {res.failed}")
        for d in res.details:
            if d["outcome"] != "replayed":
                console.print(f"  {d['id'][:8]} {d['item']}: {d['outcome']} — {d['note']}")
    if res.failed:
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(letter_id: str | None = typer.Argument(None), reason: str = typer.Option(..., "--reason"),
                queue: str | None = QueueOpt, flow: str | None = FlowOpt, system: str | None = SystemOpt,
                entity: str | None = EntityOpt, error_kind: str | None = KindOpt,
                older_than_hours: float | None = AgeOpt, config: Path | None = ConfigOpt) -> None:
    """Close letters without replaying them; the reason goes into the audit log."""
    ctx = make_context(config, load_master=False)
    letters = ([_one(ctx, letter_id)] if letter_id else
               _filtered(ctx, queue, flow, system, entity, error_kind, older_than_hours))
    try:
        n = dlq.discard(ctx, letters, reason)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"discarded {n} letter(s)")


# --------------------------------------------------------------------------------------------------- audit

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")


@audit_app.command("verify")
def audit_verify(config: Path | None = ConfigOpt) -> None:
    """Walk the hash chain; exit 1 at the first entry that does not verify."""
    ctx = make_context(config, load_master=False)
    with ctx.engine.connect() as conn:
        res = audit.verify(conn)
    state = "intact" if res.ok else f"BROKEN at seq {res.first_bad_seq}: {res.reason}"
    console.print(f"audit log: {state} ({res.checked:,} entries checked)")
    raise typer.Exit(0 if res.ok else 1)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
