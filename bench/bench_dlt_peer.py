"""Peer benchmark: the same PSA time entries, served by a REST API on loopback, loaded into a DuckDB reporting
store by ledgerbridge and by dlt (issue 14). Prints wall seconds, rows/s and peak RSS per tool, the ratio
ledgerbridge / dlt per dlt variant, and checks that every table holds the same rows, SUM(hours) and billable sums.

    .venv/bin/python bench/bench_dlt_peer.py                  # 200,000 entries, both API variants
    .venv/bin/python bench/bench_dlt_peer.py --repeat 3       # tools interleaved, medians + paired ratios
    .venv/bin/python bench/bench_dlt_peer.py --rows 20000 --variants kantata --dlt-modes resource

dlt runs in its OWN virtual environment (created once under ``~/.cache/ledgerbridge/dlt-venv`` with the pinned
versions below; never in the project's .venv), as a subprocess script this bench writes. Telemetry off
(``RUNTIME__DLTHUB_TELEMETRY=false``), its pipelines_dir in a temporary folder removed afterwards.

API variants (the server runs in this process; each loader runs in its own child process, so RSS is per tool):

- ``kantata``: N approved time entries seeded into the Kantata sandbox (``app.state.store``), read as Kantata
  pages of 200 (``per_page`` max, ``include=timesheet_submission``, ``results`` + id-keyed maps). The sandbox
  re-filters and re-sorts all N rows on every request (about 0.35 s a page at 200k: a 1,000-page read would take
  the server 6 minutes and measure nothing but the server), so its answers are pre-rendered once from the
  sandbox's store with the sandbox's envelope and served from memory; page 1, a middle page and the last page are
  first compared byte for byte with what the sandbox itself answers.
  ledgerbridge: ``KantataSource.sync`` (the real connector: paging, token, fingerprints, versions, canonical
  ``TimeEntry`` validation, cursor) -> ``flows.marts_load.load_source_records``.
  dlt ``rest_api``: its declarative source (page-number paginator on ``meta.page_count``, data selector
  ``time_entries.*``, a ``map`` step doing the same minutes -> hours mapping) with the parquet loader,
  ``normalize`` workers=2 and 100k items per file (its best declarative path). dlt ``resource``: a hand-written
  ``@dlt.resource`` (requests + orjson, the same mapping, yielding Arrow tables of 50k rows).
- ``plain``: the same rows already in the table's shape (decimal strings, ISO dates) from a tiny offset-paged
  endpoint with 1,000 per page. ledgerbridge: ``connectors.http.send`` per page, exact-decimal decode, canonical
  ``TimeEntry`` validation, rows streamed into ``load_rows``. dlt: ``rest_api`` (offset paginator, column hints,
  parquet) and the hand-written Arrow resource.

Like for like: same rows, same column types (``DECIMAL(38,10)`` hours and amounts, ``DATE`` work date,
``TIMESTAMPTZ`` stamps; dlt gets column hints), same primary key (``id``), a fresh table (replace). Wall time is
measured inside each child from the first HTTP call to the committed table (imports excluded; the child's whole
process time and the CPU seconds of its process tree are printed too). Figures and findings: ``docs/peers.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import parse_qs

SYSTEM = "bench_kt"
KANTATA_PER_PAGE = 200
PLAIN_PER_PAGE = 1000
DLT_PINS = ("dlt[duckdb,parquet]==1.31.0", "duckdb==1.4.4", "pyarrow==26.0.1", "orjson==3.13.0")
VENV = Path.home() / ".cache" / "ledgerbridge" / "dlt-venv"
MONEY = "DECIMAL(38,10)"
KANTATA_PARAMS = {"order": "id:asc", "include": "timesheet_submission", "per_page": str(KANTATA_PER_PAGE)}


# --------------------------------------------------------------------------------------------------- dlt venv


def ensure_venv(path: Path) -> tuple[Path, float | None]:
    """The dlt venv's python, creating it (pinned versions) when missing or pinned differently; install seconds
    when it was created now."""
    python = path / "bin" / "python"
    marker = path / "ledgerbridge-bench-pins.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == list(DLT_PINS):
        return python, None
    t = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    log = path.parent / "dlt-venv-install.log"
    with log.open("w") as fh:
        done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *DLT_PINS],
                              stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"installing {DLT_PINS} into {path} failed: see {log}")
    marker.write_text(json.dumps(list(DLT_PINS)))
    return python, time.perf_counter() - t


# --------------------------------------------------------------------------------------------------- data


def seed_kantata(n: int) -> Any:
    """The Kantata sandbox with N approved time entries (created and approved two hours ago: history, not recent
    events), 40 users, 8 workspaces, a bill rate per entry, a third not billable."""
    from ledgerbridge.testing.sandboxes.kantata import create_app

    app = create_app()
    store = app.state.store
    store.freeze(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    spaces = [store.add_workspace(f"Project {i}", currency="USD") for i in range(8)]
    users = [store.add_user(f"User {i}") for i in range(40)]
    ids = [store.add_time_entry(spaces[i % 8], users[i % 40], f"2026-{1 + i % 11:02d}-{1 + i % 28:02d}",
                                15 + (i * 7) % 466, billable=i % 3 > 0, notes=f"work item {i % 97}",
                                story_id=str(5000 + i % 13) if i % 2 else None,
                                rate_in_cents=10000 + 2500 * (i % 7))
           for i in range(n)]
    for start in range(0, n, 500):
        store.approve(store.submit(ids[start:start + 500]))
    store.unfreeze()
    return app


def render(body: Any) -> bytes:
    """Exactly as the sandbox's JSONResponse renders."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def kantata_pages(store: Any) -> list[bytes]:
    """Every ``time_entries`` page (per_page 200, order id:asc, include=timesheet_submission) as the sandbox
    answers it; index 0 unused, one empty page past the end."""
    rows = sorted(store.tables["time_entries"].values(), key=lambda r: int(r["id"]))
    n = len(rows)
    count = max(1, -(-n // KANTATA_PER_PAGE))
    out = [b""]
    for page in range(1, count + 2):
        chunk = [dict(r) for r in rows[(page - 1) * KANTATA_PER_PAGE:page * KANTATA_PER_PAGE]]
        subs: dict[str, Any] = {}
        for r in chunk:
            sid = r.get("timesheet_submission_id")
            sub = store.get("timesheet_submissions", sid) if sid else None
            if sub:
                subs[sid] = sub
        out.append(render({
            "count": n, "meta": {"count": n, "page_count": count, "page_number": page, "page_size": KANTATA_PER_PAGE},
            "results": [{"key": "time_entries", "id": r["id"]} for r in chunk],
            "time_entries": {r["id"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in chunk},
            "timesheet_submissions": subs}))
    return out


def plain_rows(store: Any) -> list[dict[str, Any]]:
    """The same entries in the reporting table's shape (what the connector makes of them), plus the billable
    amount at the entry's bill rate; decimals and dates as text."""
    from ledgerbridge.connectors.kantata.mapping import minutes_to_hours, parse_ts

    out = []
    subs = store.tables["timesheet_submissions"]
    for r in sorted(store.tables["time_entries"].values(), key=lambda r: int(r["id"])):
        hours = minutes_to_hours(r["time_in_minutes"], "bench", {})  # exactly as the connector maps them
        sub = subs.get(r.get("timesheet_submission_id") or "")
        amount = (hours * Decimal(r["rate_in_cents"]) / 100).quantize(Decimal("0.01"), ROUND_HALF_UP) \
            if r["billable"] else Decimal("0.00")
        out.append({"id": r["id"], "source_system": SYSTEM, "version": int(parse_ts(r["updated_at"]).timestamp()),
                    "project_id": r["workspace_id"], "resource_id": r["user_id"], "task": r["story_id"],
                    "work_date": r["date_performed"], "hours": str(hours), "billable": r["billable"],
                    "approval_status": "approved" if r["approved"] else "draft",
                    "approved_at": sub["approved_at"] if sub else None, "updated_at": r["updated_at"],
                    "description": r["notes"], "billable_amount": str(amount)})
    return out


def plain_pages(rows: list[dict[str, Any]]) -> dict[int, bytes]:
    total = len(rows)
    return {off: render({"data": rows[off:off + PLAIN_PER_PAGE], "total": total, "offset": off,
                         "limit": PLAIN_PER_PAGE}) for off in range(0, total + PLAIN_PER_PAGE, PLAIN_PER_PAGE)}


# --------------------------------------------------------------------------------------------------- server


Handler = Callable[[Mapping[str, str]], tuple[int, bytes]]


def replay_app(routes: Mapping[str, Handler], token: str) -> Any:
    """A bare ASGI app answering pre-rendered bytes (no per-request work beyond a dict look-up): POST
    /oauth/token issues ``token``; every other route wants ``Authorization: Bearer <token>``."""
    token_body = render({"access_token": token, "token_type": "bearer", "expires_in": 7200})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # drain the request body
            more = (await receive()).get("more_body", False)
        path = scope["path"]
        q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and path == "/oauth/token":
            status, body = 200, token_body
        elif headers.get(b"authorization", b"") != f"Bearer {token}".encode():
            status, body = 401, render({"errors": [{"type": "authentication", "message": "Invalid token"}]})
        elif path in routes:
            status, body = routes[path](q)
        else:
            status, body = 404, render({"errors": [{"type": "system", "message": f"no route {path}"}]})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def refuse(message: str) -> tuple[int, bytes]:
    return 422, render({"errors": [{"type": "validation", "message": message}]})


def kantata_routes(pages: list[bytes], expenses: bytes, feed: bytes) -> dict[str, Handler]:
    def entries(q: Mapping[str, str]) -> tuple[int, bytes]:
        wrong = {k: q.get(k) for k, v in KANTATA_PARAMS.items() if q.get(k) != v}
        if wrong:  # both tools must ask the same question the pages answer
            return refuse(f"this replay serves {KANTATA_PARAMS}, not {wrong}")
        page = int(q.get("page", "1"))
        return 200, pages[min(max(page, 1), len(pages) - 1)]

    return {"/api/v1/time_entries.json": entries, "/api/v1/expenses.json": lambda q: (200, expenses),
            "/api/v1/subscribed_events.json": lambda q: (200, feed)}


def plain_routes(pages: dict[int, bytes]) -> dict[str, Handler]:
    last = max(pages)

    def entries(q: Mapping[str, str]) -> tuple[int, bytes]:
        if q.get("limit") != str(PLAIN_PER_PAGE):
            return refuse(f"limit must be {PLAIN_PER_PAGE}")
        off = int(q.get("offset", "0"))
        if off % PLAIN_PER_PAGE:
            return refuse(f"offset must be a multiple of {PLAIN_PER_PAGE}")
        return 200, pages[min(off, last)]

    return {"/entries": entries}


def sandbox_answers(app: Any, pages: list[bytes]) -> tuple[bytes, bytes, list[int]]:
    """Ask the real sandbox for page 1, a middle page and the last page (check: byte-equal to the pre-rendered
    ones), and for the empty expenses list and events feed the connector reads too."""
    import httpx

    from ledgerbridge.testing.sandbox import serve_in_thread

    checked = []
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=120) as http:
        tok = http.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "demo-client",
                                              "client_secret": "demo-secret"}).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {tok}"
        last = len(pages) - 2
        for page in sorted({1, max(1, last // 2), last}):
            got = http.get("/api/v1/time_entries.json", params={**KANTATA_PARAMS, "page": page}).content
            if got != pages[page]:
                raise SystemExit(f"pre-rendered Kantata page {page} differs from the sandbox's answer: the replay "
                                 "would not serve the same API; fix kantata_pages()")
            checked.append(page)
        expenses = http.get("/api/v1/expenses.json", params={"order": "id:asc", "page": 1,
                                                             "per_page": KANTATA_PER_PAGE}).content
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=300)).isoformat()
        feed = http.get("/api/v1/subscribed_events.json", params={"created_after": since, "page": 1,
                                                                  "per_page": KANTATA_PER_PAGE}).content
    if json.loads(feed)["count"] or json.loads(expenses)["count"]:
        raise SystemExit("the seeded tenant should have no recent events and no expenses")
    return expenses, feed, checked


# --------------------------------------------------------------------------------------------------- ledgerbridge


def _lb_columns(variant: str) -> tuple[tuple[str, str], ...]:
    from ledgerbridge.flows.marts_load import TIME_ENTRY_COLUMNS

    return TIME_ENTRY_COLUMNS + ((("billable_amount", MONEY),) if variant == "plain" else ())


def lb_worker(variant: str, base: str, db: str, token: str) -> dict[str, Any]:
    """The ledgerbridge side, in a child process: read the API, map/validate, load into DuckDB."""
    import duckdb
    import httpx

    from ledgerbridge.connectors.http import send
    from ledgerbridge.connectors.kantata import Credentials, KantataSource
    from ledgerbridge.flows.marts_load import load_rows, load_source_records
    from ledgerbridge.model.entities import TimeEntry
    from ledgerbridge.service import metrics  # noqa: F401  (send imports it lazily: keep imports out of the timing)

    canonical = [c for c, _ in _lb_columns("kantata")]
    t0 = time.perf_counter()
    duck = duckdb.connect(db)
    calls = 0
    if variant == "kantata":
        src = KantataSource.from_options(SYSTEM, {"url": f"{base}/api/v1", "rescan_every": 0},
                                         Credentials("demo-client", "demo-secret", "demo-refresh"))
        try:
            result = src.sync(None)
        finally:
            src.close()
        if result.errors:
            raise SystemExit(f"sync errors: {result.errors[:3]}")
        calls = int(result.stats["requests"])
        synced = time.perf_counter() - t0
        report = load_source_records(duck, result.records())
        phases = (f"connector sync {synced:.1f} s, records + staging {report.stage_seconds:.1f} s, DuckDB "
                  f"{report.seconds - report.stage_seconds:.1f} s")
    else:
        http = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"})

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal calls
            offset = 0
            while True:
                resp = send(http, "GET", f"{base}/entries", system="bench_plain",
                            params={"offset": offset, "limit": PLAIN_PER_PAGE})
                calls += 1
                body = json.loads(resp.content, parse_float=Decimal)
                for r in body["data"]:
                    TimeEntry.model_validate({k: r[k] for k in canonical})  # the contract check every record gets
                    yield r
                offset += len(body["data"])
                if not body["data"] or offset >= body["total"]:
                    return

        report = load_rows(duck, "time_entries", _lb_columns("plain"), rows())
        http.close()
        phases = (f"fetch + decode + validate + staging {report.stage_seconds:.1f} s, DuckDB "
                  f"{report.seconds - report.stage_seconds:.1f} s")
    duck.execute("CHECKPOINT")
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "rows": report.table_rows, "calls": calls, "phases": phases,
           "check": table_check(duck, "time_entries", variant == "plain")}
    duck.close()
    return out


def table_check(duck: Any, table: str, amounts: bool) -> dict[str, Any]:
    """Row count, distinct ids, SUM(hours), billable hours (and SUM(billable_amount)), and the column types."""
    extra = ", sum(billable_amount)" if amounts else ""
    row = duck.execute(f"SELECT count(*), count(DISTINCT id), sum(hours), sum(hours) FILTER (WHERE billable){extra} "
                       f"FROM {table}").fetchone()
    name = table.split(".")[-1]
    schema = table.split(".")[0] if "." in table else None
    types = dict(duck.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                              "AND (? IS NULL OR table_schema = ?)", [name, schema, schema]).fetchall())
    out = {"rows": row[0], "ids": row[1], "sum_hours": str(row[2]), "billable_hours": str(row[3]),
           "types": {c: types.get(c) for c in ("id", "work_date", "hours", "billable", "updated_at")}}
    if amounts:
        out["sum_billable_amount"] = str(row[4])
        out["types"]["billable_amount"] = types.get("billable_amount")
    return out


# --------------------------------------------------------------------------------------------------- dlt script

DLT_SCRIPT = r'''
import datetime as dt, json, os, resource, sys, time
from decimal import ROUND_HALF_UP, Decimal

variant, mode, base, token, db, pipelines_dir, system = sys.argv[1:8]
t_import = time.perf_counter()
import dlt
import duckdb
import orjson
import pyarrow as pa
import requests
from dlt.sources.rest_api import rest_api_source

SIX = Decimal("0.000001")
HINTS = {
    "id": {"data_type": "text", "primary_key": True, "nullable": False},
    "source_system": {"data_type": "text"}, "version": {"data_type": "bigint"},
    "project_id": {"data_type": "text"}, "resource_id": {"data_type": "text"}, "task": {"data_type": "text"},
    "work_date": {"data_type": "date"}, "hours": {"data_type": "decimal", "precision": 38, "scale": 10},
    "billable": {"data_type": "bool"}, "approval_status": {"data_type": "text"},
    "approved_at": {"data_type": "timestamp"}, "updated_at": {"data_type": "timestamp"},
    "description": {"data_type": "text"},
}
if variant == "plain":
    HINTS["billable_amount"] = {"data_type": "decimal", "precision": 38, "scale": 10}
COLS = list(HINTS)
ARROW = pa.schema([
    ("id", pa.string()), ("source_system", pa.string()), ("version", pa.int64()), ("project_id", pa.string()),
    ("resource_id", pa.string()), ("task", pa.string()), ("work_date", pa.date32()),
    ("hours", pa.decimal128(38, 10)), ("billable", pa.bool_()), ("approval_status", pa.string()),
    ("approved_at", pa.timestamp("us", tz="UTC")), ("updated_at", pa.timestamp("us", tz="UTC")),
    ("description", pa.string())] + ([("billable_amount", pa.decimal128(38, 10))] if variant == "plain" else []))


def peak_rss_mb():  # VmHWM: ru_maxrss would include the forking parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ts(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def hours(minutes):  # the same mapping as ledgerbridge's Kantata connector
    h = Decimal(minutes) / 60
    q = h.quantize(SIX, rounding=ROUND_HALF_UP)
    return (h if h == q else q).normalize() if h else Decimal(0)


def kantata_row(r, sub=None):
    return {"id": str(r["id"]), "source_system": system, "version": int(ts(r["updated_at"]).timestamp()),
            "project_id": str(r["workspace_id"]), "resource_id": str(r["user_id"]),
            "task": str(r["story_id"]) if r.get("story_id") else None, "work_date": r["date_performed"],
            "hours": hours(r["time_in_minutes"]), "billable": bool(r["billable"]),
            "approval_status": "approved" if r.get("approved") else "draft",
            "approved_at": sub.get("approved_at") if sub else None, "updated_at": r["updated_at"],
            "description": r.get("notes") or ""}


def to_arrow(rows):
    cols = {c: [r[c] for r in rows] for c in COLS}
    for c in ("approved_at", "updated_at"):
        cols[c] = [ts(v) for v in cols[c]]
    cols["work_date"] = [dt.date.fromisoformat(v) for v in cols["work_date"]]
    for c in ("hours", "billable_amount"):
        if c in cols:
            cols[c] = [Decimal(v) if isinstance(v, str) else v for v in cols[c]]
    return pa.table(cols, schema=ARROW)


def kantata_pages(session):
    page = 1
    while True:
        body = orjson.loads(session.get(f"{base}/api/v1/time_entries.json", params={
            "order": "id:asc", "include": "timesheet_submission", "per_page": 200, "page": page}).content)
        rows, subs = body["time_entries"], body.get("timesheet_submissions", {})
        for ref in body["results"]:
            r = rows[str(ref["id"])]
            yield kantata_row(r, subs.get(str(r.get("timesheet_submission_id"))))
        if page >= body["meta"]["page_count"] or not body["results"]:
            return
        page += 1


def plain_pages(session):
    offset = 0
    while True:
        body = orjson.loads(session.get(f"{base}/entries", params={"offset": offset, "limit": 1000}).content)
        yield from body["data"]
        offset += len(body["data"])
        if not body["data"] or offset >= body["total"]:
            return


@dlt.resource(name="time_entries", primary_key="id", write_disposition="replace", columns=HINTS)
def handwritten():
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    batch = []
    for row in (kantata_pages if variant == "kantata" else plain_pages)(session):
        batch.append(row)
        if len(batch) >= 50_000:
            yield to_arrow(batch)
            batch = []
    if batch:
        yield to_arrow(batch)


def declarative():
    if variant == "kantata":
        endpoint = {"path": "time_entries.json", "data_selector": "time_entries.*",
                    "params": {"order": "id:asc", "include": "timesheet_submission", "per_page": 200},
                    "paginator": {"type": "page_number", "page_param": "page", "base_page": 1,
                                  "total_path": "meta.page_count"}}
        base_url = f"{base}/api/v1/"
        steps = [{"map": kantata_row}]
    else:
        endpoint = {"path": "entries", "data_selector": "data",
                    "paginator": {"type": "offset", "limit": 1000, "offset_param": "offset",
                                  "limit_param": "limit", "total_path": "total"}}
        base_url = f"{base}/"
        steps = []
    res = {"name": "time_entries", "primary_key": "id", "write_disposition": "replace", "columns": HINTS,
           "endpoint": endpoint}
    if steps:
        res["processing_steps"] = steps
    return rest_api_source({"client": {"base_url": base_url, "auth": {"type": "bearer", "token": token}},
                            "resources": [res]})


t0 = time.perf_counter()
pipe = dlt.pipeline(pipeline_name=f"peer_{variant}_{mode}", pipelines_dir=pipelines_dir,
                    destination=dlt.destinations.duckdb(db), dataset_name="peer", progress=None)
if mode == "rest_api":
    pipe.extract(declarative(), loader_file_format="parquet")
    pipe.normalize(workers=2)
    pipe.load()
else:
    pipe.run(handwritten(), loader_file_format="parquet")
seconds = time.perf_counter() - t0
con = duckdb.connect(db, read_only=True)
amounts = ", sum(billable_amount)" if variant == "plain" else ""
row = con.execute("SELECT count(*), count(DISTINCT id), sum(hours), sum(hours) FILTER (WHERE billable)"
                  f"{amounts} FROM peer.time_entries").fetchone()
types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                         "table_schema = 'peer' AND table_name = 'time_entries'").fetchall())
check = {"rows": row[0], "ids": row[1], "sum_hours": str(row[2]), "billable_hours": str(row[3]),
         "types": {c: types.get(c) for c in ("id", "work_date", "hours", "billable", "updated_at")}}
if variant == "plain":
    check["sum_billable_amount"] = str(row[4])
    check["types"]["billable_amount"] = types.get("billable_amount")
con.close()
print("RESULT " + json.dumps({"seconds": seconds, "import_seconds": t0 - t_import, "rows": row[0], "check": check,
                              "rss_mb": peak_rss_mb(),
                              "versions": {"dlt": dlt.__version__, "duckdb": duckdb.__version__,
                                           "pyarrow": pa.__version__}}))
'''


# --------------------------------------------------------------------------------------------------- runner


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries the forking parent's peak across
    fork+exec into it, which would charge the bench's server memory to every child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(argv: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and every process it started and reaped
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"child {argv[1:3]} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    out = json.loads(line[len("RESULT "):])
    out["process_seconds"] = wall
    out["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def show(name: str, r: Mapping[str, Any], n: int) -> None:
    extra = f", {r['calls']} API calls; {r['phases']}" if r.get("calls") else ""
    print(f"  {name:<26} {r['seconds']:7.2f} s  {n / r['seconds']:9,.0f} rows/s  peak RSS {r['rss_mb']:6.0f} MB  "
          f"(process {r['process_seconds']:.1f} s, {r['cpu_seconds']:.1f} cpu-s{extra})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--variants", default="kantata,plain", help="comma list of kantata, plain")
    ap.add_argument("--dlt-modes", default="rest_api,resource", help="comma list of rest_api, resource")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; medians are reported")
    ap.add_argument("--venv", type=Path, default=VENV)
    ap.add_argument("--worker", nargs=4, metavar=("VARIANT", "BASE", "DB", "TOKEN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        out = lb_worker(*args.worker)
        out["rss_mb"] = peak_rss_mb()
        print("RESULT " + json.dumps(out))
        return 0

    from ledgerbridge.testing.sandbox import serve_in_thread

    python, install = ensure_venv(args.venv)
    print(f"dlt venv {args.venv}: " + (f"installed {' '.join(DLT_PINS)} in {install:.0f} s" if install is not None
                                       else f"cached ({' '.join(DLT_PINS)})"), flush=True)
    n = args.rows
    t = time.perf_counter()
    app = seed_kantata(n)
    print(f"seeded the Kantata sandbox with {n:,} approved time entries in {time.perf_counter() - t:.1f} s",
          flush=True)
    t = time.perf_counter()
    pages = kantata_pages(app.state.store)
    expenses, feed, checked = sandbox_answers(app, pages)
    plain = plain_pages(plain_rows(app.state.store))
    print(f"pre-rendered {len(pages) - 2:,} Kantata pages of {KANTATA_PER_PAGE} (pages {checked} byte-equal to the "
          f"sandbox's answers) and {len(plain) - 1:,} plain pages of {PLAIN_PER_PAGE} in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    token = secrets.token_urlsafe(16)
    routes = {"kantata": kantata_routes(pages, expenses, feed), "plain": plain_routes(plain)}
    env = {"RUNTIME__DLTHUB_TELEMETRY": "false", "DATA_WRITER__FILE_MAX_ITEMS": "100000"}
    results: dict[str, list[dict[str, Any]]] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="lb-dlt-peer-") as td:
        tmp = Path(td)
        script = tmp / "dlt_worker.py"
        script.write_text(DLT_SCRIPT)
        for variant in [v for v in args.variants.split(",") if v]:
            with serve_in_thread(replay_app(routes[variant], token)) as base:
                print(f"\n[{variant}] {n:,} rows, "
                      + ("Kantata pages of 200" if variant == "kantata" else "plain pages of 1,000"), flush=True)
                for rep in range(args.repeat):  # interleaved, so a change in the machine's load hits every tool
                    tag = f" #{rep + 1}" if args.repeat > 1 else ""
                    db = tmp / f"lb_{variant}.duckdb"
                    r = run_child([sys.executable, __file__, "--worker", variant, base, str(db), token], {})
                    db.unlink()
                    results.setdefault(f"ledgerbridge/{variant}", []).append(r)
                    show("ledgerbridge" + tag, r, n)
                    for mode in [m for m in args.dlt_modes.split(",") if m]:
                        pdir, db = tmp / f"pipelines_{variant}_{mode}", tmp / f"dlt_{variant}_{mode}.duckdb"
                        r = run_child([str(python), str(script), variant, mode, base, token, str(db), str(pdir),
                                       SYSTEM], env)
                        shutil.rmtree(pdir, ignore_errors=True)
                        db.unlink()
                        results.setdefault(f"dlt {mode}/{variant}", []).append(r)
                        show(f"dlt {mode}{tag}", r, n)
            ok &= report_variant(variant, results, n)
        versions = next((r[0]["versions"] for r in results.values() if "versions" in r[0]), None)
    import duckdb

    print(f"\nversions: ledgerbridge side duckdb {duckdb.__version__}; dlt side {versions}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


def report_variant(variant: str, results: Mapping[str, list[dict[str, Any]]], n: int) -> bool:
    """Medians over the repeats; ratios are the median of the per-repeat (paired) ratios."""
    mine = {k: v for k, v in results.items() if k.endswith("/" + variant)}
    lb = mine[f"ledgerbridge/{variant}"]
    print(f"  summary (median of {len(lb)} run(s); wall min-max):")
    for key, runs in mine.items():
        walls = [r["seconds"] for r in runs]
        print(f"    {key.split('/')[0]:<24} {median(walls):7.2f} s  {n / median(walls):9,.0f} rows/s  "
              f"({min(walls):.1f}-{max(walls):.1f} s)  peak RSS {median(r['rss_mb'] for r in runs):5.0f} MB  "
              f"{median(r['cpu_seconds'] for r in runs):.1f} cpu-s (whole process)")
    for key, runs in mine.items():
        if key.startswith("ledgerbridge"):
            continue
        pairs = list(zip(lb, runs, strict=True))
        print(f"  ratio ledgerbridge / {key.split('/')[0]}: "
              f"{median(a['seconds'] / b['seconds'] for a, b in pairs):.2f}x wall "
              f"({median(a['process_seconds'] / b['process_seconds'] for a, b in pairs):.2f}x whole process, "
              f"{median(a['cpu_seconds'] / b['cpu_seconds'] for a, b in pairs):.2f}x cpu-s), "
              f"{median(a['rss_mb'] / b['rss_mb'] for a, b in pairs):.2f}x peak RSS")
    print("  check (rows, distinct ids, SUM(hours), billable hours"
          + (", SUM(billable_amount)" if variant == "plain" else "") + "; column types):")
    ok = True
    ref = None
    for key, runs in mine.items():
        for r in runs:
            c = dict(r["check"])
            sums = {k: v for k, v in c.items() if k != "types"}
            same = ref is None or (sums, c["types"]) == ref
            ref = ref or (sums, c["types"])
            ok &= same and c["rows"] == n and c["ids"] == n
        print(f"    {key:<26} {' '.join(str(v) for v in sums.values())}  {c['types']}  "
              f"{'OK' if ok else 'MISMATCH'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
