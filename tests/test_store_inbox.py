"""Inbox: dedupe on the idempotency key across batches and within a batch, on both backends and both paths."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from ledgerbridge.store import InvalidStatusError, inbox
from ledgerbridge.store.inbox import InboxItem


def _items(ids: range, version: int = 1, system: str = "psa_emea") -> list[InboxItem]:
    return [InboxItem(system, "time_entry", f"TE-{i}", version, {"hours": "7.50", "n": i}) for i in ids]


def test_dedupe_across_batches(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, _items(range(100))) == (100, 0)
    with store_engine.begin() as conn:
        # 50 already seen, 50 new; a new version of an old item is a new fact
        assert inbox.add_batch(conn, _items(range(50, 150))) == (50, 50)
        assert inbox.add_batch(conn, _items(range(10), version=2)) == (10, 0)
    with store_engine.connect() as conn:
        assert inbox.count_by_status(conn) == {"received": 160}


def test_dedupe_within_one_batch(store_engine: Engine) -> None:
    batch = _items(range(20)) + _items(range(5)) + _items(range(5))
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, iter(batch), batch_id="b1") == (20, 10)
        rows = inbox.fetch_received(conn, limit=100)
    assert [r.external_id for r in rows] == [f"TE-{i}" for i in range(20)]
    assert {r.batch_id for r in rows} == {"b1"}
    assert rows[0].payload == {"hours": "7.50", "n": 0}
    assert rows[0].idempotency_key == "psa_emea:time_entry:TE-0:1"


def test_explicit_idempotency_key_wins(store_engine: Engine) -> None:
    a = InboxItem("psa", "time_entry", "TE-1", 3, {}, idempotency_key="psa:time_entry:TE-1:3:approved")
    b = InboxItem("psa", "time_entry", "TE-1", 3, {}, idempotency_key="psa:time_entry:TE-1:3:recalled")
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, [a, b, a]) == (2, 1)
        assert set(inbox.get_many(conn, [a.key, b.key, "nope"])) == {a.key, b.key}


def test_large_batch_copy_path_dedupes_like_insert_path(store_engine: Engine) -> None:
    """copy_threshold=1 forces the PostgreSQL COPY path (SQLite has one path); results must be identical."""
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, _items(range(3000)), copy_threshold=1) == (3000, 0)
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, _items(range(2500, 3500)) + _items(range(3400, 3500)), copy_threshold=1) == (
            500,
            600,
        )
        assert inbox.add_batch(conn, _items(range(3500, 3510)), copy_threshold=10**9) == (10, 0)
        assert inbox.count_by_status(conn) == {"received": 3510}


def test_rolled_back_batch_leaves_nothing(store_engine: Engine) -> None:
    with pytest.raises(RuntimeError), store_engine.begin() as conn:
        inbox.add_batch(conn, _items(range(10)))
        raise RuntimeError("crash before commit")
    with store_engine.begin() as conn:
        assert inbox.add_batch(conn, _items(range(10))) == (10, 0)


def test_mark_processed_and_dead(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        inbox.add_batch(conn, _items(range(5)))
        ids = [r.id for r in inbox.fetch_received(conn)]
        assert inbox.mark_processed(conn, ids[:3]) == 3
        assert inbox.mark(conn, ids[3:4], "dead") == 1
        assert [r.id for r in inbox.fetch_received(conn)] == ids[4:]
        assert inbox.count_by_status(conn) == {"processed": 3, "dead": 1, "received": 1}
        with pytest.raises(InvalidStatusError, match="processed"):
            inbox.mark(conn, ids, "received")


@pytest.mark.parametrize("copy_threshold", [1, 10**9])
def test_decimals_and_dates_in_payloads_become_strings(store_engine: Engine, copy_threshold: int) -> None:
    item = InboxItem("psa", "expense", "EX-1", 1, {"amount": Decimal("12.10"), "date": dt.date(2026, 3, 1)})
    with store_engine.begin() as conn:
        inbox.add_batch(conn, [item], copy_threshold=copy_threshold)
        (row,) = inbox.fetch_received(conn)
    assert row.payload == {"amount": "12.10", "date": "2026-03-01"}
