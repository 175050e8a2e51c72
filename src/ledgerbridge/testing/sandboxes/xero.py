"""Xero sandbox: the identity token endpoint, ``/connections`` and the Accounting API endpoints the Xero connector
uses, with Xero's envelopes, dates, limits, idempotency and batch-error behaviour (vendor facts:
shared/reference/vendors/10-xero-quickbooks-and-public-specs.md; shapes: the official OpenAPI, which the tests
validate every exchange against).

- ``POST /connect/token``: ``client_credentials`` (custom connection) and ``refresh_token`` (rotated on each use);
  access tokens live ``token_lifetime`` seconds. ``GET /connections``: the tenant(s) the token reaches.
- ``/api.xro/2.0/...``: Organisation, Accounts, TaxRates, TrackingCategories (+ Options), Contacts, ManualJournals,
  Invoices (ACCREC), Journals (the GL feed, ``offset``), Reports/TrialBalance. Answers carry ``Id``, ``Status``,
  ``ProviderName``, ``DateTimeUTC`` and the plural array; dates are ``/Date(ms+0000)/``.
- ``xero-tenant-id`` is required; ``If-Modified-Since`` filters on ``UpdatedDateUTC``; ``page`` pages by 100.
- Limits per tenant: ``calls_per_minute`` per ``window`` seconds, ``concurrency`` in flight, ``day_limit`` per
  ``day_window`` seconds, ``app_limit`` per window across tenants: 429 + ``Retry-After`` + ``X-Rate-Limit-Problem``
  (minute / concurrent / day / appminute); every answer carries ``X-MinLimit-Remaining``,
  ``X-DayLimit-Remaining``, ``X-AppMinLimit-Remaining``.
- ``Idempotency-Key``: same key + same request -> the stored answer (no second document); same key + another
  request -> 400.
- ``summarizeErrors=false``: 200 with every element, refused ones ``StatusAttributeString: ERROR`` and
  ``ValidationErrors``; otherwise any refused element -> 400 ``ValidationException`` with ``Elements`` and nothing
  saved.
- Lock dates: documents dated on or before ``PeriodLockDate`` / ``EndOfYearLockDate`` are refused.
- Test hooks on ``app.state``: ``store`` (seed accounts / tax rates / lock dates, inspect documents), ``calls``
  (CallLog), ``limits`` (RateWindows), ``hold`` (fault toggle ``hold_after``: the response to the Nth manual-journal
  write is held after it was saved, until ``app.state.release`` is set — a crash between "saved" and "answered").
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = "Xero Accounting API: OAuth2 client credentials/refresh, tenants, journals, invoices, limits, idempotency"
CLIENT_ID = "LBSANDBOXCLIENT"
CLIENT_SECRET = "sandbox-secret"
TENANT_ID = "6f3c1c7e-8d1e-4a55-9d2a-5b8f6a1d0c01"
PAGE = 100
MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


# --------------------------------------------------------------------------------------------------- formats


def ms(value: dt.date | dt.datetime) -> str:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return f"/Date({int(value.timestamp() * 1000)}+0000)/"


def parse_date(text: Any) -> dt.date | None:
    if not isinstance(text, str) or not text.strip():
        return None
    m = MS_DATE.match(text.strip())
    try:
        if m:
            return dt.datetime.fromtimestamp(int(m.group(1)) / 1000, tz=dt.UTC).date()
        return dt.datetime.fromisoformat(text.strip()[:19]).date()
    except ValueError:
        return None


def parse_since(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def now_utc() -> dt.datetime:
    t = dt.datetime.now(dt.UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def dec(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (ArithmeticError, ValueError, TypeError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):  # quantities and rates; money is written by _num
        return float(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _num(value: Decimal) -> Any:
    """Money in a JSON answer: Xero writes numbers; 2-decimal values survive a float round trip exactly as text."""
    return json.loads(format(value.quantize(Decimal("0.01")), "f"), parse_float=float)


# --------------------------------------------------------------------------------------------------- store


@dataclass
class XeroStore:
    """One organisation's books in memory (thread-safe through ``lock``)."""

    base_currency: str = "USD"
    name: str = "Ledgerbridge Sandbox Ltd"
    receivable_code: str = "1100"
    tax_code: str = "2300"
    period_lock: dt.date | None = None
    year_lock: dt.date | None = None
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> Account
    tax_rates: dict[str, dict[str, Any]] = field(default_factory=dict)  # TaxType -> TaxRate
    tracking: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> TrackingCategory
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    manual_journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    gl: list[dict[str, Any]] = field(default_factory=list)  # the Journals feed
    #: enabled currencies -> Xero's day rate (foreign units per 1 base unit), used when an invoice sends none
    currency_rates: dict[str, Decimal] = field(default_factory=lambda: {"EUR": Decimal("0.92"),
                                                                        "GBP": Decimal("0.79")})
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def add_account(self, code: str, name: str, type_: str = "EXPENSE", status: str = "ACTIVE") -> None:
        klass = {"BANK": "ASSET", "CURRENT": "ASSET", "FIXED": "ASSET", "CURRLIAB": "LIABILITY",
                 "LIABILITY": "LIABILITY", "EQUITY": "EQUITY", "REVENUE": "REVENUE", "SALES": "REVENUE",
                 "DIRECTCOSTS": "EXPENSE", "EXPENSE": "EXPENSE", "OVERHEADS": "EXPENSE"}.get(type_, "EXPENSE")
        self.accounts[code] = {"AccountID": str(uuid.uuid4()), "Code": code, "Name": name, "Type": type_,
                               "Status": status, "Class": klass, "TaxType": "NONE",
                               "UpdatedDateUTC": ms(now_utc())}

    def add_tax_rate(self, tax_type: str, name: str, rate: Decimal) -> None:
        self.tax_rates[tax_type] = {"Name": name, "TaxType": tax_type, "Status": "ACTIVE",
                                    "ReportTaxType": "OUTPUT" if rate else "NONE", "EffectiveRate": _num(rate),
                                    "DisplayTaxRate": _num(rate), "_rate": rate}

    def set_lock_dates(self, period: dt.date | None = None, year: dt.date | None = None) -> None:
        with self.lock:
            self.period_lock, self.year_lock = period, year

    def organisation(self) -> dict[str, Any]:
        org = {"OrganisationID": TENANT_ID, "Name": self.name, "LegalName": self.name, "Version": "GLOBAL",
               "OrganisationType": "COMPANY", "BaseCurrency": self.base_currency, "CountryCode": "US",
               "FinancialYearEndDay": 31, "FinancialYearEndMonth": 12, "ShortCode": "!lbsbx",
               "CreatedDateUTC": ms(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))}
        if self.period_lock:
            org["PeriodLockDate"] = ms(self.period_lock)
        if self.year_lock:
            org["EndOfYearLockDate"] = ms(self.year_lock)
        return org

    def locked_until(self) -> dt.date | None:
        return max((d for d in (self.period_lock, self.year_lock) if d), default=None)

    def option(self, category: str, name: str) -> bool:
        return any(c["Name"] == category and c["Status"] == "ACTIVE" and any(
            o["Name"] == name and o["Status"] == "ACTIVE" for o in c["Options"]) for c in self.tracking.values())

    def book(self, source_type: str, source_id: str, date: dt.date, reference: str,
             lines: Iterable[tuple[str, Decimal, str]]) -> None:
        """Append one GL journal (``Journals`` feed): lines of (account code, signed net amount, description)."""
        jl = []
        for code, amount, desc in lines:
            acct = self.accounts[code]
            jl.append({"JournalLineID": str(uuid.uuid4()), "AccountID": acct["AccountID"], "AccountCode": code,
                       "AccountType": acct["Type"], "AccountName": acct["Name"], "Description": desc,
                       "NetAmount": _num(amount), "GrossAmount": _num(amount), "TaxAmount": 0.0})
        self.gl.append({"JournalID": str(uuid.uuid4()), "JournalDate": ms(date), "JournalNumber": len(self.gl) + 1,
                        "CreatedDateUTC": ms(now_utc()), "Reference": reference, "SourceID": source_id,
                        "SourceType": source_type, "JournalLines": jl})

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"manual_journals": len(self.manual_journals), "invoices": len(self.invoices),
                    "contacts": len(self.contacts), "gl_journals": len(self.gl)}


def default_store(base_currency: str = "USD") -> XeroStore:
    s = XeroStore(base_currency=base_currency)
    for code, name, type_ in (("1000", "Cash at bank", "BANK"), ("1100", "Accounts receivable", "CURRENT"),
                              ("1200", "Unbilled receivables", "CURRENT"), ("2100", "Accrued payroll", "CURRLIAB"),
                              ("2200", "Accrued expenses", "CURRLIAB"), ("2300", "Sales tax / VAT payable", "CURRLIAB"),
                              ("4000", "Service revenue", "REVENUE"), ("4100", "Expense recoveries", "REVENUE"),
                              ("5000", "Labor cost", "DIRECTCOSTS"), ("5100", "Reimbursable expenses", "DIRECTCOSTS"),
                              ("6000", "Overheads", "OVERHEADS"), ("9999", "Old suspense", "EXPENSE")):
        s.add_account(code, name, type_)
    s.accounts["9999"]["Status"] = "ARCHIVED"
    s.add_tax_rate("NONE", "No tax", Decimal("0"))
    s.add_tax_rate("OUTPUT", "Standard 20%", Decimal("20"))
    return s


# --------------------------------------------------------------------------------------------------- app


class _Refused(Exception):
    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def create_app(*, calls_per_minute: int = 60, window: float = 60.0, concurrency: int = 5, day_limit: int = 5000,
               day_window: float = 86400.0, app_limit: int = 10000, token_lifetime: float = 1800.0,
               base_currency: str = "USD", latency: float = 0.0, hold_after: int = 0,
               provider: str = "ledgerbridge sandbox") -> FastAPI:
    app = FastAPI(title="Xero sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    store = default_store(base_currency)
    limits = {"minute": RateWindow(calls_per_minute, window, concurrency), "day": RateWindow(day_limit, day_window),
              "appminute": RateWindow(app_limit, window)}
    tokens: dict[str, float] = {}
    refresh_tokens: set[str] = {"sandbox-refresh-0"}
    idem: dict[str, tuple[str, int, Any]] = {}
    calls = CallLog()
    counters = {"mj_writes": 0, "token_calls": 0}
    hold, release = threading.Event(), threading.Event()
    limit_lock = threading.Lock()
    app.state.store, app.state.calls, app.state.limits = store, calls, limits
    app.state.hold, app.state.release, app.state.counters = hold, release, counters
    app.state.idempotency = idem
    faults = {"latency": latency}  # mutable by tests: app.state.faults["latency"] = 0.3
    app.state.faults = faults
    app.state.options = {"calls_per_minute": calls_per_minute, "window": window, "concurrency": concurrency,
                         "day_limit": day_limit, "token_lifetime": token_lifetime}
    app.state.banner = (f"client_id={CLIENT_ID} client_secret={CLIENT_SECRET} tenant_id={TENANT_ID}\n"
                        "token_url=<base>/connect/token connections_url=<base>/connections "
                        "api_url=<base>/api.xro/2.0")

    def revoke_tokens() -> None:
        tokens.clear()

    app.state.revoke_tokens = revoke_tokens

    def envelope(key: str, rows: list[Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": provider, "DateTimeUTC": ms(now_utc()),
                **(extra or {}), key: rows}

    def error(status: int, message: str, *, type_: str = "ValidationException", number: int = 10,
              elements: list[Any] | None = None) -> _Refused:
        body: dict[str, Any] = {"ErrorNumber": number, "Type": type_, "Message": message}
        if elements is not None:
            body["Elements"] = elements
        return _Refused(status, body)

    # ----------------------------------------------------------------- identity

    @app.post("/connect/token")
    async def token(request: Request) -> Response:
        counters["token_calls"] += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        auth = request.headers.get("authorization", "")
        cid, secret = form.get("client_id"), form.get("client_secret")
        if auth.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if (cid, secret) != (CLIENT_ID, CLIENT_SECRET):
            calls.add("POST", "/connect/token", 400)
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        grant = form.get("grant_type")
        out: dict[str, Any] = {}
        if grant == "refresh_token":
            if form.get("refresh_token") not in refresh_tokens:
                calls.add("POST", "/connect/token", 400)
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            refresh_tokens.discard(str(form["refresh_token"]))
            new = f"sandbox-refresh-{secrets.token_hex(8)}"
            refresh_tokens.add(new)
            out["refresh_token"] = new
        elif grant != "client_credentials":
            calls.add("POST", "/connect/token", 400)
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access = secrets.token_urlsafe(24)
        tokens[access] = time.monotonic() + token_lifetime
        calls.add("POST", "/connect/token", 200)
        return JSONResponse({"access_token": access, "expires_in": token_lifetime, "token_type": "Bearer",
                             "scope": form.get("scope", ""), **out})

    def authorised(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        tok = auth[7:] if auth.lower().startswith("bearer ") else ""
        expiry = tokens.get(tok)
        if expiry is None or expiry <= time.monotonic():
            detail = "TokenExpired: token expired" if expiry is not None else "AuthenticationUnsuccessful"
            raise _Refused(401, {"Type": None, "Title": "Unauthorized", "Status": 401, "Detail": detail},
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @app.get("/connections")
    def connections(request: Request) -> Response:
        try:
            authorised(request)
        except _Refused as r:
            calls.add("GET", "/connections", r.status)
            return JSONResponse(r.body, status_code=r.status, headers=r.headers)
        calls.add("GET", "/connections", 200)
        # the spec says date-time (RFC 3339, with a zone); its own example and live Xero omit the zone
        stamp = now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return JSONResponse([{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, TENANT_ID)), "tenantId": TENANT_ID,
                              "tenantType": "ORGANISATION", "tenantName": store.name,
                              "createdDateUtc": stamp, "updatedDateUtc": stamp}])

    # ----------------------------------------------------------------- limits

    def remaining(w: RateWindow) -> int:
        return max(0, int(w.limit or 0) - len(w._stamps))  # the window's own count

    def acquire() -> dict[str, str]:
        with limit_lock:
            w = limits["minute"]
            before = w.refused_concurrency
            wait = w.try_acquire()
            if wait is not None:
                problem = "concurrent" if w.refused_concurrency > before else "minute"
                raise _Refused(429, None, {"Retry-After": _retry(wait if problem == "minute" else min(1.0, window)),
                                           "X-Rate-Limit-Problem": problem})
            for name in ("day", "appminute"):
                wait = limits[name].try_acquire()
                limits[name].release()
                if wait is not None:
                    w.release()
                    raise _Refused(429, None, {"Retry-After": _retry(wait), "X-Rate-Limit-Problem": name})
            return {"X-MinLimit-Remaining": str(remaining(w)), "X-DayLimit-Remaining": str(remaining(limits["day"])),
                    "X-AppMinLimit-Remaining": str(remaining(limits["appminute"]))}

    def _retry(wait: float) -> str:
        # Xero sends whole seconds; a sandbox with a window below a minute scales down and sends a fraction
        return str(math.ceil(wait)) if window >= 60 else f"{max(wait, 0.01):.3f}"

    # ----------------------------------------------------------------- API dispatch

    @app.api_route("/api.xro/2.0/{path:path}", methods=["GET", "PUT", "POST"])
    async def api(path: str, request: Request) -> Response:
        body_bytes = await request.body()
        return await run_in_threadpool(serve, path, request, body_bytes)

    def serve(path: str, request: Request, body_bytes: bytes) -> Response:
        headers: dict[str, str] = {}
        acquired = False
        status = 500
        try:
            authorised(request)
            if request.headers.get("xero-tenant-id") != TENANT_ID:
                raise _Refused(403, {"Type": None, "Title": "Forbidden", "Status": 403,
                                     "Detail": "AuthenticationUnsuccessful: tenant not connected"})
            headers = acquire()
            acquired = True
            if faults["latency"]:
                time.sleep(faults["latency"])
            status, payload = handle(request.method, path, request, body_bytes)
        except _Refused as r:
            status, payload = r.status, r.body
            headers.update(r.headers)
        finally:
            if acquired:
                limits["minute"].release()
        calls.add(request.method, f"/api.xro/2.0/{path}", status)
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(_jsonable(payload), status_code=status, headers=headers)

    def handle(method: str, path: str, request: Request, raw: bytes) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        q = request.query_params
        if method == "GET":
            return 200, read(parts, q, parse_since(request.headers.get("if-modified-since")))
        key = request.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(f"{method} {path} {sorted(q.items())}".encode() + raw).hexdigest()
        if key:
            if len(key) > 128:
                raise error(400, "Idempotency-Key must be at most 128 characters")
            with store.lock:
                if key in idem:
                    fp, st, saved = idem[key]
                    if fp != fingerprint:
                        raise error(400, f"Idempotency key {key} has already been used with a different request")
                    return st, saved
        try:
            data = json.loads(raw or b"{}", parse_float=Decimal)
        except ValueError as exc:
            raise error(400, f"Invalid JSON: {exc}", type_="PostDataInvalidException", number=17) from exc
        summarize = q.get("summarizeErrors", "true").lower() != "false"
        with store.lock:
            try:
                st, saved = write(method, parts, data, summarize)
            except _Refused as r:
                st, saved = r.status, r.body
            if key:
                idem[key] = (fingerprint, st, saved)
        if parts == ["ManualJournals"] and st == 200 and hold_after:
            counters["mj_writes"] += 1
            if counters["mj_writes"] >= hold_after:
                hold.set()
                release.wait(60)
        if st >= 400:
            raise _Refused(st, saved)
        return st, saved

    # ----------------------------------------------------------------- reads

    def changed(rows: Iterable[dict[str, Any]], since: dt.datetime | None) -> list[dict[str, Any]]:
        out = [r for r in rows if since is None or parse_stamp(r["UpdatedDateUTC"]) > since]
        return sorted(out, key=lambda r: (parse_stamp(r["UpdatedDateUTC"]), str(next(iter(r.values())))))

    def paged(key: str, rows: list[dict[str, Any]], q: Mapping[str, str]) -> dict[str, Any]:
        if "page" not in q:
            return envelope(key, rows)
        page = max(1, int(q["page"]))
        size = min(1000, int(q.get("pageSize", PAGE)))
        chunk = rows[(page - 1) * size: page * size]
        return envelope(key, chunk, {"pagination": {"page": page, "pageSize": size, "itemCount": len(rows),
                                                    "pageCount": max(1, math.ceil(len(rows) / size))}})

    def read(parts: list[str], q: Mapping[str, str], since: dt.datetime | None) -> Any:
        with store.lock:
            name = parts[0]
            if name == "Organisation":
                return envelope("Organisations", [store.organisation()])
            if name == "Accounts":
                return envelope("Accounts", changed(store.accounts.values(), since))
            if name == "TaxRates":
                return envelope("TaxRates", [{k: v for k, v in r.items() if not k.startswith("_")}
                                             for r in store.tax_rates.values()])
            if name == "TrackingCategories":
                return envelope("TrackingCategories", [c for c in store.tracking.values()
                                                       if c["Status"] == "ACTIVE" or q.get("includeArchived")])
            if name in ("Contacts", "ManualJournals", "Invoices"):
                table = {"Contacts": store.contacts, "ManualJournals": store.manual_journals,
                         "Invoices": store.invoices}[name]
                return paged(name, changed(table.values(), since), q)
            if name == "Journals":
                offset = int(q.get("offset", 0))
                return envelope("Journals", [j for j in store.gl if j["JournalNumber"] > offset][:PAGE])
            if parts == ["Reports", "TrialBalance"]:
                return trial_balance(parse_date(q.get("date")) or now_utc().date())
        raise error(404, f"The resource {'/'.join(parts)} is not available in this sandbox", type_="NotFound",
                    number=404)

    def trial_balance(date: dt.date) -> dict[str, Any]:
        """Xero's Trial Balance report: one section per account class, each account's net movement of the month
        and net year-to-date balance shown on its debit or its credit side (as the report does)."""
        start, month = dt.date(date.year, 1, 1), date.replace(day=1)
        net: dict[str, list[Decimal]] = {}  # code -> [month net, ytd net]
        for j in store.gl:
            jd = parse_date(j["JournalDate"])
            if jd is None or not start <= jd <= date:
                continue
            for ln in j["JournalLines"]:
                cell = net.setdefault(ln["AccountCode"], [Decimal(0), Decimal(0)])
                amt = Decimal(str(ln["NetAmount"]))
                cell[1] += amt
                if jd >= month:
                    cell[0] += amt

        def sides(v: Decimal) -> list[str]:
            return [format(v, "f") if v > 0 else "", format(-v, "f") if v < 0 else ""]

        sections = []
        for klass, title in (("REVENUE", "Revenue"), ("EXPENSE", "Expenses"), ("ASSET", "Assets"),
                             ("LIABILITY", "Liabilities"), ("EQUITY", "Equity")):
            rows = []
            for code, (m, y) in sorted(net.items()):
                acct = store.accounts[code]
                if acct["Class"] != klass:
                    continue
                attr = [{"Value": acct["AccountID"], "Id": "account"}]
                rows.append({"RowType": "Row", "Cells": [{"Value": f"{acct['Name']} ({code})", "Attributes": attr}]
                             + [{"Value": v, "Attributes": attr} for v in sides(m) + sides(y)]})
            if rows:
                sections.append({"RowType": "Section", "Title": title, "Rows": rows})
        total_d = sum((v[1] for v in net.values() if v[1] > 0), Decimal(0))
        sections.append({"RowType": "Section", "Title": "", "Rows": [{"RowType": "SummaryRow", "Cells": [
            {"Value": "Total"}, {"Value": ""}, {"Value": ""}, {"Value": format(total_d, "f")},
            {"Value": format(total_d, "f")}]}]})
        title = ["Account", "Debit", "Credit", "YTD Debit", "YTD Credit"]
        return envelope("Reports", [{"ReportID": "TrialBalance", "ReportName": "Trial Balance",
                                     "ReportType": "TrialBalance", "ReportTitles": ["Trial Balance", store.name,
                                                                                    f"As at {date:%d %B %Y}"],
                                     "ReportDate": f"{date:%d %B %Y}", "UpdatedDateUTC": ms(now_utc()),
                                     "Rows": [{"RowType": "Header", "Cells": [{"Value": t} for t in title]},
                                              *sections]}])

    # ----------------------------------------------------------------- writes

    def write(method: str, parts: list[str], data: Any, summarize: bool) -> tuple[int, Any]:
        if parts == ["TrackingCategories"] and method == "PUT":
            return 200, envelope("TrackingCategories", [new_category(data)])
        if len(parts) == 3 and parts[0] == "TrackingCategories" and parts[2] == "Options" and method == "PUT":
            return 200, envelope("Options", new_options(parts[1], data))
        handlers: dict[str, Callable[[str, dict[str, Any]], tuple[dict[str, Any], list[str]]]] = {
            "Contacts": save_contact, "ManualJournals": save_journal, "Invoices": save_invoice}
        if len(parts) != 1 or parts[0] not in handlers:
            raise error(404, f"{method} {'/'.join(parts)} is not available in this sandbox", type_="NotFound",
                        number=404)
        name = parts[0]
        items = data.get(name) if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            items = [data] if isinstance(data, Mapping) and data else None
        if not items:
            raise error(400, f"The request body has no {name}", type_="PostDataInvalidException", number=17)
        results = [handlers[name](method, dict(item)) for item in items]
        if summarize and any(errs for _, errs in results):
            elements = [{**el, "ValidationErrors": [{"Message": m} for m in errs]} for el, errs in results]
            raise error(400, "A validation exception occurred", elements=elements)
        out = []
        for el, errs in results:
            if errs:
                out.append({**el, "StatusAttributeString": "ERROR",
                            "ValidationErrors": [{"Message": m} for m in errs]})
            else:
                out.append(commit(name, el))
        return 200, envelope(name, out)

    def commit(name: str, el: dict[str, Any]) -> dict[str, Any]:
        el = {**el, "UpdatedDateUTC": ms(now_utc()), "StatusAttributeString": "OK"}
        el.pop("_gl", None)
        if name == "Contacts":
            store.contacts[el["ContactID"]] = el
        elif name == "ManualJournals":
            store.manual_journals[el["ManualJournalID"]] = el
            if el["Status"] == "POSTED":
                store.book("MANJOURNAL", el["ManualJournalID"], parse_date(el["Date"]) or now_utc().date(),
                           el["Narration"][:100], [(ln["AccountCode"], Decimal(str(ln["LineAmount"])),
                                                    ln.get("Description", "")) for ln in el["JournalLines"]])
        else:
            if not el.get("InvoiceNumber"):
                counters["invoice_seq"] = counters.get("invoice_seq", 0) + 1
                el["InvoiceNumber"] = f"INV-{counters['invoice_seq']:04d}"
            store.invoices[el["InvoiceID"]] = el
            if el["Status"] == "AUTHORISED":
                rate = Decimal(str(el.get("CurrencyRate") or 1))
                gl = [(store.receivable_code, Decimal(str(el["Total"])) / rate, el["InvoiceNumber"])]
                gl += [(li["AccountCode"], -Decimal(str(li["LineAmount"])) / rate, li.get("Description", ""))
                       for li in el["LineItems"]]
                if Decimal(str(el["TotalTax"])):
                    gl.append((store.tax_code, -Decimal(str(el["TotalTax"])) / rate, "tax"))
                store.book("ACCREC", el["InvoiceID"], parse_date(el["Date"]) or now_utc().date(),
                           el["InvoiceNumber"], [(c, a.quantize(Decimal("0.01")), d) for c, a, d in gl])
        return el

    def new_category(data: Any) -> dict[str, Any]:
        name = str((data or {}).get("Name") or "").strip()
        if not name:
            raise error(400, "Tracking category name is required")
        if any(c["Name"] == name for c in store.tracking.values()):
            raise error(400, f"The tracking category name {name} already exists")
        if sum(1 for c in store.tracking.values() if c["Status"] == "ACTIVE") >= 2:
            raise error(400, "You can only have 2 active tracking categories")
        cat = {"TrackingCategoryID": str(uuid.uuid4()), "Name": name, "Status": "ACTIVE", "Options": []}
        store.tracking[cat["TrackingCategoryID"]] = cat
        return cat

    def new_options(cat_id: str, data: Any) -> list[dict[str, Any]]:
        cat = store.tracking.get(cat_id)
        if cat is None:
            raise error(404, f"Tracking category {cat_id} not found", type_="NotFound", number=404)
        name = str((data or {}).get("Name") or "").strip()
        if not name or len(name) > 100:
            raise error(400, "A tracking option name of 1 to 100 characters is required")
        if any(o["Name"] == name for o in cat["Options"]):
            raise error(400, f"The tracking option name {name} already exists in {cat['Name']}")
        opt = {"TrackingOptionID": str(uuid.uuid4()), "Name": name, "Status": "ACTIVE",
               "TrackingCategoryID": cat_id}
        cat["Options"].append(opt)
        return [opt]

    def lock_problem(date: dt.date | None) -> list[str]:
        if date is None:
            return ["A valid Date is required"]
        lock = store.locked_until()
        if lock is not None and date <= lock:
            which = "end of year lock date" if lock == store.year_lock else "period lock date"
            return [f"The document date cannot be before the {which} of {lock:%d %b %Y}"]
        return []

    def save_contact(method: str, c: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        errs: list[str] = []
        existing = store.contacts.get(str(c.get("ContactID"))) if c.get("ContactID") else None
        if c.get("ContactID") and existing is None:
            errs.append(f"Contact {c['ContactID']} not found")
        if method == "PUT" and c.get("ContactID"):
            errs.append("Use POST to update a contact")
        name = str(c.get("Name") or (existing or {}).get("Name") or "").strip()
        if not name:
            errs.append("The contact name must be specified")
        cid = (existing or {}).get("ContactID") or str(uuid.uuid4())
        for other in store.contacts.values():
            if other["ContactID"] == cid:
                continue
            if other["Name"] == name:
                errs.append(f"The contact name {name} is already assigned to another contact. The contact name must "
                            "be unique across all active contacts.")
            if c.get("AccountNumber") and other.get("AccountNumber") == c.get("AccountNumber"):
                errs.append("The Account Number already exists. Please enter a different Account Number.")
        el = {**(existing or {}), **{k: v for k, v in c.items() if k in (
            "Name", "AccountNumber", "ContactStatus", "DefaultCurrency", "IsCustomer", "EmailAddress")}}
        el.update({"ContactID": cid, "Name": name, "ContactStatus": el.get("ContactStatus", "ACTIVE")})
        return el, errs

    def save_journal(method: str, mj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        errs: list[str] = []
        if mj.get("ManualJournalID"):
            errs.append("Updating manual journals is not available in this sandbox")
        if not str(mj.get("Narration") or "").strip():
            errs.append("Narration must be specified")
        date = parse_date(mj.get("Date"))
        errs += lock_problem(date)
        lines = mj.get("JournalLines") or []
        if len(lines) < 2:
            errs.append("A manual journal must have at least two lines")
        total = Decimal(0)
        out_lines = []
        for n, ln in enumerate(lines, 1):
            amt = dec(ln.get("LineAmount"))
            code = str(ln.get("AccountCode") or "")
            acct = store.accounts.get(code)
            if amt is None:
                errs.append(f"Line {n}: LineAmount must be a number")
                continue
            if amt != amt.quantize(Decimal("0.01")):
                errs.append(f"Line {n}: LineAmount can have at most 2 decimal places")
            if acct is None:
                errs.append(f"Account code '{code}' is not a valid code for this document.")
            elif acct["Status"] != "ACTIVE":
                errs.append(f"The account {code} is archived and cannot be used.")
            tracking = ln.get("Tracking") or []
            if len(tracking) > 2:
                errs.append(f"Line {n}: at most 2 tracking categories")
            for t in tracking:
                if not store.option(str(t.get("Name")), str(t.get("Option"))):
                    errs.append(f"Tracking option '{t.get('Option')}' not found in category '{t.get('Name')}'")
            total += amt
            out_lines.append({"LineAmount": _num(amt), "AccountCode": code, "AccountID": (acct or {}).get(
                "AccountID", str(uuid.UUID(int=0))), "Description": str(ln.get("Description") or ""),
                "TaxType": "NONE", "TaxAmount": 0.0, "IsBlank": False,
                "Tracking": [{"Name": t.get("Name"), "Option": t.get("Option")} for t in tracking]})
        if total != 0:
            debits = sum((Decimal(str(x["LineAmount"])) for x in out_lines if x["LineAmount"] > 0), Decimal(0))
            errs.append(f"The total debits ({debits}) must equal total credits ({debits - total})")
        status = str(mj.get("Status") or "DRAFT")
        if status not in ("DRAFT", "POSTED"):
            errs.append(f"Status {status} cannot be set on create")
        el = {"ManualJournalID": str(uuid.uuid4()), "Narration": str(mj.get("Narration") or ""),
              "Date": ms(date) if date else None, "DateString": f"{date}T00:00:00" if date else None,
              "Status": status, "LineAmountTypes": mj.get("LineAmountTypes", "NoTax"),
              "ShowOnCashBasisReports": True, "HasAttachments": False, "JournalLines": out_lines}
        return {k: v for k, v in el.items() if v is not None}, errs

    def save_invoice(method: str, inv: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        errs: list[str] = []
        if inv.get("Type") != "ACCREC":
            errs.append("Only ACCREC invoices are available in this sandbox")
        contact = store.contacts.get(str((inv.get("Contact") or {}).get("ContactID")))
        if contact is None:
            errs.append("The Contact must contain at least 1 of the following elements to identify the contact: "
                        "Name, ContactID, ContactNumber")
        date = parse_date(inv.get("Date"))
        errs += lock_problem(date)
        currency = str(inv.get("CurrencyCode") or store.base_currency)
        rate_used = dec(inv.get("CurrencyRate")) or (Decimal(1) if currency == store.base_currency
                                                     else store.currency_rates.get(currency))
        if rate_used is None:
            errs.append(f"The currency {currency} is not enabled for this organisation")
            rate_used = Decimal(1)
        sub = tax = Decimal(0)
        items = []
        for n, li in enumerate(inv.get("LineItems") or [], 1):
            qty, unit = dec(li.get("Quantity", 1)), dec(li.get("UnitAmount", 0))
            code = str(li.get("AccountCode") or "")
            rate = store.tax_rates.get(str(li.get("TaxType") or "NONE"))
            if qty is None or unit is None:
                errs.append(f"Line {n}: Quantity and UnitAmount must be numbers")
                continue
            line_amount = dec(li.get("LineAmount")) or (qty * unit).quantize(Decimal("0.01"))
            if code not in store.accounts or store.accounts[code]["Status"] != "ACTIVE":
                errs.append(f"Account code '{code}' is not a valid code for this document.")
            if rate is None:
                errs.append(f"The TaxType code '{li.get('TaxType')}' does not exist or cannot be used")
                rate = {"_rate": Decimal(0)}
            computed = (line_amount * rate["_rate"] / 100).quantize(Decimal("0.01"))
            given = dec(li.get("TaxAmount"))
            line_tax = given if given is not None and abs(given - computed) <= Decimal("0.01") else computed
            for t in li.get("Tracking") or []:
                if not store.option(str(t.get("Name")), str(t.get("Option"))):
                    errs.append(f"Tracking option '{t.get('Option')}' not found in category '{t.get('Name')}'")
            sub += line_amount
            tax += line_tax
            items.append({"LineItemID": str(uuid.uuid4()), "Description": li.get("Description", ""),
                          "Quantity": _jsonable(qty), "UnitAmount": _jsonable(unit), "AccountCode": code,
                          "TaxType": li.get("TaxType", "NONE"), "TaxAmount": _num(line_tax),
                          "LineAmount": _num(line_amount), "Tracking": li.get("Tracking") or []})
        if not items:
            errs.append("An invoice needs at least one line item")
        number = inv.get("InvoiceNumber")  # Xero numbers the invoice when saved (INV-0001...) unless given
        if number and any(i.get("InvoiceNumber") == number for i in store.invoices.values()):
            errs.append(f"Invoice # must be unique. ({number})")
        status = str(inv.get("Status") or "DRAFT")
        el = {"Type": inv.get("Type", "ACCREC"), "InvoiceID": str(uuid.uuid4()), "InvoiceNumber": number,
              "Reference": str(inv.get("Reference") or ""), "Contact": {k: v for k, v in (contact or {}).items()
                                                                       if k in ("ContactID", "Name")},
              "Date": ms(date) if date else None, "DateString": f"{date}T00:00:00" if date else None,
              "DueDate": ms(parse_date(inv.get("DueDate")) or date) if date else None,
              "Status": status, "LineAmountTypes": inv.get("LineAmountTypes", "Exclusive"), "LineItems": items,
              "SubTotal": _num(sub), "TotalTax": _num(tax), "Total": _num(sub + tax), "CurrencyCode": currency,
              "CurrencyRate": _jsonable(rate_used), "AmountDue": _num(sub + tax),
              "AmountPaid": 0.0, "HasErrors": False}
        return {k: v for k, v in el.items() if v is not None}, errs

    def parse_stamp(text: str) -> dt.datetime:
        m = MS_DATE.match(text)
        assert m is not None
        return dt.datetime.fromtimestamp(int(m.group(1)) / 1000, tz=dt.UTC)

    return app
