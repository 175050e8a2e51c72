"""``ledgerbridge serve`` and ``ledgerbridge tokens create|list|revoke``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.flows.cli import ConfigOpt, make_context
from ledgerbridge.store import audit, tokens

console = Console()
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens of the service (stored hashed; shown once).")


def serve(
    config: Path | None = ConfigOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (default loopback only)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    api_only: bool = typer.Option(False, "--api-only", help="The API alone, no worker in this process (PostgreSQL "
                                                            "deployments with separate `serve` workers)."),
    tolerance: int | None = typer.Option(None, "--webhook-tolerance", min=1,
                                         help="Seconds a webhook timestamp may differ from now (default 300)."),
    otel: str | None = typer.Option(None, "--otel-exporter", help="none | console | otlp (default none)."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Run the HTTP API (signed webhooks, admin API, /metrics) and, by default, the background worker."""
    import logging

    import uvicorn

    from ledgerbridge.service import logs
    from ledgerbridge.service.app import create_app
    from ledgerbridge.service.settings import ServiceSettings

    settings = ServiceSettings.from_env(host=host, port=port, worker=not api_only,
                                        webhook_tolerance_seconds=tolerance, otel_exporter=otel)
    logs.configure(stream=sys.stderr, level=getattr(logging, log_level.upper(), logging.INFO))
    ctx = make_context(config, load_master=True)
    app = create_app(ctx, settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                log_level=log_level.lower())


@tokens_app.command("create")
def tokens_create(
    name: str = typer.Option(..., "--name", help="Who or what uses the token (e.g. grafana, ops-alice)."),
    scope: str = typer.Option("read", "--scope", help="read | operate | admin (admin includes operate and read)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Create a token and print it ONCE (only its salted hash is stored)."""
    ctx = make_context(config, load_master=False)
    try:
        with ctx.engine.begin() as conn:
            tok, clear = tokens.create(conn, name, scope)
            audit.append(conn, "cli", "token.created", f"api_token:{tok.id}", {"name": name, "scope": scope})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"token {tok.id} ({tok.name}, scope {tok.scope}) — shown once, store it now:", style="bold")
    typer.echo(clear)


@tokens_app.command("list")
def tokens_list(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    ctx = make_context(config, load_master=False)
    with ctx.engine.connect() as conn:
        rows = tokens.list_tokens(conn)
    if as_json:
        typer.echo(json.dumps([{"id": t.id, "name": t.name, "scope": t.scope, "created_at": t.created_at,
                                "last_used_at": t.last_used_at, "revoked_at": t.revoked_at} for t in rows],
                              default=str, indent=2))
        return
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    for t in rows:
        table.add_row(t.id, t.name, t.scope, str(t.created_at)[:19], str(t.last_used_at or "-")[:19],
                      str(t.revoked_at or "-")[:19])
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str = typer.Argument(..., help="The token id (from `tokens list`)."),
                  config: Path | None = ConfigOpt) -> None:
    ctx = make_context(config, load_master=False)
    from ledgerbridge.store.errors import StoreError

    try:
        with ctx.engine.begin() as conn:
            tok = tokens.revoke(conn, token_id)
            audit.append(conn, "cli", "token.revoked", f"api_token:{tok.id}", {"name": tok.name})
    except StoreError as exc:
        console.print(str(exc))
        raise typer.Exit(2) from exc
    console.print(f"revoked {tok.id} ({tok.name})")
