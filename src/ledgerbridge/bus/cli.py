"""``ledgerbridge bus``: set up the JetStream stream and consumer, show their state, publish a source's records."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import nats
import typer

from ledgerbridge.bus import setup as bus_setup
from ledgerbridge.bus.loop import LoopThread
from ledgerbridge.config import load_config
from ledgerbridge.config.schema import BusConfig, LedgerbridgeConfig

bus_app = typer.Typer(help="NATS JetStream event ingest: set-up, status, publishing.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="Configuration file (default $LEDGERBRIDGE_CONFIG or "
                                                       "./ledgerbridge.yaml).")


def _config(config: Path | None) -> tuple[LedgerbridgeConfig, BusConfig]:
    path = config or Path(os.environ.get("LEDGERBRIDGE_CONFIG") or "ledgerbridge.yaml")
    if not path.exists():
        typer.echo(f"--config {path}: no such file", err=True)
        raise typer.Exit(2)
    cfg = load_config(path)
    if cfg.bus is None:
        typer.echo(f"{path}: no `bus` section — add one (see docs/distributed.md) to use NATS JetStream", err=True)
        raise typer.Exit(2)
    return cfg, cfg.bus


async def _with_js(cfg: BusConfig, fn: Any) -> Any:
    nc = await nats.connect(cfg.url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.drain()


def _run(cfg: BusConfig, fn: Any) -> Any:
    loop = LoopThread()
    try:
        return loop.run(_with_js(cfg, fn), timeout=60)
    except Exception as err:
        typer.echo(f"bus {cfg.url}: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        loop.stop()


@bus_app.command("setup")
def setup_command(config: Path | None = ConfigOpt) -> None:
    """Create (or update) the stream and the durable pull consumer. Safe to run at every deploy."""
    _, bus = _config(config)
    typer.echo(json.dumps(_run(bus, lambda js: bus_setup.ensure(js, bus)), indent=2, default=str))


@bus_app.command("status")
def status_command(config: Path | None = ConfigOpt) -> None:
    """Messages in the stream, and the consumer's pending / redelivered / waiting-for-ack counts."""
    _, bus = _config(config)

    async def status(js: Any) -> dict[str, Any]:
        s = await js.stream_info(bus.stream)
        c = await js.consumer_info(bus.stream, bus.consumer)
        return {"stream": bus.stream, "messages": s.state.messages, "last_seq": s.state.last_seq,
                "consumer": bus.consumer, "pending": c.num_pending, "ack_pending": c.num_ack_pending,
                "redelivered": c.num_redelivered, "delivered_seq": c.delivered.stream_seq}

    typer.echo(json.dumps(_run(bus, status), indent=2))


@bus_app.command("publish")
def publish_command(
    system: str = typer.Option(..., "--system", "-s", help="The configured source system to read."),
    until: str | None = typer.Option(None, "--until", help="Only versions updated up to this ISO timestamp."),
    config: Path | None = ConfigOpt,
) -> None:
    """Read a configured source and publish its records to the stream (the poller path at scale)."""
    from ledgerbridge.bus.publisher import BusPublisher
    from ledgerbridge.flows.context import FlowContext

    cfg, bus = _config(config)
    path = config or Path(os.environ.get("LEDGERBRIDGE_CONFIG") or "ledgerbridge.yaml")
    ctx = FlowContext(cfg, workdir=path.parent.resolve())
    errors: list[Any] = []
    cutoff = dt.datetime.fromisoformat(until) if until else None
    with BusPublisher(bus) as pub:
        res = pub.publish(system, ctx.connector(system).read_records(errors, until=cutoff))
    typer.echo(json.dumps({"received": res.received, "new": res.new, "duplicates": res.duplicates,
                           "bad_rows": len(errors)}))
    if errors:
        typer.echo(f"{len(errors)} bad row(s) were not published; `ledgerbridge ingest` files them as dead letters",
                   err=True)
