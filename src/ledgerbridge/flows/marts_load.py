"""Load source records straight into a reporting-store table (DuckDB), without the posting flows.

:func:`build_marts` (``flows/marts.py``) reports what the engine *posted*. Some reporting needs the PSA data as it
is (every approved time entry, posted or not): :func:`load_source_records` writes the canonical payloads of a
source's sync result (``result.records()``) into one DuckDB table with declared column types, and
:func:`load_rows` does the same for any JSON-able rows.

How (the marts' rule: never ``executemany`` into DuckDB): rows are staged as one JSON array file of exact text
(``Decimal`` and dates through ``str``: ``7.25`` stays ``7.25``), then DuckDB reads it with ``read_json`` and the
declared column types in one ``CREATE TABLE ... AS SELECT`` / ``INSERT ... SELECT``. Money and hours are
``DECIMAL(38,10)`` (never DOUBLE); keys missing from a row load as NULL; keys not declared are ignored.

The primary key is checked after the load, inside the same transaction: a key that occurs twice (or is NULL)
rolls the load back and raises :class:`~ledgerbridge.errors.RecordValidationError` naming the key, so a table that
says it is keyed by ``id`` is. ``mode="replace"`` swaps the whole table (readers see the old or the new one);
``mode="append"`` adds to it (creating it when missing).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ledgerbridge.errors import RecordValidationError

MONEY = "DECIMAL(38,10)"
#: columns of the canonical time entry (``ledgerbridge.model.entities.TimeEntry``) as a reporting table
TIME_ENTRY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR"), ("source_system", "VARCHAR"), ("version", "BIGINT"), ("project_id", "VARCHAR"),
    ("resource_id", "VARCHAR"), ("task", "VARCHAR"), ("work_date", "DATE"), ("hours", MONEY),
    ("billable", "BOOLEAN"), ("approval_status", "VARCHAR"), ("approved_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"), ("description", "VARCHAR"),
)
#: rows serialized per ``json.dumps`` call while staging (one C call per batch, not one per row)
STAGE_BATCH = 20_000
MODES = ("replace", "append")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one load did: rows loaded now, rows in the table after, the staged file's size, seconds in all and
    of those the staging (iterating ``rows`` and writing the file; a lazy iterable's own work counts here)."""

    table: str
    rows: int
    table_rows: int
    staged_bytes: int
    seconds: float
    stage_seconds: float = 0.0


def _ident(name: str) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
        raise ValueError(f"marts_load: {name!r} is not a plain table/column name (letters, digits, _)")
    return f'"{name}"'


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stage(rows: Iterable[Mapping[str, Any]], path: Path) -> int:
    """Write ``rows`` as one JSON array (values that JSON has no type for — Decimal, dates — as their ``str``)."""
    n = 0
    batch: list[Mapping[str, Any]] = []
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")

        def flush() -> None:
            if batch:
                fh.write(("," if n > len(batch) else "") + json.dumps(batch, default=str)[1:-1])
                batch.clear()

        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) >= STAGE_BATCH:
                flush()
        flush()
        fh.write("]")
    return n


def load_rows(duck: duckdb.DuckDBPyConnection, table: str, columns: Sequence[tuple[str, str]],
              rows: Iterable[Mapping[str, Any]], *, primary_key: Sequence[str] = ("id",), mode: str = "replace",
              tmpdir: Path | None = None) -> LoadReport:
    """Load ``rows`` (mappings keyed by column name) into ``table`` with the declared ``columns`` (name, DuckDB
    type) through a staged JSON file (module doc). ``primary_key`` columns must be unique and not NULL
    (``()``: no key). Returns a :class:`LoadReport`."""
    if mode not in MODES:
        raise ValueError(f"marts_load: mode={mode!r}, expected one of {MODES}")
    if not columns:
        raise ValueError("marts_load: no columns declared")
    names = [n for n, _ in columns]
    missing = [k for k in primary_key if k not in names]
    if missing:
        raise ValueError(f"marts_load: primary key column(s) {missing} are not among the declared columns {names}")
    t0 = time.perf_counter()
    tname = _ident(table)
    spec = ", ".join(f"{_ident(n)}: {_q(t)}" for n, t in columns)
    select_cols = ", ".join(_ident(n) for n in names)
    fd, raw = tempfile.mkstemp(prefix="ledgerbridge-load-", suffix=".json", dir=tmpdir)
    os.close(fd)
    path = Path(raw)
    try:
        n = _stage(rows, path)
        staged = time.perf_counter() - t0
        size = path.stat().st_size
        source = (f"SELECT {select_cols} FROM read_json({_q(str(path))}, format = 'array', columns = {{{spec}}}, "
                  "auto_detect = false)")
        duck.execute("BEGIN TRANSACTION")
        try:
            exists = bool(duck.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND "
                                       "schema_name = current_schema()", [table]).fetchone()[0])  # type: ignore[index]
            if mode == "replace" or not exists:
                verb = "CREATE OR REPLACE TABLE" if mode == "replace" else "CREATE TABLE"
                if n:
                    duck.execute(f"{verb} {tname} AS {source}")
                else:
                    duck.execute(f"{verb} {tname} ({', '.join(f'{_ident(c)} {t}' for c, t in columns)})")
            elif n:
                duck.execute(f"INSERT INTO {tname} ({select_cols}) {source}")
            if primary_key:
                _check_key(duck, table, primary_key)
            total = int(duck.execute(f"SELECT count(*) FROM {tname}").fetchone()[0])  # type: ignore[index]
            duck.execute("COMMIT")
        except BaseException:
            duck.execute("ROLLBACK")
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return LoadReport(table=table, rows=n, table_rows=total, staged_bytes=size, seconds=time.perf_counter() - t0,
                      stage_seconds=staged)


def _check_key(duck: duckdb.DuckDBPyConnection, table: str, key: Sequence[str]) -> None:
    cols = ", ".join(_ident(k) for k in key)
    nulls = " OR ".join(f"{_ident(k)} IS NULL" for k in key)
    row = duck.execute(f"SELECT {cols}, count(*) FROM {_ident(table)} GROUP BY ALL HAVING count(*) > 1 "
                       f"UNION ALL (SELECT {cols}, 1 FROM {_ident(table)} WHERE {nulls} LIMIT 1) LIMIT 1").fetchone()
    if row is not None:
        value = dict(zip(key, row[:-1], strict=True))
        what = "has a NULL key" if any(v is None for v in value.values()) else f"occurs {row[-1]} times"
        raise RecordValidationError(
            f"reporting load into {table}: key {value} {what}; the table is keyed by ({', '.join(key)}) — "
            "de-duplicate the source rows (keep the newest version per key) before loading",
            details={"table": table, "key": {k: str(v) for k, v in value.items()}})


def load_source_records(duck: duckdb.DuckDBPyConnection, records: Iterable[Mapping[str, Any]], *,
                        table: str = "time_entries", entity: str = "time_entry",
                        columns: Sequence[tuple[str, str]] = TIME_ENTRY_COLUMNS, primary_key: Sequence[str] = ("id",),
                        mode: str = "replace", tmpdir: Path | None = None) -> LoadReport:
    """Load the canonical payloads of a source's records (``SyncResult.records()``: dicts with ``entity`` and
    ``payload``) of one ``entity`` into ``table``. A sync that reports several versions of one item must be
    reduced to the newest first (the key check refuses duplicates)."""
    payloads = (r["payload"] for r in records if r.get("entity") == entity)
    return load_rows(duck, table, columns, payloads, primary_key=primary_key, mode=mode, tmpdir=tmpdir)


__all__ = ["MONEY", "TIME_ENTRY_COLUMNS", "LoadReport", "load_rows", "load_source_records"]
