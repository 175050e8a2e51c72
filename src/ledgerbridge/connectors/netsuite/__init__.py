"""NetSuite (SuiteTalk REST: record API + SuiteQL) as an ERP target: journals, invoices, customers, projects,
employees, period status and GL totals. See docs/connectors/netsuite.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.netsuite.client import ClientCredentialsAuth, NetSuiteClient, TokenBasedAuth
from ledgerbridge.connectors.netsuite.connector import CAPABILITIES, ChangeCursor, NetSuiteLedger


def build(name: str, cfg: Any, ctx: Any) -> NetSuiteLedger:
    """The registry's entry point (``connector: netsuite``): options and secrets of ``systems.<name>``. The
    concurrency is ``options.concurrency``, else the system's ``limits.concurrency`` when above 1."""
    options = dict(cfg.options)
    limits = getattr(cfg, "limits", None)
    if "concurrency" not in options and limits is not None and getattr(limits, "concurrency", 1) > 1:
        options["concurrency"] = limits.concurrency
    return NetSuiteLedger.from_options(name, options, cfg.secret)


__all__ = ["CAPABILITIES", "ChangeCursor", "ClientCredentialsAuth", "NetSuiteClient", "NetSuiteLedger",
           "TokenBasedAuth", "build"]
