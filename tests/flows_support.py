"""Helpers for the flow tests: a tiny generated firm with a flow context on a fresh embedded store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.samplefirm import generate_firm


def tiny_firm(root: Path, *, employees: int = 6, months: int = 2, seed: int = 7) -> Path:
    export = root / "psa-export"
    if not (export / "manifest.json").exists():
        generate_firm(export, seed=seed, employees=employees, months=months, start="2026-09")
    return export


def make_ctx(workdir: Path, *, late: str | None = None, failure_mode: str | None = None,
             export_from: Path | None = None) -> FlowContext:
    """A context on ``workdir`` (store, ledger, export inside it); optionally another late-item policy or
    posting failure mode for every entity / the ledger."""
    workdir.mkdir(parents=True, exist_ok=True)
    if export_from is not None and not (workdir / "psa-export").exists():
        (workdir / "psa-export").symlink_to(export_from.resolve(), target_is_directory=True)
    cfg = demo_config(workdir)
    pol = cfg.policies
    if late is not None:
        pol = pol.model_copy(update={"late_item": pol.late_item.model_copy(update={"default": late, "by_entity": {}})})
    if failure_mode is not None:
        pol = pol.model_copy(update={"posting_failure_mode": pol.posting_failure_mode.model_copy(
            update={"default": failure_mode, "by_system": {}})})
    cfg = cfg.model_copy(update={"policies": pol})
    ctx = FlowContext(cfg, workdir=workdir)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    return ctx


def records(ctx: FlowContext, **kw: Any) -> list[dict[str, Any]]:
    errors: list[Any] = []
    out = list(ctx.connector(SOURCE).read_records(errors, **kw))
    assert not errors, errors[:3]
    return out


def ledger_text(workdir: Path) -> dict[str, bytes]:
    """Every file of the Beancount ledger, by relative path (to compare two runs byte for byte)."""
    root = workdir / "ledger"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.beancount"))}


def posted_net_by_item(ctx: FlowContext, system: str, *, txn_type: str = "labor_cost",
                       entity: str | None = None) -> dict[str, Any]:
    """source item id -> net posted amount (posts minus reversals) of ``txn_type`` staged from ``system``; items
    that net to zero are left out. What a source's changes amount to in the ledger."""
    from collections import defaultdict
    from decimal import Decimal

    import sqlalchemy as sa

    from ledgerbridge.store.schema import staging_lines as sl

    where = [sl.c.source_system == system, sl.c.txn_type == txn_type, sl.c.status == "posted"]
    if entity is not None:
        where.append(sl.c.source_entity == entity)
    out: dict[str, Decimal] = defaultdict(Decimal)
    with ctx.engine.connect() as conn:
        for r in conn.execute(sa.select(sl).where(*where)):
            out[r.source_id] += Decimal(r.amounts[0][1]) * r.sign
    return {k: v for k, v in out.items() if v}


def sync_and_post(ctx: FlowContext, system: str, entity: str = "US01", period: str | None = None) -> None:
    """One cycle of a polled source: sync it, run the transactional flow, post ``entity``'s ``period``."""
    from ledgerbridge.flows import posting, transactions
    from ledgerbridge.flows.sources import sync_source

    sync_source(ctx, system)
    transactions.process_pending(ctx)
    if period is not None:
        out = posting.post_period(ctx, entity, period)
        assert out.status in ("posted", "nothing_to_post"), out
