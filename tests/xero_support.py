"""Helpers for the Xero tests: every exchange with the sandbox checked against Xero's official OpenAPI.

:class:`SpecCheckingTransport` wraps httpx's transport: each request the connector sends to the Accounting API or
``/connections`` is validated (path, method, parameters, headers, body) against tests/specs/xero/xero_accounting.yaml
/ xero-identity.yaml (copied from the official repository), then its response (status, body) — loaded once per
process. The sandbox's URLs are mapped onto the spec's server (``https://api.xero.com/api.xro/2.0``;
``/connections`` is ``/Connections`` in the identity spec). The token endpoint is not in either spec and is not
validated. Every failure is recorded in ``.problems`` and raised at once, so validation cannot pass silently.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import yaml
from werkzeug.datastructures import Headers, ImmutableMultiDict

from ledgerbridge.config.schema import SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.testing.sandboxes import xero as sandbox

SPECS = Path(__file__).parent / "specs" / "xero"
ACCOUNTING = "/api.xro/2.0"
#: statuses Xero documents for every endpoint outside the OpenAPI (auth, tenant, limits): requests are validated,
#: these answers are counted in ``undescribed`` instead
UNDESCRIBED = frozenset({401, 403, 429})


def _document(path: Path) -> Any:
    """The parsed YAML (libyaml when present), cached as a pickle next to the temp dir keyed by the file's size and
    mtime: parsing the 926 KB accounting spec costs seconds, and the kill test's child process needs it too."""
    stat = path.stat()
    cache = Path(tempfile.gettempdir()) / f"lb-xero-spec-{path.stem}-{stat.st_size}-{int(stat.st_mtime)}.pickle"
    if cache.exists():
        with cache.open("rb") as fh:
            return pickle.load(fh)
    with path.open() as fh:
        doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(doc, fh)
    os.replace(tmp, cache)
    return doc


@functools.cache
def spec(name: str) -> Any:
    from openapi_core import Config, OpenAPI

    # the official file does not pass openapi-spec-validator itself (e.g. boolean defaults written as 'false'),
    # so the document is not linted on load; requests and responses are still validated against its schemas
    return OpenAPI.from_dict(_document(SPECS / name), config=Config(spec_validator_cls=None))


class _Req:
    def __init__(self, request: httpx.Request, host_url: str, path: str) -> None:
        url = urlparse(str(request.url))
        self.host_url, self.path = host_url, path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/json").lower()
        self.parameters = _params(parse_qs(url.query), dict(request.headers))


def _params(query: dict[str, list[str]], headers: dict[str, str]) -> Any:
    from openapi_core.datatypes import RequestParameters

    return RequestParameters(query=ImmutableMultiDict(query), header=Headers(headers),
                             cookie=ImmutableMultiDict({}))


class _Resp:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.data = response.content
        self.content_type = response.headers.get("content-type", "application/json").lower()
        self.headers = Headers(dict(response.headers))


class SpecViolation(AssertionError):
    pass


class SpecCheckingTransport(httpx.BaseTransport):
    """Validate each Accounting / identity exchange against the official OpenAPI; count what was checked."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        spec("xero_accounting.yaml"), spec("xero-identity.yaml")  # parsed once per process, before any thread
        self.checked = 0
        self.skipped: list[str] = []
        self.undescribed: list[str] = []
        self.problems: list[str] = []
        self.operations: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _target(request: httpx.Request) -> tuple[str, _Req] | None:
        path = request.url.path
        if ACCOUNTING in path:
            return "xero_accounting.yaml", _Req(request, "https://api.xero.com",
                                                ACCOUNTING + path.split(ACCOUNTING, 1)[1])
        if path.rstrip("/").endswith("/connections"):
            return "xero-identity.yaml", _Req(request, "https://api.xero.com", "/Connections")
        return None

    def check(self, request: httpx.Request, response: httpx.Response | None) -> None:
        found = self._target(request)
        if found is None:
            with self._lock:
                self.skipped.append(f"{request.method} {request.url.path}")
            return
        name, req = found
        api = spec(name)
        try:
            api.validate_request(req)
            if response is not None and response.status_code not in UNDESCRIBED:
                api.validate_response(req, _Resp(response))
            elif response is not None:
                with self._lock:
                    self.undescribed.append(f"{request.method} {req.path} -> {response.status_code}")
        except Exception as exc:  # any validation error of openapi-core
            detail = "; ".join(str(e) for e in getattr(exc, "schema_errors", []) or []) or repr(exc)
            msg = f"{request.method} {req.path} -> {response.status_code if response else '-'}: {exc} {detail}"
            with self._lock:
                self.problems.append(msg)
            raise SpecViolation(msg) from exc
        with self._lock:
            self.checked += 1
            self.operations.add(f"{req.method.upper()} {req.path.split('?')[0]}")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.check(request, response)
        return response

    def close(self) -> None:
        self.inner.close()


def options(base: str, **extra: Any) -> dict[str, Any]:
    """The connector options for a sandbox at ``base`` (what a YAML ``options:`` block would hold)."""
    return {"client_id": sandbox.CLIENT_ID, "legal_entity_id": "US01", "tenant_id": None,
            "api_url": f"{base}/api.xro/2.0", "token_url": f"{base}/connect/token",
            "connections_url": f"{base}/connections", "tax_map": {"US-EXEMPT": "NONE", "UK-VAT20": "OUTPUT"},
            "tracking_map": {"project": "Project", "cost_center": "Cost centre"}, **extra}


def system_config(base: str, **extra: Any) -> SystemConfig:
    return SystemConfig(connector="xero", role="erp",
                        secrets={"client_secret": SecretRef("${env:LB_XERO_CLIENT_SECRET}")},
                        options=options(base, **extra))


def check_builds(monkeypatch: Any, checker: SpecCheckingTransport) -> None:
    """Every Xero connector the registry builds (``connector: xero``, found by package) from now on sends through
    ``checker`` — also the ones the flows rebuild after ``ctx.reset_connectors()``."""
    import ledgerbridge.connectors.xero as pkg

    monkeypatch.setattr(pkg, "build", functools.partial(pkg.build, transport=checker))


def seed_chart(store: Any, accounts: Any) -> None:
    """Seed the sandbox organisation's chart with our accounts (codes as Xero account codes) it lacks."""
    types = {"asset": "CURRENT", "liability": "CURRLIAB", "equity": "EQUITY", "revenue": "REVENUE",
             "expense": "EXPENSE"}
    for a in accounts:
        if a.code not in store.accounts:
            store.add_account(a.code, a.name, types.get(str(getattr(a.type, "value", a.type)), "EXPENSE"))


def wire(ctx: Any, base: str, *, master_data: bool = False, **extra: Any) -> Any:
    """Route US01's ledger and invoices to a Xero system ``erp_us`` on the sandbox at ``base`` — config
    only, as a deployment would — and return the built connector (its HTTP checked by ``checker`` when given).
    ``master_data``: customers and projects also propagate to Xero. Needs ``LB_XERO_CLIENT_SECRET`` set."""
    from ledgerbridge.config.schema import RouteTargets

    systems = {**ctx.config.systems, "erp_us": system_config(base, **extra)}
    us01 = RouteTargets(ledger="erp_us", invoices="erp_us")
    routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": us01}})
    update: dict[str, Any] = {"systems": systems, "routing": routing}
    if master_data:
        data = ctx.config.model_dump(mode="json", exclude_none=True).get("master_data") or {}
        ents = dict(data.get("entities") or {})
        ents["customer"] = {**ents.get("customer", {}), "propagate_to": ["erp_us"]}
        ents["project"] = {**ents.get("project", {}), "propagate_to": ["erp_us"]}
        update["master_data"] = type(ctx.config.master_data).model_validate({**data, "entities": ents})
    ctx.config = ctx.config.model_copy(update=update)
    ctx.reset_connectors()
    return ctx.connector("erp_us")
