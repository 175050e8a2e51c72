"""Billing rules: tax, invoice drafts (time and materials, milestone, fixed-fee schedule), credit notes and invoice
postings.

Pure functions, no I/O. Money is ``Decimal`` rounded half-up to the currency minor unit.

Decisions (see ``docs/domain-billing-revenue.md`` for worked numbers):

- **Tax is computed per line**, each line rounded to the minor unit; invoice totals are the sums of the lines
  (``Invoice`` itself refuses headers that differ from its lines).
- **Invoice amounts are net of tax.** Every amount billed here was (or will be) recognised as revenue at the same
  figure (T&M accrual at bill rates, percent-complete and milestone revenue), so the invoice net must equal it.
  An *inclusive* tax code would turn those figures into gross amounts and the invoice net would no longer match
  the revenue; invoice builders refuse one (``billing.inclusive_tax_on_net_amounts``). :func:`compute_tax`
  itself handles both kinds.
- **Billing moves receivables, it never recognises revenue** (except rebilled expenses, below): the ``invoice``
  posting debits receivables and credits unbilled receivables with the whole net, and tax payable with the tax.
  Revenue is recognised by the accrual (T&M), :mod:`ledgerbridge.domain.revenue` (fixed fee, milestone).
- **Rebilled expenses** were never put on unbilled receivables (no chart rule accrues them), so the invoice
  recognises them: one extra posting per rebilled-expense line on unbilled receivables, of txn type
  ``expense_recovery`` (Dr unbilled / Cr reimbursable expense revenue 4300), which the ``invoice`` posting then
  relieves. T&M service revenue (4000) therefore holds exactly the accrual of billable time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import TypeVar

from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.types import CostedExpense, CostedTime, Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import (
    BillingMilestone,
    ContractType,
    Customer,
    Invoice,
    InvoiceLine,
    MilestoneStatus,
    Project,
    TaxCode,
)
from ledgerbridge.model.money import quantum, round_money

#: ``(amount, from_currency, to_currency, rate_date) -> amount in to_currency`` (need not be rounded).
Converter = Callable[[Decimal, str, str, dt.date], Decimal]

#: ``system`` of the SourceRefs this engine mints for documents it creates (invoices, schedule items).
ENGINE_SYSTEM = "ledgerbridge"

#: Posting txn type of an invoice (chart.md rule: Dr receivables / Cr unbilled on ``net``, Cr tax payable on ``tax``).
TXN_INVOICE = "invoice"
#: Default txn type and amount name that recognise rebilled expenses at invoicing (Dr unbilled / Cr revenue).
REBILL_TXN_TYPE = "expense_recovery"
REBILL_AMOUNT = "billable_value"
#: Txn type relieving unbilled receivables for an invoice an ERP booked itself (Dr invoice clearing / Cr unbilled).
RELIEF_TXN_TYPE = "invoice_relief"

#: Months per instalment for :func:`fixed_fee_schedule`.
FREQUENCIES: dict[str, int] = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------- helpers


def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """First and last day of a ``YYYY-MM`` period; DomainError if the text is not one."""
    m = _PERIOD.match(period)
    if m is None:
        raise DomainError(
            f"period {period!r}", "billing.bad_period", "a period must be written YYYY-MM", "pass e.g. '2026-03'"
        )
    year, month = int(m.group(1)), int(m.group(2))
    return dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])


def add_months(d: dt.date, months: int) -> dt.date:
    """``d`` moved by whole months, the day clamped to the month's length (31 Jan + 1 month = 28/29 Feb)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return dt.date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _index(items: Mapping[str, T] | Iterable[T], key: Callable[[T], str]) -> Mapping[str, T]:
    if isinstance(items, Mapping):
        return items
    return {key(x): x for x in items}


def _check_minor_unit(amount: Decimal, currency: str, item: str) -> None:
    if amount != round_money(amount, currency):
        raise DomainError(
            item,
            "billing.amount_precision",
            f"amount {amount} has more decimals than {currency} allows ({quantum(currency)})",
            f"round the amount to {quantum(currency)} before billing it",
        )


# --------------------------------------------------------------------------------------------------- tax


def compute_tax(net_or_gross: Decimal, tax_code: TaxCode, currency: str) -> tuple[Decimal, Decimal]:
    """``(net, tax)`` for one line amount, both at the currency minor unit; ``net + tax`` is the gross.

    - exclusive code: the amount is the net; ``tax = round(net * rate)``;
    - inclusive code: the amount is the gross; ``tax = round(gross * rate / (1 + rate))``, ``net = gross - tax``
      (so ``net + tax == gross`` exactly: the rounding never loses a cent).

    The amount must already be at the minor unit (DomainError otherwise: rounding it here would change what the
    customer is billed without saying so).
    """
    _check_minor_unit(net_or_gross, currency, f"amount {net_or_gross} {currency} under tax code {tax_code.code}")
    rate = tax_code.rate
    if tax_code.inclusive:
        tax = round_money(net_or_gross * rate / (1 + rate), currency)
        return net_or_gross - tax, tax
    return net_or_gross, round_money(net_or_gross * rate, currency)


def _customer_tax_code(
    project: Project, customer: Customer | None, tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode]
) -> tuple[Customer, TaxCode]:
    """The customer billed for ``project`` and its tax code, checked: known, active, same jurisdiction, exclusive."""
    if customer is None:
        raise DomainError(
            f"project {project.id}",
            "billing.unknown_customer",
            f"customer {project.customer_id} of the project is not known",
            f"sync customer {project.customer_id} from the ERP before billing the project",
        )
    if customer.id != project.customer_id:
        raise DomainError(
            f"project {project.id}",
            "billing.customer_mismatch",
            f"the project belongs to customer {project.customer_id}, not {customer.id}",
            "bill the project's own customer",
        )
    if not customer.active:
        raise DomainError(
            f"customer {customer.id}",
            "billing.inactive_customer",
            "the customer is inactive in the ERP and cannot be invoiced",
            f"reactivate customer {customer.id} or move project {project.id} to an active customer",
        )
    codes = _index(tax_codes, lambda t: t.code)
    tc = codes.get(customer.tax_code)
    if tc is None:
        raise DomainError(
            f"customer {customer.id}",
            "billing.unknown_tax_code",
            f"tax code {customer.tax_code!r} is not in the ERP tax codes",
            f"sync tax code {customer.tax_code!r} from the ERP or correct the customer's tax code",
        )
    if not tc.active:
        raise DomainError(
            f"customer {customer.id}",
            "billing.inactive_tax_code",
            f"tax code {tc.code} is inactive",
            f"give customer {customer.id} an active tax code",
        )
    if tc.jurisdiction != customer.tax_jurisdiction:
        raise DomainError(
            f"customer {customer.id}",
            "billing.tax_jurisdiction_mismatch",
            f"tax code {tc.code} is for jurisdiction {tc.jurisdiction}, the customer is in {customer.tax_jurisdiction}",
            f"give customer {customer.id} a tax code of jurisdiction {customer.tax_jurisdiction}",
        )
    if tc.inclusive:
        raise DomainError(
            f"customer {customer.id}",
            "billing.inclusive_tax_on_net_amounts",
            f"tax code {tc.code} is tax-inclusive, but billed amounts are net revenue figures "
            "(accrual at bill rates, percent-complete, milestone), so the invoice net would not match the revenue",
            f"give customer {customer.id} the exclusive variant of {tc.code}",
        )
    return customer, tc


def _line(
    line_no: int,
    description: str,
    quantity: Decimal,
    unit_price: Decimal,
    net: Decimal,
    tax_code: TaxCode,
    currency: str,
    lineage: tuple[SourceRef, ...],
) -> InvoiceLine:
    net, tax = compute_tax(net, tax_code, currency)
    return InvoiceLine(
        line_no=line_no,
        description=description,
        quantity=quantity,
        unit_price=unit_price,
        net_amount=net,
        tax_code=tax_code.code,
        tax_amount=tax,
        lineage=lineage,
    )


def build_invoice(
    invoice_id: str,
    project: Project,
    customer: Customer,
    invoice_date: dt.date,
    currency: str,
    lines: Iterable[InvoiceLine],
) -> Invoice:
    """An invoice whose totals are the sums of its lines; due after the customer's credit terms."""
    ls = tuple(lines)
    net = sum((ln.net_amount for ln in ls), Decimal(0))
    tax = sum((ln.tax_amount for ln in ls), Decimal(0))
    return Invoice(
        id=invoice_id,
        legal_entity_id=project.legal_entity_id,
        customer_id=customer.id,
        project_id=project.id,
        invoice_date=invoice_date,
        due_date=invoice_date + dt.timedelta(days=customer.credit_terms_days),
        currency=currency,
        lines=ls,
        net_total=net,
        tax_total=tax,
        total=net + tax,
    )


# --------------------------------------------------------------------------------------------------- T&M


def _identity(ref: SourceRef) -> tuple[str, str, str]:
    return ref.system, ref.entity, ref.id


def _unknown_project(project_id: str, kind: str, ref: SourceRef) -> DomainError:
    return DomainError(
        f"{kind} {ref}",
        "billing.unknown_project",
        f"project {project_id} is not known",
        f"sync project {project_id} before billing its time and expenses",
    )


def _next_free_id(base: str, issued: Collection[str]) -> str:
    if base not in issued:
        return base
    n = 2
    while f"{base}-S{n}" in issued:
        n += 1
    return f"{base}-S{n}"


@dataclass(slots=True)
class _TimeGroup:
    hours: Decimal
    net: Decimal
    refs: list[SourceRef]


@dataclass(slots=True)
class _ExpenseGroup:
    net: Decimal
    refs: list[SourceRef]


@dataclass(frozen=True, slots=True)
class BillingRun:
    """What a T&M billing run produced: the draft invoices, and the problems that held items or whole projects
    back (each a Violation naming the item, the rule and the fix). Held-back items stay unbilled: they are not in
    any invoice's lineage, so the next (supplementary) run after the fix bills them."""

    invoices: list[Invoice]
    violations: list[Violation]


def tm_billing_run(
    costed_time: Iterable[CostedTime],
    costed_expenses: Iterable[CostedExpense],
    projects: Mapping[str, Project] | Iterable[Project],
    customers: Mapping[str, Customer] | Iterable[Customer],
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    billing_period: str,
    invoice_date: dt.date,
    *,
    converter: Converter | None = None,
    already_billed: Collection[SourceRef] = frozenset(),
    issued_invoice_ids: Collection[str] = frozenset(),
    strict: bool = False,
) -> BillingRun:
    """Draft time-and-materials invoices, one per project, for the billing run of ``billing_period``.

    Bills every approved, billable item dated on or before the period's last day that is not in
    ``already_billed`` (so a late-approved entry from an earlier month is caught by the next run, and a second run
    for the same period bills only what is new). ``costed_time`` / ``costed_expenses`` are the versions currently
    approved (what approvals + costing produced); non-billable items and items of other projects' types are skipped:

    - time (T&M projects only): one line per resource and bill rate; quantity = hours, unit price = bill rate,
      net = the sum of the entries' ``billable_value`` (equal to the revenue accrued, cent for cent; it may differ
      from hours x rate by the per-entry rounding);
    - billable expenses (any contract type): one line per category, rebilled at cost in the project currency;
      an expense in another currency is converted per expense with ``converter`` at its expense date and rounded.

    Each line keeps the SourceRefs behind it. The invoice id is ``INV-{project}-{period}``; if that id is in
    ``issued_invoice_ids`` (a supplementary run) the first free ``-S2``, ``-S3``... is used. Projects with nothing
    to bill get no invoice.

    Problems are collected, not raised (``strict=True`` raises the first as DomainError instead): an item of an
    unknown project, a bill currency other than the project's, a foreign expense without ``converter``, or a new
    version of an item already billed holds back that item; an unknown/inactive customer or tax code, or an
    inclusive tax code, holds back the whole project. ``billing_period`` not ``YYYY-MM`` always raises.
    """
    _, period_end = period_bounds(billing_period)
    projects_by_id = _index(projects, lambda p: p.id)
    customers_by_id = _index(customers, lambda c: c.id)
    billed = set(already_billed)
    billed_ids = {_identity(r): r for r in billed}
    violations: list[Violation] = []

    def refuse(err: DomainError) -> None:
        if strict:
            raise err
        violations.append(err.to_violation())

    def unbilled(ref: SourceRef, kind: str) -> bool:
        if not billed:
            return True
        if ref in billed:
            return False
        earlier = billed_ids.get(_identity(ref))
        if earlier is not None:
            refuse(DomainError(
                f"{kind} {ref}",
                "billing.billed_item_changed",
                f"version {ref.version} arrived after version {earlier.version} was already invoiced",
                f"issue a credit note for {earlier} (credit_note), then bill {ref}: remove {earlier} from "
                "already_billed",
            ))
            return False
        return True

    time_groups: dict[str, dict[tuple[str, Decimal], _TimeGroup]] = defaultdict(dict)
    for ct in costed_time:
        if not ct.billable or ct.work_date > period_end:
            continue
        project = projects_by_id.get(ct.project_id)
        if project is None:
            refuse(_unknown_project(ct.project_id, "time_entry", ct.ref))
            continue
        if project.contract_type is not ContractType.TIME_AND_MATERIALS or not unbilled(ct.ref, "time_entry"):
            continue
        if ct.bill_currency != project.currency:
            refuse(DomainError(
                f"time_entry {ct.ref}",
                "billing.bill_currency_mismatch",
                f"billable value is in {ct.bill_currency} but project {project.id} bills in {project.currency}",
                f"price project {project.id} with a {project.currency} bill rate and re-cost the entry",
            ))
            continue
        g = time_groups[project.id].get((ct.resource_id, ct.bill_rate))
        if g is None:
            g = time_groups[project.id][(ct.resource_id, ct.bill_rate)] = _TimeGroup(Decimal(0), Decimal(0), [])
        g.hours += ct.hours
        g.net += ct.billable_value
        g.refs.append(ct.ref)

    expense_groups: dict[str, dict[str, _ExpenseGroup]] = defaultdict(dict)
    for ce in costed_expenses:
        if not ce.billable or ce.expense_date > period_end:
            continue
        project = projects_by_id.get(ce.project_id)
        if project is None:
            refuse(_unknown_project(ce.project_id, "expense", ce.ref))
            continue
        if not unbilled(ce.ref, "expense"):
            continue
        amount = ce.amount
        if ce.currency != project.currency:
            if converter is None:
                refuse(DomainError(
                    f"expense {ce.ref}",
                    "billing.fx_converter_missing",
                    f"expense is in {ce.currency}, project {project.id} bills in {project.currency}, "
                    "and no currency converter was given",
                    "pass converter=... (e.g. the fx module's rate lookup) to the billing run",
                ))
                continue
            amount = round_money(converter(ce.amount, ce.currency, project.currency, ce.expense_date), project.currency)
        eg = expense_groups[project.id].get(ce.category)
        if eg is None:
            eg = expense_groups[project.id][ce.category] = _ExpenseGroup(Decimal(0), [])
        eg.net += amount
        eg.refs.append(ce.ref)

    issued = set(issued_invoice_ids)
    invoices: list[Invoice] = []
    for project_id in sorted(time_groups.keys() | expense_groups.keys()):
        project = projects_by_id[project_id]
        try:
            invoice = _tm_invoice(
                project, customers_by_id.get(project.customer_id), tax_codes, time_groups.get(project_id, {}),
                expense_groups.get(project_id, {}), _next_free_id(f"INV-{project_id}-{billing_period}", issued),
                invoice_date,
            )
        except DomainError as err:
            refuse(err)
            continue
        issued.add(invoice.id)
        invoices.append(invoice)
    return BillingRun(invoices, violations)


def _tm_invoice(
    project: Project,
    customer: Customer | None,
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    time_groups: Mapping[tuple[str, Decimal], _TimeGroup],
    expense_groups: Mapping[str, _ExpenseGroup],
    invoice_id: str,
    invoice_date: dt.date,
) -> Invoice:
    customer, tc = _customer_tax_code(project, customer, tax_codes)
    cur = project.currency
    lines: list[InvoiceLine] = []
    for (resource_id, rate), g in sorted(time_groups.items()):
        lines.append(_line(
            len(lines) + 1, f"Time: {resource_id}, {g.hours} h at {rate} {cur}/h", g.hours, rate, g.net, tc, cur,
            tuple(g.refs),
        ))
    for category, eg in sorted(expense_groups.items()):
        lines.append(_line(
            len(lines) + 1, f"Expenses: {category} ({len(eg.refs)} items, at cost)", Decimal(1), eg.net, eg.net, tc,
            cur, tuple(eg.refs),
        ))
    return build_invoice(invoice_id, project, customer, invoice_date, cur, lines)


def tm_invoice_drafts(
    costed_time: Iterable[CostedTime],
    costed_expenses: Iterable[CostedExpense],
    projects: Mapping[str, Project] | Iterable[Project],
    customers: Mapping[str, Customer] | Iterable[Customer],
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    billing_period: str,
    invoice_date: dt.date,
    *,
    converter: Converter | None = None,
    already_billed: Collection[SourceRef] = frozenset(),
    issued_invoice_ids: Collection[str] = frozenset(),
) -> list[Invoice]:
    """:func:`tm_billing_run` with ``strict=True``: the invoices, or the first problem raised as DomainError."""
    return tm_billing_run(
        costed_time, costed_expenses, projects, customers, tax_codes, billing_period, invoice_date,
        converter=converter, already_billed=already_billed, issued_invoice_ids=issued_invoice_ids, strict=True,
    ).invoices


# --------------------------------------------------------------------------------------------------- credit notes


def _credited_amount(
    item: CostedTime | CostedExpense, currency: str, converter: Converter | None
) -> tuple[Decimal, Decimal]:
    """(quantity, net) an item contributed to its invoice line, recomputed exactly as the billing run did."""
    if isinstance(item, CostedTime):
        return item.hours, item.billable_value
    if item.currency == currency:
        return Decimal(1), item.amount
    if converter is None:
        raise DomainError(
            f"expense {item.ref}",
            "billing.fx_converter_missing",
            f"expense is in {item.currency}, the invoice in {currency}, and no currency converter was given",
            "pass the converter the billing run used",
        )
    return Decimal(1), round_money(converter(item.amount, item.currency, currency, item.expense_date), currency)


def credit_note(
    inv: Invoice,
    credit_date: dt.date,
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    items: Iterable[CostedTime | CostedExpense] | None = None,
    *,
    converter: Converter | None = None,
    issued_invoice_ids: Collection[str] = frozenset(),
) -> Invoice:
    """A credit note (an Invoice with negative amounts) against ``inv``, id ``CN-{invoice id}-{n}`` (first ``n``
    from 1 not in ``issued_invoice_ids``).

    - ``items=None``: credits every line in full (a void): each line negated, tax included, exactly;
    - otherwise: credits those billed items (the *versions that were billed*, e.g. v1 of an entry since edited or
      recalled), one credit line per invoice line they sit on, with the amounts the billing run gave them
      (time: ``billable_value``; expense: converted and rounded with the same ``converter``) and tax recomputed per
      credit line with the original line's tax code (crediting every item of a line gives back exactly its tax).

    Its :func:`postings_for_invoice` reverse the original's: Dr unbilled / Cr receivables on the net (the item's
    accrual reversal, posted by approvals, then nets unbilled to zero) and Dr tax payable / Cr receivables.
    DomainError ``billing.not_on_invoice`` for an item whose ref is not in the invoice's lineage.
    """
    codes = _index(tax_codes, lambda t: t.code)
    lines: list[InvoiceLine] = []
    if items is None:
        for ln in inv.lines:
            lines.append(InvoiceLine(
                line_no=len(lines) + 1, description=f"Credit: {ln.description}", quantity=-ln.quantity,
                unit_price=ln.unit_price, net_amount=-ln.net_amount, tax_code=ln.tax_code, tax_amount=-ln.tax_amount,
                revenue_account=ln.revenue_account, lineage=ln.lineage,
            ))
    else:
        line_of = {ref: ln for ln in inv.lines for ref in ln.lineage}
        per_line: dict[int, tuple[InvoiceLine, list[tuple[SourceRef, Decimal, Decimal]]]] = {}
        for it in items:
            hit = line_of.get(it.ref)
            if hit is None:
                raise DomainError(
                    f"{'time_entry' if isinstance(it, CostedTime) else 'expense'} {it.ref}",
                    "billing.not_on_invoice",
                    f"this version was not billed on invoice {inv.id}",
                    "credit the item on the invoice whose lineage holds this exact version",
                )
            qty, net = _credited_amount(it, inv.currency, converter)
            per_line.setdefault(hit.line_no, (hit, []))[1].append((it.ref, qty, net))
        for line_no in sorted(per_line):
            orig, credited = per_line[line_no]
            tc = codes.get(orig.tax_code)
            if tc is None:
                raise DomainError(
                    f"invoice {inv.id} line {line_no}",
                    "billing.unknown_tax_code",
                    f"tax code {orig.tax_code!r} of the credited line is not in the tax codes given",
                    f"pass tax code {orig.tax_code!r} (inactive codes too) to credit_note",
                )
            net = sum((n for _, _, n in credited), Decimal(0))
            if is_expense_line(orig):  # one line per category: quantity 1 at the credited amount
                qty, unit = Decimal(-1), net
            else:  # time: the hours credited at the line's bill rate
                qty, unit = -sum((q for _, q, _ in credited), Decimal(0)), orig.unit_price
            lines.append(_line(
                len(lines) + 1, f"Credit: {orig.description}", qty, unit, -net, tc, inv.currency,
                tuple(r for r, _, _ in credited),
            ))
    n = 1
    while f"CN-{inv.id}-{n}" in issued_invoice_ids:
        n += 1
    net_total = sum((ln.net_amount for ln in lines), Decimal(0))
    tax_total = sum((ln.tax_amount for ln in lines), Decimal(0))
    return Invoice(
        id=f"CN-{inv.id}-{n}", legal_entity_id=inv.legal_entity_id, customer_id=inv.customer_id,
        project_id=inv.project_id, invoice_date=credit_date, due_date=credit_date, currency=inv.currency,
        lines=tuple(lines), net_total=net_total, tax_total=tax_total, total=net_total + tax_total,
    )


# --------------------------------------------------------------------------------------------------- milestones


def milestone_ref(milestone: BillingMilestone, source_system: str = "psa") -> SourceRef:
    """The lineage pointer of a billing milestone (milestones carry no version: it is always 1)."""
    return SourceRef(system=source_system, entity="billing_milestone", id=milestone.id, version=1)


def check_milestone(milestone: BillingMilestone, project: Project) -> None:
    """DomainError unless the milestone belongs to ``project``, is in its currency and is at the minor unit."""
    item = f"billing_milestone {milestone.id}"
    if milestone.project_id != project.id:
        raise DomainError(
            item,
            "billing.milestone_project_mismatch",
            f"the milestone belongs to project {milestone.project_id}, not {project.id}",
            "pass the milestone's own project",
        )
    if milestone.currency != project.currency:
        raise DomainError(
            item,
            "billing.milestone_currency_mismatch",
            f"the milestone is in {milestone.currency}, project {project.id} is in {project.currency}",
            f"restate the milestone amount in {project.currency} in the PSA",
        )
    _check_minor_unit(milestone.amount, milestone.currency, item)


def milestone_invoice(
    milestone: BillingMilestone,
    project: Project,
    customer: Customer,
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    invoice_date: dt.date,
    *,
    source_system: str = "psa",
) -> Invoice:
    """The invoice of a completed milestone: one line for its amount, id ``INV-{project}-MS-{milestone}``.

    DomainError if the milestone is planned, cancelled or already invoiced, belongs to another project, or the
    project is time-and-materials (its time is billed by the T&M run; billing a milestone too would bill twice).
    """
    check_milestone(milestone, project)
    item = f"billing_milestone {milestone.id}"
    if milestone.status is not MilestoneStatus.COMPLETED:
        fixes = {
            MilestoneStatus.PLANNED: "complete the milestone in the PSA first",
            MilestoneStatus.CANCELLED: "a cancelled milestone is not billed; reopen it in the PSA if that is wrong",
            MilestoneStatus.INVOICED: "it is already invoiced; look up its invoice instead of creating another",
        }
        raise DomainError(
            item,
            "billing.milestone_not_completed",
            f"only a completed milestone can be invoiced; this one is {milestone.status.value}",
            fixes[milestone.status],
        )
    if project.contract_type is ContractType.TIME_AND_MATERIALS:
        raise DomainError(
            item,
            "billing.milestone_on_tm_project",
            f"project {project.id} is time-and-materials: its work is billed by the T&M run",
            f"set project {project.id} to milestone or fixed-fee, or drop the milestone",
        )
    _, tc = _customer_tax_code(project, customer, tax_codes)
    line = _line(
        1,
        f"Milestone: {milestone.name}",
        Decimal(1),
        milestone.amount,
        milestone.amount,
        tc,
        milestone.currency,
        (milestone_ref(milestone, source_system),),
    )
    return build_invoice(
        f"INV-{project.id}-MS-{milestone.id}", project, customer, invoice_date, milestone.currency, [line]
    )


# --------------------------------------------------------------------------------------------------- fixed fee


@dataclass(frozen=True, slots=True)
class ScheduleItem:
    """One fixed-fee instalment: bill ``amount`` (project currency) on ``date``; ``seq`` counts from 1."""

    date: dt.date
    amount: Decimal
    seq: int
    currency: str


def fixed_fee_contract_value(project: Project, area: str, what: str) -> Decimal:
    """The contract value of a fixed-fee project; DomainError ``{area}.not_fixed_fee`` / ``{area}.no_contract_value``
    otherwise (``what`` names the rule that needs it, e.g. "a billing schedule")."""
    item = f"project {project.id}"
    if project.contract_type is not ContractType.FIXED_FEE:
        raise DomainError(
            item,
            f"{area}.not_fixed_fee",
            f"{what} is for fixed-fee projects; this one is {project.contract_type.value}",
            "use the rule of the project's own contract type",
        )
    if project.contract_value is None:
        raise DomainError(
            item, f"{area}.no_contract_value", "the fixed-fee project has no contract value",
            "set the contract value on the project in the PSA",
        )
    return project.contract_value


def fixed_fee_schedule(
    project: Project, start: dt.date, end: dt.date, frequency: str = "monthly"
) -> list[ScheduleItem]:
    """Split the project's contract value into equal instalments on ``start``, ``start`` + 1 step, ... ``<= end``.

    Each instalment is ``contract_value / n`` rounded *down* to the minor unit; the last one takes the remainder
    (so it is never smaller than the others and never negative), and the instalments sum to the contract value
    exactly. ``frequency`` is monthly, quarterly, semiannual or annual.
    """
    item = f"project {project.id}"
    value = fixed_fee_contract_value(project, "billing", "a billing schedule")
    step = FREQUENCIES.get(frequency)
    if step is None:
        raise DomainError(
            item, "billing.bad_frequency", f"unknown billing frequency {frequency!r}",
            f"use one of {', '.join(FREQUENCIES)}",
        )
    if end < start:
        raise DomainError(
            item, "billing.bad_schedule_dates", f"schedule end {end} is before its start {start}",
            "pass an end date on or after the start date",
        )
    dates: list[dt.date] = []
    while (d := add_months(start, step * len(dates))) <= end:
        dates.append(d)
    cur = project.currency
    _check_minor_unit(value, cur, item)
    n = len(dates)
    each = (value / n).quantize(quantum(cur), rounding=ROUND_DOWN)
    last = value - each * (n - 1)
    return [
        ScheduleItem(date=d, amount=last if i == n else each, seq=i, currency=cur)
        for i, d in enumerate(dates, start=1)
    ]


def fixed_fee_invoice(
    project: Project,
    item: ScheduleItem,
    customer: Customer,
    tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode],
    invoice_date: dt.date | None = None,
) -> Invoice:
    """The invoice of one fixed-fee instalment, id ``INV-{project}-FF-{seq:03d}``, dated ``item.date`` unless
    ``invoice_date`` is given. Its net relieves unbilled receivables built by percent-complete revenue."""
    if item.currency != project.currency:
        raise DomainError(
            f"project {project.id}",
            "billing.schedule_currency_mismatch",
            f"the instalment is in {item.currency}, the project in {project.currency}",
            "rebuild the schedule from the project with fixed_fee_schedule",
        )
    _, tc = _customer_tax_code(project, customer, tax_codes)
    ref = SourceRef(system=ENGINE_SYSTEM, entity="fixed_fee_instalment", id=f"{project.id}:{item.seq}", version=1)
    line = _line(
        1, f"Fixed fee: instalment {item.seq} due {item.date}", Decimal(1), item.amount, item.amount, tc,
        project.currency, (ref,),
    )
    return build_invoice(
        f"INV-{project.id}-FF-{item.seq:03d}", project, customer, invoice_date or item.date, project.currency, [line]
    )


# --------------------------------------------------------------------------------------------------- postings


def invoice_ref(inv: Invoice) -> SourceRef:
    """The lineage pointer of an invoice this engine created."""
    return SourceRef(system=ENGINE_SYSTEM, entity="invoice", id=inv.id, version=1)


def is_expense_line(line: InvoiceLine) -> bool:
    """A rebilled-expense line: every item behind it is an expense."""
    return bool(line.lineage) and all(r.entity == "expense" for r in line.lineage)


def postings_for_invoice(
    inv: Invoice,
    legal_entity_id: str | None = None,
    sign: int = 1,
    *,
    cost_center: str | None = None,
    rebill_txn_type: str = REBILL_TXN_TYPE,
    rebill_amount: str = REBILL_AMOUNT,
) -> list[Posting]:
    """The ledger facts of an invoice (``sign=-1`` for its reversal, e.g. a void), all on the invoice date:

    - per rebilled-expense line with a non-zero net: a ``rebill_txn_type`` posting (amount ``rebill_amount`` =
      the line net; default ``revenue_accrual``/``billable_value``: Dr unbilled receivables / Cr revenue),
      source ``ledgerbridge:invoice_line:{invoice id}:{line no}``, dimensions project (+ cost_center if given);
    - one ``invoice`` posting, amounts ``net`` (the invoice net total) and ``tax`` (its tax total): Dr receivables /
      Cr unbilled receivables, Dr receivables / Cr tax payable; source ``ledgerbridge:invoice:{invoice id}``,
      dimension project.

    ``legal_entity_id`` defaults to the invoice's; another value is refused (intercompany billing is not a rule).
    """
    entity = legal_entity_id or inv.legal_entity_id
    if entity != inv.legal_entity_id:
        raise DomainError(
            f"invoice {inv.id}",
            "billing.entity_mismatch",
            f"the invoice belongs to legal entity {inv.legal_entity_id}, not {entity}",
            f"post the invoice in {inv.legal_entity_id}",
        )
    if sign not in (1, -1):
        raise DomainError(
            f"invoice {inv.id}", "billing.bad_sign", f"sign must be 1 or -1, got {sign}", "pass 1 or -1"
        )
    project_dim = ("project", inv.project_id)
    rebill_dims = (project_dim, ("cost_center", cost_center)) if cost_center else (project_dim,)
    out = [
        Posting(
            txn_type=rebill_txn_type,
            legal_entity_id=entity,
            date=inv.invoice_date,
            currency=inv.currency,
            amounts=((rebill_amount, ln.net_amount),),
            dimensions=rebill_dims,
            source=SourceRef(system=ENGINE_SYSTEM, entity="invoice_line", id=f"{inv.id}:{ln.line_no}", version=1),
            sign=sign,
        )
        for ln in inv.lines
        if is_expense_line(ln) and ln.net_amount != 0
    ]
    out.append(
        Posting(
            txn_type=TXN_INVOICE,
            legal_entity_id=entity,
            date=inv.invoice_date,
            currency=inv.currency,
            amounts=(("net", inv.net_total), ("tax", inv.tax_total)),
            dimensions=(project_dim,),
            source=invoice_ref(inv),
            sign=sign,
        )
    )
    return out


def relief_postings_for_invoice(inv: Invoice, sign: int = 1, *, txn_type: str = RELIEF_TXN_TYPE) -> list[Posting]:
    """The engine's half of an invoice that the ERP booked in its own ledger (``books_ledger``).

    Such an ERP credits a revenue-type account on each invoice line (Tryton, for one, refuses anything else): the
    billed work lines go to the invoice clearing account and rebilled expense lines to reimbursable expense
    revenue. The engine then relieves what it recognised: one ``txn_type`` posting (default rule: Dr invoice
    clearing / Cr unbilled receivables) on ``net`` = the net of the work lines, so the clearing account nets to
    zero in the ERP, unbilled receivables are relieved exactly as :func:`postings_for_invoice` would, and revenue
    stays what the accrual recognised. No posting when the work lines net to zero. Source
    ``ledgerbridge:invoice_relief:{invoice id}``, dimension project, on the invoice date.
    """
    if sign not in (1, -1):
        raise DomainError(
            f"invoice {inv.id}", "billing.bad_sign", f"sign must be 1 or -1, got {sign}", "pass 1 or -1"
        )
    work = sum((ln.net_amount for ln in inv.lines if not is_expense_line(ln)), Decimal(0))
    if work == 0:
        return []
    return [
        Posting(
            txn_type=txn_type,
            legal_entity_id=inv.legal_entity_id,
            date=inv.invoice_date,
            currency=inv.currency,
            amounts=(("net", work),),
            dimensions=(("project", inv.project_id),),
            source=SourceRef(system=ENGINE_SYSTEM, entity="invoice_relief", id=inv.id, version=1),
            sign=sign,
        )
    ]
