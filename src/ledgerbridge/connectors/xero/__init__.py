"""Xero Accounting as an ERP target over its REST API: manual journals, invoices, contacts, tracking, lock dates.

See docs/connectors/xero.md. ``connector: xero`` in a system's configuration builds :class:`XeroLedger` through
:func:`build` (secrets ``client_secret`` and, for a standard app, ``refresh_token``)."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.xero.client import XeroClient
from ledgerbridge.connectors.xero.connector import CAPABILITIES, XeroLedger


def build(name: str, cfg: Any, ctx: Any, **client_kw: Any) -> XeroLedger:
    """``client_kw`` go to :class:`XeroClient` (``transport=``, ``on_refresh_token=`` ...)."""
    refresh = cfg.secret("refresh_token") if "refresh_token" in cfg.secrets else None
    if cfg.options.get("refresh_token_file") and "token_file" not in client_kw:
        client_kw["token_file"] = ctx.resolve_path(str(cfg.options["refresh_token_file"]))
    return XeroLedger.from_options(cfg.options, client_secret=cfg.secret("client_secret"), refresh_token=refresh,
                                   system=name, **client_kw)


__all__ = ["CAPABILITIES", "XeroClient", "XeroLedger", "build"]
