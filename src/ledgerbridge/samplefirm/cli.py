"""``ledgerbridge demo``: generate the sample consulting firm's PSA export, check it, and run the embedded main job."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.samplefirm.fileformat import FILE_MODELS, MANIFEST
from ledgerbridge.samplefirm.generator import GenerationReport, generate_firm
from ledgerbridge.samplefirm.reader import load_firm

demo_app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)

DEFAULT_DEMO_DIR = Path("out/demo")
DEFAULT_SEED = 42
DEFAULT_EMPLOYEES = 40
DEFAULT_MONTHS = 3
DEFAULT_START = "2026-09"


def print_report(report: GenerationReport, console: Console | None = None) -> None:
    """Rich table of the files written, their rows and bytes, and the elapsed time."""
    console = console or Console()
    table = Table(title=f"PSA export in {report.out_dir}", title_justify="left")
    table.add_column("file")
    table.add_column("rows", justify="right")
    table.add_column("bytes", justify="right")
    for f in report.files:
        table.add_row(f.name, f"{f.rows:,}", f"{f.bytes:,}")
    table.add_row("total", f"{report.total_rows:,}", f"{report.total_bytes:,}", style="bold")
    console.print(table)
    s = report.stats
    te_rate = s.get("time_versions", 0) / report.elapsed_seconds if report.elapsed_seconds else 0.0
    console.print(
        f"seed {report.seed}, {report.employees} employees, {report.months} month(s) from {report.start} "
        f"(window {report.window_start} .. {report.window_end}, as of {report.as_of:%Y-%m-%dT%H:%MZ})\n"
        f"time entries: {s.get('time_items', 0):,} ids, {s.get('time_versions', 0):,} versions "
        f"({s.get('time_rejected', 0)} rejected, {s.get('time_recalled', 0)} recalled, "
        f"{s.get('time_edited', 0)} edited after approval, {s.get('time_submitted', 0):,} awaiting approval)\n"
        f"expenses: {s.get('expense_items', 0):,} ids, {s.get('expense_versions', 0):,} versions\n"
        f"elapsed {report.elapsed_seconds:.2f} s ({te_rate:,.0f} time-entry rows/s)"
    )


@demo_app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", help="Directory to write the CSV files and manifest.json into."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Random seed (same seed + options = same bytes)."),
    employees: int = typer.Option(DEFAULT_EMPLOYEES, "--employees", min=1, help="Number of staff booking time."),
    months: int = typer.Option(DEFAULT_MONTHS, "--months", min=1, help="Months of activity to generate."),
    start: str = typer.Option(DEFAULT_START, "--start", help="First month of the window, YYYY-MM."),
) -> None:
    """Write a realistic consulting firm as PSA export files (see docs/file-format.md).

    Sizes: about 1.9 x employees x weekdays time entries (+7% versions); --employees 2000 --months 12 gives about
    1.07M time-entry rows. Same seed and options give byte-identical files."""
    try:
        report = generate_firm(out, seed=seed, employees=employees, months=months, start=start)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    print_report(report)


@demo_app.command("run")
def run(
    workdir: Path = typer.Option(DEFAULT_DEMO_DIR, "--workdir", "--out", help="Where the demo keeps everything."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed"),
    employees: int = typer.Option(DEFAULT_EMPLOYEES, "--employees", min=1),
    months: int = typer.Option(DEFAULT_MONTHS, "--months", min=1, max=24),
    start: str = typer.Option(DEFAULT_START, "--start", help="First month, YYYY-MM."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
) -> None:
    """The embedded main job: generate the sample firm, load master data, ingest and post three months into the
    Beancount ledger, build the reporting mart and print the reconciliation summary. Safe to re-run or resume
    after a crash: nothing is posted twice."""
    from ledgerbridge.flows.main_job import DemoOptions, print_summary, run_demo

    console = Console(stderr=as_json)
    with console.status("starting") as status:
        def progress(stage: str, info: dict[str, Any]) -> None:
            status.update(f"{stage} {info.get('period', '')}")
            if not as_json:
                console.print(describe(stage, info), highlight=False)

        result = run_demo(DemoOptions(workdir=workdir, seed=seed, employees=employees, months=months, start=start),
                          progress=progress)
    if as_json:
        data = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "recon"}
        typer.echo(json.dumps(data, indent=2, default=str, sort_keys=True))
    else:
        print_summary(result, console)
    if result.ledger_check or result.failed:
        raise typer.Exit(1)


def describe(stage: str, info: dict[str, Any]) -> str:
    if stage == "ingested":
        p = info["ingest"]["processed"]
        land = info["ingest"]["landed"]
        return (f"[{info['period']}] ingested {land['new']:,} new version(s) (cut-off {info['cutoff']}): "
                f"{p.get('posted', 0):,} posted, {p.get('reversed', 0):,} reversed, "
                f"{p.get('redated', 0):,} redated line(s), {p.get('dead_lettered', 0):,} dead-lettered")
    if stage == "posted":
        return (f"[{info['period']}] {info['legal_entity_id']}: {info['status']} {info['run_id'] or ''} "
                f"({info['journals']} journal(s), {info['journal_lines']} line(s), "
                f"{info['redated_lines']} redated)")
    if stage == "closed":
        return f"[{info['period']}] closed: " + ", ".join(f"{c['entity']} {c['status']}" for c in info["close"])
    if stage == "generate":
        return f"generating the sample firm {info}"
    if stage == "generated":
        return f"PSA export: {sum(info.values()):,} rows in {len(info)} files"
    if stage == "reconciled":
        return "reconciliation: " + ("every variance explained (0.00 unexplained)" if info["ok"]
                                     else f"UNEXPLAINED variance: {info['findings'][:3]}")
    if stage == "billed":
        b = info.get("billing", {})
        d, c = b.get("draft", {}), b.get("create", {})
        return (f"billing: {len(c.get('created', []))} invoice(s)/credit note(s) created in the ERP, "
                f"{len(d.get('refused', []))} refused, {d.get('dead_lettered', 0)} dead-lettered, "
                f"{b.get('written_back', 0)} status(es) written back to the PSA; "
                + ", ".join(f"{p['legal_entity_id']} {p['status']}" for p in info.get("posting", [])))
    if stage == "subscriptions":
        status = ", ".join(f"{n} {k.lower()}" for k, n in sorted((info.get("status") or {}).items())) or "none"
        return (f"subscriptions: {info.get('chains', 0)} ProjectApproved chain(s) ({status}): "
                f"{info.get('erp_bindings', 0)} ERP project bindings, {info.get('mart_rows', 0)} mart rows, "
                f"{info.get('dead_lettered', 0)} dead-lettered")
    if stage == "marts":
        return f"reporting mart built: {info.get('path')}"
    if stage == "reference":
        return f"master data loaded: {info['counts']}"
    return f"{stage}: {info}"


@demo_app.command("check")
def check(
    directory: Path = typer.Argument(..., help="A PSA export directory (docs/file-format.md)."),
    show: int = typer.Option(20, "--show", min=0, help="How many problems to list."),
) -> None:
    """Read every file of a PSA export back and report each bad row with its file, line and field.
    Exits 1 when there is any problem (the manifest's SHA-256 is checked too, when there is a manifest)."""
    console = Console()
    firm = load_firm(directory, verify=(directory / MANIFEST).exists())
    errors = list(firm.errors)
    counts: dict[str, int] = {
        "legal_entities.csv": len(firm.legal_entities), "accounts.csv": len(firm.accounts),
        "tax_codes.csv": len(firm.tax_codes), "dimensions.csv": len(firm.dimensions), "periods.csv": len(firm.periods),
        "fx_rates.csv": len(firm.fx_rates), "customers.csv": len(firm.customers), "projects.csv": len(firm.projects),
        "resources.csv": len(firm.resources), "rate_cards.csv": len(firm.rate_cards),
        "milestones.csv": len(firm.milestones),
    }
    counts["time_entries.csv"] = sum(1 for _ in firm.time_entries(errors))
    counts["expenses.csv"] = sum(1 for _ in firm.expenses(errors))
    per_file: dict[str, int] = {}
    for e in errors:
        per_file[e.file] = per_file.get(e.file, 0) + 1
    table = Table(title=f"PSA export check: {directory}", title_justify="left")
    table.add_column("file")
    table.add_column("rows loaded", justify="right")
    table.add_column("problems", justify="right")
    for name in FILE_MODELS:
        n = per_file.get(name, 0)
        table.add_row(name, f"{counts[name]:,}", f"[red]{n:,}[/red]" if n else "0")
    console.print(table)
    for e in errors[:show]:
        console.print(f"  {e}", markup=False, highlight=False)
    if len(errors) > show:
        console.print(f"  ... and {len(errors) - show:,} more")
    if errors:
        console.print(f"{len(errors):,} problem(s); the rows listed were not loaded (or, for references and the "
                      "manifest, loaded but flagged). Fix them in the source and export again.")
        raise typer.Exit(1)
    console.print("no problems")
