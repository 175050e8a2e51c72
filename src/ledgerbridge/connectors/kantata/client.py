"""HTTP client of the Kantata OX API v1: the only place the Kantata connector does I/O.

Protocol (``shared/reference/vendors/04-kantata-ox.md``; ``docs/connectors/kantata.md``):

- ``<url>/<resource>.json`` (``url`` = ``https://api.mavenlink.com/api/v1``), ``Authorization: Bearer <token>``.
  Tokens come from ``<token_url>`` (``https://app.mavenlink.com/oauth/token``) with the ``refresh_token`` grant
  (or ``client_credentials``); a fixed long-lived ``access_token`` works too. The token is refreshed before it
  expires (``expires_in`` minus a margin) and once more whenever an answer is 401.
- Lists answer ``{"count", "meta", "results": [{"key", "id"}], "<key>": {id: {...}}, <side-loaded maps>}``:
  objects are read **in the order of ``results``** from the id-keyed maps, side-loaded associations (``include=``)
  are joined by the caller. ``page``/``per_page`` (max 200).
- Rate limits answer 429 **without** ``Retry-After``: :func:`ledgerbridge.connectors.http.send` pauses every caller
  of this client for ``rate_limit_wait`` x attempt seconds (no storm) and retries a bounded number of times;
  an optional client-side :class:`~ledgerbridge.connectors.http.Pacer` (``rate_limit`` per ``rate_window``) keeps
  under the tenant's limit before Kantata has to refuse.
- Numbers are decoded with ``parse_float=Decimal``; money arrives as integer ``*_in_cents``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import LedgerbridgeError, PermanentError

SYSTEM = "kantata"
API_URL = "https://api.mavenlink.com/api/v1"
TOKEN_URL = "https://app.mavenlink.com/oauth/token"
MAX_PER_PAGE = 200


def decode(content: bytes) -> Any:
    return json.loads(content, parse_float=Decimal)


@dataclass(slots=True)
class Page:
    """One list answer: objects in ``results`` order plus the side-loaded maps (key -> {id: object})."""

    rows: list[dict[str, Any]]
    side: dict[str, dict[str, dict[str, Any]]]
    count: int
    page_count: int


@dataclass(slots=True)
class Credentials:
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""
    access_token: str = ""
    #: called with every new token answer (persist a rotated refresh token)
    on_token: Callable[[Mapping[str, Any]], None] | None = None


@dataclass(slots=True)
class ClientStats:
    requests: int = 0  # logical calls (retries and refreshes not counted; the metrics count every HTTP call)
    tokens: int = 0  # tokens obtained


class _Bearer(httpx.Auth):
    """Puts the client's current token on each attempt (a retry after a refresh carries the new one)."""

    def __init__(self, client: KantataClient) -> None:
        self.client = client

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self.client._token}"
        yield request


class KantataClient:
    """A synchronous Kantata OX client (thread-safe token handling; ``transport`` for tests)."""

    def __init__(self, url: str, credentials: Credentials, *, token_url: str | None = None,
                 system: str = SYSTEM, timeout: float = 60.0, attempts: int = 5, rate_limit_wait: float = 1.0,
                 rate_limit: int | None = None, rate_window: float = 60.0, refresh_margin: float = 60.0,
                 concurrency: int | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if not url:
            raise ValueError(f"{system}: no Kantata API url (options.url, e.g. {API_URL})")
        c = credentials
        if not c.access_token and not (c.client_id and c.client_secret):
            raise ValueError(f"{system}: configure secrets client_id + client_secret (+ refresh_token) of the "
                             "Kantata OAuth application, or a long-lived access_token")
        self.system = system
        self.url = url.rstrip("/")
        # Kantata's own hosts: api.mavenlink.com answers the API, app.mavenlink.com issues tokens; any other host
        # (a proxy, the sandbox) serves both
        self.token_url = token_url or (TOKEN_URL if "mavenlink.com" in self.url or "/api/" not in self.url
                                       else self.url.split("/api/")[0] + "/oauth/token")
        self.credentials = c
        self.attempts = attempts
        self.rate_limit_wait = rate_limit_wait
        self.refresh_margin = refresh_margin
        self.pacer = Pacer(rate_limit, rate_window, concurrency=concurrency)
        self.stats = ClientStats()
        self._sleep = sleep
        self._token = c.access_token
        self._expires_at = float("inf") if c.access_token else 0.0
        self._token_lock = threading.Lock()
        self._auth = _Bearer(self)
        self._http = httpx.Client(timeout=timeout, transport=transport, headers={"Accept": "application/json"})

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ auth

    def _refresh(self) -> None:
        c = self.credentials
        if not (c.client_id and c.client_secret):
            raise PermanentError(
                f"{self.system}: the access token was refused and no OAuth client is configured to get a new one "
                "— create a new token in Kantata (Settings -> Integrations -> OAuth applications)", code="LB-P002")
        form = {"client_id": c.client_id, "client_secret": c.client_secret}
        form.update({"grant_type": "refresh_token", "refresh_token": c.refresh_token} if c.refresh_token
                    else {"grant_type": "client_credentials"})
        resp = send(self._http, "POST", self.token_url, system=self.system, attempts=self.attempts,
                    default_wait=self.rate_limit_wait, sleep=self._sleep, data=form)
        body = decode(resp.content)
        if not isinstance(body, Mapping) or not body.get("access_token"):
            raise PermanentError(f"{self.system}: the token endpoint answered without an access_token",
                                 code="LB-P006", details={"token_url": self.token_url})
        self._token = str(body["access_token"])
        lifetime = float(body.get("expires_in") or 0)
        self._expires_at = time.monotonic() + lifetime if lifetime > 0 else float("inf")
        if body.get("refresh_token"):
            c.refresh_token = str(body["refresh_token"])
        self.stats.tokens += 1
        if c.on_token is not None:
            c.on_token(dict(body))

    def token(self, *, force: bool = False) -> str:
        with self._token_lock:
            if force or not self._token or time.monotonic() >= self._expires_at - self.refresh_margin:
                self._refresh()
            return self._token

    def _on_unauthorized(self) -> None:
        self.token(force=True)

    # ------------------------------------------------------------------ calls

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None) -> Any:
        """One call (pacing, 429/5xx retries, 401 -> refresh once); the decoded body."""
        self.token()
        self.stats.requests += 1
        try:
            resp = send(self._http, method, f"{self.url}/{path.lstrip('/')}", system=self.system, pacer=self.pacer,
                        attempts=self.attempts, default_wait=self.rate_limit_wait, sleep=self._sleep,
                        on_unauthorized=self._on_unauthorized, params=dict(params or {}), auth=self._auth,
                        **({"json": body} if body is not None else {}))
        except LedgerbridgeError as err:
            err.details.setdefault("request", f"{method} {path}")
            raise
        return decode(resp.content) if resp.content.strip() else None

    def page(self, resource: str, params: Mapping[str, Any] | None = None, *, page: int = 1,
             per_page: int = MAX_PER_PAGE) -> Page:
        """One page of ``resource``, its objects in ``results`` order."""
        per_page = min(max(1, per_page), MAX_PER_PAGE)
        body = self.request("GET", f"{resource}.json", params={**(params or {}), "page": page, "per_page": per_page})
        if not isinstance(body, Mapping) or not isinstance(body.get("results"), list):
            raise PermanentError(f"{self.system}: GET {resource} answered without a results list: {str(body)[:200]}",
                                 code="LB-P006", details={"resource": resource})
        side = {k: v for k, v in body.items() if isinstance(v, Mapping) and k != "meta"}
        rows: list[dict[str, Any]] = []
        for ref in body["results"]:
            obj = side.get(str(ref.get("key")), {}).get(str(ref.get("id")))
            if obj is None:
                raise PermanentError(f"{self.system}: GET {resource}: results names {ref} but the answer has no "
                                     "such object", code="LB-P006", details={"resource": resource, "ref": ref})
            rows.append(dict(obj))
        meta = body.get("meta") or {}
        return Page(rows, side, int(body.get("count", len(rows))), int(meta.get("page_count", 1)))

    def list_all(self, resource: str, params: Mapping[str, Any] | None = None,
                 per_page: int = MAX_PER_PAGE) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """Every page of ``resource`` (side-loaded maps merged)."""
        rows: list[dict[str, Any]] = []
        side: dict[str, dict[str, Any]] = {}
        number = 1
        while True:
            pg = self.page(resource, params, page=number, per_page=per_page)
            rows += pg.rows
            for key, objs in pg.side.items():
                side.setdefault(key, {}).update(objs)
            if number >= pg.page_count or not pg.rows:
                return rows, side
            number += 1

    def by_ids(self, resource: str, ids: Sequence[str], params: Mapping[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """The objects with these ids (``only=``, 200 per call); ids not returned are deleted or invisible."""
        rows: list[dict[str, Any]] = []
        side: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(str(i) for i in ids))
        for start in range(0, len(unique), MAX_PER_PAGE):
            chunk = unique[start:start + MAX_PER_PAGE]
            r, s = self.list_all(resource, {**(params or {}), "only": ",".join(chunk)})
            rows += r
            for key, objs in s.items():
                side.setdefault(key, {}).update(objs)
        return rows, side

    def create_external_reference(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        body = self.request("POST", "external_references.json", body={"external_reference": dict(fields)})
        return dict(next(iter(body["external_references"].values())))

    def update_external_reference(self, ref_id: str, fields: Mapping[str, Any]) -> None:
        self.request("PUT", f"external_references/{ref_id}.json", body={"external_reference": dict(fields)})


__all__ = ["API_URL", "MAX_PER_PAGE", "SYSTEM", "TOKEN_URL", "ClientStats", "Credentials", "KantataClient", "Page",
           "decode"]
