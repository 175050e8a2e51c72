"""Alembic environment of the state store. Run through :func:`ledgerbridge.store.migrate` (no alembic.ini needed):
it passes an open connection in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from ledgerbridge.store.engine import create_store_engine
from ledgerbridge.store.migrate import VERSION_TABLE
from ledgerbridge.store.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite needs batch mode for ALTER TABLE in later migrations
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_store_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the state store migrations run online only: call ledgerbridge.store.migrate(url)")
run_migrations_online()
