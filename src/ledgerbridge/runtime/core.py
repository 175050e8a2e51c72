"""DBOS behind a thin interface: launch/shutdown, workflow and step decorators, starting and enqueueing workflows,
queues from :class:`QueueSpec`, and management helpers returning plain dicts.

Nothing outside ``ledgerbridge.runtime`` imports ``dbos``. DBOS keeps one global instance per process and registers
workflows when their module is imported, so: define workflows at module level with :func:`workflow`, import those
modules before :meth:`Runtime.launch` (recovery of pending workflows happens during launch and needs them
registered), and launch once per process.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from dbos import DBOS, SetEnqueueOptions, SetWorkflowID
from dbos._core import prepare_enqueued_workflow
from dbos._dbos import _get_dbos_instance
from dbos._error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSException,
    DBOSNonExistentWorkflowError,
)
from dbos._logger import dbos_logger
from sqlalchemy import event

from ledgerbridge.errors import LedgerbridgeError
from ledgerbridge.runtime.serialization import LedgerbridgeJSONSerializer
from ledgerbridge.runtime.settings import QueueSpec, RuntimeSettings

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("ledgerbridge.runtime")
#: DBOS's own log records are re-emitted on this logger; DBOS INFO chatter is demoted to DEBUG.
DBOS_LOGGER_NAME = "ledgerbridge.runtime.dbos"

#: Workflow statuses as DBOS stores them.
STATUSES = ("ENQUEUED", "DELAYED", "PENDING", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
_FINAL_STATUSES = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


class RuntimeNotLaunchedError(RuntimeError):
    """A runtime function needing the system database was called before :meth:`Runtime.launch`."""


class RuntimeLaunchError(RuntimeError):
    """The system database could not be opened at launch (message names the URL without password and the fix)."""


class WorkflowNotFinishedError(RuntimeError):
    """:func:`result` was asked for a workflow that was cancelled or gave up recovering; ``status`` says which."""

    def __init__(self, workflow_id: str, status: str) -> None:
        fix = "resume it with resume(id) or fork it from a step" if status != "UNKNOWN" else "check the id"
        super().__init__(f"workflow {workflow_id} has no result: status {status} — {fix}")
        self.workflow_id = workflow_id
        self.status = status


# ---------------------------------------------------------------------------------------------------------------------
# logging
# ---------------------------------------------------------------------------------------------------------------------


class _DbosLogForwarder(logging.Handler):
    """Re-emits DBOS records on ``ledgerbridge.runtime.dbos`` (so structlog/stdlib config applies), INFO -> DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger(DBOS_LOGGER_NAME)
        level = logging.DEBUG if record.levelno == logging.INFO else record.levelno
        if not target.isEnabledFor(level):
            return
        record.levelno = level
        record.levelname = logging.getLevelName(level)
        record.name = DBOS_LOGGER_NAME
        target.handle(record)


def _route_dbos_logging() -> None:
    for handler in list(dbos_logger.handlers):
        if not isinstance(handler, _DbosLogForwarder):
            dbos_logger.removeHandler(handler)
    if not any(isinstance(h, _DbosLogForwarder) for h in dbos_logger.handlers):
        # DBOS adds its own console handler only when the logger has none, so ours must be in place first.
        dbos_logger.addHandler(_DbosLogForwarder())
    dbos_logger.propagate = False


# ---------------------------------------------------------------------------------------------------------------------
# system database
# ---------------------------------------------------------------------------------------------------------------------


_PLAIN_SQLITE = sqlite3.connect(":memory:", check_same_thread=False)
_PLAIN_SQLITE_LOCK = threading.Lock()


def _strftime_subsecond_now(fmt: Any, *args: Any) -> Any:
    """``strftime('%s', 'now')`` with millisecond precision; every other call is answered by SQLite itself.

    DBOS 3.4 on Python < 3.12 stamps ``created_at``/``started_at`` and evaluates its queue rate-limit window with
    ``strftime('%s','now') * 1000`` — whole seconds. That turns a 0.5 s limiter period into 1 s, aligns windows to
    calendar seconds (a burst at x.999 and another at x+1.000) and orders same-second enqueues by id. SQLite lets a
    connection override a built-in function, so the system-database engine gets this one.
    """
    if fmt == "%s" and args == ("now",):
        return round(time.time(), 3)
    with _PLAIN_SQLITE_LOCK:
        placeholders = ", ".join("?" for _ in range(len(args) + 1))
        return _PLAIN_SQLITE.execute(f"SELECT strftime({placeholders})", (fmt, *args)).fetchone()[0]


def sqlite_engine(url: str, *, wal: bool = True, pool_size: int | None = None) -> sa.Engine:
    """A SQLite engine as DBOS builds it (IMMEDIATE transactions, 30 s busy timeout, foreign keys) plus, when
    ``wal``, ``journal_mode=WAL`` and ``synchronous=NORMAL`` (about 2x the workflows/s of DBOS's default; a power
    loss may drop the last committed transactions but never corrupts the file)."""
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.create_function("strftime", -1, _strftime_subsecond_now)
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        if wal:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


# ---------------------------------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------------------------------


class Runtime:
    """The process-wide durable runtime (DBOS allows one per process)."""

    _current: Runtime | None = None
    _lock = threading.Lock()

    def __init__(self, settings: RuntimeSettings, engine: sa.Engine | None) -> None:
        self.settings = settings
        self._engine = engine
        self.queues: dict[str, QueueSpec] = {}

    @classmethod
    def launch(
        cls,
        settings: RuntimeSettings | None = None,
        *,
        queues: Iterable[QueueSpec] = (),
        reset: bool = False,
    ) -> Runtime:
        """Start DBOS: create/migrate the system database, recover this executor's pending workflows (same
        ``executor_id`` and ``application_version``), start queue workers, then register ``queues``.

        ``reset=True`` empties the system database first (tests only: it deletes every checkpoint).
        Import the modules defining your workflows before calling this.
        """
        settings = settings or RuntimeSettings()
        with cls._lock:
            if cls._current is not None:
                raise RuntimeError("the ledgerbridge runtime is already launched in this process; call "
                                   "Runtime.shutdown() first (DBOS allows one runtime per process)")
            _route_dbos_logging()
            DBOS.destroy()  # drop a stale, never-launched instance; keeps workflow registrations
            engine = (
                sqlite_engine(settings.system_database_url, wal=settings.sqlite_wal,
                              pool_size=settings.sys_db_pool_size)
                if settings.is_sqlite
                else None
            )
            config: dict[str, Any] = {
                "name": settings.app_name,
                "system_database_url": settings.system_database_url,
                "application_version": settings.application_version,
                "executor_id": settings.executor_id,
                "log_level": settings.log_level.upper(),
                "serializer": LedgerbridgeJSONSerializer(),
                "notification_listener_polling_interval_sec": settings.notification_polling_interval_sec,
                "scheduler_polling_interval_sec": settings.scheduler_polling_interval_sec,
                "enable_otlp": False,
            }
            if engine is not None:
                config["system_database_engine"] = engine
            if settings.sys_db_pool_size is not None:
                config["sys_db_pool_size"] = settings.sys_db_pool_size
            try:
                DBOS(config=config)  # type: ignore[arg-type]
                if reset:
                    DBOS.reset_system_database(truncate=True)
                DBOS.launch()
            except BaseException as exc:
                DBOS.destroy()
                if engine is not None:
                    engine.dispose()
                if isinstance(exc, sa.exc.SQLAlchemyError | OSError):
                    safe_url = sa.make_url(settings.system_database_url).render_as_string(hide_password=True)
                    reason = str(exc).splitlines()[0]
                    raise RuntimeLaunchError(
                        f"runtime.system_database_url {safe_url}: cannot open the runtime's system database "
                        f"({reason}) — check the URL, that the server runs and that the account may create a schema"
                    ) from exc
                raise
            runtime = cls(settings, engine)
            cls._current = runtime
        log.debug("runtime launched", extra={"executor_id": settings.executor_id,
                                            "application_version": settings.application_version})
        if queues:
            register_queues(queues)
        return runtime

    @classmethod
    def shutdown(cls, *, workflow_completion_timeout_sec: int = 0) -> None:
        """Stop DBOS (running workflows stay PENDING and are recovered by the next launch with the same
        executor id and version). Safe to call when not launched."""
        with cls._lock:
            current, cls._current = cls._current, None
            _route_dbos_logging()
            DBOS.destroy(workflow_completion_timeout_sec=workflow_completion_timeout_sec)
            if current is not None and current._engine is not None:
                current._engine.dispose()

    @classmethod
    def current(cls) -> Runtime:
        """The launched runtime, or :class:`RuntimeNotLaunchedError`."""
        runtime = cls._current
        if runtime is None:
            raise RuntimeNotLaunchedError("the ledgerbridge runtime is not launched: call Runtime.launch(settings)")
        return runtime

    @classmethod
    def is_launched(cls) -> bool:
        return cls._current is not None


# ---------------------------------------------------------------------------------------------------------------------
# decorators and starting work
# ---------------------------------------------------------------------------------------------------------------------


def workflow(name: str | None = None, *, max_recovery_attempts: int | None = None) -> Callable[[Callable[P, R]],
                                                                                           Callable[P, R]]:
    """Declare a durable workflow (at module level, imported before launch). Its arguments and result must be
    plain JSON data. ``name`` defaults to the function's qualified name; keep it stable across releases."""
    kwargs: dict[str, Any] = {"name": name}
    if max_recovery_attempts is not None:
        kwargs["max_recovery_attempts"] = max_recovery_attempts
    return DBOS.workflow(**kwargs)


def step(name: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a checkpointed step (one committed transaction in the system database). Finished steps never run
    again after a crash; the step in flight does, so every external write inside needs its own idempotency key.
    Retries: call through :func:`ledgerbridge.runtime.call_with_policy` rather than DBOS's retry options."""
    return DBOS.step(name=name)


def start(fn: Callable[P, R], *args: Any, workflow_id: str | None = None, **kwargs: Any) -> str:
    """Start workflow ``fn`` in the background now (no queue); returns its workflow id.

    ``workflow_id`` is the idempotency key: starting the same id again does not run it twice (the first run's
    result is kept, even if the arguments differ)."""
    Runtime.current()
    if workflow_id is not None:
        with SetWorkflowID(workflow_id):
            handle = DBOS.start_workflow(fn, *args, **kwargs)
    else:
        handle = DBOS.start_workflow(fn, *args, **kwargs)
    return handle.get_workflow_id()


def run(fn: Callable[P, R], *args: Any, workflow_id: str | None = None, **kwargs: Any) -> Any:
    """Run workflow ``fn`` to completion in this thread and return its result (same idempotency rules)."""
    Runtime.current()
    if workflow_id is not None:
        with SetWorkflowID(workflow_id):
            return fn(*args, **kwargs)
    return fn(*args, **kwargs)


def result(workflow_id: str, *, timeout_seconds: float | None = None, poll_seconds: float = 0.05) -> Any:
    """Wait for a workflow and return its result; re-raises its error (a LedgerbridgeError keeps its class).
    Raises :class:`TimeoutError` when ``timeout_seconds`` pass first (the workflow keeps running). In workflow code
    the wait is one checkpointed step and ``timeout_seconds`` is ignored (a timed poll would not replay the same)."""
    Runtime.current()
    return await_result(lambda: DBOS.retrieve_workflow(workflow_id), workflow_id,
                        None if in_workflow() else timeout_seconds, poll_seconds)


def await_result(retrieve: Callable[[], Any], workflow_id: str, timeout_seconds: float | None,
                 poll_seconds: float) -> Any:
    """Wait on a workflow handle (from DBOS or a DBOS client): its result, its error re-raised, a
    :class:`TimeoutError` after ``timeout_seconds``, or :class:`WorkflowNotFinishedError` when it was cancelled,
    exhausted its recovery attempts or does not exist. Shared by :func:`result` and ``RuntimeClient.result``."""
    try:
        handle: Any = retrieve()
        if timeout_seconds is None:
            return handle.get_result(polling_interval_sec=poll_seconds)
        deadline = time.monotonic() + timeout_seconds
        while True:
            status = str(handle.get_status().status)
            if status in _FINAL_STATUSES:
                return handle.get_result(polling_interval_sec=poll_seconds)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {workflow_id} did not finish within {timeout_seconds} s "
                                   f"(status {status})")
            time.sleep(poll_seconds)
    except DBOSAwaitedWorkflowCancelledError:
        raise WorkflowNotFinishedError(workflow_id, "CANCELLED") from None
    except DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded:
        raise WorkflowNotFinishedError(workflow_id, "MAX_RECOVERY_ATTEMPTS_EXCEEDED") from None
    except DBOSNonExistentWorkflowError:
        raise WorkflowNotFinishedError(workflow_id, "UNKNOWN") from None


def sleep(seconds: float) -> None:
    """Durable sleep in workflow code (a completed sleep is skipped on recovery, an interrupted one only waits for
    what is left); a plain ``time.sleep`` inside steps and outside workflows."""
    if in_workflow():
        DBOS.sleep(seconds)
    elif seconds > 0:
        time.sleep(seconds)


def current_workflow_id() -> str | None:
    """The id of the workflow running this code, or None outside workflows."""
    return DBOS.workflow_id


def in_workflow() -> bool:
    """True in workflow code (not inside a step)."""
    return DBOS.workflow_id is not None and DBOS.step_id is None


def in_step() -> bool:
    return DBOS.step_id is not None


# ---------------------------------------------------------------------------------------------------------------------
# queues
# ---------------------------------------------------------------------------------------------------------------------


def register_queues(specs: Iterable[QueueSpec]) -> dict[str, dict[str, Any]]:
    """Create or update the queues (stored in the system database) and return their effective settings.

    Applies headroom to rate limits, always sets ``worker_concurrency`` (DBOS's thread pool is otherwise
    unbounded) and ``global_concurrency`` (the target's limit holds across workers)."""
    runtime = Runtime.current()
    specs = list(specs)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"queue names must be unique, repeated: {dupes}")
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        limit = spec.effective_rate_limit
        limiter = {"limit": limit, "period": spec.period_seconds} if limit is not None else None
        kwargs: dict[str, Any] = {
            "worker_concurrency": spec.concurrency,
            "global_concurrency": spec.concurrency,
            "limiter": limiter,
            "polling_interval_sec": runtime.settings.queue_polling_interval_sec,
            "on_conflict": "always_update",
        }
        if spec.partitioned:
            kwargs["partition_concurrency"] = spec.partition_concurrency
        DBOS.register_queue(spec.name, **kwargs)
        runtime.queues[spec.name] = spec
        out[spec.name] = {
            "concurrency": spec.concurrency,
            "rate_limit": limit,
            "period_seconds": spec.period_seconds,
            "partitioned": spec.partitioned,
            "partition_concurrency": spec.partition_concurrency if spec.partitioned else None,
        }
        log.debug("queue registered", extra={"queue": spec.name, **out[spec.name]})
    return out


def _check_queue(runtime: Runtime, queue: str, partition_key: str | None) -> QueueSpec | None:
    spec = runtime.queues.get(queue)
    if spec is None and DBOS.retrieve_queue(queue) is None:
        raise ValueError(f"queue {queue!r} is not registered: add it to the runtime queues (register_queues) "
                         f"before enqueueing; known: {sorted(runtime.queues)}")
    if spec is not None and spec.partitioned and not partition_key:
        raise ValueError(f"queue {queue!r} is partitioned: pass partition_key= (e.g. the project id)")
    if spec is not None and not spec.partitioned and partition_key:
        raise ValueError(f"queue {queue!r} is not partitioned: drop partition_key={partition_key!r} or declare "
                         "the queue with partitioned=True")
    return spec


def enqueue(
    queue: str,
    fn: Callable[P, R],
    *args: Any,
    workflow_id: str | None = None,
    partition_key: str | None = None,
    priority: int | None = None,
    delay_seconds: float | None = None,
    **kwargs: Any,
) -> str:
    """Put workflow ``fn(*args, **kwargs)`` on ``queue``; returns the workflow id.

    - ``workflow_id``: the idempotency key (derive it from the business key, e.g. ``"post-invoice:INV-42@3"``);
      enqueueing the same id again returns the existing workflow and does not run it twice.
    - ``partition_key``: required on partitioned queues (e.g. the project id, so one project's work keeps order).
      Outside workflow code (and without priority/delay) such an enqueue goes through the same path as
      :func:`enqueue_many`, which stamps millisecond creation times that increase per partition: DBOS's own
      single-enqueue path stamps whole seconds on SQLite under Python 3.11, which would order items enqueued in
      the same second by id rather than by arrival.
    """
    runtime = Runtime.current()
    _check_queue(runtime, queue, partition_key)
    if partition_key and priority is None and delay_seconds is None and not in_workflow() and not in_step():
        wf_id = workflow_id or str(uuid.uuid4())
        enqueue_many(queue, fn, [(list(args), wf_id, partition_key)], **kwargs)
        return wf_id
    options: dict[str, Any] = {}
    if partition_key:
        options["queue_partition_key"] = partition_key
    if priority is not None:
        options["priority"] = priority
    if delay_seconds is not None:
        if not (delay_seconds >= 0 and math.isfinite(delay_seconds)):
            raise ValueError(f"delay_seconds must be >= 0, got {delay_seconds!r}")
        options["delay_seconds"] = delay_seconds
    handle: Any
    with SetEnqueueOptions(**options):
        if workflow_id is not None:
            with SetWorkflowID(workflow_id):
                handle = DBOS.enqueue_workflow(queue, fn, *args, **kwargs)
        else:
            handle = DBOS.enqueue_workflow(queue, fn, *args, **kwargs)
    return str(handle.get_workflow_id())


def enqueue_many(
    queue: str,
    fn: Callable[..., Any],
    items: Iterable[tuple[Sequence[Any], str, str | None]],
    **kwargs: Any,
) -> list[str]:
    """Enqueue many runs of workflow ``fn`` in ONE transaction; returns the ids actually inserted, in input order.

    ``items`` are ``(args, workflow_id, partition_key)``; ``kwargs`` are passed to every run. Ids that already exist
    are skipped (idempotent, like :func:`enqueue`). Within a partition, items run in the order given, also across
    calls. Much faster than one :func:`enqueue` per item for backfills. Not for workflow code (the insert is not
    checkpointed there): call it from the service/CLI side.
    """
    runtime = Runtime.current()
    if in_workflow() or in_step():
        raise RuntimeError("enqueue_many is not checkpointed: call it outside workflow code, or use enqueue() "
                           "with deterministic workflow ids inside workflows")
    dbos = _get_dbos_instance()
    statuses = []
    ids: list[str] = []
    for args, wf_id, partition_key in items:
        _check_queue(runtime, queue, partition_key)
        if not wf_id:
            raise ValueError("enqueue_many needs a workflow_id per item (the idempotency key)")
        statuses.append(prepare_enqueued_workflow(dbos, fn, tuple(args), dict(kwargs), queue_name=queue,
                                                  workflow_id=wf_id, queue_partition_key=partition_key))
        ids.append(wf_id)
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"enqueue_many: workflow ids repeated in one batch: {dupes[:5]}")
    inserted = dbos._sys_db.init_workflows(statuses)
    return [i for i in ids if i in inserted]


# ---------------------------------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A cron schedule starting workflow ``workflow(scheduled_at: datetime, context: Any)`` at every tick.

    ``cron`` has 5 fields, or 6 with seconds first (``"*/10 * * * * *"``); ``timezone`` an IANA name (default UTC);
    ``context`` plain JSON data handed to every run; ``queue`` runs the ticks on a registered queue. Each tick's
    workflow id is ``sched-<name>-<time>``, so a tick runs once even with several workers.
    """

    name: str
    workflow: Callable[..., Any]
    cron: str
    context: Any = None
    queue: str | None = None
    timezone: str | None = None


def apply_schedules(specs: Iterable[ScheduleSpec]) -> list[str]:
    """Create or replace these schedules in one transaction (repeatable: run it at every start); returns their
    names. New or changed schedules are picked up within ``scheduler_polling_interval_sec``."""
    runtime = Runtime.current()
    entries: list[Any] = []
    names: list[str] = []
    for spec in specs:
        if spec.queue is not None and spec.queue not in runtime.queues and DBOS.retrieve_queue(spec.queue) is None:
            raise ValueError(f"schedule {spec.name!r}: queue {spec.queue!r} is not registered")
        entry: dict[str, Any] = {"schedule_name": spec.name, "workflow_fn": spec.workflow, "schedule": spec.cron,
                                 "context": spec.context}
        if spec.queue is not None:
            entry["queue_name"] = spec.queue
        if spec.timezone is not None:
            entry["cron_timezone"] = spec.timezone
        entries.append(entry)
        names.append(spec.name)
    try:
        DBOS.apply_schedules(entries)
    except DBOSException as exc:
        raise ValueError(f"schedules {names}: {exc}") from exc
    return names


# ---------------------------------------------------------------------------------------------------------------------
# management (CLI / API): plain dicts only
# ---------------------------------------------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _error_dict(err: Any) -> dict[str, Any] | None:
    if err is None:
        return None
    if isinstance(err, LedgerbridgeError):
        return err.to_dict()
    if isinstance(err, BaseException):
        return {"type": type(err).__name__, "kind": None, "code": None, "message": str(err)}
    return {"type": "unreadable", "kind": None, "code": None, "message": str(err)}


def _workflow_dict(status: Any, *, with_data: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workflow_id": status.workflow_id,
        "status": str(status.status),
        "name": status.name,
        "queue": status.queue_name,
        "partition_key": status.queue_partition_key,
        "executor_id": status.executor_id,
        "app_version": status.app_version,
        "created_at": _iso(status.created_at),
        "updated_at": _iso(status.updated_at),
        "dequeued_at": _iso(status.dequeued_at),
        "completed_at": _iso(status.completed_at),
        "forked_from": status.forked_from,
        "error": _error_dict(status.error),
    }
    if with_data:
        inputs = status.input
        out["input"] = (
            {"args": list(inputs["args"]), "kwargs": dict(inputs["kwargs"])} if isinstance(inputs, dict) else inputs
        )
        out["output"] = status.output
    return out


def list_workflows(
    *,
    status: str | Sequence[str] | None = None,
    name: str | Sequence[str] | None = None,
    queue: str | None = None,
    limit: int | None = 100,
    newest_first: bool = True,
    with_data: bool = False,
) -> list[dict[str, Any]]:
    """Workflows as plain dicts (id, status, name, queue, executor, version, ISO times, error), newest first.
    ``status`` is one or more of :data:`STATUSES`; ``with_data`` adds ``input`` and ``output``."""
    Runtime.current()
    return list_workflows_from(DBOS.list_workflows, status=status, name=name, queue=queue, limit=limit,
                               newest_first=newest_first, with_data=with_data)


def list_workflows_from(
    lister: Callable[..., Any],
    *,
    status: str | Sequence[str] | None,
    name: str | Sequence[str] | None,
    queue: str | None,
    limit: int | None,
    newest_first: bool,
    with_data: bool,
) -> list[dict[str, Any]]:
    """:func:`list_workflows` over any DBOS lister (``DBOS.list_workflows`` or a ``DBOSClient``'s)."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ValueError(f"unknown workflow status {bad}; use one of {list(STATUSES)}")
    rows = lister(
        status=statuses or None,
        name=[name] if isinstance(name, str) else (list(name) if name else None),
        queue_name=queue,
        limit=limit,
        sort_desc=newest_first,
        load_input=with_data,
        load_output=True,
    )
    return [_workflow_dict(r, with_data=with_data) for r in rows]


def get_workflow(workflow_id: str, *, with_data: bool = True) -> dict[str, Any] | None:
    """One workflow as a plain dict, or None when unknown."""
    Runtime.current()
    rows = DBOS.list_workflows(workflow_ids=[workflow_id], load_input=with_data)
    return _workflow_dict(rows[0], with_data=with_data) if rows else None


def workflow_steps_from(steps: Iterable[Any]) -> list[dict[str, Any]]:
    """DBOS step records as plain dicts (shared with :class:`~ledgerbridge.runtime.client.RuntimeClient`)."""
    return [
        {
            "step": s["function_id"],
            "name": s["function_name"],
            "output": s["output"],
            "error": _error_dict(s["error"]),
            "child_workflow_id": s["child_workflow_id"],
            "started_at": _iso(s["started_at_epoch_ms"]),
            "completed_at": _iso(s["completed_at_epoch_ms"]),
        }
        for s in steps
    ]


def workflow_steps(workflow_id: str) -> list[dict[str, Any]]:
    """The checkpointed steps of a workflow: step number, name, output, error, child workflow, ISO times."""
    Runtime.current()
    return workflow_steps_from(DBOS.list_workflow_steps(workflow_id))


def _require(workflow_id: str) -> dict[str, Any]:
    found = get_workflow(workflow_id, with_data=False)
    if found is None:
        raise KeyError(f"no workflow with id {workflow_id!r}: check the id with `list_workflows`")
    return found


def cancel(workflow_id: str) -> dict[str, Any]:
    """Cancel a workflow (it stops at its next step boundary); returns its status dict."""
    _require(workflow_id)
    DBOS.cancel_workflow(workflow_id)
    return _require(workflow_id)


def resume(workflow_id: str) -> dict[str, Any]:
    """Resume a cancelled or failed-by-recovery-limit workflow from its last completed step; returns its status."""
    _require(workflow_id)
    DBOS.resume_workflow(workflow_id)
    return _require(workflow_id)


def fork(workflow_id: str, start_step: int, *, application_version: str | None = None) -> dict[str, Any]:
    """Re-run a workflow from ``start_step`` (steps before it keep their recorded outputs) under a NEW workflow id,
    e.g. after fixing a mapping. Returns the new workflow's status dict."""
    _require(workflow_id)
    if start_step < 1:
        raise ValueError(f"start_step must be >= 1 (steps are numbered from 1), got {start_step}")
    kwargs: dict[str, Any] = {}
    if application_version is not None:
        kwargs["application_version"] = application_version
    handle = DBOS.fork_workflow(workflow_id, start_step, **kwargs)
    return _require(handle.get_workflow_id())
