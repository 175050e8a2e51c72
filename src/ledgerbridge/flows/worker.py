"""Distributed mode: worker processes and a coordinator sharing one PostgreSQL (DBOS system database + store).

The same durable flows as the embedded job (:mod:`ledgerbridge.flows.durable`: ``lb.ingest``, ``lb.post_period``)
run here, but instead of being started in-process they are **enqueued** on DBOS queues stored in PostgreSQL, and
any number of ``ledgerbridge worker --executor-id ID`` processes dequeue and run them:

- one queue per configured system (``cfg.queue_specs()``: concurrency and rate limit from ``systems.<x>.limits``).
  DBOS queues live in the database, so a queue's concurrency and rate limit hold across all workers. A queue of a
  system that is some entity's ledger is partitioned by legal entity (one posting run per entity at a time, in
  enqueue order);
- ``lb.control`` (period closes) and ``lb.inbox`` (processing of what the event bus landed in the inbox;
  concurrency 1 across workers, so two workers never decide the same inbox rows at once).

Each worker has a fixed executor id and the pinned application version: DBOS recovers a workflow only in a process
with the same executor id and version, so a dead worker restarted under its id resumes its pending work.

The coordinator side (:class:`Coordinator`, :func:`enqueue_month`, :func:`run_months`; ``ledgerbridge worker
run-months``) enqueues with deterministic workflow ids (``dist:<drop>:ingest:<period>``,
``dist:<drop>:post:<entity>:<period>``...), so running it twice — or after a crash — starts nothing twice. It
talks to the system database through a DBOS client and never runs workflows itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

from ledgerbridge import runtime as rt
from ledgerbridge.config import load_config
from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.flows import durable
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.flows.main_job import cutoff_of, months_of
from ledgerbridge.flows.reference import load_reference, reference_from_firm
from ledgerbridge.runtime.settings import QueueSpec, RuntimeSettings

log = logging.getLogger("ledgerbridge.worker")

#: Period closes (and other control work that is not a call to a target system).
CONTROL_QUEUE = "lb.control"
#: Processing of inbox rows landed by the event bus consumer (concurrency 1 across all workers).
INBOX_QUEUE = "lb.inbox"
#: The schedule that sweeps the inbox on ``lb.inbox`` (one tick runs once across all workers).
INBOX_SWEEP = "lb-worker-inbox-sweep"
#: Prefix of the coordinator's workflow ids.
ID_PREFIX = "dist"


class DistributedConfigError(ValueError):
    """The configuration cannot run distributed (message names the key and the fix)."""


# --------------------------------------------------------------------------------------------------- queues


def ledger_systems(cfg: LedgerbridgeConfig) -> set[str]:
    """Systems that hold some legal entity's ledger (their queue is partitioned by entity)."""
    out = {cfg.routing.default.ledger} | {t.ledger for t in cfg.routing.by_entity.values()}
    return {s for s in out if s}


def queue_specs_for(cfg: LedgerbridgeConfig) -> list[QueueSpec]:
    """Every queue a worker registers: one per configured system plus ``lb.control`` and ``lb.inbox``."""
    ledgers = ledger_systems(cfg)
    specs: list[QueueSpec] = []
    for name, spec in sorted(cfg.queue_specs().items()):
        if name in ledgers:
            spec = dataclasses.replace(spec, partitioned=True, partition_concurrency=1)
        specs.append(spec)
    specs += [QueueSpec(CONTROL_QUEUE, concurrency=4), QueueSpec(INBOX_QUEUE, concurrency=1)]
    return specs


def require_postgres(cfg: LedgerbridgeConfig) -> None:
    """Workers share one database: both the runtime's system database and the store must be PostgreSQL."""
    problems = []
    if not cfg.runtime.reveal_system_database_url().startswith("postgresql"):
        problems.append("runtime.system_database_url")
    if not cfg.store.reveal_url().startswith("postgresql"):
        problems.append("store.url")
    if problems:
        raise DistributedConfigError(
            f"{' and '.join(problems)}: distributed mode needs PostgreSQL shared by every worker (SQLite is the "
            "embedded, one-process mode) — set them to postgresql://user@host:5432/dbname (see docs/distributed.md)")


def runtime_settings(cfg: LedgerbridgeConfig, executor_id: str, *, poll_interval: float = 1.0) -> RuntimeSettings:
    """The config's runtime settings with this worker's fixed executor id and the given queue polling interval."""
    base: RuntimeSettings = cfg.runtime.to_runtime()
    return dataclasses.replace(base, executor_id=executor_id, queue_polling_interval_sec=poll_interval,
                               notification_polling_interval_sec=min(poll_interval, 1.0))


# --------------------------------------------------------------------------------------------------- workflows


@rt.workflow("lb.close_period")
def close_workflow(entity: str, period: str) -> dict[str, Any]:
    """Close one entity's period (checklist first); idempotent."""
    return durable.close_step(entity, period)


def _process_all(batch_size: int) -> dict[str, Any]:
    totals: dict[str, int] = {}
    batches = 0
    while True:
        r = durable.process_step(batch_size)
        if not r["batches"]:
            break
        batches += 1
        for k, v in r.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return {"processed": totals, "batches": batches}


@rt.workflow("lb.process_inbox")
def process_inbox_workflow(batch_size: int = 5000) -> dict[str, Any]:
    """Decide and stage every received inbox row, one step per batch (what the bus consumer landed)."""
    return _process_all(batch_size)


@rt.workflow("lb.sweep_inbox")
def sweep_inbox_workflow(scheduled_at: Any, context: Any) -> dict[str, Any]:
    """The schedule's tick (``lb-worker-inbox-sweep``): process rows any channel left in the inbox (an API-only
    process writing webhooks straight to the inbox, a crash between landing and enqueueing)."""
    return _process_all(int((context or {}).get("batch_size", 5000)))


@rt.step("lb.probe_call")
def _probe_call(delay_ms: int) -> dict[str, Any]:
    started = time.time()
    if delay_ms > 0:
        time.sleep(delay_ms / 1000)
    return {"executor_id": _executor_id, "pid": os.getpid(), "started": started}


@rt.workflow("lb.probe")
def probe_workflow(delay_ms: int = 0) -> dict[str, Any]:
    """A call to a simulated target taking ``delay_ms``: which worker ran it and when (health checks, rate-limit
    checks and the distributed benchmark)."""
    return _probe_call(delay_ms)


_executor_id = "local"


# --------------------------------------------------------------------------------------------------- worker


def reference_source(cfg: LedgerbridgeConfig, ctx: FlowContext) -> str | None:
    """The PSA system master/reference data comes from (first ``role: psa`` system that can load it)."""
    for name, sc in sorted(cfg.systems.items()):
        if sc.role == "psa" and hasattr(ctx.connector(name), "load_master"):
            return name
    return None


def worker_context(cfg: LedgerbridgeConfig, workdir: Path) -> FlowContext:
    """A flow context with the reference data loaded in memory only (the coordinator writes it to the store:
    workers never migrate or write reference rows, so starting many at once does not race)."""
    ctx = FlowContext(cfg, workdir=workdir)
    refresh_reference(ctx)
    return ctx


def refresh_reference(ctx: FlowContext, last_drop: str | None = None) -> str | None:
    """(Re)load the reference data into ``ctx`` when the PSA's drop id differs from ``last_drop``; returns the
    drop id now loaded. Steps already running keep the object they started with."""
    source = reference_source(ctx.config, ctx)
    if source is None:
        return None
    conn = ctx.connector(source)
    drop = str(conn.drop_id()) if hasattr(conn, "drop_id") else None
    if drop is None or drop != last_drop:
        ctx.reference = reference_from_firm(conn.load_master())
        ctx.reset_connectors()
    return drop


@dataclasses.dataclass
class Worker:
    """One worker process: launch the runtime under a fixed executor id, register the queues, run queued work
    (and the event-bus consumer when ``bus`` is configured) until :meth:`stop`."""

    cfg: LedgerbridgeConfig
    executor_id: str
    workdir: Path
    poll_interval: float = 1.0
    consume_bus: bool = True
    grace_seconds: int = 30
    sweep_seconds: int = 0
    reference_refresh_seconds: float = 30.0
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _consumer: Any = None
    _ctx: FlowContext | None = None
    _drop: str | None = None

    def start(self) -> None:
        global _executor_id
        require_postgres(self.cfg)
        ctx = self._ctx = FlowContext(self.cfg, workdir=self.workdir)
        self._drop = refresh_reference(ctx)
        set_current(ctx)
        _executor_id = self.executor_id
        rt.Runtime.launch(runtime_settings(self.cfg, self.executor_id, poll_interval=self.poll_interval),
                          queues=queue_specs_for(self.cfg))
        if self.sweep_seconds:
            rt.apply_schedules([rt.ScheduleSpec(INBOX_SWEEP, sweep_inbox_workflow, f"*/{self.sweep_seconds} * * * * *",
                                                context={"batch_size": 5000}, queue=INBOX_QUEUE)])
        if self.consume_bus and self.cfg.bus is not None:
            from ledgerbridge.bus.consumer import InboxConsumer

            self._consumer = InboxConsumer(ctx, self.cfg.bus, on_landed=self._on_landed)
            self._consumer.start()
            # rows landed just before a crash (committed, processing not yet enqueued) are picked up now
            rt.enqueue(INBOX_QUEUE, process_inbox_workflow,
                       workflow_id=f"inbox:{self.executor_id}:start:{time.time_ns()}")

    def _on_landed(self, last_seq: int, new: int) -> None:
        if new:
            rt.enqueue(INBOX_QUEUE, process_inbox_workflow, workflow_id=f"inbox:{self.executor_id}:{last_seq}")

    def wait(self) -> None:
        """Until :meth:`stop`; meanwhile reload the reference data when the PSA publishes a new drop (a project
        added mid-month is known to the next step without restarting the worker)."""
        next_check = time.monotonic() + self.reference_refresh_seconds
        while not self._stop.wait(0.5):
            if self._ctx is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + self.reference_refresh_seconds
                try:
                    self._drop = refresh_reference(self._ctx, self._drop)
                except Exception as err:  # a half-written drop: keep the loaded data, try again later
                    log.warning("reference refresh failed (%s); keeping the loaded reference data", err)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        """Graceful stop: stop fetching bus messages (unacked ones are redelivered), let running workflows finish
        for up to ``grace_seconds`` (the rest stay PENDING and resume when this executor id starts again)."""
        if self._consumer is not None:
            self._consumer.stop()
        rt.Runtime.shutdown(workflow_completion_timeout_sec=self.grace_seconds)
        set_current(None)


def run_worker(worker: Worker, *, ready: Callable[[str], None] | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT (graceful stop)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.start()
    if ready is not None:
        ready(f"worker {worker.executor_id} ready (pid {os.getpid()}, queues "
              f"{', '.join(s.name for s in queue_specs_for(worker.cfg))})")
    try:
        worker.wait()
    finally:
        worker.shutdown()


# --------------------------------------------------------------------------------------------------- coordinator


class Coordinator:
    """The enqueue side (API, scheduler or ``ledgerbridge worker run-months``): puts workflows on the shared
    queues and awaits their results through the system database (a :class:`ledgerbridge.runtime.RuntimeClient`).
    Runs nothing itself."""

    def __init__(self, cfg: LedgerbridgeConfig, *, poll_interval: float = 0.5) -> None:
        require_postgres(cfg)
        self.settings: RuntimeSettings = cfg.runtime.to_runtime()
        self.poll_interval = poll_interval
        self.specs = {s.name: s for s in queue_specs_for(cfg)}
        self._client = rt.RuntimeClient(self.settings)

    def enqueue(self, queue: str, workflow: str, *args: Any, workflow_id: str,
                partition_key: str | None = None, delay_seconds: float | None = None) -> str:
        """Enqueue workflow ``workflow`` (its registered name) with a deterministic id (idempotent); with
        ``delay_seconds`` it becomes eligible only after that delay."""
        spec = self.specs.get(queue)
        if spec is None:
            raise ValueError(f"queue {queue!r} is not one of the workers' queues {sorted(self.specs)}")
        if spec.partitioned != bool(partition_key):
            raise ValueError(f"queue {queue!r} {'needs' if spec.partitioned else 'takes no'} partition key "
                             f"(got {partition_key!r})")
        return self._client.enqueue(queue, workflow, *args, workflow_id=workflow_id, partition_key=partition_key,
                                    delay_seconds=delay_seconds)

    def result(self, workflow_id: str) -> Any:
        return self._client.result(workflow_id, poll_seconds=self.poll_interval)

    def workflows(self, *, status: str | None = None, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Workflow status dicts (``ledgerbridge.runtime.list_workflows`` shape): the given ids, or all (of a
        status)."""
        if ids is not None:
            return [w for w in (self._client.get_workflow(i, with_data=False) for i in ids) if w is not None]
        return self._client.list_workflows(status=status, limit=None)

    def close(self) -> None:
        self._client.close()


def prepare(ctx: FlowContext) -> dict[str, Any]:
    """Coordinator set-up (once, before enqueueing): migrate the store and load the reference data into it."""
    ctx.migrate()
    source = reference_source(ctx.config, ctx)
    if source is None:
        return {"reference": None}
    rep = load_reference(ctx, source)
    return {"reference": source, "counts": rep.counts, "periods_created": rep.periods_created}


def enqueue_month(coord: Coordinator, ctx: FlowContext, source: str, period: str, until: str | None, *,
                  batch_size: int = 2000, bill: bool = True, close: bool = True) -> dict[str, Any]:
    """Run one month distributed, in the embedded job's order: ingest ``source`` up to ``until``; post every
    legal entity's ``period`` into its ledger (in parallel across entities, as the ledger queues allow); the
    billing run of the month and the posting of its invoices (unless ``bill=False``); then close the period
    (unless ``close=False``). Deterministic workflow ids: re-running is harmless."""
    drop = ctx.connector(source).drop_id()[:12]
    base = f"{ID_PREFIX}:{drop}"
    month: dict[str, Any] = {"period": period, "cutoff": until or "end of export"}
    wf = coord.enqueue(source, "lb.ingest", source, until, batch_size, workflow_id=f"{base}:ingest:{period}")
    month["ingest"] = coord.result(wf)
    entities = sorted(ctx.reference.entities)
    ids = [coord.enqueue(ctx.ledger_system(e), "lb.post_period", e, period, None,
                         workflow_id=f"{base}:post:{e}:{period}", partition_key=e) for e in entities]
    month["posting"] = [coord.result(i) for i in ids]
    if bill:
        from ledgerbridge.flows.billing import DEFAULT_KINDS

        wf = coord.enqueue(CONTROL_QUEUE, "lb.billing_run", period, None, list(DEFAULT_KINDS), None,
                           workflow_id=f"{base}:bill:{period}")
        month["billing"] = {"billing": coord.result(wf)}
        ids = [coord.enqueue(ctx.ledger_system(e), "lb.post_period", e, period, None,
                             workflow_id=f"{base}:post-billing:{e}:{period}", partition_key=e) for e in entities]
        month["billing"]["posting"] = [coord.result(i) for i in ids]
    if close:
        ids = [coord.enqueue(CONTROL_QUEUE, "lb.close_period", e, period, workflow_id=f"{base}:close:{e}:{period}")
               for e in entities]
        month["close"] = [coord.result(i) for i in ids]
    return month


def run_months(coord: Coordinator, ctx: FlowContext, source: str, start: str, months: int, *,
               cutoff_days: int = 5, batch_size: int = 2000,
               progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """The embedded main job's month loop (:func:`ledgerbridge.flows.main_job.run_demo`) over the worker queues:
    each month up to its cut-off, the last one to the end of the export and left open."""
    out = []
    periods = months_of(start, months)
    for i, period in enumerate(periods):
        last = i == len(periods) - 1
        until = None if last else cutoff_of(period, cutoff_days).isoformat()
        month = enqueue_month(coord, ctx, source, period, until, batch_size=batch_size, close=not last)
        out.append(month)
        if progress is not None:
            progress(month)
    return out


# --------------------------------------------------------------------------------------------------- CLI

worker_app = typer.Typer(help="Distributed mode: a worker process, and the coordinator commands that enqueue work.",
                         invoke_without_command=True, no_args_is_help=False)
ConfigOpt = typer.Option(None, "--config", "-c", help="Configuration file (default $LEDGERBRIDGE_CONFIG or "
                                                       "./ledgerbridge.yaml).")


def _load(config: Path | None) -> tuple[LedgerbridgeConfig, Path]:
    path = config or (Path(os.environ["LEDGERBRIDGE_CONFIG"]) if os.environ.get("LEDGERBRIDGE_CONFIG") else None)
    if path is None:
        path = Path("ledgerbridge.yaml")
    if not path.exists():
        typer.echo(f"--config {path}: no such file — distributed mode needs a configuration with PostgreSQL "
                   "URLs (see docs/distributed.md)", err=True)
        raise typer.Exit(2)
    return load_config(path), path.parent.resolve()


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@worker_app.callback()
def worker_command(
    typer_ctx: typer.Context,
    executor_id: str | None = typer.Option(None, "--executor-id", help="This worker's fixed id (restart a dead "
                                                                      "worker under the same id to resume its work)."),
    config: Path | None = ConfigOpt,
    poll_interval: float = typer.Option(1.0, "--poll-interval", min=0.01, help="Queue polling interval, seconds."),
    no_bus: bool = typer.Option(False, "--no-bus", help="Do not run the event-bus consumer in this worker."),
    grace: int = typer.Option(30, "--grace", min=0, help="Seconds running workflows get to finish on SIGTERM."),
    sweep: int = typer.Option(0, "--inbox-sweep", min=0, max=59,
                              help="Also process rows left in the inbox every N seconds (API-only processes "
                                   "writing webhooks to the inbox without a bus; 0 = off)."),
) -> None:
    """Run a worker: ``ledgerbridge worker --executor-id w1 --config ledgerbridge.yaml`` (until SIGTERM)."""
    if typer_ctx.invoked_subcommand is not None:
        return
    if not executor_id:
        _fail(ValueError("--executor-id is required to run a worker (e.g. --executor-id worker-1; keep it "
                         "stable across restarts)"))
    cfg, workdir = _load(config)
    w = Worker(cfg, str(executor_id), workdir, poll_interval=poll_interval, consume_bus=not no_bus,
               grace_seconds=grace, sweep_seconds=sweep)
    try:
        run_worker(w, ready=lambda msg: (print(msg, flush=True), None)[1])
    except DistributedConfigError as err:
        _fail(err)


def _coordinate(config: Path | None, source: str | None) -> tuple[Coordinator, FlowContext, str]:
    """The coordinator commands' set-up: configuration, a coordinator client, the store prepared, the source."""
    cfg, workdir = _load(config)
    try:
        coord = Coordinator(cfg)
    except DistributedConfigError as err:
        _fail(err)
    ctx = FlowContext(cfg, workdir=workdir)
    prepare(ctx)
    src = source or reference_source(cfg, ctx)
    if src is None:
        coord.close()
        _fail(ValueError("--source: no PSA system in the configuration; name the source system"))
    return coord, ctx, str(src)


@worker_app.command("run-months")
def run_months_command(
    start: str = typer.Option(..., "--start", help="First period, YYYY-MM."),
    months: int = typer.Option(1, "--months", min=1),
    cutoff_days: int = typer.Option(5, "--cutoff-days", min=0),
    batch_size: int = typer.Option(2000, "--batch-size", min=1),
    source: str | None = typer.Option(None, "--source", help="Source system (default: the PSA system)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Coordinator: enqueue the month loop (ingest, post per entity, close) for the workers and wait for it."""
    import json

    coord, ctx, src = _coordinate(config, source)
    try:
        out = run_months(coord, ctx, str(src), start, months, cutoff_days=cutoff_days, batch_size=batch_size,
                         progress=lambda m: print(json.dumps({"period": m["period"], "posting": [
                             p["status"] for p in m["posting"]]}), flush=True))
    finally:
        coord.close()
    print(json.dumps({"months": len(out)}), flush=True)


@worker_app.command("run-month")
def run_month_command(
    period: str = typer.Option(..., "--period", help="The period, YYYY-MM."),
    cutoff_days: int = typer.Option(5, "--cutoff-days", min=0, help="Ingest versions up to month end + N days."),
    to_end: bool = typer.Option(False, "--to-end", help="Ingest everything the source has (no cut-off)."),
    no_close: bool = typer.Option(False, "--no-close", help="Leave the period open after posting."),
    no_billing: bool = typer.Option(False, "--no-billing", help="Skip the billing run."),
    batch_size: int = typer.Option(2000, "--batch-size", min=1),
    source: str | None = typer.Option(None, "--source", help="Source system (default: the PSA system)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Coordinator: one month on the workers — ingest to the cut-off, post per entity, bill, close — and wait."""
    import json

    coord, ctx, src = _coordinate(config, source)
    until = None if to_end else cutoff_of(period, cutoff_days).isoformat()
    try:
        month = enqueue_month(coord, ctx, str(src), period, until, batch_size=batch_size, bill=not no_billing,
                              close=not no_close)
    finally:
        coord.close()
    print(json.dumps(month, default=str, indent=2), flush=True)


@worker_app.command("probe")
def probe_command(
    count: int = typer.Option(10, "--count", min=1),
    queue: str = typer.Option(CONTROL_QUEUE, "--queue"),
    partition: str | None = typer.Option(None, "--partition"),
    delay_ms: int = typer.Option(0, "--delay-ms", min=0),
    config: Path | None = ConfigOpt,
) -> None:
    """Enqueue ``count`` probe calls on a queue and report which workers ran them (liveness check)."""
    cfg, _ = _load(config)
    coord = Coordinator(cfg)
    tag = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    try:
        ids = [coord.enqueue(queue, "lb.probe", delay_ms, workflow_id=f"probe:{tag}:{i}", partition_key=partition)
               for i in range(count)]
        seen: dict[str, int] = {}
        for i in ids:
            r = coord.result(i)
            seen[r["executor_id"]] = seen.get(r["executor_id"], 0) + 1
    finally:
        coord.close()
    typer.echo(", ".join(f"{k}: {v}" for k, v in sorted(seen.items())))


def main(argv: Iterable[str] | None = None) -> None:  # pragma: no cover - convenience entry point
    worker_app(list(argv) if argv is not None else sys.argv[1:])
