"""HTTP to an Oracle Fusion Cloud ERP pod: REST (ADF framework) reads and the ``erpintegrations`` FBDI operations.

- **Auth**: basic auth (integration user) or OAuth 2.0 client credentials from the OCI IAM identity domain / IDCS
  (``token_url`` + ``scope``), the token cached and refreshed once on a 401.
- **REST reads** always send ``REST-Framework-Version: 4`` (so ``q`` takes SQL-like expressions) and page with
  ``limit``/``offset`` until ``hasMore`` is false; numbers are read as ``Decimal``.
- **erpintegrations**: ``importBulkData`` (one attempt: a repeated import would load the rows twice; the
  connector's lookup-before-import makes a whole re-run safe), ``ESSJobStatusRF`` polls, and
  ``downloadESSJobExecutionDetails`` for the job's log/output.
Every call goes through :func:`ledgerbridge.connectors.http.send` (pacing, classification, metrics, retries).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from decimal import Decimal
from typing import Any

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import PermanentError

SYSTEM = "oracle_fusion"
REST = "/fscmRestApi/resources/11.13.18.05/"
ERP_INTEGRATIONS = REST + "erpintegrations"
FRAMEWORK_VERSION = "4"
MAX_LIMIT = 500


class _BearerOrBasic(httpx.Auth):
    def __init__(self, basic: tuple[str, str] | None, token_url: str | None, client: tuple[str, str] | None,
                 scope: str, system: str, pacer: Pacer | None) -> None:
        self.basic = httpx.BasicAuth(*basic) if basic else None
        self.token_url, self.client, self.scope, self.system, self.pacer = token_url, client, scope, system, pacer
        self.token: str | None = None
        self.expires = 0.0
        self.lock = threading.Lock()
        self.fetched = 0

    def current(self) -> str:
        with self.lock:
            if self.token is None or time.monotonic() >= self.expires:
                assert self.token_url and self.client
                with httpx.Client(timeout=30) as h:
                    r = send(h, "POST", self.token_url, system=self.system, pacer=self.pacer,
                             auth=httpx.BasicAuth(*self.client),
                             data={"grant_type": "client_credentials", "scope": self.scope})
                body = r.json()
                ttl = float(body.get("expires_in", 3600))
                self.token, self.expires = str(body["access_token"]), time.monotonic() + ttl - min(60.0, ttl / 10)
                self.fetched += 1
            return self.token

    def drop(self) -> None:
        with self.lock:
            self.token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.basic is not None:
            yield from self.basic.auth_flow(request)
        else:
            request.headers["Authorization"] = f"Bearer {self.current()}"
            yield request


class OracleFusionClient:
    """One pod (``base_url`` = ``https://<pod>.fa.<dc>.oraclecloud.com``)."""

    def __init__(self, base_url: str, *, user: str | None = None, password: str | None = None,
                 client_id: str | None = None, client_secret: str | None = None, token_url: str | None = None,
                 scope: str = "urn:opc:resource:consumer::all", pacer: Pacer | None = None, timeout: float = 120.0,
                 system: str = SYSTEM) -> None:
        self.base_url = base_url.rstrip("/")
        self.system = system
        self.pacer = pacer
        oauth = bool(client_id)
        if oauth and not token_url:
            raise PermanentError(f"{system}: OAuth needs options.token_url (the identity domain's "
                                 "/oauth2/v1/token)", code="LB-P001")
        if not oauth and not (user and password):
            raise PermanentError(f"{system}: give the integration user and password, or OAuth client_id, "
                                 "client_secret and token_url", code="LB-P001")
        self.auth = _BearerOrBasic(None if oauth else (str(user), str(password)), token_url,
                                   (str(client_id), client_secret or "") if oauth else None, scope, system, pacer)
        self.http = httpx.Client(base_url=self.base_url, auth=self.auth, timeout=timeout,
                                 headers={"REST-Framework-Version": FRAMEWORK_VERSION})
        self._oauth = oauth
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        self.calls += 1
        r = send(self.http, method, url, system=self.system, pacer=self.pacer,
                 on_unauthorized=self.auth.drop if self._oauth else None, **kwargs)
        return json.loads(r.text, parse_float=Decimal) if r.content else None

    def rows(self, resource: str, *, q: str | None = None, limit: int = MAX_LIMIT, **params: Any
             ) -> Iterator[dict[str, Any]]:
        """Every item of a REST collection, paged with ``limit``/``offset`` until ``hasMore`` is false."""
        offset = 0
        while True:
            query = {"limit": min(limit, MAX_LIMIT), "offset": offset, "onlyData": "true", **params}
            if q:
                query["q"] = q
            body = self._send("GET", REST + resource, params=query)
            items = body.get("items", []) if isinstance(body, Mapping) else []
            yield from items
            if not (isinstance(body, Mapping) and body.get("hasMore")) or not items:
                return
            offset += len(items)

    def import_bulk_data(self, zip_bytes: bytes, *, file_name: str, job_name: str, parameters: str,
                         account: str = "fin$/generalLedger$/import$") -> str:
        """Upload the zip to UCM and start the load + import jobs; returns the ESS request id."""
        body = {"OperationName": "importBulkData", "DocumentContent": base64.b64encode(zip_bytes).decode(),
                "ContentType": "zip", "FileName": file_name, "DocumentAccount": account, "JobName": job_name,
                "ParameterList": parameters, "CallbackURL": "#NULL", "NotificationCode": "10", "JobOptions": ""}
        # a 429 is refused unprocessed and is sent again; a timeout or 5xx is not — the import may have started
        answer = self._send("POST", ERP_INTEGRATIONS, json=body, retry_transient=False)
        req = (answer or {}).get("ReqstId") if isinstance(answer, Mapping) else None
        if not req or str(req) in ("-1", "0"):
            raise PermanentError(f"{self.system}: importBulkData answered without a request id: {answer!r}",
                                 code="LB-P006")
        return str(req)

    def job_status(self, request_id: str) -> str:
        body = self._send("GET", ERP_INTEGRATIONS, params={"finder": f"ESSJobStatusRF;requestId={request_id}",
                                                           "onlyData": "true"})
        items = body.get("items", []) if isinstance(body, Mapping) else []
        if not items:
            raise PermanentError(f"{self.system}: no ESS job {request_id}", code="LB-P004")
        return str(items[0].get("RequestStatus", "")).upper()

    def job_files(self, request_id: str, file_type: str = "all") -> bytes:
        """The zip of an ESS job's execution details (log and output files)."""
        body = {"OperationName": "downloadESSJobExecutionDetails", "ReqstId": request_id, "FileType": file_type}
        answer = self._send("POST", ERP_INTEGRATIONS, json=body)
        content = (answer or {}).get("DocumentContent") if isinstance(answer, Mapping) else None
        if not content:
            raise PermanentError(f"{self.system}: ESS job {request_id} has no execution details", code="LB-P006")
        return base64.b64decode(content)
