"""Sandbox of Microsoft Dynamics 365 Finance (F&O OData data entities) + Project Operations on Dataverse.

Built from ``shared/reference/vendors/02-d365-finance-project-operations.md``; one FastAPI app serves three hosts'
worth of endpoints on one port:

- **Microsoft Entra token endpoint** ``POST /<tenant>/oauth2/v2.0/token`` (client credentials, ``scope`` =
  ``<resource>/.default``); tokens live ``token_lifetime`` seconds, an expired or unknown bearer gets 401 with a
  ``WWW-Authenticate`` header. The client id must also be registered in F&O (the *Microsoft Entra applications*
  form: ``app.state.store.fo_apps``) or F&O answers 403.
- **F&O OData** under ``/data``: ``CustomersV3``, ``ProjectsV2``, ``MainAccounts``, ``LedgerJournalHeaders`` /
  ``LedgerJournalLines``, ``FreeTextInvoiceHeaders`` / ``FreeTextInvoiceLines``, ``LedgerFiscalPeriods``,
  ``GeneralJournalAccountEntries`` (posted GL). Keys carry ``dataAreaId``; **without ``cross-company=true`` a read
  returns only the caller's default company** (``default_company``), silently — the trap the vendor documents.
  ``$filter`` (eq/ne/gt/ge/lt/le, and/or, parentheses; ``in`` and ``has`` refused as F&O does), ``$select``,
  ``$top``, ``$count``, server-driven paging (``page_size``, ``Prefer: odata.maxpagesize``) with
  ``@odata.nextLink``. ``$batch`` (multipart/mixed): each changeset is all-or-nothing; ``$<Content-ID>`` references
  earlier requests of the changeset (``POST $1/JournalLines``). The bound action
  ``.../Microsoft.Dynamics.DataEntities.Post`` posts a journal (refusing an unbalanced voucher or a period that is
  not Open, with the OData error shape) or a
  free-text invoice (numbered from the company's number sequence on posting).
- **Dataverse Web API** under ``/api/data/v9.2``: alternate-key upsert ``PATCH <set>(<key>='<value>')``
  (``If-Match: *`` = update only, ``If-None-Match: *`` = create only) and change tracking
  (``Prefer: odata.track-changes`` -> ``@odata.deltaLink``; a delta read returns changed rows and
  ``$deletedEntity`` entries).
- Throttling: ``rate_limit`` requests per ``rate_window`` seconds and ``concurrency`` in flight -> 429 with a
  whole-second ``Retry-After`` (both APIs).

Options: ``tenant``, ``client_id``, ``client_secret``, ``token_lifetime`` (s), ``default_company``,
``companies`` ("usmf:USD,gbsi:GBP"), ``delimiter`` (segment delimiter of display values), ``account_structure``
("MainAccount,CostCenter,Project": the integration format's segments), ``page_size``,
``rate_limit``, ``rate_window``, ``concurrency``, ``seed`` (default true: the sample firm's chart as main accounts,
fiscal years ``seed_years`` ("2025,2026,2027") Open in every company, its tax groups and a few exchange rates),
``hold_after`` (block ``$batch`` requests after that many succeeded, until ``app.state.release.set()``).
Test hooks on ``app.state``: ``store`` (seeding, inspection), ``calls`` (CallLog), ``limits`` (RateWindow),
``release`` (threading.Event), ``after_request`` (list of callables ``(method, path)``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from fastapi import FastAPI, Request, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = ("Dynamics 365 Finance + Project Operations: Entra client-credentials tokens, F&O OData entities with "
               "dataAreaId and cross-company, $batch changesets, journal/invoice posting, Dataverse upsert and delta")

NS = "Microsoft.Dynamics.DataEntities."
CENT = Decimal("0.01")
WRITE_EXC = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"


class ODataError(Exception):
    def __init__(self, status: int, message: str, inner: str = "", code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.inner, self.code = status, message, inner, code

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            err["innererror"] = {"message": self.inner, "type": WRITE_EXC, "stacktrace": ""}
        return {"error": err}


# --------------------------------------------------------------------------------------------------- JSON


def dumps(obj: Any) -> bytes:
    """JSON with Decimal amounts written as exact numbers (as F&O writes them)."""
    text = json.dumps(obj, default=lambda v: f"\x00{v}\x00" if isinstance(v, Decimal) else str(v))
    return re.sub(r'"\\u0000([^"\\]*)\\u0000"', r"\1", text).encode()


def loads(raw: bytes | str) -> Any:
    return json.loads(raw, parse_float=Decimal) if raw else None


# --------------------------------------------------------------------------------------------------- $filter

_TOKEN = re.compile(r"\s*(\(|\)|,|'(?:[^']|'')*'|[A-Za-z_][\w.]*'(?:[^']|'')*'|[^\s(),']+)")
_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}


def _literal(tok: str) -> Any:
    if tok.startswith("'"):
        return tok[1:-1].replace("''", "'")
    if "'" in tok:  # enum: Microsoft.Dynamics.DataEntities.NoYes'Yes'
        return tok.split("'", 1)[1][:-1]
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    if re.fullmatch(r"-?\d+(\.\d+)?", tok):
        return Decimal(tok)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(T[\d:.]+Z?)?", tok):
        return tok if "T" in tok else tok + "T00:00:00Z"
    raise ODataError(400, f"The query specified in the URI is not valid. Unknown literal {tok!r}.")


def _compare(a: Any, op: str, b: Any) -> bool:
    if isinstance(b, Decimal) and a is not None and not isinstance(a, bool):
        a = Decimal(str(a))
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if a is None or b is None:
        return False
    return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])


def parse_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    toks = [t for t in _TOKEN.findall(text) if t]
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(toks):
            raise ODataError(400, "The query specified in the URI is not valid. Unexpected end of $filter.")
        pos += 1
        return toks[pos - 1]

    def primary() -> Callable[[dict[str, Any]], bool]:
        tok = take()
        if tok == "(":
            inner = disjunction()
            if take() != ")":
                raise ODataError(400, "The query specified in the URI is not valid. ')' expected.")
            return inner
        if tok.lower() == "not":
            inner = primary()
            return lambda r: not inner(r)
        op = take().lower()
        if op in ("in", "has"):
            raise ODataError(400, f"The query specified in the URI is not valid. The '{op}' operator is not "
                             "supported by Finance and Operations OData.")
        if op not in _CMP:
            raise ODataError(400, f"The query specified in the URI is not valid. Unknown operator {op!r}.")
        value = _literal(take())
        return lambda r, f=tok, o=op, v=value: _compare(r.get(f), o, v)

    def chain(word: str, operand: Callable[[], Callable[[dict[str, Any]], bool]],
              combine: Callable[[Iterable[bool]], bool]) -> Callable[[dict[str, Any]], bool]:
        parts = [operand()]
        while (peek() or "").lower() == word:
            take()
            parts.append(operand())
        return lambda r: combine(p(r) for p in parts)

    def conjunction() -> Callable[[dict[str, Any]], bool]:
        return chain("and", primary, all)

    def disjunction() -> Callable[[dict[str, Any]], bool]:
        return chain("or", conjunction, any)

    pred = disjunction()
    if pos != len(toks):
        raise ODataError(400, f"The query specified in the URI is not valid. Unexpected {toks[pos]!r}.")
    return pred


# --------------------------------------------------------------------------------------------------- store


@dataclass
class Table:
    name: str
    keys: tuple[str, ...]
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    company_scoped: bool = True

    def key_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(k) for k in self.keys)


@dataclass
class Store:
    """Everything the sandbox holds. Seed through the helper methods or directly (tests)."""

    default_company: str
    currencies: dict[str, str]  # dataAreaId -> accounting currency
    tables: dict[str, Table] = field(default_factory=dict)
    seq: dict[tuple[str, str], int] = field(default_factory=dict)
    tax_rates: dict[str, Decimal] = field(default_factory=dict)  # ItemSalesTaxGroup -> rate
    fx: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (from, to) -> rate (invoices)
    account_structure: tuple[str, ...] = ("MainAccount", "CostCenter", "Project")
    ar_account: str = "1100"
    tax_account: str = "2300"
    fo_apps: set[str] = field(default_factory=set)
    certificates: dict[str, str] = field(default_factory=dict)  # x5t (base64url SHA-1) -> public key PEM
    reads_without_cross_company: list[str] = field(default_factory=list)
    dataverse: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # set -> id -> row
    dv_keys: dict[str, str] = field(default_factory=dict)  # set -> alternate key column
    dv_tracked: set[str] = field(default_factory=lambda: {"msdyn_actuals"})  # tables with "Track changes" on
    dv_version: int = 1000
    dv_versions: dict[tuple[str, str], int] = field(default_factory=dict)
    dv_deleted: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: while a changeset runs: (table, key, the row before or None when created) to undo on failure
    undo: list[tuple[str, tuple[Any, ...], dict[str, Any] | None]] | None = None

    def __post_init__(self) -> None:
        for name, keys, scoped in (
                ("CustomersV3", ("dataAreaId", "CustomerAccount"), True),
                ("ProjectsV2", ("dataAreaId", "ProjectID"), True),
                ("MainAccounts", ("MainAccountId",), False),
                ("LedgerJournalHeaders", ("dataAreaId", "JournalBatchNumber"), True),
                ("LedgerJournalLines", ("dataAreaId", "JournalBatchNumber", "LineNumber"), True),
                ("FreeTextInvoiceHeaders", ("dataAreaId", "InvoiceIdentifier"), True),
                ("FreeTextInvoiceLines", ("dataAreaId", "InvoiceIdentifier", "LineNumber"), True),
                ("LedgerFiscalPeriods", ("dataAreaId", "PeriodName"), True),
                ("GeneralJournalAccountEntries", ("dataAreaId", "EntryId"), True)):
            self.tables.setdefault(name, Table(name, keys, company_scoped=scoped))

    # ---------------------------------------------------------------- seeding helpers

    def next_number(self, company: str, kind: str) -> int:
        self.seq[(company, kind)] = n = self.seq.get((company, kind), 0) + 1
        return n

    def add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        t = self.tables[table]
        key = t.key_of(row)
        if self.undo is not None:
            old = t.rows.get(key)
            self.undo.append((table, key, dict(old) if old is not None else None))
        t.rows[key] = row
        return row

    def touch(self, table: str, row: dict[str, Any]) -> None:
        """About to change ``row`` in place: remember it for a changeset's rollback."""
        if self.undo is not None:
            self.undo.append((table, self.tables[table].key_of(row), dict(row)))

    def rollback(self, mark: int) -> None:
        assert self.undo is not None
        while len(self.undo) > mark:
            table, key, old = self.undo.pop()
            if old is None:
                self.tables[table].rows.pop(key, None)
            else:
                self.tables[table].rows[key] = old

    def rows(self, table: str) -> list[dict[str, Any]]:
        return list(self.tables[table].rows.values())

    def seed_main_accounts(self, accounts: Iterable[tuple[str, str]]) -> None:
        for code, name in accounts:
            self.add("MainAccounts", {"MainAccountId": code, "Name": name, "ChartOfAccounts": "Shared"})

    def seed_periods(self, company: str, year: int, status: str = "Open") -> None:
        for m in range(1, 13):
            start = dt.date(year, m, 1)
            end = (dt.date(year + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1))
            self.add("LedgerFiscalPeriods", {
                "dataAreaId": company, "Calendar": "Fiscal", "FiscalYear": str(year),
                "PeriodName": f"{year}-{m:02d}", "StartDate": f"{start}T12:00:00Z", "EndDate": f"{end}T12:00:00Z",
                "PeriodStatus": status})

    def set_period(self, company: str, period: str, status: str) -> None:
        self.tables["LedgerFiscalPeriods"].rows[(company, period)]["PeriodStatus"] = status

    def journals(self, company: str | None = None) -> list[dict[str, Any]]:
        return [h for h in self.rows("LedgerJournalHeaders") if company is None or h["dataAreaId"] == company]

    # ---------------------------------------------------------------- Dataverse

    def dv_upsert(self, entity_set: str, row: dict[str, Any], *, id_field: str | None = None) -> dict[str, Any]:
        with self.lock:
            idf = id_field or _dv_id_field(entity_set)
            rows = self.dataverse.setdefault(entity_set, {})
            rid = str(row.get(idf) or uuid.uuid4())
            merged = {**rows.get(rid, {}), **row, idf: rid}
            self.dv_version += 1
            merged["versionnumber"] = self.dv_version
            rows[rid] = merged
            self.dv_versions[(entity_set, rid)] = self.dv_version
            return merged

    def dv_delete(self, entity_set: str, rid: str) -> None:
        with self.lock:
            self.dataverse.get(entity_set, {}).pop(rid, None)
            self.dv_version += 1
            self.dv_deleted.append((entity_set, rid, self.dv_version))


def _dv_id_field(entity_set: str) -> str:
    singular = entity_set[:-3] + "y" if entity_set.endswith("ies") else entity_set.rstrip("s")
    return f"{singular}id"


# --------------------------------------------------------------------------------------------------- F&O logic


def _date_of(value: Any) -> dt.date:
    return dt.date.fromisoformat(str(value)[:10])


def _period_of(store: Store, company: str, day: dt.date) -> dict[str, Any] | None:
    for p in store.rows("LedgerFiscalPeriods"):
        if p["dataAreaId"] == company and _date_of(p["StartDate"]) <= day <= _date_of(p["EndDate"]):
            return p
    return None


def _check_period(store: Store, company: str, day: dt.date, what: str) -> None:
    p = _period_of(store, company, day)
    if p is None:
        raise ODataError(400, "An error has occurred.", f"{what}: there is no accounting period for the date "
                         f"{day.isoformat()} in the fiscal calendar of legal entity {company}.")
    if p["PeriodStatus"] != "Open":
        raise ODataError(400, "An error has occurred.", f"{what}: the period {p['PeriodName']} for the date "
                         f"{day.isoformat()} is {p['PeriodStatus']} for the General ledger module in legal entity "
                         f"{company}. Posting is not allowed.")


def _accounting(amount: Decimal, rate: Decimal) -> Decimal:
    return (amount * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def _gl(store: Store, company: str, journal: str, voucher: str, day: dt.date, display: str, main: str,
        currency: str, amount: Decimal, rate: Decimal, text: str) -> None:
    n = store.next_number(company, "gl")
    store.add("GeneralJournalAccountEntries", {
        "dataAreaId": company, "EntryId": n, "JournalNumber": journal, "Voucher": voucher,
        "AccountingDate": f"{day}T12:00:00Z", "LedgerAccount": display, "MainAccount": main,
        "TransactionCurrencyCode": currency, "TransactionCurrencyAmount": amount,
        "AccountingCurrencyAmount": _accounting(amount, rate), "IsCredit": "Yes" if amount < 0 else "No",
        "Text": text})


def _main_account(store: Store, display: str, delimiter: str) -> str:
    segments = display.split(delimiter)
    main = segments[0]
    if len(segments) > len(store.account_structure):
        raise ODataError(400, "An error has occurred.", f"Write failed for table row of type 'LedgerJournalTrans'. "
                         f"Infolog: Error: The number of segments in '{display}' does not match the account "
                         f"structure {delimiter.join(store.account_structure)}.")
    if (main,) not in store.tables["MainAccounts"].rows:
        raise ODataError(400, "An error has occurred.", f"Write failed for table row of type 'LedgerJournalTrans'. "
                         f"Infolog: Error: The value '{main}' in field 'Main account' is not found in the "
                         "related table 'Main accounts'.")
    return main


def post_journal(store: Store, header: dict[str, Any], delimiter: str) -> None:
    co, jb = header["dataAreaId"], header["JournalBatchNumber"]
    if header.get("IsPosted") == "Yes":
        raise ODataError(400, "An error has occurred.", f"Journal {jb} is already posted.")
    lines = sorted((r for r in store.rows("LedgerJournalLines")
                    if r["dataAreaId"] == co and r["JournalBatchNumber"] == jb), key=lambda r: r["LineNumber"])
    if len(lines) < 2:
        raise ODataError(400, "An error has occurred.", f"Journal {jb} has fewer than two lines.")
    acc_sum = Decimal(0)
    for ln in lines:
        _main_account(store, str(ln["AccountDisplayValue"]), delimiter)
        _check_period(store, co, _date_of(ln["TransDate"]), f"Journal {jb}")
        rate = Decimal(str(ln.get("ExchangeRate") or 100))
        amount = Decimal(str(ln.get("DebitAmount") or 0)) - Decimal(str(ln.get("CreditAmount") or 0))
        acc_sum += _accounting(amount, rate)
    if acc_sum != 0:
        raise ODataError(400, "An error has occurred.", f"The transactions on voucher of journal {jb} do not "
                         f"balance as per {_date_of(lines[0]['TransDate'])}. (accounting currency: {acc_sum})")
    voucher = f"GNJL{store.next_number(co, 'voucher'):06d}"
    for ln in lines:
        rate = Decimal(str(ln.get("ExchangeRate") or 100))
        amount = Decimal(str(ln.get("DebitAmount") or 0)) - Decimal(str(ln.get("CreditAmount") or 0))
        store.touch("LedgerJournalLines", ln)
        ln["Voucher"] = voucher
        display = str(ln["AccountDisplayValue"])
        _gl(store, co, jb, voucher, _date_of(ln["TransDate"]), display, display.split(delimiter)[0],
            ln["CurrencyCode"], amount, rate, str(ln.get("Text") or ""))
    store.touch("LedgerJournalHeaders", header)
    header["IsPosted"] = "Yes"


def post_invoice(store: Store, header: dict[str, Any], delimiter: str) -> None:
    co, iid = header["dataAreaId"], header["InvoiceIdentifier"]
    if header.get("IsPosted") == "Yes":
        raise ODataError(400, "An error has occurred.", f"Free text invoice {iid} is already posted.")
    if (co, header.get("CustomerAccount")) not in store.tables["CustomersV3"].rows:
        raise ODataError(400, "An error has occurred.", f"Customer account {header.get('CustomerAccount')} does "
                         f"not exist in legal entity {co}.")
    lines = sorted((r for r in store.rows("FreeTextInvoiceLines")
                    if r["dataAreaId"] == co and r["InvoiceIdentifier"] == iid), key=lambda r: r["LineNumber"])
    if not lines:
        raise ODataError(400, "An error has occurred.", f"Free text invoice {iid} has no lines.")
    day = _date_of(header["InvoiceDate"])
    _check_period(store, co, day, f"Free text invoice {iid}")
    cur, acc_cur = header["CurrencyCode"], store.currencies[co]
    if cur == acc_cur:
        rate = Decimal(100)
    elif (cur, acc_cur) in store.fx:
        rate = store.fx[(cur, acc_cur)] * 100
    else:
        raise ODataError(400, "An error has occurred.", f"Exchange rate from {cur} to {acc_cur} is not set up "
                         f"for {day.isoformat()}.")
    net = tax = Decimal(0)
    for ln in lines:
        group = str(ln.get("ItemSalesTaxGroup") or "")
        if group not in store.tax_rates:
            raise ODataError(400, "An error has occurred.", f"Item sales tax group '{group}' does not exist.")
        _main_account(store, str(ln["MainAccountDisplayValue"]), delimiter)
        amount = Decimal(str(ln["LineAmount"]))
        store.touch("FreeTextInvoiceLines", ln)
        ln["SalesTaxAmount"] = (amount * store.tax_rates[group]).quantize(CENT, rounding=ROUND_HALF_UP)
        net += amount
        tax += ln["SalesTaxAmount"]
    number = f"FTI-{co.upper()}-{store.next_number(co, 'fti'):06d}"
    voucher = f"FTIV{store.next_number(co, 'voucher'):06d}"
    ar, tx = store.ar_account, store.tax_account
    _gl(store, co, number, voucher, day, ar, ar, cur, net + tax, rate, f"Invoice {number}")
    for ln in lines:
        display = str(ln["MainAccountDisplayValue"])
        _gl(store, co, number, voucher, day, display, display.split(delimiter)[0], cur,
            -Decimal(str(ln["LineAmount"])), rate, str(ln.get("Description") or ""))
        if ln["SalesTaxAmount"]:
            _gl(store, co, number, voucher, day, tx, tx, cur, -ln["SalesTaxAmount"], rate, "Sales tax")
    store.touch("FreeTextInvoiceHeaders", header)
    header.update({"IsPosted": "Yes", "InvoiceNumber": number, "InvoiceVoucher": voucher, "TotalLineAmount": net,
                   "TotalTaxAmount": tax, "TotalInvoiceAmount": net + tax})


# --------------------------------------------------------------------------------------------------- the app

#: the sample firm's chart (ledgerbridge.samplefirm), as F&O main accounts
DEMO_CHART = [("1100", "Accounts receivable"), ("1200", "Unbilled receivables"), ("2100", "Accrued payroll"),
              ("2200", "Employee expenses payable"), ("2300", "Sales tax payable"), ("2400", "Deferred revenue"),
              ("4000", "Service revenue"), ("4100", "Fixed-fee revenue"), ("4200", "Milestone revenue"),
              ("4300", "Reimbursable expense revenue"), ("5000", "Project labor cost"),
              ("5100", "Project expenses"), ("7900", "FX and rounding")]


def seed_demo(store: Store, years: Iterable[int]) -> None:
    store.seed_main_accounts(DEMO_CHART)
    for co in store.currencies:
        for year in years:
            store.seed_periods(co, year)
    store.tax_rates.update({"US-EXEMPT": Decimal("0"), "UK-VAT20": Decimal("0.20"), "DE-VAT19": Decimal("0.19")})
    # F&O's own exchange rates, used when an invoice is in another currency than the company's
    store.fx.update({("USD", "GBP"): Decimal("0.79"), ("USD", "EUR"): Decimal("0.92"), ("GBP", "USD"): Decimal("1.27"),
                     ("EUR", "USD"): Decimal("1.09"), ("EUR", "GBP"): Decimal("0.86"), ("GBP", "EUR"): Decimal("1.16")})


@dataclass
class _Ctx:
    """One F&O request: the caller and what the changeset created so far (Content-ID -> entity + key)."""

    created: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


_KEY_SEGMENT = re.compile(r"^([A-Za-z_]\w*)(?:\((.*)\))?$")


def _parse_key(text: str, table: Table) -> tuple[Any, ...]:
    parts = dict(re.findall(r"(\w+)=('(?:[^']|'')*'|[^,]+)", text))
    if not parts and len(table.keys) == 1:
        parts = {table.keys[0]: text}
    try:
        return tuple(_literal(parts[k]) for k in table.keys)
    except KeyError as exc:
        raise ODataError(400, f"The key of {table.name} needs {list(table.keys)}; got {text!r}.") from exc


def create_app(**options: Any) -> FastAPI:
    tenant = str(options.get("tenant", "contoso.onmicrosoft.com"))
    client_id = str(options.get("client_id", "00000000-aaaa-4bbb-8ccc-000000000365"))
    client_secret = str(options.get("client_secret", "sandbox-secret"))
    lifetime = float(options.get("token_lifetime", 3599))
    page_size = int(options.get("page_size", 10000))
    delimiter = str(options.get("delimiter", "-"))
    companies = {}
    for pair in str(options.get("companies", "usmf:USD,gbsi:GBP,demf:EUR")).split(","):
        co, _, cur = pair.partition(":")
        companies[co.strip().lower()] = cur.strip() or "USD"
    default_company = str(options.get("default_company", next(iter(companies)))).lower()
    store = Store(default_company=default_company, currencies=companies, fo_apps={client_id})
    store.account_structure = tuple(str(options.get("account_structure", "MainAccount,CostCenter,Project"))
                                    .split(","))
    store.dv_keys = {"msdyn_projects": str(options.get("project_key", "msdyn_externalid"))}
    if options.get("seed", True):
        seed_demo(store, [int(y) for y in str(options.get("seed_years", "2025,2026,2027")).split(",")])
    limits = RateWindow(limit=options.get("rate_limit"), window=float(options.get("rate_window", 300)),
                        concurrency=options.get("concurrency"))
    hold_after = options.get("hold_after")
    calls = CallLog()
    release = threading.Event()
    tokens: dict[str, tuple[float, str, str]] = {}  # token -> (expires at, scope, client id)
    clock: list[Callable[[], float]] = [time.monotonic]
    after: list[Callable[[str, str], None]] = []
    batches_done = [0]

    app = FastAPI(title="Dynamics 365 sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.calls = calls
    app.state.limits = limits
    app.state.release = release
    app.state.tokens = tokens
    app.state.clock = clock
    app.state.after_request = after
    app.state.batches_done = batches_done
    app.state.banner = (f"Dynamics 365 sandbox — tenant {tenant}, client id {client_id}, client secret "
                        f"{client_secret}; token endpoint <url>/{tenant}/oauth2/v2.0/token, scope <url>/.default; "
                        f"F&O at <url>/data (default company {default_company}; companies "
                        f"{', '.join(f'{c}={v}' for c, v in companies.items())}), Dataverse at <url>/api/data/v9.2")

    def answer(method: str, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
               raw: bytes | None = None, media: str = "application/json; odata.metadata=minimal") -> Response:
        calls.add(method, path, status)
        for hook in list(after):
            hook(method, path)
        content = raw if raw is not None else (dumps(body) if body is not None else b"")
        return Response(content=content, status_code=status, headers=headers or {},
                        media_type=media if content else None)

    # ---------------------------------------------------------------- Entra

    @app.post("/{tid}/oauth2/v2.0/token")
    async def token(tid: str, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))

        def refuse(status: int, error: str, code: int, text: str) -> Response:
            return answer("POST", request.url.path, status, {
                "error": error, "error_description": f"AADSTS{code}: {text}", "error_codes": [code],
                "timestamp": dt.datetime.now(dt.UTC).isoformat(), "trace_id": str(uuid.uuid4())})

        if tid != tenant:
            return refuse(400, "invalid_request", 90002, f"Tenant '{tid}' not found.")
        if form.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != client_id:
            return refuse(400, "unauthorized_client", 700016, f"Application with identifier "
                          f"'{form.get('client_id')}' was not found in the directory '{tenant}'.")
        if form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            problem = check_assertion(form.get("client_assertion", ""), str(request.url))
            if problem is not None:
                return refuse(401, "invalid_client", *problem)
        elif form.get("client_secret") != client_secret:
            return refuse(401, "invalid_client", 7000215, "Invalid client secret provided.")
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return refuse(400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client "
                          "credential flows must have a scope value with /.default suffixed to the resource.")
        tok = secrets.token_urlsafe(24)
        tokens[tok] = (clock[0]() + lifetime, scope, client_id)
        return answer("POST", request.url.path, 200, {"token_type": "Bearer", "expires_in": int(lifetime),
                                                      "ext_expires_in": int(lifetime), "access_token": tok})

    def check_assertion(assertion: str, audience: str) -> tuple[int, str] | None:
        """A certificate credential: RS256 JWT whose ``x5t`` names a certificate registered on the app
        (``store.certificates``: x5t -> public key PEM), audience the token endpoint, iss = sub = client id."""
        import jwt

        try:
            key = store.certificates.get(str(jwt.get_unverified_header(assertion).get("x5t", "")))
        except jwt.PyJWTError:
            return 50027, "Invalid JWT token. The token is malformed."
        if key is None:
            return 700027, ("Client assertion failed signature validation: no certificate with this thumbprint "
                            "is registered on the application.")
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256"], audience=audience)
        except jwt.ExpiredSignatureError:
            return 700024, "Client assertion is not within its valid time range."
        except jwt.PyJWTError as exc:
            return 700027, f"Client assertion failed signature validation: {exc}."
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        return None

    def authorize(request: Request) -> str | Response:
        auth = request.headers.get("authorization", "")
        held = tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        audience = held[1].removesuffix("/.default").rstrip("/") if held else ""
        if held is None or held[0] <= clock[0]() or audience != base_of(request):
            return answer(request.method, request.url.path, 401, headers={
                "WWW-Authenticate": f'Bearer authorization_uri="https://login.microsoftonline.com/{tenant}", '
                                    'error="invalid_token", error_description="The access token is missing, '
                                    'invalid or has expired"'})
        return held[2]

    def throttle(request: Request, dataverse: bool) -> Response | None:
        wait = limits.try_acquire()
        if wait is None:
            return None
        body = ({"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit over the time "
                           "window. Error code -2147015902."}} if dataverse else
                {"error": {"code": "", "message": "Too Many Requests: the request was throttled by resource-based "
                           "throttling. Retry after the time in the Retry-After header."}})
        return answer(request.method, request.url.path, 429, body,
                      headers={"Retry-After": str(max(1, math.ceil(wait)))})

    # ---------------------------------------------------------------- F&O: entity operations

    def table_of(name: str) -> Table:
        t = store.tables.get(name)
        if t is None:
            raise ODataError(404, f"No HTTP resource was found that matches the request URI for entity '{name}'.")
        return t

    def query(t: Table, params: dict[str, str], prefer: str, base: str) -> dict[str, Any]:
        rows = list(t.rows.values())
        cross = params.get("cross-company", "").lower() == "true"
        if t.company_scoped and not cross:
            store.reads_without_cross_company.append(f"{t.name}?{urlencode(params)}")
            rows = [r for r in rows if r.get("dataAreaId") == store.default_company]
        if params.get("$filter"):
            pred = parse_filter(params["$filter"])
            rows = [r for r in rows if pred(r)]
        rows.sort(key=lambda r: tuple(str(v) for v in t.key_of(r)))
        total = len(rows)
        skip = int(params.get("$skiptoken", params.get("$skip", 0)) or 0)
        top = int(params["$top"]) if "$top" in params else None
        m = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = min(page_size, int(m.group(1))) if m else page_size
        end = total if top is None else min(total, skip + top)
        page = rows[skip:min(end, skip + size)]
        if params.get("$select"):
            cols = [c.strip() for c in params["$select"].split(",")]
            page = [{c: r.get(c) for c in cols} for r in page]
        out: dict[str, Any] = {"@odata.context": f"{base}/data/$metadata#{t.name}", "value": page}
        if params.get("$count") == "true":
            out["@odata.count"] = total
        if skip + len(page) < end:
            nxt = {k: v for k, v in params.items() if k not in ("$skiptoken", "$skip")}
            nxt["$skiptoken"] = str(skip + len(page))
            out["@odata.nextLink"] = f"{base}/data/{t.name}?{urlencode(nxt, quote_via=quote)}"
        return out

    def resolve(segment: str, ctx: _Ctx) -> tuple[Table, dict[str, Any] | None, str | None]:
        """``Name``, ``Name(keys)``, ``$1``, optionally followed by ``/Nav`` or ``/<action>``."""
        head, _, rest = segment.partition("/")
        if head.startswith("$"):
            if head[1:] not in ctx.created:
                raise ODataError(400, f"Content-ID reference {head} is not defined in this changeset.")
            name, row = ctx.created[head[1:]]
            return store.tables[name], row, rest or None
        m = _KEY_SEGMENT.match(head)
        if not m:
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '{segment}'.")
        t = table_of(m.group(1))
        if m.group(2) is None:
            return t, None, rest or None
        key = _parse_key(m.group(2), t)
        row = t.rows.get(key)
        if row is None:
            raise ODataError(404, f"Resource not found for the segment '{head}'.")
        return t, row, rest or None

    NAV = {("LedgerJournalHeaders", "JournalLines"): "LedgerJournalLines",
           ("FreeTextInvoiceHeaders", "InvoiceLines"): "FreeTextInvoiceLines"}

    def create(t: Table, body: dict[str, Any], parent: dict[str, Any] | None = None) -> dict[str, Any]:
        row = dict(body)
        row["dataAreaId"] = str(row.get("dataAreaId") or (parent or {}).get("dataAreaId")
                                or store.default_company).lower() if t.company_scoped else None
        if not t.company_scoped:
            row.pop("dataAreaId")
        co = row.get("dataAreaId")
        if t.company_scoped and co not in store.currencies:
            raise ODataError(400, "An error has occurred.", f"Company '{co}' does not exist.")
        if t.name == "LedgerJournalHeaders":
            row.setdefault("JournalBatchNumber", f"{co.upper()}-{store.next_number(co, 'jb'):06d}")
            row.setdefault("JournalName", "GenJrn")
            row["IsPosted"] = "No"
        elif t.name == "LedgerJournalLines":
            if parent is not None:
                row["JournalBatchNumber"] = parent["JournalBatchNumber"]
            if (co, row.get("JournalBatchNumber")) not in store.tables["LedgerJournalHeaders"].rows:
                raise ODataError(400, "An error has occurred.", "Write failed for table row of type "
                                 f"'LedgerJournalTrans'. Journal batch number {row.get('JournalBatchNumber')} "
                                 "does not exist.")
            if "LineNumber" not in row:
                row["LineNumber"] = Decimal(1 + sum(1 for r in t.rows.values() if r["dataAreaId"] == co
                                                    and r["JournalBatchNumber"] == row["JournalBatchNumber"]))
            for k in ("DebitAmount", "CreditAmount", "ExchangeRate", "LineNumber"):
                if k in row:
                    row[k] = Decimal(str(row[k]))
            row.setdefault("AccountType", "Ledger")
        elif t.name == "FreeTextInvoiceHeaders":
            row.setdefault("InvoiceIdentifier", f"FTID-{store.next_number(co, 'ftid'):06d}")
            row.update({"IsPosted": "No", "InvoiceNumber": ""})
        elif t.name == "FreeTextInvoiceLines":
            if parent is not None:
                row["InvoiceIdentifier"] = parent["InvoiceIdentifier"]
            if "LineNumber" not in row:
                row["LineNumber"] = Decimal(1 + sum(1 for r in t.rows.values() if r["dataAreaId"] == co
                                                    and r["InvoiceIdentifier"] == row.get("InvoiceIdentifier")))
            for k in ("LineAmount", "Quantity", "UnitPrice", "LineNumber"):
                row[k] = Decimal(str(row.get(k, 0)))
        elif t.name == "CustomersV3":
            row.setdefault("CustomerAccount", f"{store.next_number(co, 'cust'):06d}")
        elif (t.name == "ProjectsV2" and row.get("CustomerAccount")
              and (co, row["CustomerAccount"]) not in store.tables["CustomersV3"].rows):
                raise ODataError(400, "An error has occurred.", "Write failed for table row of type "
                                 f"'ProjTableEntity'. Infolog: Error: Customer account {row['CustomerAccount']} "
                                 f"does not exist in legal entity {co}.")
        key = t.key_of(row)
        if key in t.rows:
            raise ODataError(400, "An error has occurred.", f"Write failed for table row of type '{t.name}'. "
                             f"Infolog: Error: Cannot create a record in {t.name}. The record already exists: "
                             f"{dict(zip(t.keys, key, strict=True))}.")
        store.add(t.name, row)
        return row

    def fo_call(method: str, path: str, params: dict[str, str], body: Any, prefer: str, base: str,
                ctx: _Ctx, content_id: str | None = None) -> tuple[int, Any]:
        t, row, rest = resolve(path, ctx)
        if method == "GET":
            if row is None and rest is None:
                return 200, query(t, params, prefer, base)
            if row is not None and rest is None:
                return 200, row
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '{path}'.")
        if method == "POST" and rest is not None and rest.startswith(NS):
            action = rest[len(NS):]
            if action != "Post" or row is None:
                raise ODataError(404, f"Action {rest} is not bound to {t.name}.")
            (post_journal(store, row, delimiter) if t.name == "LedgerJournalHeaders" else
             post_invoice(store, row, delimiter) if t.name == "FreeTextInvoiceHeaders" else None)
            return 204, None
        if method == "POST":
            if not isinstance(body, dict):
                raise ODataError(400, "The request body must be a JSON object.")
            if rest is not None:
                child = NAV.get((t.name, rest))
                if child is None or row is None:
                    raise ODataError(404, f"Navigation property {rest} is not defined on {t.name}.")
                new = create(store.tables[child], body, parent=row)
                target = child
            else:
                new = create(t, body)
                target = t.name
            if content_id:
                ctx.created[content_id] = (target, new)
            return 201, new
        if method == "PATCH" and row is not None and rest is None:
            if row.get("IsPosted") == "Yes":
                raise ODataError(400, "An error has occurred.", f"{t.name}: a posted record cannot be changed.")
            changes = {k: v for k, v in (body or {}).items() if k not in t.keys}
            store.touch(t.name, row)
            row.update(changes)
            return 204, None
        raise ODataError(405, f"The HTTP method {method} is not allowed for '{path}'.")

    # ---------------------------------------------------------------- F&O: routes

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def gate(request: Request, dataverse: bool) -> Response | str:
        who = authorize(request)
        if isinstance(who, Response):
            return who
        if not dataverse and who not in store.fo_apps:
            return answer(request.method, request.url.path, 403, {"error": {"code": "", "message": (
                f"The application {who} is not registered in System administration > Setup > Microsoft Entra "
                "applications, or its user has no roles.")}})
        throttled = throttle(request, dataverse)
        return throttled if throttled is not None else who

    @app.api_route("/data/$batch", methods=["POST"])
    async def batch(request: Request) -> Response:
        who = await gate(request, False)
        if isinstance(who, Response):
            return who
        try:
            raw = await request.body()
            ctype = request.headers.get("content-type", "")
            with store.lock:
                out, boundary = run_batch(ctype, raw, base_of(request))
                batches_done[0] += 1
                held = hold_after is not None and batches_done[0] > int(hold_after)
            if held:  # committed, but the answer waits: the caller may die before it learns the outcome
                await asyncio.to_thread(release.wait, 60)
            return answer("POST", request.url.path, 200, raw=out, media=f"multipart/mixed; boundary={boundary}")
        except ODataError as err:
            return answer("POST", request.url.path, err.status, err.body())
        finally:
            limits.release()

    def run_batch(ctype: str, raw: bytes, base: str) -> tuple[bytes, str]:
        m = re.search(r"boundary=\"?([^\";]+)", ctype)
        if not ctype.startswith("multipart/mixed") or not m:
            raise ODataError(400, "A $batch request must be multipart/mixed with a boundary.")
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        parts: list[str] = []
        for part in _split(raw, m.group(1)):
            head, body = _head_body(part)
            pm = re.search(r"boundary=\"?([^\";\r\n]+)", head.get("content-type", ""))
            if head.get("content-type", "").startswith("multipart/mixed") and pm:
                parts.append(run_changeset(body, pm.group(1), base))
            else:
                status, payload, _ = one_request(body, base, _Ctx())
                parts.append(_http_part(status, payload))
        text = "".join(f"--{out_boundary}\r\n{p}" for p in parts) + f"--{out_boundary}--\r\n"
        return text.encode(), out_boundary

    def one_request(raw: bytes, base: str, ctx: _Ctx, content_id: str | None = None
                    ) -> tuple[int, Any, str | None]:
        text = raw.decode()
        line, _, rest = text.partition("\r\n")
        method, url, _ = [*line.split(" "), "", ""][:3]
        head, body = _head_body(rest.encode())
        content_id = content_id or head.get("content-id")
        path, _, qs = url.partition("?")
        path = path.replace(base, "")
        path = path[len("/data/"):] if path.startswith("/data/") else path.lstrip("/")
        try:
            status, payload = fo_call(method, unquote(path), dict(parse_qsl(qs)), loads(body),
                                      head.get("prefer", ""), base, ctx, content_id)
            return status, payload, content_id
        except ODataError as err:
            return err.status, err.body(), content_id

    def run_changeset(raw: bytes, boundary: str, base: str) -> str:
        """All-or-nothing: on the first failure every row the changeset touched is restored."""
        store.undo = []
        seq = dict(store.seq)
        ctx = _Ctx()
        answers: list[str] = []
        for part in _split(raw, boundary):
            part_head, body = _head_body(part)
            status, payload, cid = one_request(body, base, ctx, part_head.get("content-id"))
            if status >= 400:
                store.rollback(0)
                store.undo = None
                store.seq = seq
                return _http_part(status, payload)
            answers.append(_http_part(status, payload, cid))
        store.undo = None
        cs = f"changesetresponse_{uuid.uuid4()}"
        inner = "".join(f"--{cs}\r\n{a}" for a in answers) + f"--{cs}--\r\n"
        return f"Content-Type: multipart/mixed; boundary={cs}\r\n\r\n{inner}"

    @app.api_route("/data/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    async def data(path: str, request: Request) -> Response:
        who = await gate(request, False)
        if isinstance(who, Response):
            return who
        try:
            raw = await request.body()
            with store.lock:
                status, payload = fo_call(request.method, unquote(path), dict(request.query_params),
                                          loads(raw), request.headers.get("prefer", ""), base_of(request), _Ctx())
            return answer(request.method, request.url.path, status, payload)
        except ODataError as err:
            return answer(request.method, request.url.path, err.status, err.body())
        finally:
            limits.release()

    # ---------------------------------------------------------------- Dataverse

    @app.api_route("/api/data/v9.2/{path:path}", methods=["GET", "PATCH"])
    async def dataverse(path: str, request: Request) -> Response:
        who = await gate(request, True)
        if isinstance(who, Response):
            return who
        try:
            if request.method == "PATCH":
                return dv_upsert(request, path, loads(await request.body()) or {})
            return dv_read(request, path)
        except ODataError as err:
            return answer(request.method, request.url.path, err.status, err.body())
        finally:
            limits.release()

    def dv_upsert(request: Request, path: str, body: dict[str, Any]) -> Response:
        m = re.fullmatch(r"(\w+)\((\w+)='((?:[^']|'')*)'\)", unquote(path))
        if not m:
            raise ODataError(400, "Upsert needs an alternate key: PATCH <set>(<key>='<value>').", code="0x80060888")
        entity_set, key, value = m.group(1), m.group(2), m.group(3).replace("''", "'")
        if store.dv_keys.get(entity_set) != key:
            raise ODataError(400, f"The key attribute '{key}' is not an alternate key of {entity_set}; define the "
                             "alternate key in the table first.", code="0x80060891")
        with store.lock:
            found = next((r for r in store.dataverse.get(entity_set, {}).values() if r.get(key) == value), None)
            if found is None and request.headers.get("if-match") == "*":
                raise ODataError(404, f"{entity_set} with {key} = {value} does not exist.", code="0x80040217")
            if found is not None and request.headers.get("if-none-match") == "*":
                raise ODataError(412, f"A record with {key} = {value} already exists.", code="0x80040237")
            idf = _dv_id_field(entity_set)
            row = store.dv_upsert(entity_set, {**body, key: value, idf: (found or {}).get(idf)})
        return answer("PATCH", request.url.path, 204, headers={
            "OData-EntityId": f"{base_of(request)}/api/data/v9.2/{entity_set}({row[idf]})"})

    def dv_read(request: Request, path: str) -> Response:
        """A read; with ``Prefer: odata.track-changes`` (or a ``$deltatoken``) the last page carries the
        ``@odata.deltaLink`` frozen at the version the read started from (``$trackfrom`` rides on nextLinks)."""
        entity_set = unquote(path)
        if not re.fullmatch(r"\w+", entity_set):
            raise ODataError(404, f"Resource not found for the segment '{entity_set}'.", code="0x80060888")
        params = dict(request.query_params)
        prefer = request.headers.get("prefer", "")
        m = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = min(5000, int(m.group(1))) if m else 5000
        since = int(params["$deltatoken"]) if params.get("$deltatoken") else None
        idf = _dv_id_field(entity_set)
        cols = [c.strip() for c in params.get("$select", "").split(",") if c.strip()]
        base = f"{base_of(request)}/api/data/v9.2"
        with store.lock:
            frozen = int(params.get("$trackfrom", store.dv_version))
            rows = store.dataverse.get(entity_set, {})
            items: list[dict[str, Any]] = [
                {k: r.get(k) for k in [idf, *cols]} if cols else dict(r)
                for rid, r in sorted(rows.items(), key=lambda kv: (store.dv_versions[(entity_set, kv[0])], kv[0]))
                if (since is None or store.dv_versions[(entity_set, rid)] > since)
                and store.dv_versions[(entity_set, rid)] <= frozen]
            if since is not None:
                items += [{"@odata.context": f"{base}/$metadata#{entity_set}/$deletedEntity", "id": rid,
                           "reason": "deleted"} for s, rid, v in store.dv_deleted
                          if s == entity_set and since < v <= frozen]
        skip = int(params.get("$skiptoken", 0) or 0)
        page = items[skip:skip + size]
        out: dict[str, Any] = {"@odata.context": f"{base}/$metadata#{entity_set}", "value": page}
        # Dataverse ignores the preference on a table without "Track changes" enabled: no delta link
        track = entity_set in store.dv_tracked and ("odata.track-changes" in prefer or since is not None)
        if skip + len(page) < len(items):
            out["@odata.nextLink"] = f"{base}/{entity_set}?" + urlencode(
                {**params, "$skiptoken": str(skip + len(page)), "$trackfrom": str(frozen)})
        elif track:
            keep = {k: v for k, v in params.items() if k in ("$select", "$filter")}
            out["@odata.deltaLink"] = f"{base}/{entity_set}?" + urlencode({**keep, "$deltatoken": str(frozen)})
        return answer("GET", request.url.path, 200, out,
                      headers={"Preference-Applied": "odata.track-changes"} if track else None)

    return app


# --------------------------------------------------------------------------------------------------- multipart


def _split(raw: bytes, boundary: str) -> list[bytes]:
    text = raw.decode()
    chunks = text.split(f"--{boundary}")
    return [c.strip("\r\n").encode() + b"\r\n" for c in chunks[1:] if not c.startswith("--")]


def _head_body(part: bytes) -> tuple[dict[str, str], bytes]:
    text = part.decode()
    head, _, body = text.partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, body.strip("\r\n").encode()


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 412: "Precondition Failed"}


def _http_part(status: int, payload: Any, content_id: str | None = None) -> str:
    body = dumps(payload).decode() if payload is not None else ""
    cid = f"Content-ID: {content_id}\r\n" if content_id else ""
    ctype = "Content-Type: application/json; odata.metadata=minimal\r\n" if body else ""
    return (f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{cid}\r\n"
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n{ctype}\r\n{body}\r\n")
