"""Reconciliation on a small generated firm run through the real flows (inbox -> approvals -> costing -> staging ->
posting runs into the Beancount ledger -> period close), without the durable runtime around them.

Every cell must be fully explained on a healthy run; injected problems (a journal removed from the ledger file, an
item dead-lettered for a missing rate, versions not yet ingested) must show up as the right variance with the right
explanation or as an unexplained amount with a finding.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from ledgerbridge.domain.costing import RateBook
from ledgerbridge.flows import transactions
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, cutoff_of, demo_config, months_of
from ledgerbridge.flows.marts import build_marts
from ledgerbridge.flows.periods import close_period
from ledgerbridge.flows.posting import post_period
from ledgerbridge.flows.reconcile import EXPLAINING, reconcile, render
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.samplefirm import generate_firm, iter_time_entries

START = "2026-09"


def context(wd: Path, store_url: str | None = None) -> FlowContext:
    """The main job's configuration inside ``wd`` (store: ``wd/state.sqlite`` unless ``store_url``)."""
    cfg = demo_config(wd)
    if store_url is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": store_url})})
    ctx = FlowContext(cfg, workdir=wd)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    return ctx


def run_firm(wd: Path, *, employees: int = 8, months: int = 2, seed: int = 11, final_cutoff: int | None = None,
             before_ingest: Callable[[FlowContext], None] | None = None,
             store_url: str | None = None, last_stage: str = "post") -> FlowContext:
    """Generate a firm in ``wd/psa-export`` and run the main job's months through the flows (no runtime):
    ingest to each month's cut-off (the last month: everything, or up to ``final_cutoff`` days after its end),
    post every entity's month, close every month but the last. ``last_stage`` stops the last month after
    ``land`` or ``process`` instead of ``post``."""
    generate_firm(wd / "psa-export", seed=seed, employees=employees, months=months, start=START)
    ctx = context(wd, store_url)
    if before_ingest is not None:
        before_ingest(ctx)
    source = ctx.connector(SOURCE)
    periods = months_of(START, months)
    for i, period in enumerate(periods):
        last = i == len(periods) - 1
        until = cutoff_of(period, 5) if not last else (
            None if final_cutoff is None else cutoff_of(period, final_cutoff))
        errors: list = []
        transactions.land(ctx, SOURCE, source.read_records(errors, until=until))
        assert not errors
        if last and last_stage == "land":
            break
        transactions.process_pending(ctx)
        if last and last_stage == "process":
            break
        for entity in sorted(ctx.reference.entities):
            out = post_period(ctx, entity, period)
            assert out.status in ("posted", "nothing_to_post"), out
        if not last:
            for entity in sorted(ctx.reference.entities):
                close_period(ctx, entity, period, force=True)
    return ctx


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("recon") / "firm"
    run_firm(wd)
    build_marts(context(wd), wd / "mart.duckdb")
    return wd


def copy_of(src: Path, tmp_path: Path) -> Path:
    wd = tmp_path / "firm"
    shutil.copytree(src, wd)
    return wd


def money_cells(recon) -> list:
    return [c for c in recon.cells if c.measure != "hours"]


def test_healthy_run_explains_every_cent(healthy: Path) -> None:
    ctx = context(healthy)
    recon = reconcile(ctx, healthy / "psa-export", mart_path=healthy / "mart.duckdb")
    assert recon.cells
    assert [c.key for c in recon.cells if c.unexplained != 0] == []
    assert recon.ok, recon.findings
    # the run redated late edits/recalls: there is variance to explain, and it is all redating
    assert any(c.variance != 0 for c in recon.cells)
    kinds = recon.explanation_counts()
    assert kinds.get("redated_in", 0) > 0 and kinds.get("redated_out", 0) > 0
    for c in recon.cells:
        assert c.explained == sum((e.amount for e in c.explanations if e.kind in EXPLAINING), Decimal(0))
        assert c.variance == c.explained
        assert c.mart_variance == 0
    # redating moves amounts between periods, it creates none: per entity/measure/currency it nets to zero
    net: dict[tuple[str, str, str], Decimal] = {}
    for c in recon.cells:
        k = (c.legal_entity_id, c.measure, c.currency)
        net[k] = net.get(k, Decimal(0)) + c.variance
    assert all(v == 0 for v in net.values()), net
    # ledger side really comes from the ledger: every money cell has a ledger figure
    assert all(c.ledger is not None and c.basis == "ledger" for c in money_cells(recon))
    assert recon.awaiting_approval  # the sample firm has submitted edits; they are in neither side
    doc = recon.to_json()
    assert json.loads(json.dumps(doc))["ok"] is True
    assert all(cell["unexplained"] == "0" for cell in doc["cells"])
    short = json.loads(json.dumps(recon.to_json(items=False)))
    for full, cell in zip(doc["cells"], short["cells"], strict=True):
        amounts = sum((Decimal(v["amount"]) for v in cell["explanations"].values()), Decimal(0))
        assert amounts == Decimal(full["explained"])


def test_render_prints_cells_and_verdict(healthy: Path) -> None:
    recon = reconcile(context(healthy), healthy / "psa-export", mart_path=healthy / "mart.duckdb")
    console = Console(record=True, width=220)
    render(recon, console)
    text = console.export_text()
    assert "Every variance explained" in text
    assert "redated_in" in text
    first = recon.cells[0]
    assert first.legal_entity_id in text and first.period in text


def test_journal_removed_from_ledger_is_unexplained_and_named(healthy: Path, tmp_path: Path) -> None:
    wd = copy_of(healthy, tmp_path)
    ctx = context(wd)
    # remove one labor-cost journal's transaction text from its period file (a hand edit of the ledger)
    files = sorted((wd / "ledger" / "ledger").glob("*/20*.beancount"))
    victim_file, block, jid = None, "", ""
    for f in files:
        text = f.read_text()
        m = re.search(r'\n(\d{4}-\d{2}-\d{2} \* "labor_cost[^\n]*\n(?:  [^\n]*\n)+)\n', text)
        if m:
            victim_file, block = f, m.group(1)
            jid = re.search(r'journal_id: "([^"]+)"', block).group(1)
            f.write_text(text.replace(block, ""))
            break
    assert victim_file is not None
    entity, period = victim_file.parent.name, victim_file.stem
    removed: dict[str, Decimal] = {}
    for line in block.splitlines():
        m = re.match(r"\s+Expenses:\S+:5000-\S+\s+(-?[\d.]+) ([A-Z]{3})", line)
        if m:
            removed[m.group(2)] = removed.get(m.group(2), Decimal(0)) + Decimal(m.group(1))
    assert removed

    recon = reconcile(ctx, wd / "psa-export", mart_path=wd / "mart.duckdb")
    assert not recon.ok
    for ccy, amount in removed.items():
        cell = recon.cell(entity, period, "labor_cost", ccy)
        assert cell is not None
        assert cell.unexplained == -amount  # the ledger lacks exactly the journal's labor cost
        assert cell.mart_variance == amount  # the mart (from our store) still has it
        assert cell.posted - cell.ledger == amount
    assert any(jid in f and "does not hold it" in f for f in recon.findings), recon.findings
    # cells the journal did not touch stay clean
    touched = {(entity, period, "labor_cost", c) for c in removed}
    assert all(c.unexplained == 0 for c in recon.cells if c.key not in touched)


def test_amount_edited_in_the_ledger_is_unexplained_and_named(healthy: Path, tmp_path: Path) -> None:
    wd = copy_of(healthy, tmp_path)
    # a balanced hand edit: one labor-cost posting and its payroll accrual both raised by 1.00
    f = sorted((wd / "ledger" / "ledger").glob("*/20*.beancount"))[0]
    text = f.read_text()
    m = re.search(r'journal_id: "([^"]*labor_cost[^"]*)"(?:\n  [^\n]*)*?'
                  r'\n  (Expenses:\S+:5000-\S+)\s+([\d.]+) ([A-Z]{3})'
                  r'(?:\n    [^\n]*)*\n  (Liabilities:\S+:2100-\S+)\s+(-[\d.]+) ([A-Z]{3})', text)
    assert m is not None
    jid, ccy = m.group(1), m.group(4)
    edited = m.group(0).replace(f"{m.group(2)}  {m.group(3)} {ccy}", f"{m.group(2)}  {Decimal(m.group(3)) + 1} {ccy}")
    edited = edited.replace(f"{m.group(5)}  {m.group(6)} {ccy}", f"{m.group(5)}  {Decimal(m.group(6)) - 1} {ccy}")
    assert edited != m.group(0)
    f.write_text(text.replace(m.group(0), edited))

    recon = reconcile(context(wd), wd / "psa-export", mart_path=wd / "mart.duckdb")
    cell = recon.cell(f.parent.name, f.stem, "labor_cost", ccy)
    assert cell is not None and cell.unexplained == Decimal("1.00") and cell.mart_variance == Decimal("-1.00")
    assert [c.key for c in recon.cells if c.unexplained != 0] == [cell.key]
    assert any(jid in x and "differs" in x for x in recon.findings), recon.findings


def test_dead_lettered_item_explains_the_missing_amount(tmp_path: Path) -> None:
    wd = tmp_path / "firm"
    dropped: list[str] = []

    def drop_october_cost_rate(ctx: FlowContext) -> None:
        # the PSA's rate card has the line; the engine ran with a reference that lacked it (e.g. loaded before
        # the rate was added), so the resource's October time is dead-lettered for a missing cost rate
        victim = next(r for r in ctx.reference.rate_lines if r.kind.value == "cost" and r.resource_id
                      and r.effective_from.isoformat() == "2026-10-01")
        dropped.append(victim.resource_id)
        ctx.reference.rates = RateBook.from_lines([r for r in ctx.reference.rate_lines if r.id != victim.id])

    run_firm(wd, before_ingest=drop_october_cost_rate)
    ctx = context(wd)  # reloaded: the full rate card, as the PSA has it now
    recon = reconcile(ctx, wd / "psa-export", mart_path=None)
    dead = [e for c in recon.cells for e in c.explanations if e.kind == "dead_letter"]
    assert dead, recon.explanation_counts()
    assert all("rates." in e.detail or "costing." in e.detail for e in dead), dead[:3]
    assert [c.key for c in recon.cells if c.unexplained != 0] == []
    # the dead-lettered items are the dropped resource's October entries; their amount is missing from the ledger
    oct_cost = [c for c in recon.cells if c.period == "2026-10" and c.measure == "labor_cost"
                and any(e.kind == "dead_letter" for e in c.explanations)]
    assert oct_cost
    for c in oct_cost:
        dl = sum((e.amount for e in c.explanations if e.kind == "dead_letter"), Decimal(0))
        assert dl < 0  # ledger below PSA by the dead-lettered cost
    assert recon.psa_errors == []  # the PSA side can cost them: the rate is there now
    resource_of = {t.id: t.resource_id for t in iter_time_entries(wd / "psa-export" / "time_entries.csv")}
    assert {resource_of[e.item_id] for e in dead} == set(dropped)


def test_versions_after_the_last_cutoff_are_not_ingested(tmp_path: Path) -> None:
    wd = tmp_path / "firm"
    ctx = run_firm(wd, final_cutoff=-10)  # the last ingest stops ten days before the month ends
    recon = reconcile(ctx, wd / "psa-export", mart_path=None)
    kinds = recon.explanation_counts()
    assert kinds.get("not_ingested", 0) > 0, kinds
    assert [c.key for c in recon.cells if c.unexplained != 0] == []
    hours = [c for c in recon.cells if c.measure == "hours"]
    assert all(c.basis == "store" and c.mart is None for c in hours)


def test_pending_work_is_explained_at_each_stage(tmp_path: Path) -> None:
    wd = tmp_path / "firm"
    ctx = run_firm(wd, last_stage="land")  # October landed in the inbox, not processed

    def check(kind: str) -> None:
        recon = reconcile(ctx, wd / "psa-export", mart_path=None)
        assert [c.key for c in recon.cells if c.unexplained != 0] == [], recon.findings
        pending = [e for c in recon.cells if c.period == "2026-10" for e in c.explanations if e.kind == kind]
        assert pending, (kind, recon.explanation_counts())
        assert all(e.amount < 0 for e in pending if e.item_id.startswith("EX-"))  # not in the ledger yet

    check("not_processed")
    transactions.process_pending(ctx)  # now staged, waiting for the posting run
    check("staged_unposted")
    for entity in sorted(ctx.reference.entities):
        post_period(ctx, entity, "2026-10")
    recon = reconcile(ctx, wd / "psa-export", mart_path=None)
    assert recon.ok
    counts = recon.explanation_counts()
    assert "not_processed" not in counts and "staged_unposted" not in counts


def test_bad_inputs_are_refused_with_the_fix(healthy: Path, tmp_path: Path) -> None:
    bare = FlowContext(demo_config(healthy), workdir=healthy)  # reference data not loaded
    with pytest.raises(ValueError, match="load_reference"):
        reconcile(bare, healthy / "psa-export")
    with pytest.raises(FileNotFoundError, match=r"time_entries\.csv"):
        reconcile(context(healthy), tmp_path)


def test_manual_ledger_entry_counts_in_its_month_and_is_unexplained(healthy: Path, tmp_path: Path) -> None:
    wd = copy_of(healthy, tmp_path)
    # someone books labor cost by hand, without ledgerbridge's metadata: it counts in the month of its date
    f = wd / "ledger" / "ledger" / "US01" / "2026-10.beancount"
    f.write_text(f.read_text() + '\n2026-10-20 * "manual accrual"\n'
                 "  Expenses:US01:5000-ProjectLaborCost  250.00 USD\n"
                 "  Liabilities:US01:2100-AccruedPayroll  -250.00 USD\n")
    ctx = context(wd)
    before = context(healthy).connector("ledger").account_totals("US01")
    after = ctx.connector("ledger").account_totals("US01")
    assert after[("2026-10", "5000", "USD")][0] - before[("2026-10", "5000", "USD")][0] == Decimal("250.00")
    assert after[("2026-10", "2100", "USD")][1] - before[("2026-10", "2100", "USD")][1] == Decimal("250.00")
    recon = reconcile(ctx, wd / "psa-export", mart_path=wd / "mart.duckdb")
    cell = recon.cell("US01", "2026-10", "labor_cost", "USD")
    assert cell is not None and cell.unexplained == Decimal("250.00")
    assert any("more than ledgerbridge recorded as posted" in n for n in cell.notes)
    assert [c.key for c in recon.cells if c.unexplained != 0] == [cell.key]
