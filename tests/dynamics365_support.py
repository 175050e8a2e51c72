"""Helpers for the Dynamics 365 tests: a seeded sandbox served over real HTTP, the connector options pointing at it,
and a flow context whose every legal entity posts and bills into it through configuration alone."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
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
CHART = [("1100", "Accounts receivable"), ("1200", "Unbilled receivables"), ("2100", "Accrued payroll"),
         ("2200", "Employee expenses payable"), ("2300", "Sales tax payable"), ("2400", "Deferred revenue"),
         ("4000", "Service revenue"), ("4100", "Fixed-fee revenue"), ("4200", "Milestone revenue"),
         ("4300", "Reimbursable expense revenue"), ("5000", "Project labor cost"), ("5100", "Project expenses"),
         ("7900", "FX and rounding")]
SYSTEM = "erp_d365"


def seeded_app(**options: Any) -> Any:
    """The sandbox with the chart, 2026 fiscal periods (Open) for the three companies and the tax groups."""
    opts = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, "delimiter": "|",
            "companies": "usmf:USD,gbsi:GBP,demf:EUR", "default_company": "usmf", **options}
    app = create_app(**opts)
    store = app.state.store
    store.seed_main_accounts(CHART)
    for co in COMPANIES.values():
        store.seed_periods(co, 2026)
    # F&O's own exchange rates (invoices in another currency than the company's are converted by F&O)
    store.fx.update({("USD", "GBP"): Decimal("0.79"), ("USD", "EUR"): Decimal("0.92"), ("GBP", "USD"): Decimal("1.27"),
                     ("EUR", "USD"): Decimal("1.09"), ("EUR", "GBP"): Decimal("0.86"), ("GBP", "EUR"): Decimal("1.16")})
    store.tax_rates.update({"US-EXEMPT": Decimal("0"), "UK-VAT20": Decimal("0.20"), "DE-VAT19": Decimal("0.19")})
    return app


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
