"""The background worker of ``ledgerbridge serve``: durable processing of what webhooks (and other channels) put
in the inbox.

- After a webhook lands a new version, :class:`Trigger` enqueues workflow ``lb.service.process_inbox`` on queue
  ``lb-service-intake`` with a workflow id naming the current time window (``process_window_seconds``) and a delay
  until the window ends: every delivery of one window shares one workflow (enqueueing the same id again is a
  no-op), and that workflow starts after the last of them committed, so nothing it should see is missed.
- The workflow processes received inbox rows batch after batch (one checkpointed step per batch, the
  transactional flow's own idempotent step) until none is left.
- A schedule (``sweep_cron``, default every 15 s) runs the same workflow on the same queue: rows left by a crash,
  by an API-only process or by another channel are processed too. The queue runs one workflow at a time.
- When a batch fails with an unexpected error the workflow writes an operational dead letter
  (``service.process_failed``, with the trace id) instead of failing silently; the rows stay ``received`` and the
  next window or sweep tries again (the letter's attempts count up).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import traceback
from typing import Any

from opentelemetry import trace

from ledgerbridge import runtime as rt
from ledgerbridge.flows import durable
from ledgerbridge.flows.context import current
from ledgerbridge.service import metrics
from ledgerbridge.service.logs import get_logger
from ledgerbridge.service.tracing import trace_id_hex

QUEUE = "lb-service-intake"
SWEEP_SCHEDULE = "lb-service-sweep"
FLOW = "service.process_inbox"
log = get_logger()
_tracer: Any = trace.get_tracer("ledgerbridge.service.worker")


def set_tracer(tracer: Any) -> None:
    global _tracer
    _tracer = tracer


@rt.step("lb.service.dead_letter")
def _letter_step(error: str, detail: str, trace_id: str | None, first_received: int | None) -> str:
    from ledgerbridge.store import dead_letters
    from ledgerbridge.store.dead_letters import NewDeadLetter

    with current().engine.begin() as conn:
        ids = dead_letters.add(conn, [NewDeadLetter(
            "operational", FLOW, "ledgerbridge", "inbox", f"process:{first_received or 'batch'}",
            {"trace_id": trace_id, "error": error, "traceback": detail[-4000:]},
            "permanent", "service.process_failed",
            f"processing inbox rows failed: {error} — fix the cause; the rows stay received and are retried by the "
            "next processing window or sweep")])
    return ids[0]


@rt.step("lb.service.first_received")
def _first_received() -> int | None:
    from sqlalchemy import func, select

    from ledgerbridge.store.schema import inbox

    with current().engine.connect() as conn:
        v = conn.execute(select(func.min(inbox.c.id)).where(inbox.c.status == "received")).scalar()
    return int(v) if v is not None else None


@rt.workflow("lb.service.process_inbox")
def process_inbox_workflow(batch_size: int) -> dict[str, Any]:
    """Process every received inbox row, one checkpointed batch at a time."""
    totals: dict[str, int] = {}
    batches = 0
    with _tracer.start_as_current_span("inbox.process") as span:
        while True:
            try:
                r = durable.process_step(batch_size)
            except Exception as exc:
                first = _first_received()
                letter = _letter_step(f"{type(exc).__name__}: {exc}", traceback.format_exc(), trace_id_hex(span),
                                      first)
                metrics.record_flow(FLOW, False)
                log.error("inbox.process_failed", error=type(exc).__name__, dead_letter=letter)
                return {"batches": batches, "processed": totals, "failed": True, "dead_letter": letter}
            if not r["batches"]:
                break
            batches += 1
            for k, v in r.items():
                if isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
        span.set_attribute("ledgerbridge.batches", batches)
        span.set_attribute("ledgerbridge.rows", totals.get("rows", 0))
    if batches:
        metrics.record_flow(FLOW, True)
        log.info("inbox.processed", batches=batches, rows=totals.get("rows", 0),
                 staged_lines=totals.get("staged_lines", 0), dead_lettered=totals.get("dead_lettered", 0))
    return {"batches": batches, "processed": totals, "failed": False}


@rt.workflow("lb.service.sweep")
def sweep_workflow(scheduled_at: dt.datetime, context: Any) -> dict[str, Any]:
    return process_inbox_workflow(int((context or {}).get("batch_size", 2000)))


class Trigger:
    """Enqueues one delayed processing workflow per time window (see the module doc)."""

    def __init__(self, window_seconds: float, batch_size: int) -> None:
        self.window = window_seconds
        self.batch_size = batch_size
        self._last: int | None = None
        self._lock = threading.Lock()

    def notify(self) -> str | None:
        """Called after a new record committed; returns the workflow id when this call enqueued it."""
        now = time.time()
        bucket = math.floor(now / self.window)
        with self._lock:
            if bucket == self._last:
                return None
            self._last = bucket
        end = (bucket + 1) * self.window
        wf_id = f"svc-intake:{int(bucket * self.window * 1000)}"
        rt.enqueue(QUEUE, process_inbox_workflow, self.batch_size, workflow_id=wf_id,
                   delay_seconds=max(end - time.time(), 0.0) + 0.01)
        return wf_id


def start(settings: Any, runtime_settings: Any) -> bool:
    """Launch the runtime (unless already launched: tests), register the queue and the sweep schedule, and
    process what is already waiting. Returns True when this call launched the runtime."""
    launched = False
    if not rt.Runtime.is_launched():
        rt.Runtime.launch(runtime_settings)
        launched = True
    rt.register_queues([rt.QueueSpec(QUEUE, concurrency=1)])
    rt.apply_schedules([rt.ScheduleSpec(SWEEP_SCHEDULE, sweep_workflow, settings.sweep_cron,
                                        context={"batch_size": settings.process_batch_size}, queue=QUEUE)])
    rt.enqueue(QUEUE, process_inbox_workflow, settings.process_batch_size,
               workflow_id=f"svc-start:{int(time.time() * 1000)}")
    return launched


def stop(launched: bool) -> None:
    if launched:
        rt.Runtime.shutdown()
