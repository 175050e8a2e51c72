"""Reporting mart written into a PostgreSQL schema (``build_marts(..., postgres_url=...)``): every mart table with
the same rows as the DuckDB mart, money as NUMERIC(38,10), and a rebuild replaces the tables (no duplicates).
Runs on the local server (127.0.0.1:5432, user postgres), one fresh database per test, dropped afterwards."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgerbridge.flows.marts import MART_TABLES, build_marts, open_mart
from test_marts_invoices import billed, fresh  # noqa: F401  (module fixture reused)

from conftest import PG_HOST, PG_PORT, PG_USER, requires_service

pytestmark = pytest.mark.postgres
SCHEMA = "bi_mart"


def key(row: tuple) -> tuple:
    """A sort key equal on both sides (collations and NULL ordering differ between the two databases)."""
    return tuple((v is None, str(v)) for v in row)


@pytest.fixture
def pg_url() -> Iterator[str]:
    requires_service(PG_HOST, PG_PORT, "PostgreSQL")
    import psycopg

    name = f"lb_mart_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_schema_holds_the_same_rows_as_duckdb(tmp_path: Path, billed: Path, pg_url: str) -> None:  # noqa: F811
    import psycopg

    ctx = fresh(tmp_path, billed)
    as_of = dt.date(2026, 11, 30)
    first = build_marts(ctx, tmp_path / "mart.duckdb", as_of=as_of, postgres_url=pg_url, postgres_schema=SCHEMA)
    # a rebuild drops and recreates the tables: same rows, not twice as many
    report = build_marts(ctx, tmp_path / "mart.duckdb", as_of=as_of, postgres_url=pg_url, postgres_schema=SCHEMA)
    assert report.postgres_schema == SCHEMA
    assert report.postgres_rows == first.postgres_rows == report.rows
    assert report.rows["invoice_status"] > 0 and report.rows["revenue_by_method"] > 0
    mart = open_mart(report.path)
    with psycopg.connect(pg_url) as pg:
        for table in MART_TABLES:
            cols = [r[0] for r in mart.execute(f"DESCRIBE {table}").fetchall()]
            order = ", ".join(f'"{c}"' for c in cols)
            duck_rows = mart.execute(f"SELECT {order} FROM {table}").fetchall()
            pg_rows = pg.execute(f'SELECT {order} FROM {SCHEMA}."{table}"').fetchall()
            assert sorted(pg_rows, key=key) == sorted(duck_rows, key=key), table
            assert len(pg_rows) == report.rows[table]
        money = pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND data_type = 'numeric' AND numeric_precision = 38 AND numeric_scale = 10", [SCHEMA]).fetchall()
        assert {("invoice_status", "total"), ("invoice_status", "open_amount"), ("revenue_by_method", "amount"),
                ("gl_balances", "net"), ("project_margin", "margin")} <= set(money)
        assert not pg.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                              "AND data_type IN ('double precision', 'real')", [SCHEMA]).fetchall()
    mart.close()


def test_unreachable_postgres_fails_the_build_and_keeps_the_old_mart(tmp_path: Path, billed: Path,  # noqa: F811
                                                                     pg_url: str) -> None:
    ctx = fresh(tmp_path, billed)
    path = tmp_path / "mart.duckdb"
    build_marts(ctx, path, as_of=dt.date(2026, 11, 1))
    bad = pg_url.rsplit("/", 1)[0] + "/no_such_database_" + uuid.uuid4().hex[:6]
    with pytest.raises(RuntimeError, match=r"cannot connect to PostgreSQL.*postgres_url"):
        build_marts(ctx, path, as_of=dt.date(2026, 11, 30), postgres_url=bad)
    con = open_mart(path)
    assert con.execute("SELECT as_of FROM mart_info").fetchall() == [(dt.date(2026, 11, 1),)]
    con.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
