"""Inbox: every inbound item once, deduplicated on its idempotency key (DESIGN §3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from ledgerbridge.model.base import idempotency_key
from ledgerbridge.store._sql import bulk_insert_ignore, chunked, driver_value, executemany_driver, where_equal
from ledgerbridge.store.errors import InvalidStatusError
from ledgerbridge.store.schema import INBOX_STATUSES, inbox
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One item as read from a source. ``idempotency_key`` defaults to ``system:entity:external_id:version``."""

    system: str
    entity: str
    external_id: str
    version: str | int
    payload: Mapping[str, Any]
    idempotency_key: str | None = None

    @property
    def key(self) -> str:
        if self.idempotency_key is not None:
            return self.idempotency_key
        return idempotency_key(self.system, self.entity, self.external_id, self.version)


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    idempotency_key: str
    system: str
    entity: str
    external_id: str
    version: str
    payload: Any
    received_at: dt.datetime
    status: str
    processed_at: dt.datetime | None
    batch_id: str | None


def add_batch(
    conn: Connection,
    items: Iterable[InboxItem],
    *,
    batch_id: str | None = None,
    received_at: dt.datetime | None = None,
    copy_threshold: int | None = None,
) -> tuple[int, int]:
    """Insert ``items`` in one statement batch (``INSERT .. ON CONFLICT (idempotency_key) DO NOTHING``).

    Returns ``(new_count, duplicate_count)``; duplicates are items whose key is already stored or repeats
    earlier in the same batch. The caller's transaction decides when the batch commits. On PostgreSQL,
    batches of ``copy_threshold`` rows or more (default ``_sql.COPY_THRESHOLD``) load through COPY.
    """
    now = received_at or utcnow()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    total_in = 0
    for it in items:
        total_in += 1
        key = it.key
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "idempotency_key": key,
                "system": it.system,
                "entity": it.entity,
                "external_id": it.external_id,
                "version": str(it.version),
                "payload": it.payload,
                "received_at": now,
                "status": "received",
                "batch_id": batch_id,
            }
        )
    if not rows:
        return 0, total_in
    new = bulk_insert_ignore(conn, inbox, rows, ["idempotency_key"], copy_threshold=copy_threshold)
    return new, total_in - new


def fetch_received(
    conn: Connection, *, system: str | None = None, entity: str | None = None, limit: int = 1000
) -> list[InboxRow]:
    """Items not yet processed, oldest first."""
    q = where_equal(select(inbox), inbox, status="received", system=system, entity=entity)
    q = q.order_by(inbox.c.id).limit(limit)
    return [InboxRow(**r._mapping) for r in conn.execute(q)]


def get_many(conn: Connection, keys: Iterable[str]) -> dict[str, InboxRow]:
    out: dict[str, InboxRow] = {}
    for part in chunked(list(keys)):
        for r in conn.execute(select(inbox).where(inbox.c.idempotency_key.in_(part))):
            out[r.idempotency_key] = InboxRow(**r._mapping)
    return out


def mark(conn: Connection, ids: Iterable[int], status: str, *, at: dt.datetime | None = None) -> int:
    """Set ``status`` (``processed`` or ``dead``) on the given inbox ids; returns rows changed."""
    if status not in INBOX_STATUSES or status == "received":
        raise InvalidStatusError(f"inbox status {status!r} cannot be set: use 'processed' or 'dead'")
    when = at or utcnow()
    n = 0
    if conn.dialect.name == "sqlite":
        # one executemany keyed on the rowid (no IN list to render per chunk); rowcount sums the rows changed
        at_value = driver_value(conn, inbox, "processed_at", when)
        return executemany_driver(conn, _mark_statement, ("new_status", "at", "row_id"),
                                  [(status, at_value, i) for i in ids], key="inbox.mark")
    for part in chunked(list(ids)):
        n += conn.execute(
            update(inbox).where(inbox.c.id.in_(part)).values(status=status, processed_at=when)
        ).rowcount
    return n


def _mark_statement() -> Any:
    return update(inbox).where(inbox.c.id == bindparam("row_id")).values(
        status=bindparam("new_status"), processed_at=bindparam("at"))


def mark_processed(conn: Connection, ids: Iterable[int], *, at: dt.datetime | None = None) -> int:
    return mark(conn, ids, "processed", at=at)


def count_by_status(conn: Connection) -> dict[str, int]:
    q = select(inbox.c.status, func.count()).group_by(inbox.c.status)
    return {s: int(n) for s, n in conn.execute(q)}
