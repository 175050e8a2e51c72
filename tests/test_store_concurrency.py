"""Concurrency sanity: WAL readers and writers on SQLite, and concurrent writers on both backends."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.store import audit, inbox, journals, snapshot_connection, staging
from ledgerbridge.store.inbox import InboxItem
from ledgerbridge.store.schema import inbox as inbox_table


def posting(i: int) -> Posting:
    return Posting(
        txn_type="labor_cost", legal_entity_id="US01", date=dt.date(2026, 3, 15), currency="USD",
        amounts=(("cost", Decimal("412.50")),), dimensions=(("project", "P1"),),
        source=SourceRef(system="psa", entity="time_entry", id=f"TE-{i}", version=1),
    )  # fmt: skip


def _items(ids: range) -> list[InboxItem]:
    return [InboxItem("psa", "time_entry", f"TE-{i}", 1, {"n": i}) for i in ids]


def _count(conn: object) -> int:
    return len(conn.execute(select(inbox_table.c.id)).all())  # type: ignore[attr-defined]


def _run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # collected and re-raised in the test thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_sqlite_wal_reader_keeps_its_snapshot_while_a_writer_commits(store_engine: Engine) -> None:
    if store_engine.dialect.name != "sqlite":
        pytest.skip("WAL snapshot semantics are SQLite's")
    with store_engine.begin() as conn:
        inbox.add_batch(conn, _items(range(10)))
    with snapshot_connection(store_engine) as reader:
        reader.begin()
        assert _count(reader) == 10
        # a second connection writes and commits while the reader's transaction is open: not blocked
        with store_engine.begin() as writer:
            assert inbox.add_batch(writer, _items(range(10, 15))) == (5, 0)
        assert _count(reader) == 10  # same snapshot
        reader.rollback()
        assert _count(reader) == 15  # new transaction, new snapshot


def test_concurrent_writers_never_duplicate_nor_fork_the_audit_chain(store_engine: Engine) -> None:
    def worker(offset: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(8):
                with store_engine.begin() as conn:
                    # overlapping keys between the two workers: each key lands once
                    inbox.add_batch(conn, _items(range(b * 50, b * 50 + 60 + offset)))
                    audit.append(conn, f"worker-{offset}", "inbox.batch", f"batch-{b}", {"offset": offset})

        return run

    _run_threads([worker(0), worker(7)])
    with store_engine.connect() as conn:
        assert _count(conn) == 7 * 50 + 67
        result = audit.verify(conn)
    assert result.ok and result.checked == 16


def test_two_runs_never_claim_the_same_line(store_engine: Engine) -> None:
    """Read-then-write transactions from two threads: on SQLite this needs BEGIN IMMEDIATE (with DEFERRED the
    second writer fails with "database is locked"); on PostgreSQL the row locks decide."""
    with store_engine.begin() as conn:
        staging.stage_many(conn, [posting(i) for i in range(400)])
        for r in ("run-a", "run-b"):
            journals.start_run(conn, r, legal_entity_id="US01", period="2026-03", target_system="erp")
    claimed: dict[str, set[int]] = {"run-a": set(), "run-b": set()}

    def claimer(run_id: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(10):
                with store_engine.begin() as conn:
                    claimed[run_id] = {ln.id for ln in staging.claim_for_run(conn, run_id, limit=25)}

        return run

    _run_threads([claimer("run-a"), claimer("run-b")])
    assert not claimed["run-a"] & claimed["run-b"]
    assert len(claimed["run-a"] | claimed["run-b"]) == 400
