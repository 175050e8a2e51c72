"""SAP S/4HANA Cloud sandbox: the journal-entry SOAP services, OData v2 reads, enterprise projects and timesheets,
as the vendor facts describe them (docs/connectors/sap-s4hana.md; reference/vendors/07-sap-s4hana-cloud.md).

- Auth: basic (communication user) or OAuth client credentials at ``/sap/bc/sec/oauth2/token`` (``token_ttl``).
- CSRF: ``GET`` with ``x-csrf-token: Fetch`` opens a session (cookie ``SAP_SESSIONID_S4H_100``) and returns its
  token; a modifying OData call without the session cookie and matching token gets ``403`` "CSRF token validation
  failed" (``x-csrf-token: Required``). Sessions expire after ``session_ttl`` s; ``csrf_rotate_after=N`` invalidates
  a session after N writes (SAP logs sessions out; clients must fetch again).
- SOAP ``JournalEntryCreateRequestConfirmation_In`` (synchronous): lxml-parsed ``JournalEntryBulkCreateRequest``;
  each journal is validated (company code, G/L accounts, debit/credit code vs sign, one currency, balance, posting
  period open, 16-character ``DocumentReferenceID``) and answered in a ``JournalEntryBulkCreateConfirmation`` with
  ``AccountingDocument`` and ``Log`` — always HTTP 200, errors only in the log. Duplicate references are *not*
  refused (SAP does not), so a client that does not look up first posts twice.
- SOAP ``JournalEntryBulkCreationRequest_In`` (asynchronous): 202, duplicate message ids dropped; the confirmation
  appears in the confirmation inbox (``/confirmation-inbox/<message id>``, standing in for the receiver of
  ``JournalEntryBulkCreateConfirmation_Out``) after ``async_delay`` polls.
- OData v2: ``API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic``, ``API_ENTERPRISE_PROJECT_SRV;v=0002/
  A_EnterpriseProject``, ``API_MANAGE_WORKFORCE_TIMESHEET/TimeSheetEntryCollection`` with ``$filter`` (eq/ne/ge/le/
  gt/lt, and/or, parentheses), ``$select``, ``$top``/``$skip`` and server paging (``page_size``, ``__next``).
  Timesheet traps: a POST without ``TimeSheetOperation`` answers 201 and saves nothing; ``gt``/``lt`` on
  ``TimeSheetDate`` are ignored (KBA 3744148); ``timesheet_noop=true`` makes every create a no-op.
- Faults: ``hold_after=N`` holds SOAP journal answers (after processing) once N documents exist, until
  ``app.state.release`` is set — a client killed meanwhile never sees the answer of what was created.

Test hooks: ``app.state.store`` (:class:`SapStore`), ``app.state.calls`` (:class:`CallLog`), ``app.state.limits``
(:class:`RateWindow`), ``app.state.release`` (``threading.Event``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from lxml import etree

from ledgerbridge.testing.sandbox import CallLog, RateWindow
from ledgerbridge.testing.sandboxes._erp_gate import install_gate

DESCRIPTION = "SAP S/4HANA Cloud: SOAP journal entries (sync + bulk async), OData v2 reads, CSRF, projects, timesheets"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SFIN_NS = "http://sap.com/xi/SAPSCORE/SFIN"
COOKIE = "SAP_SESSIONID_S4H_100"
#: a demo chart (YCOA-like G/L accounts) keyed by the engine's sample chart codes; tests use it as account_map
DEMO_ACCOUNT_MAP = {"1100": "12100000", "1200": "12600000", "2100": "21100000", "2200": "21200000",
                    "2300": "22000000", "2400": "21300000", "4000": "41000000", "4100": "41100000",
                    "4200": "41200000", "4300": "41300000", "5000": "51000000", "5100": "51100000",
                    "7900": "79000000"}


@dataclass
class SapStore:
    """The tenant's state. Seed it before a test: ``company_codes`` (code -> currency), ``gl_accounts``,
    ``closed_periods`` ((company code, "YYYY-MM")), ``persons`` (work agreements; empty = any), ``fx`` rates."""

    company_codes: dict[str, str] = field(default_factory=lambda: {"1010": "EUR", "1710": "USD", "1510": "GBP"})
    gl_accounts: set[str] = field(default_factory=lambda: set(DEMO_ACCOUNT_MAP.values()))
    closed_periods: set[tuple[str, str]] = field(default_factory=set)
    persons: set[str] = field(default_factory=set)
    fx: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)  # A_JournalEntryItemBasic rows
    doc_numbers: dict[tuple[str, int], int] = field(default_factory=dict)
    projects: list[dict[str, Any]] = field(default_factory=list)
    timesheets: list[dict[str, Any]] = field(default_factory=list)
    confirmations: dict[str, bytes] = field(default_factory=dict)
    confirmation_delay: dict[str, int] = field(default_factory=dict)
    seen_messages: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def documents(self, reference: str | None = None) -> set[tuple[str, str, int]]:
        """(company code, document, fiscal year) of the documents held (with ``reference`` if given)."""
        return {(r["CompanyCode"], r["AccountingDocument"], r["FiscalYear"]) for r in self.items
                if reference is None or r["DocumentReferenceID"] == reference}


# --------------------------------------------------------------------------------------------------- OData $filter

_TOKEN = re.compile(r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<dt>datetime(?:offset)?'[^']*')|(?P<str>'(?:[^']|'')*')"
                    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_/]*))")
_OPS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
        "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "lt": lambda a, b: a < b}
Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    pass


def parse_filter(text: str, *, ignored: frozenset[tuple[str, str]] = frozenset()) -> Predicate:
    """An OData v2 ``$filter`` as a predicate on stored rows. ``ignored`` (field, op) pairs always match — the
    way the timesheet API silently drops ``gt``/``lt`` on ``TimeSheetDate``."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise FilterError(f"invalid $filter near {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    at = [0]

    def peek() -> tuple[str, str] | None:
        return tokens[at[0]] if at[0] < len(tokens) else None

    def take() -> tuple[str, str]:
        tok = peek()
        if tok is None:
            raise FilterError("unexpected end of $filter")
        at[0] += 1
        return tok

    def literal(kind: str, raw: str) -> Any:
        if kind == "str":
            return raw[1:-1].replace("''", "'")
        if kind == "dt":
            return dt.date.fromisoformat(raw.split("'")[1][:10])
        if kind == "num":
            return Decimal(raw)
        if raw in ("true", "false"):
            return raw == "true"
        raise FilterError(f"expected a literal, got {raw!r}")

    def factor() -> Predicate:
        kind, raw = take()
        if kind == "lp":
            inner = expr()
            if take()[0] != "rp":
                raise FilterError("missing )")
            return inner
        if kind != "word":
            raise FilterError(f"expected a property, got {raw!r}")
        op = take()[1]
        if op not in _OPS:
            raise FilterError(f"unsupported operator {op!r}")
        value = literal(*take())
        if (raw, op) in ignored:
            return lambda row: True
        fn = _OPS[op]

        def pred(row: dict[str, Any], _f: str = raw) -> bool:
            got = row.get(_f)
            if got is None:
                return op == "ne"
            try:
                return bool(fn(got, value))
            except TypeError:
                return bool(fn(str(got), str(value)))
        return pred

    def chain(word: str, sub: Callable[[], Predicate], combine: Callable[[list[bool]], bool]) -> Predicate:
        parts = [sub()]
        while (tok := peek()) is not None and tok[1] == word:
            take()
            parts.append(sub())
        if len(parts) == 1:
            return parts[0]
        return lambda row: combine([p(row) for p in parts])

    def term() -> Predicate:
        return chain("and", factor, all)

    def expr() -> Predicate:
        return chain("or", term, any)

    pred = expr()
    if peek() is not None:
        raise FilterError(f"unexpected {peek()[1]!r} in $filter")  # type: ignore[index]
    return pred


_KEY_EQ = re.compile(r"(DocumentReferenceID|Project) eq '((?:[^']|'')*)'")


def _narrow(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Rows that can match a filter whose only alternatives (``or``) are key equalities — a set lookup first,
    so a lookup of 40 references does not compare every row 40 times (the predicate still decides)."""
    found = _KEY_EQ.findall(text)
    rest = re.sub(_KEY_EQ.pattern + r"(\s+or\s+)?", "", text)
    if not found or " or " in rest or len({f for f, _ in found}) != 1:
        return rows
    field_, values = found[0][0], {v.replace("''", "'") for _, v in found}
    return [r for r in rows if r.get(field_) in values]


def _odata_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dt.date):
        return f"/Date({int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000)})/"
    if isinstance(value, dict):
        return {k: _odata_value(v) for k, v in value.items()}
    return value


def _from_odata_date(value: Any) -> dt.date:
    text = str(value)
    if text.startswith("/Date("):
        return (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(text[6:].split(")")[0]))).date()
    return dt.date.fromisoformat(text[:10])


def _odata_error(status: int, code: str, message: str) -> Response:
    body = {"error": {"code": code, "message": {"lang": "en", "value": message},
                      "innererror": {"transactionid": uuid.uuid4().hex.upper(),
                                     "errordetails": [{"code": code, "message": message, "severity": "error"}]}}}
    return Response(json.dumps(body), status_code=status, media_type="application/json")


# --------------------------------------------------------------------------------------------------- SOAP


def _t(el: etree._Element | None, path: str) -> str:
    found = el.find(path) if el is not None else None
    return (found.text or "").strip() if found is not None else ""


def _fault(code: str, text: str) -> Response:
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap-env": SOAP_NS})
    fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP_NS}}}Body"), f"{{{SOAP_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap-env:{code}"
    etree.SubElement(fault, "faultstring").text = text
    return Response(etree.tostring(env, xml_declaration=True, encoding="UTF-8"), status_code=500,
                    media_type="text/xml")


def _post_journal(store: SapStore, je: etree._Element, now: dt.datetime) -> tuple[str, str, str, list[tuple]]:
    """Validate and post one JournalEntry element: (document or "0000000000", company code, year, log notes)."""
    cc = _t(je, "CompanyCode")
    ref = _t(je, "DocumentReferenceID")
    notes: list[tuple[str, int, str]] = []
    try:
        posting = dt.date.fromisoformat(_t(je, "PostingDate"))
    except ValueError:
        return "0000000000", cc, "", [("008(FINS_ACDOC_POST)", 3, f"Posting date {_t(je, 'PostingDate')!r} invalid")]
    year = str(posting.year)
    if cc not in store.company_codes:
        notes.append(("165(F5)", 3, f"Company code {cc} is not defined"))
    if len(ref) > 16:
        notes.append(("109(FINS_ACDOC_POST)", 3, f"Reference {ref} is longer than 16 characters"))
    items = je.findall("Item")
    if len(items) < 2:
        notes.append(("706(F5)", 3, "A journal entry needs at least two line items"))
    parsed = []
    for no, it in enumerate(items, 1):
        gl = _t(it, "GLAccount")
        amt_el = it.find("AmountInTransactionCurrency")
        try:
            amount = Decimal(_t(it, "AmountInTransactionCurrency"))
        except InvalidOperation:
            notes.append(("001(FINS_ACDOC_POST)", 3, f"Item {no}: amount is not a number"))
            continue
        cur = amt_el.get("currencyCode", "") if amt_el is not None else ""
        dc = _t(it, "DebitCreditCode")
        if gl not in store.gl_accounts:
            notes.append(("004(FH)", 3, f"G/L account {gl} is not defined in chart of accounts YCOA"))
        if (dc == "S" and amount < 0) or (dc == "H" and amount > 0) or dc not in ("S", "H"):
            notes.append(("050(FINS_ACDOC_POST)", 3, f"Item {no}: debit/credit code {dc!r} does not match the "
                                                     f"sign of {amount}"))
        company = it.find("AmountInCompanyCodeCurrency")
        parsed.append((no, it, gl, amount, cur, Decimal(company.text) if company is not None else None))
    currencies = {p[4] for p in parsed}
    if len(currencies) > 1:
        notes.append(("062(FINS_ACDOC_POST)", 3, f"Several transaction currencies in one entry: {sorted(currencies)}"))
    total = sum((p[3] for p in parsed), Decimal(0))
    if total != 0 and len(currencies) == 1:
        notes.append(("702(F5)", 3, f"Balance in transaction currency {next(iter(currencies))}: {total}"))
    if (cc, posting.strftime("%Y-%m")) in store.closed_periods:
        notes.append(("201(F5)", 3, f"Posting period {posting.month:03d} {posting.year} is not open"))
    ccy = store.company_codes.get(cc, "")
    rows = []
    for no, it, gl, amount, cur, company in parsed:
        if company is None:
            if cur == ccy:
                company = amount
            elif (cur, ccy) in store.fx:
                company = (amount * store.fx[(cur, ccy)]).quantize(Decimal("0.01"))
            else:
                notes.append(("301(SG105)", 3, f"No exchange rate from {cur} to {ccy} on {posting}"))
                continue
        aa = it.find("AccountAssignment")
        rows.append({"CompanyCode": cc, "FiscalYear": year, "FiscalPeriod": f"{posting.month:03d}",
                     "LedgerGLLineItem": f"{no:06d}", "Ledger": "0L", "GLAccount": gl, "DocumentReferenceID": ref,
                     "AccountingDocumentType": _t(je, "AccountingDocumentType"),
                     "AccountingDocumentHeaderText": _t(je, "DocumentHeaderText"),
                     "DocumentItemText": _t(it, "DocumentItemText"), "PostingDate": posting,
                     "DocumentDate": posting, "AmountInTransactionCurrency": amount, "TransactionCurrency": cur,
                     "AmountInCompanyCodeCurrency": company, "CompanyCodeCurrency": ccy,
                     "DebitCreditCode": _t(it, "DebitCreditCode"), "CostCenter": _t(aa, "CostCenter"),
                     "WBSElement": _t(aa, "WBSElement"), "ProfitCenter": _t(aa, "ProfitCenter"),
                     "AccountingDocumentCreationDate": now.date()})
    if any(s >= 3 for _, s, _ in notes):
        return "0000000000", cc, year, notes
    key = (cc, posting.year)
    store.doc_numbers[key] = store.doc_numbers.get(key, 100000000) + 1
    doc = f"{store.doc_numbers[key]:010d}"
    for r in rows:
        r["AccountingDocument"] = doc
    store.items.extend(rows)
    return doc, cc, year, [("614(RW)", 1, f"Document posted successfully: BKPFF {doc}{cc}{year} {ref}")]


def _confirmation(store: SapStore, request: etree._Element, now: dt.datetime) -> bytes:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap-env": SOAP_NS})
    etree.SubElement(env, f"{{{SOAP_NS}}}Header")
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    bulk = etree.SubElement(body, f"{{{SFIN_NS}}}JournalEntryBulkCreateConfirmation", nsmap={"n0": SFIN_NS})

    def header(parent: etree._Element, ref_id: str) -> None:
        h = etree.SubElement(parent, "MessageHeader")
        etree.SubElement(h, "ID").text = uuid.uuid4().hex.upper()
        etree.SubElement(h, "ReferenceID").text = ref_id
        etree.SubElement(h, "CreationDateTime").text = stamp

    header(bulk, _t(request, "MessageHeader/ID"))
    for req in request.findall("JournalEntryCreateRequest"):
        je = req.find("JournalEntry")
        doc, cc, year, notes = _post_journal(store, je, now) if je is not None else (
            "0000000000", "", "", [("001(SOAP)", 3, "JournalEntry missing")])
        conf = etree.SubElement(bulk, "JournalEntryCreateConfirmation")
        header(conf, _t(req, "MessageHeader/ID"))
        d = etree.SubElement(conf, "JournalEntryCreateConfirmation")
        etree.SubElement(d, "AccountingDocument").text = doc
        etree.SubElement(d, "CompanyCode").text = cc
        etree.SubElement(d, "FiscalYear").text = year
        log = etree.SubElement(conf, "Log")
        etree.SubElement(log, "MaximumSeverityCode").text = str(max((s for _, s, _ in notes), default=1))
        for type_id, sev, note in notes:
            item = etree.SubElement(log, "Item")
            etree.SubElement(item, "TypeID").text = type_id
            etree.SubElement(item, "SeverityCode").text = str(sev)
            etree.SubElement(item, "Note").text = note
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


async def _bulk_or_fault(request: Request) -> etree._Element | Response:
    """The request's ``JournalEntryBulkCreateRequest``, or the SOAP fault (HTTP 500) SAP answers instead."""
    try:
        root = etree.fromstring(await request.body(), parser=etree.XMLParser(resolve_entities=False,
                                                                            no_network=True))
    except etree.XMLSyntaxError as exc:
        return _fault("Client", f"Cannot read the request: {exc}")
    bulk = root.find(f"{{{SOAP_NS}}}Body/{{{SFIN_NS}}}JournalEntryBulkCreateRequest")
    if bulk is None:
        return _fault("Client", "Body does not hold a sfin:JournalEntryBulkCreateRequest")
    return bulk


# --------------------------------------------------------------------------------------------------- the app


def create_app(*, user: str = "COMM_USER_LB", password: str = "Welcome1!", client_id: str = "LB_CLIENT",
               client_secret: str = "lb-secret", token_ttl: float = 3600.0, session_ttl: float = 1800.0,
               csrf_rotate_after: int = 0, rate_limit: int | None = None, rate_window: float = 1.0,
               page_size: int = 1000, async_delay: int = 1, hold_after: int | None = None,
               timesheet_noop: bool = False) -> FastAPI:
    app = FastAPI(title="SAP S/4HANA Cloud sandbox")
    store = SapStore()
    calls = CallLog()
    limits = RateWindow(limit=rate_limit, window=rate_window)
    release = threading.Event()
    tokens = install_gate(app, user=user, password=password, client_id=client_id, client_secret=client_secret,
                          token_path="/sap/bc/sec/oauth2/token", token_ttl=token_ttl, limits=limits, calls=calls,
                          realm="SAP NetWeaver Application Server [S4H/100]")
    sessions: dict[str, dict[str, Any]] = {}  # session id -> {token, expires, writes}
    app.state.store, app.state.calls, app.state.limits, app.state.release = store, calls, limits, release
    app.state.options = {"token_ttl": token_ttl, "session_ttl": session_ttl, "csrf_rotate_after": csrf_rotate_after,
                         "timesheet_noop": timesheet_noop, "hold_after": hold_after}
    app.state.sessions, app.state.tokens = sessions, tokens
    app.state.banner = (f"basic auth: {user} / {password}; OAuth client credentials: {client_id} / {client_secret} at "
                        "/sap/bc/sec/oauth2/token; company codes 1010 (EUR), 1710 (USD), 1510 (GBP); "
                        "confirmation inbox: /confirmation-inbox")
    def session_of(request: Request) -> tuple[str, dict[str, Any]] | None:
        sid = request.cookies.get(COOKIE)
        s = sessions.get(sid or "")
        if s is None or s["expires"] < time.monotonic():
            return None
        return str(sid), s

    @app.api_route("/sap/opu/odata/sap/{rest:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def odata(rest: str, request: Request) -> Response:
        service, _, entity = rest.partition("/")
        if request.method == "GET":
            new_sid = token_ = None
            if request.headers.get("x-csrf-token", "").lower() == "fetch":
                found = session_of(request)
                if found is None:
                    new_sid = secrets.token_urlsafe(16)
                    sessions[new_sid] = {"token": secrets.token_urlsafe(18), "writes": 0,
                                         "expires": time.monotonic() + session_ttl}
                    found = (new_sid, sessions[new_sid])
                token_ = found[1]["token"]
            response = _read(service, entity.strip("/"), request) if entity.strip("/") else Response(
                json.dumps({"d": {"EntitySets": _SETS.get(service, [])}}), media_type="application/json")
            if token_ is not None:
                response.headers["x-csrf-token"] = token_
            if new_sid is not None:
                response.set_cookie(COOKIE, new_sid, path="/", httponly=True)
            return response
        found = session_of(request)
        if found is None or request.headers.get("x-csrf-token") != found[1]["token"]:
            return Response("CSRF token validation failed", status_code=403, media_type="text/plain",
                            headers={"x-csrf-token": "Required"})
        sid, sess = found
        sess["writes"] += 1
        if csrf_rotate_after and sess["writes"] >= csrf_rotate_after:
            sessions.pop(sid, None)  # this write is served; the next needs a new token
        try:
            body = json.loads(await request.body() or b"{}", parse_float=Decimal)
        except ValueError:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/020", "The request body is not valid JSON")
        return _write(service, entity.strip("/"), request.method, body)

    def _read(service: str, entity: str, request: Request) -> Response:
        q = request.query_params
        rows_all, ignored = _collection(service, entity)
        if rows_all is None:
            return _odata_error(404, "/IWBEP/CM_MGW_RT/021", f"Resource not found for segment '{entity}'")
        try:
            pred = parse_filter(q["$filter"], ignored=ignored) if q.get("$filter") else (lambda r: True)
        except FilterError as exc:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/004", str(exc))
        with store.lock:
            rows = [r for r in _narrow(rows_all, q.get("$filter", "")) if pred(r)]
        skip = int(q.get("$skip", 0))
        top = int(q["$top"]) if q.get("$top") else None
        limit = page_size if top is None else min(top, page_size)
        page = rows[skip:skip + limit]
        d: dict[str, Any] = {"results": [_project(r, q.get("$select")) for r in page]}
        if q.get("$inlinecount") == "allpages" and service != "API_MANAGE_WORKFORCE_TIMESHEET":
            d["__count"] = str(len(rows))
        more = len(rows) > skip + limit and (top is None or top > limit)
        if more:
            nq = {k: v for k, v in q.items() if k not in ("$skip", "$top")}
            nq["$skip"] = str(skip + limit)
            if top is not None:
                nq["$top"] = str(top - limit)
            d["__next"] = f"{request.url.path}?{urlencode(nq)}"
        return Response(json.dumps({"d": d}), media_type="application/json")

    def _project(row: dict[str, Any], select: str | None) -> dict[str, Any]:
        keep = row if not select else {k: row.get(k) for k in select.split(",")}
        return {k: _odata_value(v) for k, v in keep.items()}

    def _collection(service: str, entity: str) -> tuple[list[dict[str, Any]] | None, frozenset[tuple[str, str]]]:
        if service == "API_JOURNALENTRYITEMBASIC_SRV" and entity == "A_JournalEntryItemBasic":
            return store.items, frozenset()
        if service == "API_ENTERPRISE_PROJECT_SRV;v=0002" and entity == "A_EnterpriseProject":
            return store.projects, frozenset()
        if service == "API_MANAGE_WORKFORCE_TIMESHEET" and entity == "TimeSheetEntryCollection":
            return store.timesheets, frozenset({("TimeSheetDate", "gt"), ("TimeSheetDate", "lt")})
        return None, frozenset()

    def _write(service: str, entity: str, method: str, body: dict[str, Any]) -> Response:
        if method != "POST":
            return _odata_error(405, "/IWBEP/CM_MGW_RT/005", f"{method} is not supported on {entity} here")
        if service == "API_ENTERPRISE_PROJECT_SRV;v=0002" and entity == "A_EnterpriseProject":
            return _create_project(body)
        if service == "API_MANAGE_WORKFORCE_TIMESHEET" and entity == "TimeSheetEntryCollection":
            return _create_timesheet(body)
        return _odata_error(404, "/IWBEP/CM_MGW_RT/021", f"Resource not found for segment '{entity}'")

    def _create_project(body: dict[str, Any]) -> Response:
        missing = [k for k in ("Project", "ProjectDescription", "ProjectProfileCode", "CompanyCode",
                               "ProjectStartDate") if not body.get(k)]
        if missing:
            return _odata_error(400, "CNV_PE_API/001", f"Mandatory fields missing: {', '.join(missing)}")
        if body["CompanyCode"] not in store.company_codes:
            return _odata_error(400, "CNV_PE_API/014", f"Company code {body['CompanyCode']} does not exist")
        if len(str(body["Project"])) > 24:
            return _odata_error(400, "CNV_PE_API/020", "Project ID is longer than 24 characters")
        with store.lock:
            if any(p["Project"] == body["Project"] for p in store.projects):
                return _odata_error(400, "CNV_PE_API/011", f"Project {body['Project']} already exists")
            row = {**body, "ProjectUUID": str(uuid.uuid4()), "ProjectStartDate": _from_odata_date(
                body["ProjectStartDate"]), "ProcessingStatus": "00",
                "LastChangeDateTime": dt.datetime.now(dt.UTC).isoformat()}
            if body.get("ProjectEndDate"):
                row["ProjectEndDate"] = _from_odata_date(body["ProjectEndDate"])
            store.projects.append(row)
        return Response(json.dumps({"d": {k: _odata_value(v) for k, v in row.items()}}), status_code=201,
                        media_type="application/json")

    def _create_timesheet(body: dict[str, Any]) -> Response:
        echo = {**body, "TimeSheetRecord": body.get("TimeSheetRecord", "")}
        op = body.get("TimeSheetOperation")
        if not op or timesheet_noop:  # the documented trap: 201, nothing saved
            return Response(json.dumps({"d": _odata_value(echo)}), status_code=201, media_type="application/json")
        if op != "C":
            return _odata_error(400, "CATS_API/002", f"TimeSheetOperation {op!r} needs an existing TimeSheetRecord")
        person = str(body.get("PersonWorkAgreement", ""))
        if store.persons and person not in store.persons:
            return _odata_error(400, "CATS_API/010", f"Personnel assignment {person} does not exist")
        fields_ = dict(body.get("TimeSheetDataFields") or {})
        try:
            fields_["RecordedQuantity"] = Decimal(str(fields_.get("RecordedQuantity", "0")))
            day = _from_odata_date(body["TimeSheetDate"])
        except (InvalidOperation, KeyError, ValueError):
            return _odata_error(400, "CATS_API/003", "TimeSheetDate or RecordedQuantity invalid")
        with store.lock:
            record = f"{len(store.timesheets) + 1:012d}"
            row = {**body, "TimeSheetRecord": record, "TimeSheetDate": day, "TimeSheetOperation": "",
                   "TimeSheetDataFields": fields_,
                   "TimeSheetStatus": "30" if body.get("TimeSheetIsReleasedOnSave") else "10"}
            store.timesheets.append(row)
        return Response(json.dumps({"d": _odata_value(row)}), status_code=201, media_type="application/json")

    async def _hold_if_needed() -> None:
        if hold_after is not None and len(store.documents()) >= hold_after:
            await asyncio.to_thread(release.wait, 30.0)

    @app.post("/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfirmation_in")
    async def journal_sync(request: Request) -> Response:
        bulk = await _bulk_or_fault(request)
        if isinstance(bulk, Response):
            return bulk
        with store.lock:
            answer = _confirmation(store, bulk, dt.datetime.now(dt.UTC))
        await _hold_if_needed()
        return Response(answer, media_type="text/xml")

    @app.post("/sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest_in")
    async def journal_async(request: Request) -> Response:
        bulk = await _bulk_or_fault(request)
        if isinstance(bulk, Response):
            return bulk
        mid = _t(bulk, "MessageHeader/ID")
        with store.lock:
            if mid and mid not in store.seen_messages:  # duplicate message ids are dropped
                store.seen_messages.add(mid)
                store.confirmations[mid] = _confirmation(store, bulk, dt.datetime.now(dt.UTC))
                store.confirmation_delay[mid] = async_delay
        await _hold_if_needed()
        return Response(status_code=202)

    @app.get("/confirmation-inbox/{message_id}")
    def confirmation(message_id: str) -> Response:
        with store.lock:
            if message_id not in store.confirmations:
                return Response("no such message", status_code=404)
            if store.confirmation_delay.get(message_id, 0) > 0:
                store.confirmation_delay[message_id] -= 1
                return Response("not yet delivered", status_code=404)
            return Response(store.confirmations[message_id], media_type="text/xml")

    return app


_SETS = {"API_JOURNALENTRYITEMBASIC_SRV": ["A_JournalEntryItemBasic"],
         "API_ENTERPRISE_PROJECT_SRV;v=0002": ["A_EnterpriseProject", "A_EnterpriseProjectElement"],
         "API_MANAGE_WORKFORCE_TIMESHEET": ["TimeSheetEntryCollection"]}
