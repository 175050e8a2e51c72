"""Small SQL helpers shared by the repositories: dialect-specific INSERT (for ON CONFLICT) and chunking."""

from __future__ import annotations

import json
import operator
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, String, Table, func, literal, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

#: rows per statement for IN (...) lookups (well under SQLite's 32766 bound parameters)
LOOKUP_CHUNK = 500
#: values per :func:`in_values` lookup (bound parameters on PostgreSQL: well under its 65535)
IN_CHUNK = 20_000


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


def _processed_rows(
    conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]], memo_columns: Iterable[str] = ()
) -> list[Any]:
    """Rows (sequences in ``cols`` order) as tuples of driver values, through each column type's (dialect-specific)
    bind processor.

    Each processor runs once per *distinct* value: for ``memo_columns`` (the caller guarantees that equal values
    there always give equal driver values: strings, dates, tuples of strings...) every value is looked up in a
    per-column cache; for the other columns the last value is remembered (a batch's constant timestamp converts once).
    """
    d = conn.dialect
    memo_set = set(memo_columns)
    procs = [(j, p, c in memo_set) for j, c in enumerate(cols)
             if (p := table.c[c].type.dialect_impl(d).bind_processor(d))]
    if not procs:
        return [tuple(r) for r in rows]
    last: list[list[Any]] = [[object(), None] for _ in procs]
    caches: list[dict[Any, Any]] = [{} for _ in procs]
    out = []
    for r in rows:
        vals = list(r)
        for m, cache, (j, p, memo) in zip(last, caches, procs, strict=True):
            v = vals[j]
            if memo:
                try:
                    got = cache.get(v, cache)
                except TypeError:  # unhashable (a list): convert it every time
                    got = p(v)
                else:
                    if got is cache:
                        got = cache[v] = p(v)
                vals[j] = got
            elif v is m[0]:
                vals[j] = m[1]
            else:
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
    get = operator.itemgetter(*cols)
    tuples = [(get(r),) for r in rows] if len(cols) == 1 else [get(r) for r in rows]
    return insert_ignore_tuples(conn, table, cols, tuples, conflict_columns, copy_threshold=copy_threshold)


def insert_ignore_tuples(
    conn: Connection,
    table: Table,
    cols: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict_columns: Sequence[str],
    *,
    copy_threshold: int | None = None,
    memo_columns: Iterable[str] = (),
) -> int:
    """:func:`bulk_insert_ignore` for rows given as sequences of Python values in ``cols`` order (no dict per row).

    ``memo_columns``: columns whose equal values always convert to equal driver values (see ``_processed_rows``),
    converted once per distinct value."""
    if not rows:
        return 0
    q = conn.dialect.identifier_preparer.quote
    col_sql = ", ".join(q(c) for c in cols)
    conflict_sql = ", ".join(q(c) for c in conflict_columns)
    name = conn.dialect.name
    if name == "sqlite":
        sql = (
            f"INSERT INTO {q(table.name)} ({col_sql}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({conflict_sql}) DO NOTHING"
        )
        return int(conn.exec_driver_sql(sql, _processed_rows(conn, table, cols, rows, memo_columns)).rowcount)
    if name != "postgresql":
        raise NotImplementedError(f"the state store supports SQLite and PostgreSQL, not {name}")
    threshold = COPY_THRESHOLD if copy_threshold is None else copy_threshold
    if len(rows) < threshold:
        pk = next(iter(table.primary_key.columns))
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns)).returning(pk)
        return len(conn.execute(stmt, [dict(zip(cols, r, strict=True)) for r in rows]).all())
    values = _processed_rows(conn, table, cols, rows, memo_columns)
    return _copy_insert_ignore(conn, table, list(cols), values, col_sql, conflict_sql)


def _copy_insert_ignore(
    conn: Connection, table: Table, cols: list[str], values: list[Any], col_sql: str, conflict_sql: str
) -> int:
    q = conn.dialect.identifier_preparer.quote
    # one temporary load table per (table, column list) and session; emptied after every use
    tmp = q(f"lb_load_{table.name}_{zlib.crc32(','.join(cols).encode()):08x}")
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


#: (statement name, dialect name) -> (driver SQL, parameter names in positional order)
_COMPILED: dict[tuple[str, str], tuple[str, list[str]]] = {}


def executemany_driver(
    conn: Connection, stmt: Callable[[], Any], names: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
) -> int:
    """Run a Core statement whose parameters are ``bindparam(name)`` s as one driver ``executemany`` of ``rows``
    (sequences of *driver* values in ``names`` order), skipping SQLAlchemy's per-row parameter processing. Only for
    positional (qmark) dialects, i.e. SQLite; returns the rows changed (summed over the batch). ``stmt`` builds the
    statement; it is compiled once per ``key`` and dialect (a one-row batch pays no compilation)."""
    if not rows:
        return 0
    got = _COMPILED.get((key, conn.dialect.name))
    if got is None:
        compiled = stmt().compile(dialect=conn.dialect)
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(names) or len(set(order)) != len(order):
            raise ValueError(f"statement parameters {order} do not match {list(names)}")
        got = _COMPILED[(key, conn.dialect.name)] = (str(compiled), order)
    sql, order = got
    if order != list(names):
        idx = [list(names).index(n) for n in order]
        rows = [tuple(r[i] for i in idx) for r in rows]
    return int(conn.exec_driver_sql(sql, list(rows)).rowcount)


def driver_value(conn: Connection, table: Table, column: str, value: Any) -> Any:
    """``value`` as the driver receives it for ``table.column`` (through the column type's bind processor)."""
    d = conn.dialect
    proc = table.c[column].type.dialect_impl(d).bind_processor(d)
    return proc(value) if proc is not None else value


def memo_column(conn: Connection, column: Any) -> tuple[Any, Callable[[Any], Any]]:
    """``(select expression, convert)`` reading ``column`` with its type's result conversion run once per distinct
    stored value. On SQLite dates and timestamps are stored as text and parsed on every row; a batch's rows share a
    few values (one ``received_at`` per landed batch), so the text is selected as is and ``convert`` parses each
    distinct text once (immutable results, shared). Elsewhere, or for types without conversion: the column, identity.
    """
    d = conn.dialect
    proc = column.type.dialect_impl(d).result_processor(d, None)
    if d.name != "sqlite" or proc is None:
        return column, _identity
    cache: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        got = cache.get(value, cache)
        if got is cache:
            got = cache[value] = proc(value)
        return got

    return type_coerce(column, String), convert


def _identity(value: Any) -> Any:
    return value


def in_values(conn: Connection, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``. On SQLite, for text or integer values, the list travels as ONE JSON parameter
    (``IN (SELECT value FROM json_each(?))``) instead of one bound parameter per value, which SQLAlchemy renders
    and coerces per element on every execution (a tenth of a 5,000-row batch's CPU). Elsewhere: ``column.in_``."""
    if conn.dialect.name == "sqlite" and all(type(v) is str or type(v) is int for v in values):
        each = func.json_each(literal(json.dumps(list(values)), String())).table_valued("value")
        return column.in_(select(each.c.value))
    return column.in_(values)


def where_equal(query: Any, table: Table, **filters: Any) -> Any:
    """``query`` narrowed by ``column = value`` for every filter whose value is not None."""
    for col, value in filters.items():
        if value is not None:
            query = query.where(table.c[col] == value)
    return query
