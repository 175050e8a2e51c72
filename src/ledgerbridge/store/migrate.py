"""Programmatic Alembic: ``migrate(url)`` upgrades the store to the newest schema. No alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
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


def migrate(target: str | URL | Engine | Connection | None = None, revision: str = "head") -> str | None:
    """Upgrade the store at ``target`` (URL, Engine or Connection; default URL when None) to ``revision``.

    Safe to run any number of times: an up-to-date store is left alone. Returns the revision now current.
    A Connection already in a transaction is migrated inside it (the caller commits or rolls back; DDL is
    transactional on both backends); a Connection outside a transaction, a URL or an Engine is migrated in a
    transaction of its own, committed at the end.
    """
    if isinstance(target, Connection):
        cfg = alembic_config()
        cfg.attributes["connection"] = target
        command.upgrade(cfg, revision)
        return current_revision(target)
    engine = target if isinstance(target, Engine) else create_store_engine(target)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            return current_revision(conn)
    finally:
        if engine is not target:
            engine.dispose()
