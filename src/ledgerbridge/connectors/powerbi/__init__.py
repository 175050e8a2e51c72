"""Power BI push datasets (LEGACY) as a reporting target for the curated marts. Recommended instead: BI reads the
DuckDB/Parquet or PostgreSQL marts directly (docs/marts.md). See docs/connectors/powerbi.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.powerbi.client import PowerBiClient
from ledgerbridge.connectors.powerbi.connector import CAPABILITIES, DEFAULT_TABLES, PowerBiTarget, PublishReport


def build(name: str, cfg: Any, ctx: Any) -> PowerBiTarget:
    """The registry's entry point (``connector: powerbi``)."""
    return PowerBiTarget.from_options(cfg.options, client_secret=cfg.secret("client_secret"), system=name)


__all__ = ["CAPABILITIES", "DEFAULT_TABLES", "PowerBiClient", "PowerBiTarget", "PublishReport", "build"]
