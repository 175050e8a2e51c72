"""Shared value types of the domain rules. Plain frozen dataclasses (slots) so hot paths over millions of
entries stay cheap; canonical contracts live in ``ledgerbridge.model``.

The path through ``domain/``::

    TimeEntry/Expense versions --approvals--> LedgerDelta (post v / reverse v)
        --costing--> CostedTime / CostedExpense
        --posting.postings_for_*--> Posting (one ledger-impacting fact, signed)
        --posting.summarize + build--> JournalEntry (balanced by construction, with lineage)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ledgerbridge.model.base import SourceRef


class DeltaAction(StrEnum):
    POST = "post"  # put this version's effect on the ledger
    REVERSE = "reverse"  # take this (previously posted) version's effect off the ledger


@dataclass(frozen=True, slots=True)
class LedgerDelta:
    """What approvals decided for one source version: post it, or reverse what was posted for it."""

    action: DeltaAction
    entity: str  # "time_entry" | "expense"
    item_id: str
    version: int
    reason: str  # e.g. "approved", "recalled after posting", "edited: v3 replaces v2"

    @property
    def sign(self) -> int:
        return 1 if self.action is DeltaAction.POST else -1


@dataclass(frozen=True, slots=True)
class CostedTime:
    """One time-entry version with its labor cost (cost currency) and billable value (bill currency)."""

    ref: SourceRef
    legal_entity_id: str
    project_id: str
    resource_id: str
    cost_center: str
    work_date: dt.date
    hours: Decimal
    billable: bool
    cost_rate: Decimal
    cost_currency: str
    cost_amount: Decimal  # rounded to cost_currency minor unit
    bill_rate: Decimal  # Decimal(0) when not billable
    bill_currency: str
    billable_value: Decimal  # rounded to bill_currency minor unit; 0 when not billable


@dataclass(frozen=True, slots=True)
class CostedExpense:
    ref: SourceRef
    legal_entity_id: str
    project_id: str
    resource_id: str
    cost_center: str
    expense_date: dt.date
    category: str
    billable: bool
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger-impacting fact, before summarization. ``amounts`` are named components (e.g. ``net``,
    ``tax``) that the posting rule for ``txn_type`` pairs with accounts; a negative ``sign`` reverses."""

    txn_type: str  # a key of the posting rules: labor_cost, revenue_accrual, expense, invoice, ...
    legal_entity_id: str
    date: dt.date
    currency: str
    amounts: tuple[tuple[str, Decimal], ...]
    dimensions: tuple[tuple[str, str], ...]
    source: SourceRef
    sign: int = 1

    def amount(self, name: str) -> Decimal:
        for k, v in self.amounts:
            if k == name:
                return v
        raise KeyError(f"{self.txn_type} posting for {self.source} has no amount named {name!r}")
