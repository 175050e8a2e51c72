"""Sandbox of Jira Cloud's platform REST API v3 (the worklog part a time-sync needs), from the vendor facts in
``reference/vendors/05-jira-tempo.md`` and Atlassian's published OpenAPI description (the tests validate every
request and answer against it).

Speaks:

- auth: basic (``email`` + ``api_token``) on the site paths ``/rest/api/3/...``; OAuth 2.0 (3LO) bearer tokens on
  ``/ex/jira/<cloud_id>/rest/api/3/...``, issued by ``POST /oauth/token`` (``grant_type=refresh_token``; refresh
  tokens rotate: each use returns a new one and retires the old); ``GET /oauth/token/accessible-resources``.
  Access tokens live ``token_ttl`` seconds (sandbox clock) — expiry mid-run answers 401.
- ``GET /worklog/updated|deleted?since=<ms>``: ``{worklogId, updatedTime}`` oldest first, ``page_size`` (1,000) per
  page, ``since`` inclusive, ``until`` = the page's youngest time, ``nextPage`` = the same feed ``?since=<until>``
  (so items sharing the boundary millisecond come again), ``lastPage``. Changes younger than ``gap_seconds`` (60)
  are left out — plus up to ``gap_jitter_seconds`` more per worklog (a late-surfacing change).
- ``POST /worklog/list`` (at most 1,000 ids, else 400; deleted ids absent; ``expand=properties``),
  ``POST/PUT/DELETE /issue/{id}/worklog[/{worklogId}]`` (written as the caller), ``GET /issue/{id}``,
  ``GET /project/search``, ``GET /users/search``, worklog properties (GET/PUT/DELETE; a PUT bumps the worklog's
  ``updated`` as Jira does for its own writes).
- ``fault_feed_shape=true``: the feeds answer ``updatedTime`` as a date-time text instead of epoch ms (a shape
  drift the contract tests must catch).
- throttling: ``rate_limit`` requests per ``rate_window`` seconds -> 429 with ``Retry-After`` (whole seconds),
  ``X-RateLimit-*`` and ``RateLimit-Reason: jira-burst-based``. Errors as ``{"errorMessages": [], "errors": {}}``.

Test hooks: ``app.state.store`` (:class:`JiraStore`: seed projects, issues, users, worklogs; ``clock`` settable),
``app.state.calls`` (:class:`CallLog`), ``app.state.limits`` (:class:`RateWindow`).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = ("Jira Cloud REST v3 worklogs: updated/deleted feeds with the last-minute gap, worklog/list, issues, "
               "projects, users, worklog properties; basic auth + OAuth 3LO, 429/Retry-After")
LIST_LIMIT = 1000


def jira_time(ms: int, offset_minutes: int = 0) -> str:
    """Jira's ``2026-11-02T09:00:00.000+0100``."""
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    t = dt.datetime.fromtimestamp(ms / 1000, tz)
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}{sign}{hh:02d}{mm:02d}"


@dataclass
class JiraStore:
    """The sandbox's data. ``clock`` (epoch seconds) stamps every change; tests set it to make ties and gaps."""

    clock: Callable[[], float] = time.time
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    worklogs: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)  # worklog id -> deletion time (ms)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)  # worklog id -> {key: value}
    lock: threading.RLock = field(default_factory=threading.RLock)
    _next: int = 10000

    def now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _id(self) -> str:
        self._next += 1
        return str(self._next)

    def add_project(self, key: str, name: str | None = None, **extra: Any) -> str:
        with self.lock:
            pid = self._id()
            self.projects[pid] = {"id": pid, "key": key, "name": name or key, "projectTypeKey": "software",
                                  "simplified": False, "style": "classic", "isPrivate": False, **extra}
            return pid

    def add_issue(self, project_id: str, **fields: Any) -> str:
        with self.lock:
            iid = self._id()
            project = self.projects[project_id]
            n = sum(1 for i in self.issues.values() if i["project_id"] == project_id) + 1
            self.issues[iid] = {"id": iid, "key": f"{project['key']}-{n}", "project_id": project_id,
                                "fields": dict(fields)}
            return iid

    def add_user(self, account_id: str, name: str, *, active: bool = True, account_type: str = "atlassian") -> str:
        with self.lock:
            self.users[account_id] = {"accountId": account_id, "displayName": name, "active": active,
                                      "accountType": account_type, "timeZone": "UTC"}
            return account_id

    def add_worklog(self, issue_id: str, account_id: str, started: dt.datetime | str, seconds: int,
                    comment: str = "", *, offset_minutes: int = 0) -> str:
        """A new worklog; ``started`` a date-time (or ISO date: 09:00 local)."""
        with self.lock:
            if issue_id not in self.issues:
                raise KeyError(f"no issue {issue_id}")
            wid = self._id()
            now = self.now_ms()
            if isinstance(started, str):
                started = dt.datetime.fromisoformat(started + "T09:00:00")
            start = started if started.tzinfo else started.replace(
                tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
            self.worklogs[wid] = {"id": wid, "issueId": issue_id, "author": account_id,
                                  "started_ms": int(start.timestamp() * 1000), "offset": offset_minutes,
                                  "seconds": int(seconds), "comment": comment, "created": now, "updated": now}
            return wid

    def update_worklog(self, wid: str, **changes: Any) -> None:
        """Change ``seconds``, ``comment``, ``issue_id`` or ``started`` (datetime); stamps ``updated``."""
        with self.lock:
            w = self.worklogs[wid]
            if "seconds" in changes:
                w["seconds"] = int(changes["seconds"])
            if "comment" in changes:
                w["comment"] = changes["comment"]
            if "issue_id" in changes:
                w["issueId"] = changes["issue_id"]
            if "started" in changes:
                w["started_ms"] = int(changes["started"].timestamp() * 1000)
            w["updated"] = self.now_ms()

    def delete_worklog(self, wid: str) -> None:
        with self.lock:
            self.worklogs.pop(wid)
            self.properties.pop(wid, None)
            self.deleted[wid] = self.now_ms()

    def visible(self, wid: str, stamp: int, now: int, gap_ms: int, jitter_ms: int) -> bool:
        extra = (zlib.crc32(f"{wid}:{stamp}".encode()) % (jitter_ms + 1)) if jitter_ms else 0
        return stamp + gap_ms + extra <= now


def _text(adf: Any) -> str:
    """The text of an ADF comment (or a plain string)."""
    if isinstance(adf, dict):
        return "".join(_text(c) for c in adf.get("content") or ()) if adf.get("type") != "text" \
            else str(adf.get("text", ""))
    return "" if adf is None else str(adf)


def _caller(request: Request) -> str:
    """The account id a write is made as: the basic-auth e-mail's account (``557058:`` + e-mail) or ``oauth``."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("Basic "):
        return "557058:" + base64.b64decode(auth[6:]).decode().split(":", 1)[0]
    return "557058:oauth-user"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errorMessages": [message], "errors": {}}, status_code=status, headers=headers)


def create_app(*, email: str = "ada@example.com", api_token: str = "jira-api-token",
               client_id: str = "lb-jira-client", client_secret: str = "lb-jira-secret",
               refresh_token: str = "jira-refresh-0", cloud_id: str = "5a1e2d3c-0000-4000-8000-00000000c10d",
               token_ttl: float = 3600.0, gap_seconds: float = 60.0, gap_jitter_seconds: float = 0.0,
               page_size: int = LIST_LIMIT, rate_limit: int | None = None, rate_window: float = 1.0,
               seed_worklogs: int = 0, fault_feed_shape: bool = False) -> FastAPI:
    """The Jira sandbox app (options: see the module docstring). ``seed_worklogs=N`` creates a demo project,
    three users and N worklogs spread over the last 30 days."""
    app = FastAPI(title="Jira Cloud sandbox (ledgerbridge)", openapi_url=None, docs_url=None, redoc_url=None)
    store = JiraStore()
    calls = CallLog()
    limits = RateWindow(limit=int(rate_limit) if rate_limit else None, window=float(rate_window))
    tokens: dict[str, float] = {}  # access token -> expiry (store clock)
    refresh = {"current": refresh_token}
    basic = "Basic " + base64.b64encode(f"{email}:{api_token}".encode()).decode()
    app.state.store, app.state.calls, app.state.limits, app.state.tokens = store, calls, limits, tokens
    app.state.refresh = refresh
    app.state.options = {"gap_seconds": gap_seconds, "gap_jitter_seconds": gap_jitter_seconds,
                         "page_size": int(page_size), "token_ttl": token_ttl, "fault_feed_shape": fault_feed_shape}
    app.state.banner = (f"basic auth: {email} / API token {api_token}  (site paths /rest/api/3/...)\n"
                        f"OAuth: client {client_id} / {client_secret}, refresh token {refresh_token}, "
                        f"cloud id {cloud_id}  (paths /ex/jira/{cloud_id}/rest/api/3/..., token POST /oauth/token)")

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        path = request.url.path
        response: Response
        if path.startswith("/oauth/token") and request.method == "POST":
            response = await call_next(request)
        else:
            response = _authorize(request, path) or _throttle() or await call_next(request)
        calls.add(request.method, path, response.status_code)
        return response

    def _authorize(request: Request, path: str) -> Response | None:
        auth = request.headers.get("authorization", "")
        if path.startswith("/ex/jira/"):
            if path.split("/")[3] != cloud_id:
                return _error(404, "Site not found for this cloud id")
            expiry = tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
            if expiry is None or store.clock() >= expiry:
                return JSONResponse({"code": 401, "message": "Unauthorized; token expired or invalid"},
                                    status_code=401)
            return None
        if path.startswith("/oauth/token/accessible-resources"):
            ok = auth.startswith("Bearer ") and store.clock() < tokens.get(auth.removeprefix("Bearer "), 0)
            return None if ok else JSONResponse({"code": 401, "message": "Unauthorized"}, status_code=401)
        if auth != basic:
            return _error(401, "You are not authenticated. Authentication required to perform this operation.",
                          {"WWW-Authenticate": 'Basic realm="protected-area"'})
        return None

    def _throttle() -> Response | None:
        wait = limits.try_acquire()
        if wait is None:
            limits.release()
            return None
        reset = dt.datetime.fromtimestamp(time.time() + wait, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
        return _error(429, "Rate limit exceeded.", {
            "Retry-After": str(max(1, math.ceil(wait))), "X-RateLimit-Limit": str(limits.limit),
            "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset, "RateLimit-Reason": "jira-burst-based"})

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        body = await request.json()
        if body.get("grant_type") != "refresh_token" or body.get("client_id") != client_id \
                or body.get("client_secret") != client_secret:
            return JSONResponse({"error": "access_denied", "error_description": "Unauthorized"}, status_code=403)
        if body.get("refresh_token") != refresh["current"]:
            return JSONResponse({"error": "unauthorized_client", "error_description": "refresh_token is invalid"},
                                status_code=403)
        access = secrets.token_urlsafe(24)
        tokens[access] = store.clock() + token_ttl
        refresh["current"] = secrets.token_urlsafe(16)  # rotating refresh tokens
        return JSONResponse({"access_token": access, "refresh_token": refresh["current"], "expires_in": token_ttl,
                             "scope": "read:jira-work write:jira-work read:jira-user offline_access",
                             "token_type": "Bearer"})

    @app.get("/oauth/token/accessible-resources")
    def accessible(request: Request) -> Response:
        return JSONResponse([{"id": cloud_id, "url": str(request.base_url).rstrip("/"), "name": "sandbox",
                              "scopes": ["read:jira-work", "write:jira-work"], "avatarUrl": ""}])

    for prefix in ("", "/ex/jira/{cloud_id}"):
        _routes(app, prefix + "/rest/api/3", store)
    if seed_worklogs:
        seed(store, int(seed_worklogs))
    return app


def _routes(app: FastAPI, base: str, store: JiraStore) -> None:
    def site(request: Request) -> str:
        return str(request.base_url).rstrip("/") + request.url.path.split("/rest/api/3")[0] + "/rest/api/3"

    def feed(request: Request, kind: str, since: int) -> Response:
        opts = app.state.options
        now = store.now_ms()
        gap, jitter = int(opts["gap_seconds"] * 1000), int(opts["gap_jitter_seconds"] * 1000)
        with store.lock:
            source = ({w: v["updated"] for w, v in store.worklogs.items()} if kind == "updated"
                      else dict(store.deleted))
            items = sorted((t, int(w)) for w, t in source.items()
                           if t >= since and store.visible(w, t, now, gap, jitter))
        page = items[:opts["page_size"]]
        last = len(items) <= opts["page_size"]
        shape = (lambda t: jira_time(t)) if opts["fault_feed_shape"] else (lambda t: t)  # fault: a drifted shape
        body: dict[str, Any] = {"values": [{"worklogId": w, "updatedTime": shape(t), "properties": []}
                                           for t, w in page],
                                "since": page[0][0] if page else since,
                                "until": page[-1][0] if page else since,
                                "self": f"{site(request)}/worklog/{kind}?since={since}",
                                "lastPage": last}
        if not last:
            body["nextPage"] = f"{site(request)}/worklog/{kind}?since={page[-1][0]}"
        return JSONResponse(body)

    @app.get(base + "/worklog/updated")
    def updated(request: Request, since: int = 0, expand: str = "") -> Response:
        return feed(request, "updated", since)

    @app.get(base + "/worklog/deleted")
    def deleted(request: Request, since: int = 0) -> Response:
        return feed(request, "deleted", since)

    def worklog_json(request: Request, w: dict[str, Any], expand: str = "") -> dict[str, Any]:
        user = store.users.get(w["author"], {"accountId": w["author"], "displayName": w["author"], "active": True})
        author = {"self": f"{site(request)}/user?accountId={w['author']}", "accountId": w["author"],
                  "displayName": user["displayName"], "active": user["active"]}
        comment = {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": w["comment"]}]}]} if w["comment"] else None
        out = {"self": f"{site(request)}/issue/{w['issueId']}/worklog/{w['id']}", "author": author,
               "updateAuthor": author, "created": jira_time(w["created"], w["offset"]),
               "updated": jira_time(w["updated"], w["offset"]), "started": jira_time(w["started_ms"], w["offset"]),
               "timeSpent": f"{w['seconds'] // 3600}h {w['seconds'] % 3600 // 60}m".replace(" 0m", ""),
               "timeSpentSeconds": w["seconds"], "id": w["id"], "issueId": w["issueId"]}
        if comment:
            out["comment"] = comment
        if "properties" in expand.split(","):
            out["properties"] = [{"key": k, "value": v} for k, v in sorted(store.properties.get(w["id"], {}).items())]
        return out

    @app.post(base + "/worklog/list")
    async def worklog_list(request: Request, expand: str = "") -> Response:
        try:
            body = await request.json()
            ids = [int(i) for i in body["ids"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "The request body must be {\"ids\": [worklog ids]}.")
        if len(ids) > LIST_LIMIT:
            return _error(400, f"Number of worklogs to retrieve exceeds the limit of {LIST_LIMIT}.")
        with store.lock:
            found = [worklog_json(request, store.worklogs[str(i)], expand) for i in ids if str(i) in store.worklogs]
        return JSONResponse(found)

    def _issue(issue_id_or_key: str) -> dict[str, Any] | None:
        return store.issues.get(issue_id_or_key) or next(
            (i for i in store.issues.values() if i["key"] == issue_id_or_key), None)

    def _started(value: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(str(value))

    @app.post(base + "/issue/{issue_id_or_key}/worklog")
    async def add_worklog(request: Request, issue_id_or_key: str) -> Response:
        body = await request.json()
        issue = _issue(issue_id_or_key)
        if issue is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        try:
            started, seconds = _started(body["started"]), int(body["timeSpentSeconds"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "started (date-time) and timeSpentSeconds are required")
        account = _caller(request)
        offset = int(started.utcoffset().total_seconds() // 60) if started.utcoffset() else 0
        wid = store.add_worklog(issue["id"], account, started, seconds, _text(body.get("comment")),
                                offset_minutes=offset)
        return JSONResponse(worklog_json(request, store.worklogs[wid]), status_code=201)

    @app.put(base + "/issue/{issue_id_or_key}/worklog/{worklog_id}")
    async def edit_worklog(request: Request, issue_id_or_key: str, worklog_id: str) -> Response:
        body = await request.json()
        if _owned(issue_id_or_key, worklog_id) is None:
            return _error(404, "Worklog does not exist or you do not have permission to see it.")
        changes: dict[str, Any] = {}
        if "timeSpentSeconds" in body:
            changes["seconds"] = int(body["timeSpentSeconds"])
        if "started" in body:
            changes["started"] = _started(body["started"])
        if "comment" in body:
            changes["comment"] = _text(body["comment"])
        store.update_worklog(worklog_id, **changes)
        return JSONResponse(worklog_json(request, store.worklogs[worklog_id]))

    @app.delete(base + "/issue/{issue_id_or_key}/worklog/{worklog_id}")
    def delete_worklog(issue_id_or_key: str, worklog_id: str) -> Response:
        if _owned(issue_id_or_key, worklog_id) is None:
            return _error(404, "Worklog does not exist or you do not have permission to see it.")
        store.delete_worklog(worklog_id)
        return Response(status_code=204)

    @app.get(base + "/issue/{issue_id_or_key}")
    def issue(request: Request, issue_id_or_key: str, fields: str = "*all") -> Response:
        with store.lock:
            raw = _issue(issue_id_or_key)
            if raw is None:
                return _error(404, "Issue does not exist or you do not have permission to see it.")
            project = store.projects[raw["project_id"]]
        wanted = set(fields.split(","))
        every = "*all" in wanted or "*navigable" in wanted
        out_fields: dict[str, Any] = {k: v for k, v in raw["fields"].items() if every or k in wanted}
        if every or "project" in wanted:
            out_fields["project"] = {"self": f"{site(request)}/project/{project['id']}", "id": project["id"],
                                     "key": project["key"], "name": project["name"]}
        return JSONResponse({"id": raw["id"], "key": raw["key"], "self": f"{site(request)}/issue/{raw['id']}",
                             "fields": out_fields})

    @app.get(base + "/project/search")
    def project_search(request: Request, startAt: int = 0, maxResults: int = 50) -> Response:
        with store.lock:
            rows = sorted(store.projects.values(), key=lambda p: p["key"])
        page = rows[startAt:startAt + maxResults]
        last = startAt + maxResults >= len(rows)
        body: dict[str, Any] = {
            "self": f"{site(request)}/project/search?startAt={startAt}&maxResults={maxResults}",
            "maxResults": maxResults, "startAt": startAt, "total": len(rows), "isLast": last,
            "values": [{"self": f"{site(request)}/project/{p['id']}", **p} for p in page]}
        if not last:
            body["nextPage"] = (f"{site(request)}/project/search?startAt={startAt + maxResults}"
                                f"&maxResults={maxResults}")
        return JSONResponse(body)

    @app.get(base + "/users/search")
    def users_search(request: Request, startAt: int = 0, maxResults: int = 50) -> Response:
        with store.lock:
            rows = sorted(store.users.values(), key=lambda u: u["accountId"])[startAt:startAt + maxResults]
        return JSONResponse([{"self": f"{site(request)}/user?accountId={u['accountId']}", **u} for u in rows])

    prop = base + "/issue/{issue_id_or_key}/worklog/{worklog_id}/properties/{property_key}"

    def _owned(issue_id_or_key: str, worklog_id: str) -> dict[str, Any] | None:
        w = store.worklogs.get(worklog_id)
        issue = store.issues.get(w["issueId"]) if w else None
        return w if w and issue_id_or_key in (issue["id"], issue["key"]) else None  # type: ignore[index]

    @app.get(prop)
    def get_property(issue_id_or_key: str, worklog_id: str, property_key: str) -> Response:
        with store.lock:
            if _owned(issue_id_or_key, worklog_id) is None:
                return _error(404, "Worklog does not exist or you do not have permission to see it.")
            props = store.properties.get(worklog_id, {})
            if property_key not in props:
                return _error(404, f"The property with key '{property_key}' does not exist.")
            return JSONResponse({"key": property_key, "value": props[property_key]})

    @app.put(prop)
    async def put_property(request: Request, issue_id_or_key: str, worklog_id: str, property_key: str) -> Response:
        value = await request.json()
        with store.lock:
            w = _owned(issue_id_or_key, worklog_id)
            if w is None:
                return _error(404, "Worklog does not exist or you do not have permission to see it.")
            props = store.properties.setdefault(worklog_id, {})
            created = property_key not in props
            props[property_key] = value
            w["updated"] = store.now_ms()
        return JSONResponse({}, status_code=201 if created else 200)


SEED_USERS = ("Ada", "Grace", "Linus")


def seed_plan(n: int, today: dt.date, *, days: int = 30) -> list[tuple[int, int, str, str, int]]:
    """The demo worklogs ``(worklog id, issue id, account id, day, seconds)`` that :func:`seed` creates in a fresh
    store (ids are deterministic), so the Tempo sandbox's ``seed_worklogs`` can mirror them."""
    return [(10007 + i, 10002 + i % 5, f"557058:{i % 3:04d}", (today - dt.timedelta(days=1 + i % days)).isoformat(),
             1800 * (1 + i % 8)) for i in range(n)]


def seed(store: JiraStore, n: int, *, days: int = 30) -> dict[str, Any]:
    """A demo project ``DEMO`` with 5 issues, three users and ``n`` worklogs over the last ``days`` days."""
    pid = store.add_project("DEMO", "Demo project")
    issues = [store.add_issue(pid, summary=f"Task {i}") for i in range(5)]
    users = [store.add_user(f"557058:{i:04d}", name) for i, name in enumerate(SEED_USERS)]
    today = dt.datetime.fromtimestamp(store.clock(), dt.UTC).date()
    ids = []
    for wid, issue, account, day, seconds in seed_plan(n, today, days=days):
        made = store.add_worklog(str(issue), account, day, seconds, f"work {wid}")
        assert made == str(wid), "seed() needs a fresh store"
        ids.append(made)
    return {"project": pid, "issues": issues, "users": users, "worklogs": ids}


__all__ = ["DESCRIPTION", "LIST_LIMIT", "SEED_USERS", "JiraStore", "create_app", "jira_time", "seed", "seed_plan"]
