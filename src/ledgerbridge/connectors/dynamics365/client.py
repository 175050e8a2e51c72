"""HTTP client of Dynamics 365 Finance (F&O OData) and Project Operations (Dataverse Web API): the only place the
Dynamics 365 connector does I/O.

- **Tokens**: Microsoft Entra client credentials (a secret, or a certificate: RS256 client assertion),
  ``POST <authority>/<tenant>/oauth2/v2.0/token`` with ``scope=<resource>/.default``, one cached token per
  resource (F&O environment, Dataverse org). A token is renewed ``refresh_skew`` seconds before ``expires_in``
  runs out, and at once when a call answers 401 (revoked, clock skew): the token is put on each request by an
  ``httpx.Auth`` flow, so the shared retry re-sends with the new one.
- **Reads** (:meth:`D365Client.fo_get`): every F&O read carries ``cross-company=true`` — without it F&O silently
  answers only the app user's default legal entity — and follows ``@odata.nextLink`` to the end. ``$filter`` with
  ``in`` is not supported by F&O, so key lists become ``or`` chains (:func:`any_of`) of ``lookup_chunk`` values.
- **Writes**: ``$batch`` (:meth:`D365Client.fo_batch`), one changeset per document (all-or-nothing per changeset),
  multipart/mixed built and parsed here; decimals travel as strings (``IEEE754Compatible=true``), never floats.
  A ``$batch`` is **not** retried blindly after a transport failure (it may have been applied): the caller looks
  its documents up again first. 429 (Retry-After) pauses every caller through the shared
  :class:`~ledgerbridge.connectors.http.Pacer`.
- **Dataverse**: alternate-key upsert (:meth:`D365Client.dv_upsert`) and change tracking
  (:meth:`D365Client.dv_changes`: ``Prefer: odata.track-changes`` -> ``@odata.deltaLink``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RecordValidationError,
    classify_http,
)

SYSTEM = "dynamics365"
JSON_TYPE = "application/json; odata.metadata=minimal; IEEE754Compatible=true"
DV_PATH = "/api/data/v9.2"


def decode(content: bytes) -> Any:
    """JSON with exact decimals (``1234.56`` -> ``Decimal('1234.56')``)."""
    return json.loads(content, parse_float=Decimal) if content.strip() else None


def encode(body: Any) -> str:
    """JSON with decimals as strings (OData ``IEEE754Compatible=true``: Edm.Decimal as a string, exact)."""
    return json.dumps(body, default=lambda v: format(v, "f") if isinstance(v, Decimal) else str(v))


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def any_of(field: str, values: Iterable[str]) -> str:
    """``(F eq 'a' or F eq 'b')`` — F&O OData has no ``in`` operator."""
    return "(" + " or ".join(f"{field} eq {quote_literal(v)}" for v in values) + ")"


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def odata_message(body: Any) -> str:
    """The useful text of an OData error: ``innererror.message`` (F&O's infolog) or ``error.message``."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return str(body)[:300]
    inner = err.get("innererror") if isinstance(err.get("innererror"), dict) else {}
    return str(inner.get("message") or err.get("message") or err)


@dataclass(frozen=True, slots=True)
class Op:
    """One request of a changeset: ``url`` relative to ``/data/`` (``LedgerJournalHeaders``, ``$1/JournalLines``)."""

    method: str
    url: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChangesetResult:
    """``ok`` with each request's ``(status, body)``; or the single failure ``(status, body)`` of the changeset."""

    ok: bool
    answers: tuple[tuple[int, Any], ...]

    @property
    def error_text(self) -> str:
        return "" if self.ok else odata_message(self.answers[0][1])


@dataclass
class _Token:
    value: str
    expires_at: float


class _Bearer(httpx.Auth):
    def __init__(self, client: D365Client, resource: str) -> None:
        self.client, self.resource = client, resource

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.client.token(self.resource)}"
        yield request


class D365Client:
    """One app registration talking to one F&O environment and, optionally, one Dataverse org.

    ``pacer`` paces F&O calls, ``dv_pacer`` Dataverse calls (separate services, separate limits). ``clock`` is the
    token clock (injectable for tests); ``transport`` an optional ``httpx`` transport."""

    def __init__(self, *, fo_url: str, tenant_id: str, client_id: str, client_secret: str = "",
                 certificate_key: str = "", certificate_thumbprint: str = "",
                 authority: str = "https://login.microsoftonline.com", dataverse_url: str | None = None,
                 system: str = SYSTEM, pacer: Pacer | None = None, dv_pacer: Pacer | None = None,
                 timeout: float = 60.0, refresh_skew: float = 60.0, max_wait: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.BaseTransport | None = None) -> None:
        problems = [name for name, v in (("fo_url", fo_url), ("tenant_id", tenant_id), ("client_id", client_id),
                                         ("client_secret or certificate_key + certificate_thumbprint",
                                          client_secret or (certificate_key and certificate_thumbprint))) if not v]
        if problems:
            raise PermanentError(f"{system}: missing {problems} — see docs/connectors/dynamics365.md (app "
                                 "registration in Microsoft Entra)", code="LB-P001", details={"missing": problems})
        self.system = system
        self.fo_url = fo_url.rstrip("/")
        self.dataverse_url = dataverse_url.rstrip("/") if dataverse_url else None
        self.token_url = f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self.client_id, self._secret = client_id, client_secret
        self._cert_key, self._thumbprint = certificate_key, certificate_thumbprint
        self.pacer, self.dv_pacer = pacer, dv_pacer
        self.refresh_skew, self.max_wait, self.clock = refresh_skew, max_wait, clock
        self._tokens: dict[str, _Token] = {}
        self._token_lock = threading.Lock()
        self.tokens_fetched = 0
        self.requests = 0
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._auth_http = httpx.Client(timeout=timeout, transport=transport)
        self._fo_auth = _Bearer(self, self.fo_url)
        self._dv_auth = _Bearer(self, self.dataverse_url) if self.dataverse_url else None

    def close(self) -> None:
        self._http.close()
        self._auth_http.close()

    def __enter__(self) -> D365Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ tokens

    def token(self, resource: str) -> str:
        """A valid access token for ``resource`` (cached; renewed ``refresh_skew`` s before it expires)."""
        with self._token_lock:
            held = self._tokens.get(resource)
            if held is not None and self.clock() < held.expires_at - self.refresh_skew:
                return held.value
            form = {"grant_type": "client_credentials", "client_id": self.client_id,
                    "scope": f"{resource}/.default", **self._credential()}
            self.requests += 1
            resp = send(self._auth_http, "POST", self.token_url, system=self.system, data=form, attempts=3,
                        max_wait=self.max_wait)
            body = decode(resp.content) or {}
            if not body.get("access_token"):
                raise PermanentError(f"{self.system}: the Entra token endpoint answered without access_token",
                                     code="LB-P002")
            self._tokens[resource] = _Token(str(body["access_token"]),
                                            self.clock() + float(body.get("expires_in", 3599)))
            self.tokens_fetched += 1
            return self._tokens[resource].value

    def _credential(self) -> dict[str, str]:
        """The secret, or — with a certificate — a client assertion: a JWT signed with the certificate's private
        key (RS256, ``x5t`` = base64url SHA-1 thumbprint), audience the token endpoint, valid 10 minutes."""
        if not self._cert_key:
            return {"client_secret": self._secret}
        import jwt  # pyjwt[crypto]

        now = int(time.time())
        thumb = base64.urlsafe_b64encode(bytes.fromhex(self._thumbprint.replace(":", ""))).decode().rstrip("=")
        assertion = jwt.encode({"aud": self.token_url, "iss": self.client_id, "sub": self.client_id,
                                "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600},
                               self._cert_key, algorithm="RS256", headers={"x5t": thumb})
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}

    def _invalidate(self, resource: str) -> Callable[[], None]:
        def drop() -> None:
            with self._token_lock:
                self._tokens.pop(resource, None)
        return drop

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, url: str, *, dataverse: bool = False, attempts: int = 5,
              **kwargs: Any) -> httpx.Response:
        resource = self.dataverse_url if dataverse else self.fo_url
        if resource is None:
            raise PermanentError(f"{self.system}: no dataverse_url configured (options.dataverse_url)",
                                 code="LB-P001")
        self.requests += 1
        headers = {"Accept": "application/json", "OData-Version": "4.0", "OData-MaxVersion": "4.0",
                   **kwargs.pop("headers", {})}
        return send(self._http, method, url, system=self.system, pacer=self.dv_pacer if dataverse else self.pacer,
                    attempts=attempts, max_wait=self.max_wait, on_unauthorized=self._invalidate(resource),
                    auth=self._dv_auth if dataverse else self._fo_auth, headers=headers, **kwargs)

    @staticmethod
    def _cross_company(url: str) -> str:
        """``url`` with ``cross-company=true`` (added when a nextLink or caller left it out)."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if query.get("cross-company") == "true":
            return url
        query["cross-company"] = "true"
        return urlunsplit(parts._replace(query=urlencode(query)))

    # ------------------------------------------------------------------ F&O reads

    def fo_get(self, entity: str, *, filter: str | None = None, select: Sequence[str] | None = None,
               page_size: int | None = None) -> list[dict[str, Any]]:
        """Every row of ``entity`` matching ``filter``, across legal entities, all pages."""
        params: dict[str, str] = {"cross-company": "true"}
        if filter:
            params["$filter"] = filter
        if select:
            params["$select"] = ",".join(select)
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        url: str | None = f"{self.fo_url}/data/{entity}?{urlencode(params)}"
        rows: list[dict[str, Any]] = []
        while url:
            body = decode(self._call("GET", self._cross_company(url), headers=headers).content) or {}
            rows += list(body.get("value") or [])
            url = body.get("@odata.nextLink")
        return rows

    def fo_action(self, path: str, body: dict[str, Any] | None = None) -> None:
        self._call("POST", f"{self.fo_url}/data/{path}", content=encode(body or {}),
                   headers={"Content-Type": JSON_TYPE})

    def fo_patch(self, path: str, body: dict[str, Any]) -> None:
        self._call("PATCH", f"{self.fo_url}/data/{path}", content=encode(body), headers={"Content-Type": JSON_TYPE})

    def fo_create(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._call("POST", f"{self.fo_url}/data/{entity}", content=encode(body), attempts=3,
                          headers={"Content-Type": JSON_TYPE})
        return dict(decode(resp.content) or {})

    # ------------------------------------------------------------------ F&O $batch

    def fo_batch(self, changesets: Sequence[Sequence[Op]]) -> list[ChangesetResult]:
        """Send ``changesets`` in one ``$batch``; one :class:`ChangesetResult` per changeset, in order.

        A 429 is waited out and the batch sent again (nothing was applied); a 401 renews the token once; a transport
        failure or 5xx is raised (the batch may have been applied: look the documents up before sending again)."""
        boundary = f"batch_{uuid.uuid4()}"
        body = _multipart(boundary, changesets, self.fo_url)
        resp = self._call("POST", f"{self.fo_url}/data/$batch", attempts=20, retry_transient=False, content=body,
                          headers={"Content-Type": f"multipart/mixed; boundary={boundary}",
                                   "Accept": "multipart/mixed"})
        results = _parse_batch(resp.headers.get("content-type", ""), resp.content)
        if len(results) != len(changesets):
            raise PermanentError(f"{self.system}: $batch answered {len(results)} parts for "
                                 f"{len(changesets)} changesets", code="LB-P006")
        return results

    # ------------------------------------------------------------------ Dataverse

    def dv_upsert(self, entity_set: str, key: str, value: str, body: dict[str, Any], *,
                  mode: str = "upsert") -> str | None:
        """``PATCH <set>(<key>='<value>')``: creates or updates by alternate key; ``mode`` ``update`` sends
        ``If-Match: *`` (never creates), ``create`` sends ``If-None-Match: *`` (never updates). Returns the
        ``OData-EntityId`` the service reports."""
        headers = {"Content-Type": JSON_TYPE}
        if mode == "update":
            headers["If-Match"] = "*"
        elif mode == "create":
            headers["If-None-Match"] = "*"
        url = f"{self.dataverse_url}{DV_PATH}/{entity_set}({key}={quote_literal(value)})"
        resp = self._call("PATCH", url, dataverse=True, content=encode(body), headers=headers)
        return resp.headers.get("OData-EntityId")

    def _dv_pages(self, url: str, prefer: str) -> Iterable[dict[str, Any]]:
        next_url: str | None = url
        while next_url:
            body = decode(self._call("GET", next_url, dataverse=True, headers={"Prefer": prefer}).content) or {}
            yield body
            next_url = body.get("@odata.nextLink")

    def dv_get(self, entity_set: str, *, select: Sequence[str], page_size: int = 5000) -> list[dict[str, Any]]:
        """Every row of a Dataverse table (``$select``ed), all pages."""
        url = f"{self.dataverse_url}{DV_PATH}/{entity_set}?$select={','.join(select)}"
        return [row for body in self._dv_pages(url, f"odata.maxpagesize={page_size}")
                for row in body.get("value") or []]

    def dv_changes(self, entity_set: str, *, select: Sequence[str], delta_link: str | None = None,
                   page_size: int = 5000) -> tuple[list[dict[str, Any]], list[str], str]:
        """Change-tracked read: ``(rows, deleted ids, next delta link)``. Without ``delta_link`` it is the initial
        full read; with it, only rows changed and deleted since that link was issued."""
        url = delta_link or f"{self.dataverse_url}{DV_PATH}/{entity_set}?$select={','.join(select)}"
        rows: list[dict[str, Any]] = []
        deleted: list[str] = []
        link: str | None = None
        for body in self._dv_pages(url, f"odata.track-changes,odata.maxpagesize={page_size}"):
            for item in body.get("value") or []:
                if str(item.get("@odata.context", "")).endswith("$deletedEntity"):
                    deleted.append(str(item["id"]))
                else:
                    rows.append(item)
            link = body.get("@odata.deltaLink") or link
        if link is None:
            raise PermanentError(f"{self.system}: {entity_set} answered without @odata.deltaLink — enable "
                                 "'Track changes' on the table in Power Apps", code="LB-P006")
        return rows, deleted, link


# --------------------------------------------------------------------------------------------------- multipart


def _multipart(boundary: str, changesets: Sequence[Sequence[Op]], base: str) -> bytes:
    out: list[str] = []
    for ops in changesets:
        cs = f"changeset_{uuid.uuid4()}"
        out.append(f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n")
        for n, op in enumerate(ops, 1):
            url = op.url if op.url.startswith("$") else f"{base}/data/{op.url}"
            body = encode(op.body) if op.body is not None else ""
            out.append(f"--{cs}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                       f"Content-ID: {n}\r\n\r\n{op.method} {url} HTTP/1.1\r\nContent-Type: {JSON_TYPE}\r\n"
                       f"Accept: application/json\r\n\r\n{body}\r\n")
        out.append(f"--{cs}--\r\n")
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode()


def _boundary(content_type: str) -> str | None:
    for piece in content_type.split(";"):
        name, _, value = piece.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"')
    return None


def _parts(text: str, boundary: str) -> list[str]:
    pieces = text.split(f"--{boundary}")[1:]
    return [p[2:] if p.startswith("\r\n") else p for p in pieces if not p.startswith("--")]


def _headers_and_rest(part: str) -> tuple[dict[str, str], str]:
    head, _, rest = part.partition("\r\n\r\n")
    hdrs = {}
    for line in head.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            hdrs[k.strip().lower()] = v.strip()
    return hdrs, rest


def _http_answer(rest: str) -> tuple[int, Any]:
    status_line, _, after = rest.partition("\r\n")
    _, body = _headers_and_rest(after) if "\r\n\r\n" in after else ({}, after)
    try:
        status = int(status_line.split(" ")[1])
    except (IndexError, ValueError) as exc:
        raise PermanentError(f"{SYSTEM}: unreadable $batch part: {status_line[:80]!r}", code="LB-P006") from exc
    return status, decode(body.strip().encode())


def _parse_batch(content_type: str, content: bytes) -> list[ChangesetResult]:
    boundary = _boundary(content_type)
    if not content_type.startswith("multipart/mixed") or not boundary:
        raise PermanentError(f"{SYSTEM}: $batch answered {content_type!r}, not multipart/mixed", code="LB-P006")
    results: list[ChangesetResult] = []
    for part in _parts(content.decode(), boundary):
        hdrs, rest = _headers_and_rest(part)
        inner = _boundary(hdrs.get("content-type", ""))
        if hdrs.get("content-type", "").startswith("multipart/mixed") and inner:
            answers = tuple(_http_answer(_headers_and_rest(p)[1]) for p in _parts(rest, inner))
            results.append(ChangesetResult(all(s < 400 for s, _ in answers), answers))
        else:
            status, body = _http_answer(rest)
            results.append(ChangesetResult(status < 400, ((status, body),)))
    return results


def changeset_error(result: ChangesetResult, what: str, system: str = SYSTEM) -> LedgerbridgeError:
    """The classified error of a refused changeset, with F&O's infolog text in the message."""
    status, body = result.answers[0]
    err = classify_http(status, {}, encode(body) if body is not None else None, system=system)
    text = f"{system}: {what} refused by Finance and Operations: {odata_message(body)}"
    if isinstance(err, ConflictError):
        return ConflictError(text, code=err.code, details={"status": status})
    if err is None or isinstance(err, RecordValidationError) or status in (400, 422):
        return RecordValidationError(text, code="LB-V002", details={"status": status})
    return type(err)(text, code=err.code, details={"status": status})
