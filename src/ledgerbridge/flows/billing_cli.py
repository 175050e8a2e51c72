"""``ledgerbridge billing run|status|list|replay`` — billing orchestration from the command line (flows/billing.py).

Every command takes ``--config`` like the other flow commands; ``run`` and ``status`` are idempotent (a second run
creates nothing and writes nothing back that is already there)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.flows import billing
from ledgerbridge.flows.cli import ConfigOpt, JsonOpt, _emit, make_context
from ledgerbridge.store import dead_letters
from ledgerbridge.store import invoices as invoices_repo

console = Console()
billing_app = typer.Typer(help="Billing: invoices from approved time, milestones and fixed fees; ERP status back to "
                               "the PSA.", no_args_is_help=True)


@billing_app.command("run")
def run(
    period: str = typer.Option(..., "--period", "-p", help="Billing period YYYY-MM (invoices dated its last day)."),
    entity: str | None = typer.Option(None, "--entity", "-e", help="Only this legal entity."),
    kind: list[str] = typer.Option(list(billing.DEFAULT_KINDS), "--kind", "-k",
                                   help=f"Billing events to run: {', '.join(billing.KINDS)} (repeatable)."),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Draft, validate, create, follow and write back the period's invoices (credit notes first)."""
    ctx = make_context(config)
    try:
        out = billing.run_billing(ctx, period, entity, kinds=kind)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if _emit(out, as_json):
        return
    d, c = out["draft"], out["create"]
    console.print(f"[bold]Billing {period}[/bold] {entity or 'all entities'}: {len(d['drafted'])} invoice(s), "
                  f"{len(d['credit_notes'])} credit note(s) drafted; {len(c['created'])} created, "
                  f"{c['staged_lines']} ledger line(s) staged for the next posting run; "
                  f"{d['dead_lettered']} refused/held back (financial dead letters); "
                  f"{out['written_back']} status line(s) written back.")
    if c["failed"] or c["retry_later"]:
        console.print(f"[red]failed[/red] {c['failed']}  [yellow]retry later[/yellow] {c['retry_later']}")


@billing_app.command("status")
def status(
    entity: str | None = typer.Option(None, "--entity", "-e"),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Poll the invoice systems for status changes (posted, paid, credited) and write them back to the PSA."""
    ctx = make_context(config, load_master=False)
    changed = billing.sync_status(ctx, entity)
    written = billing.write_back(ctx, entity)
    if not _emit({"status_changes": changed, "written_back": written}, as_json):
        console.print(f"{len(changed)} status change(s); {written} invoice(s) written back.")
        for k, v in sorted(changed.items()):
            console.print(f"  {k}: {v}")


@billing_app.command("list")
def list_(
    period: str | None = typer.Option(None, "--period", "-p"),
    entity: str | None = typer.Option(None, "--entity", "-e"),
    status_: str | None = typer.Option(None, "--status", "-s"),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Invoices and credit notes with their ERP number, status and write-back state."""
    ctx = make_context(config, load_master=False)
    with ctx.engine.connect() as conn:
        rows = invoices_repo.list_invoices(conn, legal_entity_id=entity, period=period, status=status_)
    data = [{"id": r.id, "kind": r.kind, "entity": r.legal_entity_id, "project": r.project_id, "period": r.period,
             "date": r.invoice_date.isoformat(), "net": str(r.net_total), "tax": str(r.tax_total),
             "currency": r.currency, "system": r.erp_system, "number": r.erp_number, "status": r.status,
             "credits": r.credits, "written_back": r.written_back} for r in rows]
    if _emit(data, as_json):
        return
    t = Table(title=f"Invoices ({len(rows)})", title_justify="left")
    for col in ("id", "kind", "entity", "period", "net", "tax", "currency", "number", "status", "written_back"):
        t.add_column(col, justify="right" if col in ("net", "tax") else "left")
    for d in data:
        t.add_row(*(str(d[c] or "") for c in ("id", "kind", "entity", "period", "net", "tax", "currency", "number",
                                                "status", "written_back")))
    console.print(t)


@billing_app.command("replay")
def replay(
    letter_id: list[str] = typer.Argument(None, help="Dead letter ids (default: every open billing letter)."),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replay billing dead letters after the fix (reactivated tax code, corrected customer, ...)."""
    ctx = make_context(config)
    with ctx.engine.connect() as conn:
        letters = [lt for lt in dead_letters.list_letters(conn, status="open") if lt.flow == billing.FLOW]
    if letter_id:
        letters = [lt for lt in letters if lt.id in set(letter_id)]
    out = billing.replay(ctx, letters)
    if not _emit(out, as_json):
        console.print(", ".join(f"{k}: {len(v)}" for k, v in out.items()))
