"""Engine factory for the state store: SQLite (WAL) by default, PostgreSQL (psycopg 3) by URL."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

#: Where the embedded store lives unless told otherwise (relative to the working directory).
DEFAULT_URL = "sqlite:///.ledgerbridge/state.sqlite"

#: Milliseconds a SQLite connection waits for a competing writer before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000

_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")


class StoreURLError(ValueError):
    """The store URL names a backend the store does not support."""


def _json_default(value: Any) -> Any:
    # Decimals become strings so money never turns into a float inside JSON.
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a JSON column: convert it to str, int or dict")


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False)


def json_dumps(value: Any) -> str:
    """JSON serializer used for every JSON column (Decimal -> string, dates -> ISO 8601)."""
    return _ENCODER.encode(value)


def normalize_url(url: str | URL | None) -> URL:
    """Parse ``url`` (default :data:`DEFAULT_URL`) and pin PostgreSQL URLs to the psycopg 3 driver.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; SQLite URLs are kept.
    """
    if url is None:
        url = DEFAULT_URL
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    u = make_url(url)
    backend, _, driver = u.drivername.partition("+")
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            raise StoreURLError(
                f"store URL driver {u.drivername!r} is not supported: use postgresql+psycopg:// (psycopg 3)"
            )
        return u.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise StoreURLError(f"store URL driver {u.drivername!r} is not supported: use sqlite:///path/to/file")
        return u
    raise StoreURLError(
        f"store URL {u.render_as_string(hide_password=True)!r} names an unsupported backend {backend!r}: "
        "use sqlite:///path/to/state.sqlite or postgresql+psycopg://user@host/db"
    )


def _sqlite_file(u: URL) -> Path | None:
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create_store_engine(
    url: str | URL | None = None, *, sqlite_begin: str = "IMMEDIATE", **engine_kwargs: Any
) -> Engine:
    """Create the SQLAlchemy engine of the state store.

    SQLite: creates the parent directory, and sets ``journal_mode=WAL``, ``synchronous=NORMAL``,
    ``foreign_keys=ON`` and ``busy_timeout`` on every connection. Every transaction SQLAlchemy begins is a real
    SQLite transaction (reads included), by default ``BEGIN IMMEDIATE``: it takes the write lock up front, so a
    transaction that reads then writes never fails half-way with "database is locked" when another writer got
    in between (it waits up to ``busy_timeout`` instead). Read-only work that should not hold the write lock
    uses :func:`snapshot_connection` (``BEGIN DEFERRED``: a WAL snapshot, never blocks or is blocked by writers).
    PostgreSQL: ``postgresql://`` URLs are normalised to psycopg 3.
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    if sqlite_begin not in _BEGIN_MODES:
        raise ValueError(f"sqlite_begin={sqlite_begin!r}: use one of {_BEGIN_MODES}")
    u = normalize_url(url)
    engine_kwargs.setdefault("json_serializer", json_dumps)
    if u.get_backend_name() == "postgresql":
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_engine(u, **engine_kwargs)

    path = _sqlite_file(u)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would begin only before DML, leaving
        # SELECTs outside the transaction) and set the pragmas the store relies on.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if path is not None:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", sqlite_begin)
        if mode not in _BEGIN_MODES:
            raise ValueError(f"sqlite_begin={mode!r}: use one of {_BEGIN_MODES}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def snapshot_connection(engine: Engine) -> Connection:
    """A connection for read-only work: on SQLite its transactions are ``BEGIN DEFERRED`` WAL snapshots that
    do not take the write lock; on PostgreSQL it is a plain connection."""
    return engine.connect().execution_options(sqlite_begin="DEFERRED")


def is_postgres(engine_or_conn: Any) -> bool:
    return bool(engine_or_conn.dialect.name == "postgresql")
