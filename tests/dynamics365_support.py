"""Helpers for the Dynamics 365 tests: a seeded sandbox served over real HTTP, the connector options pointing at it,
and a flow context whose every legal entity posts and bills into it through configuration alone."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.dynamics365 import create_app

from flows_support import make_ctx

TENANT, CLIENT_ID, SECRET = "meridian.onmicrosoft.com", "5b1f0c2e-d365-4c1a-9e1d-lb0000000001", "s3cret-value"
COMPANIES = {"US01": "usmf", "UK01": "gbsi", "DE01": "demf"}
SYSTEM = "erp_d365"


def seeded_app(**options: Any) -> Any:
    """The sandbox as the three companies of the sample firm with its chart, fiscal periods 2025-2027 Open, tax
    groups and exchange rates (the sandbox's ``seed`` option)."""
    return create_app(**{"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, "delimiter": "|",
                         "companies": "usmf:USD,gbsi:GBP,demf:EUR", "default_company": "usmf", **options})


@contextlib.contextmanager
def serve(**options: Any) -> Iterator[tuple[Any, str]]:
    app = seeded_app(**options)
    with serve_in_thread(app) as base:
        yield app, base


def connector_options(base: str, **over: Any) -> dict[str, Any]:
    return {"fo_url": base, "authority": base, "tenant_id": TENANT, "client_id": CLIENT_ID,
            "dataverse_url": base, "companies": dict(COMPANIES), "dimensions": ["cost_center", "project"],
            "delimiter": "|", "rate_limit": 5000, "rate_window": 1, **over}


def d365_ctx(workdir: Path, export: Path, base: str, monkeypatch: Any, *, late: str | None = None,
             **over: Any) -> FlowContext:
    """A flow context whose three legal entities post (ledger) and bill (invoices) into the sandbox, wired by
    configuration only (``connector: dynamics365``)."""
    monkeypatch.setenv("LB_TEST_D365_SECRET", SECRET)
    ctx = make_ctx(workdir, export_from=export, failure_mode="line_level", late=late)
    erp = SystemConfig(connector="dynamics365", role="erp",
                       secrets={"client_secret": SecretRef("${env:LB_TEST_D365_SECRET}")},
                       options=connector_options(base, **over))
    routing = ctx.config.routing.model_copy(update={"by_entity": {
        e: RouteTargets(ledger=SYSTEM, invoices=SYSTEM) for e in COMPANIES}})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, SYSTEM: erp}, "routing": routing})
    ctx.reset_connectors()
    return ctx


def cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=dt.UTC)
