"""Programmatic Alembic: ``migrate(url)`` upgrades the store to the newest schema. No alembic.ini is needed."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from ledgerbridge.store.engine import create_store_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Alembic's version table for this store (named so it cannot clash with another tool's alembic_version).
VERSION_TABLE = "ledgerbridge_store_version"


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (for ``command.revision`` and friends)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(bind: Connection) -> str | None:
    return MigrationContext.configure(bind, opts={"version_table": VERSION_TABLE}).get_current_revision()


#: PostgreSQL advisory lock key held while migrating, so workers starting together migrate one at a time
MIGRATION_LOCK_KEY = 0x1EDB_5702


_THREAD_LOCK = threading.Lock()  # Alembic's context is process-global: one migration per process at a time


def _upgrade(conn: Connection, revision: str) -> str | None:
    with _THREAD_LOCK:
        return _upgrade_locked(conn, revision)


def _upgrade_locked(conn: Connection, revision: str) -> str | None:
    own = not conn.in_transaction()
    if own:
        conn.begin()  # on SQLite the store's BEGIN IMMEDIATE takes the write lock: migrators queue up
    try:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        rev = current_revision(conn)
        if own:
            conn.commit()
        return rev
    except BaseException:
        if own:
            conn.rollback()
        raise


def migrate(target: str | URL | Engine | Connection | None = None, revision: str = "head") -> str | None:
    """Upgrade the store at ``target`` (URL, Engine or Connection; default URL when None) to ``revision``.

    Safe to run any number of times: an up-to-date store is left alone. Returns the revision now current.
    A Connection already in a transaction is migrated inside it (the caller commits or rolls back; DDL is
    transactional on both backends); a Connection outside a transaction, a URL or an Engine is migrated in a
    transaction of its own, committed at the end.
    """
    if isinstance(target, Connection):
        return _upgrade(target, revision)
    engine = target if isinstance(target, Engine) else create_store_engine(target)
    try:
        with engine.begin() as conn:
            return _upgrade(conn, revision)
    finally:
        if engine is not target:
            engine.dispose()
