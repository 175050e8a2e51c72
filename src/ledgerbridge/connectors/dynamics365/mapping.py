"""Dynamics 365 <-> canonical model, pure (no I/O).

- Legal entity -> ``dataAreaId`` through ``companies``; our chart code -> main account through ``account_map``
  (identity by default).
- ``AccountDisplayValue`` in the format set in F&O under *Financial dimension configuration for integrating
  applications*: ``MainAccount`` then one segment per name in ``dimensions`` (our dimension names, in the format's
  order), joined by ``delimiter``; trailing empty segments dropped. A dimension the format has no segment for, or a
  value containing the delimiter, is refused before sending (F&O would misread the string).
- Foreign-currency lines carry ``ExchangeRate`` (per 100, as F&O quotes it) = functional / transaction x 100 to 10
  decimals, checked to give back our functional amount to the cent (the rounding line included).
- A journal is one ``LedgerJournalHeaders`` row whose ``Description`` is ``lb:<journal id>`` (the natural key looked
  up before creating) plus its ``LedgerJournalLines``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ledgerbridge.connectors.base import CurrencyTotals
from ledgerbridge.model.entities import ApprovalStatus, Invoice, JournalEntry, JournalLine, TimeEntry

REFERENCE_PREFIX = "lb:"
DESCRIPTION_MAX = 60  # LedgerJournalTable.Name
TEXT_MAX = 60
RATE_Q = Decimal("0.0000000001")
CENT = Decimal("0.01")
#: F&O fiscal period status (General ledger module) -> our period status
PERIOD_STATUS = {"Open": "open", "OnHold": "closed", "Closed": "locked", "PermanentlyClosed": "locked"}
#: our status -> the F&O status that enforces it ("closing" still accepts postings)
PERIOD_STATUS_TO_FO = {"open": "Open", "closing": "Open", "closed": "OnHold", "locked": "Closed"}
#: Project Operations option sets (msdyn_transactionclassification / msdyn_transactiontypecode / msdyn_billingtype)
CLASS_TIME, TYPE_COST, BILLING_CHARGEABLE = 192350000, 192350000, 192350001


@dataclass(frozen=True)
class D365Mapping:
    companies: Mapping[str, str]
    account_map: Mapping[str, str] = field(default_factory=dict)
    dimensions: Sequence[str] = ()
    ignore_dimensions: frozenset[str] = frozenset()
    delimiter: str = "-"
    journal_name: str = "GenJrn"
    tax_groups: Mapping[str, str] = field(default_factory=dict)

    def company(self, entity: str) -> str | None:
        return self.companies.get(entity)

    def main_account(self, code: str) -> str:
        return str(self.account_map.get(code, code))

    def entity_of(self, company: str) -> str | None:
        return next((e for e, c in self.companies.items() if c == company), None)


@dataclass(frozen=True)
class Plan:
    """One document to send: the header, its lines, and what our checks found wrong (empty = send it)."""

    key: str  # journal id / invoice id
    company: str
    reference: str
    header: dict[str, Any]
    lines: list[dict[str, Any]]
    problems: list[str]


def journal_reference(journal_id: str) -> str:
    return REFERENCE_PREFIX + journal_id


def journal_id_of(reference: str) -> str | None:
    return reference[len(REFERENCE_PREFIX):] if reference.startswith(REFERENCE_PREFIX) else None


def fo_date(day: dt.date) -> str:
    """F&O dates are Edm.DateTimeOffset; noon UTC keeps the calendar day in every time zone."""
    return f"{day.isoformat()}T12:00:00Z"


def display_value(account: str, dimensions: Mapping[str, str], m: D365Mapping) -> tuple[str, list[str]]:
    problems: list[str] = []
    extra = sorted(set(dimensions) - set(m.dimensions) - set(m.ignore_dimensions))
    if extra:
        problems.append(f"dimension(s) {extra} have no segment in the integration format (options.dimensions "
                        f"{list(m.dimensions)}; or list them in options.ignore_dimensions)")
    segments = [m.main_account(account), *(str(dimensions.get(d, "")) for d in m.dimensions)]
    for name, value in zip(["MainAccount", *m.dimensions], segments, strict=True):
        if m.delimiter in value:
            problems.append(f"{name} value {value!r} contains the segment delimiter {m.delimiter!r} — choose "
                            "another delimiter in F&O and options.delimiter")
    while len(segments) > 1 and not segments[-1]:
        segments.pop()
    return m.delimiter.join(segments), problems


def exchange_rate(line: JournalLine) -> tuple[Decimal, list[str]]:
    """F&O ``ExchangeRate`` (per 100) that turns the line amount into our functional amount to the cent."""
    amount = line.debit or line.credit
    functional = line.functional_debit if line.debit else line.functional_credit
    if line.functional_currency is None or line.functional_currency == line.currency or functional is None:
        return Decimal(100), []
    if not amount:
        return Decimal(100), [f"line {line.line_no}: zero amount with a functional amount {functional}"]
    rate = (functional / amount * 100).quantize(RATE_Q, rounding=ROUND_HALF_UP)
    if (amount * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP) != functional:
        return rate, [f"line {line.line_no}: no exchange rate reproduces functional amount {functional}"]
    return rate, []


def journal_plan(journal: JournalEntry, m: D365Mapping) -> Plan:
    company = m.company(journal.legal_entity_id) or ""
    reference = journal_reference(journal.id)
    problems: list[str] = []
    if not company:
        problems.append(f"legal entity {journal.legal_entity_id} has no company in options.companies")
    if len(reference) > DESCRIPTION_MAX:
        problems.append(f"reference {reference!r} is longer than the {DESCRIPTION_MAX} characters of Description")
    lines = []
    for ln in journal.lines:
        dv, why = display_value(ln.account, ln.dimensions, m)
        rate, why_rate = exchange_rate(ln)
        problems += [f"line {ln.line_no}: {w}" for w in why] + why_rate
        lines.append({"dataAreaId": company, "LineNumber": Decimal(ln.line_no), "AccountType": "Ledger",
                      "AccountDisplayValue": dv, "TransDate": fo_date(journal.entry_date),
                      "CurrencyCode": ln.currency, "DebitAmount": ln.debit, "CreditAmount": ln.credit,
                      "ExchangeRate": rate, "Text": (ln.description or journal.description)[:TEXT_MAX]})
    header = {"dataAreaId": company, "JournalName": m.journal_name, "Description": reference}
    return Plan(journal.id, company, reference, header, lines, problems)


def line_signature(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, Decimal, Decimal, str]]:
    """What must match between a held journal and ours: display value, debit, credit, currency per line."""
    return sorted((str(r["AccountDisplayValue"]), Decimal(str(r.get("DebitAmount") or 0)),
                   Decimal(str(r.get("CreditAmount") or 0)), str(r["CurrencyCode"])) for r in rows)


def readback_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, CurrencyTotals]:
    debit: dict[str, Decimal] = defaultdict(Decimal)
    credit: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        debit[str(r["CurrencyCode"])] += Decimal(str(r.get("DebitAmount") or 0))
        credit[str(r["CurrencyCode"])] += Decimal(str(r.get("CreditAmount") or 0))
    return {c: CurrencyTotals(debit[c], credit[c]) for c in sorted(set(debit) | set(credit))}


def invoice_plan(inv: Invoice, m: D365Mapping) -> Plan:
    """A free-text invoice: header keyed by ``CustomerReference`` = our invoice id, one line per invoice line on
    its revenue account (with the project segment when the format has one), tax through ``ItemSalesTaxGroup``."""
    company = m.company(inv.legal_entity_id) or ""
    problems = [] if company else [f"legal entity {inv.legal_entity_id} has no company in options.companies"]
    header = {"dataAreaId": company, "CustomerAccount": inv.customer_id, "InvoiceDate": fo_date(inv.invoice_date),
              "CurrencyCode": inv.currency, "CustomerReference": inv.id}
    if inv.due_date is not None:
        header["DueDate"] = fo_date(inv.due_date)
    lines = []
    for ln in inv.lines:
        if not ln.revenue_account:
            problems.append(f"line {ln.line_no} has no revenue account")
        dims = {"project": inv.project_id} if "project" in m.dimensions else {}
        dv, why = display_value(ln.revenue_account or "", dims, m)
        problems += why
        lines.append({"dataAreaId": company, "LineNumber": Decimal(ln.line_no),
                      "Description": ln.description[:TEXT_MAX],
                      "Quantity": ln.quantity, "UnitPrice": ln.unit_price, "LineAmount": ln.net_amount,
                      "MainAccountDisplayValue": dv, "ItemSalesTaxGroup": m.tax_groups.get(ln.tax_code, ln.tax_code)})
    return Plan(inv.id, company, inv.id, header, lines, problems)


def invoice_state(header: Mapping[str, Any]) -> str:
    """Canonical invoice status of a free-text invoice header."""
    if str(header.get("IsPosted")) == "Yes":
        return "paid" if str(header.get("IsSettled", "No")) == "Yes" else "posted"
    return "draft"


def period_of(day: str) -> str:
    return str(day)[:7]


def actual_to_time_entry(row: Mapping[str, Any], *, system: str, projects: Mapping[str, str],
                         resources: Mapping[str, str]) -> TimeEntry:
    """A Project Operations cost actual of classification Time -> an approved time entry (actuals only exist for
    approved time). Raises ``ValueError`` (or a pydantic error) when it cannot be one."""
    pid = projects.get(str(row.get("_msdyn_project_value")))
    rid = resources.get(str(row.get("_msdyn_bookableresource_value")))
    if pid is None or rid is None:
        raise ValueError(f"project {row.get('_msdyn_project_value')} or resource "
                         f"{row.get('_msdyn_bookableresource_value')} has no external id — give both their "
                         "alternate-key column (options.project_key / resource_key)")
    if Decimal(str(row.get("msdyn_quantity") or 0)) < 0:
        raise ValueError(f"it is a reversing actual ({row.get('msdyn_quantity')} h): Project Operations reversed "
                         "approved time — recall or correct the entry at its source; reversals are not read as "
                         "time entries")
    modified = row.get("modifiedon")
    return TimeEntry(
        id=f"d365-actual-{row['msdyn_actualid']}", source_system=system, version=int(row.get("versionnumber") or 1),
        project_id=pid, resource_id=rid, work_date=dt.date.fromisoformat(str(row["msdyn_documentdate"])[:10]),
        hours=Decimal(str(row["msdyn_quantity"])), billable=row.get("msdyn_billingtype") == BILLING_CHARGEABLE,
        approval_status=ApprovalStatus.APPROVED,
        updated_at=dt.datetime.fromisoformat(str(modified).replace("Z", "+00:00")) if modified else None,
        description=str(row.get("msdyn_description") or ""))
