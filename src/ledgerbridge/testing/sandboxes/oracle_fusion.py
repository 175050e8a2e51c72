"""Oracle Fusion Cloud ERP sandbox: FBDI journal import through ``erpintegrations`` and the REST reads, as the
vendor facts describe them (docs/connectors/oracle-fusion.md; reference/vendors/08-oracle-fusion-erp.md).

- Auth: basic (integration user) or OAuth client credentials at ``/oauth2/v1/token`` (``token_ttl``).
- ``POST /fscmRestApi/resources/11.13.18.05/erpintegrations``: ``importBulkData`` takes a base64 zip holding
  ``GlInterface.csv`` (GL_INTERFACE columns in the template's order, no header) and returns an ESS request id
  (``ReqstId``); the job goes WAIT -> RUNNING -> SUCCEEDED one step per status poll (``polls_to_finish``) or after
  ``job_seconds`` on its own. When it finishes, Journal Import checks every journal (batch = ``REFERENCE1``, journal
  = ``REFERENCE4``): ledger, source, category, period open (EP01), valid account combination (EF04), balanced per
  currency (EU02). Good journals become posted batches (``auto_post``); bad ones stay in ``GL_INTERFACE`` with their
  status code and are listed in the execution report — while the job still says **SUCCEEDED** (the trap).
  A file that cannot be read (not a zip, wrong column count) ends the job in ERROR.
  ``downloadESSJobExecutionDetails`` returns the report files (base64 zip); ``getESSJobStatus`` is also accepted.
- ``GET erpintegrations?finder=ESSJobStatusRF;requestId=N`` — the job status.
- ``GET journalBatches`` (``expand=journalHeaders.journalLines``) and ``GET ledgerPeriods`` with ``q`` (SQL-like
  with ``REST-Framework-Version`` >= 2; the old ``Attr=value;Attr2>value`` form without it), ``limit`` (default 25,
  max 500), ``offset``, ``hasMore``, ``totalResults``.

Test hooks: ``app.state.store`` (:class:`OracleStore`: ledgers, code combinations, sources, categories, period
statuses, batches, interface rows, jobs), ``app.state.calls``, ``app.state.limits``, ``app.state.tokens``.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, Request, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow
from ledgerbridge.testing.sandboxes._erp_gate import install_gate

DESCRIPTION = "Oracle Fusion Cloud ERP: FBDI journal import (erpintegrations, ESS jobs, execution report), REST reads"
REST = "/fscmRestApi/resources/11.13.18.05"
#: GL_INTERFACE columns as the FBDI template orders them (the sandbox reads the CSV by position)
COLUMNS: tuple[str, ...] = (
    "STATUS", "LEDGER_ID", "ACCOUNTING_DATE", "USER_JE_SOURCE_NAME", "USER_JE_CATEGORY_NAME", "CURRENCY_CODE",
    "DATE_CREATED", "ACTUAL_FLAG", *(f"SEGMENT{i}" for i in range(1, 31)),
    "ENTERED_DR", "ENTERED_CR", "ACCOUNTED_DR", "ACCOUNTED_CR",
    "REFERENCE1", "REFERENCE2", "REFERENCE3", "REFERENCE4", "REFERENCE5", "REFERENCE6", "REFERENCE7",
    "REFERENCE8", "REFERENCE9", "REFERENCE10", *(f"REFERENCE{i}" for i in range(21, 31)),
    "STAT_AMOUNT", "USER_CURRENCY_CONVERSION_TYPE", "CURRENCY_CONVERSION_DATE", "CURRENCY_CONVERSION_RATE",
    "GROUP_ID", "ATTRIBUTE_CATEGORY", *(f"ATTRIBUTE{i}" for i in range(1, 21)), "ATTRIBUTE_CATEGORY3",
    "AVERAGE_JOURNAL_FLAG", "ORIGINATING_BAL_SEG_VALUE", "LEDGER_NAME", "ENCUMBRANCE_TYPE_ID", "JGZZ_RECON_REF",
    "PERIOD_NAME",
)
#: the natural-account values of the demo chart, keyed by the engine's sample chart codes (tests use it)
DEMO_ACCOUNT_MAP = {"1100": "11100", "1200": "11200", "2100": "21100", "2200": "21200", "2300": "21300",
                    "2400": "21400", "4000": "41000", "4100": "41100", "4200": "41200", "4300": "41300",
                    "5000": "51000", "5100": "51100", "7900": "79000"}
STEPS = ("WAIT", "RUNNING", "SUCCEEDED")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class OracleStore:
    """The pod's state; seed before a test. ``ledgers``: id -> (name, currency, balancing segment value);
    ``combinations``: valid account combinations ("101-51000"); ``period_status``: (ledger id, "Sep-26") ->
    "Open" / "Closed" / "Future Enterable" / ... (unlisted periods of 2025-2027 are Open)."""

    ledgers: dict[str, tuple[str, str, str]] = field(default_factory=lambda: {
        "300000001": ("US Primary Ledger", "USD", "101"), "300000002": ("UK Primary Ledger", "GBP", "102"),
        "300000003": ("DE Primary Ledger", "EUR", "103")})
    combinations: set[str] = field(default_factory=lambda: {f"{c}-{a}" for c in ("101", "102", "103")
                                                            for a in DEMO_ACCOUNT_MAP.values()})
    sources: set[str] = field(default_factory=lambda: {"Ledgerbridge", "Spreadsheet", "Manual"})
    categories: set[str] = field(default_factory=lambda: {"Adjustment", "Accrual", "Revenue", "Labor"})
    period_status: dict[tuple[str, str], str] = field(default_factory=dict)
    fx: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    interface: list[dict[str, str]] = field(default_factory=list)  # rows Journal Import left, STATUS = error code
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ucm: dict[str, bytes] = field(default_factory=dict)
    next_id: int = 5000
    lock: threading.RLock = field(default_factory=threading.RLock)

    def ident(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def batch_names(self) -> list[str]:
        return [b["BatchName"] for b in self.batches]


# --------------------------------------------------------------------------------------------------- q filters

_Q_TOKEN = re.compile(r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>>=|<=|!=|<>|=|>|<)|(?P<str>'(?:[^']|'')*')"
                      r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")
Pred = Callable[[dict[str, Any]], bool]


class QError(ValueError):
    pass


def _when(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if "T" in text else text + "T00:00:00+00:00")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _cmp(op: str, got: Any, want: Any) -> bool:
    if got is None:
        return op in ("!=", "<>")
    iso = re.compile(r"^\d{4}-\d\d-\d\d")
    if isinstance(want, str) and isinstance(got, str) and iso.match(got) and iso.match(want):
        got, want = _when(got), _when(want)
    elif not isinstance(want, str):
        try:
            got = Decimal(str(got))
        except InvalidOperation:
            return False
    else:
        got = str(got)
    return {"=": got == want, "!=": got != want, "<>": got != want, ">": got > want, "<": got < want,
            ">=": got >= want, "<=": got <= want}[op]


_NAME_EQ = re.compile(r"BatchName = '((?:[^']|'')*)'")


def _narrow(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Rows that can match a ``q`` whose only alternatives are ``BatchName = '...'`` (set lookup first; the
    predicate still decides)."""
    names = {v.replace("''", "'") for v in _NAME_EQ.findall(text)}
    if not names or " or " in re.sub(_NAME_EQ.pattern + r"(\s+or\s+)?", "", text):
        return rows
    return [r for r in rows if r.get("BatchName") in names]


def parse_q(text: str, version: int) -> Pred:
    """A REST ``q``: SQL-like (``A = 'x' and (B > 3 or C != 'y')``) from framework version 2, else the version-1
    ``A=x;B>3`` form. Raises :class:`QError` for what the framework would refuse."""
    if version < 2:
        parts = []
        for cond in filter(None, text.split(";")):
            m = re.match(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$", cond)
            if not m or " and " in cond.lower() or "'" in m[3]:
                raise QError(f"JBO-25221: invalid q expression {cond!r} for REST framework version {version}")
            parts.append((m[1], m[2], m[3]))
        return lambda row: all(_cmp(op, row.get(f), v if not re.fullmatch(r"-?\d+(\.\d+)?", v) else Decimal(v))
                               for f, op, v in parts)
    tokens = []
    pos = 0
    while pos < len(text):
        m = _Q_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if not text[pos:].strip():
                break
            raise QError(f"JBO-25221: cannot parse q near {text[pos:pos + 20]!r}")
        tokens.append((m.lastgroup or "", m.group(m.lastgroup or "")))
        pos = m.end()
    at = [0]

    def take() -> tuple[str, str]:
        if at[0] >= len(tokens):
            raise QError("JBO-25221: q ends too early")
        at[0] += 1
        return tokens[at[0] - 1]

    def peek_word() -> str:
        return tokens[at[0]][1].lower() if at[0] < len(tokens) else ""

    def factor() -> Pred:
        kind, raw = take()
        if kind == "lp":
            inner = expr()
            take()
            return inner
        if kind != "word":
            raise QError(f"JBO-25221: expected an attribute, got {raw!r}")
        opk, op = take()
        vk, vraw = take()
        if opk != "op" or vk not in ("str", "num"):
            raise QError(f"JBO-25221: bad comparison after {raw}")
        value: Any = vraw[1:-1].replace("''", "'") if vk == "str" else Decimal(vraw)
        return lambda row, _f=raw: _cmp(op, row.get(_f), value)

    def chain(word: str, sub: Callable[[], Pred], comb: Callable[[Any], bool]) -> Pred:
        parts = [sub()]
        while peek_word() == word:
            take()
            parts.append(sub())
        return parts[0] if len(parts) == 1 else (lambda row: comb(p(row) for p in parts))

    def expr() -> Pred:
        return chain("or", lambda: chain("and", factor, all), any)

    pred = expr()
    if at[0] != len(tokens):
        raise QError(f"JBO-25221: unexpected {tokens[at[0]][1]!r} in q")
    return pred


# --------------------------------------------------------------------------------------------------- journal import


def _period_name(day: dt.date) -> str:
    return day.strftime("%b-%y")


def _dec(text: str) -> Decimal:
    return Decimal(text) if text.strip() else Decimal(0)


def journal_import(store: OracleStore, zip_bytes: bytes, request_id: str, params: list[str], auto_post: bool
                   ) -> tuple[str, dict[str, bytes]]:
    """Load the zip's GlInterface.csv and run Journal Import: (job status, report files)."""
    log = ["Journal Import Execution Report", f"Request ID: {request_id}",
           f"Parameters: {','.join(params)}"]
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
            name = next(n for n in z.namelist() if n.lower() == "glinterface.csv")
            text = z.read(name).decode("utf-8")
        raw_rows = list(csv.reader(io.StringIO(text)))
        bad = [i for i, r in enumerate(raw_rows, 1) if len(r) != len(COLUMNS)]
        if bad:
            raise ValueError(f"rows {bad[:5]} do not have the {len(COLUMNS)} columns of GL_INTERFACE")
    except (zipfile.BadZipFile, StopIteration, UnicodeDecodeError, ValueError) as exc:
        log += ["Status: Error", f"Load Interface File for Import failed: {exc}"]
        return "ERROR", {f"ESS_L_{request_id}.log": "\n".join(log).encode()}
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in raw_rows]
    groups: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for n, r in enumerate(rows, 1):
        groups[(r["REFERENCE1"], r["REFERENCE4"])].append((n, r))
    errors: list[str] = []
    imported = 0
    for (batch_name, journal_name), members in groups.items():
        problems: list[tuple[int, str, str]] = []
        first = members[0][1]
        ledger = store.ledgers.get(first["LEDGER_ID"])
        if ledger is None:
            problems.append((members[0][0], "EL01", f"Ledger {first['LEDGER_ID']} does not exist"))
        if first["USER_JE_SOURCE_NAME"] not in store.sources:
            problems.append((members[0][0], "ES01", f"Journal source {first['USER_JE_SOURCE_NAME']} is not defined"))
        if first["USER_JE_CATEGORY_NAME"] not in store.categories:
            problems.append((members[0][0], "EC01",
                             f"Journal category {first['USER_JE_CATEGORY_NAME']} is not defined"))
        balance: dict[str, Decimal] = defaultdict(Decimal)
        lines = []
        for n, r in members:
            try:
                day = dt.datetime.strptime(r["ACCOUNTING_DATE"], "%Y/%m/%d").date()
                dr, cr = _dec(r["ENTERED_DR"]), _dec(r["ENTERED_CR"])
            except (ValueError, InvalidOperation):
                problems.append((n, "ED01", "Accounting date or amount is invalid"))
                continue
            period = _period_name(day)
            status = store.period_status.get((r["LEDGER_ID"], period), "Open")
            if status != "Open":
                problems.append((n, "EP01", f"This date {day:%Y/%m/%d} is not in any open or future enterable "
                                            f"period (period {period} is {status})"))
            combo = "-".join(r[f"SEGMENT{i}"] for i in range(1, 31) if r[f"SEGMENT{i}"])
            if combo not in store.combinations:
                problems.append((n, "EF04", f"Account combination {combo} is not valid or is disabled"))
            balance[r["CURRENCY_CODE"]] += dr - cr
            acc_dr, acc_cr = r["ACCOUNTED_DR"], r["ACCOUNTED_CR"]
            if ledger is not None and r["CURRENCY_CODE"] != ledger[1] and not (acc_dr or acc_cr):
                rate = store.fx.get((r["CURRENCY_CODE"], ledger[1]))
                if rate is None:
                    problems.append((n, "EC02", f"No conversion rate from {r['CURRENCY_CODE']} to {ledger[1]}"))
                    continue
                acc_dr, acc_cr = str((dr * rate).quantize(Decimal("0.01"))), str((cr * rate).quantize(
                    Decimal("0.01")))
            lines.append({"LineNumber": len(lines) + 1, "AccountCombination": combo,
                          "EnteredDebitAmount": dr or None, "EnteredCreditAmount": cr or None,
                          "AccountedDebit": _dec(acc_dr) if acc_dr else dr or None,
                          "AccountedCredit": _dec(acc_cr) if acc_cr else cr or None,
                          "CurrencyCode": r["CURRENCY_CODE"], "Description": r["REFERENCE10"],
                          "_date": day, "_period": period})
        for cur, off in balance.items():
            if off != 0:
                problems.append((members[0][0], "EU02", f"This journal entry is unbalanced in {cur} by {off}"))
        if problems:
            for n, code, msg in problems:
                errors.append(f"Row {n} Batch {batch_name} Journal {journal_name} {code} {msg}")
            for n, r in members:
                store.interface.append({**r, "STATUS": next((c for m, c, _ in problems if m == n),
                                                            problems[0][1]), "REQUEST_ID": request_id})
            continue
        imported += 1
        stamp = _now()
        head_period = lines[0]["_period"]
        store.batches.append({
            "JournalBatchId": store.ident(), "BatchName": batch_name, "BatchDescription": first["REFERENCE2"],
            "Status": "P" if auto_post else "U", "JournalSource": first["USER_JE_SOURCE_NAME"],
            "AccountingPeriodName": head_period, "RequestId": request_id, "CreationDate": stamp,
            "LastUpdateDate": stamp,
            "journalHeaders": [{
                "JournalHeaderId": store.ident(), "JournalName": journal_name, "LedgerId": first["LEDGER_ID"],
                "PeriodName": head_period, "AccountingDate": lines[0]["_date"].isoformat(),
                "JournalCategory": first["USER_JE_CATEGORY_NAME"], "ExternalReference": first["REFERENCE6"],
                "CurrencyCode": first["CURRENCY_CODE"],
                "journalLines": [{k: v for k, v in ln.items() if not k.startswith("_")} for ln in lines]}]})
    log += ["Status: Completed", f"Rows read: {len(rows)}", f"Journals imported: {imported}",
            f"Journals with errors: {len(groups) - imported}", "", "Errors:", *errors]
    out = [f"Journal Import output for request {request_id}: {imported} journal(s) created"]
    return "SUCCEEDED", {f"ESS_L_{request_id}.log": "\n".join(log).encode(),
                         f"ESS_O_{request_id}.out": "\n".join(out).encode()}


_DEC = re.compile(r'"\\u0000dec:(-?[0-9.]+)"')


def _json(body: Any, status: int = 200) -> Response:
    """JSON with decimals as JSON numbers, digit for digit (as the REST framework writes them)."""
    text = json.dumps(body, default=lambda v: f"\u0000dec:{v:f}" if isinstance(v, Decimal) else str(v))
    return Response(_DEC.sub(r"\1", text), status_code=status, media_type="application/json")


# --------------------------------------------------------------------------------------------------- the app


def create_app(*, user: str = "LB_INTEGRATION", password: str = "Welcome1!", client_id: str = "lb-client",
               client_secret: str = "lb-secret", token_ttl: float = 3600.0, rate_limit: int | None = None,
               rate_window: float = 1.0, polls_to_finish: int = 2, job_seconds: float = 30.0,
               auto_post: bool = True) -> FastAPI:
    app = FastAPI(title="Oracle Fusion Cloud ERP sandbox")
    store = OracleStore()
    calls = CallLog()
    limits = RateWindow(limit=rate_limit, window=rate_window)
    app.state.store, app.state.calls, app.state.limits = store, calls, limits
    app.state.banner = (f"basic auth: {user} / {password}; OAuth: {client_id} / {client_secret} at /oauth2/v1/token; "
                        "ledgers 300000001 (USD, company 101), 300000002 (GBP, 102), 300000003 (EUR, 103); "
                        "journal source Ledgerbridge; data access set 300000100")
    def finish(rid: str) -> None:
        job = store.jobs[rid]
        if job["status"] in ("SUCCEEDED", "ERROR"):
            return
        job["status"], job["files"] = journal_import(store, store.ucm[job["file"]], rid, job["params"], auto_post)

    def advance_by_time() -> None:
        with store.lock:
            for rid, job in store.jobs.items():
                if job["status"] not in ("SUCCEEDED", "ERROR") and time.monotonic() - job["at"] >= job_seconds:
                    finish(rid)

    app.state.tokens = install_gate(app, user=user, password=password, client_id=client_id,
                                    client_secret=client_secret, token_path="/oauth2/v1/token", token_ttl=token_ttl,
                                    limits=limits, calls=calls, realm="fusion", require_scope=True,
                                    before=advance_by_time)

    def version(request: Request) -> int:
        try:
            return int(request.headers.get("REST-Framework-Version", "1"))
        except ValueError:
            return 1

    def collection(request: Request, rows: list[dict[str, Any]], shape: Callable[[dict[str, Any]], Any]
                   ) -> Response:
        q = request.query_params
        try:
            pred = parse_q(q["q"], version(request)) if q.get("q") else (lambda r: True)
            limit = min(int(q.get("limit", 25)), 500)
            offset = int(q.get("offset", 0))
        except (QError, ValueError) as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        with store.lock:
            hits = [r for r in _narrow(rows, q.get("q", "")) if pred(r)]
        page = hits[offset:offset + limit]
        body: dict[str, Any] = {"items": [shape(r) for r in page], "count": len(page),
                                "hasMore": offset + len(page) < len(hits), "limit": limit, "offset": offset,
                                "links": [{"rel": "self", "href": str(request.url)}]}
        if q.get("totalResults") == "true":
            body["totalResults"] = len(hits)
        return _json(body)

    @app.get(REST + "/journalBatches")
    def journal_batches(request: Request) -> Response:
        expand = request.query_params.get("expand", "")

        def shape(b: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in b.items() if k != "journalHeaders"}
            if "journalHeaders" in expand or expand == "all":
                out["journalHeaders"] = [{k: v for k, v in h.items() if k != "journalLines" or
                                          "journalLines" in expand or expand == "all"} for h in b["journalHeaders"]]
            return out
        return collection(request, store.batches, shape)

    @app.get(REST + "/ledgerPeriods")
    def ledger_periods(request: Request) -> Response:
        rows = []
        for lid in store.ledgers:
            for year in (2025, 2026, 2027):
                for month in range(1, 13):
                    start = dt.date(year, month, 1)
                    name = _period_name(start)
                    end = dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)
                    rows.append({"LedgerId": int(lid), "PeriodName": name, "PeriodYear": year,
                                 "PeriodNumber": month, "StartDate": start.isoformat(), "EndDate": end.isoformat(),
                                 "ClosingStatus": store.period_status.get((lid, name), "Open")})
        return collection(request, rows, lambda r: r)

    @app.get(REST + "/erpintegrations")
    def erp_get(request: Request) -> Response:
        finder = request.query_params.get("finder", "")
        m = re.fullmatch(r"ESSJobStatusRF;requestId=(\d+)", finder)
        if not m:
            return Response("JBO-27024: finder required: ESSJobStatusRF;requestId=<id>", status_code=400)
        return _json({"items": [] if m[1] not in store.jobs else [
            {"ReqstId": m[1], "RequestStatus": poll(m[1]), "OperationName": "getESSJobStatus"}],
            "count": int(m[1] in store.jobs), "hasMore": False})

    def poll(rid: str) -> str:
        with store.lock:
            job = store.jobs[rid]
            if job["status"] in ("WAIT", "RUNNING"):
                job["polls"] += 1
                if job["polls"] >= polls_to_finish:
                    finish(rid)
                else:
                    job["status"] = STEPS[min(job["polls"], 1)]
            return str(job["status"])

    @app.post(REST + "/erpintegrations")
    async def erp_post(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response("JBO-27014: the request body is not JSON", status_code=400)
        op = body.get("OperationName")
        if op == "importBulkData":
            missing = [k for k in ("DocumentContent", "FileName", "JobName", "ParameterList") if not body.get(k)]
            if missing:
                return Response(f"JBO-27014: Attribute {missing[0]} in erpintegrations is required",
                                status_code=400)
            try:
                content = base64.b64decode(body["DocumentContent"], validate=True)
            except ValueError:
                return Response("DocumentContent is not base64", status_code=400)
            with store.lock:
                doc_id = store.ident()
                store.ucm[doc_id] = content
                rid = store.ident()
                store.jobs[rid] = {"status": "WAIT", "polls": 0, "at": time.monotonic(), "file": doc_id,
                                   "params": str(body["ParameterList"]).split(","), "name": body["FileName"],
                                   "files": {}}
            return _json({**{k: v for k, v in body.items() if k != "DocumentContent"}, "ReqstId": rid,
                          "DocumentId": doc_id}, 201)
        if op == "getESSJobStatus":
            rid = str(body.get("ReqstId"))
            if rid not in store.jobs:
                return Response(f"ESS request {rid} not found", status_code=404)
            return _json({**body, "RequestStatus": poll(rid)}, 201)
        if op == "downloadESSJobExecutionDetails":
            rid = str(body.get("ReqstId"))
            job = store.jobs.get(rid)
            if job is None:
                return Response(f"ESS request {rid} not found", status_code=404)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for name, data in job["files"].items():
                    if body.get("FileType", "all") in ("all", "log") or not name.endswith(".log"):
                        z.writestr(name, data)
            return _json({**body, "DocumentContent": base64.b64encode(buf.getvalue()).decode()}, 201)
        return Response(f"JBO-27014: OperationName {op!r} is not supported here", status_code=400)

    return app
