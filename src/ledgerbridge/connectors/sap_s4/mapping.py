"""SAP S/4HANA Cloud <-> canonical model (pure: no I/O).

- Journals -> SOAP ``JournalEntryBulkCreateRequest`` envelopes built with lxml (one ``JournalEntryCreateRequest``
  per journal), and the ``JournalEntryBulkCreateConfirmation`` parsed back: per journal the created
  ``AccountingDocument`` and the ``Log`` (``MaximumSeverityCode``, items ``TypeID`` / ``SeverityCode`` / ``Note``).
- ``DocumentReferenceID`` (16 characters in SAP) = :func:`document_reference` of our journal id: ``LB`` + 14 hex
  digits of its SHA-256 — deterministic, so a re-run finds what an earlier run created.
- OData v2 rows (``A_JournalEntryItemBasic``) -> read-back totals; projects and timesheet entries -> OData payloads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from lxml import etree

from ledgerbridge.connectors.base import CurrencyTotals
from ledgerbridge.model.entities import JournalEntry, Project, TimeEntry

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SFIN_NS = "http://sap.com/xi/SAPSCORE/SFIN"
REFERENCE_PREFIX = "LB"
ERROR_SEVERITY = 3  # LogItemSeverityCode: 1 information, 2 warning, 3 error, 4 abort
TIMESHEET_KEY = "lb:"  # TimeSheetNote = "lb:<entry id>@<version>"


def document_reference(journal_id: str) -> str:
    """Our deterministic ``DocumentReferenceID`` (SAP allows 16 characters) for a journal id."""
    return REFERENCE_PREFIX + hashlib.sha256(journal_id.encode()).hexdigest()[:14].upper()


@dataclass(frozen=True, slots=True)
class Item:
    gl_account: str
    amount: Decimal  # signed, transaction currency: debit positive, credit negative
    currency: str
    company_amount: Decimal | None  # signed, company-code currency (None: same currency, SAP copies it)
    text: str = ""
    assignments: tuple[tuple[str, str], ...] = ()  # (CostCenter, CC-1), (WBSElement, ...)

    @property
    def debit_credit(self) -> str:
        return "S" if self.amount >= 0 else "H"  # Soll / Haben


@dataclass(frozen=True, slots=True)
class JournalPlan:
    journal_id: str
    reference: str
    company_code: str
    posting_date: dt.date
    header_text: str
    items: tuple[Item, ...]

    def signature(self) -> list[tuple[str, Decimal, str]]:
        return sorted((i.gl_account, i.amount, i.currency) for i in self.items)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One journal's answer in a bulk confirmation."""

    message_id: str  # the request's MessageHeader/ID (ReferenceID in the confirmation)
    accounting_document: str | None  # None when SAP created nothing ("0000000000")
    company_code: str
    fiscal_year: str
    max_severity: int
    notes: list[tuple[str, int, str]] = field(default_factory=list)  # (TypeID, SeverityCode, Note)

    @property
    def ok(self) -> bool:
        return self.accounting_document is not None and self.max_severity < ERROR_SEVERITY

    def error_text(self) -> str:
        errs = [f"{t}: {n}" for t, s, n in self.notes if s >= ERROR_SEVERITY] or [f"{t}: {n}" for t, _, n in self.notes]
        return "; ".join(errs) or f"MaximumSeverityCode {self.max_severity} without a note"


def journal_problems(journal: JournalEntry, account_map: Mapping[str, str]) -> list[str]:
    """What SAP would refuse, found before sending: unmapped accounts, several currencies in one document."""
    problems = [f"line {ln.line_no}: account {ln.account} is not in account_map"
                for ln in journal.lines if ln.account not in account_map]
    currencies = sorted({ln.currency for ln in journal.lines})
    if len(currencies) > 1:
        problems.append(f"one SAP journal entry has one transaction currency; this journal has {currencies}")
    return problems


def journal_to_plan(journal: JournalEntry, *, company_code: str, account_map: Mapping[str, str],
                    dimension_map: Mapping[str, str]) -> JournalPlan:
    items = []
    for ln in journal.lines:
        amount = ln.debit - ln.credit
        company = None
        if ln.functional_currency and ln.functional_currency != ln.currency:
            company = (ln.functional_debit or Decimal(0)) - (ln.functional_credit or Decimal(0))
        assignments = tuple(sorted((dimension_map[k], v) for k, v in ln.dimensions.items() if k in dimension_map))
        items.append(Item(account_map[ln.account], amount, ln.currency, company, ln.description[:50], assignments))
    return JournalPlan(journal.id, document_reference(journal.id), company_code, journal.entry_date,
                       (journal.description or journal.id)[:25], tuple(items))


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def bulk_request(plans: Sequence[JournalPlan], *, message_id: str, created: dt.datetime,
                 created_by: str = "", document_type: str = "SA") -> bytes:
    """The SOAP envelope of a ``JournalEntryBulkCreateRequest`` (the synchronous service
    ``JournalEntryCreateRequestConfirmation_In`` and the asynchronous ``JournalEntryBulkCreationRequest_In`` take the
    same message). Sub-message ids are ``<message_id>-<n>``."""
    stamp = created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soapenv": SOAP_NS, "sfin": SFIN_NS})
    etree.SubElement(env, f"{{{SOAP_NS}}}Header")
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    bulk = etree.SubElement(body, f"{{{SFIN_NS}}}JournalEntryBulkCreateRequest")
    head = _sub(bulk, "MessageHeader")
    _sub(head, "ID", message_id)
    _sub(head, "CreationDateTime", stamp)
    for n, plan in enumerate(plans, 1):
        req = _sub(bulk, "JournalEntryCreateRequest")
        h = _sub(req, "MessageHeader")
        _sub(h, "ID", f"{message_id}-{n}")
        _sub(h, "CreationDateTime", stamp)
        je = _sub(req, "JournalEntry")
        _sub(je, "OriginalReferenceDocumentType", "BKPFF")
        _sub(je, "BusinessTransactionType", "RFBU")
        _sub(je, "AccountingDocumentType", document_type)
        _sub(je, "DocumentReferenceID", plan.reference)
        _sub(je, "DocumentHeaderText", plan.header_text)
        if created_by:
            _sub(je, "CreatedByUser", created_by)
        _sub(je, "CompanyCode", plan.company_code)
        _sub(je, "DocumentDate", plan.posting_date.isoformat())
        _sub(je, "PostingDate", plan.posting_date.isoformat())
        for no, item in enumerate(plan.items, 1):
            it = _sub(je, "Item")
            _sub(it, "ReferenceDocumentItem", str(no))
            _sub(it, "GLAccount", item.gl_account)
            _sub(it, "AmountInTransactionCurrency", f"{item.amount:f}", currencyCode=item.currency)
            if item.company_amount is not None:
                _sub(it, "AmountInCompanyCodeCurrency", f"{item.company_amount:f}")
            _sub(it, "DebitCreditCode", item.debit_credit)
            if item.text:
                _sub(it, "DocumentItemText", item.text)
            if item.assignments:
                aa = _sub(it, "AccountAssignment")
                for tag, value in item.assignments:
                    _sub(aa, tag, value)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _text(el: etree._Element | None, path: str) -> str:
    if el is None:
        return ""
    found = el.find(path)
    return (found.text or "").strip() if found is not None and found.text else ""


def parse_confirmation(xml: bytes) -> tuple[list[Confirmation], list[tuple[str, int, str]]]:
    """A ``JournalEntryBulkCreateConfirmation`` (inside a SOAP envelope or bare): per-journal confirmations in
    message order and the bulk-level log notes. Raises ``ValueError`` on anything else (a SOAP fault included)."""
    root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    fault = root.find(f".//{{{SOAP_NS}}}Fault")
    if fault is not None:
        raise ValueError(f"SOAP fault {_text(fault, 'faultcode')}: {_text(fault, 'faultstring')}")
    bulk = root if etree.QName(root).localname == "JournalEntryBulkCreateConfirmation" else root.find(
        f".//{{{SFIN_NS}}}JournalEntryBulkCreateConfirmation")
    if bulk is None:
        raise ValueError("no JournalEntryBulkCreateConfirmation in the answer")
    out = []
    for conf in bulk.findall("JournalEntryCreateConfirmation"):
        doc = conf.find("JournalEntryCreateConfirmation")
        number = _text(doc, "AccountingDocument")
        log = conf.find("Log")
        out.append(Confirmation(
            message_id=_text(conf, "MessageHeader/ReferenceID"),
            accounting_document=number if number.strip("0") else None,
            company_code=_text(doc, "CompanyCode"), fiscal_year=_text(doc, "FiscalYear"),
            max_severity=int(_text(log, "MaximumSeverityCode") or 0), notes=_notes(log)))
    return out, _notes(bulk.find("Log"))


def _notes(log: etree._Element | None) -> list[tuple[str, int, str]]:
    if log is None:
        return []
    return [(_text(i, "TypeID"), int(_text(i, "SeverityCode") or 0), _text(i, "Note")) for i in log.findall("Item")]


# --------------------------------------------------------------------------------------------------- OData rows


def odata_decimal(value: Any) -> Decimal:
    """OData v2 serializes Edm.Decimal as a string; never go through float."""
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def odata_date(value: Any) -> dt.date:
    """``/Date(1758240000000)/`` (OData v2 JSON) or ISO text -> date."""
    text = str(value)
    if text.startswith("/Date("):
        ms = int(text[6:].split(")")[0].split("+")[0])
        return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).date()
    return dt.date.fromisoformat(text[:10])


def to_odata_date(day: dt.date) -> str:
    return f"/Date({int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)})/"


def item_signature(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, Decimal, str]]:
    return sorted((str(r["GLAccount"]), odata_decimal(r["AmountInTransactionCurrency"]), str(r["TransactionCurrency"]))
                  for r in rows)


def readback_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, CurrencyTotals]:
    debit: dict[str, Decimal] = defaultdict(Decimal)
    credit: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        amt = odata_decimal(r["AmountInTransactionCurrency"])
        cur = str(r["TransactionCurrency"])
        debit[cur] += amt if amt > 0 else 0
        credit[cur] += -amt if amt < 0 else 0
    return {c: CurrencyTotals(debit[c], credit[c]) for c in sorted(set(debit) | set(credit))}


def project_payload(project: Project, *, company_code: str, profile: str, profit_center: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Project": project.id, "ProjectDescription": project.name[:40], "CompanyCode": company_code,
        "ProjectProfileCode": profile, "ResponsibleCostCenter": project.cost_center,
        "ProjectStartDate": to_odata_date(project.start_date), "EntProjectIsConfidential": False,
    }
    if project.end_date:
        body["ProjectEndDate"] = to_odata_date(project.end_date)
    if profit_center:
        body["ProfitCenter"] = profit_center
    return body


def timesheet_key(entry: TimeEntry) -> str:
    return f"{TIMESHEET_KEY}{entry.id}@{entry.version}"


def timesheet_payload(entry: TimeEntry, *, company_code: str, person: str, activity_type: str,
                      controlling_area: str, cost_center: str | None, wbs: str | None) -> dict[str, Any]:
    """A ``TimeSheetEntryCollection`` create. ``TimeSheetOperation`` is always ``C``: without it SAP answers 201
    and saves nothing."""
    fields: dict[str, Any] = {"ControllingArea": controlling_area, "ActivityType": activity_type,
                              "RecordedQuantity": f"{entry.hours:f}", "HoursUnitOfMeasure": "H",
                              "TimeSheetNote": timesheet_key(entry)}
    if cost_center:
        fields["SenderCostCenter"] = cost_center
    if wbs:
        fields["WBSElement"] = wbs
    return {"CompanyCode": company_code, "PersonWorkAgreement": person, "TimeSheetDate": to_odata_date(entry.work_date),
            "TimeSheetIsReleasedOnSave": True, "TimeSheetStatus": "30", "TimeSheetOperation": "C",
            "TimeSheetDataFields": fields}
