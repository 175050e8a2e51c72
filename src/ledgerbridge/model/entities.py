"""Canonical business entities. Each is a versioned :class:`Contract` with an owning domain.

Owners: ``master`` (reference and master data), ``delivery`` (time, expenses, milestones from the PSA),
``billing`` (invoices), ``ledger`` (accounts, periods, journals, FX).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from ledgerbridge.model.base import Contract, SourceRef
from ledgerbridge.model.money import Amount, CurrencyCode

# --------------------------------------------------------------------------- enums


class ContractType(StrEnum):
    TIME_AND_MATERIALS = "time_and_materials"
    FIXED_FEE = "fixed_fee"
    MILESTONE = "milestone"


class ProjectStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    CLOSED = "closed"


class ApprovalStatus(StrEnum):
    """Approval state of a source version of a time entry or expense, as the PSA reports it."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RECALLED = "recalled"


class RateKind(StrEnum):
    COST = "cost"
    BILL = "bill"


class MilestoneStatus(StrEnum):
    PLANNED = "planned"
    COMPLETED = "completed"
    INVOICED = "invoiced"
    CANCELLED = "cancelled"


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    POSTED = "posted"
    PAID = "paid"
    VOID = "void"
    CREDITED = "credited"


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"


class PeriodStatus(StrEnum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    LOCKED = "locked"


class JournalType(StrEnum):
    LABOR_COST = "labor_cost"
    REVENUE_ACCRUAL = "revenue_accrual"
    EXPENSE = "expense"
    INVOICE = "invoice"
    FIXED_FEE_REVENUE = "fixed_fee_revenue"
    MILESTONE_REVENUE = "milestone_revenue"
    EXPENSE_RECOVERY = "expense_recovery"
    INVOICE_RELIEF = "invoice_relief"
    REVERSAL = "reversal"
    ROUNDING = "rounding"


# --------------------------------------------------------------------------- master data


class LegalEntity(Contract):
    contract_name: ClassVar[str] = "legal_entity"
    owner: ClassVar[str] = "master"

    id: str
    name: str
    functional_currency: CurrencyCode
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    tax_jurisdiction: str


class Customer(Contract):
    contract_name: ClassVar[str] = "customer"
    owner: ClassVar[str] = "master"

    id: str
    name: str
    legal_entity_id: str
    currency: CurrencyCode
    tax_jurisdiction: str
    tax_code: str
    credit_terms_days: int = Field(default=30, ge=0)
    active: bool = True


class Project(Contract):
    contract_name: ClassVar[str] = "project"
    owner: ClassVar[str] = "delivery"

    id: str
    name: str
    customer_id: str
    legal_entity_id: str
    contract_type: ContractType
    currency: CurrencyCode
    cost_center: str
    status: ProjectStatus = ProjectStatus.ACTIVE
    start_date: dt.date
    end_date: dt.date | None = None
    contract_value: Amount | None = Field(
        default=None, description="Fixed-fee or milestone contract value in the project currency"
    )
    estimated_cost: Amount | None = Field(
        default=None, description="Estimated total cost at completion (cost-to-cost percent complete)"
    )


class Resource(Contract):
    """An employee or contractor who books time."""

    contract_name: ClassVar[str] = "resource"
    owner: ClassVar[str] = "master"

    id: str
    name: str
    role: str
    cost_center: str
    home_entity_id: str
    active: bool = True


class RateCardLine(Contract):
    """One effective-dated cost or bill rate per hour. The most specific line wins:
    resource+project > resource > role+project > role > project-wide. ``effective_to`` is inclusive."""

    contract_name: ClassVar[str] = "rate_card_line"
    owner: ClassVar[str] = "master"

    id: str
    kind: RateKind
    rate: Amount = Field(ge=0)
    currency: CurrencyCode
    effective_from: dt.date
    effective_to: dt.date | None = None
    resource_id: str | None = None
    role: str | None = None
    project_id: str | None = None

    @model_validator(mode="after")
    def _scope_and_dates(self) -> RateCardLine:
        if self.resource_id is None and self.role is None and self.project_id is None:
            raise ValueError("a rate line needs at least one of resource_id, role, project_id")
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        return self


class Account(Contract):
    """A chart-of-accounts entry. ``legal_entity_id`` None means shared by every entity."""

    contract_name: ClassVar[str] = "account"
    owner: ClassVar[str] = "ledger"

    code: str
    name: str
    type: AccountType
    legal_entity_id: str | None = None
    active: bool = True
    required_dimensions: tuple[str, ...] = ()


class DimensionValue(Contract):
    """A value of an analysis dimension (cost_center, department, class, location, project ...)."""

    contract_name: ClassVar[str] = "dimension_value"
    owner: ClassVar[str] = "ledger"

    dimension: str
    code: str
    name: str
    legal_entity_ids: tuple[str, ...] = Field(default=(), description="Entities allowed; empty = all")
    active: bool = True


class TaxCode(Contract):
    contract_name: ClassVar[str] = "tax_code"
    owner: ClassVar[str] = "ledger"

    code: str
    name: str
    jurisdiction: str
    rate: Amount = Field(ge=0, le=1, description="Fraction, e.g. 0.20 for 20%")
    inclusive: bool = False
    payable_account: str
    active: bool = True


class FxRate(Contract):
    """1 ``from_currency`` = ``rate`` ``to_currency`` on ``rate_date``."""

    contract_name: ClassVar[str] = "fx_rate"
    owner: ClassVar[str] = "ledger"

    from_currency: CurrencyCode
    to_currency: CurrencyCode
    rate: Amount = Field(gt=0)
    rate_date: dt.date
    source: str = "manual"


class AccountingPeriod(Contract):
    contract_name: ClassVar[str] = "accounting_period"
    owner: ClassVar[str] = "ledger"

    legal_entity_id: str
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")
    start_date: dt.date
    end_date: dt.date
    status: PeriodStatus = PeriodStatus.OPEN


# --------------------------------------------------------------------------- delivery (PSA)


class TimeEntry(Contract):
    """One version of a time entry as the PSA reports it. A new ``version`` is a new fact, never an update."""

    contract_name: ClassVar[str] = "time_entry"
    owner: ClassVar[str] = "delivery"

    id: str
    source_system: str
    version: int = Field(ge=1)
    project_id: str
    resource_id: str
    task: str | None = None
    work_date: dt.date
    hours: Amount = Field(ge=0, le=24)
    billable: bool
    approval_status: ApprovalStatus
    approved_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    description: str = ""

    @property
    def ref(self) -> SourceRef:
        return SourceRef(system=self.source_system, entity="time_entry", id=self.id, version=self.version)


class Expense(Contract):
    contract_name: ClassVar[str] = "expense"
    owner: ClassVar[str] = "delivery"

    id: str
    source_system: str
    version: int = Field(ge=1)
    project_id: str
    resource_id: str
    expense_date: dt.date
    amount: Amount
    currency: CurrencyCode
    category: str
    billable: bool
    approval_status: ApprovalStatus
    approved_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    description: str = ""

    @property
    def ref(self) -> SourceRef:
        return SourceRef(system=self.source_system, entity="expense", id=self.id, version=self.version)


class BillingMilestone(Contract):
    contract_name: ClassVar[str] = "billing_milestone"
    owner: ClassVar[str] = "delivery"

    id: str
    project_id: str
    name: str
    amount: Amount = Field(ge=0)
    currency: CurrencyCode
    due_date: dt.date
    status: MilestoneStatus = MilestoneStatus.PLANNED
    completed_on: dt.date | None = None


# --------------------------------------------------------------------------- billing


class InvoiceLine(Contract):
    contract_name: ClassVar[str] = "invoice_line"
    owner: ClassVar[str] = "billing"

    line_no: int = Field(ge=1)
    description: str
    quantity: Amount
    unit_price: Amount
    net_amount: Amount
    tax_code: str
    tax_amount: Amount
    revenue_account: str | None = None
    lineage: tuple[SourceRef, ...] = ()


class Invoice(Contract):
    contract_name: ClassVar[str] = "invoice"
    owner: ClassVar[str] = "billing"

    id: str = Field(description="Deterministic external key of the invoice")
    legal_entity_id: str
    customer_id: str
    project_id: str
    invoice_date: dt.date
    due_date: dt.date | None = None
    currency: CurrencyCode
    lines: tuple[InvoiceLine, ...]
    net_total: Amount
    tax_total: Amount
    total: Amount
    status: InvoiceStatus = InvoiceStatus.DRAFT
    erp_number: str | None = None
    erp_system: str | None = None

    @model_validator(mode="after")
    def _totals(self) -> Invoice:
        net = sum((ln.net_amount for ln in self.lines), Decimal(0))
        tax = sum((ln.tax_amount for ln in self.lines), Decimal(0))
        if net != self.net_total or tax != self.tax_total or net + tax != self.total:
            raise ValueError(
                f"invoice {self.id}: totals do not match its lines "
                f"(lines net {net} tax {tax}; header net {self.net_total} tax {self.tax_total} total {self.total})"
            )
        return self


# --------------------------------------------------------------------------- ledger


class JournalLine(Contract):
    """One line of a journal entry: either a debit or a credit, in the entry currency.

    ``functional_*`` carry the amount converted to the legal entity's functional currency with the explicit
    ``fx_rate`` and ``fx_rate_date`` used (rate 1 on the same currency)."""

    contract_name: ClassVar[str] = "journal_line"
    owner: ClassVar[str] = "ledger"

    line_no: int = Field(ge=1)
    account: str
    debit: Amount = Field(default=Decimal(0), ge=0)
    credit: Amount = Field(default=Decimal(0), ge=0)
    currency: CurrencyCode
    dimensions: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    fx_rate: Amount | None = None
    fx_rate_date: dt.date | None = None
    functional_currency: CurrencyCode | None = None
    functional_debit: Amount | None = None
    functional_credit: Amount | None = None
    lineage: tuple[SourceRef, ...] = ()
    lineage_count: int = Field(default=0, ge=0, description="Source items behind this line (may exceed len(lineage))")

    @model_validator(mode="after")
    def _one_side(self) -> JournalLine:
        if self.debit and self.credit:
            raise ValueError(f"line {self.line_no}: a line is either a debit or a credit, not both")
        return self


class JournalEntry(Contract):
    """A balanced journal entry (contract 1.2: journal types ``expense_recovery`` (1.1) and ``invoice_relief`` added).

    Construction fails unless debits equal credits per currency (and per functional currency where functional
    amounts are given). Posted entries are never edited: a correction is a new entry with ``reverses`` set."""

    contract_name: ClassVar[str] = "journal_entry"
    contract_version: ClassVar[str] = "1.2"
    owner: ClassVar[str] = "ledger"

    id: str = Field(description="Deterministic external key: entity + period + rule + sequence")
    legal_entity_id: str
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    entry_date: dt.date
    journal_type: JournalType
    description: str = ""
    lines: tuple[JournalLine, ...] = Field(min_length=2)
    reverses: str | None = None
    redated_from: str | None = Field(default=None, description="Original period when a late item was redated")

    @field_validator("lines")
    @classmethod
    def _balanced(cls, lines: tuple[JournalLine, ...]) -> tuple[JournalLine, ...]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        functional: dict[str, Decimal] = defaultdict(Decimal)
        for ln in lines:
            totals[ln.currency] += ln.debit - ln.credit
            if ln.functional_currency is not None:
                functional[ln.functional_currency] += (ln.functional_debit or Decimal(0)) - (
                    ln.functional_credit or Decimal(0)
                )
        off = {c: v for c, v in totals.items() if v != 0}
        if off:
            raise ValueError(f"journal does not balance: debit - credit = {off}")
        off_f = {c: v for c, v in functional.items() if v != 0}
        if off_f:
            raise ValueError(f"journal does not balance in functional currency: debit - credit = {off_f}")
        return lines

    def total_debits(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for ln in self.lines:
            out[ln.currency] += ln.debit
        return dict(out)
