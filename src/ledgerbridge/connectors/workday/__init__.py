"""Workday (Financial Management / Resource Management / Revenue Management SOAP web services, RaaS reports) as an
ERP target: journals, customer invoices, projects, trial balance. See docs/connectors/workday.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.workday.client import WorkdayClient
from ledgerbridge.connectors.workday.connector import CAPABILITIES, ProjectRead, WorkdayLedger


def build(name: str, cfg: Any, ctx: Any) -> WorkdayLedger:
    """The registry's entry point (``connector: workday``)."""
    return WorkdayLedger.from_options(cfg.options, password=cfg.secret("password"), system=name)


__all__ = ["CAPABILITIES", "ProjectRead", "WorkdayClient", "WorkdayLedger", "build"]
