"""Configured systems: an instance of a product (``psa_emea`` = Kantata) with its connector and settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from ledgerbridge.store._sql import insert_for
from ledgerbridge.store.schema import systems
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class SystemRecord:
    id: str
    connector: str
    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


def upsert_systems(conn: Connection, records: Iterable[SystemRecord], *, at: dt.datetime | None = None) -> int:
    """Register or update systems by id (keep secrets out of ``config``: store references to them)."""
    now = at or utcnow()
    rows = {
        r.id: {
            "id": r.id,
            "connector": r.connector,
            "name": r.name,
            "config": dict(r.config),
            "created_at": now,
            "updated_at": now,
        }
        for r in records
    }
    if not rows:
        return 0
    stmt = insert_for(conn, systems)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"], set_={c: stmt.excluded[c] for c in ("connector", "name", "config", "updated_at")}
    )
    conn.execute(stmt, list(rows.values()))
    return len(rows)


def list_systems(conn: Connection) -> list[SystemRecord]:
    return [SystemRecord(**r._mapping) for r in conn.execute(select(systems).order_by(systems.c.id))]


def get_system(conn: Connection, system_id: str) -> SystemRecord | None:
    r = conn.execute(select(systems).where(systems.c.id == system_id)).first()
    return SystemRecord(**r._mapping) if r is not None else None
