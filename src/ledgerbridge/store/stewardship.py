"""Stewardship: master-data conflicts waiting for a person's decision (never silently overwritten).

One *open* item per ``(canonical_type, canonical_id, field)``: a repeated conflict refreshes its values."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text, update

from ledgerbridge.store._sql import insert_for, where_equal
from ledgerbridge.store.errors import InvalidStatusError, NotFoundError
from ledgerbridge.store.schema import stewardship_items
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class NewStewardshipItem:
    canonical_type: str
    canonical_id: str
    field: str
    values: Mapping[str, Any]  # system -> the value that system holds
    changed_by: str  # the system (or user) whose change raised the conflict


@dataclass(frozen=True, slots=True)
class StewardshipItem:
    id: str
    canonical_type: str
    canonical_id: str
    field: str
    values: Any
    changed_by: str
    status: str
    resolution: Any
    created_at: dt.datetime
    resolved_at: dt.datetime | None


_KEY = ("canonical_type", "canonical_id", "field")


def add(conn: Connection, items: Iterable[NewStewardshipItem], *, at: dt.datetime | None = None) -> list[str]:
    """Open items (or refresh the open item of the same field); returns ids in input order."""
    now = at or utcnow()
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    order: list[tuple[str, str, str]] = []
    for it in items:
        k = (it.canonical_type, it.canonical_id, it.field)
        order.append(k)
        rows[k] = {
            "id": rows[k]["id"] if k in rows else str(uuid.uuid4()),
            "canonical_type": it.canonical_type,
            "canonical_id": it.canonical_id,
            "field": it.field,
            "values": dict(it.values),
            "changed_by": it.changed_by,
            "status": "open",
            "created_at": now,
        }
    if not rows:
        return []
    stmt = insert_for(conn, stewardship_items)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_KEY),
        index_where=text("status = 'open'"),
        set_={"values": stmt.excluded["values"], "changed_by": stmt.excluded.changed_by},
    ).returning(*[stewardship_items.c[c] for c in (*_KEY, "id")])
    ids = {tuple(r[:3]): r[3] for r in conn.execute(stmt, list(rows.values()))}
    return [ids[k] for k in order]


def list_items(
    conn: Connection,
    *,
    status: str | None = "open",
    canonical_type: str | None = None,
    canonical_id: str | None = None,
    limit: int = 1000,
) -> list[StewardshipItem]:
    q = where_equal(
        select(stewardship_items), stewardship_items,
        status=status, canonical_type=canonical_type, canonical_id=canonical_id,
    )  # fmt: skip
    q = q.order_by(stewardship_items.c.created_at, *[stewardship_items.c[c] for c in _KEY], stewardship_items.c.id)
    q = q.limit(limit)
    return [StewardshipItem(**r._mapping) for r in conn.execute(q)]


def get(conn: Connection, item_id: str) -> StewardshipItem | None:
    r = conn.execute(select(stewardship_items).where(stewardship_items.c.id == item_id)).first()
    return StewardshipItem(**r._mapping) if r is not None else None


def resolve(
    conn: Connection, item_id: str, resolution: Mapping[str, Any], *, at: dt.datetime | None = None
) -> StewardshipItem:
    """Record the decision (e.g. ``{"value": ..., "decided_by": ..., "reason": ...}``) and close the item."""
    n = conn.execute(
        update(stewardship_items)
        .where(stewardship_items.c.id == item_id, stewardship_items.c.status == "open")
        .values(status="resolved", resolution=dict(resolution), resolved_at=at or utcnow())
    ).rowcount
    item = get(conn, item_id)
    if item is None:
        raise NotFoundError(f"stewardship item {item_id!r} does not exist")
    if n == 0:
        raise InvalidStatusError(f"stewardship item {item_id!r} is already {item.status}; it was not changed")
    return item
