"""Cursors and item state: the small key-value parts of the store."""

from __future__ import annotations

from sqlalchemy import Engine

from ledgerbridge.store import cursors, item_state
from ledgerbridge.store.item_state import ItemState


def test_cursor_get_set(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        assert cursors.get_cursor(conn, "psa", "time_entries") is None
        cursors.set_cursor(conn, "psa", "time_entries", {"modified_since": "2026-03-01T00:00:00Z", "page": 2})
        cursors.set_cursor(conn, "psa", "expenses", "etag-17")
        cursors.set_cursor(conn, "psa", "time_entries", {"modified_since": "2026-03-02T00:00:00Z"})
        assert cursors.get_cursor(conn, "psa", "time_entries") == {"modified_since": "2026-03-02T00:00:00Z"}
        assert cursors.get_cursor(conn, "psa", "expenses") == "etag-17"
        assert set(cursors.list_cursors(conn, "psa")) == {("psa", "time_entries"), ("psa", "expenses")}


def test_item_state_get_and_upsert_many(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        fresh = [ItemState("psa", "time_entry", f"TE-{i}", latest_version=1) for i in range(600)]
        assert item_state.upsert_many(conn, fresh) == 600
        item_state.upsert_many(conn, [
            ItemState("psa", "time_entry", "TE-1", latest_version=2, posted_version=1, posted_status="approved"),
            ItemState("psa", "time_entry", "TE-1", latest_version=3, posted_version=1, posted_status="approved"),
        ])  # fmt: skip
        got = item_state.get_many(conn, "psa", "time_entry", ["TE-1", "TE-2", "TE-599", "TE-x"])
    assert set(got) == {"TE-1", "TE-2", "TE-599"}
    assert got["TE-1"] == ItemState("psa", "time_entry", "TE-1", 3, 1, "approved")
    assert got["TE-2"] == ItemState("psa", "time_entry", "TE-2", 1, None, None)
