"""Sandbox of the Salesforce REST API (one org with Certinia PSA, Kimble and Sales Cloud objects).

Built from the vendor facts (``shared/reference/vendors/03-salesforce-certinia-kimble.md``):

- ``POST /services/oauth2/token``: JWT bearer grant (RS256 assertion verified against the connected app's
  certificate public key: ``iss`` = consumer key, ``sub`` = a pre-authorised username, ``aud`` = the login host,
  ``exp`` in the future) and client credentials (consumer key + secret). Answers ``access_token`` +
  ``instance_url``; tokens live ``token_lifetime`` seconds; an expired or unknown token gets ``401
  [{"errorCode": "INVALID_SESSION_ID"}]``.
- ``GET /services/data/vNN.0/query?q=``: a SOQL subset — ``SELECT f, ... FROM obj [WHERE cond] [ORDER BY f [ASC|DESC],
  ...] [LIMIT n]`` with ``AND``/``OR``/``NOT``/parentheses, ``= != < <= > >= IN (...)``, string/number/boolean/
  null/date/datetime literals. Unknown fields -> ``400 INVALID_FIELD``; bad syntax -> ``400 MALFORMED_QUERY``.
  Pages of ``min(batchSize header, page_size option)`` rows, ``nextRecordsUrl`` = ``/query/<locator>-<offset>``
  (the result is a snapshot taken when the query ran).
- ``GET /sobjects/<obj>/updated/?start&end`` and ``/deleted/`` (30-day window; deletes kept in the recycle bin
  until :meth:`Store.empty_recycle_bin`, which moves ``earliestDateAvailable``).
- ``PATCH /sobjects/<obj>/<extField>/<value>`` (upsert: 201 created, 200 updated, 300 several matches, ``Id`` =
  update only) and ``PATCH /composite/sobjects/<obj>/<extField>`` (at most 200 records, ``allOrNone``, item errors
  with ``statusCode``). Locked records (:attr:`Store.locked`) refuse writes with ``ENTITY_IS_LOCKED``.
- Daily API allocation: ``daily_limit`` requests per rolling ``limit_window_seconds``; beyond it ``403
  [{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]``; every API answer carries ``Sforce-Limit-Info: api-usage=N/M``.
  ``GET /limits`` reports ``DailyApiRequests``. The token endpoint does not count.

Test hooks on ``app.state``: ``store`` (:class:`Store`: insert/update/delete with explicit ``SystemModstamp``,
``locked``, ``add_fields``), ``calls`` (:class:`CallLog`), ``limits`` (:class:`RateWindow`), ``consume(n)``
(requests of the org's other integrations, sharing the allocation), ``faults`` (``expire_tokens_at_call``: every
live token expires when the API call with that number arrives; ``lock_rows``: that many collection calls answer
``UNABLE_TO_LOCK_ROW`` for every item; ``expire_locators``: that many ``nextRecordsUrl`` fetches find their query
locator expired; ``collection_delay``: seconds each collection call takes), ``private_key_pem`` /
``public_key_pem`` (the demo connected app's key pair), ``client_id``, ``client_secret``, ``username``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import json
import re
import secrets as _secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = ("Salesforce REST (Certinia pse__, Kimble KimbleOne__, CRM Opportunity): JWT/client-credentials "
               "OAuth, SOQL subset with nextRecordsUrl, updated/deleted feeds, external-id upserts, collections, "
               "daily API limit")

API_VERSION = "60.0"

#: the org's schema: sObject -> (3-character key prefix, fields besides Id/SystemModstamp/CreatedDate/IsDeleted)
SCHEMA: dict[str, tuple[str, tuple[str, ...]]] = {
    "Account": ("001", ("Name", "CurrencyIsoCode")),
    "Contact": ("003", ("Name", "AccountId", "pse__Is_Resource__c", "pse__Is_Resource_Active__c",
                        "pse__Resource_Role__c", "pse__Salesforce_User__c", "pse__Default_Cost_Rate__c")),
    "Opportunity": ("006", ("Name", "AccountId", "StageName", "Amount", "CurrencyIsoCode", "CloseDate",
                            "Project_Status__c", "ERP_Project_Number__c")),
    "pse__Proj__c": ("a0P", ("Name", "pse__Account__c", "CurrencyIsoCode", "pse__Is_Active__c",
                             "pse__Billing_Type__c", "pse__Start_Date__c", "pse__End_Date__c", "pse__Stage__c",
                             "pse__Region__c", "pse__Practice__c", "pse__Group__c", "pse__Is_Billable__c",
                             "pse__Project_Manager__c")),
    "pse__Timecard_Header__c": ("a0T", ("pse__Project__c", "pse__Resource__c", "pse__Start_Date__c",
                                        "pse__End_Date__c", "pse__Monday_Hours__c", "pse__Tuesday_Hours__c",
                                        "pse__Wednesday_Hours__c", "pse__Thursday_Hours__c", "pse__Friday_Hours__c",
                                        "pse__Saturday_Hours__c", "pse__Sunday_Hours__c", "pse__Status__c",
                                        "pse__Approved__c", "pse__Include_In_Financials__c", "pse__Billable__c",
                                        "pse__Billed__c", "pse__Invoiced__c", "pse__Timecard_Notes__c")),
    "pse__Expense__c": ("a0E", ("pse__Project__c", "pse__Resource__c", "pse__Expense_Date__c", "pse__Amount__c",
                                "CurrencyIsoCode", "pse__Type__c", "pse__Status__c", "pse__Approved__c",
                                "pse__Include_In_Financials__c", "pse__Billable__c", "pse__Description__c",
                                "pse__Reimbursement_Currency__c")),
    "pse__Milestone__c": ("a0M", ("pse__Project__c", "Name", "pse__Milestone_Amount__c", "CurrencyIsoCode",
                                  "pse__Target_Date__c", "pse__Status__c", "pse__Approved__c",
                                  "pse__Actual_Date__c")),
    "pse__Billing_Event__c": ("a0B", ("pse__Project__c", "pse__Is_Released__c", "pse__Invoiced__c",
                                      "pse__Invoice_Number__c", "pse__Invoice_Date__c", "ERP_Invoice_Id__c",
                                      "ERP_Invoice_Status__c")),
    "KimbleOne__DeliveryGroup__c": ("a1D", ("Name", "KimbleOne__Account__c", "CurrencyIsoCode",
                                            "KimbleOne__IsActive__c", "KimbleOne__ContractType__c",
                                            "KimbleOne__StartDate__c", "KimbleOne__EndDate__c")),
    "KimbleOne__Resource__c": ("a1R", ("Name", "KimbleOne__IsActive__c", "KimbleOne__Grade__c")),
    "KimbleOne__TimeEntry__c": ("a1T", ("KimbleOne__DeliveryGroup__c", "KimbleOne__Resource__c",
                                        "KimbleOne__EntryDate__c", "KimbleOne__EntryUnits__c",
                                        "KimbleOne__Status__c", "KimbleOne__IsChargeable__c", "KimbleOne__Notes__c",
                                        "KimbleOne__TimePeriod__c", "KimbleOne__InvoicingCurrencyEntryRevenue__c")),
    "KimbleOne__ExpenseItem__c": ("a1E", ("KimbleOne__DeliveryGroup__c", "KimbleOne__Resource__c",
                                          "KimbleOne__ExpenseDate__c", "KimbleOne__IncurredAmount__c",
                                          "CurrencyIsoCode", "KimbleOne__ExpenseCategory__c", "KimbleOne__Status__c",
                                          "KimbleOne__IsChargeable__c", "KimbleOne__Description__c")),
    "KimbleOne__Milestone__c": ("a1M", ("KimbleOne__DeliveryGroup__c", "Name", "KimbleOne__Amount__c",
                                        "CurrencyIsoCode", "KimbleOne__MilestoneDate__c", "KimbleOne__Status__c",
                                        "KimbleOne__CompletedDate__c")),
    "KimbleOne__Invoice__c": ("a1I", ("KimbleOne__DeliveryGroup__c", "KimbleOne__InvoiceReference__c",
                                      "KimbleOne__InvoiceDate__c", "ERP_Invoice_Id__c", "ERP_Invoice_Status__c")),
}
#: External ID fields (unique) per object; upserts by other fields are refused like a non-external-id field
EXTERNAL_IDS: dict[str, set[str]] = {"pse__Billing_Event__c": {"ERP_Invoice_Id__c"},
                                     "KimbleOne__Invoice__c": {"ERP_Invoice_Id__c"},
                                     "Opportunity": {"ERP_Project_Number__c"}}
REQUIRED: dict[str, tuple[str, ...]] = {"Opportunity": ("Name", "StageName", "CloseDate")}
SYSTEM_FIELDS = ("Id", "SystemModstamp", "CreatedDate", "IsDeleted")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def utcnow() -> dt.datetime:
    """Salesforce's clock: UTC, whole seconds (the API answers ``.000`` milliseconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def sf_stamp(when: dt.datetime) -> str:
    u = when.astimezone(dt.UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}+0000"


def parse_dt(text: str) -> dt.datetime:
    t = str(text).strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    elif len(t) > 5 and t[-5] in "+-" and t[-4:].isdigit():
        t = t[:-2] + ":" + t[-2:]
    when = dt.datetime.fromisoformat(t)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def sf_error(status: int, code: str, message: str, fields: Iterable[str] = (), **headers: str) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code, "fields": list(fields)}], status_code=status,
                        headers=headers)


class SalesforceFault(Exception):
    def __init__(self, status: int, code: str, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, list(fields)


# --------------------------------------------------------------------------------------------------- the data


class Store:
    """The org's records in memory. Every write sets ``SystemModstamp`` (``stamp=`` overrides it: ties, order)."""

    def __init__(self, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.clock = clock
        self.objects: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SCHEMA}
        self.fields: dict[str, set[str]] = {name: {*SYSTEM_FIELDS, *f} for name, (_, f) in SCHEMA.items()}
        self.deleted: list[tuple[str, str, dt.datetime]] = []
        self.purged_before = clock() - dt.timedelta(days=15)
        self.locked: set[str] = set()
        self._seq = itertools.count(1)
        self.lock = threading.RLock()

    def add_fields(self, sobject: str, *names: str) -> None:
        """Custom fields created in Setup (for ``field_map`` tests)."""
        self.fields[sobject].update(names)

    def _new_id(self, sobject: str) -> str:
        n, body = next(self._seq), ""
        while n:
            n, r = divmod(n, 62)
            body = _B62[r] + body
        return (SCHEMA[sobject][0] + "000" + body.rjust(9, "0"))[:15] + "AAA"

    def _check_fields(self, sobject: str, fields: Iterable[str]) -> None:
        if sobject not in self.objects:
            raise SalesforceFault(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        for name in fields:
            if name not in self.fields[sobject] or name in ("Id", "SystemModstamp", "CreatedDate", "IsDeleted"):
                raise SalesforceFault(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                                      if name not in self.fields[sobject] else
                                      f"Unable to create/update fields: {name}.", [name])

    def insert(self, sobject: str, fields: Mapping[str, Any], *, stamp: dt.datetime | None = None) -> str:
        with self.lock:
            self._check_fields(sobject, fields)
            missing = [f for f in REQUIRED.get(sobject, ()) if fields.get(f) in (None, "")]
            if missing:
                raise SalesforceFault(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}",
                                      missing)
            rid = self._new_id(sobject)
            when = stamp or self.clock()
            self.objects[sobject][rid] = {**dict(fields), "Id": rid, "CreatedDate": when, "SystemModstamp": when,
                                          "IsDeleted": False}
            return rid

    def update(self, sobject: str, rid: str, fields: Mapping[str, Any], *, stamp: dt.datetime | None = None) -> None:
        with self.lock:
            self._check_fields(sobject, fields)
            rec = self.objects[sobject].get(rid)
            if rec is None:
                raise SalesforceFault(404, "NOT_FOUND", f"Provided external ID field does not exist or is not "
                                      f"accessible: {rid}")
            if rid in self.locked:
                raise SalesforceFault(400, "ENTITY_IS_LOCKED",
                                      "the entity is locked for editing (approval process)")
            rec.update(fields)
            rec["SystemModstamp"] = stamp or self.clock()

    def delete(self, sobject: str, rid: str, *, when: dt.datetime | None = None) -> None:
        with self.lock:
            self.objects[sobject].pop(rid)
            self.deleted.append((sobject, rid, when or self.clock()))

    def empty_recycle_bin(self) -> None:
        """Deletes older than now leave the recycle bin: the delete feed no longer reaches back before now."""
        with self.lock:
            now = dt.datetime.now(dt.UTC)
            self.purged_before = max(self.clock(), now.replace(microsecond=now.microsecond // 1000 * 1000))
            self.deleted.clear()

    def get(self, sobject: str, rid: str) -> dict[str, Any] | None:
        return self.objects.get(sobject, {}).get(rid)

    def find(self, sobject: str, field: str, value: Any) -> list[dict[str, Any]]:
        return [r for r in self.objects[sobject].values() if str(r.get(field)) == str(value)]

    def count(self, sobject: str) -> int:
        return len(self.objects[sobject])


# --------------------------------------------------------------------------------------------------- SOQL subset

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:\\.|[^'\\])*')
  | (?P<dt>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,3})?(?:Z|[+-]\d\d:?\d\d))
  | (?P<date>\d{4}-\d\d-\d\d)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
)""", re.VERBOSE)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "LIMIT", "NULLS",
             "FIRST", "LAST", "TRUE", "FALSE", "NULL"}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SalesforceFault(400, "MALFORMED_QUERY", f"unexpected token at: {text[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind == "str":
            out.append(("val", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "dt":
            out.append(("val", parse_dt(raw)))
        elif kind == "date":
            out.append(("val", dt.date.fromisoformat(raw)))
        elif kind == "num":
            out.append(("val", Decimal(raw)))
        elif kind == "word" and raw.upper() in _KEYWORDS:
            up = raw.upper()
            out.append(("val", {"TRUE": True, "FALSE": False, "NULL": None}[up]) if up in ("TRUE", "FALSE", "NULL")
                       else ("kw", up))
        else:
            out.append((kind, raw))
    return out


class Query:
    """A parsed SOQL query of the supported subset."""

    def __init__(self, soql: str) -> None:
        self.t = _tokens(soql)
        self.i = 0
        self._expect("kw", "SELECT")
        self.fields = [self._ident()]
        while self._peek() == ("op", ","):
            self.i += 1
            self.fields.append(self._ident())
        self._expect("kw", "FROM")
        self.sobject = self._ident()
        self.where: Any = None
        self.order: list[tuple[str, bool]] = []
        self.limit: int | None = None
        if self._peek() == ("kw", "WHERE"):
            self.i += 1
            self.where = self._or()
        if self._peek() == ("kw", "ORDER"):
            self.i += 1
            self._expect("kw", "BY")
            while True:
                name, desc = self._ident(), False
                if self._peek() in (("kw", "ASC"), ("kw", "DESC")):
                    desc = self.t[self.i][1] == "DESC"
                    self.i += 1
                self.order.append((name, desc))
                if self._peek() != ("op", ","):
                    break
                self.i += 1
        if self._peek() == ("kw", "LIMIT"):
            self.i += 1
            kind, value = self._next()
            if kind != "val" or not isinstance(value, Decimal):
                raise SalesforceFault(400, "MALFORMED_QUERY", "LIMIT needs a number")
            self.limit = int(value)
        if self.i != len(self.t):
            raise SalesforceFault(400, "MALFORMED_QUERY", f"unexpected {self.t[self.i][1]!r}")

    def _peek(self) -> tuple[str, Any] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def _next(self) -> tuple[str, Any]:
        if self.i >= len(self.t):
            raise SalesforceFault(400, "MALFORMED_QUERY", "unexpected end of query")
        self.i += 1
        return self.t[self.i - 1]

    def _expect(self, kind: str, value: Any) -> None:
        if self._next() != (kind, value):
            raise SalesforceFault(400, "MALFORMED_QUERY", f"expected {value}")

    def _ident(self) -> str:
        kind, value = self._next()
        if kind != "word":
            raise SalesforceFault(400, "MALFORMED_QUERY", f"expected a field or object name, got {value!r}")
        return str(value)

    def _or(self) -> Any:
        return self._chain("OR", self._and)

    def _and(self) -> Any:
        return self._chain("AND", self._not)

    def _chain(self, word: str, operand: Callable[[], Any]) -> Any:
        node = operand()
        while self._peek() == ("kw", word):
            self.i += 1
            node = (word.lower(), node, operand())
        return node

    def _not(self) -> Any:
        if self._peek() == ("kw", "NOT"):
            self.i += 1
            return ("not", self._not())
        if self._peek() == ("op", "("):
            self.i += 1
            node = self._or()
            self._expect("op", ")")
            return node
        name = self._ident()
        if self._peek() == ("kw", "IN"):
            self.i += 1
            self._expect("op", "(")
            values = [self._value()]
            while self._peek() == ("op", ","):
                self.i += 1
                values.append(self._value())
            self._expect("op", ")")
            return ("in", name, values)
        kind, op = self._next()
        if kind != "op" or op in ("(", ")", ","):
            raise SalesforceFault(400, "MALFORMED_QUERY", f"expected an operator after {name}")
        return ("cmp", name, "!=" if op == "<>" else op, self._value())

    def _value(self) -> Any:
        kind, value = self._next()
        if kind != "val":
            raise SalesforceFault(400, "MALFORMED_QUERY", f"expected a literal, got {value!r}")
        return value

    def names(self) -> set[str]:
        out = set(self.fields) | {n for n, _ in self.order}

        def walk(node: Any) -> None:
            if node[0] in ("and", "or"):
                walk(node[1])
                walk(node[2])
            elif node[0] == "not":
                walk(node[1])
            else:
                out.add(node[1])

        if self.where is not None:
            walk(self.where)
        return out

    def matches(self, rec: Mapping[str, Any], node: Any = None) -> bool:
        node = self.where if node is None else node
        if node is None:
            return True
        tag = node[0]
        if tag == "and":
            return self.matches(rec, node[1]) and self.matches(rec, node[2])
        if tag == "or":
            return self.matches(rec, node[1]) or self.matches(rec, node[2])
        if tag == "not":
            return not self.matches(rec, node[1])
        if tag == "in":
            return any(_compare(rec.get(node[1]), "=", v) for v in node[2])
        return _compare(rec.get(node[1]), node[2], node[3])


def _coerce(value: Any, like: Any) -> Any:
    if value is None or like is None:
        return value
    if isinstance(like, dt.datetime):
        return value if isinstance(value, dt.datetime) else parse_dt(str(value))
    if isinstance(like, dt.date):
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    if isinstance(like, Decimal):
        return Decimal(str(value))
    if isinstance(like, bool):
        return bool(value)
    return str(value)


def _compare(value: Any, op: str, literal: Any) -> bool:
    if op in ("=", "!="):
        equal = (value is None) if literal is None else (value is not None and _coerce(value, literal) == literal)
        return equal if op == "=" else not equal
    if value is None or literal is None:
        return False
    v = _coerce(value, literal)
    return {"<": v < literal, "<=": v <= literal, ">": v > literal, ">=": v >= literal}[op]


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")  # NULLS FIRST for ascending order, as SOQL defaults
    if isinstance(value, dt.datetime):
        return (1, value.timestamp())
    if isinstance(value, bool | int | float | Decimal):
        return (1, Decimal(str(value)) if not isinstance(value, bool) else int(value))
    return (1, str(value))


def _out(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return sf_stamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------------------------------- the app


def _keypair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@functools.lru_cache(maxsize=1)
def demo_keypair() -> tuple[str, str]:
    """The demo connected app's key pair, generated once per process (RSA generation costs ~0.4 s)."""
    return _keypair()


def _json(data: Any) -> str:
    return json.dumps(data, default=lambda o: float(o) if isinstance(o, Decimal) else _out(o))


def create_app(
    *,
    page_size: int = 2000,
    daily_limit: int = 100_000,
    limit_window_seconds: float = 86_400.0,
    token_lifetime: float = 7200.0,
    client_id: str = "3MVG9sandboxLedgerbridgeConsumerKey",
    client_secret: str = "sandbox-consumer-secret",
    username: str = "integration@ledgerbridge.example",
    public_key_file: str | None = None,
    seed: bool = True,
    write_key_file: bool = False,
    clock: Callable[[], dt.datetime] | None = None,
) -> FastAPI:
    """The sandbox app. ``public_key_file``: the PEM public key (or certificate's key) of your own connected app;
    without it a key pair is generated (``app.state.private_key_pem``; ``write_key_file=true`` also writes the
    private key to a temp file named in the banner)."""
    app = FastAPI(title="Salesforce sandbox (ledgerbridge)")
    store = Store(clock or utcnow)
    private_pem: str | None = None
    if public_key_file:
        with open(public_key_file) as fh:
            public_pem = fh.read()
    else:
        private_pem, public_pem = demo_keypair()
    calls = CallLog()
    limits = RateWindow(limit=int(daily_limit), window=float(limit_window_seconds))
    usage: deque[float] = deque()
    tokens: dict[str, float] = {}
    locators: dict[str, list[dict[str, Any]]] = {}
    counter = itertools.count(1)
    api_calls = [0]
    lock = threading.Lock()
    app.state.store, app.state.calls, app.state.limits = store, calls, limits
    app.state.faults = {}
    app.state.private_key_pem, app.state.public_key_pem = private_pem, public_pem
    app.state.client_id, app.state.client_secret, app.state.username = client_id, client_secret, username
    app.state.page_size = int(page_size)
    key_note = "your connected app's key (public_key_file)"
    if private_pem and write_key_file:
        with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="sf-sandbox-", delete=False) as fh:
            fh.write(private_pem)
            key_note = f"private key for the JWT bearer flow: {fh.name}"
    app.state.banner = (f"consumer key (client_id): {client_id}\nconsumer secret: {client_secret}\n"
                        f"username (JWT sub): {username}\n{key_note}\n"
                        f"daily API limit {daily_limit} per {limit_window_seconds:g} s; page size {page_size}")
    if seed:
        seed_org(store)

    def used_now() -> int:
        with lock:
            cutoff = time.monotonic() - float(limit_window_seconds)
            while usage and usage[0] <= cutoff:
                usage.popleft()
            return len(usage)

    def consume(n: int) -> None:
        """``n`` API requests made by the org's other integrations now (they share the daily allocation)."""
        for _ in range(n):
            if limits.try_acquire() is None:
                limits.release()
                with lock:
                    usage.append(time.monotonic())

    app.state.consume = consume

    def limit_header() -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={used_now()}/{daily_limit}"}

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if not path.startswith("/services/data/"):
            response = await call_next(request)
            calls.add(request.method, path, response.status_code)
            return response
        n = api_calls[0] = api_calls[0] + 1
        at = app.state.faults.get("expire_tokens_at_call")
        if at is not None and n == int(at):
            for tok in tokens:
                tokens[tok] = 0.0
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        expires = tokens.get(token)
        if expires is None or expires <= time.monotonic():
            calls.add(request.method, path, 401)
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid", **limit_header())
        if limits.try_acquire() is not None:
            calls.add(request.method, path, 403)
            return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", **limit_header())
        limits.release()
        with lock:
            usage.append(time.monotonic())
        try:
            response = await call_next(request)
        except SalesforceFault as fault:  # pragma: no cover - handlers convert faults themselves
            response = sf_error(fault.status, fault.code, fault.message, fault.fields)
        response.headers.update(limit_header())
        calls.add(request.method, path, response.status_code)
        return response

    def fault_response(fault: SalesforceFault) -> JSONResponse:
        return sf_error(fault.status, fault.code, fault.message, fault.fields)

    # ---- OAuth

    @app.post("/services/oauth2/token")
    async def token(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}  # x-www-form-urlencoded
        grant = str(form.get("grant_type", ""))
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            import jwt

            base = str(request.base_url).rstrip("/")
            try:
                claims = jwt.decode(str(form.get("assertion", "")), public_pem, algorithms=["RS256"],
                                    audience=[base, "https://login.salesforce.com", "https://test.salesforce.com"],
                                    options={"require": ["exp", "iss", "sub", "aud"]})
            except jwt.PyJWTError as exc:
                return JSONResponse({"error": "invalid_grant", "error_description": f"invalid assertion: {exc}"},
                                    status_code=400)
            if claims.get("iss") != client_id:
                return JSONResponse({"error": "invalid_client_id", "error_description": "client identifier invalid"},
                                    status_code=400)
            if claims.get("sub") != username:
                return JSONResponse({"error": "invalid_grant", "error_description": "user hasn't approved this "
                                     "consumer"}, status_code=400)
        elif grant == "client_credentials":
            if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
                return JSONResponse({"error": "invalid_client", "error_description": "invalid client credentials"},
                                    status_code=400)
        else:
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "grant type not supported"},
                                status_code=400)
        access = "00Dsandbox!" + _secrets.token_urlsafe(24)
        tokens[access] = time.monotonic() + float(token_lifetime)
        return JSONResponse({"access_token": access, "instance_url": str(request.base_url).rstrip("/"),
                             "id": f"{str(request.base_url).rstrip('/')}/id/00Dsandbox/005sandbox",
                             "token_type": "Bearer", "issued_at": str(int(time.time() * 1000)),
                             "scope": "api"})

    # ---- query

    def page(records: list[dict[str, Any]], offset: int, size: int, loc: str, total: int) -> Response:
        chunk = records[offset:offset + size]
        done = offset + size >= len(records)
        out: dict[str, Any] = {"totalSize": total, "done": done, "records": chunk}
        if not done:
            out["nextRecordsUrl"] = f"/services/data/v{API_VERSION}/query/{loc}-{offset + size}"
        else:
            locators.pop(loc, None)
        return Response(_json(out), media_type="application/json")

    def batch_size(request: Request) -> int:
        m = re.search(r"batchSize=(\d+)", request.headers.get("sforce-query-options", ""))
        wanted = max(200, min(2000, int(m.group(1)))) if m else 2000
        return max(1, min(wanted, app.state.page_size))

    @app.get("/services/data/{version}/query")
    @app.get("/services/data/{version}/query/")
    def query(version: str, q: str, request: Request) -> Response:
        try:
            parsed = Query(q)
            with store.lock:
                if parsed.sobject not in store.objects:
                    raise SalesforceFault(400, "INVALID_TYPE", f"sObject type '{parsed.sobject}' is not supported.")
                bad = sorted(parsed.names() - store.fields[parsed.sobject])
                if bad:
                    raise SalesforceFault(400, "INVALID_FIELD", f"No such column '{bad[0]}' on entity "
                                          f"'{parsed.sobject}'.", bad)
                rows = [r for r in store.objects[parsed.sobject].values() if parsed.matches(r)]
                for name, desc in reversed(parsed.order):
                    rows.sort(key=lambda r, n=name: _sort_key(r.get(n)), reverse=desc)
                if parsed.limit is not None:
                    rows = rows[:parsed.limit]
                url = f"/services/data/v{API_VERSION}/sobjects/{parsed.sobject}/"
                records = [{"attributes": {"type": parsed.sobject, "url": url + r["Id"]},
                            **{f: r.get(f) for f in parsed.fields}} for r in rows]
        except SalesforceFault as fault:
            return fault_response(fault)
        loc = f"01gSB{next(counter):010d}"
        locators[loc] = records
        return page(records, 0, batch_size(request), loc, len(records))

    @app.get("/services/data/{version}/query/{locator}")
    def query_more(version: str, locator: str, request: Request) -> Response:
        loc, _, offset = locator.rpartition("-")
        if app.state.faults.get("expire_locators", 0) > 0:  # idle too long: the server dropped the cursor
            app.state.faults["expire_locators"] -= 1
            locators.pop(loc, None)
        records = locators.get(loc)
        if records is None or not offset.isdigit():
            return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return page(records, int(offset), batch_size(request), loc, len(records))

    # ---- feeds

    def window(start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
        try:
            a, b = parse_dt(start), parse_dt(end)
        except ValueError:
            raise SalesforceFault(400, "INVALID_REPLICATION_DATE", "start/end must be ISO 8601 dates") from None
        if b < a:
            raise SalesforceFault(400, "INVALID_REPLICATION_DATE", "end is before start")
        if a < store.clock() - dt.timedelta(days=30):
            raise SalesforceFault(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
        return a, b

    def feed(sobject: str, start: str, end: str,
             build: Callable[[dt.datetime, dt.datetime], dict[str, Any]]) -> Response:
        try:
            a, b = window(start, end)
            store._check_fields(sobject, ())
        except SalesforceFault as fault:
            return fault_response(fault)
        with store.lock:
            out = build(a, b)
        out["latestDateCovered"] = sf_stamp(min(b, store.clock()))
        return Response(_json(out), media_type="application/json")

    @app.get("/services/data/{version}/sobjects/{sobject}/updated/")
    def updated(version: str, sobject: str, start: str, end: str) -> Response:
        return feed(sobject, start, end, lambda a, b: {"ids": [
            rid for rid, r in store.objects[sobject].items() if a <= r["SystemModstamp"] < b]})

    @app.get("/services/data/{version}/sobjects/{sobject}/deleted/")
    def deleted(version: str, sobject: str, start: str, end: str) -> Response:
        return feed(sobject, start, end, lambda a, b: {
            "deletedRecords": [{"id": rid, "deletedDate": sf_stamp(when)} for obj, rid, when in store.deleted
                               if obj == sobject and a <= when < b],
            "earliestDateAvailable": sf_stamp(store.purged_before)})

    @app.get("/services/data/{version}/limits")
    def get_limits(version: str) -> Response:
        used = used_now()
        return Response(_json({"DailyApiRequests": {"Max": daily_limit, "Remaining": max(0, daily_limit - used)}}),
                        media_type="application/json")

    # ---- writes

    def upsert_one(sobject: str, field: str, value: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fields = {k: v for k, v in fields.items() if k != "attributes"}
        if field != "Id" and field not in EXTERNAL_IDS.get(sobject, set()):
            store._check_fields(sobject, [field])
            raise SalesforceFault(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                                  f"{field} is not an External ID or indexed field for {sobject}", [field])
        with store.lock:
            if field == "Id":
                rec = store.get(sobject, value)
                if rec is None:
                    raise SalesforceFault(404, "NOT_FOUND", f"Provided external ID field does not exist or is not "
                                          f"accessible: {value}")
                store.update(sobject, value, {k: v for k, v in fields.items() if k != "Id"})
                return 200, {"id": value, "success": True, "errors": [], "created": False}
            matches = store.find(sobject, field, value)
            if len(matches) > 1:
                raise SalesforceFault(300, "MULTIPLE_CHOICES", f"more than one record has {field} = {value}")
            body = {k: v for k, v in fields.items() if k != field}
            if matches:
                store.update(sobject, matches[0]["Id"], body)
                return 200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
            rid = store.insert(sobject, {**body, field: value})
            return 201, {"id": rid, "success": True, "errors": [], "created": True}

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body(), parse_float=Decimal)
        except ValueError:
            raise SalesforceFault(400, "JSON_PARSER_ERROR", "the request body is not JSON") from None

    @app.patch("/services/data/{version}/sobjects/{sobject}/{field}/{value}")
    async def upsert(version: str, sobject: str, field: str, value: str, request: Request) -> Response:
        try:
            data = await read_json(request)
            status, out = upsert_one(sobject, field, value, dict(data or {}))
        except SalesforceFault as fault:
            if fault.status == 300:
                return JSONResponse([f"/services/data/v{API_VERSION}/sobjects/{sobject}/{r['Id']}"
                                     for r in store.find(sobject, field, value)], status_code=300)
            return fault_response(fault)
        return Response(_json(out), status_code=status, media_type="application/json")

    @app.patch("/services/data/{version}/composite/sobjects/{sobject}/{field}")
    async def upsert_collection(version: str, sobject: str, field: str, request: Request) -> Response:
        try:
            data = await read_json(request)
        except SalesforceFault as fault:
            return fault_response(fault)
        records = list((data or {}).get("records") or [])
        if len(records) > 200:
            return sf_error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call")
        all_or_none = bool((data or {}).get("allOrNone", False))
        results: list[dict[str, Any]] = []
        delay = float(app.state.faults.get("collection_delay", 0))
        if delay:  # heavy PSA triggers: each collection call takes this long (kill-mid-run tests)
            await asyncio.sleep(delay)
        if app.state.faults.get("lock_rows", 0) > 0:  # a PSA trigger holds the rows: every item refused
            app.state.faults["lock_rows"] -= 1
            return Response(_json([{"success": False, "errors": [{
                "statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record",
                "fields": []}]} for _ in records]), media_type="application/json")
        with store.lock:
            snapshot = {k: {i: dict(r) for i, r in v.items()} for k, v in store.objects.items()} if all_or_none \
                else None
            for rec in records:
                rtype = (rec.get("attributes") or {}).get("type")
                try:
                    if rtype != sobject:
                        raise SalesforceFault(400, "INVALID_TYPE", f"record type {rtype!r} is not {sobject}")
                    if rec.get(field) in (None, ""):
                        raise SalesforceFault(400, "REQUIRED_FIELD_MISSING", f"{field} is required", [field])
                    _, out = upsert_one(sobject, field, str(rec[field]), dict(rec))
                    results.append(out)
                except SalesforceFault as fault:
                    results.append({"success": False, "errors": [{"statusCode": fault.code,
                                                                  "message": fault.message,
                                                                  "fields": fault.fields}]})
            if snapshot is not None and not all(r["success"] for r in results):
                store.objects = snapshot
                results = [r if not r["success"] else
                           {"success": False, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                          "message": "Record rolled back because not all records "
                                                          "were valid and the request was using AllOrNone header",
                                                          "fields": []}]} for r in results]
        return Response(_json(results), media_type="application/json")

    return app


def connector_options(app: Any, base_url: str, package: str, **extra: Any) -> dict[str, Any]:
    """``systems.<name>.options`` for the connector against this sandbox (JWT bearer with the demo key pair; the
    private key goes in ``secrets.private_key`` = ``app.state.private_key_pem``)."""
    return {"package": package, "login_url": base_url, "client_id": app.state.client_id,
            "username": app.state.username, **extra}


# --------------------------------------------------------------------------------------------------- demo data


def seed_org(store: Store, *, weeks: int = 2, start: dt.date | None = None) -> dict[str, Any]:
    """A small demo org: one account, Certinia projects/resources/timecards/expenses/milestones, a Kimble
    delivery group with resources and time entries, and CRM opportunities (one Closed Won). Returns the ids."""
    start = start or (dt.date.today() - dt.timedelta(days=dt.date.today().weekday() + 7 * weeks))
    acct = store.insert("Account", {"Name": "Acme Corp", "CurrencyIsoCode": "USD"})
    proj = store.insert("pse__Proj__c", {"Name": "Acme rollout", "pse__Account__c": acct, "CurrencyIsoCode": "USD",
                                         "pse__Is_Active__c": True, "pse__Billing_Type__c": "Time and Materials",
                                         "pse__Start_Date__c": start.isoformat()})
    people = [store.insert("Contact", {"Name": name, "pse__Is_Resource__c": True, "pse__Is_Resource_Active__c": True,
                                       "pse__Resource_Role__c": "Consultant"})
              for name in ("Ada Lovelace", "Grace Hopper")]
    cards = []
    for w in range(weeks):
        for person in people:
            cards.append(store.insert("pse__Timecard_Header__c", {
                "pse__Project__c": proj, "pse__Resource__c": person,
                "pse__Start_Date__c": (start + dt.timedelta(weeks=w)).isoformat(),
                **{f"pse__{d}_Hours__c": Decimal("8") for d in ("Monday", "Tuesday", "Wednesday", "Thursday")},
                "pse__Friday_Hours__c": Decimal("4"), "pse__Saturday_Hours__c": Decimal("0"),
                "pse__Sunday_Hours__c": Decimal("0"), "pse__Status__c": "Approved", "pse__Approved__c": True,
                "pse__Include_In_Financials__c": True, "pse__Billable__c": True}))
    store.insert("pse__Expense__c", {"pse__Project__c": proj, "pse__Resource__c": people[0],
                                     "pse__Expense_Date__c": start.isoformat(), "pse__Amount__c": Decimal("123.45"),
                                     "CurrencyIsoCode": "USD", "pse__Type__c": "Travel", "pse__Status__c": "Approved",
                                     "pse__Approved__c": True, "pse__Include_In_Financials__c": True,
                                     "pse__Billable__c": True})
    store.insert("pse__Milestone__c", {"pse__Project__c": proj, "Name": "Go-live", "CurrencyIsoCode": "USD",
                                       "pse__Milestone_Amount__c": Decimal("10000"), "pse__Status__c": "Planned",
                                       "pse__Target_Date__c": (start + dt.timedelta(days=60)).isoformat()})
    group = store.insert("KimbleOne__DeliveryGroup__c", {"Name": "Globex delivery", "KimbleOne__Account__c": acct,
                                                         "CurrencyIsoCode": "GBP", "KimbleOne__IsActive__c": True})
    kres = store.insert("KimbleOne__Resource__c", {"Name": "Alan Turing", "KimbleOne__IsActive__c": True})
    for d in range(5):
        store.insert("KimbleOne__TimeEntry__c", {
            "KimbleOne__DeliveryGroup__c": group, "KimbleOne__Resource__c": kres,
            "KimbleOne__EntryDate__c": (start + dt.timedelta(days=d)).isoformat(),
            "KimbleOne__EntryUnits__c": Decimal("7.5"), "KimbleOne__Status__c": "Approved",
            "KimbleOne__IsChargeable__c": True})
    won = store.insert("Opportunity", {"Name": "Acme phase 2", "AccountId": acct, "StageName": "Closed Won",
                                       "Amount": Decimal("50000"), "CurrencyIsoCode": "USD",
                                       "CloseDate": start.isoformat()})
    store.insert("Opportunity", {"Name": "Initech pilot", "AccountId": acct, "StageName": "Prospecting",
                                 "Amount": Decimal("8000"), "CurrencyIsoCode": "USD", "CloseDate": start.isoformat()})
    return {"account": acct, "project": proj, "resources": people, "timecards": cards, "delivery_group": group,
            "kimble_resource": kres, "won_opportunity": won}


__all__ = ["DESCRIPTION", "SCHEMA", "Query", "SalesforceFault", "Store", "connector_options", "create_app",
           "seed_org"]
