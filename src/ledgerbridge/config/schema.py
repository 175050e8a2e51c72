"""The one configuration file of ledgerbridge, as typed pydantic models (unknown keys refused everywhere).

Parsing (types, ranges, unknown keys) is done by the models; the cross-references between sections (routing names
a configured system, a posting rule names a known account role, ...) are checked by :func:`cross_check`, which
returns every problem with its exact key path. ``ledgerbridge.config.loader`` adds YAML line numbers.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PlainValidator, model_validator
from pydantic import ValidationInfo as _Info

from ledgerbridge.config.secrets import HOW, SecretRef, has_reference
from ledgerbridge.model.entities import JournalType

__all__ = [
    "AccountRoles",
    "BusConfig",
    "ConfigIssue",
    "LatePolicy",
    "LedgerbridgeConfig",
    "Limits",
    "MasterDataConfig",
    "MasterEntityRules",
    "Policies",
    "PostingFailurePolicy",
    "PostingRuleLine",
    "RateLimit",
    "RetryPolicies",
    "RetryPolicy",
    "RouteTargets",
    "Routing",
    "RuntimeConfig",
    "StoreConfig",
    "SystemConfig",
    "cross_check",
    "format_path",
    "parse_path",
]

KeyPath = tuple[str | int, ...]

SystemRole = Literal["psa", "erp", "crm", "reporting", "file"]
LateItemAction = Literal["reject", "next_open_period"]
FxRateDate = Literal["transaction_date", "period_end"]
PostingFailureMode = Literal["line_level", "all_or_nothing"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: Option keys that look like credentials: a plain value under one of these is refused (move it to ``secrets``).
SECRET_LIKE_OPTION = re.compile(
    r"^(.*[_-])?(pass|passwd|password|passphrase|secret|token|api[_-]?key|private[_-]?key|credentials?)$", re.I
)
SYSTEM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def format_path(path: KeyPath) -> str:
    """``("systems", "erp_us", "limits")`` -> ``systems.erp_us.limits``; list indexes as ``[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file: dotted key path, YAML line (1-based) when known, and the message."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path or "(file)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class _Model(BaseModel):
    # hide_input_in_errors: a ValidationError must never echo a value (it might be a pasted secret)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        """``by_entity:`` with every entry commented out is ``None`` in YAML: treat it as "use the default"."""
        if isinstance(data, dict):
            empty = [k for k, v in data.items() if v is None and k in cls.model_fields
                     and not cls.model_fields[k].is_required() and cls.model_fields[k].default is not None]
            if empty:
                data = {k: v for k, v in data.items() if k not in empty}
        return data


# --------------------------------------------------------------------------- field types


def _database_url(value: Any) -> str | SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a database URL is a non-empty string such as sqlite:///.ledgerbridge/state.sqlite")
    if has_reference(value):
        return SecretRef(value, template=True)
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        raise ValueError(
            "the URL contains a plain password; keep it out of the file with a reference, e.g. "
            "postgresql://app:${env:PGPASSWORD}@db/ledger or ${env:DATABASE_URL}"
        )
    return value


#: A SQLAlchemy URL, or a template with ``${env:...}``/``${file:...}`` references (use ``reveal_url``).
DatabaseUrl = Annotated[str | SecretRef, PlainValidator(_database_url), PlainSerializer(str)]


def _account_code(value: Any) -> Any:
    if isinstance(value, int | float):  # bool is an int
        raise ValueError(f'account codes are text: quote it ("{value}") so leading zeros and formatting survive')
    return value


AccountCode = Annotated[str, BeforeValidator(_account_code)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def reveal_url(url: str | SecretRef) -> str:
    return url.reveal() if isinstance(url, SecretRef) else url


# --------------------------------------------------------------------------- sections


class StoreConfig(_Model):
    """The state store (xref, cursors, inbox, staging, audit). SQLite by default, PostgreSQL by URL."""

    url: DatabaseUrl = "sqlite:///.ledgerbridge/state.sqlite"

    def reveal_url(self) -> str:
        return reveal_url(self.url)


class RuntimeConfig(_Model):
    """DBOS durable-execution settings."""

    system_database_url: DatabaseUrl = "sqlite:///.ledgerbridge/dbos.sqlite"
    #: ``None`` = the runtime's own pinned default (``<package version>+wf<N>``, never DBOS's source hash).
    application_version: str | None = Field(default=None, min_length=1)
    executor_id: str = Field(default="local", min_length=1)
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    #: How often a worker looks for queued work (seconds). Lower = less latency per event (the near-real-time
    #: path: webhook -> subscription chain -> target) for more polling of the system database when idle.
    queue_polling_interval_seconds: float = Field(default=1.0, gt=0, le=60)

    def reveal_system_database_url(self) -> str:
        return reveal_url(self.system_database_url)

    def to_runtime(self) -> Any:
        """A ``ledgerbridge.runtime.RuntimeSettings`` (the database URL's references resolved here)."""
        from ledgerbridge.runtime.settings import RuntimeSettings

        settings = RuntimeSettings(system_database_url=self.reveal_system_database_url(),
                                   executor_id=self.executor_id, log_level=self.log_level,
                                   queue_polling_interval_sec=self.queue_polling_interval_seconds)
        if self.application_version is not None:
            settings = dataclasses.replace(settings, application_version=self.application_version)
        return settings


class BusConfig(_Model):
    """NATS JetStream event ingest (distributed mode). Absent = embedded default: the database inbox."""

    url: str = Field(default="nats://127.0.0.1:4222", pattern=r"^(nats|tls)://")
    stream: str = Field(default="LB_IN", pattern=r"^[A-Za-z0-9_-]+$")
    subject_prefix: str = Field(default="lb.in", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    #: JetStream drops a message whose ``Nats-Msg-Id`` (the inbox idempotency key) it saw within this window.
    duplicate_window_seconds: int = Field(default=120, ge=1)
    consumer: str = Field(default="lb-inbox", pattern=r"^[A-Za-z0-9_-]+$")
    #: Deliveries before a message that still cannot be landed becomes an operational dead letter.
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_seconds: int = Field(default=30, ge=1)
    fetch_batch: int = Field(default=500, ge=1, le=10000)
    storage: Literal["file", "memory"] = "file"
    max_bytes: int | None = Field(default=None, ge=1)


class RateLimit(_Model):
    """At most ``limit`` calls per ``period_seconds``; ledgerbridge uses ``headroom`` of it (0.8 = 80%)."""

    limit: int = Field(ge=1)
    period_seconds: Decimal = Field(gt=0)
    headroom: Decimal = Field(default=Decimal("0.8"), gt=0, le=1)

    @property
    def effective_limit(self) -> int:
        """Calls per period after headroom, never below 1."""
        return max(1, int(self.limit * self.headroom))


class Limits(_Model):
    concurrency: int = Field(default=1, ge=1)
    rate: RateLimit | None = None


class SystemConfig(_Model):
    """A configured instance of a product (``connector``) playing one ``role``."""

    connector: str = Field(min_length=1)
    role: SystemRole
    options: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    batch_size: int = Field(default=500, ge=1)

    def secret(self, name: str) -> str:
        """The clear value of secret ``name`` (explicit resolution; raises with the key path when unresolvable)."""
        try:
            ref = self.secrets[name]
        except KeyError:
            raise KeyError(f"no secret named {name!r}; configured: {sorted(self.secrets) or 'none'}") from None
        return ref.reveal()


ROUTE_KEYS = ("ledger", "invoices", "customers", "projects", "resources", "time", "expenses", "milestones", "reporting")


class RouteTargets(_Model):
    """Which configured system plays each part for a legal entity. ``None`` = not routed."""

    ledger: str | None = None
    invoices: str | None = None
    customers: str | None = None
    projects: str | None = None
    resources: str | None = None
    time: str | None = None
    expenses: str | None = None
    milestones: str | None = None
    reporting: str | None = None


class Routing(_Model):
    default: RouteTargets = Field(default_factory=RouteTargets)
    by_entity: dict[str, RouteTargets] = Field(default_factory=dict)

    def for_entity(self, legal_entity_id: str) -> RouteTargets:
        """The default targets with the entity's overrides applied."""
        override = self.by_entity.get(legal_entity_id)
        if override is None:
            return self.default
        merged = self.default.model_dump()
        merged.update({k: v for k, v in override.model_dump().items() if v is not None})
        return RouteTargets(**merged)


class AccountRoles(_Model):
    """Role -> account code; ``by_entity`` overrides single roles for one legal entity."""

    default: dict[str, AccountCode] = Field(default_factory=dict)
    by_entity: dict[str, dict[str, AccountCode]] = Field(default_factory=dict)

    def account(self, role: str, legal_entity_id: str | None = None) -> str:
        if legal_entity_id is not None and role in self.by_entity.get(legal_entity_id, {}):
            return self.by_entity[legal_entity_id][role]
        try:
            return self.default[role]
        except KeyError:
            raise KeyError(f"unknown account role {role!r}; known: {', '.join(sorted(self.default))}") from None


class PostingRuleLine(_Model):
    """One balanced debit/credit pair on one named amount component of a posting."""

    debit: str
    credit: str
    amount: str
    dimensions: list[str] = Field(default_factory=list)


class LatePolicy(_Model):
    """What happens to an item whose period is closed: ``reject`` (financial dead letter) or
    ``next_open_period`` (posted into the next open period, the redating recorded)."""

    default: LateItemAction = "reject"
    by_entity: dict[str, LateItemAction] = Field(default_factory=dict)

    def for_entity(self, legal_entity_id: str) -> LateItemAction:
        return self.by_entity.get(legal_entity_id, self.default)


class RetryPolicy(_Model):
    """Retry of transient errors: up to ``max_attempts`` calls; the wait after failure *n* is
    ``min(interval_seconds * backoff_rate ** (n - 1), max_interval_seconds)``. Rate-limited waits are not failures:
    at most ``max_rate_limit_waits`` of them, ``rate_limit_budget_seconds`` in total. Same fields and defaults as
    ``ledgerbridge.runtime.RetryPolicy`` (see :meth:`to_runtime`)."""

    max_attempts: int = Field(default=5, ge=1)
    interval_seconds: Decimal = Field(default=Decimal(1), ge=0)
    backoff_rate: Decimal = Field(default=Decimal(2), ge=1)
    max_interval_seconds: Decimal = Field(default=Decimal(60), ge=0)
    max_rate_limit_waits: int = Field(default=20, ge=0)
    rate_limit_budget_seconds: Decimal = Field(default=Decimal(900), ge=0)

    def to_runtime(self) -> Any:
        """The runtime's ``RetryPolicy`` (seconds as float there: these are durations, not money)."""
        from ledgerbridge.runtime.settings import RetryPolicy as RuntimeRetryPolicy

        return RuntimeRetryPolicy(
            max_attempts=self.max_attempts, interval_seconds=float(self.interval_seconds),
            backoff_rate=float(self.backoff_rate), max_interval_seconds=float(self.max_interval_seconds),
            max_rate_limit_waits=self.max_rate_limit_waits,
            rate_limit_budget_seconds=float(self.rate_limit_budget_seconds),
        )

    @model_validator(mode="after")
    def _cap(self) -> RetryPolicy:
        if self.max_interval_seconds < self.interval_seconds:
            raise ValueError("max_interval_seconds is below interval_seconds: raise the cap or lower the interval")
        return self


class RetryPolicies(_Model):
    default: RetryPolicy = Field(default_factory=RetryPolicy)
    by_type: dict[str, RetryPolicy] = Field(default_factory=dict)

    def for_type(self, txn_type: str) -> RetryPolicy:
        return self.by_type.get(txn_type, self.default)


class PostingFailurePolicy(_Model):
    """When a line of a posting batch is refused by the target: ``all_or_nothing`` (the whole batch waits) or
    ``line_level`` (good lines post, bad lines go to the financial dead letter)."""

    default: PostingFailureMode = "all_or_nothing"
    by_system: dict[str, PostingFailureMode] = Field(default_factory=dict)

    def for_system(self, system: str) -> PostingFailureMode:
        return self.by_system.get(system, self.default)


class Policies(_Model):
    late_item: LatePolicy = Field(default_factory=LatePolicy)
    fx_rate_date: FxRateDate = "transaction_date"
    retry: RetryPolicies = Field(default_factory=RetryPolicies)
    posting_failure_mode: PostingFailurePolicy = Field(default_factory=PostingFailurePolicy)


class MasterEntityRules(_Model):
    """Source-of-truth rules of one master entity type (see docs/sync-master-data.md). Authorities and targets
    name a configured system or a role (``psa``, ``erp`` ...)."""

    authority: str = "psa"  # every field not listed in ``fields``
    fields: dict[str, str] = Field(default_factory=dict)  # field -> system or role
    required: list[str] = Field(default_factory=list)
    dimensions: dict[str, str] = Field(default_factory=dict)  # field -> dimension checked for the legal entity
    legal_entity_field: str | None = None
    propagate_to: list[str] = Field(default_factory=list)  # systems that receive propagated changes


class MasterDataConfig(_Model):
    entities: dict[str, MasterEntityRules] = Field(default_factory=dict)

    def rules(self, system_roles: dict[str, str]) -> Any:
        """The domain's ``MasterRules`` (raises ``DomainError`` naming the key when a rule is inconsistent)."""
        from ledgerbridge.domain.masterdata import MasterRules

        return MasterRules.from_config(self.model_dump(mode="json")["entities"], system_roles)


# --------------------------------------------------------------------------- subscriptions and schedules
# (flows/subscriptions.py, flows/schedules.py; docs/sync-events.md, docs/schedules.md)

SUBSCRIPTION_NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"


class CompensationConfig(_Model):
    """What undoes a completed action when a later one fails for good (saga): an action kind and its options."""

    kind: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class SubscriptionAction(_Model):
    """One action of a subscription: a registered kind (``create_erp_project``, ``set_crm_status``, ``webhook``,
    ``mart``, ``log``, ...), its options, its own retry policy and an optional compensation."""

    name: str = Field(min_length=1, pattern=SUBSCRIPTION_NAME)
    kind: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    compensate: CompensationConfig | None = None


class SubscriptionConfig(_Model):
    """Event type -> actions, run in order (``ordered``) or all at once (``parallel``) for every matching event;
    events with the same ``key`` (a dotted path into the event, e.g. ``project.id``) are processed one at a time,
    in arrival order."""

    name: str = Field(min_length=1, pattern=SUBSCRIPTION_NAME)
    event: str = Field(min_length=1)
    key: str = Field(min_length=1)
    mode: Literal["ordered", "parallel"] = "ordered"
    actions: list[SubscriptionAction] = Field(min_length=1)


class ScheduleConfig(_Model):
    """A cron window for one flow (DBOS schedule rows). ``overlap``: ``skip`` a tick while the previous window
    still runs, or ``queue`` it behind."""

    name: str = Field(min_length=1, pattern=SUBSCRIPTION_NAME)
    flow: Literal["ingest", "post", "billing", "reconcile"]
    cron: str = Field(min_length=1)
    overlap: Literal["skip", "queue"] = "skip"
    timezone: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class AlertRule(_Model):
    """One alert rule (flows/alerts.py): fires when ``metric`` compared with ``threshold`` by ``op`` holds for
    ``for_minutes`` (0 = at once); notifies the rule's ``webhook_url`` (else ``alerts.webhook_url``, else the log)
    and links its runbook (default: the metric's page under ``alerts.runbook_base``)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    metric: str = Field(min_length=1)
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: Decimal
    for_minutes: float = Field(default=0, ge=0)
    severity: Literal["warning", "critical"] = "warning"
    runbook: str | None = None
    webhook_url: str | None = None


class AlertsConfig(_Model):
    """Business alerts: rules, where they go, and the thresholds the metrics use (stale data, posting SLA)."""

    webhook_url: str | None = None
    runbook_base: str = "docs/runbooks"
    stale_after_hours: float = Field(default=24, gt=0)
    stale_after_hours_by_domain: dict[str, float] = Field(default_factory=dict)
    posting_sla_hours: float = Field(default=72, gt=0)
    rules: list[AlertRule] = Field(default_factory=list)


class LedgerbridgeConfig(_Model):
    """The whole configuration file."""

    version: Literal[1] = 1
    store: StoreConfig = Field(default_factory=StoreConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    routing: Routing = Field(default_factory=Routing)
    account_roles: AccountRoles = Field(default_factory=AccountRoles)
    posting_rules: dict[str, list[PostingRuleLine]] = Field(default_factory=dict)
    policies: Policies = Field(default_factory=Policies)
    mappings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    master_data: MasterDataConfig = Field(default_factory=MasterDataConfig)
    bus: BusConfig | None = None
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    schedules: list[ScheduleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bind_and_check(self, info: _Info) -> LedgerbridgeConfig:
        ctx = info.context or {}
        base_dir = ctx.get("base_dir")
        for path, ref in self.secret_refs():
            ref.bind(format_path(path), Path(base_dir) if base_dir else None)
        if not ctx.get("skip_cross_check"):
            issues = cross_check(self)
            if issues:
                raise ValueError("; ".join(f"{format_path(p)}: {m}" for p, m in issues))
        return self

    def queue_specs(self) -> dict[str, Any]:
        """One ``ledgerbridge.runtime.QueueSpec`` per system (name = system name), from its ``limits``."""
        from ledgerbridge.runtime.settings import QueueSpec

        out: dict[str, Any] = {}
        for name, system in self.systems.items():
            rate = system.limits.rate
            out[name] = QueueSpec(
                name=name, concurrency=system.limits.concurrency,
                rate_limit=None if rate is None else rate.limit,
                period_seconds=1.0 if rate is None else float(rate.period_seconds),
                headroom=0.8 if rate is None else float(rate.headroom),
            )
        return out

    def secret_refs(self) -> list[tuple[KeyPath, SecretRef]]:
        """Every secret reference in the configuration with its key path."""
        out: list[tuple[KeyPath, SecretRef]] = []
        if isinstance(self.store.url, SecretRef):
            out.append((("store", "url"), self.store.url))
        if isinstance(self.runtime.system_database_url, SecretRef):
            out.append((("runtime", "system_database_url"), self.runtime.system_database_url))
        for name, system in self.systems.items():
            for key, ref in system.secrets.items():
                out.append((("systems", name, "secrets", key), ref))
        return out

    def posting_config(self) -> dict[str, Any]:
        """``account_roles`` and ``posting_rules`` as plain data, in the shape of the posting-rule contract."""
        return self.model_dump(mode="json", include={"account_roles", "posting_rules"})


# --------------------------------------------------------------------------- cross references


def cross_check(cfg: LedgerbridgeConfig) -> list[tuple[KeyPath, str]]:
    """Every cross-reference problem as ``(key path, message)`` pairs (empty when consistent)."""
    problems: list[tuple[KeyPath, str]] = []
    systems = sorted(cfg.systems)
    known = ", ".join(systems) or "none configured"

    for name, system in cfg.systems.items():
        if not SYSTEM_NAME.match(name):
            problems.append((("systems", name), "system names start with a letter and use letters, digits, _ "
                             "or - only (they become part of idempotency keys, where ':' separates fields)"))
        for key, value in system.options.items():
            if SECRET_LIKE_OPTION.search(key) and isinstance(value, str | int) and value not in ("", True, False):
                problems.append((("systems", name, "options", key),
                                 f"looks like a credential; move it under systems.{name}.secrets and {HOW}"))

    def check_targets(targets: RouteTargets, base: KeyPath) -> None:
        for key in ROUTE_KEYS:
            target = getattr(targets, key)
            if target is not None and target not in cfg.systems:
                problems.append(((*base, key), f"unknown system {target!r}; configured systems: {known}"))

    check_targets(cfg.routing.default, ("routing", "default"))
    for entity, targets in cfg.routing.by_entity.items():
        check_targets(targets, ("routing", "by_entity", entity))

    roles = cfg.account_roles.default
    role_list = ", ".join(sorted(roles)) or "none defined"
    for role, code in roles.items():
        if not code.strip():
            problems.append((("account_roles", "default", role), "empty account code"))
    for entity, overrides in cfg.account_roles.by_entity.items():
        for role, code in overrides.items():
            path: KeyPath = ("account_roles", "by_entity", entity, role)
            if role not in roles:
                problems.append((path, f"override of unknown account role {role!r}; add it to account_roles.default "
                                       f"first (known roles: {role_list})"))
            elif not code.strip():
                problems.append((path, "empty account code"))

    txn_types = sorted(t.value for t in JournalType)
    for txn_type, lines in cfg.posting_rules.items():
        if txn_type not in txn_types:
            problems.append((("posting_rules", txn_type), f"{txn_type!r} is not a transaction (journal) type; use one "
                                                          f"of: {', '.join(txn_types)}"))
        if not lines:
            problems.append((("posting_rules", txn_type), "a posting rule needs at least one debit/credit line"))
        for i, line in enumerate(lines):
            base: KeyPath = ("posting_rules", txn_type, i)
            for side in ("debit", "credit"):
                role = getattr(line, side)
                if not role.strip():
                    problems.append(((*base, side), f"empty {side} account role"))
                elif role not in roles:
                    problems.append(((*base, side), f"unknown account role {role!r}; define it under "
                                                    f"account_roles.default (known roles: {role_list})"))
            if line.debit and line.debit == line.credit:
                problems.append((base, f"debit and credit are the same role {line.debit!r}: the line has no effect"))
            if not line.amount.strip():
                problems.append(((*base, "amount"), "empty amount component: name the posting amount (e.g. cost, "
                                                    "net, tax)"))
            for k, dim in enumerate(line.dimensions):
                if not dim.strip():
                    problems.append(((*base, "dimensions", k), "empty dimension name"))
            seen: set[str] = set()
            for k, dim in enumerate(line.dimensions):
                if dim in seen:
                    problems.append(((*base, "dimensions", k), f"dimension {dim!r} listed twice"))
                seen.add(dim)

    for target in cfg.policies.posting_failure_mode.by_system:
        if target not in cfg.systems:
            problems.append((("policies", "posting_failure_mode", "by_system", target),
                             f"unknown system {target!r}; configured systems: {known}"))
    problems.extend(_master_data_check(cfg))
    problems.extend(_events_check(cfg))
    if not problems:
        problems.extend(_domain_check(cfg))
    return problems


def _events_check(cfg: LedgerbridgeConfig) -> list[tuple[KeyPath, str]]:
    """Subscriptions and schedules (flows/subscriptions.py, flows/schedules.py check their own vocabulary)."""
    if not cfg.subscriptions and not cfg.schedules:
        return []
    from ledgerbridge.flows.schedules import check_schedules
    from ledgerbridge.flows.subscriptions import check_subscriptions

    return check_subscriptions(cfg) + check_schedules(cfg)


def _master_data_check(cfg: LedgerbridgeConfig) -> list[tuple[KeyPath, str]]:
    from ledgerbridge.domain.errors import DomainError

    try:
        cfg.master_data.rules({name: sc.role for name, sc in cfg.systems.items()})
    except DomainError as exc:
        return [(parse_path(exc.item), f"{exc.message} ({exc.rule}); fix: {exc.fix}")]
    return []


def _domain_check(cfg: LedgerbridgeConfig) -> list[tuple[KeyPath, str]]:
    """Let the domain parse the posting rules too, so a file that validates is one the domain accepts."""
    from ledgerbridge.domain.errors import DomainError
    from ledgerbridge.domain.posting import PostingRules

    data = cfg.posting_config()
    if not data["posting_rules"] and not data["account_roles"]["default"]:
        return []  # nothing configured yet (a partial file); nothing to post with
    try:
        PostingRules.from_config(data["account_roles"], data["posting_rules"])
    except DomainError as exc:
        return [(parse_path(exc.item.removeprefix("posting config ")), f"{exc.message} ({exc.rule}); fix: {exc.fix}")]
    return []


def parse_path(text: str) -> KeyPath:
    """Inverse of :func:`format_path`: ``posting_rules.invoice[1].credit`` -> ``("posting_rules", "invoice", 1,
    "credit")``."""
    out: list[str | int] = []
    for part in text.split("."):
        m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", part)
        if m is None:
            out.append(part)
            continue
        if m.group(1):
            out.append(m.group(1))
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(out)
