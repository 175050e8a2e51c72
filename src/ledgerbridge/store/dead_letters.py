"""Dead letters: items that cannot proceed without a person or a fix, in two queues (operational, financial).

One *open* letter per ``(queue, flow, system, entity, item_key)``: failing again bumps ``attempts`` and
``last_seen`` and keeps the newest payload and error, so the queue shows items, not retries.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text, update

from ledgerbridge.store._sql import chunked, insert_for, where_equal
from ledgerbridge.store.errors import InvalidStatusError
from ledgerbridge.store.schema import DEAD_LETTER_QUEUES, DEAD_LETTER_STATUSES, dead_letters
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    queue: str  # "operational" | "financial"
    flow: str
    system: str
    entity: str
    item_key: str
    payload: Mapping[str, Any]
    error_kind: str  # transient | rate_limited | permanent | validation | conflict
    error_code: str
    error_text: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    queue: str
    flow: str
    system: str
    entity: str
    item_key: str
    payload: Any
    error_kind: str
    error_code: str
    error_text: str
    attempts: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    status: str
    resolution: str | None


_OPEN_KEY = ("queue", "flow", "system", "entity", "item_key")


def add(conn: Connection, letters: Iterable[NewDeadLetter], *, seen_at: dt.datetime | None = None) -> list[str]:
    """File dead letters; returns their ids in input order (a repeat of an open letter returns its id)."""
    now = seen_at or utcnow()
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    order: list[tuple[str, ...]] = []
    for dl in letters:
        if dl.queue not in DEAD_LETTER_QUEUES:
            raise InvalidStatusError(
                f"dead letter for {dl.item_key!r}: queue {dl.queue!r} unknown; use 'operational' or 'financial'"
            )
        key = (dl.queue, dl.flow, dl.system, dl.entity, dl.item_key)
        order.append(key)
        prior = merged.get(key)
        merged[key] = {
            "id": prior["id"] if prior else str(uuid.uuid4()),
            "queue": dl.queue,
            "flow": dl.flow,
            "system": dl.system,
            "entity": dl.entity,
            "item_key": dl.item_key,
            "payload": dict(dl.payload),
            "error_kind": dl.error_kind,
            "error_code": dl.error_code,
            "error_text": dl.error_text,
            "attempts": (prior["attempts"] + 1) if prior else 1,
            "first_seen": now,
            "last_seen": now,
            "status": "open",
        }
    if not merged:
        return []
    stmt = insert_for(conn, dead_letters)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_OPEN_KEY),
        index_where=text("status = 'open'"),
        set_={
            "attempts": dead_letters.c.attempts + ex.attempts,
            "last_seen": ex.last_seen,
            "payload": ex.payload,
            "error_kind": ex.error_kind,
            "error_code": ex.error_code,
            "error_text": ex.error_text,
        },
    ).returning(*[dead_letters.c[c] for c in (*_OPEN_KEY, "id")])
    ids: dict[tuple[str, ...], str] = {}
    for r in conn.execute(stmt, list(merged.values())):
        ids[tuple(r[:5])] = r[5]
    return [ids[k] for k in order]


def _letter(r: Any) -> DeadLetter:
    return DeadLetter(**r._mapping)


def list_letters(
    conn: Connection,
    *,
    queue: str | None = None,
    flow: str | None = None,
    system: str | None = None,
    entity: str | None = None,
    error_kind: str | None = None,
    error_code: str | None = None,
    older_than: dt.datetime | dt.timedelta | None = None,
    status: str | None = "open",
    limit: int = 1000,
) -> list[DeadLetter]:
    """Letters matching every given filter, oldest first. ``older_than``: first seen before this instant, or
    longer ago than this age. ``status=None`` lists every status."""
    q = where_equal(
        select(dead_letters), dead_letters, queue=queue, flow=flow, system=system, entity=entity,
        error_kind=error_kind, error_code=error_code, status=status,
    )  # fmt: skip
    if older_than is not None:
        cutoff = utcnow() - older_than if isinstance(older_than, dt.timedelta) else older_than
        q = q.where(dead_letters.c.first_seen < cutoff)
    q = q.order_by(dead_letters.c.first_seen, *[dead_letters.c[c] for c in _OPEN_KEY], dead_letters.c.id).limit(limit)
    return [_letter(r) for r in conn.execute(q)]


def get(conn: Connection, letter_id: str) -> DeadLetter | None:
    r = conn.execute(select(dead_letters).where(dead_letters.c.id == letter_id)).first()
    return _letter(r) if r is not None else None


def mark(conn: Connection, ids: Iterable[str], status: str, resolution: str | None = None) -> int:
    """Close open letters as ``replayed`` or ``discarded`` (with a note); returns letters changed.
    Letters that are not open are left as they are."""
    if status not in DEAD_LETTER_STATUSES or status == "open":
        raise InvalidStatusError(f"dead letter status {status!r}: mark letters 'replayed' or 'discarded'")
    n = 0
    for part in chunked(list(ids)):
        n += conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id.in_(part), dead_letters.c.status == "open")
            .values(status=status, resolution=resolution)
        ).rowcount
    return n
