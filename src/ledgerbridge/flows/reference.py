"""Master reference loading: the PSA's master and reference data into the engine.

Reads legal entities, customers, projects, resources, rate cards, FX rates, chart of accounts, dimensions, tax
codes and periods from the PSA source, validates them (bad rows are reported with file and line, never silently
dropped), builds the indexed :class:`~ledgerbridge.flows.context.Reference`, registers the configured systems,
binds every master record in the xref, and creates the accounting periods the store does not have yet. A period
the store already has keeps its status: closing happens in the store, not in the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledgerbridge.domain.costing import RateBook, validate_rate_card
from ledgerbridge.domain.fx import FxTable
from ledgerbridge.flows.context import FlowContext, Reference
from ledgerbridge.samplefirm import Firm
from ledgerbridge.store import audit, periods, systems, xref
from ledgerbridge.store.systems import SystemRecord
from ledgerbridge.store.xref import XrefEntry


@dataclass
class ReferenceReport:
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    periods_created: int = 0
    xref_bound: int = 0


def reference_from_firm(firm: Firm) -> Reference:
    return Reference(
        entities=dict(firm.legal_entities), customers=dict(firm.customers), projects=dict(firm.projects),
        resources=dict(firm.resources), milestones=dict(firm.milestones), tax_codes=dict(firm.tax_codes),
        accounts=list(firm.accounts), dimensions=list(firm.dimensions), rate_lines=list(firm.rate_cards),
        fx_rates=list(firm.fx_rates), rates=RateBook.from_lines(firm.rate_cards), fx=FxTable.from_rates(firm.fx_rates),
    )


def load_reference(ctx: FlowContext, source_system: str) -> ReferenceReport:
    """Load master/reference data from ``source_system`` into ``ctx.reference`` and the store (idempotent)."""
    source = ctx.connector(source_system)
    firm: Firm = source.load_master()
    report = ReferenceReport()
    report.problems = [str(e) for e in firm.errors]
    report.problems += [str(v) for v in validate_rate_card(firm.rate_cards)]
    ctx.reference = reference_from_firm(firm)
    ctx.reset_connectors()
    ref = ctx.reference
    report.counts = {
        "legal_entities": len(ref.entities), "customers": len(ref.customers), "projects": len(ref.projects),
        "resources": len(ref.resources), "rate_card_lines": len(ref.rate_lines), "fx_rates": len(ref.fx_rates),
        "accounts": len(ref.accounts), "dimension_values": len(ref.dimensions), "tax_codes": len(ref.tax_codes),
        "milestones": len(ref.milestones), "periods": len(firm.periods),
    }
    bindings: list[XrefEntry] = []
    for ctype, ids in (("legal_entity", ref.entities), ("customer", ref.customers), ("project", ref.projects),
                       ("resource", ref.resources), ("billing_milestone", ref.milestones)):
        bindings += [XrefEntry(ctype, i, source_system, i) for i in ids]
    with ctx.engine.begin() as conn:
        systems.upsert_systems(conn, [
            SystemRecord(id=name, connector=sc.connector, name=name,
                         config={"role": sc.role, "options": _plain(sc.options)})
            for name, sc in ctx.config.systems.items()
        ])
        have = {(p.legal_entity_id, p.period) for p in periods.list_periods(conn)}
        for p in firm.periods:
            if (p.legal_entity_id, p.period) not in have:
                periods.set_period(conn, p.legal_entity_id, p.period, p.status.value,
                                   start_date=p.start_date, end_date=p.end_date)
                report.periods_created += 1
        report.xref_bound = xref.upsert_many(conn, bindings)
        audit.append(conn, "ledgerbridge", "reference.loaded", f"system:{source_system}",
                     {"counts": report.counts, "problems": len(report.problems),
                      "periods_created": report.periods_created})
    return report


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | bool | type(None)) else str(value)
