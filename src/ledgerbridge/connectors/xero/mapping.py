"""Xero Accounting JSON <-> the canonical model (pure: no I/O).

- Dates: Xero answers ``/Date(1573755038314+0000)/`` (``x-is-msdate`` / ``x-is-msdate-time`` in the official
  OpenAPI) and accepts ``YYYY-MM-DD`` in requests; :func:`parse_xero_date` reads both.
- Money: numbers are read with ``Decimal`` (:func:`loads`) and written as exact JSON numbers (:func:`dumps`), never
  through ``float``.
- A ManualJournal carries no currency: its lines are in the organisation's base currency. A journal line in
  another currency is posted at its functional (base) amount — the engine's own rate and rate date — and keeps its
  original amount in the line description as ``[lb EUR 1000.00]``; read-back reports that tag per currency, so the
  posting flow's comparison still sees the journal's own currencies (see docs/connectors/xero.md).
- Our journal id rides in the narration as ``[lb:<journal id>]`` (ManualJournals have no reference field); the
  invoice key is the invoice ``Reference``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import CurrencyTotals
from ledgerbridge.model.entities import Customer, Invoice, JournalEntry

CENT = Decimal("0.01")
NARRATION_TAG = re.compile(r"\[lb:([^\]]+)\]\s*$")
FOREIGN_TAG = re.compile(r"\[lb ([A-Z]{3}) (-?\d+(?:\.\d+)?)\]\s*$")
MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
#: Xero invoice Status -> canonical InvoiceStatus value
INVOICE_STATUS = {"DRAFT": "draft", "SUBMITTED": "submitted", "AUTHORISED": "posted", "PAID": "paid",
                  "VOIDED": "void", "DELETED": "void"}
NARRATION_MAX = 500  # Xero truncates longer narrations; the tag must survive


# ------------------------------------------------------------------------------------------------ JSON and dates


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


def dumps(value: Any) -> bytes:
    """JSON text with ``Decimal`` written as an exact number (``12.50``), never via ``float``."""
    return _encode(value).encode()


def loads(data: bytes | str) -> Any:
    """JSON with every fraction read as ``Decimal``."""
    return json.loads(data, parse_float=Decimal) if data else None


def money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value if value is not None else 0))


def ms_date(value: dt.date | dt.datetime) -> str:
    """``/Date(<ms since epoch>+0000)/`` as Xero writes dates and timestamps."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"/Date({int(value.timestamp() * 1000)}+0000)/"


def parse_xero_datetime(text: str) -> dt.datetime:
    """A Xero timestamp: ``/Date(ms+zzzz)/`` or ISO 8601 (``2026-09-30``, ``2026-09-30T00:00:00``); UTC-aware."""
    m = MS_DATE.match(text.strip())
    if m:
        return dt.datetime.fromtimestamp(int(m.group(1)) / 1000, tz=dt.UTC)
    parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_xero_date(text: str) -> dt.date:
    return parse_xero_datetime(text).date()


def idempotency_key(kind: str, *parts: str) -> str:
    """A deterministic ``Idempotency-Key`` (Xero allows 128 characters): ``lb-<kind>-<sha256 of the parts>``.
    Built only from our own keys and content, never from a clock, so a retry after a crash sends the same key."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"lb-{kind}-{digest[:48]}"


# ------------------------------------------------------------------------------------------------ organisation


@dataclass(slots=True)
class XeroChart:
    """What the connector resolved from the organisation once: base currency, accounts, tracking, tax rates."""

    base_currency: str
    account_map: dict[str, str]  # our code -> Xero AccountCode
    accounts: dict[str, Mapping[str, Any]]  # Xero AccountCode -> Account
    tracking_map: dict[str, str] = field(default_factory=dict)  # our dimension -> Xero tracking category name
    tracking: dict[str, dict[str, str]] = field(default_factory=dict)  # category name -> option name -> id
    tax_map: dict[str, str] = field(default_factory=dict)  # our tax code -> Xero TaxType
    tax_rates: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # TaxType -> TaxRate

    def our_code(self, xero_code: str) -> str | None:
        for ours, theirs in self.account_map.items():
            if theirs == xero_code:
                return ours
        return None


def lock_date(org: Mapping[str, Any]) -> tuple[dt.date | None, dt.date | None]:
    """``(PeriodLockDate, EndOfYearLockDate)`` of an Organisation (None when unset)."""
    def one(key: str) -> dt.date | None:
        raw = org.get(key)
        return parse_xero_date(str(raw)) if raw else None

    return one("PeriodLockDate"), one("EndOfYearLockDate")


def period_state(period: str, period_lock: dt.date | None, year_lock: dt.date | None) -> str:
    """Our period status from Xero's lock dates: ``locked`` when the whole month is on or before the end-of-year
    lock date (nobody may post), ``closed`` when it is on or before the period lock date (only advisers may post),
    ``closing`` when a lock date falls inside the month, else ``open``."""
    start = dt.date.fromisoformat(f"{period}-01")
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    if year_lock is not None and end <= year_lock:
        return "locked"
    if period_lock is not None and end <= period_lock:
        return "closed"
    if any(d is not None and start <= d < end for d in (period_lock, year_lock)):
        return "closing"
    return "open"


# ------------------------------------------------------------------------------------------------ journals


@dataclass(frozen=True, slots=True)
class ManualJournalPlan:
    journal_id: str
    date: dt.date
    body: dict[str, Any]
    problems: tuple[str, ...]
    signature: tuple[Any, ...]


def narration_for(journal: JournalEntry) -> str:
    tag = f" [lb:{journal.id}]"
    text = " ".join((journal.description or journal.journal_type.value).split())
    return text[: NARRATION_MAX - len(tag)] + tag


def journal_id_of(narration: str | None) -> str | None:
    m = NARRATION_TAG.search(narration or "")
    return m.group(1) if m else None


def _line_amount(ln: Any, base: str) -> tuple[Decimal | None, str | None]:
    """Signed base-currency amount of a journal line (+ debit / - credit) and the foreign tag, or a problem."""
    if ln.currency == base:
        return ln.debit - ln.credit, None
    if ln.functional_currency != base or (ln.functional_debit is None and ln.functional_credit is None):
        return None, None
    amount = (ln.functional_debit or Decimal(0)) - (ln.functional_credit or Decimal(0))
    return amount, f"[lb {ln.currency} {format(ln.debit - ln.credit, 'f')}]"


def journal_to_manual(journal: JournalEntry, chart: XeroChart) -> ManualJournalPlan:
    """The ManualJournal we send for one journal (status POSTED), with every problem found before sending."""
    problems: list[str] = []
    lines: list[dict[str, Any]] = []
    for ln in journal.lines:
        code = chart.account_map.get(ln.account)
        acct = chart.accounts.get(code) if code else None
        if code is None:
            problems.append(f"line {ln.line_no}: account {ln.account} is not in the account map")
        elif acct is None:
            problems.append(f"line {ln.line_no}: Xero has no account with code {code} (ours {ln.account})")
        elif str(acct.get("Status", "ACTIVE")) != "ACTIVE":
            problems.append(f"line {ln.line_no}: Xero account {code} is {acct.get('Status')}")
        amount, foreign = _line_amount(ln, chart.base_currency)
        if amount is None:
            problems.append(f"line {ln.line_no}: {ln.currency} line without a {chart.base_currency} functional "
                            f"amount — a Xero manual journal is in the base currency {chart.base_currency} only")
            continue
        if amount != amount.quantize(CENT):
            problems.append(f"line {ln.line_no}: amount {amount} has more than 2 decimals (Xero keeps cents)")
        tracking = []
        for dim, value in sorted(ln.dimensions.items()):
            cat = chart.tracking_map.get(dim)
            if cat is not None and value:
                tracking.append({"Name": cat, "Option": value})
        if len(tracking) > 2:
            problems.append(f"line {ln.line_no}: Xero allows 2 tracking categories, mapping gives {len(tracking)}")
        desc = " ".join((ln.description or journal.description or "").split())[:200]
        line: dict[str, Any] = {"LineAmount": amount, "AccountCode": code or ln.account,
                                "Description": f"{desc} {foreign}".strip() if foreign else desc or f"line {ln.line_no}"}
        if tracking:
            line["Tracking"] = tracking
        lines.append(line)
    if lines and sum((ln["LineAmount"] for ln in lines), Decimal(0)) != 0:
        problems.append(f"lines do not balance in {chart.base_currency} "
                        f"({sum((ln['LineAmount'] for ln in lines), Decimal(0))})")
    body = {"Narration": narration_for(journal), "Date": journal.entry_date.isoformat(), "Status": "POSTED",
            "LineAmountTypes": "NoTax", "JournalLines": lines}
    return ManualJournalPlan(journal.id, journal.entry_date, body, tuple(problems), manual_signature(
        journal.entry_date, lines))


def manual_signature(date: dt.date, lines: Iterable[Mapping[str, Any]]) -> tuple[Any, ...]:
    """What must agree between a ManualJournal we would send and one Xero holds for the same journal id."""
    return (date, tuple(sorted(
        (str(ln.get("AccountCode")), money(ln.get("LineAmount")).quantize(CENT),
         tuple(sorted((str(t.get("Name")), str(t.get("Option"))) for t in ln.get("Tracking") or [])),
         (FOREIGN_TAG.search(str(ln.get("Description") or "")) or [""])[0])
        for ln in lines)))


def held_signature(mj: Mapping[str, Any]) -> tuple[Any, ...]:
    return manual_signature(parse_xero_date(str(mj["Date"])), mj.get("JournalLines") or [])


def readback_totals(lines: Sequence[Mapping[str, Any]], base: str) -> dict[str, CurrencyTotals]:
    """Debit/credit per currency of a held ManualJournal: base amounts, or the foreign amount of a tagged line."""
    deb: dict[str, Decimal] = {}
    cre: dict[str, Decimal] = {}
    for ln in lines:
        m = FOREIGN_TAG.search(str(ln.get("Description") or ""))
        cur, amount = (m.group(1), Decimal(m.group(2))) if m else (base, money(ln.get("LineAmount")))
        deb[cur] = deb.get(cur, Decimal(0)) + (amount if amount > 0 else Decimal(0))
        cre[cur] = cre.get(cur, Decimal(0)) + (-amount if amount < 0 else Decimal(0))
    return {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(deb)}


def element_errors(element: Mapping[str, Any]) -> list[str]:
    """Messages of an element Xero refused (``summarizeErrors=false``: ``StatusAttributeString`` ERROR)."""
    msgs = [str(e.get("Message")) for e in element.get("ValidationErrors") or [] if isinstance(e, Mapping)]
    if not msgs and str(element.get("StatusAttributeString", "OK")).upper() == "ERROR":
        msgs = ["refused without a message"]
    return msgs


# ------------------------------------------------------------------------------------------------ master data


def contact_body(customer: Customer) -> dict[str, Any]:
    """A Contact keyed by ``AccountNumber`` = our customer id (unique per organisation in Xero)."""
    return {"Name": customer.name, "AccountNumber": customer.id, "ContactStatus": "ACTIVE" if customer.active
            else "ARCHIVED", "DefaultCurrency": customer.currency, "IsCustomer": True}


# ------------------------------------------------------------------------------------------------ invoices


def revenue_code(ln: Any, chart: XeroChart, default_revenue: str) -> str | None:
    """The Xero account of an invoice line: its own revenue account, else the default, through the account map."""
    return chart.account_map.get(ln.revenue_account or default_revenue)


def invoice_problems(inv: Invoice, chart: XeroChart, contacts: Mapping[str, str], default_revenue: str
                     ) -> list[str]:
    problems: list[str] = []
    if inv.total < 0 or any(ln.net_amount < 0 for ln in inv.lines):
        problems.append("negative amounts: a credit note is an ACCRECCREDIT document (CreditNotes), which this "
                        "connector does not write yet — credit it in Xero by hand")
    if inv.customer_id not in contacts:
        problems.append(f"customer {inv.customer_id} is not a Xero contact — push the customers first")
    for ln in inv.lines:
        code = revenue_code(ln, chart, default_revenue)
        if code is None or code not in chart.accounts:
            problems.append(f"line {ln.line_no}: revenue account {ln.revenue_account or default_revenue} is not "
                            "mapped to a Xero account")
        if ln.tax_code not in chart.tax_map:
            problems.append(f"line {ln.line_no}: tax code {ln.tax_code} is not in the tax map")
        elif chart.tax_map[ln.tax_code] not in chart.tax_rates:
            problems.append(f"line {ln.line_no}: Xero has no tax rate {chart.tax_map[ln.tax_code]}")
        if ln.net_amount != ln.net_amount.quantize(CENT) or ln.tax_amount != ln.tax_amount.quantize(CENT):
            problems.append(f"line {ln.line_no}: amounts with more than 2 decimals")
    return problems


def invoice_body(inv: Invoice, chart: XeroChart, contact_id: str, default_revenue: str) -> dict[str, Any]:
    """An ACCREC invoice, AUTHORISED at once (it books the receivable in Xero's ledger), ``Reference`` = our key.
    Each line sends its ``LineAmount`` and ``TaxAmount`` so Xero keeps our cents instead of re-rounding."""
    cat = chart.tracking_map.get("project")
    lines = []
    for ln in inv.lines:
        item: dict[str, Any] = {"Description": ln.description[:4000], "Quantity": ln.quantity,
                                "UnitAmount": ln.unit_price, "LineAmount": ln.net_amount,
                                "AccountCode": revenue_code(ln, chart, default_revenue),
                                "TaxType": chart.tax_map[ln.tax_code], "TaxAmount": ln.tax_amount}
        if cat:
            item["Tracking"] = [{"Name": cat, "Option": inv.project_id}]
        lines.append(item)
    body: dict[str, Any] = {"Type": "ACCREC", "Contact": {"ContactID": contact_id},
                            "Date": inv.invoice_date.isoformat(), "LineAmountTypes": "Exclusive",
                            "Reference": inv.id, "CurrencyCode": inv.currency, "Status": "AUTHORISED",
                            "LineItems": lines}
    body["DueDate"] = (inv.due_date or inv.invoice_date + dt.timedelta(days=30)).isoformat()
    return body


def invoice_differences(inv: Invoice, held: Mapping[str, Any]) -> list[str]:
    return [f"{name}: ours {want}, Xero {money(held.get(key))}" for name, key, want in (
        ("net", "SubTotal", inv.net_total), ("tax", "TotalTax", inv.tax_total), ("total", "Total", inv.total))
        if money(held.get(key)) != want]
