"""Group commit for webhook ingress: concurrent deliveries share one inbox transaction.

Each request hands its intake record to :class:`GroupCommitter` and waits for the commit of the group that holds
it (so ``202`` still means "stored"). One thread takes whatever is waiting (up to ``max_group`` records), calls
:func:`ledgerbridge.flows.intake.accept` once per system — one transaction instead of one per request, and no
writers queueing on SQLite's lock — then reads back which records this group inserted: a record whose inbox row
carries the group's batch id is new, an existing row means a duplicate, no row means the intake held it (drift
gate: it waits in the operational dead-letter queue).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ledgerbridge.flows import intake
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.service.logs import get_logger
from ledgerbridge.store import inbox

log = get_logger()


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    new: bool
    held: bool
    batch_id: str


@dataclass
class _Item:
    system: str
    record: dict[str, Any]
    future: Future[Outcome] = field(default_factory=Future)


class GroupCommitter:
    """Lands intake records in groups (see the module doc). ``on_new`` runs after a group with new records."""

    def __init__(self, ctx: FlowContext, *, max_group: int = 1000,
                 on_new: Callable[[], Any] | None = None) -> None:
        self.ctx = ctx
        self.max_group = max_group
        self.on_new = on_new
        self._q: queue.Queue[_Item | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, system: str, record: dict[str, Any]) -> Future[Outcome]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lb-webhook-commit", daemon=True)
                self._thread.start()
        item = _Item(system, record)
        self._q.put(item)
        return item.future

    def close(self) -> None:
        with self._lock:
            t, self._thread = self._thread, None
        if t is not None:
            self._q.put(None)
            t.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        by_system: dict[str, list[_Item]] = {}
        for it in group:
            by_system.setdefault(it.system, []).append(it)
        any_new = False
        for system, items in by_system.items():
            prefix = f"wh:{uuid.uuid4().hex[:16]}:"
            try:
                intake.accept(self.ctx, system, [it.record for it in items], batch_size=len(items) + 1,
                              batch_prefix=prefix)
                keys = [intake.record_key(system, it.record) for it in items]
                with self.ctx.engine.connect() as conn:
                    rows = inbox.get_many(conn, keys)
            except BaseException as exc:  # every waiting request gets the error (-> 500 with a request id)
                for it in items:
                    it.future.set_exception(exc)
                continue
            claimed: set[str] = set()
            for it, key in zip(items, keys, strict=True):
                row = rows.get(key)
                ours = row is not None and (row.batch_id or "").startswith(prefix) and key not in claimed
                if ours:
                    claimed.add(key)
                    any_new = True
                it.future.set_result(Outcome(key, ours, row is None, (row.batch_id or "") if row else ""))
        if any_new and self.on_new is not None:
            try:
                self.on_new()
            except Exception as exc:  # the sweep schedule processes the rows anyway
                log.warning("worker.trigger_failed", error=type(exc).__name__, message=str(exc)[:300])
