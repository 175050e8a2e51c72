"""``ledgerbridge config validate FILE`` and ``ledgerbridge init``."""

from __future__ import annotations

from pathlib import Path

import typer

from ledgerbridge.config.loader import load_config, starter_text, validate_file

__all__ = ["config_app", "init_command", "validate_command"]

config_app = typer.Typer(no_args_is_help=True, help="Validate a configuration file.")


@config_app.callback()
def _group() -> None:
    """Configuration commands (a group, so ``validate`` is always named even while it is the only command)."""


@config_app.command("validate")
def validate_command(
    file: Path = typer.Argument(..., help="The YAML configuration file."),
    check_secrets: bool = typer.Option(
        False, "--check-secrets", help="Also resolve every ${env:...}/${file:...} reference (values are not shown)."
    ),
) -> None:
    """Check the file: YAML syntax, types, unknown keys, cross-references. Exit 1 on any problem."""
    issues = validate_file(file, check_secrets=check_secrets)
    if issues:
        for issue in issues:
            typer.echo(str(issue))
        typer.echo(f"{len(issues)} problem(s) in {file}", err=True)
        raise typer.Exit(1)
    cfg = load_config(file)
    typer.echo(f"OK: {len(cfg.systems)} systems, {len(cfg.posting_rules)} posting rules")


def init_command(
    path: Path = typer.Option(Path("ledgerbridge.yaml"), "--path", "-p", help="Where to write the starter config."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter configuration (embedded SQLite + Beancount ledger + file PSA source)."""
    if path.exists() and not force:
        typer.echo(f"{path} already exists; not overwriting it (use --force to replace it)", err=True)
        raise typer.Exit(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_text(), encoding="utf-8")
    typer.echo(f"wrote {path}; check it with: ledgerbridge config validate {path}")
