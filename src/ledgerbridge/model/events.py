"""Business events: what happened in a source system, as the engine receives it.

Every event has an ``idempotency_key`` built from its business identity (DESIGN §3), so a duplicate delivery
of the same fact is recognised wherever it arrives.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ledgerbridge.model.base import Contract, idempotency_key
from ledgerbridge.model.entities import (
    BillingMilestone,
    Expense,
    InvoiceStatus,
    Project,
    TimeEntry,
)


class BusinessEvent(Contract):
    owner: ClassVar[str] = "delivery"

    event_id: str
    source_system: str
    occurred_at: dt.datetime

    @property
    def idempotency_key(self) -> str:  # pragma: no cover - overridden by every concrete event
        raise NotImplementedError


class _TimeEntryEvent(BusinessEvent):
    entry: TimeEntry

    @property
    def idempotency_key(self) -> str:
        e = self.entry
        return idempotency_key(self.source_system, "time_entry", e.id, f"{e.version}:{e.approval_status.value}")


class TimeEntryApproved(_TimeEntryEvent):
    contract_name: ClassVar[str] = "time_entry_approved"
    event_type: Literal["time_entry.approved"] = "time_entry.approved"


class TimeEntryRecalled(_TimeEntryEvent):
    contract_name: ClassVar[str] = "time_entry_recalled"
    event_type: Literal["time_entry.recalled"] = "time_entry.recalled"


class TimeEntryRejected(_TimeEntryEvent):
    contract_name: ClassVar[str] = "time_entry_rejected"
    event_type: Literal["time_entry.rejected"] = "time_entry.rejected"


class TimeEntryEdited(_TimeEntryEvent):
    contract_name: ClassVar[str] = "time_entry_edited"
    event_type: Literal["time_entry.edited"] = "time_entry.edited"


class _ExpenseEvent(BusinessEvent):
    expense: Expense

    @property
    def idempotency_key(self) -> str:
        x = self.expense
        return idempotency_key(self.source_system, "expense", x.id, f"{x.version}:{x.approval_status.value}")


class ExpenseApproved(_ExpenseEvent):
    contract_name: ClassVar[str] = "expense_approved"
    event_type: Literal["expense.approved"] = "expense.approved"


class ExpenseRecalled(_ExpenseEvent):
    contract_name: ClassVar[str] = "expense_recalled"
    event_type: Literal["expense.recalled"] = "expense.recalled"


class ExpenseRejected(_ExpenseEvent):
    contract_name: ClassVar[str] = "expense_rejected"
    event_type: Literal["expense.rejected"] = "expense.rejected"


class ExpenseEdited(_ExpenseEvent):
    contract_name: ClassVar[str] = "expense_edited"
    event_type: Literal["expense.edited"] = "expense.edited"


class MilestoneCompleted(BusinessEvent):
    contract_name: ClassVar[str] = "milestone_completed"
    event_type: Literal["milestone.completed"] = "milestone.completed"
    milestone: BillingMilestone

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.source_system, "billing_milestone", self.milestone.id, "completed")


class ProjectApproved(BusinessEvent):
    contract_name: ClassVar[str] = "project_approved"
    event_type: Literal["project.approved"] = "project.approved"
    project: Project

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.source_system, "project", self.project.id, "approved")


class InvoiceStatusChanged(BusinessEvent):
    contract_name: ClassVar[str] = "invoice_status_changed"
    owner: ClassVar[str] = "billing"
    event_type: Literal["invoice.status_changed"] = "invoice.status_changed"
    invoice_id: str
    status: InvoiceStatus
    erp_number: str | None = None
    erp_system: str | None = None

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.source_system, "invoice", self.invoice_id, self.status.value)


AnyEvent = Annotated[
    TimeEntryApproved
    | TimeEntryRecalled
    | TimeEntryRejected
    | TimeEntryEdited
    | ExpenseApproved
    | ExpenseRecalled
    | ExpenseRejected
    | ExpenseEdited
    | MilestoneCompleted
    | ProjectApproved
    | InvoiceStatusChanged,
    Field(discriminator="event_type"),
]
