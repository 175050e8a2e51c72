"""Operator commands: ``ledgerbridge stewardship list|show|resolve`` (master-data conflicts) and
``ledgerbridge drift snapshot|show|resume`` (vendor payload drift). Every command takes ``--config``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.flows import drift, masterdata
from ledgerbridge.flows.cli import ConfigOpt, JsonOpt, make_context
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store import stewardship
from ledgerbridge.store.stewardship import StewardshipItem

console = Console()

stewardship_app = typer.Typer(no_args_is_help=True, help="Master-data conflicts waiting for a decision: list, show, "
                                                         "resolve (pick a side or enter a value; audited).")
drift_app = typer.Typer(no_args_is_help=True, help="Vendor payload drift: record a system's payload shapes, show "
                                                   "streams and pauses, resume a paused stream.")


def _emit(data: Any, as_json: bool) -> bool:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str, sort_keys=True))
    return as_json


def _one(ctx: FlowContext, item_id: str) -> StewardshipItem:
    with ctx.engine.connect() as conn:
        got = stewardship.get(conn, item_id)
        if got is None:
            matches = [r for r in stewardship.list_items(conn, status=None, limit=1_000_000)
                       if r.id.startswith(item_id)]
            got = matches[0] if len(matches) == 1 else None
    if got is None:
        console.print(f"no stewardship item {item_id!r} (give the id or an unambiguous prefix; "
                      "`ledgerbridge stewardship list` shows them)")
        raise typer.Exit(2)
    return got


def _show_value(v: Any) -> str:
    return json.dumps(v, default=str)


@stewardship_app.command("list")
def stewardship_list(status: str = typer.Option("open", "--status", help="open | resolved | all"),
                     entity_type: str | None = typer.Option(None, "--type", help="customer, project, ..."),
                     limit: int = typer.Option(200, "--limit"), config: Path | None = ConfigOpt,
                     as_json: bool = JsonOpt) -> None:
    """Stewardship items, oldest first."""
    ctx = make_context(config, load_master=False)
    with ctx.engine.connect() as conn:
        rows = stewardship.list_items(conn, status=None if status == "all" else status, canonical_type=entity_type,
                                      limit=limit)
    if _emit([dataclasses.asdict(r) for r in rows], as_json):
        return
    table = Table("id", "record", "field", "values (system: value)", "changed by", "age", "status")
    now = dt.datetime.now(dt.UTC)
    for r in rows:
        first = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.UTC)
        vals = ", ".join(f"{k}: {_show_value(v)}" for k, v in (r.values or {}).items())
        table.add_row(r.id[:8], f"{r.canonical_type} {r.canonical_id}", r.field, vals, r.changed_by,
                      f"{(now - first).total_seconds() / 3600:.1f} h", r.status)
    console.print(table)
    console.print(f"{len(rows)} item(s)")


@stewardship_app.command("show")
def stewardship_show(item_id: str, config: Path | None = ConfigOpt) -> None:
    """One item in full (both values, who changed it, when, and the decision once resolved)."""
    ctx = make_context(config, load_master=False)
    typer.echo(json.dumps(dataclasses.asdict(_one(ctx, item_id)), indent=2, default=str))


@stewardship_app.command("resolve")
def stewardship_resolve(item_id: str,
                        pick: str | None = typer.Option(None, "--pick", help="The side to keep: a system name, a "
                                                        "role (psa, erp) or 'canonical'."),
                        value: str | None = typer.Option(None, "--value", help="Enter the value instead (JSON is "
                                                         "parsed: 45, true, null; anything else is text)."),
                        reason: str = typer.Option("", "--reason", help="Why (kept in the audit log)."),
                        actor: str = typer.Option("cli", "--actor", help="Who decides (kept in the audit log)."),
                        config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Close an item: the chosen value becomes canonical, is pushed to the targets, and the decision is audited."""
    if (pick is None) == (value is None):
        console.print("give exactly one of --pick SIDE or --value V")
        raise typer.Exit(2)
    ctx = make_context(config)
    masterdata.overlay_canonical(ctx)
    item = _one(ctx, item_id)
    try:
        if pick is not None:
            done = masterdata.resolve(ctx, item.id, pick=pick, actor=actor, reason=reason)
        else:
            done = masterdata.resolve(ctx, item.id, value=_parse_value(value or ""), actor=actor, reason=reason)
    except (DomainError, ValueError, LookupError) as exc:
        typer.echo(f"not resolved: {exc}")
        raise typer.Exit(1) from None
    if _emit(dataclasses.asdict(done), as_json):
        return
    console.print(f"resolved {done.canonical_type} {done.canonical_id} {done.field} = "
                  f"{_show_value((done.resolution or {}).get('value'))} (audited)")


@stewardship_app.command("sync")
def stewardship_sync(config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Sync master data from every PSA system that exports it (propagations, new stewardship items, dead letters)."""
    ctx = make_context(config)
    out: dict[str, Any] = {}
    for name, sc in ctx.config.systems.items():
        if sc.role == "psa" and hasattr(ctx.connector(name), "load_master"):
            res = masterdata.sync_from_reference(ctx, name)
            out[name] = {k: v for k, v in dataclasses.asdict(res).items() if k != "changed_ids"}
    if _emit(out, as_json):
        return
    for name, r in out.items():
        console.print(f"{name}: {r['received']} record(s), {r['propagated']} value(s) propagated, "
                      f"{r['stewardship']} stewardship item(s), {r['deactivation_proposals']} deactivation "
                      f"proposal(s), {r['dead_lettered']} dead-lettered, pushed {r['pushed'] or 'nothing'}")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --------------------------------------------------------------------------------------------------- drift


@drift_app.command("snapshot")
def drift_snapshot(system: str, sample: int = typer.Option(200, "--sample", min=1, help="Payloads per stream."),
                   config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Record the shape of each stream of SYSTEM from its newest inbound payloads (else a read of the source)."""
    ctx = make_context(config, load_master=False)
    try:
        snaps = drift.take_snapshot(ctx, system, sample=sample)
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from None
    if _emit(snaps, as_json):
        return
    for entity, snap in sorted(snaps.items()):
        console.print(f"{system} {entity}: {len(snap['fields'])} field(s) from {snap['samples']} payload(s)")


@drift_app.command("show")
def drift_show(system: str | None = typer.Argument(None), config: Path | None = ConfigOpt,
               as_json: bool = JsonOpt) -> None:
    """Every stream with a snapshot: fields, samples, paused (and why), new fields seen, items held."""
    ctx = make_context(config, load_master=False)
    views = drift.show(ctx, system)
    if _emit([dataclasses.asdict(v) for v in views], as_json):
        return
    table = Table("system", "stream", "fields", "samples", "snapshot", "state", "new fields", "held")
    for v in views:
        table.add_row(v.system, v.entity, str(v.fields), str(v.samples), v.taken_at[:19],
                      f"PAUSED: {v.reason}" if v.paused else "flowing", ", ".join(v.new_fields) or "-", str(v.held))
    console.print(table)
    if not views:
        console.print("no snapshot yet: `ledgerbridge drift snapshot SYSTEM` records one")


@drift_app.command("resume")
def drift_resume(system: str, entity: str,
                 replay: bool = typer.Option(True, "--replay/--no-replay", help="Send the held items through intake "
                                             "again."),
                 actor: str = typer.Option("cli", "--actor"), config: Path | None = ConfigOpt,
                 as_json: bool = JsonOpt) -> None:
    """Unpause a stream (after fixing the mapping or taking a new snapshot) and replay its held items."""
    ctx = make_context(config, load_master=False)
    res = drift.resume(ctx, system, entity, replay=replay, actor=actor)
    if _emit(dataclasses.asdict(res), as_json):
        return
    console.print(f"{system} {entity}: resumed; {res.replayed} held item(s) entered, {res.held_again} held again")
