"""HTTP client of the Xero Accounting API: OAuth 2.0 tokens, the tenant header, pacing, paging, errors.

- **Tokens**: ``client_credentials`` (a custom connection, one organisation) or ``refresh_token`` (a standard app;
  Xero rotates the refresh token on every use — the new one is kept, written to ``token_file`` when given (read
  back at the next start, so a restart does not present a spent token) and handed to ``on_refresh_token``). A
  token is renewed ahead of its expiry (``expires_in`` minus 10%, at most 60 s) and once more when an answer is
  401 (expired early or revoked).
- **Tenant**: every Accounting call carries ``xero-tenant-id``; when none is configured, ``GET /connections`` must
  list exactly one organisation.
- **Limits** (per organisation and app): 60 calls per minute, 5 in flight, 5,000 per day. :class:`~ledgerbridge.
  connectors.http.Pacer` keeps under the first two before Xero has to say no; the remaining day allowance is read
  from ``X-DayLimit-Remaining`` and a call is refused locally (``RateLimitedError``) once it reaches the reserve.
  A 429 carries ``X-Rate-Limit-Problem`` (minute / day / concurrent / appminute) and ``Retry-After``; the shared
  ``send`` pauses every caller that long (a daily 429 waits hours: raised at once for the runtime to reschedule).
- **Idempotency**: every PUT/POST carries the ``Idempotency-Key`` the connector derives from our keys; Xero answers a
  replay with the original response. A key reused with another body is refused (400) -> :class:`ConflictError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ledgerbridge.connectors.base import atomic_write_bytes
from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.connectors.xero.mapping import dumps, loads, parse_xero_datetime
from ledgerbridge.errors import ConflictError, PermanentError, RateLimitedError, RecordValidationError

SYSTEM = "xero"
API_URL = "https://api.xero.com/api.xro/2.0"
IDENTITY_URL = "https://identity.xero.com/connect/token"
CONNECTIONS_URL = "https://api.xero.com/connections"
DEFAULT_SCOPES = ("accounting.transactions accounting.contacts accounting.settings accounting.reports.read "
                  "accounting.journals.read")
PAGE_SIZE = 100  # Xero's page size for ManualJournals / Invoices / Contacts
DAY_PAUSE = 3600.0  # once the day allowance is spent, ask Xero again after an hour (its window rolls)
_PACERS: dict[tuple[Any, ...], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(key: tuple[Any, ...], limit: int, window: float, concurrency: int, headroom: float) -> Pacer:
    """One pacer per (app, organisation, limits) in this process: Xero counts calls per app and organisation, so
    connector instances rebuilt by the flows (``ctx.reset_connectors``) keep sharing one window and one pool."""
    with _PACERS_LOCK:
        full = (*key, limit, window, concurrency, headroom)
        if full not in _PACERS:
            _PACERS[full] = Pacer(limit, window, concurrency=concurrency, headroom=headroom)
        return _PACERS[full]


class XeroClient:
    """One Xero organisation over HTTP (thread-safe: tokens under a lock, the pacer shared)."""

    def __init__(self, client_id: str, client_secret: str, *, tenant_id: str | None = None,
                 refresh_token: str | None = None, api_url: str = API_URL, token_url: str = IDENTITY_URL,
                 connections_url: str = CONNECTIONS_URL, scopes: str = DEFAULT_SCOPES, system: str = SYSTEM,
                 calls_per_minute: int = 60, window: float = 60.0, concurrency: int = 5, headroom: float = 1.0,
                 day_reserve: int = 0, timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
                 on_refresh_token: Callable[[str], None] | None = None, token_file: Path | None = None) -> None:
        if not client_id or not client_secret:
            raise PermanentError(f"{system}: client_id and client_secret are required", code="LB-P001")
        self.client_id, self.client_secret = client_id, client_secret
        self.token_file = Path(token_file) if token_file is not None else None
        if self.token_file is not None and self.token_file.exists() and self.token_file.read_text().strip():
            refresh_token = self.token_file.read_text().strip()  # the latest rotation wins over the configured one
        self.refresh_token = refresh_token
        self.tenant_id = tenant_id
        self.api_url = api_url.rstrip("/")
        self.token_url, self.connections_url, self.scopes = token_url, connections_url, scopes
        self.system = system
        self.pacer = shared_pacer((client_id, tenant_id or api_url), calls_per_minute, window, concurrency, headroom)
        self.day_reserve = day_reserve
        self.day_remaining: int | None = None
        self._day_spent_at: float | None = None
        self.min_remaining: int | None = None
        self.on_refresh_token = on_refresh_token
        hooks = {k: list(v) for k, v in (event_hooks or {}).items()}
        hooks.setdefault("response", []).append(self._remember_refusal)
        self.http = httpx.Client(timeout=timeout, transport=transport, event_hooks=hooks)
        self._local = threading.local()
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.token_refreshes = 0
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def _remember_refusal(self, response: httpx.Response) -> None:
        """Keep the body of a 400 (this thread's last) so a refused write can name Xero's element messages."""
        if response.status_code == 400:
            response.read()
            self._local.refusal = response.content

    def refusal_messages(self) -> list[str]:
        body = loads(getattr(self._local, "refusal", b"") or b"") or {}
        msgs = [str(e.get("Message")) for el in body.get("Elements") or [] for e in el.get("ValidationErrors") or []]
        return msgs or ([str(body["Message"])] if body.get("Message") else [])

    def __enter__(self) -> XeroClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ auth

    def _fetch_token(self) -> None:
        form = {"grant_type": "client_credentials", "scope": self.scopes}
        if self.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        try:
            resp = send(self.http, "POST", self.token_url, system=self.system, attempts=3, data=form,
                        headers={"Authorization": f"Basic {basic}"})
        except RecordValidationError as exc:  # 400 invalid_client / invalid_grant: configuration, not data
            raise PermanentError(f"{self.system}: the identity service refused the {form['grant_type']} grant "
                                 f"({exc.message}) — check client_id/client_secret, or re-consent for a new "
                                 "refresh token (spent or unused for 60 days)", code="LB-P002",
                                 details=exc.details) from exc
        body = loads(resp.content) or {}
        if not body.get("access_token"):
            raise PermanentError(f"{self.system}: token endpoint answered without access_token", code="LB-P002")
        self._token = str(body["access_token"])
        lifetime = float(body.get("expires_in", 1800))
        self._expires_at = time.monotonic() + lifetime - min(60.0, lifetime / 10)  # renew ahead of expiry
        if body.get("refresh_token") and self.refresh_token:
            self.refresh_token = str(body["refresh_token"])  # Xero rotates it: the old one is spent
            if self.token_file is not None:
                atomic_write_bytes(self.token_file, self.refresh_token.encode())
                self.token_file.chmod(0o600)
            if self.on_refresh_token is not None:
                self.on_refresh_token(self.refresh_token)
        self.token_refreshes += 1

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() >= self._expires_at:
                self._fetch_token()
            assert self._token is not None
            return self._token

    def _unauthorized(self) -> None:
        self.token(force=True)

    def tenant(self) -> str:
        if self.tenant_id is None:
            resp = self._send("GET", self.connections_url, tenant=False)
            orgs = [c for c in loads(resp.content) or [] if c.get("tenantType", "ORGANISATION") == "ORGANISATION"]
            if len(orgs) != 1:
                raise PermanentError(f"{self.system}: the token reaches {len(orgs)} organisations "
                                     f"({[o.get('tenantName') for o in orgs]}) — set options.tenant_id",
                                     code="LB-P001")
            self.tenant_id = str(orgs[0]["tenantId"])
        return self.tenant_id

    # ------------------------------------------------------------------ requests

    def _send(self, method: str, url: str, *, tenant: bool = True, headers: Mapping[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
        if self._day_spent_at is not None:
            wait = self._day_spent_at + DAY_PAUSE - time.monotonic()
            if wait > 0:
                raise RateLimitedError(f"{self.system}: the daily allowance of this organisation is used up "
                                       f"({self.day_remaining} left, reserve {self.day_reserve}) — resume later",
                                       code="LB-R001", retry_after=wait, details={"rate_limit_problem": "day"})
            self._day_spent_at = None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if tenant:
            hdrs["xero-tenant-id"] = self.tenant()

        class _Auth(httpx.Auth):  # the current token at send time, so a refresh between retries is used
            def auth_flow(inner, request: httpx.Request) -> Iterator[httpx.Request]:
                request.headers["Authorization"] = f"Bearer {self.token()}"
                yield request

        resp = send(self.http, method, url, system=self.system, pacer=self.pacer, headers=hdrs, auth=_Auth(),
                    on_unauthorized=self._unauthorized, **kwargs)
        self.calls += 1
        for attr, name in (("day_remaining", "x-daylimit-remaining"), ("min_remaining", "x-minlimit-remaining")):
            if resp.headers.get(name, "").isdigit():
                setattr(self, attr, int(resp.headers[name]))
        if self.day_remaining is not None and self.day_remaining <= self.day_reserve:
            self._day_spent_at = time.monotonic()
        return resp

    def get(self, resource: str, *, params: Mapping[str, Any] | None = None,
            modified_since: dt.datetime | None = None) -> Any:
        headers = {}
        if modified_since is not None:
            headers["If-Modified-Since"] = modified_since.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        resp = self._send("GET", f"{self.api_url}/{resource}", params=dict(params or {}), headers=headers)
        return loads(resp.content) if resp.status_code != 304 else {}

    def get_pages(self, resource: str, key: str, *, params: Mapping[str, Any] | None = None,
                  modified_since: dt.datetime | None = None, page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
        """Every record of ``resource`` (``page=1,2,...`` until a short page), changed since ``modified_since``."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.get(resource, params={**(params or {}), "page": page}, modified_since=modified_since)
            rows = list((body or {}).get(key) or [])
            out += rows
            if len(rows) < page_size:
                return out
            page += 1

    def write(self, method: str, resource: str, payload: Mapping[str, Any], *, key: str,
              summarize_errors: bool | None = None) -> Any:
        """PUT/POST with an ``Idempotency-Key``. A 400 for the whole request raises (validation, or the key reused
        with another body -> ConflictError); with ``summarize_errors=False`` Xero answers 200 and flags each element
        instead (the caller reads ``StatusAttributeString`` / ``ValidationErrors``)."""
        params = {} if summarize_errors is None else {"summarizeErrors": str(summarize_errors).lower()}
        self._local.refusal = None
        try:
            resp = self._send(method, f"{self.api_url}/{resource}", params=params, content=dumps(payload),
                              headers={"Idempotency-Key": key, "Content-Type": "application/json"})
        except RecordValidationError as exc:
            if "idempotency" in str(exc).lower():
                raise ConflictError(f"{self.system}: Idempotency-Key {key} was already used with another request "
                                    f"body — a journal or invoice changed under the same key: {exc.message}",
                                    code="LB-C004", details={**exc.details, "idempotency_key": key}) from exc
            msgs = self.refusal_messages()
            if msgs:
                raise RecordValidationError(f"{self.system}: Xero refused the {resource} request: {'; '.join(msgs)}",
                                            code=exc.code, details={**exc.details, "validation_errors": msgs}
                                            ) from exc
            raise
        return loads(resp.content)

    @staticmethod
    def updated(row: Mapping[str, Any]) -> dt.datetime | None:
        raw = row.get("UpdatedDateUTC")
        return parse_xero_datetime(str(raw)) if raw else None
