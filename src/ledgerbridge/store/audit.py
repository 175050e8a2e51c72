"""Audit log: an append-only, hash-chained record of every decision that touched money.

Each entry's ``hash`` is sha256 over a canonical JSON of ``(prev_hash, seq, at, actor, action, subject,
details)``; ``prev_hash`` is the previous entry's hash (``GENESIS_HASH`` for the first). Appenders lock the
single ``audit_head`` row first, so the chain never forks, on SQLite or PostgreSQL. Database triggers refuse
UPDATE and DELETE on ``audit_log``; this module has no function that changes or removes an entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update

from ledgerbridge.store.schema import GENESIS_HASH, audit_head, audit_log
from ledgerbridge.store.types import utcnow


class AuditDetailsError(TypeError):
    """Details hold a value that would not survive storage unchanged (e.g. a float)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None = None  # first entry whose link or content does not check out
    checked: int = 0
    reason: str = ""


def _plain(value: Any, path: str) -> Any:
    """Details as plain JSON that reads back identically: Decimal/date -> str; floats refused."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        raise AuditDetailsError(f"audit details {path} = {value!r}: floats are refused; pass a Decimal or str")
    raise AuditDetailsError(f"audit details {path}: {type(value).__name__} cannot be stored; convert it to str")


def entry_hash(
    prev_hash: str, seq: int, at: dt.datetime, actor: str, action: str, subject: str, details: Any
) -> str:
    doc = {
        "prev_hash": prev_hash,
        "seq": seq,
        "at": at.astimezone(dt.UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def append_many(
    conn: Connection,
    entries: Iterable[tuple[str, str, str, Mapping[str, Any] | None]],
    *,
    at: dt.datetime | None = None,
) -> list[AuditEntry]:
    """Append ``(actor, action, subject, details)`` entries in order, in the caller's transaction."""
    todo = list(entries)
    if not todo:
        return []
    now = (at or utcnow()).astimezone(dt.UTC)
    # lock the head first: the row lock (PostgreSQL) / write lock (SQLite) serialises appenders
    head = conn.execute(
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(last_seq=audit_head.c.last_seq + len(todo))
        .returning(audit_head.c.last_seq, audit_head.c.last_hash)
    ).one()
    seq = int(head.last_seq) - len(todo)
    prev = str(head.last_hash)
    out: list[AuditEntry] = []
    for actor, action, subject, details in todo:
        seq += 1
        plain = _plain(dict(details or {}), "details")
        h = entry_hash(prev, seq, now, actor, action, subject, plain)
        out.append(AuditEntry(seq, now, actor, action, subject, plain, prev, h))
        prev = h
    conn.execute(audit_log.insert(), [_asdict(e) for e in out])
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(last_hash=prev))
    return out


def _asdict(e: AuditEntry) -> dict[str, Any]:
    return {f: getattr(e, f) for f in AuditEntry.__slots__}


def append(
    conn: Connection,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
    *,
    at: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry; returns it with its sequence number and hash."""
    return append_many(conn, [(actor, action, subject, details)], at=at)[0]


def entries(
    conn: Connection, *, subject: str | None = None, since_seq: int = 0, limit: int = 1000
) -> list[AuditEntry]:
    q = select(audit_log).where(audit_log.c.seq > since_seq)
    if subject is not None:
        q = q.where(audit_log.c.subject == subject)
    return [AuditEntry(**r._mapping) for r in conn.execute(q.order_by(audit_log.c.seq).limit(limit))]


def verify(conn: Connection, *, batch_size: int = 10_000) -> VerifyResult:
    """Walk the whole chain: each entry must follow the previous (seq + 1, prev_hash link) and its hash must
    match its content; the last entry must be the one the head records (a cut-off tail is detected)."""
    prev_seq, prev_hash, checked = 0, GENESIS_HASH, 0
    while True:
        rows = conn.execute(
            select(audit_log).where(audit_log.c.seq > prev_seq).order_by(audit_log.c.seq).limit(batch_size)
        ).all()
        for r in rows:
            if r.seq != prev_seq + 1:
                return VerifyResult(False, prev_seq + 1, checked, f"entry {prev_seq + 1} is missing")
            if r.prev_hash != prev_hash:
                return VerifyResult(False, r.seq, checked, f"entry {r.seq} does not link to entry {prev_seq}")
            h = entry_hash(r.prev_hash, r.seq, r.at, r.actor, r.action, r.subject, r.details)
            if h != r.hash:
                return VerifyResult(False, r.seq, checked, f"entry {r.seq} content does not match its hash")
            prev_seq, prev_hash = r.seq, r.hash
            checked += 1
        if len(rows) < batch_size:
            break
    head = conn.execute(select(audit_head.c.last_seq, audit_head.c.last_hash).where(audit_head.c.id == 1)).one()
    if (head.last_seq, head.last_hash) != (prev_seq, prev_hash):
        return VerifyResult(
            False, prev_seq + 1, checked, f"chain ends at entry {prev_seq} but the head records entry {head.last_seq}"
        )
    return VerifyResult(True, None, checked, "")
