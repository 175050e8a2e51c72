"""Kantata OX (formerly Mavenlink) API v1 sandbox: OAuth bearer tokens, the ``results`` + id-keyed envelope,
page/per_page paging (max 200), workspaces, users, time entries approved through timesheet submissions, expenses,
invoices, custom field values, external references, and the subscribed-events change feed — unordered,
duplicated and lossy on request — plus 429 answers that carry no ``Retry-After``.

Built from ``shared/reference/vendors/04-kantata-ox.md``. Records live in memory in :class:`KantataStore`
(``app.state.store``); tests seed and mutate it in Python and every mutation stamps ``updated_at`` (second
resolution, so ties are common) and appends a subscribed event, as Kantata does.

Options (``create_app(**options)`` / ``ledgerbridge sandbox kantata -o key=value``):

- ``client_id`` / ``client_secret`` (``demo-client`` / ``demo-secret``), ``refresh_token`` (``demo-refresh``);
- ``token_lifetime`` seconds an access token lives (default 7200); ``token_max_uses`` (fault toggle): a token
  answers 401 after that many API calls, so expiry mid-sync is deterministic;
- ``rate_limit`` requests per ``rate_window`` seconds (default unlimited / 1.0): over it, 429 without Retry-After;
- ``shuffle_events`` (feed order is a stable hash, not time), ``duplicate_events`` (every event is listed twice),
  ``drop_every`` (every n-th event never reaches the feed; only an ``updated_after`` re-scan finds the change);
- ``event_retention_days`` (9); ``events_enabled`` (false: the add-on is off, the feed answers 403);
- ``ignore_updated_after`` (the filter is silently ignored, as an undocumented one may be);
  ``approval_touches_entries`` (false: approving a submission changes the entries' ``approved`` flag without an
  entry event or a new ``updated_at`` — only the submission's event tells);
- ``seed`` = ``demo`` loads a small demo tenant.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = "Kantata OX API v1: OAuth, results+id maps, timesheet approvals, subscribed events, 429 w/o Retry-After"

MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 20

#: resource path -> (top-level key, subject type used by events/external references, event prefix)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "workspaces": ("workspaces", "Workspace", "workspace"),
    "users": ("users", "User", "user"),
    "time_entries": ("time_entries", "TimeEntry", "time_entry"),
    "expenses": ("expenses", "Expense", "expense"),
    "invoices": ("invoices", "Invoice", "invoice"),
    "timesheet_submissions": ("timesheet_submissions", "TimesheetSubmission", "timesheet_submission"),
    "custom_field_values": ("custom_field_values", "CustomFieldValue", "custom_field_value"),
    "external_references": ("external_references", "ExternalReference", "external_reference"),
    "subscribed_events": ("subscribed_events", "SubscribedEvent", "subscribed_event"),
}
SUBJECT_TABLE = {v[1]: k for k, v in RESOURCES.items()}


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat()


def parse_ts(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class KantataStore:
    """The tenant's records (thread-safe). Ids are strings, as Kantata sends them. ``now`` is the wall clock in
    whole seconds unless :meth:`freeze` pinned it (then :meth:`advance` moves it)."""

    def __init__(self, *, drop_every: int = 0, event_retention_days: float = 9.0,
                 approval_touches_entries: bool = True) -> None:
        self.lock = threading.RLock()
        self.approval_touches_entries = approval_touches_entries
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RESOURCES}
        self.events: list[dict[str, Any]] = []
        self.hidden_events: set[str] = set()
        self.drop_every = drop_every
        self.event_retention = dt.timedelta(days=event_retention_days)
        self._ids = itertools.count(1001)
        self._frozen: dt.datetime | None = None
        self._drop_next = 0

    # ------------------------------------------------------------------ clock

    def now(self) -> dt.datetime:
        if self._frozen is not None:
            return self._frozen
        return dt.datetime.now(dt.UTC).replace(microsecond=0)

    def freeze(self, at: dt.datetime | None = None) -> None:
        self._frozen = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)

    def unfreeze(self) -> None:
        self._frozen = None

    def advance(self, seconds: float = 1.0) -> None:
        if self._frozen is None:
            self.freeze()
        assert self._frozen is not None
        self._frozen += dt.timedelta(seconds=seconds)

    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` events are recorded but never reach the feed (a lost delivery)."""
        self._drop_next += n

    # ------------------------------------------------------------------ generic

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _event(self, subject_type: str, subject_id: str, action: str) -> None:
        prefix = RESOURCES[SUBJECT_TABLE[subject_type]][2]
        eid = self._new_id()
        ev = {"id": eid, "event_type": f"{prefix}:{action}", "subject_type": subject_type,
              "subject_id": subject_id, "created_at": iso(self.now())}
        self.events.append(ev)
        if self._drop_next > 0:
            self._drop_next -= 1
            self.hidden_events.add(eid)
        elif self.drop_every and len(self.events) % self.drop_every == 0:
            self.hidden_events.add(eid)

    def _create(self, table: str, fields: Mapping[str, Any], *, event: bool = True) -> str:
        with self.lock:
            rid = str(fields.get("id") or self._new_id())
            stamp = iso(self.now())
            self.tables[table][rid] = {**fields, "id": rid, "created_at": stamp, "updated_at": stamp}
            if event:
                self._event(RESOURCES[table][1], rid, "created")
            return rid

    def _update(self, table: str, rid: str, changes: Mapping[str, Any], *, event: bool = True) -> None:
        with self.lock:
            row = self.tables[table][str(rid)]
            row.update(changes)
            row["updated_at"] = iso(self.now())
            if event:
                self._event(RESOURCES[table][1], str(rid), "updated")

    def _delete(self, table: str, rid: str) -> None:
        with self.lock:
            del self.tables[table][str(rid)]
            self._event(RESOURCES[table][1], str(rid), "deleted")

    def get(self, table: str, rid: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.tables[table].get(str(rid))
            return dict(row) if row else None

    # ------------------------------------------------------------------ seeding / changes

    def add_workspace(self, title: str, *, currency: str = "USD", status: str = "active", client_name: str = "",
                      start_date: str = "2026-01-01", due_date: str | None = None, price_in_cents: int = 0,
                      **extra: Any) -> str:
        return self._create("workspaces", {"title": title, "currency": currency, "client_name": client_name,
                                           "status": {"key": 400 if status == "active" else 500, "message": status},
                                           "archived": status == "archived", "start_date": start_date,
                                           "due_date": due_date, "price_in_cents": price_in_cents, **extra})

    def add_user(self, full_name: str, *, email: str = "", disabled: bool = False, **extra: Any) -> str:
        return self._create("users", {"full_name": full_name, "email_address": email or f"{full_name}@example.com",
                                      "disabled": disabled, **extra})

    def add_time_entry(self, workspace_id: str, user_id: str, date_performed: str, minutes: int, *,
                       billable: bool = True, notes: str = "", story_id: str | None = None,
                       rate_in_cents: int = 0, cost_rate_in_cents: int = 0, **extra: Any) -> str:
        return self._create("time_entries", {
            "workspace_id": str(workspace_id), "user_id": str(user_id), "date_performed": date_performed,
            "time_in_minutes": minutes, "billable": billable, "notes": notes, "story_id": story_id,
            "rate_in_cents": rate_in_cents, "cost_rate_in_cents": cost_rate_in_cents, "approved": False,
            "timesheet_submission_id": None, "invoice_id": None, "locked": False, **extra})

    def update_time_entry(self, rid: str, **changes: Any) -> None:
        self._update("time_entries", rid, changes)

    def delete_time_entry(self, rid: str) -> None:
        self._delete("time_entries", rid)

    def add_expense(self, workspace_id: str, user_id: str, date: str, amount_in_cents: int, *,
                    currency: str = "USD", category: str = "Travel", billable: bool = True, notes: str = "",
                    approved: bool = False, **extra: Any) -> str:
        return self._create("expenses", {
            "workspace_id": str(workspace_id), "user_id": str(user_id), "date": date,
            "amount_in_cents": amount_in_cents, "currency": currency, "category": category, "billable": billable,
            "notes": notes, "approved": approved, "is_invoiced": False, "expense_report_id": None, **extra})

    def update_expense(self, rid: str, **changes: Any) -> None:
        self._update("expenses", rid, changes)

    def delete_expense(self, rid: str) -> None:
        self._delete("expenses", rid)

    def submit(self, time_entry_ids: Iterable[str]) -> str:
        """A timesheet submission (status ``pending``) of the given entries; each entry is updated."""
        ids = [str(i) for i in time_entry_ids]
        with self.lock:
            sid = self._create("timesheet_submissions", {"status": "pending", "time_entry_ids": ids,
                                                         "approved_at": None})
            for tid in ids:
                self._update("time_entries", tid, {"timesheet_submission_id": sid, "approved": False})
            return sid

    def _resolve(self, sid: str, status: str, approved: bool) -> None:
        with self.lock:
            sub = self.tables["timesheet_submissions"][str(sid)]
            self._update("timesheet_submissions", sid, {
                "status": status, "approved_at": iso(self.now()) if approved else None})
            for tid in sub["time_entry_ids"]:
                if tid not in self.tables["time_entries"]:
                    continue
                if self.approval_touches_entries:
                    self._update("time_entries", tid, {"approved": approved, "locked": approved})
                else:  # only the submission changes visibly: no entry event, no entry updated_at
                    self.tables["time_entries"][tid].update(approved=approved, locked=approved)

    def approve(self, sid: str) -> None:
        self._resolve(sid, "approved", True)

    def reject(self, sid: str) -> None:
        self._resolve(sid, "rejected", False)

    def cancel(self, sid: str) -> None:
        """Un-approval: the approved (or pending) submission is cancelled and its entries unlocked."""
        self._resolve(sid, "canceled", False)

    def add_invoice(self, workspace_id: str, *, number: str, currency: str = "USD", time_entry_ids: Iterable[str] = (),
                    expense_ids: Iterable[str] = (), status: str = "new", total_in_cents: int = 0) -> str:
        te, ex = [str(i) for i in time_entry_ids], [str(i) for i in expense_ids]
        if not te and not ex:
            raise ValueError("an invoice must include at least one time entry or expense")
        with self.lock:
            rid = self._create("invoices", {"workspace_ids": [str(workspace_id)], "invoice_number": number,
                                            "currency": currency, "status": status, "draft": status == "new",
                                            "paid": False, "time_entry_ids": te, "expense_ids": ex,
                                            "total_in_cents": total_in_cents})
            for tid in te:
                self._update("time_entries", tid, {"invoice_id": rid})
            return rid

    def set_custom_field(self, subject_type: str, subject_id: str, custom_field_id: str, value: Any) -> str:
        """Set a custom field value on a record (the subject's ``updated_at`` moves, as in Kantata)."""
        with self.lock:
            for row in self.tables["custom_field_values"].values():
                if (row["subject_type"], row["subject_id"], row["custom_field_id"]) == (
                        subject_type, str(subject_id), str(custom_field_id)):
                    row.update(value=value, display_value=str(value), updated_at=iso(self.now()))
                    break
            else:
                self._create("custom_field_values", {
                    "subject_type": subject_type, "subject_id": str(subject_id),
                    "custom_field_id": str(custom_field_id), "value": value, "display_value": str(value)},
                    event=False)
            self._update(SUBJECT_TABLE[subject_type], str(subject_id), {})
            return str(subject_id)

    # ------------------------------------------------------------------ views

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.tables[table].values()]

    def feed(self, shuffle: bool, duplicate: bool) -> list[dict[str, Any]]:
        """The subscribed events a client can see: retention applied, dropped ones hidden, optionally in a stable
        non-time order and each listed twice."""
        with self.lock:
            horizon = iso(self.now() - self.event_retention)
            visible = [e for e in self.events if e["id"] not in self.hidden_events and e["created_at"] >= horizon]
        if duplicate:
            visible = visible + [dict(e, _dup=1) for e in visible]  # the copy keeps the event's id
        if shuffle or duplicate:
            visible.sort(key=lambda e: hashlib.sha1(f"{e['id']}:{e.get('_dup', 0)}".encode()).hexdigest())
        return visible


@dataclass
class Tokens:
    lifetime: float
    max_uses: int | None
    issued: int = 0
    rejected: int = 0
    live: dict[str, list[float]] = field(default_factory=dict)  # token -> [expires at (monotonic), uses]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.live[token] = [time.monotonic() + self.lifetime, 0]
            self.issued += 1
        return token, self.lifetime

    def check(self, token: str) -> bool:
        with self.lock:
            entry = self.live.get(token)
            if entry is None or time.monotonic() >= entry[0] or (
                    self.max_uses is not None and entry[1] >= self.max_uses):
                self.rejected += 1
                return False
            entry[1] += 1
            return True

    def expire_all(self) -> None:
        with self.lock:
            self.live.clear()


def _error(status: int, kind: str, message: str, field_name: str | None = None) -> JSONResponse:
    err: dict[str, Any] = {"type": kind, "message": message}
    if field_name:
        err["field"] = field_name
    return JSONResponse({"errors": [err]}, status_code=status)


def _filter(q: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """The row predicate of a list query (timestamps are stored as UTC ISO text, so text order is time order)."""
    only = set(q["only"].split(",")) if "only" in q else None
    bounds = [(col, op, iso(parse_ts(q[key]))) for key, col, op in (
        ("updated_after", "updated_at", ">"), ("created_after", "created_at", ">"),
        ("updated_before", "updated_at", "<")) if key in q]
    equal = [(key, q[key]) for key in ("workspace_id", "user_id", "subject_type", "subject_id", "service_name",
                                       "timesheet_submission_id") if key in q]
    approved = q["approved"].lower() == "true" if "approved" in q else None
    lo, _, hi = q.get("date_performed_between", "").partition(":")

    def keep(row: Mapping[str, Any]) -> bool:
        if only is not None and row["id"] not in only:
            return False
        for col, op, bound in bounds:
            if (row[col] <= bound) if op == ">" else (row[col] >= bound):
                return False
        if any(str(row.get(key)) != value for key, value in equal):
            return False
        if approved is not None and bool(row.get("approved")) != approved:
            return False
        return not lo or lo <= str(row.get("date_performed")) <= hi

    return keep


def _ordered(rows: list[dict[str, Any]], order: str | None) -> list[dict[str, Any]]:
    col, _, direction = (order or "id:asc").partition(":")
    if col not in ("id", "updated_at", "created_at", "date_performed"):
        col = "id"
    if col == "id":
        key: Callable[[dict[str, Any]], Any] = lambda r: int(r["id"])  # noqa: E731
    else:
        key = lambda r: (str(r.get(col)), int(r["id"]))  # noqa: E731
    return sorted(rows, key=key, reverse=direction == "desc")


def _includes(store: KantataStore, table: str, rows: list[dict[str, Any]], include: set[str]) -> dict[str, Any]:
    """Side-loaded associations: id-keyed maps, and the ``*_id(s)`` fields on each row that point into them."""
    out: dict[str, dict[str, Any]] = {}
    subject = RESOURCES[table][1]
    if "external_references" in include:
        refs = out.setdefault("external_references", {})
        for row in rows:
            mine = [r for r in store.rows("external_references")
                    if r["subject_type"] == subject and r["subject_id"] == row["id"]]
            row["external_reference_ids"] = [r["id"] for r in mine]
            refs.update({r["id"]: r for r in mine})
    if "custom_field_values" in include:
        cfvs = out.setdefault("custom_field_values", {})
        for row in rows:
            mine = [r for r in store.rows("custom_field_values")
                    if r["subject_type"] == subject and r["subject_id"] == row["id"]]
            row["custom_field_value_ids"] = [r["id"] for r in mine]
            cfvs.update({r["id"]: r for r in mine})
    if "timesheet_submission" in include and table == "time_entries":
        subs = out.setdefault("timesheet_submissions", {})
        for row in rows:
            sid = row.get("timesheet_submission_id")
            sub = store.get("timesheet_submissions", sid) if sid else None
            if sub:
                subs[sid] = sub
    for assoc, tbl in (("user", "users"), ("workspace", "workspaces")):
        if assoc in include:
            side = out.setdefault(tbl, {})
            for row in rows:
                ref = store.get(tbl, row.get(f"{assoc}_id", ""))
                if ref:
                    side[ref["id"]] = ref
    return out


def create_app(*, client_id: str = "demo-client", client_secret: str = "demo-secret",
               refresh_token: str = "demo-refresh", token_lifetime: float = 7200.0,
               token_max_uses: int | None = None, rate_limit: int | None = None, rate_window: float = 1.0,
               shuffle_events: bool = False, duplicate_events: bool = False, drop_every: int = 0,
               event_retention_days: float = 9.0, events_enabled: bool = True, ignore_updated_after: bool = False,
               approval_touches_entries: bool = True, seed: str | None = None) -> FastAPI:
    app = FastAPI(title="Kantata OX sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    store = KantataStore(drop_every=drop_every, event_retention_days=event_retention_days,
                         approval_touches_entries=bool(approval_touches_entries))
    tokens = Tokens(float(token_lifetime), int(token_max_uses) if token_max_uses else None)
    limits = RateWindow(limit=int(rate_limit) if rate_limit else None, window=float(rate_window))
    calls = CallLog()
    feed_opts = {"shuffle": bool(shuffle_events), "duplicate": bool(duplicate_events)}
    app.state.store, app.state.tokens, app.state.limits, app.state.calls = store, tokens, limits, calls
    app.state.feed_options = feed_opts
    app.state.banner = (f"OAuth: POST /oauth/token grant_type=client_credentials client_id={client_id} "
                        f"client_secret={client_secret} (or grant_type=refresh_token refresh_token={refresh_token})\n"
                        "API: /api/v1/<resource>.json with Authorization: Bearer <access_token>")
    if seed == "demo":
        _seed_demo(store)

    @app.middleware("http")
    async def log_calls(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        calls.add(request.method, request.url.path, response.status_code)
        return response

    @app.post("/oauth/token")
    async def oauth_token(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        form: Mapping[str, Any] = (json.loads(raw or b"{}") if "json" in ctype
                                   else {k: v[-1] for k, v in parse_qs(raw.decode()).items()})
        if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") != refresh_token:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if grant not in ("client_credentials", "refresh_token"):
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token, lifetime = tokens.issue()
        return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": lifetime,
                             "refresh_token": refresh_token, "created_at": int(time.time())})

    def guard(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not tokens.check(auth[7:].strip()):
            return _error(401, "authentication", "Invalid or expired OAuth token")
        if limits.try_acquire() is not None:
            return _error(429, "system", "Rate limit exceeded")  # Kantata sends no Retry-After
        limits.release()
        return None

    def paging(q: Mapping[str, str]) -> tuple[int, int] | JSONResponse:
        try:
            page, per_page = int(q.get("page", 1)), int(q.get("per_page", DEFAULT_PER_PAGE))
        except ValueError:
            return _error(422, "validation", "page and per_page must be integers", "per_page")
        if per_page > MAX_PER_PAGE or per_page < 1 or page < 1:
            return _error(422, "validation", f"per_page must be between 1 and {MAX_PER_PAGE}", "per_page")
        return page, per_page

    def envelope(key: str, rows: list[dict[str, Any]], page: int, per_page: int,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        start = (page - 1) * per_page
        chunk = rows[start:start + per_page]
        body: dict[str, Any] = {
            "count": len(rows),
            "meta": {"count": len(rows), "page_count": max(1, -(-len(rows) // per_page)), "page_number": page,
                     "page_size": per_page},
            "results": [{"key": key, "id": r["id"]} for r in chunk],
            key: {r["id"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in chunk},
        }
        body.update(extra or {})
        return body

    def listing(request: Request, resource: str) -> JSONResponse:
        refused = guard(request)
        if refused is not None:
            return refused
        if resource not in RESOURCES:
            return _error(404, "system", f"unknown resource {resource}")
        q = dict(request.query_params)
        if ignore_updated_after:
            q.pop("updated_after", None)
        paged = paging(q)
        if isinstance(paged, JSONResponse):
            return paged
        page, per_page = paged
        if resource == "subscribed_events":
            if not events_enabled:
                return _error(403, "system", "Subscribed Events is not enabled for this account")
            types = set(q["event_types"].split(",")) if q.get("event_types") else None
            after = iso(parse_ts(q["created_after"])) if "created_after" in q else ""
            rows = [e for e in store.feed(**feed_opts)
                    if (types is None or e["event_type"] in types) and e["created_at"] > after]
            return JSONResponse(envelope("subscribed_events", rows, page, per_page))
        key = RESOURCES[resource][0]
        keep = _filter(q)
        with store.lock:
            rows = _ordered([r for r in store.tables[resource].values() if keep(r)], q.get("order"))
            chunk_rows = [dict(r) for r in rows[(page - 1) * per_page:page * per_page]]
            rows[(page - 1) * per_page:page * per_page] = chunk_rows
        include = set(filter(None, q.get("include", "").split(",")))
        extra = _includes(store, resource, chunk_rows, include)
        return JSONResponse(envelope(key, rows, page, per_page, extra))

    for path in ("/api/v1/{resource}.json", "/api/v1/{resource}"):
        app.add_api_route(path, listing, methods=["GET"])

    async def create_external_reference(request: Request) -> JSONResponse:
        refused = guard(request)
        if refused is not None:
            return refused
        body = (await request.json()).get("external_reference") or {}
        missing = [k for k in ("subject_type", "subject_id", "service_name", "service_model_ref") if not body.get(k)]
        if missing:
            return _error(422, "validation", f"{missing[0]} can't be blank", missing[0])
        table = SUBJECT_TABLE.get(str(body["subject_type"]))
        if table is None or store.get(table, str(body["subject_id"])) is None:
            return _error(422, "validation", "subject does not exist", "subject_id")
        if body.get("status", "success") not in ("success", "failed", "pending"):
            return _error(422, "validation", "status must be success, failed or pending", "status")
        fields = {k: body.get(k) for k in ("subject_type", "service_name", "service_model", "service_model_ref",
                                           "external_status", "external_link")}
        fields.update(subject_id=str(body["subject_id"]), status=body.get("status", "success"),
                      locked=bool(body.get("locked", False)))
        rid = store._create("external_references", fields, event=False)
        return JSONResponse(envelope("external_references", [store.get("external_references", rid) or {}], 1, 1))

    async def update_external_reference(request: Request, ref_id: str) -> JSONResponse:
        refused = guard(request)
        if refused is not None:
            return refused
        if store.get("external_references", ref_id) is None:
            return _error(404, "system", f"external reference {ref_id} not found")
        body = (await request.json()).get("external_reference") or {}
        allowed = ("service_model_ref", "status", "external_status", "external_link", "locked")
        store._update("external_references", ref_id, {k: v for k, v in body.items() if k in allowed}, event=False)
        return JSONResponse(envelope("external_references", [store.get("external_references", ref_id) or {}], 1, 1))

    for suffix in (".json", ""):
        app.add_api_route(f"/api/v1/external_references{suffix}", create_external_reference, methods=["POST"])
        app.add_api_route(f"/api/v1/external_references/{{ref_id}}{suffix}", update_external_reference,
                          methods=["PUT"])
    return app


def _seed_demo(store: KantataStore) -> None:
    ws = store.add_workspace("Apollo rollout", client_name="Acme Corp", currency="USD")
    users = [store.add_user(name) for name in ("Ada Lovelace", "Grace Hopper")]
    entries = [store.add_time_entry(ws, users[i % 2], f"2026-11-{10 + i:02d}", 60 * (i + 1), notes=f"work {i}")
               for i in range(6)]
    store.approve(store.submit(entries[:4]))
    store.add_expense(ws, users[0], "2026-11-12", 12550, category="Travel", approved=True)


__all__ = ["DESCRIPTION", "MAX_PER_PAGE", "KantataStore", "create_app"]
