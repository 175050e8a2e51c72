"""Plain settings records for the durable runtime (no DBOS import here).

- :class:`RuntimeSettings`: where the system database lives, the pinned application version, the executor id;
- :class:`QueueSpec`: one queue per target system (concurrency, rate limit with headroom, partitioning);
- :class:`RetryPolicy`: how one transaction type is retried (backoff for transient errors, a wait budget for
  rate limits).

All three are frozen dataclasses validated on construction; each has ``from_dict`` so the config layer can build
them from YAML without knowing anything about DBOS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self, TypeVar

from ledgerbridge import __version__

#: Bump when a workflow's step sequence changes incompatibly. Pending workflows are only recovered by a process
#: whose application version equals theirs, so the version must change only when old checkpoints can no longer be
#: replayed by the new code (see docs/runtime.md, "Recovery rules").
WORKFLOW_SCHEMA_VERSION = 1

#: The pinned application version: package version + workflow schema number (NOT DBOS's source hash, which would
#: change on every code edit or DBOS upgrade and strand pending workflows).
DEFAULT_APPLICATION_VERSION = f"{__version__}+wf{WORKFLOW_SCHEMA_VERSION}"

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


_T = TypeVar("_T")


def _from_mapping(cls: type[_T], data: Mapping[str, Any], what: str) -> _T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {unknown}; allowed: {sorted(known)}")
    return cls(**dict(data))


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How the durable runtime connects and identifies itself.

    ``system_database_url``: ``sqlite:///path`` (WAL + synchronous=NORMAL are applied) or
    ``postgresql://user@host:port/db`` (DBOS creates its schema there).
    ``application_version`` and ``executor_id`` must stay the same across a restart for pending workflows to be
    recovered (recovery only takes workflows whose executor id and version both match).
    """

    system_database_url: str = "sqlite:///.ledgerbridge/dbos.sqlite"
    app_name: str = "ledgerbridge"
    application_version: str = DEFAULT_APPLICATION_VERSION
    executor_id: str = "local"
    log_level: str = "INFO"
    sqlite_wal: bool = True
    notification_polling_interval_sec: float = 1.0
    queue_polling_interval_sec: float = 1.0
    scheduler_polling_interval_sec: float = 30.0
    sys_db_pool_size: int | None = None

    def __post_init__(self) -> None:
        url = self.system_database_url
        if not (url.startswith("sqlite:///") or url.startswith("postgresql")):
            raise ValueError(
                f"runtime.system_database_url {url!r} is not supported: use sqlite:///path/to/file.sqlite or "
                "postgresql://user@host:5432/dbname"
            )
        if len(self.app_name) < 3:
            raise ValueError(f"runtime.app_name {self.app_name!r} must be at least 3 characters (DBOS rule)")
        if not self.application_version.strip():
            raise ValueError("runtime.application_version must not be empty: pin it so restarts recover work")
        if not self.executor_id.strip():
            raise ValueError("runtime.executor_id must not be empty: give each worker a fixed id")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"runtime.log_level {self.log_level!r} must be one of {_LOG_LEVELS}")
        for name in ("notification_polling_interval_sec", "queue_polling_interval_sec",
                     "scheduler_polling_interval_sec"):
            value = getattr(self, name)
            if not (value >= 0.001 and math.isfinite(value)):
                raise ValueError(f"runtime.{name} must be a number of seconds >= 0.001, got {value!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.system_database_url.startswith("sqlite")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, data, "runtime settings")


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One durable queue, typically one per target system (``"netsuite"``, ``"xero"``...).

    - ``concurrency``: at most this many workflows from the queue run at once (per worker AND across workers —
      both DBOS ``worker_concurrency`` and ``global_concurrency`` are set, so the thread pool stays bounded).
    - ``rate_limit`` / ``period_seconds``: the target's documented limit, e.g. 60 per 60 s for Xero. The runtime
      applies ``headroom``: the effective limit is ``max(1, floor(rate_limit * headroom))`` starts per period.
    - ``partitioned``: every enqueue must name a partition key (e.g. the project id). Each partition runs at most
      ``partition_concurrency`` workflows at once (default 1, so work for one project keeps its order) while the
      queue-wide concurrency and rate limit still hold.
    """

    name: str
    concurrency: int
    rate_limit: int | None = None
    period_seconds: float = 1.0
    headroom: float = 0.8
    partitioned: bool = False
    partition_concurrency: int = 1

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"queue name {self.name!r} must be non-empty letters, digits, '-', '_' or '.'")
        if self.concurrency < 1:
            raise ValueError(f"queue {self.name}: concurrency must be >= 1, got {self.concurrency}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"queue {self.name}: rate_limit must be >= 1 or empty (no limit), got {self.rate_limit}")
        if not (self.period_seconds > 0 and math.isfinite(self.period_seconds)):
            raise ValueError(f"queue {self.name}: period_seconds must be > 0, got {self.period_seconds}")
        if not (0 < self.headroom <= 1):
            raise ValueError(f"queue {self.name}: headroom must be in (0, 1], got {self.headroom} (0.8 = use 80%)")
        if self.partition_concurrency < 1:
            raise ValueError(f"queue {self.name}: partition_concurrency must be >= 1, got {self.partition_concurrency}")

    @property
    def effective_rate_limit(self) -> int | None:
        """Starts allowed per period after headroom: ``max(1, floor(rate_limit * headroom))``."""
        if self.rate_limit is None:
            return None
        # round() first so 10 * 0.9 == 9 is not floored to 8 by binary floating point.
        return max(1, math.floor(round(self.rate_limit * self.headroom, 9)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, data, f"queue {data.get('name', '?')}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry rules for one transaction type (e.g. reads, master-data upserts, invoice posts).

    - Transient errors: up to ``max_attempts`` calls in total; the wait after failed call *n* (1-based) is
      ``min(interval_seconds * backoff_rate ** (n - 1), max_interval_seconds)``, or the target's ``Retry-After`` if
      that is longer (capped at ``max_interval_seconds``).
    - Rate-limited errors: wait exactly ``retry_after`` (or the backoff above when the target gives none); these
      waits are NOT failed attempts, but at most ``max_rate_limit_waits`` of them, totalling at most
      ``rate_limit_budget_seconds``, are made; a longer ``Retry-After`` fails at once with ``LB-X002`` (carrying
      ``retry_after``) so the caller can reschedule instead of holding a worker.
    - Permanent, validation and conflict errors are never retried.
    """

    max_attempts: int = 5
    interval_seconds: float = 1.0
    backoff_rate: float = 2.0
    max_interval_seconds: float = 60.0
    max_rate_limit_waits: int = 20
    rate_limit_budget_seconds: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"retry policy: max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("interval_seconds", "max_interval_seconds", "rate_limit_budget_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"retry policy: {name} must be a finite number >= 0, got {value!r}")
        if not (self.backoff_rate >= 1 and math.isfinite(self.backoff_rate)):
            raise ValueError(f"retry policy: backoff_rate must be >= 1, got {self.backoff_rate!r}")
        if self.max_rate_limit_waits < 0:
            raise ValueError(f"retry policy: max_rate_limit_waits must be >= 0, got {self.max_rate_limit_waits}")

    def backoff(self, failures: int) -> float:
        """Wait after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        try:
            raw = self.interval_seconds * self.backoff_rate ** (failures - 1)
        except OverflowError:
            raw = math.inf
        return min(raw, self.max_interval_seconds)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, data, "retry policy")


#: A sensible default for API calls to an ERP/PSA: 5 attempts, 1 s doubling to at most 60 s, 15 min rate budget.
DEFAULT_RETRY_POLICY = RetryPolicy()
