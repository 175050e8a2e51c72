"""Cursors: where incremental reading of a system's stream resumes (any JSON value)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select

from ledgerbridge.store._sql import insert_for
from ledgerbridge.store.schema import cursors
from ledgerbridge.store.types import utcnow


def get_cursor(conn: Connection, system: str, stream: str) -> Any | None:
    """The stored cursor value, or None if the stream was never read."""
    return conn.execute(
        select(cursors.c.value).where(cursors.c.system == system, cursors.c.stream == stream)
    ).scalar_one_or_none()


def set_cursor(conn: Connection, system: str, stream: str, value: Any, *, at: dt.datetime | None = None) -> None:
    """Store the cursor; commit it in the same transaction as the items read up to it."""
    if value is None:
        raise ValueError(f"cursor {system}/{stream}: None is not a cursor value (store a JSON value)")
    stmt = insert_for(conn, cursors)
    now = at or utcnow()
    stmt = stmt.on_conflict_do_update(
        index_elements=["system", "stream"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
    )
    conn.execute(stmt, {"system": system, "stream": stream, "value": value, "updated_at": now})


def list_cursors(conn: Connection, system: str | None = None) -> dict[tuple[str, str], tuple[Any, dt.datetime]]:
    q = select(cursors)
    if system is not None:
        q = q.where(cursors.c.system == system)
    return {(r.system, r.stream): (r.value, r.updated_at) for r in conn.execute(q)}
