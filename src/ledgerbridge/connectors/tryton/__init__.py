"""Tryton (8.x) as a real ERP target over JSON-RPC: journals, invoices, master data, timesheets.

See docs/connectors/tryton.md."""

from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP, TrytonSetup, bootstrap
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.connectors.tryton.connector import (
    CAPABILITIES,
    InvoicePostResult,
    TimesheetCursor,
    TimesheetRead,
    TrytonLedger,
)

__all__ = ["CAPABILITIES", "UNIVERSAL_CHART_MAP", "InvoicePostResult", "TimesheetCursor", "TimesheetRead",
           "TrytonClient", "TrytonLedger",
           "TrytonSetup", "bootstrap"]
