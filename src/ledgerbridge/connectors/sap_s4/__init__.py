"""SAP S/4HANA Cloud as a target ledger: SOAP journal entries (sync and bulk async), OData read-back,
enterprise projects and timesheets. See docs/connectors/sap-s4hana.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.sap_s4.client import SapS4Client
from ledgerbridge.connectors.sap_s4.connector import CAPABILITIES, SapS4Ledger, TimesheetPush


def build(name: str, cfg: Any, ctx: Any) -> SapS4Ledger:
    """The registry's entry point (``connector: sap_s4``)."""
    return SapS4Ledger.from_options(cfg.options, secret=cfg.secret, system=name)


__all__ = ["CAPABILITIES", "SapS4Client", "SapS4Ledger", "TimesheetPush", "build"]
