"""Reconciliation: PSA vs ledger vs reporting mart, per legal entity, period, measure and currency.

Three independent sides:

* **PSA** — computed from the export files alone: every version is read, each item's effective approved version
  is taken (:func:`ledgerbridge.domain.approvals.effective_version`), costed with the domain rules and bucketed in
  the period of its work / expense date: approved ``hours``, ``labor_cost`` (cost currency), ``revenue`` (billable
  value, bill currency) and ``expense`` (expense currency).
* **Ledger** — read back from the target ledger itself (never from our store): per entity, period, account and
  currency, accounts of the roles ``project_cost`` (5000, debit - credit), ``service_revenue`` (4000, credit -
  debit) and ``project_expense`` (5100, debit - credit). Hours are not in a ledger.
* **Mart** — the same totals from the DuckDB reporting mart (``gl_balances``; hours from ``fact_time``).

Per cell, ``variance = ledger - psa`` (hours: ``mart - psa``, or what the store posted when no mart is given) is
accounted for to the cent by what the store knows:

* ``redated_in`` / ``redated_out`` — a line dated in period A posted into period B (an edit or recall that arrived
  after A closed is reversed and re-posted in the next open period): +amount in B, -amount in A, per item;
* ``dead_letter`` — the item sits in the financial dead-letter queue (the error is shown);
* ``not_ingested`` — the export holds a version of the item the engine has not received yet;
* ``not_processed`` — received in the inbox, not processed yet;
* ``staged_unposted`` — staged, waiting for its posting run;
* ``awaiting_approval`` — the item's latest version is draft/submitted;
* ``awaiting_ack`` — the item's lines are in a posting run to a file target still waiting for the target's
  acknowledgement (the journal file is written, the ERP has not confirmed its import yet).

When the ledger holds something else than the store recorded as posted, the difference is attributed per journal
(these reasons name the problem but do not explain it away: the amount stays unexplained and the run is not ok):

* ``missing_in_erp`` — a journal recorded as posted that the ledger does not hold;
* ``fx_difference`` — a journal the ledger holds in another currency than ledgerbridge posted it (converted at the
  ERP's own rate): -amount in the posted currency's cell, +amount in the held one, with the implied rate;
* ``duplicate_in_erp`` — the ledger holds a posted journal's amount more than once;
* ``posted_in_erp_not_staging`` — the ledger holds more than ledgerbridge posted (an entry not from staging, e.g.
  a manual journal in the ERP).

Whatever is left is ``unexplained`` (0.00 on a healthy run) and comes with findings: items whose ledger amount
differs from the PSA for no known reason, journals recorded as posted that the ledger does not hold, a mart that
disagrees with the ledger, PSA items that cannot be costed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ledgerbridge.domain.approvals import effective_version
from ledgerbridge.domain.costing import cost_expense, cost_time
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import PeriodBook
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.model.entities import ApprovalStatus, ContractType, Expense, JournalEntry, TimeEntry
from ledgerbridge.samplefirm import FileError, iter_expenses, iter_time_entries
from ledgerbridge.store._sql import chunked
from ledgerbridge.store.schema import dead_letters as dl_t
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import posted_journal_lines as pjl_t
from ledgerbridge.store.schema import posted_journals as pj_t
from ledgerbridge.store.schema import posting_runs as runs_t
from ledgerbridge.store.schema import staging_lines as staging_t

MEASURES = ("hours", "labor_cost", "revenue", "expense")
#: measure -> (posting-rule role of the ledger account, +1 for debit - credit / -1 for credit - debit)
LEDGER_ROLES: dict[str, tuple[str, int]] = {
    "labor_cost": ("project_cost", 1), "revenue": ("service_revenue", -1), "expense": ("project_expense", 1)}
#: (txn_type, amount name) of a staged line -> measure
LINE_MEASURE: dict[tuple[str, str], str] = {
    ("labor_cost", "cost"): "labor_cost", ("revenue_accrual", "billable_value"): "revenue",
    ("expense", "amount"): "expense"}
EXPLAINING = ("redated_in", "redated_out", "dead_letter", "not_ingested", "not_processed", "staged_unposted",
              "awaiting_approval", "awaiting_ack")
#: ledger-side differences, attributed per journal but not explained away (module doc)
ERP_SIDE = ("missing_in_erp", "fx_difference", "duplicate_in_erp", "posted_in_erp_not_staging")
UNEXPLAINED = "unexplained_item"
ZERO = Decimal(0)

CellKey = tuple[str, str, str, str]  # legal entity, period, measure, currency ("" for hours)
Item = tuple[str, str]  # (source entity, item id)


@dataclass
class Explanation:
    """One item's share of a cell's variance and why."""

    kind: str
    entity: str  # source entity: time_entry / expense
    item_id: str
    amount: Decimal
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "entity": self.entity, "item_id": self.item_id, "amount": _txt(self.amount),
                "detail": self.detail}


@dataclass
class Cell:
    legal_entity_id: str
    period: str
    measure: str
    currency: str
    psa: Decimal = ZERO
    ledger: Decimal | None = None
    mart: Decimal | None = None
    posted: Decimal = ZERO  # what the store recorded as posted in the period (the explanations' basis)
    basis: str = "ledger"  # what variance compares with the PSA: ledger, mart (hours) or store (hours, no mart)
    variance: Decimal = ZERO
    explained: Decimal = ZERO
    unexplained: Decimal = ZERO
    mart_variance: Decimal | None = None  # mart - ledger (hours: mart - store)
    explanations: list[Explanation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> CellKey:
        return (self.legal_entity_id, self.period, self.measure, self.currency)

    @property
    def ok(self) -> bool:
        return self.unexplained == 0 and not self.mart_variance

    def to_json(self, *, items: bool = True) -> dict[str, Any]:
        """JSON-able cell; ``items=False`` replaces the explanation list by counts and amounts per kind."""
        if items:
            explained: Any = [e.to_json() for e in self.explanations]
        else:
            kinds: dict[str, dict[str, Any]] = {}
            for e in self.explanations:
                k = kinds.setdefault(e.kind, {"items": set(), "amount": ZERO})
                k["items"].add(e.item_id)
                k["amount"] += e.amount
            explained = {kind: {"items": len(v["items"]), "amount": _txt(v["amount"])}
                         for kind, v in sorted(kinds.items())}
        return {
            "legal_entity_id": self.legal_entity_id, "period": self.period, "measure": self.measure,
            "currency": self.currency, "psa": _txt(self.psa), "ledger": _txt(self.ledger), "mart": _txt(self.mart),
            "posted": _txt(self.posted), "basis": self.basis, "variance": _txt(self.variance),
            "explained": _txt(self.explained), "unexplained": _txt(self.unexplained),
            "mart_variance": _txt(self.mart_variance),
            "explanations": explained, "notes": list(self.notes),
        }


@dataclass
class Reconciliation:
    cells: list[Cell] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    awaiting_approval: list[dict[str, Any]] = field(default_factory=list)
    psa_errors: list[str] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every cell fully explained and the mart equal to the ledger."""
        return all(c.ok for c in self.cells)

    @property
    def unexplained_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.unexplained != 0]

    def cell(self, entity: str, period: str, measure: str, currency: str = "") -> Cell | None:
        return next((c for c in self.cells if c.key == (entity, period, measure, currency)), None)

    def explanation_counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for c in self.cells:
            for e in c.explanations:
                out[e.kind] += 1
        return dict(sorted(out.items()))

    def to_json(self, *, items: bool = True) -> dict[str, Any]:
        """JSON-able result; ``items=False`` gives per-cell counts and amounts per explanation kind instead of
        every explaining item (a compact summary for job results)."""
        return {
            "ok": self.ok,
            "cells": [c.to_json(items=items) for c in self.cells],
            "unexplained_cells": len(self.unexplained_cells),
            "explanation_counts": self.explanation_counts(),
            "findings": list(self.findings),
            "awaiting_approval": list(self.awaiting_approval) if items else len(self.awaiting_approval),
            "psa_errors": list(self.psa_errors),
            "sources": dict(self.sources),
        }


def _txt(d: Decimal | None) -> str | None:
    if d is None:
        return None
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------------------------------- PSA side


@dataclass
class _Psa:
    totals: dict[CellKey, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_item: dict[Item, dict[CellKey, Decimal]] = field(default_factory=dict)
    histories: dict[Item, dict[int, ApprovalStatus]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    awaiting: list[dict[str, Any]] = field(default_factory=list)
    versions_read: int = 0


class _Periods:
    """Date -> accounting period of an entity (the store's period book; the calendar month where none covers)."""

    def __init__(self, book: PeriodBook) -> None:
        self.book = book
        self.cache: dict[tuple[str, dt.date], str] = {}

    def __call__(self, entity: str, d: dt.date) -> str:
        key = (entity, d)
        hit = self.cache.get(key)
        if hit is None:
            p = self.book.containing(entity, d)
            hit = self.cache[key] = p.period if p is not None else f"{d.year:04d}-{d.month:02d}"
        return hit


def _psa_side(ctx: FlowContext, export_dir: Path, period_of: _Periods) -> _Psa:
    out = _Psa()
    errors: list[FileError] = []
    versions: dict[Item, dict[int, TimeEntry | Expense]] = defaultdict(dict)
    for entity, rows in (("time_entry", iter_time_entries(export_dir / "time_entries.csv", errors)),
                         ("expense", iter_expenses(export_dir / "expenses.csv", errors))):
        for row in rows:
            versions[(entity, row.id)][row.version] = row
            out.versions_read += 1
    out.errors += [f"export row not readable (not in the PSA totals): {e}" for e in errors]
    ref = ctx.reference
    for item, by_version in versions.items():
        entity, item_id = item
        history = {v: r.approval_status for v, r in by_version.items()}
        out.histories[item] = history
        latest = max(history)
        if history[latest] in (ApprovalStatus.DRAFT, ApprovalStatus.SUBMITTED):
            out.awaiting.append(_awaiting(entity, by_version[latest]))
        eff = effective_version(sorted(history.items()))
        if eff is None:
            continue
        row = by_version[eff]
        project = ref.projects.get(row.project_id)
        label = f"{entity} {item_id}@{eff}"
        if project is None:
            out.errors.append(f"{label}: project {row.project_id!r} is not in the master data — not in the PSA totals")
            continue
        le = project.legal_entity_id
        cells: dict[CellKey, Decimal] = defaultdict(Decimal)
        resource = ref.resources.get(row.resource_id)
        try:
            if isinstance(row, TimeEntry):
                period = period_of(le, row.work_date)
                cells[(le, period, "hours", "")] += row.hours
                if resource is None:
                    raise _no_resource(label, row.resource_id)
                c = cost_time(row, project, resource, ref.rates)
                cells[(le, period, "labor_cost", c.cost_currency)] += c.cost_amount
                tm = project.contract_type is ContractType.TIME_AND_MATERIALS  # others recognise by % / milestone
                if tm and c.billable and c.billable_value != 0:
                    cells[(le, period, "revenue", c.bill_currency)] += c.billable_value
            else:
                if resource is None:
                    raise _no_resource(label, row.resource_id)
                x = cost_expense(row, project, resource)
                cells[(le, period_of(le, x.expense_date), "expense", x.currency)] += x.amount
        except DomainError as err:
            out.errors.append(f"{label}: cannot be costed ({err.rule}: {err.message}) — not in the PSA money "
                              "totals" + (" (its hours are)" if isinstance(row, TimeEntry) else ""))
        out.by_item[item] = dict(cells)
        for k, v in cells.items():
            out.totals[k] += v
    return out


def _no_resource(label: str, resource_id: str) -> DomainError:
    return DomainError(label, "master.unknown_resource", f"resource {resource_id!r} is not in the master data",
                       "load the resource (master reference loading)")


def _awaiting(entity: str, row: TimeEntry | Expense) -> dict[str, Any]:
    base = {"entity": entity, "item_id": row.id, "version": row.version, "status": row.approval_status.value,
            "project_id": row.project_id, "resource_id": row.resource_id}
    if isinstance(row, TimeEntry):
        return base | {"date": row.work_date.isoformat(), "hours": _txt(row.hours), "billable": row.billable}
    return base | {"date": row.expense_date.isoformat(), "amount": _txt(row.amount), "currency": row.currency}


# --------------------------------------------------------------------------------------------------- store side


@dataclass
class _Store:
    posted: dict[CellKey, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_item_date: dict[Item, dict[CellKey, Decimal]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(Decimal)))
    redated: list[tuple[CellKey, CellKey, Item, Decimal, str]] = field(default_factory=list)
    unposted: dict[Item, list[str]] = field(default_factory=lambda: defaultdict(list))
    unposted_runs: dict[Item, set[str | None]] = field(default_factory=lambda: defaultdict(set))
    posted_versions: dict[Item, list[str]] = field(default_factory=lambda: defaultdict(list))


def _store_side(conn: sa.Connection, system: str, period_of: _Periods) -> _Store:
    out = _Store()
    i = inbox_t.c
    hours: dict[tuple[str, int], Decimal] = {}
    for ext, ver, h in conn.execute(sa.select(i.external_id, i.version, i.payload["hours"].as_string()).where(
            i.system == system, i.entity == "time_entry", i.status != "dead")):
        hours[(ext, int(ver))] = Decimal(h)
    s = staging_t.c
    q = sa.select(s.txn_type, s.legal_entity_id, s.period, s.entry_date, s.currency, s.amounts, s.source_entity,
                  s.source_id, s.source_version, s.sign, s.status, s.redated_from, s.posting_run_id).where(
        s.source_system == system, s.source_entity.in_(("time_entry", "expense"))).order_by(s.id)
    for r in conn.execute(q):
        item: Item = (r.source_entity, r.source_id)
        if r.status in ("staged", "in_run"):
            out.unposted[item].append(f"v{r.source_version} {'reversal ' if r.sign < 0 else ''}{r.txn_type} "
                                      f"{r.status} for {r.period}")
            out.unposted_runs[item].add(r.posting_run_id if r.status == "in_run" else None)
            continue
        if r.status != "posted":
            continue
        date_period = period_of(r.legal_entity_id, r.entry_date)
        for name, value in r.amounts:
            measures = [LINE_MEASURE.get((r.txn_type, name))]
            if measures[0] == "labor_cost":
                measures.append("hours")
            for m in measures:
                if m is None:
                    continue
                if m == "hours":
                    h = hours.get((r.source_id, r.source_version))
                    if h is None:
                        continue  # reported by the mart build; the cell stays unexplained
                    amount, ccy = h * r.sign, ""
                else:
                    amount, ccy = Decimal(value) * r.sign, r.currency
                placed = (r.legal_entity_id, r.period, m, ccy)
                dated = (r.legal_entity_id, date_period, m, ccy)
                out.posted[placed] += amount
                out.by_item_date[item][dated] += amount
                if placed != dated:
                    what = (f"v{r.source_version} {'reversal' if r.sign < 0 else 'posting'} dated "
                            f"{r.entry_date.isoformat()} ({date_period}) posted in {r.period}"
                            f"{' (recorded redated from ' + r.redated_from + ')' if r.redated_from else ''}")
                    out.redated.append((placed, dated, item, amount, what))
        tag = f"{'-' if r.sign < 0 else '+'}v{r.source_version}"
        if tag not in out.posted_versions[item]:
            out.posted_versions[item].append(tag)
    return out


# --------------------------------------------------------------------------------------------------- ledger and mart


def _ledger_side(ctx: FlowContext, entities: Iterable[str]) -> tuple[dict[CellKey, Decimal], set[str], list[str]]:
    totals: dict[CellKey, Decimal] = defaultdict(Decimal)
    covered: set[str] = set()
    notes: list[str] = []
    for e in entities:
        system = ctx.ledger_system(e)
        conn = ctx.connector(system)
        if not hasattr(conn, "account_totals"):
            notes.append(f"{e}: ledger system {system!r} cannot report account totals; ledger side not compared")
            continue
        held = conn.account_totals(e)
        covered.add(e)
        for m, (role, side) in LEDGER_ROLES.items():
            code = ctx.rules.account_for(role, e)
            for (period, account, ccy), (debit, credit) in held.items():
                if account == code:
                    totals[(e, period, m, ccy)] += (debit - credit) * side
    return totals, covered, notes


def _mart_side(ctx: FlowContext, mart_path: Path) -> dict[CellKey, Decimal]:
    from ledgerbridge.flows.marts import open_mart

    totals: dict[CellKey, Decimal] = defaultdict(Decimal)
    roles = {role: (m, side) for m, (role, side) in LEDGER_ROLES.items()}
    duck = open_mart(mart_path)
    try:
        rows = duck.execute(
            "SELECT b.legal_entity_id, b.period, r.role, b.currency, sum(b.debit), sum(b.credit) "
            "FROM gl_balances b JOIN src_roles r ON r.legal_entity_id = b.legal_entity_id AND r.account = b.account "
            "GROUP BY ALL").fetchall()
        for e, period, role, ccy, debit, credit in rows:
            if role in roles:
                m, side = roles[role]
                totals[(e, period, m, ccy)] += (debit - credit) * side
        for e, period, h in duck.execute(
                "SELECT legal_entity_id, period, sum(hours) FROM fact_time GROUP BY ALL").fetchall():
            totals[(e, period, "hours", "")] += h
    finally:
        duck.close()
    return totals


# --------------------------------------------------------------------------------------------------- explaining


def _awaiting_ack(ctx: FlowContext, conn: sa.Connection, runs_of: dict[Item, set[str | None]]) -> dict[Item, str]:
    """Items whose unposted lines all sit in started posting runs to a target that acknowledges imports (file
    targets): item -> the runs and targets they wait for."""
    wanted = {r for runs in runs_of.values() for r in runs if r is not None}
    if not wanted:
        return {}
    waiting: dict[str, str] = {}
    for run_id, target, status in conn.execute(sa.select(runs_t.c.id, runs_t.c.target_system, runs_t.c.status)
                                               .where(runs_t.c.id.in_(sorted(wanted)))):
        if status == "started" and hasattr(ctx.connector(target), "ingest_ack"):
            waiting[run_id] = target
    out: dict[Item, str] = {}
    for item, runs in runs_of.items():
        if runs and all(r in waiting for r in runs):
            out[item] = "; ".join(f"posting run {r} written to {waiting[r]!r}, waiting for its acknowledgement "
                                  "(the ERP has not confirmed the import yet)" for r in sorted(runs, key=str))
    return out


def _classify(conn: sa.Connection, system: str, items: list[Item], psa: _Psa,
              store: _Store, ctx: FlowContext | None = None) -> dict[Item, tuple[str, str]]:
    """Why each item's ledger amount differs from its PSA amount (on the date basis): (kind, detail)."""
    inbox_versions: dict[Item, dict[int, str]] = defaultdict(dict)
    i = inbox_t.c
    by_entity: dict[str, list[str]] = defaultdict(list)
    for ent, iid in items:
        by_entity[ent].append(iid)
    for ent, ids in by_entity.items():
        for part in chunked(sorted(ids)):
            for ext, ver, status in conn.execute(sa.select(i.external_id, i.version, i.status).where(
                    i.system == system, i.entity == ent, i.external_id.in_(part))):
                inbox_versions[(ent, ext)][int(ver)] = status
    letters: dict[Item, list[str]] = defaultdict(list)
    d = dl_t.c
    for ent, key, code, text in conn.execute(sa.select(d.entity, d.item_key, d.error_code, d.error_text).where(
            d.queue == "financial", d.status == "open", d.system == system).order_by(d.first_seen)):
        letters[(ent, key.split("@", 1)[0])].append(f"{key}: {code}: {' '.join(str(text).split())}")
    acks = _awaiting_ack(ctx, conn, {it: store.unposted_runs.get(it, set()) for it in items}) if ctx else {}
    out: dict[Item, tuple[str, str]] = {}
    for item in items:
        history = psa.histories.get(item, {})
        seen = inbox_versions.get(item, {})
        latest = max(history) if history else None
        if letters.get(item):
            out[item] = ("dead_letter", "; ".join(letters[item]))
        elif latest is not None and (not seen or latest > max(seen)):
            missing = sorted(v for v in history if v not in seen)
            out[item] = ("not_ingested", "export version(s) " + ", ".join(
                f"v{v} ({history[v].value})" for v in missing) + " not received yet"
                + (f"; the ledger reflects v{max(seen)}" if seen else ""))
        elif any(st == "received" for st in seen.values()):
            out[item] = ("not_processed", "received, not processed yet: " + ", ".join(
                f"v{v}" for v, st in sorted(seen.items()) if st == "received"))
        elif store.unposted.get(item) and acks.get(item):
            out[item] = ("awaiting_ack", acks[item])
        elif store.unposted.get(item):
            out[item] = ("staged_unposted", "; ".join(store.unposted[item]))
        elif latest is not None and history[latest] in (ApprovalStatus.DRAFT, ApprovalStatus.SUBMITTED):
            out[item] = ("awaiting_approval", f"latest version v{latest} is {history[latest].value}")
        else:
            eff = effective_version(sorted(history.items())) if history else None
            out[item] = (UNEXPLAINED, f"ledger holds {' '.join(store.posted_versions.get(item, [])) or 'nothing'}; "
                         f"PSA effective version is {('v' + str(eff)) if eff else 'none'} — not explained by a dead "
                         "letter, late ingestion, pending posting or redating")
    return out


def _missing_journals(ctx: FlowContext, conn: sa.Connection, entity: str) -> list[str]:
    """Journals the store recorded as posted for ``entity`` that its ledger does not hold, or holds with other
    totals than the journal posted (read back through the connector)."""
    rows = conn.execute(sa.select(pj_t.c.id, pj_t.c.period, pj_t.c.target_system, pj_t.c.target_ref,
                                  pj_t.c.payload).where(pj_t.c.legal_entity_id == entity)).all()
    out: list[str] = []
    by_system: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_system[r.target_system].append(r)
    for system, recs in by_system.items():
        held = ctx.connector(system).read_back([r.id for r in recs])
        for r in recs:
            rb = held.get(r.id)
            if rb is None:
                out.append(f"journal {r.id} ({entity} {r.period}) is recorded as posted at {r.target_ref} but "
                           f"{system} does not hold it — restore it from the posted_journals payload (audit log) "
                           "or post a correcting journal")
                continue
            problems = rb.mismatches(JournalEntry.model_validate(r.payload))
            if problems:
                out.append(f"journal {r.id} ({entity} {r.period}) differs in {system} at {rb.target_ref} from what "
                           f"was posted: {'; '.join(problems)} — posted journals are never edited: restore it and "
                           "correct with a reversing journal")
    return out


def _journal_cells(ctx: FlowContext, conn: sa.Connection, entities: list[str]
                   ) -> tuple[dict[str, dict[CellKey, Decimal]], dict[str, str], dict[str, Decimal]]:
    """Per journal the store recorded as posted: its amount per cell (the period it was posted in), its target
    system, and its FX rate (first converted line)."""
    roles = {(e, ctx.rules.account_for(role, e)): (m, side)
             for e in entities for m, (role, side) in LEDGER_ROLES.items()}
    cells: dict[str, dict[CellKey, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    targets: dict[str, str] = {}
    rates: dict[str, Decimal] = {}
    q = (sa.select(pj_t.c.id, pj_t.c.legal_entity_id, pj_t.c.period, pj_t.c.target_system, pjl_t.c.account,
                   pjl_t.c.debit, pjl_t.c.credit, pjl_t.c.currency, pjl_t.c.fx_rate)
         .join(pjl_t, pjl_t.c.journal_id == pj_t.c.id).where(pj_t.c.legal_entity_id.in_(entities)))
    for jid, e, period, target, account, debit, credit, ccy, rate in conn.execute(q):
        targets[jid] = target
        if rate is not None and jid not in rates:
            rates[jid] = Decimal(rate)
        ms = roles.get((e, account))
        if ms is not None:
            cells[jid][(e, period, ms[0], ccy)] += (Decimal(debit) - Decimal(credit)) * ms[1]
    return cells, targets, rates


def _attribute_ledger_differences(ctx: FlowContext, conn: sa.Connection, cells: dict[CellKey, Cell]) -> None:
    """Where the ledger holds something else than the store recorded as posted, name the journals (module doc)."""
    gaps = {k: c.ledger - c.posted for k, c in cells.items()
            if c.basis == "ledger" and c.ledger is not None and c.ledger != c.posted}
    if not gaps:
        return
    jc, targets, rates = _journal_cells(ctx, conn, sorted({k[0] for k in gaps}))
    touching = sorted(j for j, per in jc.items() if any(k in gaps for k in per))
    by_target: dict[str, list[str]] = defaultdict(list)
    for j in touching:
        by_target[targets[j]].append(j)
    held: set[str] = set()
    for target, ids in by_target.items():
        held |= set(ctx.connector(target).read_back(ids))

    def note(k: CellKey, kind: str, jid: str, amount: Decimal, detail: str) -> None:
        cells[k].explanations.append(Explanation(kind, "journal", jid, amount, detail))
        gaps[k] -= amount

    for jid in touching:
        if jid not in held:
            for k, amt in jc[jid].items():
                if k in gaps and amt:
                    note(k, "missing_in_erp", jid, -amt, f"journal {jid} is recorded as posted to {targets[jid]!r} "
                         "but the ledger does not hold it — restore it from the posted_journals payload (audit log)")
    groups: dict[tuple[str, str, str], list[CellKey]] = defaultdict(list)
    for k in gaps:
        groups[k[:3]].append(k)
    for keys in groups.values():
        for ka in [k for k in keys if gaps[k] < 0]:
            jid = next((j for j in touching if j in held and jc[j].get(ka) == -gaps[ka]), None)
            kb = next((k for k in keys if k[3] != ka[3] and gaps[k] > 0), None)
            if jid is None or kb is None:
                continue
            posted, holds = -gaps[ka], gaps[kb]
            ours = f"; ledgerbridge converted at {rates[jid]}" if jid in rates else ""
            detail = (f"journal {jid}: ledgerbridge posted {_txt(posted)} {ka[3]}, the ledger holds {_txt(holds)} "
                      f"{kb[3]} instead (implied rate {holds / posted:.6f}{ours}) — the ERP converted it at its own "
                      "rate: correct the entry in the ERP with a reversing journal")
            note(ka, "fx_difference", jid, -posted, detail)
            note(kb, "fx_difference", jid, holds, detail)
    for k in [k for k in gaps if gaps[k] > 0]:
        gap = gaps[k]
        dup = next((j for j in touching if j in held and jc[j].get(k, ZERO) > 0 and gap % jc[j][k] == 0), None)
        if dup is not None:
            n = int(gap / jc[dup][k])
            note(k, "duplicate_in_erp", dup, gap, f"the ledger holds journal {dup} {n + 1} times (posted once by "
                 "ledgerbridge) — remove the duplicate in the ERP with a reversing entry")
        else:
            note(k, "posted_in_erp_not_staging", "(ledger)", gap, f"the ledger holds {_txt(gap)} {k[3]} more than "
                 "ledgerbridge posted in this cell — an entry that did not come through staging (a manual journal "
                 "in the ERP?): find it in the ledger and book it through the PSA or document it")
    for k in cells:
        cells[k].explanations.sort(key=lambda x: (x.kind, x.entity, x.item_id))


# --------------------------------------------------------------------------------------------------- reconcile


def reconcile(ctx: FlowContext, export_dir: Path, *, mart_path: Path | None = None,
              source_system: str | None = None) -> Reconciliation:
    """Compare the PSA export, the target ledger(s) and the mart per entity, period, measure and currency, and
    account for every variance (module doc). ``source_system``: the inbox system the export was ingested as
    (default: the configured ``psa_csv`` system)."""
    export_dir = Path(export_dir)
    if not ctx.reference.projects:
        raise ValueError("reconcile: the flow context has no reference data (projects, resources, rates) to cost the "
                         "PSA side with — call flows.reference.load_reference(ctx, <source system>) first")
    if not (export_dir / "time_entries.csv").exists():
        raise FileNotFoundError(f"reconcile: {export_dir} holds no time_entries.csv — pass the PSA export directory "
                                "(the one the transactional flow ingested, format docs/file-format.md)")
    system = source_system or _source_system(ctx)
    recon = Reconciliation(sources={"export_dir": str(export_dir), "mart": str(mart_path) if mart_path else None,
                                    "source_system": system})
    with ctx.engine.connect() as conn:
        period_of = _Periods(ctx.period_book(conn))
        psa = _psa_side(ctx, export_dir, period_of)
        store = _store_side(conn, system, period_of)
        entities = sorted(ctx.reference.entities)
        ledger, covered, notes = _ledger_side(ctx, entities)
        recon.findings += notes
        mart = _mart_side(ctx, mart_path) if mart_path is not None else None

        # per-item residuals on the date basis, classified
        residual: dict[Item, dict[CellKey, Decimal]] = {}
        for item in set(psa.by_item) | set(store.by_item_date):
            got = store.by_item_date.get(item, {})
            want = psa.by_item.get(item, {})
            diff = {k: got.get(k, ZERO) - want.get(k, ZERO) for k in set(got) | set(want)}
            diff = {k: v for k, v in diff.items() if v != 0}
            if diff:
                residual[item] = diff
        why = _classify(conn, system, sorted(residual), psa, store, ctx)

        keys: set[CellKey] = set(psa.totals) | set(store.posted) | set(ledger) | set(mart or {})
        cells = {k: Cell(*k) for k in keys}
        for placed, dated, item, amount, what in store.redated:
            cells[placed].explanations.append(Explanation("redated_in", item[0], item[1], amount, what))
            cells[dated].explanations.append(Explanation("redated_out", item[0], item[1], -amount, what))
        for item, diff in sorted(residual.items()):
            kind, detail = why[item]
            for k, v in diff.items():
                cells[k].explanations.append(Explanation(kind, item[0], item[1], v, detail))
            if kind == UNEXPLAINED:
                recon.findings.append(f"{item[0]} {item[1]}: {detail}")

        missing_checked: set[str] = set()
        for k, c in cells.items():
            e, _period, m, _ccy = k
            c.psa = psa.totals.get(k, ZERO)
            c.posted = store.posted.get(k, ZERO)
            c.mart = mart.get(k, ZERO) if mart is not None else None
            if m == "hours":
                c.basis = "mart" if mart is not None else "store"
                target = c.mart if c.mart is not None else c.posted
                c.mart_variance = (c.mart - c.posted) if c.mart is not None else None
            elif e in covered:
                c.ledger = ledger.get(k, ZERO)
                target = c.ledger
                c.mart_variance = (c.mart - c.ledger) if c.mart is not None else None
            else:
                c.basis = "store"
                target = c.posted
            c.variance = target - c.psa
            c.explained = sum((x.amount for x in c.explanations if x.kind in EXPLAINING), ZERO)
            c.unexplained = c.variance - c.explained
            if target != c.posted:
                c.notes.append(f"{c.basis} holds {_txt(target - c.posted)} more than ledgerbridge recorded as "
                               f"posted for this cell")
                if c.basis == "ledger" and e not in missing_checked:
                    missing_checked.add(e)
                    recon.findings += _missing_journals(ctx, conn, e)
            if c.mart_variance:
                c.notes.append(f"mart differs from the {'store' if m == 'hours' else 'ledger'} by "
                               f"{_txt(c.mart_variance)} — rebuild the mart (build_marts) and reconcile again")
            c.explanations.sort(key=lambda x: (x.kind, x.entity, x.item_id))
        _attribute_ledger_differences(ctx, conn, cells)
        recon.cells = sorted(cells.values(), key=lambda c: (c.legal_entity_id, c.period, MEASURES.index(c.measure),
                                                             c.currency))
    for c in recon.cells:
        if c.unexplained:
            recon.findings.append(f"{c.legal_entity_id} {c.period} {c.measure} {c.currency or 'hours'}: "
                                  f"{_txt(c.unexplained)} unexplained (variance {_txt(c.variance)}, explained "
                                  f"{_txt(c.explained)})" + (f" — {'; '.join(c.notes)}" if c.notes else ""))
        elif c.mart_variance:
            recon.findings.append(f"{c.legal_entity_id} {c.period} {c.measure} {c.currency or 'hours'}: "
                                  + "; ".join(c.notes))
    recon.psa_errors = psa.errors
    recon.awaiting_approval = sorted(psa.awaiting, key=lambda a: (a["entity"], a["item_id"]))
    recon.sources |= {"export_versions": psa.versions_read, "export_items": len(psa.histories),
                      "ledger_entities": sorted(covered)}
    return recon


def _source_system(ctx: FlowContext) -> str:
    names = [n for n, s in ctx.config.systems.items() if s.connector == "psa_csv"]
    return names[0] if len(names) == 1 else "psa_files"


# --------------------------------------------------------------------------------------------------- rendering


def _fmt(d: Decimal | None, measure: str) -> str:
    if d is None:
        return "—"
    return f"{d:,.2f}"


def render(recon: Reconciliation, console: Any, *, explanations: int = 8) -> None:
    """Print the reconciliation with Rich: one row per cell, then the explaining items, then the findings."""
    from rich.table import Table

    t = Table(title="Reconciliation: PSA vs ledger vs mart", show_lines=False)
    for col, justify in (("Entity", "left"), ("Period", "left"), ("Measure", "left"), ("Cur", "left"),
                         ("PSA", "right"), ("Ledger", "right"), ("Mart", "right"), ("Variance", "right"),
                         ("Explained", "right"), ("Unexplained", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in recon.cells:
        style = "red" if c.unexplained or c.mart_variance else ("yellow" if c.variance else "")
        t.add_row(c.legal_entity_id, c.period, c.measure, c.currency or "h", _fmt(c.psa, c.measure),
                  _fmt(c.ledger, c.measure), _fmt(c.mart, c.measure), _fmt(c.variance, c.measure),
                  _fmt(c.explained, c.measure), _fmt(c.unexplained, c.measure), style=style)
    console.print(t)
    ex = Table(title="Explained variances (per cell and reason)")
    for col in ("Cell", "Reason", "Items", "Amount", "Examples"):
        ex.add_column(col, justify="right" if col in ("Items", "Amount") else "left")
    for c in recon.cells:
        groups: dict[str, list[Explanation]] = defaultdict(list)
        for e in c.explanations:
            groups[e.kind].append(e)
        for kind, es in sorted(groups.items()):
            sample = ", ".join(f"{e.item_id} {_txt(e.amount)}" for e in es[:explanations])
            more = f" (+{len(es) - explanations} more)" if len(es) > explanations else ""
            ex.add_row(f"{c.legal_entity_id} {c.period} {c.measure} {c.currency or 'h'}", kind,
                       str(len({e.item_id for e in es})),
                       _fmt(sum((e.amount for e in es), ZERO), c.measure), sample + more)
    if ex.row_count:
        console.print(ex)
    total_unexplained = sum((abs(c.unexplained) for c in recon.cells), ZERO)
    if recon.ok:
        console.print(f"[green]Every variance explained[/green]: {len(recon.cells)} cells, unexplained 0.00 in "
                      f"every cell; mart equals ledger. {len(recon.awaiting_approval)} item(s) awaiting approval "
                      "(in neither side by design).")
    else:
        console.print(f"[red]Unexplained variance[/red] in {len(recon.unexplained_cells)} cell(s) "
                      f"(sum of absolute unexplained {total_unexplained:,.2f}):")
    for f in recon.findings:
        console.print(f"  - {f}")
    for err in recon.psa_errors[:20]:
        console.print(f"  [yellow]PSA:[/yellow] {err}")
