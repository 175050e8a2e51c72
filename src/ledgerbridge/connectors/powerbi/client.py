"""Power BI REST (push datasets): Entra client-credentials token, the dataset/table/rows calls, and the push
limits (10,000 rows per POST, 120 POST rows requests per minute per dataset) kept by a :class:`Pacer` per dataset.

Every call goes through :func:`ledgerbridge.connectors.http.send`: a 429 pauses every caller for its
``Retry-After``; a 401 fetches a new token once (the token is attached at send time by :class:`_Bearer`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.connectors.powerbi.mapping import SYSTEM
from ledgerbridge.errors import PermanentError

API_URL = "https://api.powerbi.com"
AUTHORITY = "https://login.microsoftonline.com"
SCOPE = "https://analysis.windows.net/powerbi/api/.default"
MAX_ROWS_PER_POST = 10_000
POSTS_PER_MINUTE = 120


class _Bearer(httpx.Auth):
    def __init__(self, client: PowerBiClient) -> None:
        self.client = client

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self.client.token()}"
        yield request


class PowerBiClient:
    """One service principal (Entra app) against one Power BI tenant.

    ``posts_per_window`` POST rows requests per ``window`` seconds per dataset (Microsoft: 120 per minute), scaled
    by ``headroom`` so a second writer or a retry has room. ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(self, tenant_id: str, client_id: str, client_secret: str, *, api_url: str = API_URL,
                 authority: str = AUTHORITY, scope: str = SCOPE, timeout: float = 60.0,
                 posts_per_window: int = POSTS_PER_MINUTE, window: float = 60.0, headroom: float = 0.9,
                 rows_per_post: int = MAX_ROWS_PER_POST, system: str = SYSTEM,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.BaseTransport | None = None) -> None:
        if not 1 <= rows_per_post <= MAX_ROWS_PER_POST:
            raise ValueError(f"rows_per_post must be 1..{MAX_ROWS_PER_POST}")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = client_secret
        self.api_url = api_url.rstrip("/")
        self.authority = authority.rstrip("/")
        self.scope = scope
        self.system = system
        self.rows_per_post = rows_per_post
        self.http = httpx.Client(timeout=timeout, transport=transport)
        self._posts = (posts_per_window, window, headroom)
        self._pacers: dict[str, Pacer] = {}
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.token_fetches = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PowerBiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ auth

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or self._clock() >= self._expires:
                url = f"{self.authority}/{quote(self.tenant_id)}/oauth2/v2.0/token"
                r = send(self.http, "POST", url, system=self.system, data={
                    "grant_type": "client_credentials", "client_id": self.client_id,
                    "client_secret": self._secret, "scope": self.scope})
                body = r.json()
                if not body.get("access_token"):
                    raise PermanentError(f"{self.system}: the token endpoint answered without access_token",
                                         code="LB-P002")
                self._token = str(body["access_token"])
                # renew a minute early (or at half the lifetime for very short tokens)
                life = float(body.get("expires_in", 3599))
                self._expires = self._clock() + max(life - 60.0, life / 2)
                self.token_fetches += 1
            return self._token

    def _refresh(self) -> None:
        self.token(force=True)

    # ------------------------------------------------------------------ calls

    def pacer(self, dataset_id: str) -> Pacer:
        if dataset_id not in self._pacers:
            limit, window, headroom = self._posts
            self._pacers[dataset_id] = Pacer(limit, window, concurrency=1, headroom=headroom, clock=self._clock)
        return self._pacers[dataset_id]

    def request(self, method: str, path: str, *, pacer: Pacer | None = None, **kwargs: Any) -> httpx.Response:
        return send(self.http, method, f"{self.api_url}{path}", system=self.system, pacer=pacer,
                    on_unauthorized=self._refresh, auth=_Bearer(self), **kwargs)

    @staticmethod
    def group_path(group_id: str) -> str:
        return f"/v1.0/myorg/groups/{quote(group_id)}"

    def groups(self, group_id: str | None = None) -> list[dict[str, Any]]:
        """Workspaces the app is a member of (only ``group_id`` when given)."""
        params = {"$filter": f"id eq '{group_id}'"} if group_id else None
        return list(self.request("GET", "/v1.0/myorg/groups", params=params).json().get("value") or [])

    def datasets(self, group_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{self.group_path(group_id)}/datasets").json().get("value") or [])

    def create_dataset(self, group_id: str, body: Mapping[str, Any], retention: str = "basicFIFO"
                       ) -> dict[str, Any]:
        return dict(self.request("POST", f"{self.group_path(group_id)}/datasets",
                                 params={"defaultRetentionPolicy": retention}, json=dict(body)).json())

    def tables(self, group_id: str, dataset_id: str) -> list[dict[str, Any]]:
        path = f"{self.group_path(group_id)}/datasets/{quote(dataset_id)}/tables"
        return list(self.request("GET", path).json().get("value") or [])

    def put_table(self, group_id: str, dataset_id: str, table: Mapping[str, Any]) -> None:
        path = f"{self.group_path(group_id)}/datasets/{quote(dataset_id)}/tables/{quote(str(table['name']))}"
        self.request("PUT", path, json=dict(table))

    def delete_rows(self, group_id: str, dataset_id: str, table: str) -> None:
        path = f"{self.group_path(group_id)}/datasets/{quote(dataset_id)}/tables/{quote(table)}/rows"
        self.request("DELETE", path)

    def post_rows(self, group_id: str, dataset_id: str, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Push ``rows`` in POSTs of at most ``rows_per_post``, paced per dataset; returns the POST count."""
        path = f"{self.group_path(group_id)}/datasets/{quote(dataset_id)}/tables/{quote(table)}/rows"
        posts = 0
        for i in range(0, len(rows), self.rows_per_post):
            chunk = list(rows[i:i + self.rows_per_post])
            self.request("POST", path, pacer=self.pacer(dataset_id), json={"rows": chunk})
            posts += 1
        return posts
