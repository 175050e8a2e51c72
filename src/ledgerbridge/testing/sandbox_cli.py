"""``ledgerbridge sandbox``: run a protocol-faithful sandbox of a SaaS system on a local port."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.errors import LedgerbridgeError
from ledgerbridge.testing.sandbox import available_sandboxes, load_sandbox, parse_options


def sandbox_list() -> None:
    """The systems a sandbox exists for."""
    table = Table("system", "what it speaks")
    for name in available_sandboxes():
        table.add_row(name, str(getattr(load_sandbox(name), "DESCRIPTION", "")))
    Console().print(table)


def sandbox_command(
    system: str = typer.Argument(..., help="The system, e.g. xero, netsuite, jira; `list` shows them all."),
    port: int = typer.Option(8900, "--port", "-p", help="Loopback port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host"),
    option: list[str] = typer.Option([], "--option", "-o", help="Sandbox option key=value (repeatable)."),
) -> None:
    """Serve the sandbox of SYSTEM until interrupted (`ledgerbridge sandbox list` names the systems)."""
    import uvicorn

    if system == "list":
        sandbox_list()
        return
    try:
        module = load_sandbox(system)
        app = module.create_app(**parse_options(option))
    except LedgerbridgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except TypeError as exc:
        typer.echo(f"error: bad sandbox option for {system}: {exc}", err=True)
        raise typer.Exit(2) from exc
    banner = getattr(app, "banner", None) or getattr(getattr(app, "state", None), "banner", None)
    typer.echo(f"{system} sandbox on http://{host}:{port}" + (f"\n{banner}" if banner else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning")
