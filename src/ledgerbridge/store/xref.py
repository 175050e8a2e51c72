"""Cross-references (bindings): canonical id <-> each system's external id, with last sync time and version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, tuple_

from ledgerbridge.store._sql import chunked, insert_for
from ledgerbridge.store.errors import XrefConflictError
from ledgerbridge.store.schema import xref
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class XrefEntry:
    canonical_type: str
    canonical_id: str
    system: str
    external_id: str
    version_synced: str | None = None
    last_synced_at: dt.datetime | None = None


def upsert_many(conn: Connection, entries: Iterable[XrefEntry], *, synced_at: dt.datetime | None = None) -> int:
    """Bind canonical ids to external ids (insert or update by ``(canonical_type, canonical_id, system)``).

    An external id already bound to a *different* canonical id of the same type in the same system is a
    conflict: nothing of the batch is written and :class:`XrefConflictError` names the pairs. Returns the
    number of bindings written. In a batch, the last entry for a key wins.
    """
    now = synced_at or utcnow()
    latest: dict[tuple[str, str, str], XrefEntry] = {}
    for e in entries:
        latest[(e.canonical_type, e.canonical_id, e.system)] = e
    if not latest:
        return 0
    claims: dict[tuple[str, str, str], str] = {}
    clashes: list[str] = []
    for e in latest.values():
        k = (e.system, e.canonical_type, e.external_id)
        other = claims.setdefault(k, e.canonical_id)
        if other != e.canonical_id:
            clashes.append(f"{e.system} {e.canonical_type} {e.external_id!r} -> both {other!r} and {e.canonical_id!r}")
    for part in chunked(list(claims)):
        q = select(xref.c.system, xref.c.canonical_type, xref.c.external_id, xref.c.canonical_id).where(
            tuple_(xref.c.system, xref.c.canonical_type, xref.c.external_id).in_(part)
        )
        for s, t, x, cid in conn.execute(q):
            if claims[(s, t, x)] != cid:
                clashes.append(f"{s} {t} {x!r} is bound to {cid!r}, not {claims[(s, t, x)]!r}")
    if clashes:
        raise XrefConflictError(
            "external id already bound to another record: " + "; ".join(clashes[:10])
            + " — resolve the duplicate in the source system or send it to stewardship"
        )
    rows = [
        {
            "canonical_type": e.canonical_type,
            "canonical_id": e.canonical_id,
            "system": e.system,
            "external_id": e.external_id,
            "version_synced": e.version_synced,
            "last_synced_at": e.last_synced_at or now,
        }
        for e in latest.values()
    ]
    stmt = insert_for(conn, xref)
    stmt = stmt.on_conflict_do_update(
        index_elements=["canonical_type", "canonical_id", "system"],
        set_={
            "external_id": stmt.excluded.external_id,
            "version_synced": stmt.excluded.version_synced,
            "last_synced_at": stmt.excluded.last_synced_at,
        },
    )
    conn.execute(stmt, rows)
    return len(rows)


def _entry(r: object) -> XrefEntry:
    return XrefEntry(**r._mapping)  # type: ignore[attr-defined]


def _lookup(conn: Connection, canonical_type: str, system: str, by: str, ids: Sequence[str]) -> dict[str, XrefEntry]:
    out: dict[str, XrefEntry] = {}
    for part in chunked(list(dict.fromkeys(ids))):
        q = select(xref).where(xref.c.canonical_type == canonical_type, xref.c.system == system, xref.c[by].in_(part))
        out.update({getattr(r, by): _entry(r) for r in conn.execute(q)})
    return out


def lookup_many(
    conn: Connection, canonical_type: str, system: str, canonical_ids: Sequence[str]
) -> dict[str, XrefEntry]:
    """Canonical id -> binding in ``system`` (ids without a binding are absent)."""
    return _lookup(conn, canonical_type, system, "canonical_id", canonical_ids)


def lookup_external_many(
    conn: Connection, canonical_type: str, system: str, external_ids: Sequence[str]
) -> dict[str, XrefEntry]:
    """External id in ``system`` -> binding (the other direction of :func:`lookup_many`)."""
    return _lookup(conn, canonical_type, system, "external_id", external_ids)


def bindings_of(conn: Connection, canonical_type: str, canonical_id: str) -> list[XrefEntry]:
    """Every system's binding of one canonical record."""
    q = select(xref).where(xref.c.canonical_type == canonical_type, xref.c.canonical_id == canonical_id)
    return [_entry(r) for r in conn.execute(q.order_by(xref.c.system))]
