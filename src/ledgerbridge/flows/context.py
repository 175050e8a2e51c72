"""What every flow needs, built once per process: configuration, the state store, reference data, the posting
rules and the connectors of the configured systems.

Reference data (legal entities, customers, projects, resources, rate cards, FX rates, chart of accounts,
dimensions, tax codes) is loaded by the master reference step (:mod:`ledgerbridge.flows.reference`) and kept in a
:class:`Reference`. Period *statuses* are never cached here: they live in the store, where closing happens, and
every flow step reads them when it starts (a job re-checks relevance when it starts).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.domain.costing import RateBook
from ledgerbridge.domain.fx import FxTable, RateDatePolicy
from ledgerbridge.domain.periods import LatePolicy, PeriodBook
from ledgerbridge.domain.posting import PostingRules
from ledgerbridge.model.entities import (
    Account,
    AccountingPeriod,
    BillingMilestone,
    Customer,
    DimensionValue,
    FxRate,
    LegalEntity,
    PeriodStatus,
    Project,
    RateCardLine,
    Resource,
    TaxCode,
)
from ledgerbridge.store import create_store_engine, migrate
from ledgerbridge.store import periods as periods_repo


@dataclass
class Reference:
    """Master and reference data the domain rules need, indexed for lookups."""

    entities: dict[str, LegalEntity] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    milestones: dict[str, BillingMilestone] = field(default_factory=dict)
    tax_codes: dict[str, TaxCode] = field(default_factory=dict)
    accounts: list[Account] = field(default_factory=list)
    dimensions: list[DimensionValue] = field(default_factory=list)
    rate_lines: list[RateCardLine] = field(default_factory=list)
    fx_rates: list[FxRate] = field(default_factory=list)
    rates: RateBook = field(default_factory=lambda: RateBook.from_lines(()))
    fx: FxTable = field(default_factory=lambda: FxTable.from_rates(()))

    @property
    def currencies(self) -> list[str]:
        """Every currency the firm deals in (functional, project and FX currencies), sorted."""
        cs = {e.functional_currency for e in self.entities.values()}
        cs |= {p.currency for p in self.projects.values()}
        cs |= {r.from_currency for r in self.fx_rates} | {r.to_currency for r in self.fx_rates}
        return sorted(cs)

    @property
    def functional_currencies(self) -> dict[str, str]:
        return {e.id: e.functional_currency for e in self.entities.values()}


class FlowContext:
    """Configuration + store engine + reference data + rules + connectors. Thread-safe lazy connector creation."""

    def __init__(self, config: LedgerbridgeConfig, *, workdir: Path | None = None,
                 reference: Reference | None = None, engine: sa.Engine | None = None) -> None:
        self.config = config
        self.workdir = Path(workdir) if workdir is not None else Path.cwd()
        self.engine = engine or create_store_engine(config.store.reveal_url())
        self.reference = reference or Reference()
        pc = config.posting_config()
        self.rules = PostingRules.from_config(pc["account_roles"], pc["posting_rules"])
        self._connectors: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ store

    def migrate(self) -> None:
        migrate(self.engine)

    def period_book(self, conn: sa.Connection) -> PeriodBook:
        """The current period statuses of every entity, read from the store now."""
        rows = periods_repo.list_periods(conn)
        return PeriodBook(
            AccountingPeriod(legal_entity_id=p.legal_entity_id, period=p.period, start_date=p.start_date,
                             end_date=p.end_date, status=PeriodStatus(p.status))
            for p in rows
        )

    # ------------------------------------------------------------------ policies

    def late_policy(self, entity: str) -> LatePolicy:
        return LatePolicy(self.config.policies.late_item.for_entity(entity))

    def rate_date_policy(self) -> RateDatePolicy:
        return RateDatePolicy(self.config.policies.fx_rate_date)

    def failure_mode(self, system: str) -> str:
        return str(self.config.policies.posting_failure_mode.for_system(system))

    # ------------------------------------------------------------------ routing and connectors

    def ledger_system(self, entity: str) -> str:
        """The configured system holding ``entity``'s ledger (routing is config, not code)."""
        return str(self.config.routing.for_entity(entity).ledger)

    def connector(self, system: str) -> Any:
        """The connector instance for a configured system, created on first use."""
        with self._lock:
            got = self._connectors.get(system)
            if got is None:
                from ledgerbridge.connectors.registry import build_connector

                got = self._connectors[system] = build_connector(system, self.config.systems[system], self)
            return got

    def reset_connectors(self) -> None:
        """Drop the built connectors (they capture reference data such as the chart): the next use rebuilds them.
        Called whenever the reference data is reloaded."""
        with self._lock:
            self._connectors = {k: v for k, v in self._connectors.items()
                                if not getattr(v, "uses_reference", True)}

    def resolve_path(self, value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.workdir / p


_current: FlowContext | None = None


def set_current(ctx: FlowContext | None) -> None:
    """Make ``ctx`` the process's context: durable workflows recovered at launch find it here."""
    global _current
    _current = ctx


def current() -> FlowContext:
    if _current is None:
        raise RuntimeError("no flow context: build one with FlowContext(...) and call flows.context.set_current()")
    return _current
