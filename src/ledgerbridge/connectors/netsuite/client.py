"""SuiteTalk REST client of one NetSuite account: the only place the NetSuite connector does I/O.

Protocol (vendor facts: shared/reference/vendors/01-netsuite.md; see docs/connectors/netsuite.md):

- Host ``https://<account>.suitetalk.api.netsuite.com`` (account id lower-cased, ``_`` -> ``-``), record API under
  ``/services/rest/record/v1/<type>``, SuiteQL ``POST /services/rest/query/v1/suiteql`` with ``Prefer: transient``
  and ``{"q": "SELECT ..."}``, paged with ``limit``/``offset`` query parameters (``hasMore``); one query yields at
  most 100,000 rows, so long scans are keyset-split by id (:meth:`NetSuiteClient.suiteql_by_id`).
- Authentication, as an ``httpx.Auth`` so every attempt (retries included) is signed afresh:
  :class:`ClientCredentialsAuth` (OAuth 2.0 client credentials with a JWT client assertion signed PS256/ES256...,
  ``kid`` = certificate id; no refresh token: a new token is requested before expiry, and once on a 401) and
  :class:`TokenBasedAuth` (TBA, OAuth 1.0a HMAC-SHA256 with ``realm`` = account id, for older accounts).
- Upserts: ``PUT /record/v1/<type>/eid:<external id>`` creates or replaces (answer 204, ``Location`` names the
  internal id) — the idempotency tool.
- Limits: one account-wide concurrency pool shared with every other integration. The client holds at most
  ``concurrency`` requests in flight (:class:`ledgerbridge.connectors.http.Pacer`); a 429 or
  ``SSS_REQUEST_LIMIT_EXCEEDED`` pauses every caller of this client (no Retry-After is sent; ``limit_wait``
  seconds, growing per attempt), then retries — :func:`ledgerbridge.connectors.http.send`.
- Errors: RFC 7807 problem details with ``o:errorDetails``; classified by :func:`ledgerbridge.errors.classify_http`
  and refined here (:func:`refine`) with the vendor's detail text and code.

Amounts travel as JSON numbers written from :class:`~decimal.Decimal` digits (never a float) and are read back with
``parse_float=Decimal``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import (
    LedgerbridgeError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    TransientError,
)

SYSTEM = "netsuite"
PAGE_MAX = 1000  # records per page (collections and SuiteQL)
SUITEQL_CAP = 100_000  # rows one SuiteQL query can return
JWT_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")  # RS256 is no longer accepted
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
RECORD_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
_PERMISSION_CODES = frozenset({"INSUFFICIENT_PERMISSION", "INVALID_LOGIN", "INVALID_LOGIN_ATTEMPT"})
_MISSING_CODES = frozenset({"NONEXISTENT_ID", "RCRD_DSNT_EXIST"})


def account_host(account_id: str) -> str:
    """``1234567_SB1`` -> ``1234567-sb1`` (the host part of the SuiteTalk URL)."""
    return account_id.strip().lower().replace("_", "-")


def default_base_url(account_id: str) -> str:
    return f"https://{account_host(account_id)}.suitetalk.api.netsuite.com"


# --------------------------------------------------------------------------------------------------- JSON


_DEC = "\u0000dec:"


def _encode(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return f"{_DEC}{obj:f}\u0000"
    raise TypeError(f"cannot send {type(obj).__name__} to NetSuite: {obj!r}")


_DEC_RE = re.compile(r'"\\u0000dec:(-?[0-9.]+)\\u0000"')


def dumps(body: Any) -> bytes:
    """JSON with every Decimal written as a JSON number of exactly its digits (no float on the way)."""
    return _DEC_RE.sub(r"\1", json.dumps(body, default=_encode, separators=(",", ":"))).encode()


def loads(content: bytes) -> Any:
    return json.loads(content, parse_float=Decimal) if content else None


def sql_text(value: Any) -> str:
    """A SuiteQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_in(values: Sequence[Any]) -> str:
    return "(" + ", ".join(sql_text(v) for v in values) + ")"


# --------------------------------------------------------------------------------------------------- auth


class ClientCredentialsAuth(httpx.Auth):
    """OAuth 2.0 client credentials (M2M): a JWT client assertion signed with the private key of the certificate
    uploaded in NetSuite (header ``kid`` = certificate id, ``alg`` PS256/PS384/PS512/ES256/ES384/ES512), exchanged
    at the token endpoint for a bearer token (60 minutes; no refresh token). The token is renewed ``skew`` seconds
    (at most a tenth of its lifetime) before it expires, and at once after a 401 (:meth:`invalidate`)."""

    def __init__(self, *, token_url: str, client_id: str, certificate_id: str, private_key: str,
                 algorithm: str = "PS256", scopes: Sequence[str] = ("rest_webservices",), skew: float = 60.0,
                 system: str = SYSTEM, transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if algorithm not in JWT_ALGORITHMS:
            raise PermanentError(f"{system}: JWT algorithm {algorithm!r} is not accepted by NetSuite; use one of "
                                 f"{', '.join(JWT_ALGORITHMS)} (RS256 is refused since 2025)", code="LB-P001")
        for name, value in (("client_id", client_id), ("certificate_id", certificate_id),
                            ("private_key", private_key)):
            if not value:
                raise PermanentError(f"{system}: OAuth 2.0 {name} is empty — see docs/connectors/netsuite.md "
                                     "(integration record, certificate upload)", code="LB-P001")
        self.token_url = token_url
        self.client_id = client_id
        self.certificate_id = certificate_id
        self.private_key = private_key
        self.algorithm = algorithm
        self.scopes = tuple(scopes)
        self.skew = skew
        self.system = system
        self._clock = clock
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.token_requests = 0

    def assertion(self) -> str:
        import jwt

        now = int(self._clock())
        claims = {"iss": self.client_id, "scope": list(self.scopes), "aud": self.token_url, "iat": now,
                  "exp": now + 3600, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm,
                          headers={"kid": self.certificate_id, "typ": "JWT"})

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires:
                try:
                    resp = send(self._http, "POST", self.token_url, system=self.system, attempts=3, data={
                        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                        "client_assertion": self.assertion()})
                except LedgerbridgeError as err:
                    if err.retryable:
                        raise
                    # 400 invalid_client / invalid_grant: the credentials, not a record, are wrong
                    raise PermanentError(
                        f"{self.system}: the token endpoint refused the client assertion ({err.message}) — check "
                        "client_id, certificate_id (kid), the private key of the uploaded certificate and the "
                        "algorithm", code="LB-P002", details=err.details) from err
                body = loads(resp.content) or {}
                if not body.get("access_token"):
                    raise PermanentError(f"{self.system}: the token endpoint answered without an access_token",
                                         code="LB-P002")
                lifetime = float(body.get("expires_in") or 3600)
                self.token_requests += 1
                self._token = str(body["access_token"])
                self._expires = self._clock() + lifetime - min(self.skew, lifetime / 10)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request

    def close(self) -> None:
        self._http.close()


def _pct(value: str) -> str:
    return urllib.parse.quote(value, safe="~-._")


def tba_base_string(method: str, url: str, oauth_params: Mapping[str, str]) -> str:
    """OAuth 1.0a signature base string: METHOD & base URL & sorted, encoded parameters (query + oauth_*)."""
    parts = urllib.parse.urlsplit(url)
    base = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))
    params = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    params += [(k, v) for k, v in oauth_params.items() if k not in ("realm", "oauth_signature")]
    norm = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted((_pct(k), _pct(v)) for k, v in params))
    return "&".join((method.upper(), _pct(base), _pct(norm)))


def tba_signature(base_string: str, consumer_secret: str, token_secret: str) -> str:
    key = f"{_pct(consumer_secret)}&{_pct(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()


class TokenBasedAuth(httpx.Auth):
    """Token-based authentication (TBA): an OAuth 1.0a ``Authorization`` header signed HMAC-SHA256 with the
    integration's consumer key/secret and the user's token id/secret; ``realm`` = account id (``1234567_SB1``).
    Each attempt gets a fresh nonce and timestamp. Oracle stops new TBA integrations from release 2027.1."""

    def __init__(self, *, account_id: str, consumer_key: str, consumer_secret: str, token_id: str,
                 token_secret: str, system: str = SYSTEM, clock: Callable[[], float] = time.time) -> None:
        for name, value in (("consumer_key", consumer_key), ("consumer_secret", consumer_secret),
                            ("token_id", token_id), ("token_secret", token_secret)):
            if not value:
                raise PermanentError(f"{system}: TBA {name} is empty — see docs/connectors/netsuite.md",
                                     code="LB-P001")
        self.realm = account_id.strip().upper().replace("-", "_")
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.token_id, self.token_secret = token_id, token_secret
        self._clock = clock
        self.token_requests = 0  # TBA tokens do not expire; kept for the same figures as OAuth 2.0

    def header(self, method: str, url: str) -> str:
        oauth = {"oauth_consumer_key": self.consumer_key, "oauth_token": self.token_id,
                 "oauth_signature_method": "HMAC-SHA256", "oauth_timestamp": str(int(self._clock())),
                 "oauth_nonce": secrets.token_hex(16), "oauth_version": "1.0"}
        oauth["oauth_signature"] = tba_signature(tba_base_string(method, url, oauth), self.consumer_secret,
                                                 self.token_secret)
        fields = [f'realm="{self.realm}"'] + [f'{k}="{_pct(v)}"' for k, v in oauth.items()]
        return "OAuth " + ", ".join(fields)

    def invalidate(self) -> None:  # nothing cached: a TBA token is either valid or revoked
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header(request.method, str(request.url))
        yield request

    def close(self) -> None:
        return None


def parse_oauth_header(value: str) -> dict[str, str]:
    """``OAuth realm="X", oauth_nonce="..."`` -> {name: decoded value} (used by the sandbox to verify)."""
    out: dict[str, str] = {}
    body = value[len("OAuth "):] if value.startswith("OAuth ") else value
    for part in body.split(","):
        k, _, v = part.strip().partition("=")
        if k:
            out[k] = urllib.parse.unquote(v.strip().strip('"'))
    return out


# --------------------------------------------------------------------------------------------------- errors


def problem_details(content: bytes) -> tuple[list[str], list[str]]:
    """``(detail texts, o:errorCode values)`` of a problem-details body (empty lists when it is not one)."""
    try:
        body = loads(content)
    except ValueError:
        return [], []
    items = body.get("o:errorDetails") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        return [], []
    details = [str(i.get("detail", "")) for i in items if isinstance(i, Mapping)]
    codes = [str(i.get("o:errorCode", "")) for i in items if isinstance(i, Mapping)]
    return details, codes


def refine(err: LedgerbridgeError, what: str) -> LedgerbridgeError:
    """Say which call failed, and map vendor codes the HTTP status alone gets wrong: a permission or login code is
    permanent (not a record problem), a missing record is permanent ``LB-P004``."""
    codes = set(err.details.get("vendor_codes") or [])
    cls: type[LedgerbridgeError] = type(err)
    code = err.code
    if codes & _PERMISSION_CODES and not isinstance(err, RateLimitedError):
        cls, code = PermanentError, "LB-P003" if "INSUFFICIENT_PERMISSION" in codes else "LB-P002"
    elif codes & _MISSING_CODES and isinstance(err, RecordValidationError):
        cls, code = PermanentError, "LB-P004"
    if cls is type(err) and code == err.code and what in err.message:
        return err
    text = err.message.removeprefix(what.split(":", 1)[0] + ": ")  # the system is named once
    out = cls(f"{what}: {text}", code=code, retry_after=err.retry_after, details=err.details)
    out.__cause__ = err
    return out


# --------------------------------------------------------------------------------------------------- pacing


class PoolPacer(Pacer):
    """The shared :class:`~ledgerbridge.connectors.http.Pacer`, with the concurrency cap made adaptive for a pool
    shared with other integrations (AIMD): when the account refuses a request (429 / SSS_REQUEST_LIMIT_EXCEEDED,
    which makes :func:`~ledgerbridge.connectors.http.send` call :meth:`pause`), every caller waits and the number
    of requests this client keeps in flight (``share``) is halved (once per pause); each ``share`` requests
    answered without a refusal give one slot back, up to ``concurrency``. So a client whose share is taken by
    others settles at what is left instead of retrying in a storm."""

    def __init__(self, concurrency: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.concurrency = concurrency
        self.ceiling = concurrency
        self.share = concurrency
        self.peak = 0
        self.decreases = 0
        self._cond = threading.Condition()
        self._in_flight = 0
        self._clean = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._in_flight >= self.share:
                self._cond.wait()
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
        try:
            self.acquire()
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._clean += 1
                if self._clean >= self.share and self.share < self.ceiling:
                    self.share += 1
                    self._clean = 0
                self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        already = self._clock() < self._paused_until
        super().pause(seconds)
        if not already:
            with self._cond:
                self.share = max(1, self.share // 2)
                self._clean = 0
                self.decreases += 1


# --------------------------------------------------------------------------------------------------- client


class NetSuiteClient:
    """One NetSuite account over SuiteTalk REST (thread-safe; share one per account and integration).

    ``auth``: :class:`ClientCredentialsAuth` or :class:`TokenBasedAuth`. ``concurrency``: this integration's share
    of the account's pool (Integration Management -> concurrency limit). ``limit_wait``: seconds every caller
    pauses after a 429 / ``SSS_REQUEST_LIMIT_EXCEEDED`` (times the attempt number; NetSuite sends no Retry-After).
    ``transport`` lets tests put a transport in front of the server. ``calls`` counts requests made.
    """

    def __init__(self, base_url: str, auth: ClientCredentialsAuth | TokenBasedAuth, *, system: str = SYSTEM,
                 concurrency: int = 5, timeout: float = 60.0, limit_wait: float = 1.0, attempts: int = 6,
                 page_size: int = PAGE_MAX, suiteql_cap: int = SUITEQL_CAP,
                 transport: httpx.BaseTransport | None = None) -> None:
        if concurrency < 1:
            raise PermanentError(f"{system}: concurrency must be at least 1, got {concurrency}", code="LB-P001")
        if not 1 <= page_size <= PAGE_MAX:
            raise PermanentError(f"{system}: page_size must be 1..{PAGE_MAX}, got {page_size}", code="LB-P001")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.system = system
        self.concurrency = concurrency
        self.limit_wait = limit_wait
        self.attempts = attempts
        self.page_size = page_size
        self.suiteql_cap = suiteql_cap
        self.pacer = PoolPacer(concurrency)
        self.http = httpx.Client(auth=auth, timeout=timeout, transport=transport,
                                 limits=httpx.Limits(max_connections=concurrency + 2,
                                                     max_keepalive_connections=concurrency + 2))
        self._count_lock = threading.Lock()
        self.calls = 0
        self.suiteql_queries = 0

    def close(self) -> None:
        self.http.close()
        self.auth.close()

    def __enter__(self) -> NetSuiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ raw

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        """One call through the shared pacing/retry layer; a refused answer raises its classified error."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": hdrs}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            kwargs["content"] = dumps(body)
        if params:
            kwargs["params"] = dict(params)
        with self._count_lock:
            self.calls += 1
        try:
            return send(self.http, method, self.base_url + path, system=self.system, pacer=self.pacer,
                        attempts=self.attempts, default_wait=self.limit_wait, max_wait=max(60.0, self.limit_wait),
                        on_unauthorized=self.auth.invalidate, **kwargs)
        except LedgerbridgeError as err:
            raise refine(err, f"{self.system}: {method} {path.split('?')[0]}") from err

    # ------------------------------------------------------------------ record API

    def upsert(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        """``PUT /record/v1/<type>/eid:<external id>``: create, or replace the record holding that external id.
        Returns the internal id (from ``Location``)."""
        if "|" in external_id:
            raise RecordValidationError(f"{self.system}: external id {external_id!r} contains '|', which eid: "
                                        "paths treat specially — use another separator", code="LB-V001")
        resp = self.request("PUT", f"{RECORD_PATH}/{record_type}/eid:{urllib.parse.quote(external_id, safe='')}",
                            body=body)
        location = resp.headers.get("Location", "")
        internal = location.rstrip("/").rsplit("/", 1)[-1] if location else ""
        if not internal.isdigit():
            raise TransientError(f"{self.system}: upsert of {record_type} {external_id} answered {resp.status_code} "
                                 f"without a Location naming the record ({location!r}) — read it back by eid",
                                 code="LB-T001", details={"external_id": external_id})
        return internal

    def get_record(self, record_type: str, key: str, *, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``GET /record/v1/<type>/<internal id | eid:key>``."""
        path_key = key if key.isdigit() else f"eid:{urllib.parse.quote(key.removeprefix('eid:'), safe='')}"
        got = loads(self.request("GET", f"{RECORD_PATH}/{record_type}/{path_key}", params=params).content)
        return dict(got or {})

    # ------------------------------------------------------------------ SuiteQL

    def suiteql_pages(self, query: str, *, start: int = 0) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """Pages of one SuiteQL query: ``(rows, has_more)``; stops at ``hasMore`` false or at the row cap."""
        offset = start
        while True:
            limit = min(self.page_size, self.suiteql_cap - offset)
            if limit <= 0:
                return
            with self._count_lock:
                self.suiteql_queries += 1
            resp = self.request("POST", SUITEQL_PATH, body={"q": query}, params={"limit": limit, "offset": offset},
                                headers={"Prefer": "transient"})
            page = loads(resp.content) or {}
            rows = [{k: v for k, v in r.items() if k != "links"} for r in page.get("items") or []]
            more = bool(page.get("hasMore"))
            yield rows, more
            if not more or not rows:
                return
            offset += len(rows)

    def suiteql(self, query: str) -> list[dict[str, Any]]:
        """Every row of a query that stays under the cap (ORDER BY a unique key, or paging is unstable). A query
        that reaches the cap is refused: use :meth:`suiteql_by_id`."""
        out: list[dict[str, Any]] = []
        for rows, _more in self.suiteql_pages(query):
            out += rows
        if len(out) >= self.suiteql_cap:
            raise PermanentError(f"{self.system}: SuiteQL query reached the {self.suiteql_cap}-row cap — "
                                 "split it by id (suiteql_by_id)", code="LB-P005", details={"query": query[:300]})
        return out

    def suiteql_by_id(self, columns: str, from_where: str, *, id_column: str = "id",
                      after: int = 0) -> Iterator[dict[str, Any]]:
        """Every row of ``SELECT <columns> FROM <from_where> AND <id_column> > :after ORDER BY <id_column>``,
        however many: offset paging inside one query, and a new query starting after the last id whenever a
        query reached the row cap (``from_where`` is ``"<table> WHERE <condition>"``; ``columns`` must yield the
        id as ``id``)."""
        last = after
        while True:
            q = f"SELECT {columns} FROM {from_where} AND {id_column} > {int(last)} ORDER BY {id_column}"
            seen = 0
            for rows, _more in self.suiteql_pages(q):
                for r in rows:
                    last = int(r["id"])
                    yield r
                seen += len(rows)
            if seen < self.suiteql_cap:
                return


__all__ = ["ClientCredentialsAuth", "NetSuiteClient", "TokenBasedAuth", "default_base_url",
           "dumps", "loads", "parse_oauth_header", "problem_details", "sql_in", "sql_text", "tba_base_string",
           "tba_signature"]
