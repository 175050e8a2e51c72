"""HTTP clients of Jira Cloud (REST v3) and Tempo (API v4): the only place the Jira + Tempo connector does I/O.

Both go through the shared layer :func:`ledgerbridge.connectors.http.send` (pacing, classification, metrics, 429 +
``Retry-After`` pausing every caller of the client, bounded retries, one token refresh on 401).

Jira Cloud (``docs/connectors/jira-tempo.md``):

- Basic auth (site URL ``https://<site>.atlassian.net`` + account e-mail + API token) or OAuth 2.0 (3LO): bearer
  access token against ``https://api.atlassian.com/ex/jira/<cloudId>``, refreshed with the (rotating) refresh token
  at ``https://auth.atlassian.com/oauth/token`` when it expires or a call answers 401. Without a configured
  ``cloud_id`` the first site of ``/oauth/token/accessible-resources`` is used.
- Change feeds ``GET /rest/api/3/worklog/updated|deleted?since=<epoch ms>``: up to 1,000
  ``{worklogId, updatedTime}`` per page, oldest first, ``until`` = the page's youngest time, the next page by the
  ``nextPage`` URL until ``lastPage``. The next page starts again *at* ``until``, so items sharing the boundary
  millisecond arrive twice (the caller de-duplicates by id). Changes of the last minute are left out.
- ``POST /rest/api/3/worklog/list`` ``{"ids": [...]}``: at most 1,000 ids per call; deleted ids are just absent.

Tempo (``https://api.tempo.io/4``): bearer token (a Tempo API token, or OAuth with refresh at
``/oauth/token/``); lists paged by ``offset``/``limit`` (≤ 1,000) with ``metadata.next`` the full URL of the next
page.

Numbers are decoded with ``parse_float=Decimal`` (nothing here is money, but nothing becomes a float either).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import PermanentError

JIRA_SYSTEM = "jira"
TEMPO_SYSTEM = "tempo"
LIST_LIMIT = 1000  # POST /worklog/list and Tempo's limit
ATLASSIAN_TOKEN_URL = "https://auth.atlassian.com/oauth/token"
ATLASSIAN_API_URL = "https://api.atlassian.com"
TEMPO_URL = "https://api.tempo.io"


def decode(response: httpx.Response) -> Any:
    """JSON with decimal numbers kept exact."""
    return json.loads(response.content, parse_float=Decimal) if response.content.strip() else None


# --------------------------------------------------------------------------------------------------- auth


class StaticAuth:
    """A fixed ``Authorization`` header (Jira basic auth with an API token, a Tempo API token). A 401 is final."""

    def __init__(self, header: str) -> None:
        self._header = header

    @classmethod
    def basic(cls, email: str, api_token: str) -> StaticAuth:
        import base64

        return cls("Basic " + base64.b64encode(f"{email}:{api_token}".encode()).decode())

    @classmethod
    def bearer(cls, token: str) -> StaticAuth:
        return cls(f"Bearer {token}")

    def header(self) -> str:
        return self._header


class OAuthAuth:
    """OAuth 2.0 bearer token with refresh: refreshed before it expires and when a call answers 401.

    Refresh tokens rotate (Atlassian, Tempo): the new one replaces the old in memory and is passed to ``on_rotate``
    (e.g. to persist it) — a restart with a stale refresh token fails with a clear 401 error."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, refresh_token: str, *,
                 system: str, http: httpx.Client, clock: Callable[[], float] = time.time,
                 on_rotate: Callable[[str], None] | None = None, extra: Mapping[str, str] | None = None,
                 form: bool = False) -> None:
        if not (client_id and client_secret and refresh_token):
            raise ValueError(f"{system}: OAuth needs client_id, client_secret and refresh_token")
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.refresh_token = refresh_token
        self.system, self._http, self._clock, self._on_rotate = system, http, clock, on_rotate
        self._extra = dict(extra or {})
        self._form = form  # Tempo's token endpoint takes a form, Atlassian's JSON
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    def header(self) -> str:
        with self._lock:
            if self._access is None or self._clock() >= self._expires - 30:
                self._refresh_locked()
            return f"Bearer {self._access}"

    def refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        body = {"grant_type": "refresh_token", "client_id": self.client_id, "client_secret": self.client_secret,
                "refresh_token": self.refresh_token, **self._extra}
        payload = {"data": body} if self._form else {"json": body}
        resp = send(self._http, "POST", self.token_url, system=self.system, **payload)
        data = decode(resp) or {}
        if not data.get("access_token"):
            raise PermanentError(f"{self.system}: the token endpoint answered without an access_token",
                                 code="LB-P006", details={"token_url": self.token_url})
        self._access = str(data["access_token"])
        self._expires = self._clock() + float(data.get("expires_in", 3600))
        self.refreshes += 1
        new = data.get("refresh_token")
        if new and new != self.refresh_token:
            self.refresh_token = str(new)
            if self._on_rotate is not None:
                self._on_rotate(self.refresh_token)


Auth = StaticAuth | OAuthAuth


# --------------------------------------------------------------------------------------------------- base


class _Api:
    """One vendor API: base URL, auth header, pacer, request counting."""

    def __init__(self, base_url: str, auth: Auth, *, system: str, http: httpx.Client, pacer: Pacer,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth, self.system, self.http, self.pacer, self._sleep = auth, system, http, pacer, sleep
        self.requests = 0

    def call(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        auth = self.auth

        def refresh() -> None:
            if isinstance(auth, OAuthAuth):
                auth.refresh()
                headers["Authorization"] = auth.header()

        headers["Authorization"] = auth.header()
        self.requests += 1
        resp = send(self.http, method, url, system=self.system, pacer=self.pacer, sleep=self._sleep,
                    on_unauthorized=refresh if isinstance(auth, OAuthAuth) else None, headers=headers, **kwargs)
        return decode(resp)


def _http(timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
    return httpx.Client(timeout=timeout, transport=transport)


# --------------------------------------------------------------------------------------------------- Jira


@dataclass(frozen=True, slots=True)
class FeedPage:
    values: list[tuple[int, int]]  # (worklogId, updatedTime ms), oldest first
    since: int | None
    until: int | None
    last: bool
    stuck: bool = False  # a full page of one millisecond again: the feed cannot move past it


class JiraClient(_Api):
    """Jira Cloud platform REST v3 (worklogs, issues, projects, users, worklog properties)."""

    def feed(self, kind: str, since_ms: int, *, max_pages: int = 10_000) -> Iterator[FeedPage]:
        """Pages of ``/rest/api/3/worklog/<kind>`` (``updated`` or ``deleted``) from ``since_ms``, following
        ``nextPage`` until ``lastPage``. Stops (``last=True`` on the yielded page) when a next page would start
        where this one did with nothing new — more than a page of worklogs sharing one millisecond."""
        if kind not in ("updated", "deleted"):
            raise ValueError(f"unknown worklog feed {kind!r}")
        url: str = f"/rest/api/3/worklog/{kind}"
        params: dict[str, Any] | None = {"since": since_ms}
        prev_until: int | None = None
        for _ in range(max_pages):
            body = self.call("GET", url, params=params) or {}
            values = [(int(v["worklogId"]), int(v["updatedTime"])) for v in body.get("values") or ()]
            last = bool(body.get("lastPage", True)) or not body.get("nextPage")
            until = _int(body.get("until"))
            # a full page of one millisecond that starts where the last one ended cannot move on
            stuck = bool(values) and values[0][1] == values[-1][1] == until == prev_until
            yield FeedPage(values, _int(body.get("since")), until, last or stuck, stuck)
            if last or stuck:
                return
            url, params, prev_until = str(body["nextPage"]), None, until
        raise PermanentError(f"{self.system}: worklog/{kind} feed did not end within {max_pages} pages",
                             details={"since": since_ms})

    def worklogs(self, ids: Sequence[int], *, properties: bool = False) -> list[dict[str, Any]]:
        """Full worklogs of ``ids`` (``POST /rest/api/3/worklog/list``, 1,000 ids per call); deleted ones absent.
        ``properties=True`` adds each worklog's entity properties (``expand=properties``)."""
        out: list[dict[str, Any]] = []
        unique = sorted(set(int(i) for i in ids))
        params = {"expand": "properties"} if properties else None
        for start in range(0, len(unique), LIST_LIMIT):
            out += list(self.call("POST", "/rest/api/3/worklog/list", params=params,
                                  json={"ids": unique[start:start + LIST_LIMIT]}) or [])
        return out

    def issue(self, issue_id: str, fields: Sequence[str]) -> dict[str, Any]:
        return dict(self.call("GET", f"/rest/api/3/issue/{quote(str(issue_id))}",
                              params={"fields": ",".join(fields)}) or {})

    def _offset_pages(self, path: str, params: Mapping[str, Any], page_size: int) -> Iterator[list[Any]]:
        start = 0
        while True:
            body = self.call("GET", path, params={**params, "startAt": start, "maxResults": page_size})
            rows = list(body.get("values") or ()) if isinstance(body, Mapping) else list(body or ())
            yield rows
            last = body.get("isLast", len(rows) < page_size) if isinstance(body, Mapping) else len(rows) < page_size
            if last or not rows:
                return
            start += len(rows)

    def projects(self) -> list[dict[str, Any]]:
        """Every project the caller can browse (``/rest/api/3/project/search``, paged by startAt/isLast)."""
        return [p for page in self._offset_pages("/rest/api/3/project/search", {}, 50) for p in page]

    def users(self) -> list[dict[str, Any]]:
        """Every user (``/rest/api/3/users/search``, paged by startAt until a short page)."""
        return [u for page in self._offset_pages("/rest/api/3/users/search", {}, 100) for u in page]

    def _property_path(self, issue_id: str, worklog_id: str, key: str) -> str:
        return (f"/rest/api/3/issue/{quote(str(issue_id))}/worklog/{quote(str(worklog_id))}"
                f"/properties/{quote(key)}")

    def worklog_property(self, issue_id: str, worklog_id: str, key: str) -> Any:
        """The value of a worklog entity property, ``None`` when it is not set."""
        from ledgerbridge.errors import LedgerbridgeError

        try:
            body = self.call("GET", self._property_path(issue_id, worklog_id, key))
        except LedgerbridgeError as err:
            if err.details.get("status") == 404:
                return None
            raise
        return (body or {}).get("value")

    def set_worklog_property(self, issue_id: str, worklog_id: str, key: str, value: Any) -> None:
        self.call("PUT", self._property_path(issue_id, worklog_id, key), json=value)

    def accessible_resources(self, api_url: str) -> list[dict[str, Any]]:
        return list(self.call("GET", api_url.rstrip("/") + "/oauth/token/accessible-resources") or [])


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


# --------------------------------------------------------------------------------------------------- Tempo


class TempoClient(_Api):
    """Tempo API v4: worklogs (incremental by ``updatedFrom``), id mapping, periods, timesheet approvals."""

    def _pages(self, path: str, params: Mapping[str, Any] | None, key: str = "results") -> Iterator[list[Any]]:
        url, query = path, dict(params or {})
        while True:
            body = self.call("GET", url, params=query or None) or {}
            yield list(body.get(key) or ())
            nxt = (body.get("metadata") or {}).get("next")
            if not nxt:
                return
            url, query = str(nxt), {}

    def worklogs(self, updated_from: str, *, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """Worklogs updated at or after ``updated_from`` (``yyyy-MM-dd['T'HH:mm:ss]``), every page; de-duplicated by
        ``tempoWorklogId`` (offset pages shift when worklogs change while we page; the overlap re-reads them)."""
        seen: dict[int, dict[str, Any]] = {}
        for rows in self._pages("/4/worklogs", {"updatedFrom": updated_from, "offset": 0, "limit": limit}):
            for row in rows:
                seen[int(row["tempoWorklogId"])] = row
        return list(seen.values())

    def tempo_to_jira(self, tempo_ids: Sequence[int]) -> dict[int, int]:
        """``{tempoWorklogId: jiraWorklogId}`` (``POST /4/worklogs/tempo-to-jira``, 1,000 ids per call)."""
        out: dict[int, int] = {}
        ids = sorted(set(int(i) for i in tempo_ids))
        for start in range(0, len(ids), LIST_LIMIT):
            chunk = ids[start:start + LIST_LIMIT]
            body = self.call("POST", "/4/worklogs/tempo-to-jira", json={"tempoWorklogIds": chunk})
            for row in (body or {}).get("results") or ():
                if row.get("jiraWorklogId") is not None:
                    out[int(row["tempoWorklogId"])] = int(row["jiraWorklogId"])
        return out

    def periods(self, date_from: str, date_to: str) -> list[tuple[str, str]]:
        """The timesheet periods ``[(from, to)]`` (ISO dates, inclusive) covering ``date_from..date_to``."""
        body = self.call("GET", "/4/periods", params={"from": date_from, "to": date_to}) or {}
        return [(str(p["from"]), str(p["to"])) for p in body.get("periods") or ()]

    def approval(self, account_id: str, date_from: str, date_to: str) -> dict[str, Any]:
        """The timesheet approval of one user and period (``status.key``: OPEN, IN_REVIEW, APPROVED)."""
        return dict(self.call("GET", f"/4/timesheet-approvals/user/{quote(account_id)}",
                              params={"from": date_from, "to": date_to}) or {})


__all__ = ["ATLASSIAN_API_URL", "ATLASSIAN_TOKEN_URL", "JIRA_SYSTEM", "LIST_LIMIT", "TEMPO_SYSTEM", "TEMPO_URL",
           "Auth", "FeedPage", "JiraClient", "OAuthAuth", "StaticAuth", "TempoClient", "decode"]
