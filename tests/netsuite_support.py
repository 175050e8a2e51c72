"""Shared set-up of the NetSuite tests: the sandbox in a thread, and the connector wired through configuration
(the ``systems:`` block a firm would write, the private key as an ``${env:...}`` secret)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.netsuite import NetSuiteLedger
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.netsuite import create_app

KEY_ENV = "LB_TEST_NETSUITE_KEY"
SUBSIDIARIES = {"US01": 1, "UK01": 2, "DE01": 3}
TAX_MAP = {"US-EXEMPT": 1, "UK-VAT20": 2, "DE-VAT19": 3}  # sandbox salestaxitem ids
ITEM_MAP = {"4900": "PS-BILL", "4000": "PS-TM", "4100": "PS-FF", "4200": "PS-MS", "4300": "PS-EXP"}


@contextlib.contextmanager
def sandbox(**options: Any) -> Iterator[tuple[Any, str]]:
    app = create_app(**options)
    with serve_in_thread(app) as base:
        yield app, base


def options(base: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"account_id": "TSTDRV2100000", "base_url": base, "auth": "oauth2",
                           "client_id": "lb-sandbox-client", "certificate_id": "lb-sandbox-cert",
                           "algorithm": "ES256", "subsidiaries": dict(SUBSIDIARIES), "item_map": dict(ITEM_MAP),
                           "tax_map": dict(TAX_MAP), "concurrency": 4, "limit_wait_seconds": 0.05}
    out.update(extra)
    return out


def ledger(app: Any, base: str, **extra: Any) -> NetSuiteLedger:
    return NetSuiteLedger.from_options("erp_ns", options(base, **extra),
                                       {"private_key": app.state.demo_private_key}.__getitem__)


def wire(ctx: FlowContext, private_key: str, base: str, *, entities: tuple[str, ...] = ("US01",),
         **extra: Any) -> None:
    """Add ``erp_ns`` (connector: netsuite) to the context's configuration and route the entities' ledger and
    invoices to it — configuration only; the private key is an ``${env:...}`` secret."""
    os.environ[KEY_ENV] = private_key
    erp = SystemConfig(connector="netsuite", role="erp", secrets={"private_key": SecretRef(f"${{env:{KEY_ENV}}}")},
                       options=options(base, **extra))
    by_entity = dict(ctx.config.routing.by_entity)
    for e in entities:
        by_entity[e] = RouteTargets(ledger="erp_ns", invoices="erp_ns")
    routing = ctx.config.routing.model_copy(update={"by_entity": by_entity})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp_ns": erp},
                                               "routing": routing})
    ctx.reset_connectors()
    ctx._connectors.pop("erp_ns", None)
