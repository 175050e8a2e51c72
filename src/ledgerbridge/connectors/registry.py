"""Connector registry: the ``connector`` name in a system's configuration -> the code that builds it.

Adding a *system* is configuration; adding a *product* is its folder: a package
``ledgerbridge.connectors.<connector>`` whose ``__init__`` exposes ``build(name, cfg, ctx)`` is found by its name
without an entry here (the SaaS connectors work this way). The entries below are the older connectors whose
configuration name differs from their folder or whose builder needs the flow context. Imports are lazy so a
deployment only loads the connectors it configures.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import ledgerbridge.connectors as _pkg
from ledgerbridge.errors import PermanentError


def _beancount(name: str, cfg: Any, ctx: Any) -> Any:
    from ledgerbridge.connectors.beancount_ledger import BeancountLedgerConnector

    ref = ctx.reference
    root = ctx.resolve_path(cfg.options.get("directory", f".ledgerbridge/{name}"))
    return BeancountLedgerConnector(
        root, ref.accounts, ref.entities.values(),
        currencies={e: ref.currencies for e in ref.entities},
        title=str(cfg.options.get("title", f"ledgerbridge ledger {name}")),
    )


def _file_journal(name: str, cfg: Any, ctx: Any) -> Any:
    from ledgerbridge.connectors.file_journal import FileJournalConnector

    return FileJournalConnector(
        ctx.resolve_path(cfg.options.get("outbox", f".ledgerbridge/{name}/outbox")),
        ctx.resolve_path(cfg.options.get("inbox", f".ledgerbridge/{name}/inbox")),
    )


def _psa_csv(name: str, cfg: Any, ctx: Any) -> Any:
    from ledgerbridge.connectors.psa_csv import PsaCsvSource

    status = cfg.options.get("status_file")
    return PsaCsvSource(name, ctx.resolve_path(cfg.options.get("directory", f".ledgerbridge/{name}")),
                        status_file=ctx.resolve_path(status) if status else None)


def _tryton(name: str, cfg: Any, ctx: Any) -> Any:
    from ledgerbridge.connectors.tryton import TrytonLedger

    return TrytonLedger.from_options(cfg.options, password=cfg.secret("password"), system=name)


def _redmine(name: str, cfg: Any, ctx: Any) -> Any:
    from ledgerbridge.connectors.redmine import RedmineSource

    return RedmineSource.from_options(name, cfg.options, api_key=cfg.secret("api_key"))


BUILDERS: dict[str, Callable[[str, Any, Any], Any]] = {
    "beancount": _beancount,
    "file_journal": _file_journal,
    "psa_csv": _psa_csv,
    "tryton": _tryton,
    "redmine": _redmine,
}


def available() -> list[str]:
    """Every connector name a configuration may use: the entries above plus each connector package."""
    found = {m.name for m in pkgutil.iter_modules(_pkg.__path__) if m.ispkg}
    return sorted(set(BUILDERS) | (found - {"beancount_ledger"}))


def _packaged(connector: str) -> Callable[[str, Any, Any], Any] | None:
    if not connector.isidentifier() or connector not in available():
        return None
    module = importlib.import_module(f"ledgerbridge.connectors.{connector}")
    builder = getattr(module, "build", None)
    return builder if callable(builder) else None


def build_connector(name: str, cfg: Any, ctx: Any) -> Any:
    builder = BUILDERS.get(cfg.connector) or _packaged(cfg.connector)
    if builder is None:
        raise PermanentError(
            f"system {name!r}: connector {cfg.connector!r} is unknown; available: {available()}",
            details={"system": name, "connector": cfg.connector},
        )
    return builder(name, cfg, ctx)
