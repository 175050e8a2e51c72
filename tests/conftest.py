"""Shared fixtures (generic; owned by the store helper, readable by all).

- ``requires_service(host, port, name)``: skip a test when a TCP service is unreachable, but fail under CI=true.
  Import it with ``from conftest import requires_service`` or use the ``require_service`` fixture.
- ``store_url``: URL of a fresh, *empty* store; ``store_engine``: an engine on a clean, migrated store.
  Both run once on SQLite and once on PostgreSQL (marked ``postgres``): PostgreSQL gets one database per test
  session (``lb_test_<random>`` on 127.0.0.1:5432, user postgres), dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

PG_HOST = os.environ.get("LB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LB_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("LB_TEST_PG_USER", "postgres")


def requires_service(host: str, port: int, name: str, timeout: float = 2.0) -> None:
    """Skip the calling test (visible reason) if nothing answers at host:port; under CI=true, fail instead."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it — start {name} (see .ci/run)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def require_service() -> Callable[[str, int, str], None]:
    """The :func:`requires_service` helper as a fixture."""
    return requires_service


# --------------------------------------------------------------------------- PostgreSQL session database


def _pg_url(database: str, **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}" + (f"?{q}" if q else "")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Name of a database created for this test session (dropped at the end)."""
    requires_service(PG_HOST, PG_PORT, "PostgreSQL")
    import psycopg

    name = f"lb_test_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _pg_store_engine(pg_database: str) -> Iterator[Engine]:
    from ledgerbridge.store import create_store_engine, migrate

    engine = create_store_engine(_pg_url(pg_database))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ledgerbridge.store import create_store_engine, migrate

    path = tmp_path_factory.mktemp("store-template") / "state.sqlite"
    engine = create_store_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # checkpoints the WAL into the main file
    return path


def _clean_postgres(engine: Engine) -> None:
    from sqlalchemy import text

    from ledgerbridge.store.schema import GENESIS_HASH, metadata

    with engine.begin() as conn:
        # replica role skips user triggers, so the append-only audit_log can be emptied between tests
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        # DELETE is much cheaper than TRUNCATE on the handful of rows a test leaves
        for table in reversed(metadata.sorted_tables):
            conn.exec_driver_sql(f"DELETE FROM {table.name}")
        conn.execute(text("INSERT INTO audit_head (id, last_seq, last_hash) VALUES (1, 0, :h)"), {"h": GENESIS_HASH})


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty store (nothing migrated) on the test's backend."""
    if store_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite'}"
        return
    database = request.getfixturevalue("pg_database")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    dsn = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_url(database, options=f"-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store_engine(store_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a clean store migrated to head, on the test's backend."""
    from ledgerbridge.store import create_store_engine

    if store_backend == "sqlite":
        path = tmp_path / "state.sqlite"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        engine = create_store_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    engine = request.getfixturevalue("_pg_store_engine")
    _clean_postgres(engine)
    yield engine
