"""Billing orchestration, both ways: billing events -> invoice drafts -> validation -> the invoice created in the
target ERP under a deterministic key -> its status followed -> ERP number and status written back to the PSA.

Four idempotent stages (each a durable step in :func:`billing_workflow`; see docs/sync-billing.md):

1. **draft** (one store transaction) — the billing events of a period:

   - *credit notes first*: a billed item version that is no longer the version on the ledger (recalled, rejected
     or edited after billing; ``item_state.posted_version`` moved on) is credited on the invoice that billed it
     (:func:`~ledgerbridge.domain.billing.credit_note`, id ``CN-{invoice}-{n}``); the new version is then free to
     be billed by this run (a supplementary invoice ``INV-{project}-{period}-S2`` when the period was billed);
   - *T&M billing run* (:func:`~ledgerbridge.domain.billing.tm_billing_run`) over the time and expense versions
     currently on the ledger, costed exactly as they were accrued (the billable value is the staged
     ``revenue_accrual`` amount of that version; an item whose accrual is not in staging is not billed);
   - *milestones completed* (reference data status ``completed``) -> revenue recognition
     (:func:`~ledgerbridge.domain.revenue.milestone_postings`, staged now) and the milestone invoice;
   - *fixed-fee schedule dates* in the period (opt-in kind ``fixed_fee``: its percent-complete revenue must be
     recognised by its own flow, or billing would run ahead of revenue).

   Every draft is validated against what the ERP holds (reference data: customers, tax codes, dimension values):
   :func:`~ledgerbridge.domain.validation.validate_invoice_tax` (customer and tax codes known, active, same
   jurisdiction, tax amounts) and the project dimension allowed for the entity. A refused draft goes to the
   *financial* dead-letter queue with the draft attached and is not recorded, so its items stay unbilled and the
   replay (after the fix) drafts them again. A valid draft is recorded in ``invoices`` (status ``draft``) with its
   lineage, so the next run never bills those versions again.
2. **create** — every recorded draft is created in the entity's ``invoices`` system (routing) through the
   :class:`~ledgerbridge.connectors.base.InvoiceTarget` protocol, keyed by the invoice id (the target looks the key
   up before creating: a retry after a crash finds the invoice it already holds). In the same store transaction as
   the new status and ERP number: the xref binding, the invoice's postings (:func:`postings_for_invoice`, staged for
   the next posting run) and an audit entry. A target that books the invoice in its own ledger (``books_ledger``,
   e.g. Tryton) is sent the invoice with its work lines on the invoice clearing account (an ERP invoice line must
   credit a revenue-type account) and the engine stages only the relief (``invoice_relief``: Dr clearing / Cr
   unbilled receivables, :func:`~ledgerbridge.domain.billing.relief_postings_for_invoice`), so the clearing nets to
   zero in the ERP and revenue stays what the accrual recognised. A refusal goes to the
   financial dead-letter queue (draft attached, status ``failed``); a transient failure leaves the draft for the
   next run.
3. **status** — the target is polled (``invoice_status``) and changed statuses/numbers are recorded.
4. **write-back** — number and status of every invoice whose status changed since the last write-back go to the
   PSA (the entity's ``time`` system, :class:`~ledgerbridge.connectors.base.InvoiceStatusSink`); a failure goes to
   the *operational* dead-letter queue (status sync moves no money).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledgerbridge import runtime as rt
from ledgerbridge.connectors.base import InvoiceStatusSink, InvoiceStatusUpdate, InvoiceTarget
from ledgerbridge.domain.billing import REBILL_AMOUNT as DOMAIN_REBILL_AMOUNT
from ledgerbridge.domain.billing import REBILL_TXN_TYPE as DOMAIN_REBILL_TXN
from ledgerbridge.domain.billing import RELIEF_TXN_TYPE as DOMAIN_RELIEF_TXN
from ledgerbridge.domain.billing import (
    credit_note,
    fixed_fee_invoice,
    fixed_fee_schedule,
    is_expense_line,
    milestone_invoice,
    period_bounds,
    postings_for_invoice,
    relief_postings_for_invoice,
    tm_billing_run,
)
from ledgerbridge.domain.costing import cost_expense, cost_time
from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.revenue import milestone_postings
from ledgerbridge.domain.types import CostedExpense, CostedTime, Posting
from ledgerbridge.domain.validation import validate_invoice_tax
from ledgerbridge.errors import ErrorKind, LedgerbridgeError, PermanentError
from ledgerbridge.flows.context import FlowContext, current
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import ContractType, Expense, Invoice, MilestoneStatus, TimeEntry
from ledgerbridge.store import audit, dead_letters, staging, xref
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.store.dead_letters import DeadLetter, NewDeadLetter
from ledgerbridge.store.invoices import InvoiceRow
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import item_state as item_state_t
from ledgerbridge.store.schema import staging_lines as staging_t
from ledgerbridge.store.staging import StageItem
from ledgerbridge.store.xref import XrefEntry

FLOW = "billing"
KINDS = ("tm", "milestone", "fixed_fee")
DEFAULT_KINDS = ("tm", "milestone")
#: invoice statuses that no longer bill anything (their lineage is free again)
DEAD_STATUSES = ("failed", "void")
#: statuses worth polling the target for
LIVE_STATUSES = ("submitted", "posted", "paid", "credited")
_LIVE_STAGING = ("staged", "in_run", "posted")


@dataclass
class DraftOutcome:
    period: str
    entity: str | None
    drafted: list[str] = field(default_factory=list)
    credit_notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # invoice ids dead-lettered at validation
    held_back: int = 0  # items / projects the domain held back (dead-lettered with the rule)
    recognised: int = 0  # milestone revenue postings staged
    dead_lettered: int = 0


@dataclass
class CreateOutcome:
    created: list[str] = field(default_factory=list)
    already_held: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retry_later: list[str] = field(default_factory=list)
    staged_lines: int = 0


# --------------------------------------------------------------------------------------------------- helpers


def invoice_system(ctx: FlowContext, entity: str) -> str:
    """The system invoices of ``entity`` are created in (routing ``invoices``; the ledger system by default)."""
    r = ctx.config.routing.for_entity(entity)
    return str(r.invoices or r.ledger)


def source_system(ctx: FlowContext, entity: str) -> str:
    """The PSA system billed items come from and invoice statuses go back to (routing ``time``)."""
    r = ctx.config.routing.for_entity(entity)
    return str(r.time)


def _ref_of(key: Sequence[Any]) -> SourceRef:
    system, entity, item_id, version = key
    return SourceRef(system=str(system), entity=str(entity), id=str(item_id), version=int(version))


def _lineage(inv: Invoice) -> list[list[Any]]:
    return [[r.system, r.entity, r.id, r.version] for ln in inv.lines for r in ln.lineage]


def _dump(inv: Invoice) -> dict[str, Any]:
    return inv.model_dump(mode="json")


def _kind_of(inv_id: str) -> str:
    if inv_id.startswith("CN-"):
        return "credit_note"
    if "-MS-" in inv_id:
        return "milestone"
    if "-FF-" in inv_id:
        return "fixed_fee"
    return "tm"


def _row_for(inv: Invoice, period: str, erp_system: str, credits: str | None = None) -> InvoiceRow:
    return InvoiceRow(
        id=inv.id, kind=_kind_of(inv.id), legal_entity_id=inv.legal_entity_id, project_id=inv.project_id,
        customer_id=inv.customer_id, period=period, invoice_date=inv.invoice_date, currency=inv.currency,
        net_total=inv.net_total, tax_total=inv.tax_total, status="draft", erp_system=erp_system, erp_number=None,
        credits=credits, payload=_dump(inv), lineage=_lineage(inv))


def _letter(inv: Invoice | None, item_key: str, system: str, rule: str, text: str, kind: str = "validation",
            extra: dict[str, Any] | None = None) -> NewDeadLetter:
    payload: dict[str, Any] = {"invoice": _dump(inv) if inv is not None else None, **(extra or {})}
    return NewDeadLetter("financial", FLOW, system, "invoice", item_key, payload, kind, rule, text)


class _Placer:
    """Ledger period of a posting under the entity's late-item policy (a closed period redates or refuses)."""

    def __init__(self, ctx: FlowContext, conn: sa.Connection) -> None:
        self.ctx = ctx
        self.book = ctx.period_book(conn)

    def stage(self, p: Posting) -> StageItem:
        placed = self.book.place(p.legal_entity_id, p.date, self.ctx.late_policy(p.legal_entity_id))
        return StageItem(p, period=placed.period, redated_from=placed.redated_from)


# ------------------------------------------------------------------------------------------ what is on the ledger


@dataclass
class _OnLedger:
    """The time/expense versions currently on the ledger, costed as accrued, and the billed versions' costing."""

    time: list[CostedTime] = field(default_factory=list)
    expenses: list[CostedExpense] = field(default_factory=list)
    by_ref: dict[SourceRef, CostedTime | CostedExpense] = field(default_factory=dict)
    posted_version: dict[tuple[str, str, str], int | None] = field(default_factory=dict)


def _accrued(conn: sa.Connection, system: str, entity: str, txn: str) -> dict[tuple[str, int], Decimal]:
    """(item id, version) -> first amount of the version's positive ``txn`` line still live in staging."""
    q = sa.select(staging_t.c.source_id, staging_t.c.source_version, staging_t.c.amounts).where(
        staging_t.c.source_system == system, staging_t.c.source_entity == entity, staging_t.c.txn_type == txn,
        staging_t.c.sign == 1, staging_t.c.status.in_(_LIVE_STAGING))
    return {(r.source_id, int(r.source_version)): Decimal(str(r.amounts[0][1])) for r in conn.execute(q)}


def _on_ledger(ctx: FlowContext, conn: sa.Connection, systems: Iterable[str], entity: str | None,
               extra_versions: Iterable[SourceRef] = ()) -> _OnLedger:
    """Cost every version on the ledger not billed yet, and the billed versions (``extra_versions``) that are no
    longer on the ledger (to credit them), from their inbox payloads; billed versions still on the ledger need
    nothing and are not re-read.

    A time entry's billable value is the amount its ``revenue_accrual`` line was staged with (what was accrued, cent
    for cent, even if a rate changed since); a version without a live accrual (or, for an expense, without its live
    ``expense`` line) is not on the ledger and is not billed."""
    out = _OnLedger()
    extra = list(extra_versions)
    for system in sorted(set(systems)):
        for kind, txn in (("time_entry", "revenue_accrual"), ("expense", "expense")):
            accrued = _accrued(conn, system, kind, txn)
            states = conn.execute(sa.select(item_state_t.c.item_id, item_state_t.c.posted_version).where(
                item_state_t.c.system == system, item_state_t.c.entity == kind)).all()
            for item_id, pv in states:
                out.posted_version[(system, kind, item_id)] = pv
            billed = {(r.id, r.version) for r in extra if r.system == system and r.entity == kind}
            wanted = {(i, int(v)) for i, v in states if v is not None} - billed
            wanted |= {(i, v) for i, v in billed if out.posted_version.get((system, kind, i)) != v}
            wanted &= set(accrued)
            if not wanted:
                continue
            payloads = _payloads(conn, system, kind, wanted)
            for (item_id, version), payload in sorted(payloads.items()):
                try:
                    costed = _cost(ctx, kind, payload)
                except DomainError:
                    continue  # the transactional flow dead-lettered this version; it is not on the ledger
                if costed.legal_entity_id != (entity or costed.legal_entity_id):
                    continue
                if isinstance(costed, CostedTime) and costed.billable:
                    costed = replace(costed, billable_value=accrued[(item_id, version)])
                out.by_ref[costed.ref] = costed
                if out.posted_version.get((system, kind, item_id)) == version:
                    if isinstance(costed, CostedTime):
                        out.time.append(costed)
                    else:
                        out.expenses.append(costed)
    return out


def _payloads(conn: sa.Connection, system: str, entity: str,
              wanted: set[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    ids = sorted({i for i, _ in wanted})
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        q = sa.select(inbox_t.c.external_id, inbox_t.c.version, inbox_t.c.payload).where(
            inbox_t.c.system == system, inbox_t.c.entity == entity, inbox_t.c.external_id.in_(ids[start:start + 500]))
        for ext, ver, payload in conn.execute(q):
            key = (ext, int(ver))
            if key in wanted:
                out[key] = payload
    return out


def _cost(ctx: FlowContext, kind: str, payload: dict[str, Any]) -> CostedTime | CostedExpense:
    ref = ctx.reference
    if kind == "time_entry":
        e = TimeEntry.model_validate(payload)
        project, resource = ref.projects.get(e.project_id), ref.resources.get(e.resource_id)
        if project is None or resource is None:
            raise DomainError(f"time_entry {e.id}", "master.unknown", "project or resource unknown", "load them")
        return cost_time(e, project, resource, ref.rates)
    x = Expense.model_validate(payload)
    project, resource = ref.projects.get(x.project_id), ref.resources.get(x.resource_id)
    if project is None or resource is None:
        raise DomainError(f"expense {x.id}", "master.unknown", "project or resource unknown", "load them")
    return cost_expense(x, project, resource)


# --------------------------------------------------------------------------------------------------- validation


def validate_draft(ctx: FlowContext, inv: Invoice) -> list[Violation]:
    """What the ERP would refuse: the customer and tax rules (:func:`validate_invoice_tax` against the ERP's
    customers and tax codes) and the dimensions of the invoice postings (project value allowed for the entity)."""
    ref = ctx.reference
    customer = ref.customers.get(inv.customer_id)
    if customer is None:
        return [Violation(f"invoice {inv.id}", "invoice.unknown_customer",
                          f"customer {inv.customer_id} is not in the ERP's customers",
                          f"sync customer {inv.customer_id} from the ERP, then replay")]
    out = validate_invoice_tax(inv, customer, ref.tax_codes)
    values = [d for d in ref.dimensions if d.dimension == "project"]
    if values:
        hit = next((d for d in values if d.code == inv.project_id), None)
        if hit is None or not hit.active or (hit.legal_entity_ids and inv.legal_entity_id not in hit.legal_entity_ids):
            out.append(Violation(f"invoice {inv.id}", "invoice.dimension_not_allowed",
                                 f"project {inv.project_id} is not an active project dimension value of "
                                 f"{inv.legal_entity_id} in the ERP",
                                 f"add or activate dimension value project={inv.project_id} for {inv.legal_entity_id}"))
    project = ref.projects.get(inv.project_id)
    if project is not None and project.legal_entity_id != inv.legal_entity_id:
        out.append(Violation(f"invoice {inv.id}", "invoice.entity_mismatch",
                             f"project {project.id} belongs to {project.legal_entity_id}",
                             f"bill project {project.id} from {project.legal_entity_id}"))
    return out


def _drafting_tax_codes(ctx: FlowContext) -> dict[str, Any]:
    """Tax codes and customers as the *drafting* rules see them: active, so a draft is always built and the
    refusal (inactive code or customer) comes from :func:`validate_draft` with the draft attached."""
    ref = ctx.reference
    codes = {k: t.model_copy(update={"active": True}) for k, t in ref.tax_codes.items()}
    customers = {k: c.model_copy(update={"active": True}) for k, c in ref.customers.items()}
    return {"tax_codes": codes, "customers": customers}


def with_line_accounts(ctx: FlowContext, inv: Invoice) -> Invoice:
    """The invoice with each line's ``revenue_account`` set to the account the posting rules credit for it: the
    ``invoice`` rule's credit on ``net`` (unbilled receivables: billing relieves what was recognised) for billed
    work, the rebill rule's credit for rebilled expenses. An ERP that books the invoice itself (``books_ledger``,
    e.g. Tryton) then books exactly what the posting run would have."""
    entity = inv.legal_entity_id

    def credit_of(txn: str, amount: str) -> str | None:
        line = next((rl for rl in ctx.rules.rules.get(txn, ()) if rl.amount == amount), None)
        return ctx.rules.account_for(line.credit, entity) if line is not None else None

    work, rebill = credit_of("invoice", "net"), credit_of(DOMAIN_REBILL_TXN, DOMAIN_REBILL_AMOUNT)
    lines = tuple(ln.model_copy(update={"revenue_account": (rebill if is_expense_line(ln) else work)})
                  for ln in inv.lines)
    return inv.model_copy(update={"lines": lines})


def for_booking_target(ctx: FlowContext, inv: Invoice) -> Invoice:
    """The invoice as sent to a target that books it in its own ledger: work lines on the debit account of the
    ``invoice_relief`` rule (the invoice clearing account, revenue-typed), rebilled expense lines unchanged (their
    reimbursable expense revenue). Refused with a clear error when the configuration has no relief rule."""
    line = next((rl for rl in ctx.rules.rules.get(DOMAIN_RELIEF_TXN, ()) if rl.amount == "net"), None)
    if line is None:
        raise PermanentError(
            f"invoice {inv.id}: its target books invoices in its own ledger, which needs the posting rule "
            f"{DOMAIN_RELIEF_TXN!r} (Dr invoice_clearing / Cr unbilled_receivables on net) — add it to posting_rules",
            details={"invoice_id": inv.id, "rule": DOMAIN_RELIEF_TXN})
    clearing = ctx.rules.account_for(line.debit, inv.legal_entity_id)
    lines = tuple(ln if is_expense_line(ln) else ln.model_copy(update={"revenue_account": clearing})
                  for ln in inv.lines)
    return inv.model_copy(update={"lines": lines})


# --------------------------------------------------------------------------------------------------- stage 1: draft


def draft_invoices(ctx: FlowContext, period: str, entity: str | None = None, *,
                   kinds: Sequence[str] = DEFAULT_KINDS, invoice_date: dt.date | None = None) -> DraftOutcome:
    """Stage 1 (one store transaction): credit notes, T&M run, milestones, fixed-fee dates of ``period``;
    validate; record the valid drafts, dead-letter the refused ones (see the module doc)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"billing kinds {bad} unknown; use some of {list(KINDS)}")
    _, period_end = period_bounds(period)
    day = invoice_date or period_end
    ref = ctx.reference
    entities = [entity] if entity else sorted(ref.entities)
    out = DraftOutcome(period, entity)
    relaxed = _drafting_tax_codes(ctx)
    with ctx.engine.begin() as conn:
        placer = _Placer(ctx, conn)
        existing = invoices_repo.list_invoices(conn)
        issued = {r.id for r in existing}
        live = [r for r in existing if r.status not in DEAD_STATUSES and r.legal_entity_id in entities]
        billed: dict[SourceRef, str] = {}
        credited: set[SourceRef] = set()
        for r in live:
            refs = [_ref_of(k) for k in r.lineage]
            if r.kind == "credit_note":
                credited.update(refs)
            elif r.kind == "tm":
                billed.update({x: r.id for x in refs})
        open_billed = {x: inv for x, inv in billed.items() if x not in credited}
        systems = {source_system(ctx, e) for e in entities}
        ledger = _on_ledger(ctx, conn, systems, entity, extra_versions=open_billed)
        rows: list[InvoiceRow] = []
        letters: list[NewDeadLetter] = []
        stage: list[StageItem] = []

        def accept(inv: Invoice, credits: str | None = None) -> bool:
            inv = with_line_accounts(ctx, inv)
            target = invoice_system(ctx, inv.legal_entity_id)
            problems = validate_draft(ctx, inv)
            if problems:
                letters.append(_letter(inv, inv.id, target, problems[0].rule, "; ".join(str(p) for p in problems),
                                       extra={"period": period, "entity": inv.legal_entity_id,
                                              "violations": [dataclasses.asdict(p) for p in problems]}))
                out.refused.append(inv.id)
                return False
            rows.append(_row_for(inv, period, target, credits))
            issued.add(inv.id)
            return True

        # 1. credit notes: billed versions no longer on the ledger
        if "tm" in kinds:
            stale: dict[str, list[CostedTime | CostedExpense]] = defaultdict(list)
            for x, inv_id in sorted(open_billed.items(), key=lambda kv: (kv[1], kv[0].key)):
                pv = ledger.posted_version.get((x.system, x.entity, x.id))
                if pv != x.version:
                    costed = ledger.by_ref.get(x)
                    if costed is None:
                        letters.append(_letter(None, f"credit:{x}", invoice_system(ctx, entity or "?"),
                                               "billing.billed_version_unknown",
                                               f"{x} was billed on {inv_id} and is no longer on the ledger, but its "
                                               "accrual cannot be found to credit it — check staging for it",
                                               extra={"invoice_id": inv_id, "ref": x.key}))
                        continue
                    stale[inv_id].append(costed)
            by_id = {r.id: r for r in existing}
            for inv_id, items in sorted(stale.items()):
                orig = Invoice.model_validate(by_id[inv_id].payload)
                try:
                    cn = credit_note(orig, max(day, orig.invoice_date), ref.tax_codes, items, issued_invoice_ids=issued)
                except DomainError as err:
                    letters.append(_letter(orig, f"credit:{inv_id}", by_id[inv_id].erp_system, err.rule, str(err)))
                    continue
                if accept(cn, credits=inv_id):
                    out.credit_notes.append(cn.id)
                    credited.update(r for ln in cn.lines for r in ln.lineage)

        # 2. T&M billing run over the versions on the ledger, not billed (or billed and credited)
        if "tm" in kinds:
            still_billed = frozenset(x for x in billed if x not in credited)
            run = tm_billing_run(ledger.time, ledger.expenses, ref.projects, relaxed["customers"],
                                 relaxed["tax_codes"], period, day, converter=_converter(ctx),
                                 already_billed=still_billed, issued_invoice_ids=issued)
            for v in run.violations:
                letters.append(_letter(None, v.item, invoice_system(ctx, entity or _entity_of(ctx, v)), v.rule,
                                       str(v), extra={"period": period, "violation": dataclasses.asdict(v)}))
                out.held_back += 1
            for inv in run.invoices:
                if entity is None or inv.legal_entity_id == entity:
                    accept(inv)

        # 3. milestones completed
        if "milestone" in kinds:
            for ms in sorted(ref.milestones.values(), key=lambda m: m.id):
                project = ref.projects.get(ms.project_id)
                if (ms.status is not MilestoneStatus.COMPLETED or project is None or ms.completed_on is None
                        or ms.completed_on > period_end or (entity and project.legal_entity_id != entity)):
                    continue
                inv_id = f"INV-{project.id}-MS-{ms.id}"
                if inv_id in issued:
                    continue
                item = f"billing_milestone {ms.id}"
                try:
                    inv = milestone_invoice(ms, project, relaxed["customers"].get(project.customer_id),
                                            relaxed["tax_codes"], ms.completed_on, source_system=source_system(
                                                ctx, project.legal_entity_id))
                    if project.contract_type is ContractType.MILESTONE:
                        ps = milestone_postings(ms, project, source_system=source_system(ctx, project.legal_entity_id))
                        stage += [placer.stage(p) for p in ps]
                except DomainError as err:
                    letters.append(_letter(None, item, invoice_system(ctx, project.legal_entity_id), err.rule,
                                           str(err), extra={"period": period, "milestone": ms.model_dump(mode="json")}))
                    out.held_back += 1
                    continue
                if accept(inv):
                    out.recognised += len(ps) if project.contract_type is ContractType.MILESTONE else 0

        # 4. fixed-fee schedule dates in the period
        if "fixed_fee" in kinds:
            start, _ = period_bounds(period)
            for project in sorted(ref.projects.values(), key=lambda p: p.id):
                if project.contract_type is not ContractType.FIXED_FEE:
                    continue
                if entity and project.legal_entity_id != entity:
                    continue
                try:
                    if project.end_date is None:
                        raise DomainError(f"project {project.id}", "billing.no_schedule_end",
                                          "the fixed-fee project has no end date, so its billing schedule is undefined",
                                          f"set the end date of project {project.id} in the PSA")
                    sched = fixed_fee_schedule(project, project.start_date, project.end_date)
                    due = [s for s in sched if start <= s.date <= period_end
                           and f"INV-{project.id}-FF-{s.seq:03d}" not in issued]
                    invs = [fixed_fee_invoice(project, s, relaxed["customers"].get(project.customer_id),
                                              relaxed["tax_codes"]) for s in due]
                except DomainError as err:
                    letters.append(_letter(None, f"project {project.id}", invoice_system(ctx, project.legal_entity_id),
                                           err.rule, str(err), extra={"period": period}))
                    out.held_back += 1
                    continue
                for inv in invs:
                    accept(inv)

        invoices_repo.add_drafts(conn, rows)
        out.drafted = [r.id for r in rows if r.kind != "credit_note"]
        if stage:
            staging.stage_many(conn, stage)
        if letters:
            dead_letters.add(conn, letters)
        out.dead_lettered = len(letters)
        audit.append(conn, "ledgerbridge", "billing.drafted", f"billing:{entity or 'all'}:{period}", {
            "drafted": out.drafted, "credit_notes": out.credit_notes, "refused": out.refused,
            "held_back": out.held_back, "recognised": out.recognised,
            "totals": {r.id: [str(r.net_total), str(r.tax_total), r.currency] for r in rows}})
    return out


def _entity_of(ctx: FlowContext, v: Violation) -> str:
    for token in v.item.replace(":", " ").split():
        p = ctx.reference.projects.get(token)
        if p is not None:
            return p.legal_entity_id
    return next(iter(sorted(ctx.reference.entities)), "?")


def _converter(ctx: FlowContext) -> Any:
    """The billing converter over the firm's FX table (a rebilled foreign expense at its expense date)."""
    fx = ctx.reference.fx

    def convert(amount: Decimal, from_cur: str, to_cur: str, on: dt.date) -> Decimal:
        return fx.convert(amount, from_cur, to_cur, on).amount

    return convert


# --------------------------------------------------------------------------------------------------- stage 2: create

def _target(ctx: FlowContext, system: str) -> InvoiceTarget:
    conn = ctx.connector(system)
    if not isinstance(conn, InvoiceTarget):
        raise PermanentError(
            f"system {system!r} ({type(conn).__name__}) cannot create invoices: it does not implement "
            "create_invoice/invoice_status — route invoices to a system that does (routing.invoices)",
            details={"system": system})
    return conn


CREATE_BATCH = 200


def _create_batch(target: InvoiceTarget, system: str, invs: list[Invoice]) -> dict[str, Any]:
    """invoice id -> InvoiceResult or LedgerbridgeError; one call when the target takes batches
    (``create_invoices``), else one ``create_invoice`` per invoice. Transient failures are retried by the policy
    and, when it gives up, raised for the whole batch."""
    many = getattr(target, "create_invoices", None)
    if many is not None:
        got: dict[str, Any] = rt.call_with_policy(many, rt.DEFAULT_RETRY_POLICY, invs,
                                                  name="billing.create_invoices", system=system)
        return got
    out: dict[str, Any] = {}
    for inv in invs:
        try:
            out[inv.id] = rt.call_with_policy(target.create_invoice, rt.DEFAULT_RETRY_POLICY, inv,
                                              name="billing.create_invoice", system=system)
        except LedgerbridgeError as err:
            if _retryable(err):
                raise
            out[inv.id] = err
    return out


def _retryable(err: LedgerbridgeError) -> bool:
    return err.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED) or err.code.startswith("LB-X")


def create_pending(ctx: FlowContext, entity: str | None = None, ids: Sequence[str] | None = None) -> CreateOutcome:
    """Stage 2: create every recorded draft (of ``entity`` / ``ids``) in its target, in batches (one target call
    and one store transaction per batch when the target takes batches); see the module doc."""
    out = CreateOutcome()
    with ctx.engine.connect() as conn:
        drafts = invoices_repo.list_invoices(conn, legal_entity_id=entity, status="draft")
    if ids is not None:
        wanted = set(ids)
        drafts = [d for d in drafts if d.id in wanted]
    by_system: dict[str, list[InvoiceRow]] = defaultdict(list)
    # credit notes after the invoices they credit (a target may check the original exists)
    for row in sorted(drafts, key=lambda r: (r.kind == "credit_note", r.id)):
        by_system[row.erp_system].append(row)
    for system, group in sorted(by_system.items()):
        for start in range(0, len(group), CREATE_BATCH):
            chunk = group[start:start + CREATE_BATCH]
            invs = {r.id: Invoice.model_validate(r.payload) for r in chunk}
            booking = False
            try:
                target = _target(ctx, system)
                sent = list(invs.values())
                booking = bool(getattr(target, "books_ledger", False))
                if booking:
                    sent = [for_booking_target(ctx, inv) for inv in sent]
                results = _create_batch(target, system, sent)
            except LedgerbridgeError as err:
                if _retryable(err):
                    out.retry_later += [r.id for r in chunk]
                    continue
                results = {r.id: err for r in chunk}
            _record_created(ctx, system, chunk, invs, results, out, relieve=booking)
    return out


def _record_created(ctx: FlowContext, system: str, chunk: list[InvoiceRow], invs: dict[str, Invoice],
                    results: dict[str, Any], out: CreateOutcome, *, relieve: bool = False) -> None:
    """One store transaction for a batch: status + number, xref, staged postings and audit per created invoice;
    ``failed`` + a financial dead letter (draft attached) per refused one. ``relieve``: the invoices were sent with
    their work lines on the clearing account (:func:`for_booking_target`), so a target that booked them gets the
    relief staged; one that books without having been sent that way gets nothing staged (its own booking already
    relieved unbilled receivables)."""
    with ctx.engine.begin() as conn:
        placer = _Placer(ctx, conn)
        current_rows = invoices_repo.get_many(conn, [r.id for r in chunk])
        letters: list[NewDeadLetter] = []
        bindings: list[XrefEntry] = []
        stage: list[StageItem] = []
        for row in chunk:
            inv, res = invs[row.id], results.get(row.id)
            now = current_rows.get(row.id)
            if now is None or now.status != "draft":  # another worker recorded it meanwhile
                out.already_held.append(row.id)
                continue
            if res is None:
                res = PermanentError(f"{system}: the target returned no result for invoice {row.id}",
                                     details={"invoice_id": row.id})
            if isinstance(res, LedgerbridgeError):
                invoices_repo.set_status(conn, row.id, "failed")
                letters.append(_letter(inv, row.id, system, res.code, str(res), res.kind.value,
                                       extra={"period": row.period, "entity": row.legal_entity_id, "stage": "create"}))
                audit.append(conn, "ledgerbridge", "billing.create_failed", f"invoice:{row.id}",
                             {"system": system, "code": res.code, "error": str(res)})
                out.failed.append(row.id)
                continue
            invoices_repo.set_status(conn, row.id, res.status, erp_number=res.number)
            bindings.append(XrefEntry("invoice", row.id, system, res.number or row.id, version_synced=res.status))
            facts = ((relief_postings_for_invoice(inv) if relieve else []) if res.books_ledger
                     else postings_for_invoice(inv))
            postings = [placer.stage(p) for p in facts]
            stage += postings
            audit.append(conn, "ledgerbridge", "billing.invoice_created", f"invoice:{row.id}", {
                "system": system, "number": res.number, "status": res.status, "net": str(inv.net_total),
                "tax": str(inv.tax_total), "currency": inv.currency, "staged_postings": len(postings),
                "books_ledger": res.books_ledger})
            out.created.append(row.id)
        xref.upsert_many(conn, bindings)
        out.staged_lines += staging.stage_many(conn, stage)
        if letters:
            dead_letters.add(conn, letters)


# --------------------------------------------------------------------------------------------------- stage 3/4


def sync_status(ctx: FlowContext, entity: str | None = None) -> dict[str, str]:
    """Stage 3: poll each target for the invoices it holds; record changed statuses/numbers. Returns the changes."""
    with ctx.engine.connect() as conn:
        rows = invoices_repo.list_invoices(conn, legal_entity_id=entity, statuses=LIVE_STATUSES)
    by_system: dict[str, list[InvoiceRow]] = defaultdict(list)
    for r in rows:
        by_system[r.erp_system].append(r)
    changed: dict[str, str] = {}
    for system, group in sorted(by_system.items()):
        held = _target(ctx, system).invoice_status([r.id for r in group])
        with ctx.engine.begin() as conn:
            for r in group:
                h = held.get(r.id)
                if h is not None and (h.status != r.status or (h.number and h.number != r.erp_number)):
                    invoices_repo.set_status(conn, r.id, h.status, erp_number=h.number)
                    audit.append(conn, "ledgerbridge", "billing.status_changed", f"invoice:{r.id}",
                                 {"system": system, "from": r.status, "to": h.status, "number": h.number})
                    changed[r.id] = h.status
    return changed


def write_back(ctx: FlowContext, entity: str | None = None) -> int:
    """Stage 4: ERP number and status of every invoice not yet written back in its current status go to the PSA
    (the entity's ``time`` system). Returns the invoices written back; failures -> operational dead letters."""
    with ctx.engine.connect() as conn:
        rows = [r for r in invoices_repo.list_invoices(conn, legal_entity_id=entity)
                if r.status not in ("draft",) and r.written_back != r.status]
    by_system: dict[str, list[InvoiceRow]] = defaultdict(list)
    for r in rows:
        by_system[source_system(ctx, r.legal_entity_id)].append(r)
    done = 0
    for system, group in sorted(by_system.items()):
        sink = ctx.connector(system)
        updates = [InvoiceStatusUpdate(r.id, r.project_id, r.legal_entity_id, r.invoice_date, r.currency,
                                       r.net_total + r.tax_total, r.erp_system, r.erp_number, r.status, r.credits,
                                       items=tuple(sorted({(str(x[0]), str(x[1]), str(x[2])) for x in r.lineage})))
                   for r in group]
        try:
            if not isinstance(sink, InvoiceStatusSink):
                raise PermanentError(f"system {system!r} takes no invoice status write-back "
                                        "(no write_invoice_status): route time to a PSA that does, or ignore",
                                        details={"system": system})
            sink.write_invoice_status(updates)
        except LedgerbridgeError as err:
            with ctx.engine.begin() as conn:
                dead_letters.add(conn, [NewDeadLetter(
                    "operational", FLOW, system, "invoice_status", f"write-back:{r.id}",
                    {"update": {**dataclasses.asdict(u), "invoice_date": u.invoice_date.isoformat(),
                                "total": str(u.total), "items": [list(i) for i in u.items]}},
                    err.kind.value, err.code, str(err))
                    for r, u in zip(group, updates, strict=True)])
            continue
        with ctx.engine.begin() as conn:
            invoices_repo.mark_written_back(conn, [(r.id, r.status) for r in group])
            audit.append(conn, "ledgerbridge", "billing.written_back", f"system:{system}",
                         {"invoices": {r.id: [r.erp_number, r.status] for r in group}})
        done += len(group)
    return done


def run_billing(ctx: FlowContext, period: str, entity: str | None = None, *,
                kinds: Sequence[str] = DEFAULT_KINDS, invoice_date: dt.date | None = None) -> dict[str, Any]:
    """All four stages in this process (no durable runtime): draft, create, status, write-back."""
    drafted = draft_invoices(ctx, period, entity, kinds=kinds, invoice_date=invoice_date)
    created = create_pending(ctx, entity)
    changed = sync_status(ctx, entity)
    written = write_back(ctx, entity)
    return _summary(drafted, created, changed, written)


def _summary(drafted: DraftOutcome, created: CreateOutcome, changed: dict[str, str], written: int) -> dict[str, Any]:
    return {"draft": dataclasses.asdict(drafted), "create": dataclasses.asdict(created), "status_changes": changed,
            "written_back": written}


# --------------------------------------------------------------------------------------------------- replay


def replay_outcomes(ctx: FlowContext, letters: Sequence[DeadLetter]) -> dict[str, tuple[str, str]]:
    """Re-run the work of billing dead letters and say, per letter id, ``(outcome, note)`` with outcome
    ``replayed``, ``skipped`` or ``failed`` — without closing the letters (:func:`replay` does; a generic dead-letter
    replayer can call this and close them its own way).

    A job re-checks relevance first: a letter whose invoice exists in the target by now is ``skipped``. Otherwise
    a ``failed`` invoice goes back to ``draft`` and is created again; a refused draft or held-back item is drafted
    again by a billing run of its period with the current reference data (it bills whatever is still unbilled);
    a write-back letter is retried by the write-back stage. ``failed`` when the same letter was filed again."""
    out: dict[str, tuple[str, str]] = {}
    scopes: set[tuple[str, str | None]] = set()
    todo: list[DeadLetter] = []
    with ctx.engine.begin() as conn:
        for lt in letters:
            fresh = dead_letters.get(conn, lt.id) or lt
            if fresh.flow != FLOW or fresh.status != "open":
                out[lt.id] = ("skipped", f"letter is {fresh.status}, flow {fresh.flow}")
                continue
            row = invoices_repo.get(conn, fresh.item_key)
            if row is not None and row.status not in ("draft", "failed"):
                out[lt.id] = ("skipped", f"no longer relevant: invoice {row.id} exists as {row.erp_number} "
                                         f"({row.status})")
                continue
            if row is not None and row.status == "failed":
                invoices_repo.set_status(conn, row.id, "draft")
            payload = fresh.payload if isinstance(fresh.payload, dict) else {}
            inv = payload.get("invoice") or {}
            period = payload.get("period") or (row.period if row else None)
            if period:
                scopes.add((str(period), payload.get("entity") or inv.get("legal_entity_id")))
            todo.append(fresh)
    if not todo:
        return out
    for period, ent in sorted(scopes, key=lambda s: (s[0], s[1] or "")):
        draft_invoices(ctx, period, ent)
    create_pending(ctx)
    sync_status(ctx)
    write_back(ctx)
    with ctx.engine.connect() as conn:
        for lt in todo:
            row = invoices_repo.get(conn, lt.item_key)
            again = dead_letters.get(conn, lt.id)
            if row is not None and row.status not in ("draft", "failed"):
                out[lt.id] = ("replayed", f"invoice {row.id} created as {row.erp_number} ({row.status})")
            elif again is not None and again.attempts > lt.attempts:
                out[lt.id] = ("failed", f"failed again: {again.error_text}")
            else:
                out[lt.id] = ("replayed", "no longer refused: the replayed run went through")
    return out


def replay(ctx: FlowContext, letters: Sequence[DeadLetter], *, actor: str = "cli") -> dict[str, list[str]]:
    """Replay billing dead letters after the fix (:func:`replay_outcomes`), close the replayed and skipped ones
    and audit every outcome. Returns letter ids per outcome."""
    outcomes = replay_outcomes(ctx, letters)
    res: dict[str, list[str]] = {"replayed": [], "skipped": [], "failed": []}
    with ctx.engine.begin() as conn:
        for lt in letters:
            outcome, note = outcomes[lt.id]
            cur = dead_letters.get(conn, lt.id)
            if outcome != "failed" and cur is not None and cur.status == "open":
                dead_letters.mark(conn, [lt.id], "replayed", resolution=note)
            audit.append(conn, actor, f"dlq.replay.{outcome}", f"dead_letter:{lt.id}",
                         {"item_key": lt.item_key, "flow": lt.flow, "note": note})
            res[outcome].append(lt.id)
    return res


# --------------------------------------------------------------------------------------------------- durable


@rt.step("lb.billing.draft")
def draft_step(period: str, entity: str | None, kinds: list[str], invoice_date: str | None) -> dict[str, Any]:
    day = dt.date.fromisoformat(invoice_date) if invoice_date else None
    return dataclasses.asdict(draft_invoices(current(), period, entity, kinds=kinds, invoice_date=day))


@rt.step("lb.billing.create")
def create_step(entity: str | None) -> dict[str, Any]:
    return dataclasses.asdict(create_pending(current(), entity))


@rt.step("lb.billing.status")
def status_step(entity: str | None) -> dict[str, str]:
    return sync_status(current(), entity)


@rt.step("lb.billing.write_back")
def write_back_step(entity: str | None) -> int:
    return write_back(current(), entity)


@rt.workflow("lb.billing_run")
def billing_workflow(period: str, entity: str | None = None, kinds: list[str] | None = None,
                     invoice_date: str | None = None) -> dict[str, Any]:
    """Draft -> create -> status -> write-back for ``period`` (JSON in and out; each stage a durable step)."""
    drafted = draft_step(period, entity, list(kinds or DEFAULT_KINDS), invoice_date)
    created = create_step(entity)
    changed = status_step(entity)
    written = write_back_step(entity)
    return {"draft": drafted, "create": created, "status_changes": changed, "written_back": written}


@rt.workflow("lb.billing_status")
def status_workflow(entity: str | None = None) -> dict[str, Any]:
    """Follow the targets' invoice statuses and write them back (run on a schedule, or after payments)."""
    changed = status_step(entity)
    return {"status_changes": changed, "written_back": write_back_step(entity)}


def workflow_id(ctx: FlowContext, period: str, entity: str | None, kinds: Sequence[str]) -> str:
    """Deterministic workflow id of a billing run: the period, scope and kinds plus a digest of the state it bills
    (newest staged line, invoices recorded), so the same run started twice runs once, and a run after new
    approvals or recalls (a supplementary run) gets an id of its own."""
    with ctx.engine.connect() as conn:
        last_line = conn.execute(sa.select(sa.func.max(staging_t.c.id))).scalar() or 0
        n_inv = len(invoices_repo.all_ids(conn))
    digest = hashlib.sha256(f"{last_line}:{n_inv}".encode()).hexdigest()[:12]
    return f"billing:{entity or 'all'}:{period}:{'+'.join(sorted(kinds))}:{digest}"


def billing_run_durable(ctx: FlowContext, period: str, entity: str | None = None,
                        kinds: Sequence[str] = DEFAULT_KINDS) -> dict[str, Any]:
    """Start (or find) the durable billing run and wait for it (the runtime must be launched)."""
    wf = rt.start(billing_workflow, period, entity, list(kinds), None,
                  workflow_id=workflow_id(ctx, period, entity, kinds))
    out: dict[str, Any] = rt.result(wf)
    return out


def demo_billing_step(ctx: FlowContext, entities: Sequence[str], period: str, prefix: str) -> dict[str, Any]:
    """The demo's billing after a month's posting: the durable billing run of the month (T&M + milestones), then
    a posting run per entity so the invoices' postings are in the ledger before the month closes (the month is
    still open; waiting for next month's run would redate them). Workflow ids start with ``prefix``."""
    from ledgerbridge.flows import durable

    wf = rt.start(billing_workflow, period, None, list(DEFAULT_KINDS), None,
                  workflow_id=f"{prefix}:bill:{period}")
    out: dict[str, Any] = {"billing": rt.result(wf), "posting": []}
    for entity in entities:
        wf = rt.start(durable.posting_workflow, entity, period, None,
                      workflow_id=f"{prefix}:post-billing:{entity}:{period}")
        out["posting"].append(rt.result(wf))
    return out


__all__ = [
    "CreateOutcome",
    "DraftOutcome",
    "billing_run_durable",
    "billing_workflow",
    "create_pending",
    "demo_billing_step",
    "draft_invoices",
    "invoice_system",
    "replay",
    "replay_outcomes",
    "run_billing",
    "source_system",
    "status_workflow",
    "sync_status",
    "validate_draft",
    "workflow_id",
    "write_back",
]
