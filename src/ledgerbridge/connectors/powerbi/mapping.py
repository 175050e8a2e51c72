"""Curated mart tables <-> Power BI push-dataset JSON (pure, no I/O).

- :func:`column_type`: DuckDB column type -> Power BI push column ``dataType`` (``Int64``, ``Double``, ``Decimal``,
  ``Boolean``, ``DateTime``, ``String``).
- :func:`table_schema` / :func:`dataset_request`: the ``Table`` and ``CreateDatasetRequest`` bodies.
- :func:`row_json`: one mart row -> a JSON-able dict. Money stays exact: a ``Decimal`` becomes a JSON number only
  when that number reads back as the same decimal (always for amounts of up to 15 significant digits); otherwise
  the row is refused instead of silently rounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ledgerbridge.errors import PermanentError, RecordValidationError

SYSTEM = "powerbi"
MAX_TABLES = 75
MAX_COLUMNS = 75
MAX_STRING = 4000
_INT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


def column_type(duck_type: str) -> str:
    t = duck_type.upper()
    if t.startswith("DECIMAL") or t.startswith("NUMERIC"):
        return "Decimal"
    if t in _INT_TYPES:
        return "Int64"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return "Double"
    if t == "BOOLEAN":
        return "Boolean"
    if t.startswith("DATE") or t.startswith("TIMESTAMP"):
        return "DateTime"
    if t in ("VARCHAR", "TEXT") or t.startswith("VARCHAR"):
        return "String"
    raise PermanentError(f"{SYSTEM}: mart column type {duck_type!r} has no Power BI push data type", code="LB-P001")


def table_schema(name: str, columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``{"name", "columns": [{"name", "dataType"}]}`` from ``(column, duckdb type)`` pairs."""
    if len(columns) > MAX_COLUMNS:
        raise PermanentError(f"{SYSTEM}: table {name} has {len(columns)} columns; push datasets allow "
                             f"{MAX_COLUMNS} — publish fewer columns", code="LB-P001")
    return {"name": name, "columns": [{"name": c, "dataType": column_type(t)} for c, t in columns]}


def dataset_request(name: str, tables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if len(tables) > MAX_TABLES:
        raise PermanentError(f"{SYSTEM}: {len(tables)} tables; push datasets allow {MAX_TABLES}", code="LB-P001")
    return {"name": name, "defaultMode": "Push", "tables": [dict(t) for t in tables]}


def same_schema(held: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    def cols(t: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(str(c.get("name")), str(c.get("dataType", "")).lower()) for c in t.get("columns") or []]

    return cols(held) == cols(wanted)


def json_value(value: Any, *, table: str, column: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise RecordValidationError(f"{SYSTEM}: {table}.{column}: a text of {len(value)} characters; Power BI "
                                        f"keeps at most {MAX_STRING}", code="LB-V001")
        return value
    if isinstance(value, Decimal):
        as_float = float(value)
        if Decimal(repr(as_float)) != value:
            raise RecordValidationError(f"{SYSTEM}: {table}.{column}: {value} cannot travel as a JSON number "
                                        "without rounding (more than 15 significant digits)", code="LB-V001")
        return int(value) if value == value.to_integral_value() and abs(value) < 2 ** 53 else as_float
    if isinstance(value, float):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise PermanentError(f"{SYSTEM}: {table}.{column}: value of type {type(value).__name__} has no JSON form",
                         code="LB-P001")


def row_json(names: Sequence[str], values: Sequence[Any], *, table: str) -> dict[str, Any]:
    return {n: json_value(v, table=table, column=n) for n, v in zip(names, values, strict=True)}
