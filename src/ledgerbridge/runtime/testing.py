"""Helpers for tests that need a real runtime (DBOS on SQLite in a temporary folder, or a fresh PostgreSQL DB).

Use in a fixture::

    @pytest.fixture()
    def runtime(tmp_path):
        with launched_for_test(tmp_path) as rt:
            yield rt

Workflows must be defined at module level (they register at import, before the fixture launches the runtime) and
their names must be unique across the whole test session: give each one an explicit ``name=``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ledgerbridge.runtime.core import Runtime
from ledgerbridge.runtime.settings import QueueSpec, RuntimeSettings

#: The shared test PostgreSQL server (trust auth). Override with LEDGERBRIDGE_TEST_PG_URL.
PG_ADMIN_URL = os.environ.get("LEDGERBRIDGE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def settings_for_test(system_database_url: str, **overrides: Any) -> RuntimeSettings:
    """Settings tuned for tests: fast polling, quiet logs."""
    values: dict[str, Any] = {
        "system_database_url": system_database_url,
        "notification_polling_interval_sec": 0.01,
        "queue_polling_interval_sec": 0.02,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return RuntimeSettings(**values)


@contextmanager
def launched_for_test(
    tmp_path: Path, *, queues: Iterable[QueueSpec] = (), reset: bool = True, **overrides: Any
) -> Iterator[Runtime]:
    """Launch the runtime on an empty SQLite system database under ``tmp_path`` (or ``system_database_url=``),
    emptied first unless ``reset=False`` (a brand-new database); shut it down afterwards."""
    url = overrides.pop("system_database_url", f"sqlite:///{tmp_path}/dbos-system.sqlite")
    runtime = Runtime.launch(settings_for_test(url, **overrides), queues=queues, reset=reset)
    try:
        yield runtime
    finally:
        Runtime.shutdown()


def postgres_reachable(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when the test PostgreSQL answers, else the reason it does not."""
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # any failure means "not usable here"
        return f"PostgreSQL not reachable at {admin_url}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


@contextmanager
def fresh_postgres_database(admin_url: str = PG_ADMIN_URL, prefix: str = "lb_dbos_") -> Iterator[str]:
    """Create an empty database ``<prefix><random>`` and yield its URL; drop it afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
