"""Canonical model: entities, events and money — versioned contracts with an owning domain. No I/O here."""

from __future__ import annotations

from ledgerbridge.model.base import Contract, SourceRef, idempotency_key
from ledgerbridge.model.entities import (
    Account,
    AccountingPeriod,
    AccountType,
    ApprovalStatus,
    BillingMilestone,
    ContractType,
    Customer,
    DimensionValue,
    Expense,
    FxRate,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    JournalEntry,
    JournalLine,
    JournalType,
    LegalEntity,
    MilestoneStatus,
    PeriodStatus,
    Project,
    ProjectStatus,
    RateCardLine,
    RateKind,
    Resource,
    TaxCode,
    TimeEntry,
)
from ledgerbridge.model.events import (
    AnyEvent,
    BusinessEvent,
    ExpenseApproved,
    ExpenseEdited,
    ExpenseRecalled,
    ExpenseRejected,
    InvoiceStatusChanged,
    MilestoneCompleted,
    ProjectApproved,
    TimeEntryApproved,
    TimeEntryEdited,
    TimeEntryRecalled,
    TimeEntryRejected,
)
from ledgerbridge.model.money import Amount, CurrencyCode, Money, minor_unit, quantum, round_money

#: Every published contract, entities first, then events. ``contracts export`` writes one schema for each.
CONTRACTS: tuple[type[Contract], ...] = (
    LegalEntity, Customer, Project, Resource, RateCardLine, TimeEntry, Expense, BillingMilestone,
    InvoiceLine, Invoice, Account, DimensionValue, TaxCode, FxRate, AccountingPeriod, JournalLine, JournalEntry,
    TimeEntryApproved, TimeEntryRecalled, TimeEntryRejected, TimeEntryEdited,
    ExpenseApproved, ExpenseRecalled, ExpenseRejected, ExpenseEdited,
    MilestoneCompleted, ProjectApproved, InvoiceStatusChanged,
)

__all__ = [
    "CONTRACTS", "Account", "AccountType", "AccountingPeriod", "Amount", "AnyEvent", "ApprovalStatus",
    "BillingMilestone", "BusinessEvent", "Contract", "ContractType", "CurrencyCode", "Customer",
    "DimensionValue", "Expense", "ExpenseApproved", "ExpenseEdited", "ExpenseRecalled", "ExpenseRejected",
    "FxRate", "Invoice", "InvoiceLine", "InvoiceStatus", "InvoiceStatusChanged", "JournalEntry", "JournalLine",
    "JournalType", "LegalEntity", "MilestoneCompleted", "MilestoneStatus", "Money", "PeriodStatus", "Project",
    "ProjectApproved", "ProjectStatus", "RateCardLine", "RateKind", "Resource", "SourceRef", "TaxCode",
    "TimeEntry", "TimeEntryApproved", "TimeEntryEdited", "TimeEntryRecalled", "TimeEntryRejected",
    "idempotency_key", "minor_unit", "quantum", "round_money",
]
