"""Workday sandbox: SOAP Web Services (Financial_Management, Resource_Management, Revenue_Management) and RaaS
custom reports, as the public WWS directory describes them (vendor facts: docs/connectors/workday.md).

- ``POST /ccx/service/<tenant>/<Service>/v<NN.N>``: a SOAP 1.1 envelope whose header carries a WS-Security
  UsernameToken (``<user>@<tenant>`` + password); anything else is a ``Client.authenticationError`` fault.
  Operations: ``Submit_Accounting_Journal``, ``Import_Accounting_Journal`` (a background process applied
  ``import_delay`` seconds later; ``Integrations``/``Get_Import_Process_Messages`` reports its status and the
  journals it refused), ``Get_Journals``, ``Put_Customer``, ``Submit_Customer_Invoice``,
  ``Get_Customer_Invoices``, ``Get_Projects``. Faults are SOAP ``Fault`` elements with HTTP 500
  (``Validation_Fault`` / ``Validation_Error`` with ``Message``, ``Detail_Message``, ``Xpath``;
  ``Processing_Fault``). ``Response_Filter`` ``Page``/``Count`` (Count <= 999) pages ``Get_*`` answers,
  ``Response_Results`` gives ``Total_Results``/``Total_Pages``/``Page``; ``Transaction_Log_Criteria_Data`` filters
  by update moment; ``Request_References`` fault on an unknown ID unless ``Skip_Non_Existing_Instances="true"``.
  Journals must balance per currency (and in ledger amounts), name known ledger accounts and fall in an open
  period; a reference ID (``Accounting_Journal_ID``, ``Customer_Invoice_ID``) already in use is refused.
- ``GET /ccx/service/customreport2/<tenant>/<owner>/<report>?format=json&Company=...`` (HTTP Basic, the same ISU):
  ``LB_Trial_Balance`` (posted journal lines per company, period, ledger account, currency) and
  ``LB_Period_Status`` (period status per company), JSON ``{"Report_Entry": [...]}``, not paged.

Throttling (Workday publishes no figures): ``rate_limit`` calls per ``rate_window`` seconds and ``concurrency``
in flight; over either -> HTTP 503 with ``Retry-After`` and a ``Server`` fault. ``hold_after=N``: journal
submissions after the N-th are applied, then their answer is held until ``app.state.release`` is set (kill tests).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import math
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree
from lxml.builder import ElementMaker

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = "Workday SOAP web services (WS-Security, paging, transaction log, faults) and RaaS JSON reports"

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WD_NS = "urn:com.workday/bsvc"
NS = {"env": SOAP_NS, "wsse": WSSE_NS, "wd": WD_NS}
WD_TYPE = f"{{{WD_NS}}}type"
E = ElementMaker(namespace=SOAP_NS, nsmap={"SOAP-ENV": SOAP_NS})
WD = ElementMaker(namespace=WD_NS, nsmap={"wd": WD_NS})
OPERATIONS = {
    "Financial_Management": {"Submit_Accounting_Journal", "Import_Accounting_Journal", "Get_Journals"},
    "Integrations": {"Get_Import_Process_Messages"},
    "Resource_Management": {"Get_Projects"},
    "Revenue_Management": {"Put_Customer", "Submit_Customer_Invoice", "Get_Customer_Invoices"},
}
DEFAULT_ACCOUNTS = ("1000", "1100", "1200", "2000", "2100", "2200", "2300", "3000", "4000", "4100", "4200", "4300",
                    "5000", "5100", "5200", "6000", "7000")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


class Fault(Exception):
    def __init__(self, kind: str, message: str, *, xpath: str = "", status: int = 500) -> None:
        super().__init__(message)
        self.kind = kind  # validation | processing | authentication | server
        self.message = message
        self.xpath = xpath
        self.status = status


def fault_xml(f: Fault) -> bytes:
    codes = {"validation": ("SOAP-ENV:Client.validationError", "Validation error occurred. "),
             "processing": ("SOAP-ENV:Client.processingError", "Processing error occurred. "),
             "authentication": ("SOAP-ENV:Client.authenticationError", ""),
             "server": ("SOAP-ENV:Server", "")}
    code, prefix = codes[f.kind]
    fault = E.Fault()
    fault.append(etree.Element("faultcode"))
    fault[-1].text = code
    fault.append(etree.Element("faultstring"))
    fault[-1].text = prefix + f.message
    if f.kind == "validation":
        detail = etree.SubElement(fault, "detail")
        detail.append(WD.Validation_Fault(WD.Validation_Error(WD.Message(f.message), WD.Detail_Message(f.message),
                                                              WD.Xpath(f.xpath))))
    elif f.kind == "processing":
        detail = etree.SubElement(fault, "detail")
        detail.append(WD.Processing_Fault(WD.Detail_Message(f.message)))
    return etree.tostring(E.Envelope(E.Body(fault)), xml_declaration=True, encoding="UTF-8")


def ref(element: str, *ids: tuple[str, str]) -> etree._Element:
    el = getattr(WD, element)()
    for id_type, value in ids:
        i = WD.ID(value)
        i.set(WD_TYPE, id_type)
        el.append(i)
    return el


def txt(el: etree._Element | None, path: str) -> str | None:
    found = el.find(path, NS) if el is not None else None
    return None if found is None or found.text is None else found.text.strip()


def ref_value(el: etree._Element | None, path: str, id_type: str) -> str | None:
    r = el.find(path, NS) if el is not None else None
    if r is None:
        return None
    for i in r.findall("wd:ID", NS):
        if i.get(WD_TYPE) == id_type:
            return (i.text or "").strip()
    return None


def dec(value: str | None, xpath: str) -> Decimal:
    try:
        d = Decimal(value or "0")
    except InvalidOperation:
        raise Fault("validation", f"'{value}' is not a valid decimal", xpath=xpath) from None
    if not d.is_finite():
        raise Fault("validation", f"'{value}' is not a valid decimal", xpath=xpath)
    return d


def day(value: str | None, xpath: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value or "")
    except ValueError:
        raise Fault("validation", f"'{value}' is not a valid date", xpath=xpath) from None


def moment(value: str | None, xpath: str) -> dt.datetime:
    try:
        m = dt.datetime.fromisoformat(value or "")
    except ValueError:
        raise Fault("validation", f"'{value}' is not a valid dateTime", xpath=xpath) from None
    return m if m.tzinfo else m.replace(tzinfo=dt.UTC)


@dataclass
class Store:
    """The tenant's data. Test hooks: ``companies``, ``accounts``, ``periods``, ``customers``, ``projects``,
    ``journals``, ``invoices``; ``clock`` (UTC now) is injectable."""

    companies: dict[str, str] = field(default_factory=lambda: {"C-US01": "USD"})
    accounts: set[str] = field(default_factory=lambda: set(DEFAULT_ACCOUNTS))
    periods: dict[tuple[str, str], str] = field(default_factory=dict)  # (company, YYYY-MM) -> Open/Closed/Locked
    customers: set[str] | None = None  # None: any customer id accepted; a set: only these (Put_Customer adds)
    customer_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)  # WID -> journal
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # WID -> import background process
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    refs: dict[tuple[str, str], str] = field(default_factory=dict)  # (id type, value) -> WID
    clock: Any = field(default=lambda: dt.datetime.now(dt.UTC))
    lock: threading.Lock = field(default_factory=threading.Lock)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def period_status(self, company: str, period: str) -> str:
        return self.periods.get((company, period), "Open")

    def set_period(self, company: str, period: str, status: str) -> None:
        self.periods[(company, period)] = status

    def put_project(self, project_id: str, **data: Any) -> None:
        """Create or change a project; the change is logged at ``clock()`` (the transaction log)."""
        with self.lock:
            p = self.projects.setdefault(project_id, {"Project_ID": project_id, "updates": []})
            p.update(data)
            p["updates"].append(self.clock())

    def count_journals(self, key: str) -> int:
        return sum(1 for j in self.journals.values() if j["key"] == key)


def _paging(req: etree._Element) -> tuple[int, int]:
    page = int(txt(req, "wd:Response_Filter/wd:Page") or 1)
    count = int(txt(req, "wd:Response_Filter/wd:Count") or 100)
    if count < 1 or count > 999:
        raise Fault("validation", f"Count must be between 1 and 999, got {count}", xpath="Response_Filter/Count")
    if page < 1:
        raise Fault("validation", f"Page must be 1 or more, got {page}", xpath="Response_Filter/Page")
    return page, count


def _page_response(op: str, version: str, items: list[etree._Element], page: int, count: int) -> etree._Element:
    total = len(items)
    pages = max(1, math.ceil(total / count)) if total else 0
    chunk = items[(page - 1) * count: page * count]
    resp = getattr(WD, f"{op}_Response")(
        WD.Response_Filter(WD.Page(str(page)), WD.Count(str(count))),
        WD.Response_Results(WD.Total_Results(str(total)), WD.Total_Pages(str(pages)),
                            WD.Page_Results(str(len(chunk))), WD.Page(str(page))),
        WD.Response_Data(*chunk))
    resp.set(f"{{{WD_NS}}}version", version)
    return resp


def _lookup(store: Store, req: etree._Element, element: str, id_type: str) -> list[str] | None:
    """WIDs named in ``Request_References`` (None when the request has none)."""
    rr = req.find("wd:Request_References", NS)
    if rr is None:
        return None
    skip = rr.get(f"{{{WD_NS}}}Skip_Non_Existing_Instances") == "true"
    out: list[str] = []
    for r in rr.findall(f"wd:{element}", NS):
        for i in r.findall("wd:ID", NS):
            value = (i.text or "").strip()
            wid = store.refs.get((i.get(WD_TYPE) or "", value))
            if wid is None and (i.get(WD_TYPE) == "WID" and value in store.journals):
                wid = value
            if wid is None:
                if not skip:
                    raise Fault("validation", f"Invalid ID value.  '{value}' is not a valid ID value for type = "
                                f"'{i.get(WD_TYPE)}'", xpath=f"Request_References/{element}/ID")
                continue
            out.append(wid)
    return out


class Tenant:
    def __init__(self, store: Store, tenant: str, import_delay: float = 0.2) -> None:
        self.store = store
        self.tenant = tenant
        self.import_delay = import_delay

    def _data(self, req: etree._Element, kind: str) -> tuple[etree._Element, str | None, str]:
        """``<kind>_Data``, its reference ID (ours) and its known company, or a validation fault."""
        data = req.find(f"wd:{kind}_Data", NS)
        if data is None:
            raise Fault("validation", f"{kind}_Data is required", xpath=f"{kind}_Data")
        company = ref_value(data, "wd:Company_Reference", "Company_Reference_ID") or ""
        if company not in self.store.companies:
            raise Fault("validation", f"Invalid ID value.  '{company}' is not a valid ID value for type = "
                        "'Company_Reference_ID'", xpath=f"{kind}_Data/Company_Reference")
        return data, txt(data, f"wd:{kind}_ID"), company

    # ---------------------------------------------------------------- journals

    def submit_accounting_journal(self, req: etree._Element, version: str, auto: bool | None = None
                                  ) -> etree._Element:
        s = self.store
        data, key, company = self._data(req, "Accounting_Journal")
        acct_date = day(txt(data, "wd:Accounting_Date"), "Accounting_Journal_Data/Accounting_Date")
        status = s.period_status(company, acct_date.strftime("%Y-%m"))
        if status != "Open":
            raise Fault("validation", f"Accounting Date {acct_date} is in a closed period for company {company} "
                        f"(period status {status})", xpath="Accounting_Journal_Data/Accounting_Date")
        lines = []
        sums: dict[str, Decimal] = defaultdict(Decimal)
        ledger_sum = Decimal(0)
        for n, ln in enumerate(data.findall("wd:Journal_Entry_Line_Replacement_Data", NS), 1):
            where = f"Accounting_Journal_Data/Journal_Entry_Line_Replacement_Data[{n}]"
            account = ref_value(ln, "wd:Ledger_Account_Reference", "Ledger_Account_ID") or ""
            if account not in s.accounts:
                raise Fault("validation", f"Invalid ID value.  '{account}' is not a valid ID value for type = "
                            "'Ledger_Account_ID'", xpath=f"{where}/Ledger_Account_Reference")
            debit = dec(txt(ln, "wd:Debit_Amount"), f"{where}/Debit_Amount")
            credit = dec(txt(ln, "wd:Credit_Amount"), f"{where}/Credit_Amount")
            if debit < 0 or credit < 0 or (debit and credit):
                raise Fault("validation", "A journal line must have either a debit or a credit amount, not both and "
                            "not negative", xpath=where)
            currency = ref_value(ln, "wd:Currency_Reference", "Currency_ID") or s.companies[company]
            ldeb, lcred = txt(ln, "wd:Ledger_Debit_Amount"), txt(ln, "wd:Ledger_Credit_Amount")
            if ldeb is None and lcred is None and currency != s.companies[company]:
                raise Fault("validation", f"Ledger amounts are required on a {currency} line of a "
                            f"{s.companies[company]} company", xpath=where)
            ledger = (dec(ldeb, where), dec(lcred, where)) if ldeb is not None or lcred is not None else (debit, credit)
            sums[currency] += debit - credit
            ledger_sum += ledger[0] - ledger[1]
            worktags = [(i.get(WD_TYPE) or "", i.text or "") for w in ln.findall("wd:Worktags_Reference", NS)
                        for i in w.findall("wd:ID", NS)]
            lines.append({"order": txt(ln, "wd:Line_Order") or str(n), "account": account, "debit": debit,
                          "credit": credit, "currency": currency, "ledger_debit": ledger[0],
                          "ledger_credit": ledger[1], "memo": txt(ln, "wd:Memo") or "", "worktags": worktags})
        if len(lines) < 2:
            raise Fault("validation", "A journal needs at least two lines", xpath="Accounting_Journal_Data")
        off = {c: v for c, v in sums.items() if v != 0}
        if off or ledger_sum != 0:
            raise Fault("validation", f"Journal is out of balance: debits minus credits = {off or ledger_sum}",
                        xpath="Accounting_Journal_Data/Journal_Entry_Line_Replacement_Data")
        if auto is None:
            auto = txt(req, "wd:Business_Process_Parameters/wd:Auto_Complete") == "true"
        return self._create(s.journals, "Accounting_Journal", key, "JE", version, {
            "company": company, "date": acct_date, "status": "Posted" if auto else "Draft", "lines": lines,
            "currency": ref_value(data, "wd:Currency_Reference", "Currency_ID"),
            "memo": txt(data, "wd:Journal_Entry_Memo") or "", "updates": [s.clock()]})

    def _create(self, table: dict[str, dict[str, Any]], kind: str, key: str | None, prefix: str, version: str,
                record: dict[str, Any]) -> etree._Element:
        """Store a new object under a fresh WID and number, refusing a reference ID already in use; answer
        ``Submit_<kind>_Response`` with its reference."""
        s = self.store
        id_type = f"{kind}_ID"
        with s.lock:
            if key and (id_type, key) in s.refs:
                raise Fault("validation", f"The ID value '{key}' is already in use by another instance of {kind}",
                            xpath=f"{kind}_Data/{id_type}")
            wid = uuid.uuid4().hex
            number = f"{prefix}-{next(s._numbers):07d}"
            table[wid] = {"wid": wid, "key": key or number, "number": number, **record}
            if key:
                s.refs[(id_type, key)] = wid
        resp = getattr(WD, f"Submit_{kind}_Response")(ref(f"{kind}_Reference", ("WID", wid), (id_type, key or number)))
        resp.set(f"{{{WD_NS}}}version", version)
        return resp

    def import_accounting_journal(self, req: etree._Element, version: str) -> etree._Element:
        """A background process: answered at once with its reference; the journals are applied (each validated
        alone, failures kept as process messages) ``import_delay`` seconds later."""
        s = self.store
        items = req.findall("wd:Accounting_Journal", NS)
        if not items:
            raise Fault("validation", "At least one Accounting_Journal is required", xpath="Accounting_Journal")
        wid = uuid.uuid4().hex
        process: dict[str, Any] = {"status": "In Progress", "messages": []}
        s.processes[wid] = process

        def run() -> None:
            for n, item in enumerate(items, 1):
                try:
                    self.submit_accounting_journal(item, version, auto=True)
                except Fault as f:
                    process["messages"].append({
                        "key": txt(item, "wd:Accounting_Journal_Data/wd:Accounting_Journal_ID") or "",
                        "message": f.message, "xpath": f"Accounting_Journal[{n}]/{f.xpath}"})
            process["status"] = "Completed with Errors" if process["messages"] else "Completed"

        threading.Timer(self.import_delay, run).start()
        resp = WD.Import_Accounting_Journal_Response(ref("Import_Process_Reference", ("WID", wid)))
        resp.set(f"{{{WD_NS}}}version", version)
        return resp

    def get_import_process_messages(self, req: etree._Element, version: str) -> etree._Element:
        s = self.store
        items = []
        for r in req.findall("wd:Request_References/wd:Import_Process_Reference", NS):
            wid = next(((i.text or "").strip() for i in r.findall("wd:ID", NS) if i.get(WD_TYPE) == "WID"), "")
            process = s.processes.get(wid)
            if process is None:
                raise Fault("validation", f"Invalid ID value.  '{wid}' is not a valid ID value for type = 'WID'",
                            xpath="Request_References/Import_Process_Reference")
            data = WD.Import_Process_Data(WD.Status(process["status"]))
            for m in list(process["messages"]):
                data.append(WD.Import_Process_Message(WD.Severity("ERROR"), WD.Message_Summary(m["message"]),
                                                      WD.Reference_ID(m["key"]), WD.Xpath(m["xpath"])))
            items.append(WD.Import_Process(ref("Import_Process_Reference", ("WID", wid)), data))
        return _page_response("Get_Import_Process_Messages", version, items, 1, 999)

    def get_journals(self, req: etree._Element, version: str) -> etree._Element:
        s = self.store
        page, count = _paging(req)
        wids = _lookup(s, req, "Journal_Reference", "Accounting_Journal_ID")
        if wids is None:
            company = ref_value(req, "wd:Request_Criteria/wd:Company_Reference", "Company_Reference_ID")
            wids = [w for w, j in s.journals.items() if company in (None, j["company"])]
        items = []
        for wid in wids:
            j = s.journals[wid]
            data = WD.Journal_Data(
                WD.Accounting_Journal_ID(j["key"]), WD.Journal_Number(j["number"]),
                ref("Company_Reference", ("Company_Reference_ID", j["company"])),
                WD.Accounting_Date(j["date"].isoformat()), WD.Journal_Status(j["status"]),
                WD.Journal_Entry_Memo(j["memo"]))
            for ln in j["lines"]:
                data.append(WD.Journal_Entry_Line_Data(
                    WD.Line_Order(ln["order"]), ref("Ledger_Account_Reference", ("Ledger_Account_ID", ln["account"])),
                    WD.Debit_Amount(f"{ln['debit']:f}"), WD.Credit_Amount(f"{ln['credit']:f}"),
                    ref("Currency_Reference", ("Currency_ID", ln["currency"])),
                    WD.Ledger_Debit_Amount(f"{ln['ledger_debit']:f}"),
                    WD.Ledger_Credit_Amount(f"{ln['ledger_credit']:f}"), WD.Memo(ln["memo"]),
                    *[ref("Worktags_Reference", w) for w in ln["worktags"]]))
            items.append(WD.Journal(ref("Journal_Reference", ("WID", wid), ("Accounting_Journal_ID", j["key"])),
                                    data))
        return _page_response("Get_Journals", version, items, page, count)

    # ---------------------------------------------------------------- invoices

    def submit_customer_invoice(self, req: etree._Element, version: str) -> etree._Element:
        s = self.store
        data, key, company = self._data(req, "Customer_Invoice")
        customer = ref_value(data, "wd:Customer_Reference", "Customer_Reference_ID") or ""
        if s.customers is not None and customer not in s.customers:
            raise Fault("validation", f"Invalid ID value.  '{customer}' is not a valid ID value for type = "
                        "'Customer_Reference_ID'", xpath="Customer_Invoice_Data/Customer_Reference")
        inv_date = day(txt(data, "wd:Invoice_Date"), "Customer_Invoice_Data/Invoice_Date")
        if s.period_status(company, inv_date.strftime("%Y-%m")) != "Open":
            raise Fault("validation", f"Invoice Date {inv_date} is in a closed period for company {company}",
                        xpath="Customer_Invoice_Data/Invoice_Date")
        net = tax = Decimal(0)
        lines = data.findall("wd:Customer_Invoice_Line_Replacement_Data", NS)
        if not lines:
            raise Fault("validation", "An invoice needs at least one line", xpath="Customer_Invoice_Data")
        for n, ln in enumerate(lines, 1):
            net += dec(txt(ln, "wd:Extended_Amount"), f"Customer_Invoice_Line_Replacement_Data[{n}]/Extended_Amount")
            tax += dec(txt(ln, "wd:Tax_Amount"), f"Customer_Invoice_Line_Replacement_Data[{n}]/Tax_Amount")
        auto = txt(req, "wd:Business_Process_Parameters/wd:Auto_Complete") == "true"
        return self._create(s.invoices, "Customer_Invoice", key, "CI", version, {
            "company": company, "customer": customer, "date": inv_date, "net": net, "tax": tax,
            "currency": ref_value(data, "wd:Currency_Reference", "Currency_ID"),
            "status": "Approved" if auto else "Draft", "payment": "Unpaid"})

    def put_customer(self, req: etree._Element, version: str) -> etree._Element:
        """Upsert on ``Customer_Reference_ID``; ``Add_Only="true"`` refuses an existing customer."""
        s = self.store
        data = req.find("wd:Customer_Data", NS)
        cid = txt(data, "wd:Customer_Reference_ID") if data is not None else None
        if not cid or not txt(data, "wd:Customer_Name"):
            raise Fault("validation", "Customer_Reference_ID and Customer_Name are required", xpath="Customer_Data")
        with s.lock:
            if req.get(f"{{{WD_NS}}}Add_Only") == "true" and cid in s.customer_records:
                raise Fault("validation", f"The ID value '{cid}' is already in use by another instance of Customer",
                            xpath="Customer_Data/Customer_Reference_ID")
            s.customer_records[cid] = {"name": txt(data, "wd:Customer_Name"), "updates": [s.clock()],
                                       "currency": ref_value(data, "wd:Default_Currency_Reference", "Currency_ID")}
            if s.customers is not None:
                s.customers.add(cid)
        resp = WD.Put_Customer_Response(ref("Customer_Reference", ("Customer_Reference_ID", cid)))
        resp.set(f"{{{WD_NS}}}version", version)
        return resp

    def get_customer_invoices(self, req: etree._Element, version: str) -> etree._Element:
        s = self.store
        page, count = _paging(req)
        wids = _lookup(s, req, "Customer_Invoice_Reference", "Customer_Invoice_ID")
        items = []
        for wid in (wids if wids is not None else list(s.invoices)):
            i = s.invoices[wid]
            items.append(WD.Customer_Invoice(
                ref("Customer_Invoice_Reference", ("WID", wid), ("Customer_Invoice_ID", i["key"])),
                WD.Customer_Invoice_Data(
                    WD.Customer_Invoice_ID(i["key"]), WD.Invoice_Number(i["number"]),
                    ref("Company_Reference", ("Company_Reference_ID", i["company"])),
                    ref("Customer_Reference", ("Customer_Reference_ID", i["customer"])),
                    WD.Invoice_Date(i["date"].isoformat()), WD.Invoice_Status(i["status"]),
                    WD.Payment_Status(i["payment"]),
                    WD.Total_Invoice_Amount_Before_Tax(f"{i['net']:f}"), WD.Tax_Amount(f"{i['tax']:f}"),
                    WD.Total_Invoice_Amount(f"{i['net'] + i['tax']:f}"))))
        return _page_response("Get_Customer_Invoices", version, items, page, count)

    # ---------------------------------------------------------------- projects

    def get_projects(self, req: etree._Element, version: str) -> etree._Element:
        s = self.store
        page, count = _paging(req)
        log = req.find("wd:Request_Criteria/wd:Transaction_Log_Criteria_Data/wd:Transaction_Date_Range_Data", NS)
        lo = hi = None
        if log is not None:
            base = "Request_Criteria/Transaction_Log_Criteria_Data/Transaction_Date_Range_Data"
            lo = moment(txt(log, "wd:Updated_From"), f"{base}/Updated_From")
            hi = moment(txt(log, "wd:Updated_Through"), f"{base}/Updated_Through")
            if hi < lo:
                raise Fault("validation", "Updated_Through must not be before Updated_From", xpath=base)
        items = []
        for pid in sorted(s.projects):
            p = s.projects[pid]
            if lo is not None and hi is not None and not any(lo <= u <= hi for u in p["updates"]):
                continue
            data = WD.Project_Data(WD.Project_ID(pid), WD.Project_Name(p.get("name", pid)),
                                   ref("Company_Reference", ("Company_Reference_ID", p.get("company", "C-US01"))),
                                   ref("Customer_Reference", ("Customer_Reference_ID", p.get("customer", ""))),
                                   ref("Currency_Reference", ("Currency_ID", p.get("currency", "USD"))),
                                   WD.Start_Date(str(p.get("start", "2026-01-01"))),
                                   WD.Inactive("true" if p.get("inactive") else "false"),
                                   WD.Billing_Type(p.get("billing_type", "Time and Materials")))
            if p.get("cost_center"):
                data.append(ref("Cost_Center_Reference", ("Cost_Center_Reference_ID", p["cost_center"])))
            items.append(WD.Project(ref("Project_Reference", ("Project_ID", pid)), data))
        return _page_response("Get_Projects", version, items, page, count)

    # ---------------------------------------------------------------- RaaS

    def report(self, name: str, company: str) -> list[dict[str, Any]]:
        s = self.store
        if name == "LB_Period_Status":  # the fiscal years 2025-2027, monthly periods
            months = sorted({f"{y}-{m:02d}" for y in (2025, 2026, 2027) for m in range(1, 13)}
                            | {p for c, p in s.periods if c == company})
            return [{"Company": company, "Period": p, "Status": s.period_status(company, p)} for p in months]
        totals: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for j in s.journals.values():
            if j["company"] != company or j["status"] != "Posted":
                continue
            for ln in j["lines"]:
                t = totals[(j["date"].strftime("%Y-%m"), ln["account"], ln["currency"])]
                t[0] += ln["debit"]
                t[1] += ln["credit"]
        return [{"Company": company, "Period": p, "Ledger_Account": a, "Currency": c, "Debit": f"{d:f}",
                 "Credit": f"{cr:f}"} for (p, a, c), (d, cr) in sorted(totals.items())]


def create_app(*, tenant: str = "acme", user: str = "ISU_ledgerbridge", password: str = "lb-workday-demo",
               report_owner: str = "ISU_ledgerbridge", rate_limit: int | None = None, rate_window: float = 1.0,
               concurrency: int | None = None, retry_after: float = 1.0, hold_after: int | None = None,
               import_delay: float = 0.2, **_: Any) -> FastAPI:
    store = Store()
    tenant_api = Tenant(store, tenant, import_delay)
    app = FastAPI(title="Workday sandbox")
    app.state.store = store
    app.state.calls = CallLog()
    app.state.limits = RateWindow(limit=rate_limit, window=rate_window, concurrency=concurrency)
    app.state.release = threading.Event()
    app.state.submits = 0
    app.state.banner = (f"Workday sandbox: tenant {tenant!r}, ISU {user}@{tenant} / password {password!r}, "
                        f"company C-US01 (USD), RaaS owner {report_owner!r} (LB_Trial_Balance, LB_Period_Status)")
    handlers = {"Submit_Accounting_Journal": tenant_api.submit_accounting_journal,
                "Get_Journals": tenant_api.get_journals,
                "Import_Accounting_Journal": tenant_api.import_accounting_journal,
                "Get_Import_Process_Messages": tenant_api.get_import_process_messages,
                "Put_Customer": tenant_api.put_customer,
                "Submit_Customer_Invoice": tenant_api.submit_customer_invoice,
                "Get_Customer_Invoices": tenant_api.get_customer_invoices,
                "Get_Projects": tenant_api.get_projects}

    def xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(body, status_code=status, media_type="text/xml; charset=utf-8", headers=headers)

    @app.post("/ccx/service/{tenant_name}/{service}/{version}")
    async def soap(tenant_name: str, service: str, version: str, request: Request) -> Response:
        path = f"/ccx/service/{tenant_name}/{service}/{version}"
        op = "?"
        wait = app.state.limits.try_acquire()
        if wait is not None:
            app.state.calls.add("POST", f"{path}#throttled", 503)
            return xml(fault_xml(Fault("server", "Service unavailable: too many requests for this tenant")), 503,
                       {"Retry-After": f"{max(retry_after, math.ceil(wait * 10) / 10):g}"})
        try:
            try:
                if service not in OPERATIONS or not version.startswith("v"):
                    raise Fault("processing", f"Invalid request service {service}/{version}", status=500)
                try:
                    root = etree.fromstring(await request.body(), _PARSER)
                except etree.XMLSyntaxError as exc:
                    raise Fault("validation", f"The request is not well-formed XML: {exc}") from None
                token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
                if (tenant_name != tenant or token is None or txt(token, "wsse:Username") != f"{user}@{tenant}"
                        or txt(token, "wsse:Password") != password):
                    raise Fault("authentication", "invalid username or password")
                body = root.find("env:Body", NS)
                if body is None or len(body) == 0:
                    raise Fault("validation", "The SOAP body is empty")
                req = body[0]
                op = etree.QName(req).localname.removesuffix("_Request")
                if op not in OPERATIONS[service]:
                    raise Fault("processing", f"Operation {op} is not part of service {service}")
                answer = handlers[op](req, req.get(f"{{{WD_NS}}}version") or version)
                if op == "Submit_Accounting_Journal":
                    app.state.submits += 1
                    if hold_after is not None and app.state.submits > hold_after:
                        while not app.state.release.is_set():  # applied; the answer waits (kill tests)
                            await asyncio.sleep(0.02)
                out = etree.tostring(E.Envelope(E.Body(answer)), xml_declaration=True, encoding="UTF-8")
                app.state.calls.add("POST", f"{path}#{op}", 200)
                return xml(out)
            except Fault as f:
                app.state.calls.add("POST", f"{path}#{op}", f.status)
                return xml(fault_xml(f), f.status)
        finally:
            app.state.limits.release()

    @app.get("/ccx/service/customreport2/{tenant_name}/{owner}/{report}")
    async def raas(tenant_name: str, owner: str, report: str, request: Request) -> Response:
        path = f"/ccx/service/customreport2/{tenant_name}/{owner}/{report}"
        auth = request.headers.get("authorization", "")
        ok = False
        if auth.startswith("Basic "):
            with_user = base64.b64decode(auth[6:]).decode("utf-8", "replace")
            ok = with_user == f"{user}@{tenant}:{password}"
        if not ok or tenant_name != tenant:
            app.state.calls.add("GET", path, 401)
            return Response("Unauthorized", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Workday"'})
        if owner != report_owner or report not in ("LB_Trial_Balance", "LB_Period_Status"):
            app.state.calls.add("GET", path, 404)
            return Response("Report not found", status_code=404)
        if request.query_params.get("format") != "json":
            app.state.calls.add("GET", path, 400)
            return Response("this sandbox serves format=json", status_code=400)
        company = request.query_params.get("Company")
        if not company:
            app.state.calls.add("GET", path, 400)
            return Response("Prompt Company is required", status_code=400)
        app.state.calls.add("GET", path, 200)
        return JSONResponse({"Report_Entry": tenant_api.report(report, company)})

    return app
