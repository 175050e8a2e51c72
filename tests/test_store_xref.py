"""Xref: bindings looked up in both directions, updated in place, and conflicts refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from ledgerbridge.store import XrefConflictError, xref
from ledgerbridge.store.xref import XrefEntry


def test_both_directions(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        n = xref.upsert_many(conn, [XrefEntry("customer", f"C{i}", "erp_us", f"NS-{1000 + i}", "3") for i in range(700)]
                             + [XrefEntry("customer", "C1", "crm", "001A")])  # fmt: skip
        assert n == 701
        fwd = xref.lookup_many(conn, "customer", "erp_us", ["C1", "C699", "C-missing"])
        back = xref.lookup_external_many(conn, "customer", "erp_us", ["NS-1001", "NS-1699", "NS-0"])
        assert {k: v.external_id for k, v in fwd.items()} == {"C1": "NS-1001", "C699": "NS-1699"}
        assert {k: v.canonical_id for k, v in back.items()} == {"NS-1001": "C1", "NS-1699": "C699"}
        assert fwd["C1"].version_synced == "3" and fwd["C1"].last_synced_at is not None
        assert [(b.system, b.external_id) for b in xref.bindings_of(conn, "customer", "C1")] == [
            ("crm", "001A"), ("erp_us", "NS-1001"),
        ]  # fmt: skip
        # the type is part of the key: a project may reuse the id
        assert xref.lookup_external_many(conn, "project", "erp_us", ["NS-1001"]) == {}


def test_upsert_updates_binding(store_engine: Engine) -> None:
    t1 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    with store_engine.begin() as conn:
        xref.upsert_many(conn, [XrefEntry("project", "P1", "erp_us", "PRJ-1", "1")])
        xref.upsert_many(conn, [XrefEntry("project", "P1", "erp_us", "PRJ-1b", "2")], synced_at=t1)
        got = xref.lookup_many(conn, "project", "erp_us", ["P1"])["P1"]
        assert (got.external_id, got.version_synced, got.last_synced_at) == ("PRJ-1b", "2", t1)
        assert xref.lookup_external_many(conn, "project", "erp_us", ["PRJ-1"]) == {}


def test_external_id_bound_twice_is_refused(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        xref.upsert_many(conn, [XrefEntry("customer", "C1", "erp_us", "NS-1")])
    with store_engine.begin() as conn:
        with pytest.raises(XrefConflictError, match="'NS-1' is bound to 'C1', not 'C2'"):
            xref.upsert_many(conn, [XrefEntry("customer", "C3", "erp_us", "NS-3"), XrefEntry("customer", "C2", "erp_us", "NS-1")])  # noqa: E501
        with pytest.raises(XrefConflictError, match="both 'C4' and 'C5'"):
            xref.upsert_many(conn, [XrefEntry("customer", "C4", "erp_us", "NS-9"), XrefEntry("customer", "C5", "erp_us", "NS-9")])  # noqa: E501
        # nothing of a refused batch was written
        assert xref.lookup_many(conn, "customer", "erp_us", ["C3", "C4", "C5"]) == {}
