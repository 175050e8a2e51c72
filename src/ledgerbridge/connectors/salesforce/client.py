"""REST client of the Salesforce platform: the only place the Salesforce connector does I/O.

- **Auth**: OAuth 2.0 JWT bearer (an RS256 assertion ``iss`` = connected app consumer key, ``sub`` = integration
  username, ``aud`` = login host, signed with the private key whose certificate is uploaded to the app) or client
  credentials (consumer key + secret; the app's execution user). The token answer's ``instance_url`` is the API
  host. A 401 ``INVALID_SESSION_ID`` (expired or revoked session) fetches a new token once and retries.
- **Reads**: ``GET /query?q=<SOQL>`` with ``Sforce-Query-Options: batchSize=N``; ``nextRecordsUrl`` is followed
  until ``done``. ``/sobjects/<type>/updated`` and ``/deleted`` windows for change and delete feeds.
- **Writes**: upsert by external id (``PATCH /sobjects/<type>/<field>/<value>``: 201 created, 200/204 updated,
  300 several matches -> :class:`ConflictError`) and sObject Collections upsert (``PATCH
  /composite/sobjects/<type>/<field>``, 200 records per call, ``allOrNone=false``: each item's ``errors`` array is
  classified on its own).
- **Limits**: every answer's ``Sforce-Limit-Info: api-usage=used/limit`` is kept (:attr:`api_usage`). The client
  stops by itself when the org's daily usage reaches ``budget_share`` of the allocation (room for the org's other
  integrations), and a ``403 REQUEST_LIMIT_EXCEEDED`` blocks every further call for ``limit_wait`` seconds: waits
  up to ``max_wait`` are slept through (one retry), longer ones raise :class:`RateLimitedError` at once — no storm
  of retries against an exhausted allocation (Salesforce sends no ``Retry-After``).

Every HTTP call goes through :func:`ledgerbridge.connectors.http.send` (pacing, classification, metrics, bounded
retries of transient answers). Numbers are decoded with ``parse_float=Decimal``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    TransientError,
    classify_http,
)

SYSTEM = "salesforce"
COLLECTION_MAX = 200  # sObject Collections: at most 200 records per call
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def decode(content: bytes) -> Any:
    return json.loads(content, parse_float=Decimal) if content.strip() else None


def body(data: Any) -> bytes:
    """JSON for Salesforce; a Decimal is written as a JSON number with exactly its digits (never via float)."""

    def enc(obj: Any) -> str:
        if isinstance(obj, Decimal):
            return f"\x00dec:{obj}"
        raise TypeError(f"cannot send {type(obj).__name__} to Salesforce: {obj!r}")

    return re.sub(r'"\\u0000dec:([^"]*)"', r"\1", json.dumps(data, default=enc)).encode()


def parse_limit_info(value: str | None) -> tuple[int, int] | None:
    """``api-usage=18/100000`` (possibly among other comma-separated entries) -> (18, 100000)."""
    for part in (value or "").split(","):
        name, _, figures = part.strip().partition("=")
        if name.strip() == "api-usage" and "/" in figures:
            used, _, limit = figures.partition("/")
            try:
                return int(used), int(limit)
            except ValueError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One record of a collection upsert: ``id`` and ``created`` when it succeeded, else ``error``."""

    index: int
    id: str | None
    created: bool
    error: LedgerbridgeError | None = None


def item_error(errors: Any, *, system: str, what: str) -> LedgerbridgeError:
    """A Salesforce error array (``[{"errorCode", "message", "fields"}]``) as a classified error: lock contention
    transient, ``DUPLICATE_VALUE`` a conflict, anything else a validation error naming the fields."""
    items = errors if isinstance(errors, list) else []
    # collection items name the code ``statusCode``; single-record answers ``errorCode``
    norm = [{**e, "errorCode": e.get("errorCode") or e.get("statusCode")} for e in items if isinstance(e, Mapping)]
    err = classify_http(400, {}, norm, system=system)
    assert err is not None
    err.details["item"] = what
    err.details["errors"] = json.loads(json.dumps(errors, default=str))
    return err


def _collection_body_error(system: str) -> Callable[[Any], LedgerbridgeError | None]:
    """Body check of a collection answer: when every item failed and one failure is transient (row lock), the
    whole call is retried (upserts by external id are repeatable); otherwise items are judged one by one."""

    def check(parsed: Any) -> LedgerbridgeError | None:
        if not isinstance(parsed, list) or not parsed or any(bool(i.get("success")) for i in parsed):
            return None
        errs = [item_error(i.get("errors"), system=system, what=f"item {n}") for n, i in enumerate(parsed)]
        transient = next((e for e in errs if isinstance(e, TransientError)), None)
        return transient

    return check


class SalesforceClient:
    """A small synchronous client of one Salesforce org (thread-safe token refresh)."""

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        auth: str = "jwt",
        username: str | None = None,
        private_key: str | None = None,
        client_secret: str | None = None,
        audience: str | None = None,
        api_version: str = "60.0",
        system: str = SYSTEM,
        page_size: int = 2000,
        budget_share: float = 0.9,
        limit_wait: float = 600.0,
        max_wait: float = 30.0,
        attempts: int = 4,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not login_url:
            raise ValueError(f"{system}: no login_url (https://login.salesforce.com, test.salesforce.com or the "
                             "org's My Domain; client credentials need My Domain)")
        if not client_id:
            raise ValueError(f"{system}: no client_id (the connected app's consumer key)")
        if auth == "jwt" and not (username and private_key):
            raise ValueError(f"{system}: the JWT bearer flow needs options.username and secrets.private_key")
        if auth == "client_credentials" and not client_secret:
            raise ValueError(f"{system}: the client credentials flow needs secrets.client_secret")
        if auth not in ("jwt", "client_credentials"):
            raise ValueError(f"{system}: auth {auth!r} is not jwt or client_credentials")
        if not 0 < budget_share <= 1:
            raise ValueError(f"{system}: budget_share must be in (0, 1], got {budget_share}")
        self.system = system
        self.login_url = login_url.rstrip("/")
        self.audience = audience or self.login_url
        self.auth, self.client_id, self.username = auth, client_id, username
        self._private_key, self._client_secret = private_key, client_secret
        self.api = f"/services/data/v{api_version.lstrip('v')}"
        self.page_size = max(200, min(2000, int(page_size)))
        self.budget_share, self.limit_wait, self.max_wait = budget_share, limit_wait, max_wait
        self.attempts = attempts
        self._sleep, self._clock = sleep, clock
        self.pacer = Pacer(None, sleep=sleep, clock=clock)
        self.instance_url: str | None = None
        self.api_usage: tuple[int, int] | None = None
        self.blocked_until = 0.0
        self.requests = 0
        self.tokens = 0
        self.limit_waits = 0  # waits before a call for the allocation to recover (a bench figure)
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, transport=transport,
                                  headers={"Accept": "application/json"},
                                  event_hooks={"response": [self._on_response]})

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def _on_response(self, response: httpx.Response) -> None:
        self.requests += 1
        usage = parse_limit_info(response.headers.get("sforce-limit-info"))
        if usage is not None:
            self.api_usage = usage

    def authenticate(self) -> None:
        """Fetch an access token (and the instance URL) with the configured grant."""
        if self.auth == "jwt":
            import jwt

            now = int(time.time())
            claims = {"iss": self.client_id, "sub": self.username, "aud": self.audience, "exp": now + 180}
            try:
                assertion = jwt.encode(claims, str(self._private_key), algorithm="RS256")
            except (ValueError, TypeError) as exc:
                raise PermanentError(f"{self.system}: the private key cannot sign the JWT ({exc}) — set "
                                     "secrets.private_key to the PEM private key of the app's certificate",
                                     code="LB-P002") from None
            form = {"grant_type": JWT_GRANT, "assertion": assertion}
        else:
            form = {"grant_type": "client_credentials", "client_id": self.client_id,
                    "client_secret": str(self._client_secret)}
        try:
            resp = send(self._http, "POST", f"{self.login_url}/services/oauth2/token", system=self.system,
                        attempts=self.attempts, sleep=self._sleep, data=form)
        except LedgerbridgeError as err:
            if err.retryable:
                raise
            raise PermanentError(f"{self.system}: OAuth token refused ({err.message}) — check the connected app "
                                 "(consumer key, certificate, pre-authorised profile/permission set, My Domain "
                                 "for client credentials)", code="LB-P002", details=err.details) from None
        data = resp.json()
        with self._lock:
            self.instance_url = str(data["instance_url"]).rstrip("/")
            self._http.headers["Authorization"] = f"Bearer {data['access_token']}"
            self.tokens += 1

    def _guard(self) -> None:
        """Before a call: wait (up to ``max_wait``) or raise while the allocation is exhausted or this connector's
        budget of it is used up."""
        now = self._clock()
        err: RateLimitedError | None = None
        if self.blocked_until > now:
            err = RateLimitedError(
                f"{self.system}: the org's API allocation is exhausted (403 REQUEST_LIMIT_EXCEEDED); no calls "
                f"for {self.blocked_until - now:.0f} s", code="LB-R002", retry_after=self.blocked_until - now)
        elif self.api_usage is not None:
            used, limit = self.api_usage
            if limit and used >= limit * self.budget_share:
                err = RateLimitedError(
                    f"{self.system}: {used}/{limit} daily API requests used, at this connector's budget of "
                    f"{self.budget_share:.0%} (options.budget_share) — continuing later leaves room for the org's "
                    "other integrations", code="LB-R002", retry_after=self.limit_wait)
        if err is None:
            return
        err.details["api_usage"] = list(self.api_usage) if self.api_usage else None
        wait = err.retry_after or 0.0
        if wait > self.max_wait:
            raise err
        self.limit_waits += 1
        self._sleep(wait)
        self.api_usage = None  # stale after the wait: the next answer's Sforce-Limit-Info tells

    def request(self, method: str, path: str, *, body_error: Callable[[Any], LedgerbridgeError | None] | None =
                None, **kwargs: Any) -> httpx.Response:
        """One API call (``path`` relative to the instance, e.g. ``/services/data/v60.0/limits``)."""
        if self.instance_url is None:
            self.authenticate()
        self._guard()
        try:
            return send(self._http, method, f"{self.instance_url}{path}", system=self.system, pacer=self.pacer,
                        attempts=self.attempts, body_error=body_error, default_wait=self.limit_wait,
                        max_wait=self.max_wait, sleep=self._sleep, on_unauthorized=self.authenticate, **kwargs)
        except RateLimitedError as err:
            self.blocked_until = max(self.blocked_until, self._clock() + (err.retry_after or self.limit_wait))
            err.details["api_usage"] = list(self.api_usage) if self.api_usage else None
            raise

    def get(self, path: str, **params: Any) -> Any:
        return decode(self.request("GET", path, params=params or None).content)

    # ------------------------------------------------------------------ reads

    def query(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        """The pages of one SOQL query (``nextRecordsUrl`` followed until ``done``)."""
        headers = {"Sforce-Query-Options": f"batchSize={self.page_size}"}
        try:
            page = decode(self.request("GET", f"{self.api}/query", params={"q": soql}, headers=headers).content)
        except RecordValidationError as err:
            codes = set(err.details.get("vendor_codes") or ())
            if codes & {"INVALID_FIELD", "INVALID_TYPE", "MALFORMED_QUERY"}:
                raise PermanentError(
                    f"{self.system}: the org refused the query ({err.message}) — the object or field does not exist "
                    "or the integration user cannot see it: check options.objects / field_map against the org's "
                    "describe and the permission sets", code="LB-P001",
                    details={**err.details, "soql": soql}) from None
            raise
        while True:
            yield list(page.get("records") or [])
            nxt = page.get("nextRecordsUrl")
            if page.get("done", True) or not nxt:
                return
            page = decode(self.request("GET", str(nxt), headers=headers).content)

    def query_all(self, soql: str) -> list[dict[str, Any]]:
        return [r for page in self.query(soql) for r in page]

    def deleted(self, sobject: str, start: str, end: str) -> dict[str, Any]:
        """``{"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable", "latestDateCovered"}``."""
        return dict(self.get(f"{self.api}/sobjects/{sobject}/deleted/", start=start, end=end) or {})

    def updated(self, sobject: str, start: str, end: str) -> dict[str, Any]:
        """``{"ids": [...], "latestDateCovered"}``."""
        return dict(self.get(f"{self.api}/sobjects/{sobject}/updated/", start=start, end=end) or {})

    def limits(self) -> dict[str, Any]:
        return dict(self.get(f"{self.api}/limits") or {})

    # ------------------------------------------------------------------ writes

    def upsert(self, sobject: str, ext_field: str, value: str, fields: Mapping[str, Any]) -> tuple[bool, str | None]:
        """Upsert one record by external id: ``(created, id)``. Several records with that external id -> a
        :class:`ConflictError` (HTTP 300)."""
        path = f"{self.api}/sobjects/{sobject}/{ext_field}/{quote(str(value), safe='')}"
        try:
            resp = self.request("PATCH", path, content=body(dict(fields)),
                                headers={"Content-Type": "application/json"})
        except PermanentError as err:
            if err.details.get("status") == 300:
                raise ConflictError(f"{self.system}: several {sobject} records have {ext_field} = {value!r} — "
                                    "make the field unique (External ID + Unique) and merge the duplicates",
                                    code="LB-C004", details=err.details) from None
            raise
        data = decode(resp.content) or {}
        return resp.status_code == 201, (str(data["id"]) if data.get("id") else None)

    def upsert_many(self, sobject: str, ext_field: str, records: Sequence[Mapping[str, Any]], *,
                    all_or_none: bool = False) -> list[ItemResult]:
        """sObject Collections upsert by external id, 200 records per call; one :class:`ItemResult` per record,
        in order. With ``all_or_none=False`` a refused record fails alone."""
        out: list[ItemResult] = []
        for start in range(0, len(records), COLLECTION_MAX):
            chunk = records[start:start + COLLECTION_MAX]
            payload = {"allOrNone": all_or_none,
                       "records": [{"attributes": {"type": sobject}, **dict(r)} for r in chunk]}
            resp = self.request("PATCH", f"{self.api}/composite/sobjects/{sobject}/{ext_field}",
                                content=body(payload), headers={"Content-Type": "application/json"},
                                body_error=_collection_body_error(self.system))
            for n, item in enumerate(decode(resp.content) or []):
                idx = start + n
                if item.get("success"):
                    out.append(ItemResult(idx, str(item.get("id")), bool(item.get("created"))))
                else:
                    what = f"{sobject} {chunk[n].get(ext_field, idx)}"
                    out.append(ItemResult(idx, None, False, item_error(item.get("errors"), system=self.system,
                                                                       what=what)))
        return out


__all__ = ["COLLECTION_MAX", "SYSTEM", "ItemResult", "SalesforceClient", "body", "decode", "item_error",
           "parse_limit_info"]
