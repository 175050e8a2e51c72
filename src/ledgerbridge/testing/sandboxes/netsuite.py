"""NetSuite sandbox: SuiteTalk REST as the vendor documents it (shared/reference/vendors/01-netsuite.md).

- ``POST /services/rest/auth/oauth2/v1/token`` — OAuth 2.0 client credentials: the JWT client assertion's signature
  is verified against the configured certificate's public key (``kid`` = certificate id, PS256/PS384/PS512 or
  ES256/ES384/ES512; RS256 refused), ``iss`` = client id, ``aud`` = the token URL, at most 60 minutes between
  ``iat`` and ``exp``, scope ``rest_webservices``. Tokens live ``token_lifetime`` seconds (default 3600; no refresh
  token). Token-based auth (OAuth 1.0a HMAC-SHA256, ``realm`` = account id) is verified independently of the
  connector's code (signature base string per RFC 5849 §3.4.1, nonce replay and a ±5 min timestamp window).
- Record API ``/services/rest/record/v1/<type>[/<id> | /eid:<external id>]`` for ``customer``, ``job``,
  ``employee``, ``journalentry`` and ``invoice``: ``PUT .../eid:<key>`` creates or replaces (204 + ``Location``;
  the same external id never makes a second record), ``GET``, ``DELETE``. Journal entries are refused when
  unbalanced, in a closed or locked period, with accounts or department/class/location not available to the
  subsidiary, or an A/R / A/P line without a name; invoices compute their lines, tax, total, ``tranid`` (per
  subsidiary prefix) and status ``A`` (Open). Refusals use the problem-details shape with ``o:errorDetails``.
- ``POST /services/rest/query/v1/suiteql`` (``Prefer: transient``) — a SELECT-only SuiteQL subset executed on the
  sandbox's tables (``currency``, ``subsidiary``, ``account``, ``accountingperiod``, ``department``,
  ``classification``, ``location``, ``customer``, ``job``, ``employee``, ``item``, ``salestaxitem``,
  ``transaction``, ``transactionline``, ``transactionaccountingline``), with the Oracle functions the connector
  uses (``TO_CHAR``, ``TO_DATE``, ``TO_TIMESTAMP``; ``SUM`` exact on decimals), ``limit``/``offset`` paging with
  ``hasMore`` and the row cap (``suiteql_cap``, 100,000 like the vendor: rows beyond it are never returned).
- The account-wide concurrency pool: ``concurrency`` requests in flight across every client; one more is answered
  429 (``limit_style=429``, REST) or 400 ``SSS_REQUEST_LIMIT_EXCEEDED`` (``limit_style=sss``, RESTlet style), no
  Retry-After. ``latency`` seconds per request make the pool matter.
- Test hooks on ``app.state``: ``store`` (seeding, period flags, invoice payment, counts), ``calls`` (CallLog),
  ``limits`` (RateWindow), ``release_hold()`` for ``hold_after=N`` (journal PUTs after the N-th wait until
  released: a client can be killed mid-run); ``lost_answer_every=N`` applies every N-th record PUT and answers 504
  (the lost-answer case a retry must not duplicate).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = ("NetSuite SuiteTalk REST: OAuth 2.0 M2M (JWT assertion) + TBA, record API with eid upserts, "
               "SuiteQL subset, account concurrency pool")
JWT_ALGS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
TOKEN = "/services/rest/auth/oauth2/v1/token"
RECORDS = ("customer", "job", "employee", "journalentry", "invoice")
DIGITS = {"JPY": 0, "KRW": 0}
ZERO = Decimal(0)
_PROBLEM_TYPE = "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5."
_TITLES = {400: ("1", "Bad Request"), 401: ("2", "Unauthorized"), 403: ("4", "Forbidden"), 404: ("5", "Not Found"),
           429: ("429", "Too Many Requests")}


class Problem(Exception):
    """A refusal in NetSuite's problem-details shape."""

    def __init__(self, status: int, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.path = status, code, detail, path

    def response(self) -> JSONResponse:
        sec, title = _TITLES.get(self.status, ("1", "Error"))
        item: dict[str, Any] = {"detail": self.detail, "o:errorCode": self.code}
        if self.path:
            item["o:errorPath"] = self.path
        return JSONResponse({"type": _PROBLEM_TYPE + sec, "title": title, "status": self.status,
                             "o:errorDetails": [item]}, status_code=self.status)


def _dec(value: Any, where: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise Problem(400, "INVALID_CONTENT", f"{where}: {value!r} is not a number", where) from None
    if not out.is_finite():
        raise Problem(400, "INVALID_CONTENT", f"{where}: {value!r} is not a number", where)
    return out


def _q(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-DIGITS.get(currency, 2)), rounding=ROUND_HALF_UP)


def _ref(body: Mapping[str, Any], key: str) -> str | None:
    v = body.get(key)
    if isinstance(v, Mapping):
        v = v.get("id")
    return None if v in (None, "") else str(v)


# --------------------------------------------------------------------------------------------------- SuiteQL funcs

_ORA = (("YYYY", "%Y"), ("HH24", "%H"), ("MM", "%m"), ("DD", "%d"), ("MI", "%M"), ("SS", "%S"))


def _ora_format(fmt: str) -> str:
    out = str(fmt)
    for ora, py in _ORA:
        out = out.replace(ora, py)
    return out


def _to_char(value: Any, fmt: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    parsed = dt.datetime.fromisoformat(text if len(text) > 10 else text + " 00:00:00")
    return parsed.strftime(_ora_format(fmt))


def _to_timestamp(text: Any, fmt: str) -> str:
    return dt.datetime.strptime(str(text), _ora_format(fmt)).strftime("%Y-%m-%d %H:%M:%S")


def _to_date(text: Any, fmt: str) -> str:
    return dt.datetime.strptime(str(text), _ora_format(fmt)).strftime("%Y-%m-%d")


_STRINGS = re.compile(r"('(?:[^']|'')*')")
_RESERVED = re.compile(r'(?<!")\b(transaction)\b(?!")', re.IGNORECASE)


def translate(query: str) -> str:
    """SuiteQL -> SQLite: quote the identifiers SuiteQL allows bare but SQLite reserves (``transaction``),
    outside string literals."""
    parts = _STRINGS.split(query)
    return "".join(p if i % 2 else _RESERVED.sub(r'"\1"', p) for i, p in enumerate(parts))


class _DecimalSum:
    def __init__(self) -> None:
        self.total = ZERO
        self.n = 0

    def step(self, value: Any) -> None:
        if value is not None:
            self.total += Decimal(str(value))
            self.n += 1

    def finalize(self) -> str | None:
        return f"{self.total:f}" if self.n else None


_SCHEMA = """
CREATE TABLE currency (id INTEGER PRIMARY KEY, symbol TEXT UNIQUE, name TEXT);
CREATE TABLE subsidiary (id INTEGER PRIMARY KEY, name TEXT, externalid TEXT, currency INTEGER, isinactive TEXT,
  tranprefix TEXT);
CREATE TABLE account (id INTEGER PRIMARY KEY, acctnumber TEXT, acctname TEXT, accttype TEXT, isinactive TEXT,
  subsidiary TEXT);
CREATE TABLE accountingperiod (id INTEGER PRIMARY KEY, periodname TEXT, startdate TEXT, enddate TEXT, isposting TEXT,
  isquarter TEXT, isyear TEXT, isadjust TEXT, closed TEXT, alllocked TEXT, arlocked TEXT, aplocked TEXT);
CREATE TABLE department (id INTEGER PRIMARY KEY, name TEXT, externalid TEXT, isinactive TEXT, subsidiary TEXT);
CREATE TABLE classification (id INTEGER PRIMARY KEY, name TEXT, externalid TEXT, isinactive TEXT, subsidiary TEXT);
CREATE TABLE location (id INTEGER PRIMARY KEY, name TEXT, externalid TEXT, isinactive TEXT, subsidiary TEXT);
CREATE TABLE customer (id INTEGER PRIMARY KEY, entityid TEXT, companyname TEXT, externalid TEXT UNIQUE,
  subsidiary INTEGER, currency INTEGER, isinactive TEXT, isperson TEXT, datecreated TEXT, lastmodifieddate TEXT);
CREATE TABLE job (id INTEGER PRIMARY KEY, entityid TEXT, companyname TEXT, externalid TEXT UNIQUE, parent INTEGER,
  subsidiary INTEGER, startdate TEXT, projectedenddate TEXT, isinactive TEXT, datecreated TEXT,
  lastmodifieddate TEXT);
CREATE TABLE employee (id INTEGER PRIMARY KEY, entityid TEXT, firstname TEXT, lastname TEXT, title TEXT,
  externalid TEXT UNIQUE, subsidiary INTEGER, department INTEGER, isinactive TEXT, datecreated TEXT,
  lastmodifieddate TEXT);
CREATE TABLE item (id INTEGER PRIMARY KEY, itemid TEXT, displayname TEXT, incomeaccount INTEGER, isinactive TEXT);
CREATE TABLE salestaxitem (id INTEGER PRIMARY KEY, itemid TEXT, rate TEXT, taxaccount INTEGER, isinactive TEXT);
CREATE TABLE "transaction" (id INTEGER PRIMARY KEY, tranid TEXT, type TEXT, recordtype TEXT, externalid TEXT,
  trandate TEXT, duedate TEXT, postingperiod INTEGER, currency INTEGER, exchangerate TEXT, entity INTEGER, memo TEXT,
  otherrefnum TEXT, status TEXT, foreigntotal TEXT, foreignamountremaining TEXT, approved TEXT, createddate TEXT,
  lastmodifieddate TEXT, UNIQUE (recordtype, externalid));
CREATE TABLE transactionline (id INTEGER PRIMARY KEY, "transaction" INTEGER, linesequencenumber INTEGER,
  subsidiary INTEGER, entity INTEGER, department INTEGER, class INTEGER, location INTEGER, memo TEXT, mainline TEXT,
  taxline TEXT, item INTEGER, quantity TEXT, rate TEXT, foreignamount TEXT, debitforeignamount TEXT,
  creditforeignamount TEXT);
CREATE TABLE transactionaccountingline ("transaction" INTEGER, transactionline INTEGER, account INTEGER, debit TEXT,
  credit TEXT, amount TEXT, posting TEXT, accountingbook INTEGER);
CREATE INDEX tl_tx ON transactionline ("transaction");
CREATE INDEX tal_tx ON transactionaccountingline ("transaction", transactionline);
"""
_LINE_COLS = ("id", "transaction", "linesequencenumber", "subsidiary", "entity", "department", "class", "location",
              "memo", "mainline", "taxline", "item", "quantity", "rate", "foreignamount", "debitforeignamount",
              "creditforeignamount")


def _tf(flag: Any) -> str:
    return "T" if flag else "F"


class Store:
    """The account's data in an in-memory SQLite database (thread-safe). Seeding and inspection helpers for
    tests; the HTTP handlers call :meth:`upsert`, :meth:`suiteql`, :meth:`get` and :meth:`delete`."""

    def __init__(self, *, suiteql_cap: int = 100_000, tz_offset_hours: float = 0.0,
                 hold_after: int | None = None) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.create_aggregate("SUM", 1, _DecimalSum)  # type: ignore[arg-type]
        self.db.create_function("TO_CHAR", 2, _to_char)
        self.db.create_function("TO_TIMESTAMP", 2, _to_timestamp)
        self.db.create_function("TO_DATE", 2, _to_date)
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.suiteql_cap = suiteql_cap
        self.tz = dt.timezone(dt.timedelta(hours=tz_offset_hours))
        self.hold_after = hold_after
        self.held = threading.Event()
        self.journal_puts = 0
        self.ar_account: int | None = None
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ plumbing

    def now(self) -> str:
        """Account-local time, as NetSuite keeps ``lastmodifieddate`` (not UTC)."""
        return dt.datetime.now(self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def insert(self, table: str, **values: Any) -> int:
        cols = ", ".join(f'"{k}"' for k in values)
        with self.lock:
            cur = self.db.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(values))})',
                                  [self._sql(v) for v in values.values()])
            return int(cur.lastrowid or 0)

    @staticmethod
    def _sql(v: Any) -> Any:
        if isinstance(v, Decimal):
            return f"{v:f}"
        if isinstance(v, bool):
            return _tf(v)
        return v

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        got = self.rows(sql, *args)
        return got[0] if got else None

    # ------------------------------------------------------------------ seeding

    def add_currency(self, symbol: str) -> int:
        return self.insert("currency", symbol=symbol, name=symbol)

    def currency_id(self, symbol: str) -> int:
        row = self.one("SELECT id FROM currency WHERE symbol = ?", symbol)
        return int(row["id"]) if row else self.add_currency(symbol)

    def add_subsidiary(self, name: str, currency: str, prefix: str, externalid: str | None = None) -> int:
        return self.insert("subsidiary", name=name, externalid=externalid, currency=self.currency_id(currency),
                           isinactive="F", tranprefix=prefix)

    def add_account(self, number: str, name: str, kind: str, subsidiaries: Iterable[int] = (),
                    inactive: bool = False) -> int:
        aid = self.insert("account", acctnumber=number, acctname=name, accttype=kind, isinactive=inactive,
                          subsidiary=", ".join(str(s) for s in subsidiaries))
        if kind == "AcctRec" and self.ar_account is None:
            self.ar_account = aid
        return aid

    def add_months(self, first: str, last: str) -> None:
        """Monthly posting periods from ``first`` to ``last`` ("YYYY-MM"), with quarter and year summary rows."""
        y, m = map(int, first.split("-"))
        years: set[int] = set()
        while f"{y:04d}-{m:02d}" <= last:
            start = dt.date(y, m, 1)
            end = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1))
            self.insert("accountingperiod", periodname=start.strftime("%b %Y"), startdate=start.isoformat(),
                        enddate=end.isoformat(), isposting=True, isquarter=False, isyear=False, isadjust=False,
                        closed=False, alllocked=False, arlocked=False, aplocked=False)
            if m % 3 == 0:
                q0 = dt.date(y, m - 2, 1)
                self.insert("accountingperiod", periodname=f"Q{m // 3} {y}", startdate=q0.isoformat(),
                            enddate=end.isoformat(), isposting=False, isquarter=True, isyear=False, isadjust=False,
                            closed=False, alllocked=False, arlocked=False, aplocked=False)
            years.add(y)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        for yr in sorted(years):
            self.insert("accountingperiod", periodname=f"FY {yr}", startdate=f"{yr}-01-01", enddate=f"{yr}-12-31",
                        isposting=False, isquarter=False, isyear=True, isadjust=False, closed=False, alllocked=False,
                        arlocked=False, aplocked=False)

    def set_period(self, period: str, **flags: bool) -> None:
        """Set ``closed`` / ``alllocked`` / ``arlocked`` / ``aplocked`` on the month ``period`` ("YYYY-MM")."""
        bad = set(flags) - {"closed", "alllocked", "arlocked", "aplocked"}
        if bad:
            raise ValueError(f"unknown period flags {bad}")
        sets = ", ".join(f"{k} = ?" for k in flags)
        with self.lock:
            n = self.db.execute(f"UPDATE accountingperiod SET {sets} WHERE isposting = 'T' AND startdate = ?",
                                [_tf(v) for v in flags.values()] + [f"{period}-01"]).rowcount
        if n != 1:
            raise ValueError(f"no posting period {period}")

    def add_segment(self, table: str, externalid: str, name: str, subsidiaries: Iterable[int] = (),
                    inactive: bool = False) -> int:
        """A department, classification or location (restricted to ``subsidiaries``; empty = all)."""
        if table not in ("department", "classification", "location"):
            raise ValueError(table)
        return self.insert(table, name=name, externalid=externalid, isinactive=inactive,
                           subsidiary=", ".join(str(s) for s in subsidiaries))

    def restrict(self, table: str, externalid: str, subsidiaries: Iterable[int]) -> None:
        with self.lock:
            self.db.execute(f"UPDATE {table} SET subsidiary = ? WHERE externalid = ?",
                            (", ".join(str(s) for s in subsidiaries), externalid))

    def seed_demo(self) -> None:
        """The sample firm's set-up: three subsidiaries, its chart, periods 2026-01..2027-12, cost centers as
        departments restricted to their subsidiary, locations, service items and tax codes."""
        for c in ("USD", "GBP", "EUR", "CAD"):
            self.currency_id(c)
        subs = {"US01": self.add_subsidiary("Ledgerbridge US Inc.", "USD", "US", "US01"),
                "UK01": self.add_subsidiary("Ledgerbridge UK Ltd", "GBP", "UK", "UK01"),
                "DE01": self.add_subsidiary("Ledgerbridge DE GmbH", "EUR", "DE", "DE01")}
        chart = [("1100", "Accounts receivable", "AcctRec"), ("1200", "Unbilled receivables", "OthCurrAsset"),
                 ("2100", "Accrued payroll", "OthCurrLiab"), ("2200", "Employee expenses payable", "OthCurrLiab"),
                 ("2300", "Sales tax / VAT payable", "OthCurrLiab"), ("2400", "Deferred revenue", "DeferRevenue"),
                 ("4000", "Service revenue (T&M)", "Income"), ("4100", "Fixed-fee revenue", "Income"),
                 ("4200", "Milestone revenue", "Income"), ("4300", "Reimbursable expense revenue", "Income"),
                 ("5000", "Project labor cost", "COGS"), ("5100", "Project expenses", "COGS"),
                 ("4900", "Invoice clearing", "Income"), ("7900", "FX and rounding differences", "OthExpense")]
        acct = {n: self.add_account(n, name, kind, subs.values()) for n, name, kind in chart}
        self.add_months("2026-01", "2027-12")
        for ent, sid in subs.items():
            cc = ent[:2]
            for unit in ("DEL", "ADV", "OPS"):
                self.add_segment("department", f"CC-{unit}-{cc}", f"{unit} {cc}", [sid])
        for code, name in (("DEP-ADV", "Advisory"), ("DEP-DEL", "Delivery"), ("DEP-OPS", "Operations")):
            self.add_segment("classification", code, name)
        for code, sid in (("LOC-NYC", 1), ("LOC-SFO", 1), ("LOC-LON", 2), ("LOC-MAN", 2), ("LOC-BER", 3),
                          ("LOC-MUC", 3)):
            self.add_segment("location", code, code[4:], [sid])
        for itemid, income in (("PS-TM", "4000"), ("PS-FF", "4100"), ("PS-MS", "4200"), ("PS-EXP", "4300"),
                               ("PS-BILL", "4900")):  # invoiced work: the clearing the engine relieves
            self.insert("item", itemid=itemid, displayname=itemid, incomeaccount=acct[income], isinactive=False)
        for code, rate in (("US-EXEMPT", "0"), ("UK-VAT20", "20"), ("DE-VAT19", "19")):
            self.insert("salestaxitem", itemid=code, rate=rate, taxaccount=acct["2300"], isinactive=False)

    # ------------------------------------------------------------------ inspection

    def count(self, recordtype: str, externalid: str | None = None) -> int:
        if recordtype in ("customer", "job", "employee"):
            sql, args = f"SELECT count(*) AS n FROM {recordtype}", []
            if externalid is not None:
                sql, args = sql + " WHERE externalid = ?", [externalid]
        else:
            sql, args = 'SELECT count(*) AS n FROM "transaction" WHERE recordtype = ?', [recordtype]
            if externalid is not None:
                sql, args = sql + " AND externalid = ?", [*args, externalid]
        row = self.one(sql, *args)
        return int(row["n"]) if row else 0

    def external_ids(self, recordtype: str) -> list[str]:
        return [str(r["externalid"]) for r in self.rows(
            'SELECT externalid FROM "transaction" WHERE recordtype = ? ORDER BY id', recordtype)]

    def pay_invoice(self, externalid: str) -> None:
        """The customer paid: status B (Paid In Full), nothing remaining."""
        with self.lock:
            n = self.db.execute("UPDATE \"transaction\" SET status = 'B', foreignamountremaining = '0', "
                                "lastmodifieddate = ? WHERE recordtype = 'invoice' AND externalid = ?",
                                (self.now(), externalid)).rowcount
        if n != 1:
            raise ValueError(f"no invoice {externalid}")

    # ------------------------------------------------------------------ SuiteQL

    def suiteql(self, query: str, limit: int, offset: int) -> dict[str, Any]:
        text = query.strip()
        if not text.upper().startswith("SELECT") or ";" in text:
            raise Problem(400, "INVALID_PARAMETER", "SuiteQL is read-only: one SELECT statement", "q")
        with self.lock:
            try:
                self.db.execute("PRAGMA query_only = ON")
                rows = self.db.execute(translate(text)).fetchall()
            except (sqlite3.Error, ValueError) as exc:
                raise Problem(400, "INVALID_PARAMETER", f"Invalid search query: {exc}", "q") from None
            finally:
                self.db.execute("PRAGMA query_only = OFF")
        visible = rows[: self.suiteql_cap]
        page = visible[offset: offset + limit]
        items = [{"links": [], **{k.lower(): str(v) for k, v in dict(r).items() if v is not None}} for r in page]
        return {"links": [], "count": len(items), "hasMore": offset + len(items) < len(visible),
                "offset": offset, "totalResults": len(visible), "items": items}

    # ------------------------------------------------------------------ record API

    def find(self, record: str, key: str) -> dict[str, Any] | None:
        """A record by internal id or ``eid:<external id>``."""
        col, val = ("externalid", key[4:]) if key.startswith("eid:") else ("id", key)
        if record in ("customer", "job", "employee"):
            return self.one(f"SELECT * FROM {record} WHERE {col} = ?", val)
        return self.one(f'SELECT * FROM "transaction" WHERE recordtype = ? AND {col} = ?', record, val)

    def get(self, record: str, key: str) -> dict[str, Any]:
        row = self.find(record, key)
        if row is None:
            raise Problem(404, "NONEXISTENT_ID", f"The record instance does not exist. Provide a valid record "
                          f"instance ID ({record} {key}).", "id")
        if record in ("journalentry", "invoice"):
            lines = self.rows('SELECT tl.*, tal.account FROM transactionline tl JOIN transactionaccountingline tal '
                              'ON tal."transaction" = tl."transaction" AND tal.transactionline = tl.id '
                              'WHERE tl."transaction" = ? ORDER BY tl.id', row["id"])
            row["line"] = {"items": lines}
        return row

    def delete(self, record: str, key: str) -> None:
        row = self.get(record, key)
        with self.lock:
            if record in ("customer", "job", "employee"):
                self.db.execute(f"DELETE FROM {record} WHERE id = ?", (row["id"],))
            else:
                for table in ("transactionaccountingline", "transactionline"):
                    self.db.execute(f'DELETE FROM {table} WHERE "transaction" = ?', (row["id"],))
                self.db.execute('DELETE FROM "transaction" WHERE id = ?', (row["id"],))

    def upsert(self, record: str, externalid: str, body: Mapping[str, Any]) -> int:
        if record == "journalentry":
            self._hold()
        with self.lock:
            self.db.execute("BEGIN")
            try:
                rid = getattr(self, f"_upsert_{record}")(externalid, body)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return int(rid)

    def _hold(self) -> None:
        with self.lock:
            self.journal_puts += 1
            n = self.journal_puts
        if self.hold_after is not None and n > self.hold_after:
            self.held.wait(timeout=60)

    def _existing(self, table: str, externalid: str, recordtype: str | None = None) -> dict[str, Any] | None:
        if recordtype:
            return self.one(f'SELECT * FROM "{table}" WHERE recordtype = ? AND externalid = ?', recordtype,
                            externalid)
        return self.one(f"SELECT * FROM {table} WHERE externalid = ?", externalid)

    def _write_entity(self, table: str, externalid: str, values: dict[str, Any]) -> int:
        old = self._existing(table, externalid)
        values["lastmodifieddate"] = self.now()
        if old is None:
            return self.insert(table, externalid=externalid, datecreated=values["lastmodifieddate"], **values)
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", [self._sql(v) for v in values.values()]
                        + [old["id"]])
        return int(old["id"])

    def _subsidiary(self, body: Mapping[str, Any], required: bool = True) -> dict[str, Any] | None:
        sid = _ref(body, "subsidiary")
        if sid is None:
            if required:
                raise Problem(400, "USER_ERROR", "Please enter value(s) for: Subsidiary", "subsidiary")
            return None
        row = self.one("SELECT * FROM subsidiary WHERE id = ?", sid)
        if row is None or row["isinactive"] == "T":
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid subsidiary reference key {sid}.", "subsidiary")
        return row

    def _currency(self, body: Mapping[str, Any], default: int | None = None) -> dict[str, Any]:
        cid = _ref(body, "currency") or (str(default) if default is not None else None)
        row = self.one("SELECT * FROM currency WHERE id = ?", cid) if cid else None
        if row is None:
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid currency reference key {cid}.", "currency")
        return row

    def _upsert_customer(self, externalid: str, body: Mapping[str, Any]) -> int:
        sub = self._subsidiary(body)
        assert sub is not None
        cur = self._currency(body, sub["currency"])
        name = str(body.get("companyName") or "").strip()
        if not name:
            raise Problem(400, "USER_ERROR", "Please enter value(s) for: Company Name", "companyName")
        return self._write_entity("customer", externalid, {
            "entityid": name, "companyname": name, "subsidiary": sub["id"], "currency": cur["id"],
            "isinactive": bool(body.get("isInactive")), "isperson": bool(body.get("isPerson"))})

    def _upsert_job(self, externalid: str, body: Mapping[str, Any]) -> int:
        sub = self._subsidiary(body)
        assert sub is not None
        parent = self.one("SELECT * FROM customer WHERE id = ?", _ref(body, "parent"))
        if parent is None:
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid parent reference key {_ref(body, 'parent')}.",
                          "parent")
        if parent["subsidiary"] != sub["id"]:
            raise Problem(400, "USER_ERROR", "The project's subsidiary must be the customer's subsidiary.",
                          "subsidiary")
        name = str(body.get("companyName") or "").strip()
        if not name:
            raise Problem(400, "USER_ERROR", "Please enter value(s) for: Project Name", "companyName")
        return self._write_entity("job", externalid, {
            "entityid": f"{parent['companyname']} : {name}", "companyname": name, "parent": parent["id"],
            "subsidiary": sub["id"], "startdate": body.get("startDate"),
            "projectedenddate": body.get("projectedEndDate"),
            "isinactive": bool(body.get("isInactive"))})

    def _upsert_employee(self, externalid: str, body: Mapping[str, Any]) -> int:
        sub = self._subsidiary(body)
        assert sub is not None
        dept = _ref(body, "department")
        if dept is not None:
            self._segment("department", dept, sub["id"], "department")
        last = str(body.get("lastName") or "").strip()
        if not last:
            raise Problem(400, "USER_ERROR", "Please enter value(s) for: Last Name", "lastName")
        first = str(body.get("firstName") or "")
        return self._write_entity("employee", externalid, {
            "entityid": f"{first} {last}".strip(), "firstname": first, "lastname": last,
            "title": body.get("title"), "subsidiary": sub["id"], "department": dept,
            "isinactive": bool(body.get("isInactive"))})

    def _segment(self, table: str, rid: str, subsidiary: int, path: str) -> int:
        return int(self._restricted(table, rid, subsidiary, path)["id"])

    def _restricted(self, table: str, rid: str | None, subsidiary: int, path: str) -> dict[str, Any]:
        """An active record of ``table`` available to ``subsidiary`` (its multi-select ``subsidiary`` is empty or
        names it), or NetSuite's INVALID_KEY_OR_REF refusal."""
        row = self.one(f"SELECT * FROM {table} WHERE id = ?", rid) if rid else None
        if row is None or row["isinactive"] == "T":
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid {path} reference key {rid}.", path)
        allowed = {s.strip() for s in str(row["subsidiary"] or "").split(",") if s.strip()}
        if allowed and str(subsidiary) not in allowed:
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid {path} reference key {rid} for subsidiary "
                          f"{subsidiary}.", path)
        return row

    def _period(self, body: Mapping[str, Any], trandate: str, kind: str) -> dict[str, Any]:
        pid = _ref(body, "postingPeriod")
        if pid is not None:
            p = self.one("SELECT * FROM accountingperiod WHERE id = ?", pid)
            if p is None or p["isposting"] != "T":
                raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid postingperiod reference key {pid}.",
                              "postingPeriod")
            if not p["startdate"] <= trandate <= p["enddate"]:
                raise Problem(400, "USER_ERROR", "The transaction date is outside the posting period.",
                              "postingPeriod")
        else:
            p = self.one("SELECT * FROM accountingperiod WHERE isposting = 'T' AND startdate <= ? AND enddate >= ?",
                         trandate, trandate)
            if p is None:
                raise Problem(400, "USER_ERROR", f"No accounting period covers {trandate}.", "tranDate")
        if p["closed"] == "T" or p["alllocked"] == "T" or (kind == "invoice" and p["arlocked"] == "T"):
            raise Problem(400, "USER_ERROR", f"The accounting period {p['periodname']} is closed or locked; you "
                          "cannot post to it.", "postingPeriod")
        return p

    def _trandate(self, body: Mapping[str, Any]) -> str:
        try:
            return dt.date.fromisoformat(str(body.get("tranDate"))).isoformat()
        except ValueError:
            raise Problem(400, "INVALID_CONTENT", f"Invalid tranDate {body.get('tranDate')!r}.", "tranDate") from None

    def _entity(self, rid: str | None, path: str) -> int | None:
        if rid is None:
            return None
        for table in ("customer", "job", "employee"):
            if self.one(f"SELECT id FROM {table} WHERE id = ?", rid):
                return int(rid)
        raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid entity reference key {rid}.", path)

    def _write_transaction(self, recordtype: str, externalid: str, header: dict[str, Any],
                           lines: list[tuple[dict[str, Any], int, Decimal, Decimal]], rate: Decimal,
                           base: str) -> int:
        """Create or replace a transaction with its lines; lines = (transactionline values, account, foreign
        debit, foreign credit); the GL (``transactionaccountingline``) is in the subsidiary's currency."""
        old = self._existing("transaction", externalid, recordtype)
        now = self.now()
        header["lastmodifieddate"] = now
        if old is None:
            tid = self.insert("transaction", recordtype=recordtype, externalid=externalid, createddate=now, **header)
        else:
            tid = int(old["id"])
            header.pop("tranid", None)
            self.db.execute('UPDATE "transaction" SET ' + ", ".join(f"{k} = ?" for k in header) + " WHERE id = ?",
                            [self._sql(v) for v in header.values()] + [tid])
            for table in ("transactionaccountingline", "transactionline"):
                self.db.execute(f'DELETE FROM {table} WHERE "transaction" = ?', (tid,))
        for n, (values, account, debit, credit) in enumerate(lines):
            lid = self.insert("transactionline", transaction=tid, linesequencenumber=n,
                              debitforeignamount=debit or None, creditforeignamount=credit or None,
                              foreignamount=debit - credit, **values)
            bd, bc = _q(debit * rate, base), _q(credit * rate, base)
            self.insert("transactionaccountingline", transaction=tid, transactionline=lid, account=account,
                        debit=bd or None, credit=bc or None, amount=bd - bc, posting=True, accountingbook=1)
        return tid

    def _rate(self, body: Mapping[str, Any], currency: str, base: str) -> Decimal:
        if currency == base:
            rate = _dec(body.get("exchangeRate", 1), "exchangeRate")
            if rate != 1:
                raise Problem(400, "USER_ERROR", "The exchange rate must be 1 in the subsidiary currency.",
                              "exchangeRate")
            return rate
        if body.get("exchangeRate") is None:
            raise Problem(400, "USER_ERROR", "Please enter value(s) for: Exchange Rate", "exchangeRate")
        rate = _dec(body["exchangeRate"], "exchangeRate")
        if rate <= 0:
            raise Problem(400, "INVALID_CONTENT", "The exchange rate must be positive.", "exchangeRate")
        return rate

    def _next_tranid(self, prefix: str, kind: str) -> str:
        return f"{prefix}-{kind}{next(self._seq):06d}"

    def _upsert_journalentry(self, externalid: str, body: Mapping[str, Any]) -> int:
        sub = self._subsidiary(body)
        assert sub is not None
        cur = self._currency(body)
        base = str(self.one("SELECT symbol FROM currency WHERE id = ?", sub["currency"])["symbol"])  # type: ignore[index]
        trandate = self._trandate(body)
        period = self._period(body, trandate, "journal")
        rate = self._rate(body, cur["symbol"], base)
        items = (body.get("line") or {}).get("items") if isinstance(body.get("line"), Mapping) else None
        if not isinstance(items, list) or len(items) < 2:
            raise Problem(400, "USER_ERROR", "A journal entry needs at least two lines.", "line")
        digits = DIGITS.get(cur["symbol"], 2)
        lines: list[tuple[dict[str, Any], int, Decimal, Decimal]] = []
        total_d = total_c = ZERO
        for i, it in enumerate(items):
            where = f"line.items[{i}]"
            acct = self._restricted("account", _ref(it, "account"), sub["id"], f"{where}.account")
            debit = _dec(it.get("debit", 0), f"{where}.debit")
            credit = _dec(it.get("credit", 0), f"{where}.credit")
            if debit < 0 or credit < 0 or (debit and credit) or not (debit or credit):
                raise Problem(400, "USER_ERROR", f"{where}: enter either a debit or a credit amount.", where)
            for amt in (debit, credit):
                if -amt.as_tuple().exponent > digits:  # type: ignore[operator]
                    raise Problem(400, "INVALID_CONTENT", f"{where}: {amt} has more decimals than {cur['symbol']} "
                                  "allows.", where)
            values: dict[str, Any] = {"subsidiary": sub["id"], "memo": it.get("memo"), "mainline": False,
                                      "taxline": False}
            for fld, table in (("department", "department"), ("class", "classification"),
                               ("location", "location")):
                rid = _ref(it, fld)
                if rid is not None:
                    values[fld] = self._segment(table, rid, sub["id"], f"{where}.{fld}")
            values["entity"] = self._entity(_ref(it, "entity"), f"{where}.entity")
            if acct["accttype"] in ("AcctRec", "AcctPay") and values["entity"] is None:
                raise Problem(400, "USER_ERROR", f"{where}: you must enter a Name for an A/R or A/P account line.",
                              f"{where}.entity")
            total_d += debit
            total_c += credit
            lines.append((values, int(acct["id"]), debit, credit))
        if total_d != total_c:
            raise Problem(400, "USER_ERROR", f"The transaction is out of balance: debits {total_d}, credits "
                          f"{total_c}. Please enter balanced debits and credits.", "line")
        old = self._existing("transaction", externalid, "journalentry")
        header = {"tranid": old["tranid"] if old else self._next_tranid(sub["tranprefix"], "JE"), "type": "Journal",
                  "trandate": trandate, "postingperiod": period["id"], "currency": cur["id"], "exchangerate": rate,
                  "memo": body.get("memo"), "approved": bool(body.get("approved", True)), "status": "B",
                  "foreigntotal": total_d}
        return self._write_transaction("journalentry", externalid, header, lines, rate, base)

    def _upsert_invoice(self, externalid: str, body: Mapping[str, Any]) -> int:
        cust = self.one("SELECT * FROM customer WHERE id = ?", _ref(body, "entity"))
        if cust is None or cust["isinactive"] == "T":
            raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid entity reference key {_ref(body, 'entity')}.",
                          "entity")
        sub = self._subsidiary(body, required=False) or self.one("SELECT * FROM subsidiary WHERE id = ?",
                                                                 cust["subsidiary"])
        assert sub is not None
        if sub["id"] != cust["subsidiary"]:
            raise Problem(400, "USER_ERROR", "The subsidiary must be the customer's subsidiary.", "subsidiary")
        cur = self._currency(body, cust["currency"])
        base = str(self.one("SELECT symbol FROM currency WHERE id = ?", sub["currency"])["symbol"])  # type: ignore[index]
        rate = Decimal(1) if cur["symbol"] == base else _dec(body.get("exchangeRate", 1), "exchangeRate")
        trandate = self._trandate(body)
        period = self._period(body, trandate, "invoice")
        items = (body.get("item") or {}).get("items") if isinstance(body.get("item"), Mapping) else None
        if not isinstance(items, list) or not items:
            raise Problem(400, "USER_ERROR", "Please enter at least one line item.", "item")
        lines: list[tuple[dict[str, Any], int, Decimal, Decimal]] = []
        net = ZERO
        taxes: dict[int, Decimal] = {}
        for i, it in enumerate(items):
            where = f"item.items[{i}]"
            item = self.one("SELECT * FROM item WHERE id = ?", _ref(it, "item"))
            if item is None or item["isinactive"] == "T":
                raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid item reference key {_ref(it, 'item')}.",
                              f"{where}.item")
            qty = _dec(it.get("quantity", 1), f"{where}.quantity")
            unit = _dec(it.get("rate", 0), f"{where}.rate")
            amount = _q(_dec(it["amount"], f"{where}.amount") if it.get("amount") is not None else qty * unit,
                        cur["symbol"])
            tax_id = _ref(it, "taxCode")
            if tax_id is not None:
                tax = self.one("SELECT * FROM salestaxitem WHERE id = ?", tax_id)
                if tax is None or tax["isinactive"] == "T":
                    raise Problem(400, "INVALID_KEY_OR_REF", f"Invalid taxcode reference key {tax_id}.",
                                  f"{where}.taxCode")
                acct_tax = int(tax["taxaccount"])
                taxes[acct_tax] = taxes.get(acct_tax, ZERO) + _q(amount * Decimal(tax["rate"]) / 100, cur["symbol"])
            net += amount
            lines.append(({"subsidiary": sub["id"], "entity": cust["id"], "memo": it.get("description"),
                           "mainline": False, "taxline": False, "item": item["id"], "quantity": qty, "rate": unit},
                          int(item["incomeaccount"]), ZERO, amount))
        tax_total = sum(taxes.values(), ZERO)
        total = net + tax_total
        lines += [({"subsidiary": sub["id"], "entity": cust["id"], "mainline": False, "taxline": True},
                   acct, ZERO, amt) for acct, amt in sorted(taxes.items()) if amt]
        if self.ar_account is None:
            raise Problem(400, "USER_ERROR", "No accounts receivable account is set up.", "account")
        mainline = ({"subsidiary": sub["id"], "entity": cust["id"], "mainline": True, "taxline": False},
                    self.ar_account, total, ZERO)
        old = self._existing("transaction", externalid, "invoice")
        header = {"tranid": old["tranid"] if old else self._next_tranid(sub["tranprefix"], "INV"),
                  "type": "CustInvc", "trandate": trandate, "duedate": body.get("dueDate"),
                  "postingperiod": period["id"], "currency": cur["id"], "exchangerate": rate, "entity": cust["id"],
                  "memo": body.get("memo"), "otherrefnum": body.get("otherRefNum"), "status": "A",
                  "foreigntotal": total, "foreignamountremaining": total, "approved": True}
        return self._write_transaction("invoice", externalid, header, [mainline, *lines], rate, base)


# --------------------------------------------------------------------------------------------------- auth


def _pct(value: str) -> str:
    return urllib.parse.quote(value, safe="~-._")


class Auth:
    """Token issuing and checking for both NetSuite schemes."""

    def __init__(self, *, account_id: str, client_id: str, certificate_id: str, public_key: str,
                 algorithms: Iterable[str], token_lifetime: float, tba: Mapping[str, str]) -> None:
        self.realm = account_id.upper().replace("-", "_")
        self.client_id = client_id
        self.certificate_id = certificate_id
        self.public_key = public_key
        self.algorithms = [a for a in algorithms if a in JWT_ALGS]
        self.lifetime = token_lifetime
        self.tba = dict(tba)
        self.tokens: dict[str, float] = {}
        self.nonces: set[str] = set()
        self.issued = 0
        self.refused = 0
        self.expired_seen = 0
        self._lock = threading.Lock()

    def issue(self, form: Mapping[str, str], token_url: str) -> dict[str, Any]:
        import jwt

        if form.get("grant_type") != "client_credentials":
            raise _OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            raise _OAuthError("invalid_request", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion") or ""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise _OAuthError("invalid_request", f"client_assertion is not a JWT: {exc}") from None
        if header.get("alg") not in self.algorithms:
            raise _OAuthError("invalid_request", f"JWT algorithm {header.get('alg')} is not accepted")
        if header.get("kid") != self.certificate_id:
            raise _OAuthError("invalid_client", "unknown certificate id (kid)")
        try:
            claims = jwt.decode(assertion, self.public_key, algorithms=self.algorithms, audience=token_url,
                                issuer=self.client_id, options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise _OAuthError("invalid_grant", f"client_assertion refused: {exc}") from None
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            raise _OAuthError("invalid_grant", "exp may be at most 60 minutes after iat")
        scope = claims.get("scope")
        scopes = set(scope if isinstance(scope, list) else str(scope or "").replace(",", " ").split())
        if "rest_webservices" not in scopes:
            raise _OAuthError("invalid_scope", "scope rest_webservices is required")
        token = base64.urlsafe_b64encode(hashlib.sha256(f"{assertion}{time.monotonic()}".encode()).digest()).decode()
        with self._lock:
            self.tokens[token] = time.monotonic() + self.lifetime
            self.issued += 1
        return {"access_token": token, "token_type": "bearer", "expires_in": int(self.lifetime) or 1}

    def check(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            with self._lock:
                expires = self.tokens.get(header[7:])
            if expires is not None and time.monotonic() < expires:
                return
            if expires is not None:
                self.expired_seen += 1
        elif header.startswith("OAuth ") and self._tba_ok(request, header):
            return
        self.refused += 1
        raise Problem(401, "INVALID_LOGIN", "Invalid login attempt. For more details, see the Login Audit Trail in "
                      "the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.")

    def _tba_ok(self, request: Request, header: str) -> bool:
        params: dict[str, str] = {}
        for part in header[6:].split(","):
            k, _, v = part.strip().partition("=")
            params[k] = urllib.parse.unquote(v.strip().strip('"'))
        if (params.get("realm") != self.realm or params.get("oauth_consumer_key") != self.tba["consumer_key"]
                or params.get("oauth_token") != self.tba["token_id"]
                or params.get("oauth_signature_method") != "HMAC-SHA256"):
            return False
        try:
            if abs(time.time() - int(params.get("oauth_timestamp", "0"))) > 300:
                return False
        except ValueError:
            return False
        url = request.url
        pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        pairs += [(k, v) for k, v in params.items() if k.startswith("oauth_") and k != "oauth_signature"]
        encoded = sorted((_pct(k), _pct(v)) for k, v in pairs)
        base_url = f"{url.scheme.lower()}://{url.netloc.lower()}{url.path}"
        text = "&".join((request.method.upper(), _pct(base_url), _pct("&".join(f"{k}={v}" for k, v in encoded))))
        key = f"{_pct(self.tba['consumer_secret'])}&{_pct(self.tba['token_secret'])}".encode()
        want = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(want, params.get("oauth_signature", "")):
            return False
        with self._lock:
            nonce = params.get("oauth_nonce", "")
            if not nonce or nonce in self.nonces:
                return False
            self.nonces.add(nonce)
        return True


class _OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


# --------------------------------------------------------------------------------------------------- app


def _demo_key() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def create_app(*, account_id: str = "TSTDRV2100000", client_id: str = "lb-sandbox-client",
               certificate_id: str = "lb-sandbox-cert", public_key: str | None = None,
               algorithms: str = ",".join(JWT_ALGS), consumer_key: str = "lb-consumer-key",
               consumer_secret: str = "lb-consumer-secret", token_id: str = "lb-token-id",
               token_secret: str = "lb-token-secret", token_lifetime: float = 3600.0, concurrency: int = 5,
               limit_style: str = "429", latency: float = 0.0, suiteql_cap: int = 100_000,
               hold_after: int | None = None, lost_answer_every: int = 0, seed: bool = True,
               tz_offset_hours: float = -8.0) -> FastAPI:
    """The sandbox app (options: see the module doc). ``public_key``: PEM text or a file path; without it a demo
    ES256 key pair is generated and the private key written to a temp file named in the banner."""
    if limit_style not in ("429", "sss"):
        raise ValueError("limit_style must be 429 or sss")
    demo_private: str | None = None
    if public_key and "-----BEGIN" not in public_key:  # a file path
        public_key = Path(public_key).read_text()
    if not public_key:
        demo_private, public_key = _demo_key()
    store = Store(suiteql_cap=suiteql_cap, tz_offset_hours=tz_offset_hours, hold_after=hold_after)
    if seed:
        store.seed_demo()
    auth = Auth(account_id=account_id, client_id=client_id, certificate_id=certificate_id, public_key=public_key,
                algorithms=[a.strip() for a in str(algorithms).split(",")], token_lifetime=float(token_lifetime),
                tba={"consumer_key": consumer_key, "consumer_secret": consumer_secret, "token_id": token_id,
                     "token_secret": token_secret})
    calls = CallLog()
    limits = RateWindow(concurrency=int(concurrency))
    app = FastAPI(title="NetSuite sandbox (SuiteTalk REST)")
    app.state.store, app.state.calls, app.state.limits, app.state.auth = store, calls, limits, auth
    app.state.account_id = account_id
    app.state.demo_private_key = demo_private
    app.state.release_hold = store.held.set
    key_file = None
    if demo_private is not None:  # one file per account id, replaced each start (no litter from test runs)
        key_path = Path(tempfile.gettempdir()) / f"ledgerbridge-netsuite-sandbox-{account_id}.pem"
        key_path.write_text(demo_private)
        key_path.chmod(0o600)
        key_file = str(key_path)
    app.state.banner = (f"account_id={account_id} client_id={client_id} certificate_id={certificate_id} "
                        f"algorithm={'ES256 private key in ' + key_file if key_file else 'per your key'}\n"
                        f"TBA: consumer_key={consumer_key} consumer_secret={consumer_secret} token_id={token_id} "
                        f"token_secret={token_secret}\nsubsidiaries: US01=1 UK01=2 DE01=3; concurrency pool "
                        f"{concurrency}; token lifetime {token_lifetime:g} s")

    @app.middleware("http")
    async def governance(request: Request, call_next: Any) -> Response:
        path = request.url.path
        resp: Response
        if not path.startswith("/services/rest/") or path == TOKEN:
            resp = await call_next(request)
            calls.add(request.method, path, resp.status_code)
            return resp
        try:
            auth.check(request)
        except Problem as refused:
            calls.add(request.method, path, refused.status)
            return refused.response()
        if limits.try_acquire() is not None:
            p = (Problem(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
                 if limit_style == "429" else
                 Problem(400, "SSS_REQUEST_LIMIT_EXCEEDED", "Request limit exceeded. Request blocked."))
            calls.add(request.method, path, p.status)
            return p.response()
        try:
            if latency:
                await asyncio.sleep(float(latency))
            resp = await call_next(request)
        finally:
            limits.release()
        calls.add(request.method, path, resp.status_code)
        return resp

    @app.post(TOKEN)
    async def token(request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode(errors="replace")))
        try:
            return JSONResponse(auth.issue(form, str(request.url)))
        except _OAuthError as e:
            auth.refused += 1
            return JSONResponse({"error": e.error, "error_description": e.description}, status_code=400)

    def _record(record: str) -> None:
        if record not in RECORDS:
            raise Problem(404, "INVALID_RCRD_TYPE", f"Record type {record} is not supported by this sandbox.")

    puts = [0]
    lost_lock = threading.Lock()

    @app.put("/services/rest/record/v1/{record}/{key}")
    async def put(record: str, key: str, request: Request) -> Response:
        raw = await request.body()
        return await asyncio.to_thread(_guard, lambda: _upsert(record, key, raw))

    def _upsert(record: str, key: str, raw: bytes) -> Response:
        _record(record)
        if not key.startswith("eid:"):
            raise Problem(400, "INVALID_REQUEST", "PUT upserts by external id: use eid:<externalId>.", "id")
        try:
            body = json.loads(raw, parse_float=Decimal)
        except ValueError:
            raise Problem(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise Problem(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        eid = urllib.parse.unquote(key[4:])
        if not eid or "|" in eid:
            raise Problem(400, "INVALID_CONTENT", "Invalid external id.", "externalId")
        rid = store.upsert(record, eid, body)
        with lost_lock:
            puts[0] += 1
            lost = bool(lost_answer_every) and puts[0] % int(lost_answer_every) == 0
        if lost:  # applied, but the answer is lost on the way (a gateway timeout): the client cannot know
            return JSONResponse({"title": "Gateway Timeout", "status": 504}, status_code=504)
        return Response(status_code=204, headers={"Location": f"/services/rest/record/v1/{record}/{rid}"})

    @app.get("/services/rest/record/v1/{record}/{key}")
    def get(record: str, key: str) -> Response:
        def run() -> Response:
            _record(record)
            return JSONResponse(json.loads(json.dumps(store.get(record, urllib.parse.unquote(key)), default=str)))
        return _guard(run)

    @app.delete("/services/rest/record/v1/{record}/{key}")
    def delete(record: str, key: str) -> Response:
        def run() -> Response:
            _record(record)
            store.delete(record, urllib.parse.unquote(key))
            return Response(status_code=204)
        return _guard(run)

    @app.post("/services/rest/query/v1/suiteql")
    async def suiteql(request: Request) -> Response:
        raw = await request.body()

        def run() -> Response:
            if request.headers.get("prefer", "").lower() != "transient":
                raise Problem(400, "INVALID_HEADER", "SuiteQL requests need the header Prefer: transient.",
                              "Prefer")
            try:
                q = json.loads(raw).get("q")
                limit = int(request.query_params.get("limit", 1000))
                offset = int(request.query_params.get("offset", 0))
            except (ValueError, AttributeError):
                raise Problem(400, "INVALID_CONTENT", "Body must be {\"q\": \"SELECT ...\"}.") from None
            if not isinstance(q, str) or not 1 <= limit <= 1000 or offset < 0:
                raise Problem(400, "INVALID_PARAMETER", "q must be text, limit 1..1000, offset >= 0.")
            return JSONResponse(store.suiteql(q, limit, offset))
        return await asyncio.to_thread(_guard, run)

    return app


def _guard(fn: Any) -> Response:
    try:
        return fn()  # type: ignore[no-any-return]
    except Problem as p:
        return p.response()
