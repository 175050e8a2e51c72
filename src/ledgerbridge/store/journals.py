"""Posting runs and posted journals. A posted journal is recorded once under its deterministic id and never
edited: recording the same id with other content raises :class:`JournalConflictError`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update

from ledgerbridge.model.entities import JournalEntry
from ledgerbridge.store._sql import chunked, insert_for, where_equal
from ledgerbridge.store.errors import (
    InvalidStatusError,
    JournalConflictError,
    NotFoundError,
    RunConflictError,
    UnknownRunError,
)
from ledgerbridge.store.schema import RUN_STATUSES, posted_journal_lines, posted_journals, posting_runs
from ledgerbridge.store.types import utcnow

# --------------------------------------------------------------------------- posting runs


@dataclass(frozen=True, slots=True)
class PostingRun:
    id: str
    legal_entity_id: str
    period: str
    target_system: str
    status: str
    control_totals: Any
    started_at: dt.datetime
    finished_at: dt.datetime | None


def start_run(
    conn: Connection,
    run_id: str,
    *,
    legal_entity_id: str,
    period: str,
    target_system: str,
    control_totals: Mapping[str, Any] | None = None,
    started_at: dt.datetime | None = None,
) -> PostingRun:
    """Create the run ``run_id`` (status ``started``) or return it if it exists with the same entity, period and
    target. Run ids are deterministic, so a retried flow finds its run again."""
    stmt = insert_for(conn, posting_runs).on_conflict_do_nothing(index_elements=["id"])
    conn.execute(
        stmt,
        {
            "id": run_id,
            "legal_entity_id": legal_entity_id,
            "period": period,
            "target_system": target_system,
            "status": "started",
            "control_totals": dict(control_totals or {}),
            "started_at": started_at or utcnow(),
        },
    )
    run = get_run(conn, run_id)
    assert run is not None
    if (run.legal_entity_id, run.period, run.target_system) != (legal_entity_id, period, target_system):
        raise RunConflictError(
            f"posting run {run_id!r} exists for {run.legal_entity_id} {run.period} -> {run.target_system}, "
            f"not {legal_entity_id} {period} -> {target_system}: run ids must include entity, period and target"
        )
    return run


def get_run(conn: Connection, run_id: str) -> PostingRun | None:
    r = conn.execute(select(posting_runs).where(posting_runs.c.id == run_id)).first()
    return PostingRun(**r._mapping) if r is not None else None


def list_runs(
    conn: Connection, *, legal_entity_id: str | None = None, period: str | None = None, status: str | None = None
) -> list[PostingRun]:
    q = where_equal(select(posting_runs), posting_runs, legal_entity_id=legal_entity_id, period=period, status=status)
    return [PostingRun(**r._mapping) for r in conn.execute(q.order_by(posting_runs.c.started_at, posting_runs.c.id))]


def finish_run(
    conn: Connection,
    run_id: str,
    status: str,
    *,
    control_totals: Mapping[str, Any] | None = None,
    finished_at: dt.datetime | None = None,
) -> PostingRun:
    """Close a started run as ``posted``, ``failed`` or ``cancelled`` (optionally recording control totals).
    Finishing a run again with the same status is a no-op; another status is refused."""
    if status not in RUN_STATUSES or status == "started":
        raise InvalidStatusError(f"run status {status!r}: finish a run as 'posted', 'failed' or 'cancelled'")
    run = get_run(conn, run_id)
    if run is None:
        raise UnknownRunError(f"posting run {run_id!r} does not exist")
    if run.status == status:
        return run
    if run.status != "started":
        raise InvalidStatusError(f"posting run {run_id!r} is already {run.status}; it cannot become {status}")
    values: dict[str, Any] = {"status": status, "finished_at": finished_at or utcnow()}
    if control_totals is not None:
        values["control_totals"] = dict(control_totals)
    conn.execute(
        update(posting_runs).where(posting_runs.c.id == run_id, posting_runs.c.status == "started").values(**values)
    )
    out = get_run(conn, run_id)
    assert out is not None
    return out


# --------------------------------------------------------------------------- posted journals


@dataclass(frozen=True, slots=True)
class PostedJournalLine:
    line_no: int
    account: str
    debit: Decimal
    credit: Decimal
    currency: str
    dimensions: dict[str, str]
    functional_currency: str | None
    functional_debit: Decimal | None
    functional_credit: Decimal | None
    fx_rate: Decimal | None
    fx_rate_date: dt.date | None
    lineage: list[dict[str, Any]]  # SourceRef dicts: system, entity, id, version
    lineage_count: int


@dataclass(frozen=True, slots=True)
class PostedJournal:
    id: str
    posting_run_id: str | None
    legal_entity_id: str
    period: str
    entry_date: dt.date
    journal_type: str
    target_system: str
    target_ref: str | None
    reverses: str | None
    redated_from: str | None
    payload: dict[str, Any]
    content_hash: str
    posted_at: dt.datetime
    lines: tuple[PostedJournalLine, ...]

    def entry(self) -> JournalEntry:
        """The journal entry as it was recorded (re-validated: it still balances)."""
        return JournalEntry.model_validate(self.payload)


@dataclass(frozen=True, slots=True)
class RecordResult:
    inserted: list[str]
    existing: list[str]


def content_hash(entry: JournalEntry) -> str:
    """sha256 of the entry's canonical JSON (sorted keys; Decimals as strings)."""
    doc = json.dumps(entry.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def record_journals(
    conn: Connection,
    entries: Sequence[JournalEntry],
    *,
    target_system: str,
    posting_run_id: str | None = None,
    target_refs: Mapping[str, str] | None = None,
    posted_at: dt.datetime | None = None,
) -> RecordResult:
    """Record journal entries (headers and lines) posted to ``target_system``, in one statement batch each.

    Idempotent by journal id: an id already recorded with the same content is reported in ``existing``;
    with different content it raises :class:`JournalConflictError` (post a reversal and a new entry instead).
    """
    now = posted_at or utcnow()
    refs = target_refs or {}
    by_id: dict[str, tuple[JournalEntry, str]] = {}
    for e in entries:
        h = content_hash(e)
        prior = by_id.get(e.id)
        if prior is not None and prior[1] != h:
            raise JournalConflictError(f"journal {e.id!r} appears twice in the batch with different content")
        by_id[e.id] = (e, h)
    if not by_id:
        return RecordResult([], [])
    headers = [
        {
            "id": e.id,
            "posting_run_id": posting_run_id,
            "legal_entity_id": e.legal_entity_id,
            "period": e.period,
            "entry_date": e.entry_date,
            "journal_type": e.journal_type.value,
            "target_system": target_system,
            "target_ref": refs.get(e.id),
            "reverses": e.reverses,
            "redated_from": e.redated_from,
            "payload": e.model_dump(mode="json"),
            "content_hash": h,
            "posted_at": now,
        }
        for e, h in by_id.values()
    ]
    # check before writing (a refused batch writes nothing) and again after (a concurrent writer may have won)
    _check_same_content(conn, by_id, list(by_id))
    stmt = insert_for(conn, posted_journals).on_conflict_do_nothing(index_elements=["id"])
    inserted = {r[0] for r in conn.execute(stmt.returning(posted_journals.c.id), headers)}
    existing = [jid for jid in by_id if jid not in inserted]
    _check_same_content(conn, by_id, existing)
    lines = [
        {
            "journal_id": jid,
            "line_no": ln.line_no,
            "account": ln.account,
            "debit": ln.debit,
            "credit": ln.credit,
            "currency": ln.currency,
            "dimensions": dict(ln.dimensions),
            "functional_currency": ln.functional_currency,
            "functional_debit": ln.functional_debit,
            "functional_credit": ln.functional_credit,
            "fx_rate": ln.fx_rate,
            "fx_rate_date": ln.fx_rate_date,
            "lineage": {"refs": [r.model_dump() for r in ln.lineage], "count": ln.lineage_count},
        }
        for jid in by_id
        if jid in inserted
        for ln in by_id[jid][0].lines
    ]
    if lines:
        conn.execute(posted_journal_lines.insert(), lines)
    return RecordResult(inserted=[jid for jid in by_id if jid in inserted], existing=existing)


def _check_same_content(conn: Connection, by_id: Mapping[str, tuple[JournalEntry, str]], ids: list[str]) -> None:
    if not ids:
        return
    stored = _hashes(conn, ids)
    bad = [jid for jid in ids if jid in stored and stored[jid] != by_id[jid][1]]
    if bad:
        raise JournalConflictError(
            f"journal(s) {', '.join(sorted(bad)[:5])} already posted with different content: posted journals "
            "are never edited; post a reversing entry and a new entry with a new id"
        )


def _hashes(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in chunked(ids):
        q = select(posted_journals.c.id, posted_journals.c.content_hash).where(posted_journals.c.id.in_(part))
        out.update({i: h for i, h in conn.execute(q)})
    return out


def set_target_ref(conn: Connection, journal_id: str, target_ref: str) -> None:
    """Record the target's document number once it is known; a different number later is refused."""
    r = conn.execute(select(posted_journals.c.target_ref).where(posted_journals.c.id == journal_id)).first()
    if r is None:
        raise NotFoundError(f"journal {journal_id!r} is not recorded")
    if r.target_ref == target_ref:
        return
    if r.target_ref is not None:
        raise JournalConflictError(
            f"journal {journal_id!r} already has target ref {r.target_ref!r}; refusing to replace it by {target_ref!r}"
        )
    conn.execute(
        update(posted_journals)
        .where(posted_journals.c.id == journal_id, posted_journals.c.target_ref.is_(None))
        .values(target_ref=target_ref)
    )


def _line(m: Any) -> PostedJournalLine:
    return PostedJournalLine(
        line_no=m["line_no"],
        account=m["account"],
        debit=m["debit"],
        credit=m["credit"],
        currency=m["currency"],
        dimensions=dict(m["dimensions"]),
        functional_currency=m["functional_currency"],
        functional_debit=m["functional_debit"],
        functional_credit=m["functional_credit"],
        fx_rate=m["fx_rate"],
        fx_rate_date=m["fx_rate_date"],
        lineage=list(m["lineage"]["refs"]),
        lineage_count=int(m["lineage"]["count"]),
    )


def list_journals(
    conn: Connection,
    *,
    ids: Sequence[str] | None = None,
    legal_entity_id: str | None = None,
    period: str | None = None,
    posting_run_id: str | None = None,
) -> list[PostedJournal]:
    """Posted journals with their lines, by ids or filters, in id order."""
    q = where_equal(
        select(posted_journals), posted_journals,
        legal_entity_id=legal_entity_id, period=period, posting_run_id=posting_run_id,
    )  # fmt: skip
    if ids is not None:
        q = q.where(posted_journals.c.id.in_(list(ids)))
    heads = [dict(r._mapping) for r in conn.execute(q.order_by(posted_journals.c.id))]
    lines: dict[str, list[PostedJournalLine]] = {h["id"]: [] for h in heads}
    for part in chunked(list(lines)):
        lq = (
            select(posted_journal_lines)
            .where(posted_journal_lines.c.journal_id.in_(part))
            .order_by(posted_journal_lines.c.journal_id, posted_journal_lines.c.line_no)
        )
        for r in conn.execute(lq):
            lines[r.journal_id].append(_line(r._mapping))
    return [PostedJournal(**h, lines=tuple(lines[h["id"]])) for h in heads]


def get_journal(conn: Connection, journal_id: str) -> PostedJournal | None:
    found = list_journals(conn, ids=[journal_id])
    return found[0] if found else None
