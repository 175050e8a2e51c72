"""Workday Web Services (SOAP) <-> canonical model: request elements built with lxml ``ElementMaker`` and answers
parsed with namespace-aware XPath. Pure: no I/O.

Shapes follow the public WWS directory (``urn:com.workday/bsvc``): every object is addressed by reference IDs
(``<wd:ID wd:type="Accounting_Journal_ID">JE-...</wd:ID>``), ``Get_*`` requests take ``Request_References``,
``Request_Criteria`` (with ``Transaction_Log_Criteria_Data``) and ``Response_Filter`` (``Page``/``Count``), and the
answers carry ``Response_Results`` (``Total_Results``, ``Total_Pages``, ``Page``). Our deterministic keys travel as
the caller-set reference IDs ``Accounting_Journal_ID`` and ``Customer_Invoice_ID``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from ledgerbridge.connectors.base import CurrencyTotals, ReadBack
from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RecordValidationError,
    TransientError,
)
from ledgerbridge.model.entities import Customer, Invoice, JournalEntry, Project

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WD_NS = "urn:com.workday/bsvc"
PASSWORD_TEXT = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
                 "#PasswordText")
NS = {"env": SOAP_NS, "wsse": WSSE_NS, "wd": WD_NS}
WD_TYPE = f"{{{WD_NS}}}type"

SOAP = ElementMaker(namespace=SOAP_NS, nsmap={"env": SOAP_NS})
WSSE = ElementMaker(namespace=WSSE_NS, nsmap={"wsse": WSSE_NS})
WD = ElementMaker(namespace=WD_NS, nsmap={"wd": WD_NS})

#: Workday customer invoice status (and payment status) -> canonical InvoiceStatus value
INVOICE_STATES = {"Draft": "draft", "In Progress": "submitted", "Approved": "posted", "Canceled": "void"}
#: Workday period status (as a period-status report shows it) -> our period status
#: a Future period accepts no journals yet: treated as closed, so nothing is sent there
PERIOD_STATES = {"Open": "open", "Closing": "closing", "Pending Close": "closing", "Closed": "closed",
                 "Locked": "locked", "Future": "closed"}
MAX_PAGE_COUNT = 999
#: project billing type as the tenant names it [unverified: configure per tenant] -> our contract type
BILLING_TYPES = {"Time and Materials": "time_and_materials", "Fixed Fee": "fixed_fee", "Milestone": "milestone"}

# ------------------------------------------------------------------------------------------------ envelope


def ref(id_type: str, value: str, element: str) -> etree._Element:
    """``<wd:<element>><wd:ID wd:type="id_type">value</wd:ID></wd:<element>>``."""
    el = getattr(WD, element)(WD.ID(value))
    el[0].set(WD_TYPE, id_type)
    return el


def envelope(body: etree._Element, *, username: str, password: str) -> bytes:
    """A SOAP 1.1 envelope with a WS-Security UsernameToken (``user@tenant`` + password in clear text over TLS,
    as Workday's ISU log-in expects)."""
    token = WSSE.UsernameToken(WSSE.Username(username), WSSE.Password(password))
    token[1].set("Type", PASSWORD_TEXT)
    env = SOAP.Envelope(SOAP.Header(WSSE.Security(token)), SOAP.Body(body))
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def versioned(req: etree._Element, version: str) -> etree._Element:
    """Pin the request to a WWS version (``wd:version="v43.0"``)."""
    req.set(f"{{{WD_NS}}}version", version)
    return req


def text(el: etree._Element | None, path: str, default: str | None = None) -> str | None:
    found = el.find(path, NS) if el is not None else None
    return found.text if found is not None and found.text is not None else default


def ref_id(el: etree._Element | None, id_type: str) -> str | None:
    """The ``wd:ID`` of type ``id_type`` inside a reference element."""
    if el is None:
        return None
    for i in el.findall("wd:ID", NS):
        if i.get(WD_TYPE) == id_type:
            return i.text
    return None


def amount(value: str | None) -> Decimal:
    try:
        return Decimal(value or "0")
    except InvalidOperation as exc:
        raise PermanentError(f"workday: an amount in the answer is not a number: {value!r}", code="LB-P006") from exc


def money_text(value: Decimal) -> str:
    return f"{value:f}"


def response_filter(page: int, count: int, as_of: dt.datetime | None = None) -> etree._Element:
    rf = WD.Response_Filter()
    if as_of is not None:  # one consistent snapshot across pages
        rf.append(WD.As_Of_Entry_DateTime(as_of.isoformat()))
    rf.append(WD.Page(str(page)))
    rf.append(WD.Count(str(count)))
    return rf


def request_references(element: str, id_type: str, values: Sequence[str]) -> etree._Element:
    """``Request_References`` that skip unknown ids (without the flag Workday faults on the first unknown id)."""
    rr = WD.Request_References(*[ref(id_type, v, element) for v in values])
    rr.set(f"{{{WD_NS}}}Skip_Non_Existing_Instances", "true")
    return rr


def transaction_log(updated_from: dt.datetime, updated_through: dt.datetime) -> etree._Element:
    return WD.Transaction_Log_Criteria_Data(WD.Transaction_Date_Range_Data(
        WD.Updated_From(updated_from.isoformat()), WD.Updated_Through(updated_through.isoformat())))


@dataclass(frozen=True, slots=True)
class PageInfo:
    total_results: int
    total_pages: int
    page: int


def page_info(response: etree._Element) -> PageInfo:
    rr = response.find("wd:Response_Results", NS)
    if rr is None:
        return PageInfo(0, 0, 1)
    return PageInfo(int(text(rr, "wd:Total_Results", "0") or 0), int(text(rr, "wd:Total_Pages", "0") or 0),
                    int(text(rr, "wd:Page", "1") or 1))


# ------------------------------------------------------------------------------------------------ faults


def fault_error(root: etree._Element, system: str, status: int) -> LedgerbridgeError | None:
    """The ledgerbridge error of a SOAP ``Fault`` (``None`` when ``root`` holds no fault).

    - ``Validation_Fault`` (``Client.validationError``): the record is refused -> ``RecordValidationError``
      LB-V001 with each ``Validation_Error`` message and xpath; a reference ID already in use -> ``ConflictError``
      LB-C004; a closed period -> ``details.rule = "workday.period_closed"``;
    - ``Client.authenticationError`` / invalid user name or password -> ``PermanentError`` LB-P002;
    - ``Processing_Fault`` -> ``PermanentError`` LB-P001 (a person must act: permissions, business process);
    - a ``Server`` fault -> ``TransientError`` LB-T004 (retried).
    """
    fault = root if etree.QName(root).localname == "Fault" else root.find(".//env:Fault", NS)
    if fault is None:
        return None
    code = (fault.findtext("faultcode") or "").strip()
    message = (fault.findtext("faultstring") or "").strip()
    errors = [{"message": text(e, "wd:Message", ""), "detail": text(e, "wd:Detail_Message", ""),
               "xpath": text(e, "wd:Xpath", "")} for e in fault.iterfind(".//wd:Validation_Error", NS)]
    details: dict[str, Any] = {"system": system, "status": status, "faultcode": code, "faultstring": message}
    if errors:
        details["validation_errors"] = errors
    full = " ".join([message, *(f"{e['message']} {e['detail']} ({e['xpath']})" for e in errors)]).strip()
    low = full.lower()
    where = f"{system}: SOAP fault {code or '(no faultcode)'}"
    if "authentication" in code.lower() or "invalid username or password" in low:
        return PermanentError(f"{where}: {full} — check the ISU user name (user@tenant), password and that the "
                              "account is not locked or expired", code="LB-P002", details=details)
    if fault.find(".//wd:Validation_Fault", NS) is not None or "validation" in code.lower():
        if "already in use" in low or "already exists" in low:
            return ConflictError(f"{where}: {full} — the reference ID is held by another object; look it up and "
                                 "link it instead of submitting again", code="LB-C004", details=details)
        if "closed period" in low or "period is closed" in low or "not open" in low:
            details["rule"] = "workday.period_closed"
        return RecordValidationError(f"{where}: {full} — fix the record and replay", code="LB-V001",
                                     details=details)
    if code.lower().startswith(("soap-env:server", "server", "env:server")):
        return TransientError(f"{where}: {full}", code="LB-T004", details=details)
    return PermanentError(f"{where}: {full} — check the ISU's security group domain permissions and the business "
                          "process set-up", code="LB-P001", details=details)


# ------------------------------------------------------------------------------------------------ journals


@dataclass(frozen=True, slots=True)
class JournalOptions:
    company_id: str
    account_map: Mapping[str, str]
    worktag_types: Mapping[str, str]
    ledger_type: str = "Actuals"
    journal_source: str = "Integration"
    auto_complete: bool = True


def journal_problems(journal: JournalEntry, opts: JournalOptions) -> list[str]:
    """What Workday would refuse, found before sending: unmapped accounts or dimensions."""
    problems = [f"line {ln.line_no}: account {ln.account} has no Workday ledger account in account_map"
                for ln in journal.lines if ln.account not in opts.account_map]
    return problems


def journal_data(journal: JournalEntry, opts: JournalOptions) -> etree._Element:
    """``Accounting_Journal_Data`` for one journal: our id as ``Accounting_Journal_ID`` (the idempotency key),
    lines with ledger account, debit/credit in the line currency, ledger amounts when functional amounts are
    given, memo and worktags."""
    lines = []
    for ln in journal.lines:
        line = WD.Journal_Entry_Line_Replacement_Data(
            WD.Line_Order(str(ln.line_no)),
            ref("Company_Reference_ID", opts.company_id, "Line_Company_Reference"),
            ref("Ledger_Account_ID", opts.account_map[ln.account], "Ledger_Account_Reference"),
            WD.Debit_Amount(money_text(ln.debit)),
            WD.Credit_Amount(money_text(ln.credit)),
            ref("Currency_ID", ln.currency, "Currency_Reference"),
        )
        if ln.functional_currency is not None:
            line.append(WD.Ledger_Debit_Amount(money_text(ln.functional_debit or Decimal(0))))
            line.append(WD.Ledger_Credit_Amount(money_text(ln.functional_credit or Decimal(0))))
        if ln.description:
            line.append(WD.Memo(ln.description[:255]))
        for dim, value in sorted(ln.dimensions.items()):
            id_type = opts.worktag_types.get(dim)
            if id_type:
                line.append(ref(id_type, value, "Worktags_Reference"))
        lines.append(line)
    return WD.Accounting_Journal_Data(
        WD.Accounting_Journal_ID(journal.id),
        WD.Submit("true"),
        ref("Company_Reference_ID", opts.company_id, "Company_Reference"),
        ref("Currency_ID", journal.lines[0].functional_currency or journal.lines[0].currency, "Currency_Reference"),
        ref("Ledger_Type_ID", opts.ledger_type, "Ledger_Type_Reference"),
        WD.Accounting_Date(journal.entry_date.isoformat()),
        ref("Journal_Source_ID", opts.journal_source, "Journal_Source_Reference"),
        WD.Journal_Entry_Memo(f"{journal.journal_type.value} {journal.id} {journal.description}".strip()[:255]),
        WD.External_Reference_ID(journal.id),
        *lines,
    )


def submit_journal_request(journal: JournalEntry, opts: JournalOptions, version: str) -> etree._Element:
    req = WD.Submit_Accounting_Journal_Request(
        WD.Business_Process_Parameters(WD.Auto_Complete("true" if opts.auto_complete else "false")),
        journal_data(journal, opts))
    return versioned(req, version)


def import_journals_request(journals: Sequence[JournalEntry], opts: JournalOptions, version: str
                            ) -> etree._Element:
    """``Import_Accounting_Journal_Request``: many journals in one call, processed as a background process."""
    req = WD.Import_Accounting_Journal_Request(
        *[WD.Accounting_Journal(journal_data(j, opts)) for j in journals])
    return versioned(req, version)


def import_messages_request(process_wids: Sequence[str], version: str) -> etree._Element:
    """``Get_Import_Process_Messages_Request`` (``Integrations``) for background processes by WID."""
    return versioned(WD.Get_Import_Process_Messages_Request(
        WD.Request_References(*[ref("WID", w, "Import_Process_Reference") for w in process_wids])), version)


@dataclass(frozen=True, slots=True)
class ImportProcess:
    """An import background process: its status and the journals it refused ``(our key, message, xpath)``."""

    wid: str
    status: str
    refused: tuple[tuple[str, str, str], ...] = ()

    @property
    def done(self) -> bool:
        return self.status.startswith("Completed") or self.status in ("Failed", "Canceled")


def import_processes(response: etree._Element) -> list[ImportProcess]:
    out = []
    for el in response.iterfind("wd:Response_Data/wd:Import_Process", NS):
        data = el.find("wd:Import_Process_Data", NS)
        refused = tuple((text(m, "wd:Reference_ID", "") or "", text(m, "wd:Message_Summary", "") or "",
                         text(m, "wd:Xpath", "") or "")
                        for m in (data.iterfind("wd:Import_Process_Message", NS) if data is not None else ())
                        if (text(m, "wd:Severity", "") or "").upper() in ("ERROR", "CRITICAL"))
        out.append(ImportProcess(ref_id(el.find("wd:Import_Process_Reference", NS), "WID") or "",
                                 text(data, "wd:Status", "") or "", refused))
    return out


def get_journals_request(journal_ids: Sequence[str], version: str, page: int, count: int) -> etree._Element:
    req = WD.Get_Journals_Request(
        request_references("Journal_Reference", "Accounting_Journal_ID", journal_ids),
        response_filter(page, count))
    return versioned(req, version)


@dataclass(frozen=True, slots=True)
class HeldJournal:
    """A journal as Workday holds it: our key, its WID and number, status, lines (our account code or the
    Workday account when unmapped, debit, credit, currency)."""

    journal_id: str
    wid: str | None
    number: str | None
    status: str
    lines: tuple[tuple[str, Decimal, Decimal, str], ...] = field(default=())

    @property
    def target_ref(self) -> str:
        return self.number or f"WID:{self.wid}"

    def signature(self) -> tuple[tuple[str, Decimal, Decimal, str], ...]:
        return tuple(sorted(self.lines))

    def read_back(self) -> ReadBack:
        deb: dict[str, Decimal] = defaultdict(Decimal)
        cre: dict[str, Decimal] = defaultdict(Decimal)
        for _, d, c, cur in self.lines:
            deb[cur] += d
            cre[cur] += c
        return ReadBack(self.target_ref, {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(set(deb) | set(cre))},
                        len(self.lines))


def journal_signature(journal: JournalEntry, opts: JournalOptions) -> tuple[tuple[str, Decimal, Decimal, str], ...]:
    return tuple(sorted((opts.account_map.get(ln.account, ln.account), ln.debit, ln.credit, ln.currency)
                        for ln in journal.lines))


def _items(response: etree._Element, element: str, id_type: str
           ) -> Iterator[tuple[str, etree._Element, etree._Element | None]]:
    """``(our key, <element>_Data, <element>_Reference)`` of each ``Response_Data/<element>`` carrying a key."""
    for el in response.iterfind(f"wd:Response_Data/wd:{element}", NS):
        data = el.find(f"wd:{element}_Data", NS)
        eref = el.find(f"wd:{element}_Reference", NS)
        key = text(data, f"wd:{id_type}") or ref_id(eref, id_type)
        if key is not None and data is not None:
            yield key, data, eref


def held_journals(response: etree._Element) -> list[HeldJournal]:
    """``Get_Journals_Response`` -> journals (lines keyed by Workday ledger account id)."""
    out: list[HeldJournal] = []
    for key, data, jref in _items(response, "Journal", "Accounting_Journal_ID"):
        lines = tuple(
            (ref_id(ln.find("wd:Ledger_Account_Reference", NS), "Ledger_Account_ID") or "",
             amount(text(ln, "wd:Debit_Amount")), amount(text(ln, "wd:Credit_Amount")),
             ref_id(ln.find("wd:Currency_Reference", NS), "Currency_ID") or "")
            for ln in data.iterfind("wd:Journal_Entry_Line_Data", NS))
        out.append(HeldJournal(key, ref_id(jref, "WID"), text(data, "wd:Journal_Number"),
                               text(data, "wd:Journal_Status", "") or "", lines))
    return out


# ------------------------------------------------------------------------------------------------ invoices


def invoice_request(inv: Invoice, *, company_id: str, version: str, revenue_categories: Mapping[str, str],
                    default_revenue_category: str, submit: bool = True) -> etree._Element:
    """``Submit_Customer_Invoice_Request``: our invoice id as ``Customer_Invoice_ID``; one line per invoice line
    with quantity, unit cost, extended amount, tax code and revenue category (from the line's revenue account)."""
    lines = []
    for ln in inv.lines:
        category = revenue_categories.get(ln.revenue_account or "", default_revenue_category)
        lines.append(WD.Customer_Invoice_Line_Replacement_Data(
            WD.Line_Order(str(ln.line_no)),
            WD.Line_Item_Description(ln.description[:255]),
            ref("Revenue_Category_ID", category, "Revenue_Category_Reference"),
            WD.Quantity(money_text(ln.quantity)),
            WD.Unit_Cost(money_text(ln.unit_price)),
            WD.Extended_Amount(money_text(ln.net_amount)),
            ref("Tax_Code_ID", ln.tax_code, "Tax_Code_Reference"),
            WD.Tax_Amount(money_text(ln.tax_amount)),
        ))
    data = WD.Customer_Invoice_Data(
        WD.Customer_Invoice_ID(inv.id),
        WD.Submit("true" if submit else "false"),
        ref("Company_Reference_ID", company_id, "Company_Reference"),
        ref("Customer_Reference_ID", inv.customer_id, "Customer_Reference"),
        ref("Currency_ID", inv.currency, "Currency_Reference"),
        WD.Invoice_Date(inv.invoice_date.isoformat()),
        *([WD.Due_Date_Override(inv.due_date.isoformat())] if inv.due_date else []),
        ref("Project_ID", inv.project_id, "Project_Reference"),
        WD.Memo(f"ledgerbridge {inv.id}"),
        *lines,
    )
    req = WD.Submit_Customer_Invoice_Request(
        WD.Business_Process_Parameters(WD.Auto_Complete("true")), data)
    return versioned(req, version)


def get_invoices_request(keys: Sequence[str], version: str, page: int, count: int) -> etree._Element:
    req = WD.Get_Customer_Invoices_Request(
        request_references("Customer_Invoice_Reference", "Customer_Invoice_ID", keys), response_filter(page, count))
    return versioned(req, version)


@dataclass(frozen=True, slots=True)
class HeldInvoice:
    key: str
    wid: str | None
    number: str | None
    status: str  # canonical
    net: Decimal
    tax: Decimal
    total: Decimal


def held_invoices(response: etree._Element) -> list[HeldInvoice]:
    out: list[HeldInvoice] = []
    for key, data, iref in _items(response, "Customer_Invoice", "Customer_Invoice_ID"):
        status = INVOICE_STATES.get(text(data, "wd:Invoice_Status", "") or "", "draft")
        if status == "posted" and text(data, "wd:Payment_Status") == "Paid":
            status = "paid"
        out.append(HeldInvoice(key, ref_id(iref, "WID"), text(data, "wd:Invoice_Number"), status,
                               amount(text(data, "wd:Total_Invoice_Amount_Before_Tax")),
                               amount(text(data, "wd:Tax_Amount")), amount(text(data, "wd:Total_Invoice_Amount"))))
    return out


# ------------------------------------------------------------------------------------------------ customers


def put_customer_request(customer: Customer, version: str) -> etree._Element:
    """``Put_Customer_Request``: an upsert on ``Customer_Reference_ID`` = our customer id (``Add_Only`` false)."""
    req = WD.Put_Customer_Request(
        ref("Customer_Reference_ID", customer.id, "Customer_Reference"),
        WD.Customer_Data(
            WD.Customer_Reference_ID(customer.id),
            WD.Customer_Name(customer.name[:255]),
            ref("Currency_ID", customer.currency, "Default_Currency_Reference"),
            ref("Payment_Terms_ID", f"NET_{customer.credit_terms_days}", "Payment_Terms_Reference"),
            ref("Tax_Code_ID", customer.tax_code, "Default_Tax_Code_Reference"),
            WD.Inactive("false" if customer.active else "true")))
    req.set(f"{{{WD_NS}}}Add_Only", "false")
    return versioned(req, version)


# ------------------------------------------------------------------------------------------------ projects


def get_projects_request(version: str, page: int, count: int, *, updated_from: dt.datetime | None,
                         updated_through: dt.datetime, as_of: dt.datetime) -> etree._Element:
    criteria = WD.Request_Criteria()
    if updated_from is not None:
        criteria.append(transaction_log(updated_from, updated_through))
    req = WD.Get_Projects_Request(criteria, response_filter(page, count, as_of))
    return versioned(req, version)


def project_from_xml(el: etree._Element, *, legal_entity_of: Mapping[str, str], default_cost_center: str
                     ) -> Project:
    """``wd:Project`` -> canonical :class:`Project` (company -> legal entity through ``legal_entity_of``)."""
    data = el.find("wd:Project_Data", NS)
    company = ref_id(data.find("wd:Company_Reference", NS), "Company_Reference_ID") if data is not None else None
    inactive = (text(data, "wd:Inactive", "false") or "false") == "true"
    end = text(data, "wd:End_Date")
    return Project(
        id=text(data, "wd:Project_ID") or "",
        name=text(data, "wd:Project_Name") or "",
        customer_id=ref_id(data.find("wd:Customer_Reference", NS), "Customer_Reference_ID") or "",
        legal_entity_id=legal_entity_of.get(company or "", company or ""),
        contract_type=BILLING_TYPES.get(text(data, "wd:Billing_Type", "") or "", "time_and_materials"),
        currency=ref_id(data.find("wd:Currency_Reference", NS), "Currency_ID") or "",
        cost_center=ref_id(data.find("wd:Cost_Center_Reference", NS), "Cost_Center_Reference_ID")
        or default_cost_center,
        status="closed" if inactive else "active",
        start_date=dt.date.fromisoformat(text(data, "wd:Start_Date") or "1970-01-01"),
        end_date=dt.date.fromisoformat(end) if end else None,
    )
