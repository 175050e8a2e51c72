"""Oracle Fusion Cloud ERP as a target ledger: FBDI journal import through erpintegrations (importBulkData, ESS
job status, execution report), REST read-back and period status. See docs/connectors/oracle-fusion.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.oracle_fusion.client import OracleFusionClient
from ledgerbridge.connectors.oracle_fusion.connector import CAPABILITIES, OracleFusionLedger
from ledgerbridge.connectors.oracle_fusion.mapping import GL_INTERFACE_COLUMNS, ChartSpec


def build(name: str, cfg: Any, ctx: Any) -> OracleFusionLedger:
    """The registry's entry point (``connector: oracle_fusion``). In-flight imports are remembered under
    ``options.state_dir`` (default ``.ledgerbridge/<name>`` in the work directory)."""
    state = cfg.options.get("state_dir", f".ledgerbridge/{name}")
    state_dir = ctx.resolve_path(state) if hasattr(ctx, "resolve_path") else None
    return OracleFusionLedger.from_options(cfg.options, secret=cfg.secret, system=name, state_dir=state_dir)


__all__ = ["CAPABILITIES", "GL_INTERFACE_COLUMNS", "ChartSpec", "OracleFusionClient", "OracleFusionLedger", "build"]
