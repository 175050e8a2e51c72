"""Migrations: upgrade from empty, idempotent, and the migrated schema equals the declared metadata."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ledgerbridge.store import (
    StoreURLError,
    create_store_engine,
    current_revision,
    head_revision,
    metadata,
    migrate,
    normalize_url,
)
from ledgerbridge.store.migrate import VERSION_TABLE

EXPECTED_TABLES = {
    "systems", "xref", "cursors", "inbox", "item_state", "staging_lines", "posting_runs", "posted_journals",
    "posted_journal_lines", "dead_letters", "audit_log", "audit_head", "periods", "stewardship_items",
    "api_tokens",  # 0002 service tokens
    "invoices",  # 0003 billing
    "master_records",  # 0004 master data
    "recon_runs", "recon_cells", "alert_state",  # 0005 reconciliation runs and alerts
}  # fmt: skip


def test_upgrade_from_empty_twice(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        assert set(inspect(engine).get_table_names()) == set()
        assert migrate(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert tables == EXPECTED_TABLES | {VERSION_TABLE}
        # second run: nothing to do, same revision, nothing lost
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO cursors (system, stream, value, updated_at) "
                                 "VALUES ('psa', 'time', '{\"page\": 3}', CURRENT_TIMESTAMP)")
        assert migrate(store_url) == head_revision()
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert conn.exec_driver_sql("SELECT count(*) FROM cursors").scalar() == 1
    finally:
        engine.dispose()


def test_migrated_schema_matches_metadata(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
            diff = compare_metadata(ctx, metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_migrate_inside_callers_transaction_is_rolled_back_with_it(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            conn.begin()
            assert migrate(conn) == head_revision()
            conn.rollback()
        assert "inbox" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_second_migrator_waits_for_the_first(store_url: str) -> None:
    """Workers starting together: while one migration is uncommitted, another waits (PostgreSQL advisory lock,
    SQLite write lock), then finds the store at head instead of creating the tables a second time."""
    engine = create_store_engine(store_url)
    results: list[object] = []

    def second() -> None:
        try:
            results.append(migrate(store_url))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    try:
        with engine.connect() as first:
            first.begin()
            migrate(first)
            waiter = threading.Thread(target=second)
            waiter.start()
            waiter.join(timeout=0.5)
            assert waiter.is_alive(), results  # blocked behind the first migration
            first.commit()
        waiter.join(timeout=30)
        assert results == [head_revision()]
    finally:
        engine.dispose()


def test_migrate_on_a_connection_outside_a_transaction_commits(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            migrate(conn)
            assert not conn.in_transaction()
        assert "inbox" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_postgres_urls_are_normalised_to_psycopg() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h:5433/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url(None).render_as_string() == "sqlite:///.ledgerbridge/state.sqlite"
    with pytest.raises(StoreURLError, match="psycopg"):
        normalize_url("postgresql+psycopg2://u@h/db")
    with pytest.raises(StoreURLError, match="unsupported backend 'mysql'"):
        normalize_url("mysql://u@h/db")


def test_default_sqlite_store_creates_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        engine = create_store_engine()
        with engine.connect() as conn:
            pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in
                       ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        engine.dispose()
    finally:
        os.chdir(cwd)
    assert (tmp_path / ".ledgerbridge" / "state.sqlite").is_file()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 1  # NORMAL
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] > 0
