"""Sandbox of the Tempo (Timesheets) Cloud REST API v4, from the vendor facts in
``reference/vendors/05-jira-tempo.md``.

Speaks:

- auth: ``Authorization: Bearer <token>`` — the Tempo API token ``api_token``, or an OAuth access token from
  ``POST /oauth/token/`` (form-encoded ``grant_type=refresh_token``; rotating refresh tokens); access tokens live
  ``token_ttl`` seconds (sandbox clock), then answer 401.
- ``GET /4/worklogs?updatedFrom=yyyy-MM-dd['T'HH:mm:ss]&from&to&offset&limit``: oldest change first, ``limit`` at most
  1,000 (default 50), ``metadata {count, offset, limit, next, previous}`` with ``next`` the full URL of the next
  page. Deletions are not in it (Jira's deleted feed has them).
- ``POST /4/worklogs/tempo-to-jira`` ``{"tempoWorklogIds": [...]}`` -> ``{jiraWorklogId, tempoWorklogId}`` pairs.
- ``GET /4/periods?from&to`` (``period``: ``monthly`` or ``weekly``) and
  ``GET /4/timesheet-approvals/user/{accountId}?from&to``: the approval of one user and period, status ``OPEN``,
  ``IN_REVIEW`` or ``APPROVED`` with its ``updatedAt``.
- throttling: ``rate_limit`` requests per ``rate_window`` seconds -> 429 with ``Retry-After``. Errors as
  ``{"errors": [{"message": ...}]}``.

``seed_worklogs=N`` mirrors the Jira sandbox's demo worklogs (``ledgerbridge sandbox jira -o seed_worklogs=N``).

Test hooks: ``app.state.store`` (:class:`TempoStore`: seed worklogs linked to Jira worklog ids, set approvals;
``clock`` settable), ``app.state.calls``, ``app.state.limits``.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = ("Tempo API v4: worklogs by updatedFrom (offset/limit, metadata.next), tempo-to-jira ids, periods, "
               "timesheet approvals per user; API token + OAuth, 429/Retry-After")
MAX_LIMIT = 1000
STATUSES = ("OPEN", "IN_REVIEW", "APPROVED")


def tempo_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_of(day: dt.date, kind: str) -> tuple[dt.date, dt.date]:
    if kind == "weekly":
        start = day - dt.timedelta(days=day.weekday())
        return start, start + dt.timedelta(days=6)
    start = day.replace(day=1)
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return start, end


@dataclass
class TempoStore:
    clock: Callable[[], float] = time.time
    period: str = "monthly"
    worklogs: dict[int, dict[str, Any]] = field(default_factory=dict)
    approvals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (account, period from)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _next: int = 500

    def add_worklog(self, jira_worklog_id: str | int, issue_id: str | int, account_id: str, start_date: str,
                    seconds: int, *, billable_seconds: int | None = None, attributes: dict[str, str] | None = None,
                    description: str = "") -> int:
        with self.lock:
            self._next += 1
            now = self.clock()
            self.worklogs[self._next] = {
                "tempoWorklogId": self._next, "jiraWorklogId": int(jira_worklog_id), "issueId": int(issue_id),
                "accountId": account_id, "startDate": start_date, "seconds": int(seconds),
                "billableSeconds": int(seconds if billable_seconds is None else billable_seconds),
                "attributes": dict(attributes or {}), "description": description, "createdAt": now,
                "updatedAt": now}
            return self._next

    def tempo_id(self, jira_worklog_id: str | int) -> int:
        return next(t for t, w in self.worklogs.items() if w["jiraWorklogId"] == int(jira_worklog_id))

    def update_worklog(self, tempo_id: int, *, billable_seconds: int | None = None,
                       attributes: dict[str, str] | None = None, seconds: int | None = None) -> None:
        with self.lock:
            w = self.worklogs[tempo_id]
            if billable_seconds is not None:
                w["billableSeconds"] = int(billable_seconds)
            if attributes is not None:
                w["attributes"].update(attributes)
            if seconds is not None:
                w["seconds"] = int(seconds)
            w["updatedAt"] = self.clock()

    def delete_worklog(self, tempo_id: int) -> None:
        with self.lock:
            self.worklogs.pop(tempo_id)

    def set_approval(self, account_id: str, day: str | dt.date, status: str, *, actor: str = "manager") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        start, _ = period_of(dt.date.fromisoformat(str(day)), self.period)
        with self.lock:
            self.approvals[(account_id, start.isoformat())] = {"key": status, "actor": actor,
                                                               "updatedAt": self.clock()}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message}]}, status_code=status, headers=headers)


def _parse_updated_from(text: str) -> float:
    value = dt.datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def create_app(*, api_token: str = "tempo-api-token", client_id: str = "lb-tempo-client",
               client_secret: str = "lb-tempo-secret", refresh_token: str = "tempo-refresh-0",
               token_ttl: float = 3600.0, period: str = "monthly", rate_limit: int | None = None,
               rate_window: float = 1.0, seed_worklogs: int = 0) -> FastAPI:
    """The Tempo sandbox app (options: see the module docstring). ``seed_worklogs=N`` mirrors the Jira sandbox's
    demo worklogs (same ids; start both on the same day with the same N) and approves the current and the previous
    period of every demo user."""
    app = FastAPI(title="Tempo API v4 sandbox (ledgerbridge)", openapi_url=None, docs_url=None, redoc_url=None)
    if period not in ("monthly", "weekly"):
        raise ValueError("period must be monthly or weekly")
    store = TempoStore(period=period)
    calls = CallLog()
    limits = RateWindow(limit=int(rate_limit) if rate_limit else None, window=float(rate_window))
    tokens: dict[str, float] = {}
    refresh = {"current": refresh_token}
    app.state.store, app.state.calls, app.state.limits, app.state.tokens = store, calls, limits, tokens
    app.state.refresh = refresh
    app.state.banner = (f"Tempo API token: {api_token}  (Authorization: Bearer ...; paths /4/...)\n"
                        f"OAuth: client {client_id} / {client_secret}, refresh token {refresh_token} "
                        "(POST /oauth/token/)")

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        response: Response
        if request.url.path.startswith("/oauth/token"):
            response = await call_next(request)
        else:
            auth = request.headers.get("authorization", "").removeprefix("Bearer ")
            wait = None
            if auth != api_token and store.clock() >= tokens.get(auth, 0):
                response = _error(401, "The access token is invalid or expired")
            elif (wait := limits.try_acquire()) is not None:
                response = _error(429, "Too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
            else:
                limits.release()
                response = await call_next(request)
        calls.add(request.method, request.url.path, response.status_code)
        return response

    @app.post("/oauth/token/")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))  # application/x-www-form-urlencoded
        if form.get("grant_type") != "refresh_token" or form.get("client_id") != client_id \
                or form.get("client_secret") != client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("refresh_token") != refresh["current"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = secrets.token_urlsafe(24)
        tokens[access] = store.clock() + token_ttl
        refresh["current"] = secrets.token_urlsafe(16)
        return JSONResponse({"access_token": access, "refresh_token": refresh["current"], "expires_in": token_ttl,
                             "token_type": "Bearer", "scope": "read:worklogs read:timesheet-approvals"})

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def worklog_json(request: Request, w: dict[str, Any]) -> dict[str, Any]:
        b = base(request)
        return {"self": f"{b}/4/worklogs/{w['tempoWorklogId']}", "tempoWorklogId": w["tempoWorklogId"],
                "issue": {"self": f"{b}/rest/api/3/issue/{w['issueId']}", "id": w["issueId"]},
                "timeSpentSeconds": w["seconds"], "billableSeconds": w["billableSeconds"],
                "startDate": w["startDate"], "startTime": "09:00:00", "description": w["description"],
                "createdAt": tempo_time(w["createdAt"]), "updatedAt": tempo_time(w["updatedAt"]),
                "author": {"self": f"{b}/rest/api/3/user?accountId={w['accountId']}", "accountId": w["accountId"]},
                "attributes": {"self": f"{b}/4/worklogs/{w['tempoWorklogId']}/work-attribute-values",
                               "values": [{"key": k, "value": v} for k, v in sorted(w["attributes"].items())]}}

    @app.get("/4/worklogs")
    def worklogs(request: Request, updatedFrom: str | None = None, offset: int = 0,
                 limit: int = 50) -> Response:
        q = request.query_params
        try:
            since = _parse_updated_from(updatedFrom) if updatedFrom else None
            day_from = dt.date.fromisoformat(q["from"]) if "from" in q else None
            day_to = dt.date.fromisoformat(q["to"]) if "to" in q else None
        except ValueError as exc:
            return _error(400, f"Invalid date: {exc}")
        limit = max(1, min(MAX_LIMIT, limit))
        with store.lock:
            rows = sorted((w for w in store.worklogs.values()
                           if (since is None or int(w["updatedAt"]) >= since)
                           and (day_from is None or w["startDate"] >= day_from.isoformat())
                           and (day_to is None or w["startDate"] <= day_to.isoformat())),
                          key=lambda w: (int(w["updatedAt"]), w["tempoWorklogId"]))
            page = [worklog_json(request, w) for w in rows[offset:offset + limit]]
        params = {k: v for k, v in q.items() if k not in ("offset", "limit")}
        meta: dict[str, Any] = {"count": len(page), "offset": offset, "limit": limit}

        def link(at: int) -> str:
            return f"{base(request)}/4/worklogs?{urlencode({**params, 'offset': at, 'limit': limit})}"

        if offset + limit < len(rows):
            meta["next"] = link(offset + limit)
        if offset > 0:
            meta["previous"] = link(max(0, offset - limit))
        return JSONResponse({"self": str(request.url), "metadata": meta, "results": page})

    @app.post("/4/worklogs/tempo-to-jira")
    async def tempo_to_jira(request: Request) -> Response:
        body = await request.json()
        ids = body.get("tempoWorklogIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > MAX_LIMIT:
            return _error(400, f"tempoWorklogIds must be a list of at most {MAX_LIMIT} ids")
        with store.lock:
            results = [{"tempoWorklogId": int(i), "jiraWorklogId": store.worklogs[int(i)]["jiraWorklogId"]}
                       for i in ids if int(i) in store.worklogs]
        return JSONResponse({"self": str(request.url), "metadata": {"count": len(results)}, "results": results})

    def _range(request: Request) -> tuple[dt.date, dt.date] | Response:
        try:
            return dt.date.fromisoformat(request.query_params["from"]), dt.date.fromisoformat(
                request.query_params["to"])
        except (KeyError, ValueError):
            return _error(400, "from and to are required dates (yyyy-MM-dd)")

    @app.get("/4/periods")
    def periods(request: Request) -> Response:
        rng = _range(request)
        if isinstance(rng, Response):
            return rng
        out, day = [], rng[0]
        while day <= rng[1]:
            start, end = period_of(day, store.period)
            out.append({"from": start.isoformat(), "to": end.isoformat()})
            day = end + dt.timedelta(days=1)
        return JSONResponse({"self": str(request.url), "metadata": {"count": len(out)}, "periods": out})

    @app.get("/4/timesheet-approvals/user/{account_id}")
    def approval(request: Request, account_id: str) -> Response:
        rng = _range(request)
        if isinstance(rng, Response):
            return rng
        start, end = period_of(rng[0], store.period)
        with store.lock:
            row = store.approvals.get((account_id, start.isoformat()),
                                      {"key": "OPEN", "actor": None, "updatedAt": None})
            spent = sum(w["seconds"] for w in store.worklogs.values() if w["accountId"] == account_id
                        and start.isoformat() <= w["startDate"] <= end.isoformat())
        b = base(request)
        status: dict[str, Any] = {"key": row["key"], "comment": "", "timeSpentSecondsAtSubmit": spent,
                                  "requiredSecondsAtSubmit": 0}
        if row["actor"]:
            status["actor"] = {"accountId": row["actor"]}
        if row["updatedAt"] is not None:
            status["updatedAt"] = tempo_time(row["updatedAt"])
        return JSONResponse({
            "self": str(request.url), "user": {"self": f"{b}/rest/api/3/user?accountId={account_id}",
                                               "accountId": account_id},
            "period": {"from": start.isoformat(), "to": end.isoformat()}, "requiredSeconds": 0,
            "timeSpentSeconds": spent, "status": status,
            "worklogs": {"self": f"{b}/4/worklogs/user/{account_id}?from={start}&to={end}"}})

    if seed_worklogs:
        seed(store, int(seed_worklogs))
    return app


def seed(store: TempoStore, n: int) -> None:
    from ledgerbridge.testing.sandboxes.jira import seed_plan

    today = dt.datetime.fromtimestamp(store.clock(), dt.UTC).date()
    for wid, issue, account, day, seconds in seed_plan(n, today):
        store.add_worklog(wid, issue, account, day, seconds, attributes={"_Account_": "DEMO-ACC"})
    for i in range(3):
        for day in (today, period_of(today, store.period)[0] - dt.timedelta(days=1)):
            store.set_approval(f"557058:{i:04d}", day, "APPROVED")


__all__ = ["DESCRIPTION", "MAX_LIMIT", "TempoStore", "create_app", "period_of", "seed", "tempo_time"]
