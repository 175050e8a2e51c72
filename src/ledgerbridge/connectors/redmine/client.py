"""REST client of Redmine 5.x: the only place the Redmine connector does I/O.

Protocol (measured on Redmine 5.0, see ``docs/connectors/redmine.md``):

- JSON API under ``<url>/<resource>.json``, authenticated with the ``X-Redmine-API-Key`` header.
- Lists answer ``{"<key>": [...], "total_count", "offset", "limit"}``; ``limit`` is capped at 100 silently. The
  order of ``/time_entries.json`` is total (``spent_on``/``created_on``/``id``) but pages shift when entries are
  created or deleted while we page: every list is de-duplicated by id and accepted only when the number of distinct
  ids equals ``total_count`` and ``total_count`` did not change between pages; otherwise it is read again.
- ``PUT`` answers 204 with no body; a ``PUT``/``POST`` without a body must send ``Content-Length: 0`` (else 411).
- Numbers are decoded with ``parse_float=Decimal``: hours arrive as the exact digits Redmine sent, never a float.

Errors: every non-2xx answer goes through :func:`ledgerbridge.errors.classify_http` and transport failures through
:func:`ledgerbridge.errors.classify_exception`. Transient errors are retried here with exponential backoff (up to
``max_attempts`` calls), rate-limited ones wait ``Retry-After``; permanent, validation and conflict errors are raised
at once. ``requests`` counts every HTTP request made (benchmarks, tests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import httpx

from ledgerbridge.errors import (
    PermanentError,
    RateLimitedError,
    TransientError,
    classify_exception,
    classify_http,
)

SYSTEM = "redmine"
PAGE_LIMIT = 100  # Redmine caps ``limit`` at 100
#: project status codes (Project::STATUS_*): visible ones are listed with ``status=1|5``; archived (9) never are
PROJECT_ACTIVE, PROJECT_CLOSED, PROJECT_ARCHIVED, PROJECT_SCHEDULED_FOR_DELETION = 1, 5, 9, 10


def decode(content: bytes) -> Any:
    """JSON with decimal numbers kept exact (``7.5`` -> ``Decimal('7.5')``)."""
    return json.loads(content, parse_float=Decimal)


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # Redmine accepts hours as a JSON string
    raise TypeError(f"cannot send {type(obj).__name__} to Redmine: {obj!r}")


class RedmineClient:
    """A small synchronous client of one Redmine.

    ``transport`` (an ``httpx.BaseTransport``) lets tests put a fault-injecting transport in front of the real
    server; ``sleep`` is the wait used between retries.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        system: str = SYSTEM,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url:
            raise ValueError(f"{system}: no Redmine url configured (options.url, e.g. https://redmine.example.com)")
        if not api_key:
            raise ValueError(f"{system}: no API key configured (secrets.api_key; Redmine: My account -> API key)")
        if max_attempts < 1:
            raise ValueError(f"{system}: max_attempts must be >= 1, got {max_attempts}")
        self.system = system
        self.url = url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self.requests = 0
        self._http = httpx.Client(
            base_url=self.url,
            headers={"X-Redmine-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RedmineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _once(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> httpx.Response:
        headers: dict[str, str] = {}
        content: bytes | None = None
        if body is not None:
            content = json.dumps(body, default=_encode_default).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = "0"  # Redmine answers 411 to a body-less PUT/POST without it
        self.requests += 1
        try:
            return self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.HTTPError as exc:
            err = classify_exception(exc, system=self.system)
            if err is None:  # pragma: no cover - every httpx.HTTPError is classified
                raise
            raise err from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        allow: Iterable[int] = (),
    ) -> tuple[int, Any]:
        """One call with retries by error kind. Returns ``(status, decoded body or None)``.

        Statuses in ``allow`` (e.g. 403/404 when probing) are returned instead of raised."""
        allowed = frozenset(allow)
        failures = 0
        while True:
            try:
                resp = self._once(method, path, params, body)
                if resp.status_code in allowed:
                    return resp.status_code, None
                err = classify_http(resp.status_code, resp.headers, resp.content, system=self.system)
                if err is not None:
                    err.details.setdefault("request", f"{method} {path}")
                    raise err
                return resp.status_code, (decode(resp.content) if resp.content.strip() else None)
            except RateLimitedError as err:
                failures += 1
                if failures >= self.max_attempts:
                    raise
                self._sleep(err.retry_after if err.retry_after is not None else self._backoff(failures))
            except TransientError as err:
                failures += 1
                if failures >= self.max_attempts:
                    err.details["attempts"] = failures
                    raise
                self._sleep(max(self._backoff(failures), err.retry_after or 0.0))

    def _backoff(self, failures: int) -> float:
        return float(min(self.backoff_seconds * 2 ** (failures - 1), self.max_backoff_seconds))

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)[1]

    # ------------------------------------------------------------------ lists

    def list_all(
        self, path: str, key: str, params: Mapping[str, Any] | None = None, *, attempts: int = 3
    ) -> list[dict[str, Any]]:
        """Every item of a list resource, 100 per page, de-duplicated by id and checked against ``total_count``.

        The list is read again (up to ``attempts`` times) when pages shifted under us (distinct ids !=
        ``total_count``, or ``total_count`` changed between pages); then a :class:`TransientError` is raised."""
        last = ""
        for _ in range(attempts):
            items: dict[int, dict[str, Any]] = {}
            totals: set[int] = set()
            offset = 0
            while True:
                query = {**(params or {}), "offset": offset, "limit": PAGE_LIMIT}
                page = self.get(path, query)
                if not isinstance(page, dict) or key not in page:
                    raise PermanentError(
                        f"{self.system}: GET {path} answered without a {key!r} list: {str(page)[:200]} — is the url "
                        "a Redmine 5.x and the REST API enabled (Administration -> Settings -> API)?",
                        code="LB-P006", details={"path": path},
                    )
                rows = page[key]
                total = int(page.get("total_count", len(rows)))
                totals.add(total)
                for row in rows:
                    items[int(row["id"])] = row
                offset += PAGE_LIMIT
                if not rows or offset >= total:
                    break
            if len(totals) == 1 and len(items) == totals.pop():
                return list(items.values())
            last = f"{len(items)} distinct ids, total_count seen {sorted(totals)}"
        raise TransientError(
            f"{self.system}: GET {path} {dict(params or {})}: the list kept changing while paging ({last}) — "
            "the next sync reads it again",
            details={"path": path, "params": {k: str(v) for k, v in (params or {}).items()}},
        )

    def time_entries(self, spent_from: str | None = None, spent_to: str | None = None) -> list[dict[str, Any]]:
        """Time entries with ``spent_on`` in [spent_from, spent_to] (inclusive; None = open), oldest first."""
        params: dict[str, Any] = {"sort": "created_on"}  # created_on asc, id asc: new entries land on the last page
        if spent_from:
            params["from"] = spent_from
        if spent_to:
            params["to"] = spent_to
        return self.list_all("/time_entries.json", "time_entries", params)

    def time_entry(self, entry_id: int | str) -> tuple[int, dict[str, Any] | None]:
        """``(200, entry)``, ``(404, None)`` when deleted, ``(403, None)`` when hidden (archived project, no
        permission)."""
        status, body = self.request("GET", f"/time_entries/{int(entry_id)}.json", allow=(403, 404))
        return status, (body or {}).get("time_entry") if status == 200 else None

    def projects(self) -> list[dict[str, Any]]:
        """Active and closed projects (Redmine never lists archived ones over REST)."""
        return self.list_all("/projects.json", "projects", {"status": f"{PROJECT_ACTIVE}|{PROJECT_CLOSED}"})

    def project_status(self, project_id: int | str) -> int:
        """HTTP status of ``GET /projects/:id.json``: 200 visible, 403 archived (or no permission), 404 deleted."""
        return self.request("GET", f"/projects/{int(project_id)}.json", allow=(403, 404))[0]

    def users(self) -> list[dict[str, Any]]:
        """All users: active (1), registered (2) and locked (3), each with its ``status`` set (the list answer
        carries none); needs an administrator's key."""
        out: list[dict[str, Any]] = []
        for status in (1, 2, 3):
            out += [{**u, "status": status} for u in self.list_all("/users.json", "users", {"status": status})]
        return out

    # ------------------------------------------------------------------ writes

    def create_time_entry(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        body = self.request("POST", "/time_entries.json", body={"time_entry": dict(fields)})[1]
        return dict(body["time_entry"])

    def update_time_entry(self, entry_id: int | str, fields: Mapping[str, Any]) -> None:
        self.request("PUT", f"/time_entries/{int(entry_id)}.json", body={"time_entry": dict(fields)})

    def delete_time_entry(self, entry_id: int | str) -> None:
        self.request("DELETE", f"/time_entries/{int(entry_id)}.json")

    def create_project(self, name: str, identifier: str, **fields: Any) -> dict[str, Any]:
        body = self.request("POST", "/projects.json",
                            body={"project": {"name": name, "identifier": identifier, **fields}})[1]
        return dict(body["project"])

    def set_project_state(self, project_id: int | str, action: str) -> None:
        """``action``: ``archive``, ``unarchive``, ``close`` or ``reopen``."""
        if action not in ("archive", "unarchive", "close", "reopen"):
            raise ValueError(f"unknown project action {action!r}")
        self.request("PUT", f"/projects/{int(project_id)}/{action}.json")

    def delete_project(self, project_id: int | str) -> None:
        self.request("DELETE", f"/projects/{int(project_id)}.json")

    def create_user(self, login: str, firstname: str, lastname: str, mail: str, password: str) -> dict[str, Any]:
        body = self.request("POST", "/users.json", body={"user": {
            "login": login, "firstname": firstname, "lastname": lastname, "mail": mail, "password": password}})[1]
        return dict(body["user"])

    def add_member(self, project_id: int | str, user_id: int, role_ids: Iterable[int]) -> None:
        self.request("POST", f"/projects/{int(project_id)}/memberships.json",
                     body={"membership": {"user_id": user_id, "role_ids": list(role_ids)}})

    def custom_fields(self) -> list[dict[str, Any]]:
        """Custom field definitions (administrator key)."""
        return list((self.get("/custom_fields.json") or {}).get("custom_fields", []))


__all__ = ["PAGE_LIMIT", "SYSTEM", "RedmineClient", "decode"]
