"""Item state: per source item, the latest version seen and what was posted for it (what approvals need)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select

from ledgerbridge.store._sql import IN_CHUNK, chunked, driver_value, executemany_driver, in_values, insert_for
from ledgerbridge.store.schema import item_state
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class ItemState:
    system: str
    entity: str
    item_id: str
    latest_version: int | None = None
    posted_version: int | None = None
    posted_status: str | None = None  # e.g. "approved" when posted_version's effect is on the ledger


def get_many(conn: Connection, system: str, entity: str, item_ids: Sequence[str]) -> dict[str, ItemState]:
    """item_id -> state for the items known; unknown ids are absent."""
    out: dict[str, ItemState] = {}
    fields = ("system", "entity", "item_id", "latest_version", "posted_version", "posted_status")
    cols = [item_state.c[c] for c in fields]
    for part in chunked(list(dict.fromkeys(item_ids)), IN_CHUNK):
        q = select(*cols).where(
            item_state.c.system == system, item_state.c.entity == entity, in_values(conn, item_state.c.item_id, part)
        )
        out.update({r.item_id: ItemState(**r._mapping) for r in conn.execute(q)})
    return out


def upsert_many(conn: Connection, states: Iterable[ItemState], *, at: dt.datetime | None = None) -> int:
    """Write the states (all three fields replace what is stored); the last state per item in a batch wins."""
    latest = {(s.system, s.entity, s.item_id): s for s in states}
    if not latest:
        return 0
    now = at or utcnow()
    if conn.dialect.name == "sqlite":
        # the same upsert as below, as one executemany of driver tuples (no per-row parameter processing)
        cols = ("system", "entity", "item_id", "latest_version", "posted_version", "posted_status", "updated_at")

        def upsert() -> Any:
            ins = insert_for(conn, item_state).values({c: bindparam(c) for c in cols})
            return ins.on_conflict_do_update(
                index_elements=["system", "entity", "item_id"], set_={c: ins.excluded[c] for c in cols[3:]}
            )

        stamp = driver_value(conn, item_state, "updated_at", now)
        executemany_driver(conn, upsert, cols, [(s.system, s.entity, s.item_id, s.latest_version, s.posted_version,
                                                 s.posted_status, stamp) for s in latest.values()],
                           key="item_state.upsert_many")
        return len(latest)
    rows = [
        {
            "system": s.system,
            "entity": s.entity,
            "item_id": s.item_id,
            "latest_version": s.latest_version,
            "posted_version": s.posted_version,
            "posted_status": s.posted_status,
            "updated_at": now,
        }
        for s in latest.values()
    ]
    stmt = insert_for(conn, item_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["system", "entity", "item_id"],
        set_={c: stmt.excluded[c] for c in ("latest_version", "posted_version", "posted_status", "updated_at")},
    )
    conn.execute(stmt, rows)
    return len(rows)
