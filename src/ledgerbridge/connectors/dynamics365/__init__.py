"""Microsoft Dynamics 365 Finance (F&O OData) + Project Operations (Dataverse) as an ERP target and an actuals
source. See docs/connectors/dynamics365.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.dynamics365.client import ChangesetResult, D365Client, Op
from ledgerbridge.connectors.dynamics365.connector import ActualsRead, D365Connector
from ledgerbridge.connectors.dynamics365.mapping import D365Mapping


def build(name: str, cfg: Any, ctx: Any) -> D365Connector:
    """The registry's entry point (``connector: dynamics365``): options + the ``client_secret`` secret, or the
    ``certificate_key`` secret with ``options.certificate_thumbprint``."""
    if "certificate_key" in cfg.secrets:
        return D365Connector.from_options(name, cfg.options, certificate_key=cfg.secret("certificate_key"))
    return D365Connector.from_options(name, cfg.options, client_secret=cfg.secret("client_secret"))


__all__ = ["ActualsRead", "ChangesetResult", "D365Client", "D365Connector", "D365Mapping", "Op", "build"]
