"""The Salesforce platform as a PSA source: Certinia PSA (``pse__``), Kimble (``KimbleOne__``) and Sales Cloud
opportunities, one package selected by ``options.package``. See docs/connectors/salesforce.md, certinia.md and
kimble.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.salesforce.client import ItemResult, SalesforceClient
from ledgerbridge.connectors.salesforce.connector import (
    CAPABILITIES,
    ChangeEvent,
    SalesforceSource,
    SyncOptions,
    SyncResult,
)
from ledgerbridge.connectors.salesforce.mapping import PACKAGES, ObjectMap, object_maps


def build(name: str, cfg: Any, ctx: Any) -> SalesforceSource:
    """The registry's entry (``connector: salesforce``): options from ``cfg.options``; secrets ``private_key``
    (JWT bearer, PEM) or ``client_secret`` (client credentials)."""
    secrets = {key: cfg.secret(key) for key in ("private_key", "client_secret") if key in cfg.secrets}
    return SalesforceSource.from_options(name, cfg.options, **secrets)


__all__ = ["CAPABILITIES", "PACKAGES", "ChangeEvent", "ItemResult", "ObjectMap", "SalesforceClient",
           "SalesforceSource", "SyncOptions", "SyncResult", "build", "object_maps"]
