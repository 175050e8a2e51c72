"""HTTP to an SAP S/4HANA Cloud tenant: auth, CSRF, OData v2 paging, SOAP posts.

- **Auth** (per communication arrangement): basic auth with the communication user, or OAuth 2.0 client credentials
  at the tenant's ``/sap/bc/sec/oauth2/token`` (token cached, refreshed before expiry and once on a 401).
- **CSRF**: before a modifying OData call the client sends ``GET <service root>`` with ``x-csrf-token: Fetch`` and
  keeps the token and the session cookies (httpx's cookie jar); the write carries both. A ``403`` with "CSRF token
  validation failed" (stale token, expired session) fetches a new token and retries once.
- **OData v2 reads** follow the server's ``__next`` links (client-side ``$top``/``$skip`` when the service sends
  none), JSON numbers and ``Edm.Decimal`` strings are read as ``Decimal``.
- **SOAP**: one attempt only — a journal create is not idempotent at the HTTP level; the connector's
  lookup-before-create makes the repeat safe, so a lost answer is retried by a whole new ``post_journals``.
Every call goes through :func:`ledgerbridge.connectors.http.send` (pacing, classification, metrics, retries).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import (
    LedgerbridgeError,
    PermanentError,
    RecordValidationError,
    TransientError,
)

SYSTEM = "sap_s4"
ODATA = "/sap/opu/odata/sap/"
SOAP_SYNC = "/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfirmation_in"
SOAP_ASYNC = "/sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest_in"
JOURNAL_ITEMS = ODATA + "API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic"
PROJECT_SRV = ODATA + "API_ENTERPRISE_PROJECT_SRV;v=0002/"
TIMESHEET_SRV = ODATA + "API_MANAGE_WORKFORCE_TIMESHEET/"
CSRF_FAILED = "CSRF token validation failed"


class _Auth(httpx.Auth):
    """Basic auth, or a cached OAuth client-credentials bearer token (fetched through ``fetch``)."""

    def __init__(self, basic: tuple[str, str] | None, fetch: Callable[[], tuple[str, float]] | None) -> None:
        self._basic = httpx.BasicAuth(*basic) if basic else None
        self._fetch = fetch
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.fetched = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() > self._expires:
                assert self._fetch is not None
                self._token, ttl = self._fetch()
                self._expires = time.monotonic() + ttl - min(30.0, ttl / 10)  # refresh a little early
                self.fetched += 1
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._basic is not None:
            yield from self._basic.auth_flow(request)
            return
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


class SapS4Client:
    """One tenant (``base_url`` = ``https://<tenant>-api.s4hana.cloud.sap``). Give ``user``/``password`` (basic) or
    ``client_id``/``client_secret`` (OAuth; ``token_url`` defaults to the tenant's)."""

    def __init__(self, base_url: str, *, user: str | None = None, password: str | None = None,
                 client_id: str | None = None, client_secret: str | None = None, token_url: str | None = None,
                 pacer: Pacer | None = None, timeout: float = 60.0, confirmation_url: str | None = None,
                 system: str = SYSTEM) -> None:
        self.base_url = base_url.rstrip("/")
        self.system = system
        self.pacer = pacer
        self.confirmation_url = confirmation_url.rstrip("/") if confirmation_url else None
        self._oauth = (client_id, client_secret or "") if client_id else None
        self.token_url = token_url or f"{self.base_url}/sap/bc/sec/oauth2/token"
        if self._oauth is None and not (user and password):
            raise PermanentError(f"{system}: give the communication user and password, or OAuth client_id and "
                                 "client_secret", code="LB-P001")
        self.auth = _Auth((str(user), str(password)) if self._oauth is None else None,
                          self._fetch_token if self._oauth else None)
        self.http = httpx.Client(base_url=self.base_url, auth=self.auth, timeout=timeout)
        self._csrf: str | None = None
        self._csrf_lock = threading.Lock()
        self.csrf_fetches = 0
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SapS4Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _fetch_token(self) -> tuple[str, float]:
        assert self._oauth is not None
        with httpx.Client(timeout=30) as h:
            r = send(h, "POST", self.token_url, system=self.system, pacer=self.pacer,
                     auth=httpx.BasicAuth(*self._oauth), data={"grant_type": "client_credentials"})
        self.calls += 1
        body = r.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.calls += 1
        return send(self.http, method, url, system=self.system, pacer=self.pacer,
                    on_unauthorized=self.auth.invalidate if self._oauth else None, **kwargs)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return json.loads(response.text, parse_float=Decimal) if response.content else None

    # ------------------------------------------------------------------ OData

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET with ``params`` (+ ``$format=json``); ``params=None`` sends ``path`` as it is (a ``__next`` link —
        httpx would replace its query, not extend it)."""
        query = None if params is None else {**params, "$format": "json"}
        r = self._send("GET", path, params=query, headers={"Accept": "application/json"})
        return self._json(r)

    def odata_rows(self, path: str, params: Mapping[str, Any] | None = None, *, page_size: int = 1000
                   ) -> Iterator[dict[str, Any]]:
        """Every row of an OData v2 collection: the server's ``__next`` links when it sends them, else
        ``$top``/``$skip`` until a short page."""
        query: dict[str, Any] | None = {**(params or {}), "$top": page_size, "$skip": 0}
        url = path
        while True:
            body = self.get(url, query)
            d = body.get("d", {}) if isinstance(body, Mapping) else {}
            rows = d.get("results", []) if isinstance(d, Mapping) else []
            yield from rows
            nxt = d.get("__next") if isinstance(d, Mapping) else None
            if nxt:
                url, query = urljoin(self.base_url + path, str(nxt)), None
                continue
            if len(rows) < page_size or query is None:
                return
            query["$skip"] += page_size

    def csrf_token(self, service_root: str, *, refresh: bool = False) -> str:
        with self._csrf_lock:
            if self._csrf is None or refresh:
                r = self._send("GET", service_root, headers={"x-csrf-token": "Fetch", "Accept": "application/json"})
                token = r.headers.get("x-csrf-token")
                if not token or token.lower() == "required":
                    raise PermanentError(f"{self.system}: {service_root} gave no CSRF token — check the "
                                         "communication arrangement", code="LB-P003")
                self._csrf = token
                self.csrf_fetches += 1
            return self._csrf

    def write(self, method: str, service_root: str, entity_path: str, body: Mapping[str, Any]) -> Any:
        """A modifying OData call with the CSRF token (fetched first, re-fetched once on 403 "CSRF token
        validation failed"). Returns the parsed JSON answer (``d`` unwrapped) or None."""
        for attempt in (1, 2):
            token = self.csrf_token(service_root, refresh=attempt == 2)
            try:
                r = self._send(method, service_root + entity_path, json=body,
                               headers={"x-csrf-token": token, "Accept": "application/json"})
            except LedgerbridgeError as exc:
                if attempt == 1 and exc.details.get("status") == 403 and CSRF_FAILED in exc.message:
                    continue
                raise
            data = self._json(r)
            return data.get("d", data) if isinstance(data, Mapping) else data
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ SOAP

    def soap(self, path: str, envelope: bytes, action: str, *, throttled_attempts: int = 5) -> httpx.Response:
        """POST a SOAP message. A timeout or 5xx is not retried here (SAP may have posted it); a 429 is — SAP
        refused it before any processing, and ``send`` has already waited as told."""
        try:
            return self._send("POST", path, content=envelope, attempts=throttled_attempts, retry_transient=False,
                              headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action})
        except TransientError as exc:
            if "soap-env:Client" in exc.message or "<faultcode>soap:Client" in exc.message:
                # a SOAP client fault comes as HTTP 500 but will fail again: the message itself is refused
                raise RecordValidationError(f"{self.system}: SAP refused the SOAP message as a whole: "
                                            f"{exc.message}", code="LB-V001",
                                            details={"rule": "sap.soap_client_fault"}) from exc
            raise

    def confirmation(self, message_id: str) -> bytes | None:
        """The bulk confirmation of an asynchronous message from the confirmation inbox (where the arrangement's
        outbound ``JournalEntryBulkCreateConfirmation_Out`` is delivered), or None while it is not there."""
        if not self.confirmation_url:
            raise PermanentError(f"{self.system}: options.confirmation_url is needed to read asynchronous "
                                 "confirmations", code="LB-P001")
        try:
            return self._send("GET", f"{self.confirmation_url}/{message_id}").content
        except PermanentError as exc:
            if exc.code == "LB-P004":
                return None
            raise
