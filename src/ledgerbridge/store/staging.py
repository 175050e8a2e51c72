"""Staging: validated ledger-impacting lines (domain ``Posting`` s) waiting for a posting run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic_core import from_json
from sqlalchemy import Connection, Text, and_, select, type_coerce, update

from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.store._sql import chunked, insert_ignore_tuples, memo_column, where_equal
from ledgerbridge.store.errors import InvalidStatusError, UnknownRunError
from ledgerbridge.store.schema import posting_runs, staging_lines
from ledgerbridge.store.types import DecimalRangeError, exact_decimal_text, to_exact_decimal, utcnow

UNIQUE_KEY = ("source_system", "source_entity", "source_id", "source_version", "txn_type", "sign")


@dataclass(frozen=True, slots=True)
class StageItem:
    """A Posting to stage, with its ledger period (default: the month of ``posting.date``, ``YYYY-MM``) and,
    when a late item was moved to a later open period, the period it came from."""

    posting: Posting
    period: str | None = None
    redated_from: str | None = None


@dataclass(frozen=True, slots=True)
class StagedLine:
    id: int
    posting: Posting
    period: str
    status: str
    posting_run_id: str | None
    redated_from: str | None
    created_at: dt.datetime


#: staging_lines columns in the order :func:`_row` gives them
_COLUMNS = ("txn_type", "legal_entity_id", "period", "entry_date", "currency", "amounts", "dimensions", "source_system",
            "source_entity", "source_id", "source_version", "sign", "status", "redated_from", "created_at")
#: columns whose equal values always store the same (strings, dates, tuples of strings): converted once per value
_MEMO_COLUMNS = ("entry_date", "amounts", "dimensions")


def _row(item: Posting | StageItem, now: dt.datetime, texts: dict[Decimal, str]) -> tuple[Any, ...]:
    """One staging row in ``_COLUMNS`` order. ``texts`` caches canonical amount texts (equal Decimals have the
    same canonical text, see :func:`exact_decimal_text`)."""
    if isinstance(item, StageItem):
        p, period, redated_from = item.posting, item.period, item.redated_from
    else:
        p, period, redated_from = item, None, None
    sign = p.sign
    if sign != 1 and sign != -1:
        raise ValueError(f"staging {p.txn_type} for {p.source}: sign {sign} must be 1 or -1")
    amounts = []
    for name, value in p.amounts:
        text = texts.get(value) if type(value) is Decimal and value.is_finite() else None
        if text is None:
            try:
                text = exact_decimal_text(value, what=f"amount {name!r}")
            except DecimalRangeError as exc:
                raise DecimalRangeError(f"staging {p.txn_type} for {p.source}: {exc}") from None
            if type(value) is Decimal:
                texts[value] = text
        amounts.append((name, text))
    d = p.date
    src = p.source
    return (
        p.txn_type, p.legal_entity_id, period or f"{d.year:04d}-{d.month:02d}", d, p.currency, tuple(amounts),
        p.dimensions,
        src.system, src.entity, src.id, src.version, sign, "staged", redated_from, now,
    )


def stage_many(
    conn: Connection,
    items: Iterable[Posting | StageItem],
    *,
    created_at: dt.datetime | None = None,
    copy_threshold: int | None = None,
) -> int:
    """Stage postings; a delta already staged (same source version, txn_type and sign) is skipped.

    Returns the number of new lines. Amounts are stored exactly (never rounded); a float or an amount with
    more than 10 decimals is refused with the posting named. On PostgreSQL, ``copy_threshold`` rows or more
    (default ``_sql.COPY_THRESHOLD``) load through COPY.
    """
    now = created_at or utcnow()
    texts: dict[Decimal, str] = {}
    rows = [_row(it, now, texts) for it in items]
    return insert_ignore_tuples(conn, staging_lines, _COLUMNS, rows, UNIQUE_KEY, copy_threshold=copy_threshold,
                                memo_columns=_MEMO_COLUMNS)


def _line(r: Any) -> StagedLine:
    m = r._mapping
    posting = Posting(
        txn_type=m["txn_type"],
        legal_entity_id=m["legal_entity_id"],
        date=m["entry_date"],
        currency=m["currency"],
        amounts=tuple((k, to_exact_decimal(v)) for k, v in m["amounts"]),
        dimensions=tuple((k, v) for k, v in m["dimensions"]),
        source=SourceRef(
            system=m["source_system"], entity=m["source_entity"], id=m["source_id"], version=m["source_version"]
        ),
        sign=m["sign"],
    )
    return StagedLine(
        id=m["id"],
        posting=posting,
        period=m["period"],
        status=m["status"],
        posting_run_id=m["posting_run_id"],
        redated_from=m["redated_from"],
        created_at=m["created_at"],
    )


#: staging_lines columns in the order :class:`_LineReader` unpacks them
_READ_COLUMNS = ("id", "txn_type", "legal_entity_id", "period", "entry_date", "currency", "amounts", "dimensions",
                 "source_system", "source_entity", "source_id", "source_version", "sign", "status", "posting_run_id",
                 "redated_from", "created_at")


class _LineReader:
    """Rows of ``_READ_COLUMNS`` -> :class:`StagedLine`, the same as :func:`_line` but converting each distinct
    stored value once per read: the JSON texts of amounts and dimensions (decoded with pydantic-core's parser; on
    SQLite they are read as text, on PostgreSQL the driver hands back lists) and the source reference (one SourceRef,
    validated, per source version; the lines of one version share it — it is immutable)."""

    def __init__(self, conn: Connection) -> None:
        self.raw_json = conn.dialect.name == "sqlite"
        self.amounts: dict[str, tuple[tuple[str, Decimal], ...]] = {}
        self.dims: dict[str, tuple[tuple[str, str], ...]] = {}
        self.refs: dict[tuple[str, str, str, int], SourceRef] = {}
        cols: list[Any] = [staging_lines.c[c] for c in _READ_COLUMNS]
        if self.raw_json:
            for j in (6, 7):
                cols[j] = type_coerce(cols[j], Text)
        cols[4], self.date_of = memo_column(conn, cols[4])  # few distinct entry dates, one created_at per batch
        cols[16], self.created_of = memo_column(conn, cols[16])
        self.columns = cols

    def __call__(self, row: Any) -> StagedLine:
        (id_, txn_type, entity, period, entry_date, currency, amounts, dims, system, source_entity, source_id,
         version, sign, status, run_id, redated_from, created_at) = row
        if self.raw_json:
            got_amounts = self.amounts.get(amounts)
            if got_amounts is None:
                got_amounts = self.amounts[amounts] = tuple((k, to_exact_decimal(v)) for k, v in from_json(amounts))
            got_dims = self.dims.get(dims)
            if got_dims is None:
                got_dims = self.dims[dims] = tuple((k, v) for k, v in from_json(dims))
        else:
            got_amounts = tuple((k, to_exact_decimal(v)) for k, v in amounts)
            got_dims = tuple((k, v) for k, v in dims)
        key = (system, source_entity, source_id, version)
        ref = self.refs.get(key)
        if ref is None:
            ref = self.refs[key] = SourceRef(system=system, entity=source_entity, id=source_id, version=version)
        posting = Posting(txn_type=txn_type, legal_entity_id=entity, date=self.date_of(entry_date), currency=currency,
                          amounts=got_amounts, dimensions=got_dims, source=ref, sign=sign)
        return StagedLine(id=id_, posting=posting, period=period, status=status, posting_run_id=run_id,
                          redated_from=redated_from, created_at=self.created_of(created_at))


def list_lines(
    conn: Connection,
    *,
    status: str | None = None,
    legal_entity_id: str | None = None,
    period: str | None = None,
    posting_run_id: str | None = None,
    txn_types: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[StagedLine]:
    read = _LineReader(conn)
    q = where_equal(
        select(*read.columns), staging_lines,
        status=status, legal_entity_id=legal_entity_id, period=period, posting_run_id=posting_run_id,
    )  # fmt: skip
    if txn_types is not None:
        q = q.where(staging_lines.c.txn_type.in_(list(txn_types)))
    q = q.order_by(staging_lines.c.id)
    if limit is not None:
        q = q.limit(limit)
    return [read(r) for r in conn.execute(q).all()]


def claim_for_run(
    conn: Connection, run_id: str, *, txn_types: Sequence[str] | None = None, limit: int | None = None
) -> list[StagedLine]:
    """Move staged lines of the run's legal entity and period into the run and return every line the run holds.

    Idempotent: a run resumed after a crash gets back the lines it already claimed (plus any new ones). Two
    workers never claim the same line (the UPDATE re-checks ``status = 'staged'`` under the row lock).
    """
    run = conn.execute(
        select(posting_runs.c.legal_entity_id, posting_runs.c.period, posting_runs.c.status).where(
            posting_runs.c.id == run_id
        )
    ).first()
    if run is None:
        raise UnknownRunError(f"posting run {run_id!r} does not exist: create it with journals.start_run() first")
    if run.status != "started":
        raise InvalidStatusError(f"posting run {run_id!r} is {run.status}: only a started run can claim lines")
    cond = and_(
        staging_lines.c.status == "staged",
        staging_lines.c.legal_entity_id == run.legal_entity_id,
        staging_lines.c.period == run.period,
    )
    if txn_types is not None:
        cond = and_(cond, staging_lines.c.txn_type.in_(list(txn_types)))
    target: Any = cond
    if limit is not None:
        pick = select(staging_lines.c.id).where(cond).order_by(staging_lines.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        target = staging_lines.c.id.in_(pick.scalar_subquery())
    conn.execute(update(staging_lines).where(target).values(status="in_run", posting_run_id=run_id))
    return list_lines(conn, status="in_run", posting_run_id=run_id)


def mark_posted(conn: Connection, run_id: str, line_ids: Iterable[int] | None = None) -> int:
    """Mark the run's claimed lines (all, or ``line_ids``) posted; returns lines changed."""
    return _move(conn, run_id, line_ids, "posted")


def release(conn: Connection, run_id: str, line_ids: Iterable[int] | None = None) -> int:
    """Give the run's claimed lines back to staging (e.g. the run failed before anything was posted)."""
    return _move(conn, run_id, line_ids, "staged")


def mark_dead(conn: Connection, run_id: str, line_ids: Iterable[int]) -> int:
    """Take claimed lines out of the run for good (their dead letter carries the reason)."""
    return _move(conn, run_id, line_ids, "dead")


def _move(conn: Connection, run_id: str, line_ids: Iterable[int] | None, status: str) -> int:
    base = and_(staging_lines.c.posting_run_id == run_id, staging_lines.c.status == "in_run")
    values: dict[str, Any] = {"status": status}
    if status == "staged":
        values["posting_run_id"] = None
    if line_ids is None:
        return int(conn.execute(update(staging_lines).where(base).values(**values)).rowcount)
    n = 0
    for part in chunked(list(line_ids)):
        n += conn.execute(update(staging_lines).where(base, staging_lines.c.id.in_(part)).values(**values)).rowcount
    return n
