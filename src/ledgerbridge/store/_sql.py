"""Small SQL helpers shared by the repositories: dialect-specific INSERT (for ON CONFLICT) and chunking."""

from __future__ import annotations

import operator
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

#: rows per statement for IN (...) lookups (well under SQLite's 32766 bound parameters)
LOOKUP_CHUNK = 500


def insert_for(conn: Connection, table: Table) -> Any:
    """``INSERT`` construct of the connection's dialect, which offers ``on_conflict_do_nothing/update``."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the state store supports SQLite and PostgreSQL, not {name}")


def chunked(items: Sequence[T] | Iterable[T], size: int = LOOKUP_CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for it in items:
        batch.append(it)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


#: On PostgreSQL, batches of at least this many rows go through COPY into a temporary table, then one
#: ``INSERT .. SELECT .. ON CONFLICT DO NOTHING``; smaller ones use a multi-row INSERT .. RETURNING. Measured
#: (bench/bench_store.py and docs/store.md): COPY is already faster from 100-row batches, 4-8x faster at 10k.
COPY_THRESHOLD = 100


def _processed_rows(conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Any]) -> list[Any]:
    """Rows as sequences of driver values, through each column type's (dialect-specific) bind processor."""
    d = conn.dialect
    procs = [(j, p) for j, c in enumerate(cols) if (p := table.c[c].type.dialect_impl(d).bind_processor(d))]
    get = operator.itemgetter(*cols)
    if len(cols) == 1:
        return [(get(r),) for r in rows]
    if not procs:
        return [get(r) for r in rows]
    # remember the last input per column: constant columns (a batch's timestamp) convert once
    memo: list[list[Any]] = [[object(), None] for _ in procs]
    out = []
    for r in rows:
        vals = list(get(r))
        for m, (j, p) in zip(memo, procs, strict=True):
            v = vals[j]
            if v is not m[0]:
                m[0], m[1] = v, p(v)
            vals[j] = m[1]
        out.append(tuple(vals))
    return out


def bulk_insert_ignore(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    *,
    copy_threshold: int | None = None,
) -> int:
    """Insert ``rows`` (dicts with the same keys) skipping any that hit the unique key ``conflict_columns``.

    Returns the number of rows actually inserted. One statement batch on the caller's connection and
    transaction: SQLite ``executemany`` of ``INSERT .. ON CONFLICT DO NOTHING``; PostgreSQL multi-row
    ``INSERT .. ON CONFLICT DO NOTHING RETURNING`` or, from ``copy_threshold`` rows, ``COPY`` + ``INSERT .. SELECT``.
    """
    if not rows:
        return 0
    cols = list(rows[0].keys())
    q = conn.dialect.identifier_preparer.quote
    col_sql = ", ".join(q(c) for c in cols)
    conflict_sql = ", ".join(q(c) for c in conflict_columns)
    name = conn.dialect.name
    if name == "sqlite":
        sql = (
            f"INSERT INTO {q(table.name)} ({col_sql}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({conflict_sql}) DO NOTHING"
        )
        return int(conn.exec_driver_sql(sql, _processed_rows(conn, table, cols, rows)).rowcount)
    if name != "postgresql":
        raise NotImplementedError(f"the state store supports SQLite and PostgreSQL, not {name}")
    threshold = COPY_THRESHOLD if copy_threshold is None else copy_threshold
    if len(rows) < threshold:
        pk = next(iter(table.primary_key.columns))
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns)).returning(pk)
        return len(conn.execute(stmt, list(rows)).all())
    return _copy_insert_ignore(conn, table, cols, rows, col_sql, conflict_sql)


def _copy_insert_ignore(
    conn: Connection, table: Table, cols: list[str], rows: Sequence[dict[str, Any]], col_sql: str, conflict_sql: str
) -> int:
    q = conn.dialect.identifier_preparer.quote
    # one temporary load table per (table, column list) and session; emptied after every use
    tmp = q(f"lb_load_{table.name}_{zlib.crc32(','.join(cols).encode()):08x}")
    values = _processed_rows(conn, table, cols, rows)
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} AS SELECT {col_sql} FROM {q(table.name)} WITH NO DATA")
        with cur.copy(f"COPY {tmp} ({col_sql}) FROM STDIN") as cp:
            for v in values:
                cp.write_row(v)
        cur.execute(
            f"INSERT INTO {q(table.name)} ({col_sql}) SELECT {col_sql} FROM {tmp} "
            f"ON CONFLICT ({conflict_sql}) DO NOTHING"
        )
        inserted = int(cur.rowcount)
        cur.execute(f"TRUNCATE {tmp}")
    return inserted


def where_equal(query: Any, table: Table, **filters: Any) -> Any:
    """``query`` narrowed by ``column = value`` for every filter whose value is not None."""
    for col, value in filters.items():
        if value is not None:
            query = query.where(table.c[col] == value)
    return query
