"""Kantata OX (formerly Mavenlink, API v1) as a PSA source: time entries and expenses from the subscribed-events
feed with window re-scans, workspaces, users, invoices; ERP invoice numbers written back as external references.
See docs/connectors/kantata.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.kantata.client import Credentials, KantataClient
from ledgerbridge.connectors.kantata.connector import CAPABILITIES, Change, KantataSource, SyncOptions, SyncResult
from ledgerbridge.connectors.kantata.mapping import Defaults, FieldMap


def _secret(cfg: Any, name: str) -> str:
    return cfg.secret(name) if name in (getattr(cfg, "secrets", None) or {}) else ""


def build(name: str, cfg: Any, ctx: Any) -> KantataSource:
    """The configured system ``name`` (``connector: kantata``). Secrets: ``client_id``, ``client_secret`` and
    ``refresh_token`` of the Kantata OAuth application, or a long-lived ``access_token``."""
    creds = Credentials(client_id=_secret(cfg, "client_id"), client_secret=_secret(cfg, "client_secret"),
                        refresh_token=_secret(cfg, "refresh_token"), access_token=_secret(cfg, "access_token"))
    return KantataSource.from_options(name, dict(cfg.options or {}), creds)


__all__ = ["CAPABILITIES", "Change", "Credentials", "Defaults", "FieldMap", "KantataClient", "KantataSource",
           "SyncOptions", "SyncResult", "build"]
