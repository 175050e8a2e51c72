"""The transactional flow (near-real-time path): source versions -> inbox -> approvals -> costing -> staging.

Two stages, each idempotent, each a batch in one database transaction (never a commit per record):

1. **land** — records from a source go into the inbox in batches; a version already received (same idempotency
   key ``system:entity:id:version``) is counted as a duplicate and has no second effect.
2. **process** — a batch of received inbox rows is decided and staged in ONE transaction:
   the full version history of every item in the batch is read from the inbox, approval-state integrity
   (:func:`ledgerbridge.domain.approvals.decide_many`) yields the ledger deltas against what is already staged
   (``item_state.posted_version``), POST deltas are costed and turned into postings, REVERSE deltas negate exactly
   the lines staged for the old version (never re-costed, never edited), each posting is placed in an accounting
   period under the entity's late-item policy, and the staged lines, the new item states, the processed inbox
   rows, the dead letters and one audit entry commit together.

An item that cannot proceed (no rate, unknown project, period closed under ``reject``...) goes to the *financial*
dead-letter queue with its payload and the rule that refused it; its state is left where it was so a replay after
the fix decides it again. The rest of the batch proceeds.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import islice
from typing import Any

import sqlalchemy as sa
from pydantic_core import from_json

from ledgerbridge.domain.approvals import decide_many
from ledgerbridge.domain.costing import cost_expense, cost_time
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import PeriodBook, Placement
from ledgerbridge.domain.posting import postings_for_expense, postings_for_time
from ledgerbridge.domain.types import DeltaAction, LedgerDelta, Posting
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.model.entities import ApprovalStatus, ContractType, Expense, TimeEntry
from ledgerbridge.store import audit, dead_letters, inbox, item_state, staging
from ledgerbridge.store._sql import IN_CHUNK, chunked, in_values, memo_column
from ledgerbridge.store.dead_letters import NewDeadLetter
from ledgerbridge.store.inbox import InboxItem, InboxRow
from ledgerbridge.store.item_state import ItemState
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import staging_lines as staging_t
from ledgerbridge.store.staging import StageItem

FLOW = "transactions"
ENTITIES = ("time_entry", "expense")
_STATUS = {s.value: s for s in ApprovalStatus}


@dataclass
class LandResult:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    batches: int = 0


@dataclass
class BatchOutcome:
    rows: int = 0
    items: int = 0
    posted: int = 0
    reversed: int = 0
    staged_lines: int = 0
    redated: int = 0
    dead_lettered: int = 0
    unchanged: int = 0

    def add(self, other: BatchOutcome) -> None:
        for f in BatchOutcome.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class ProcessResult(BatchOutcome):
    batches: int = 0
    batch_ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- land


def land(
    ctx: FlowContext,
    system: str,
    records: Iterable[dict[str, Any]],
    *,
    batch_size: int = 5000,
    batch_prefix: str = "",
    on_batch: Callable[[LandResult], None] | None = None,
) -> LandResult:
    """Put source records (``entity, external_id, version, payload``) into the inbox, one transaction per batch."""
    result = LandResult()
    for n, chunk in enumerate(_chunks(records, batch_size), start=1):
        items = [InboxItem(system, r["entity"], str(r["external_id"]), r["version"], r["payload"]) for r in chunk]
        with gc_paused(), ctx.engine.begin() as conn:
            new, dup = inbox.add_batch(conn, items, batch_id=f"{batch_prefix}{system}:land:{n}")
        result.received += len(items)
        result.new += new
        result.duplicates += dup
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    return result


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch (reference counting still frees almost everything).

    A batch allocates hundreds of thousands of small containers (rows, payload dicts, postings); each time
    allocations pass the generation-0 threshold the collector runs, and every so often it walks the whole heap
    (reference data, the connection pool...). Measured with ``gc.callbacks``: about a fifth of the CPU time of land
    and process. Memory is bounded by the batch; the collector is switched back on (only if it was on) when the
    batch ends, and collects any cycles the batch left at its next threshold. Nesting and concurrent batches are
    harmless: only the caller that switched it off switches it on again."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _chunks(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` items; each is read from ``it`` with the collector paused (see :func:`gc_paused`)."""
    source = iter(it)
    while True:
        with gc_paused():
            buf = list(islice(source, size))
        if not buf:
            return
        yield buf


# --------------------------------------------------------------------------------------------------- process


def process_pending(
    ctx: FlowContext,
    *,
    batch_size: int = 5000,
    max_batches: int | None = None,
    on_batch: Callable[[ProcessResult], None] | None = None,
) -> ProcessResult:
    """Process received inbox rows batch by batch until none is left (or ``max_batches``)."""
    total = ProcessResult()
    while max_batches is None or total.batches < max_batches:
        with gc_paused(), ctx.engine.begin() as conn:
            rows = _fetch_received(conn, batch_size)
            if not rows:
                break
            outcome, batch_id = process_rows(ctx, conn, rows)
        total.add(outcome)
        total.batches += 1
        total.batch_ids.append(batch_id)
        if on_batch is not None:
            on_batch(total)
    return total


def _fetch_received(conn: sa.Connection, limit: int) -> list[InboxRow]:
    """The oldest received inbox rows, without their payloads (the flow reads each item's full history once)."""
    received_at, rec_of = memo_column(conn, inbox_t.c.received_at)  # one timestamp per landed batch: parse once
    processed_at, proc_of = memo_column(conn, inbox_t.c.processed_at)
    cols = (inbox_t.c.id, inbox_t.c.idempotency_key, inbox_t.c.system, inbox_t.c.entity, inbox_t.c.external_id,
            inbox_t.c.version, received_at, inbox_t.c.status, processed_at, inbox_t.c.batch_id)
    q = sa.select(*cols).where(inbox_t.c.status == "received").order_by(inbox_t.c.id).limit(limit)
    return [InboxRow(i, key, sys_, ent, ext, ver, None, rec_of(rec), st, proc_of(proc), bid)
            for i, key, sys_, ent, ext, ver, rec, st, proc, bid in conn.execute(q).all()]


def batch_id_of(rows: Sequence[InboxRow]) -> str:
    """Deterministic id of a processing batch: a digest of its inbox ids."""
    h = hashlib.sha256(",".join(str(r.id) for r in rows).encode()).hexdigest()[:16]
    return f"tx-{rows[0].id}-{rows[-1].id}-{h}"


def process_rows(ctx: FlowContext, conn: sa.Connection, rows: Sequence[InboxRow]) -> tuple[BatchOutcome, str]:
    """Decide and stage one batch of inbox rows inside the caller's transaction (see the module doc)."""
    with gc_paused():
        return _process_rows(ctx, conn, rows)


def _process_rows(ctx: FlowContext, conn: sa.Connection, rows: Sequence[InboxRow]) -> tuple[BatchOutcome, str]:
    out = BatchOutcome(rows=len(rows))
    batch_id = batch_id_of(rows)
    book = ctx.period_book(conn)
    letters: list[NewDeadLetter] = []
    stage: list[StageItem] = []
    states: list[ItemState] = []
    control: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        if r.entity not in ENTITIES:
            payload = conn.execute(sa.select(inbox_t.c.payload).where(inbox_t.c.id == r.id)).scalar_one()
            letters.append(NewDeadLetter(
                "operational", FLOW, r.system, r.entity, r.idempotency_key, {"payload": payload},
                "validation", "transactions.unknown_entity",
                f"inbox entity {r.entity!r} is not handled by the transactional flow (handles {ENTITIES})"))
            continue
        groups[(r.system, r.entity)].add(r.external_id)
    placer = _Placer(ctx, book)
    for (system, entity), ids in sorted(groups.items()):
        histories, payloads = _histories(conn, system, entity, sorted(ids))
        known = item_state.get_many(conn, system, entity, sorted(ids))
        posted = {i: s.posted_version for i, s in known.items()}
        decision = decide_many(histories, posted, entity=entity)
        bad_items = set()
        for v in decision.violations:
            item_id = v.item.split(" ", 1)[-1]
            bad_items.add(item_id)
            letters.append(NewDeadLetter("financial", FLOW, system, entity, item_id, {"history": [
                [ver, st.value] for ver, st in histories.get(item_id, [])]}, "validation", v.rule, str(v)))
        by_item: dict[str, list[LedgerDelta]] = defaultdict(list)
        for d in decision.deltas:
            by_item[d.item_id].append(d)
        staged_pos = _staged_positive(conn, system, entity, [
            (d.item_id, d.version) for d in decision.deltas if d.action is DeltaAction.REVERSE])
        out.items += len(ids)
        for item_id in sorted(ids):
            if item_id in bad_items:
                continue
            deltas = by_item.get(item_id)
            latest = max(v for v, _ in histories[item_id])
            if not deltas:
                out.unchanged += 1
                states.append(ItemState(system, entity, item_id, latest, posted.get(item_id),
                                        "approved" if posted.get(item_id) is not None else None))
                continue
            try:
                items = []
                for d in deltas:
                    if d.action is DeltaAction.REVERSE:
                        items += [placer.stage(replace(p, sign=-1)) for p in staged_pos.get((item_id, d.version), [])]
                    else:
                        items += [placer.stage(p) for p in _post(ctx, entity, payloads[(item_id, d.version)])]
            except DomainError as err:
                d = deltas[-1]
                letters.append(NewDeadLetter(
                    "financial", FLOW, system, entity, f"{item_id}@{d.version}",
                    {"item_id": item_id, "version": d.version, "action": d.action.value, "reason": d.reason,
                     "source": payloads.get((item_id, d.version))},
                    "validation", err.rule, str(err)))
                out.dead_lettered += 1
                states.append(ItemState(system, entity, item_id, latest, posted.get(item_id),
                                        "approved" if posted.get(item_id) is not None else None))
                continue
            stage += items
            for it in items:
                p = it.posting
                for name, amount in p.amounts:
                    control[(p.txn_type, name, p.currency)] += amount * p.sign
                if it.redated_from is not None:
                    out.redated += 1
            out.posted += sum(1 for d in deltas if d.action is DeltaAction.POST)
            out.reversed += sum(1 for d in deltas if d.action is DeltaAction.REVERSE)
            new_posted = decision.posted.get(item_id)
            states.append(ItemState(system, entity, item_id, latest, new_posted,
                                    "approved" if new_posted is not None else None))
    out.staged_lines = staging.stage_many(conn, stage)
    item_state.upsert_many(conn, states)
    if letters:
        dead_letters.add(conn, letters)
    inbox.mark_processed(conn, [r.id for r in rows])
    audit.append(conn, "ledgerbridge", "transactions.batch_staged", batch_id, {
        "rows": out.rows, "items": out.items, "posted": out.posted, "reversed": out.reversed,
        "staged_lines": out.staged_lines, "redated": out.redated, "dead_lettered": out.dead_lettered,
        "control_totals": {k: str(v) for k, v in sorted((".".join(k), v) for k, v in control.items())},
    })
    return out, batch_id


class _Placer:
    """Places postings in an accounting period under the entity's late-item policy (cached per entity/date)."""

    def __init__(self, ctx: FlowContext, book: PeriodBook) -> None:
        self.ctx = ctx
        self.book = book
        self.cache: dict[tuple[str, dt.date], Placement] = {}

    def stage(self, p: Posting) -> StageItem:
        key = (p.legal_entity_id, p.date)
        placed = self.cache.get(key)
        if placed is None:
            policy = self.ctx.late_policy(p.legal_entity_id)
            placed = self.cache[key] = self.book.place(p.legal_entity_id, p.date, policy)
        return StageItem(p, period=placed.period, redated_from=placed.redated_from)


def _post(ctx: FlowContext, entity: str, payload: dict[str, Any]) -> list[Posting]:
    """Cost one approved source version and turn it into postings (raises DomainError with the rule)."""
    ref = ctx.reference
    if entity == "time_entry":
        e = TimeEntry.model_validate(payload)
        item = f"time_entry {e.source_system}:{e.id}@{e.version}"
        project, resource = _master(ref, e.project_id, e.resource_id, item)
        tm = project.contract_type is ContractType.TIME_AND_MATERIALS  # fixed fee / milestone: no T&M accrual
        return postings_for_time(cost_time(e, project, resource, ref.rates), 1, accrue_revenue=tm)
    x = Expense.model_validate(payload)
    project, resource = _master(ref, x.project_id, x.resource_id, f"expense {x.source_system}:{x.id}@{x.version}")
    return postings_for_expense(cost_expense(x, project, resource), 1)


def _master(ref: Any, project_id: str, resource_id: str, item: str) -> tuple[Any, Any]:
    project = ref.projects.get(project_id)
    if project is None:
        raise DomainError(item, "master.unknown_project", f"project {project_id!r} is not in the master data",
                          "load the project (master reference loading) and replay the item")
    resource = ref.resources.get(resource_id)
    if resource is None:
        raise DomainError(item, "master.unknown_resource", f"resource {resource_id!r} is not in the master data",
                          "load the resource (master reference loading) and replay the item")
    return project, resource


def _histories(
    conn: sa.Connection, system: str, entity: str, ids: list[str]
) -> tuple[dict[str, list[tuple[int, ApprovalStatus]]], dict[tuple[str, int], dict[str, Any]]]:
    """Every version of the items seen so far (from the inbox): histories and the payload of each version."""
    histories: dict[str, list[tuple[int, ApprovalStatus]]] = defaultdict(list)
    payloads: dict[tuple[str, int], dict[str, Any]] = {}
    # one statement per IN_CHUNK ids: the inbox has no index on external_id, so each statement scans it once
    raw_json = conn.dialect.name == "sqlite"  # SQLite hands back the JSON text: decode it with pydantic-core's parser
    col = sa.type_coerce(inbox_t.c.payload, sa.Text) if raw_json else inbox_t.c.payload
    status_of = _STATUS.get
    for part in chunked(ids, IN_CHUNK):
        q = sa.select(inbox_t.c.external_id, inbox_t.c.version, col).where(
            inbox_t.c.system == system, inbox_t.c.entity == entity, in_values(conn, inbox_t.c.external_id, part),
            inbox_t.c.status != "dead")
        for ext, ver, stored in conn.execute(q).all():
            payload = from_json(stored) if raw_json and stored is not None else stored
            v = int(ver)
            raw_status = payload["approval_status"]
            histories[ext].append((v, status_of(raw_status) or ApprovalStatus(raw_status)))
            payloads[(ext, v)] = payload
    return dict(histories), payloads


def _staged_positive(
    conn: sa.Connection, system: str, entity: str, keys: list[tuple[str, int]]
) -> dict[tuple[str, int], list[Posting]]:
    """The lines staged (sign +1, not dead) for the given (item, version)s: what a reversal must negate."""
    out: dict[tuple[str, int], list[Posting]] = defaultdict(list)
    wanted = set(keys)
    for part in chunked(sorted({k for k, _ in keys})):
        q = sa.select(staging_t).where(
            staging_t.c.source_system == system, staging_t.c.source_entity == entity,
            staging_t.c.source_id.in_(part), staging_t.c.sign == 1, staging_t.c.status != "dead",
        ).order_by(staging_t.c.id)
        for r in conn.execute(q):
            key = (r.source_id, r.source_version)
            if key in wanted:
                out[key].append(staging._line(r).posting)
    return out
