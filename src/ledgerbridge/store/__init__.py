"""State store: SQLAlchemy Core schema, Alembic migrations and bulk repositories (SQLite WAL or PostgreSQL).

Typical use::

    from ledgerbridge.store import create_store_engine, migrate, inbox

    engine = create_store_engine("sqlite:///.ledgerbridge/state.sqlite")   # or postgresql://...
    migrate(engine)
    with engine.begin() as conn:                                           # one transaction per batch
        new, dup = inbox.add_batch(conn, items)

Repositories are modules taking a :class:`sqlalchemy.Connection`: ``inbox``, ``staging``, ``xref``, ``cursors``,
``item_state``, ``dead_letters``, ``journals`` (posting runs and posted journals), ``periods``, ``stewardship``,
``audit`` and ``systems``. See docs/store.md.
"""

from __future__ import annotations

from ledgerbridge.store import (
    audit,
    cursors,
    dead_letters,
    inbox,
    item_state,
    journals,
    periods,
    staging,
    stewardship,
    systems,
    tokens,
    xref,
)
from ledgerbridge.store.engine import (
    DEFAULT_URL,
    StoreURLError,
    create_store_engine,
    normalize_url,
    snapshot_connection,
)
from ledgerbridge.store.errors import (
    InvalidStatusError,
    JournalConflictError,
    NotFoundError,
    RunConflictError,
    StoreError,
    UnknownRunError,
    XrefConflictError,
)
from ledgerbridge.store.migrate import current_revision, head_revision, migrate
from ledgerbridge.store.schema import metadata
from ledgerbridge.store.types import DecimalRangeError, to_exact_decimal

__all__ = [
    "DEFAULT_URL",
    "DecimalRangeError",
    "InvalidStatusError",
    "JournalConflictError",
    "NotFoundError",
    "RunConflictError",
    "StoreError",
    "StoreURLError",
    "UnknownRunError",
    "XrefConflictError",
    "audit",
    "create_store_engine",
    "current_revision",
    "cursors",
    "dead_letters",
    "head_revision",
    "inbox",
    "item_state",
    "journals",
    "metadata",
    "migrate",
    "normalize_url",
    "periods",
    "snapshot_connection",
    "staging",
    "stewardship",
    "systems",
    "to_exact_decimal",
    "tokens",
    "xref",
]
