"""Audit log: the hash chain verifies, tampering is detected, and the database refuses UPDATE and DELETE."""

from __future__ import annotations

import inspect
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ledgerbridge.store import audit
from ledgerbridge.store.audit import AuditDetailsError


def _fill(engine: Engine, n: int = 5) -> list[audit.AuditEntry]:
    out = []
    with engine.begin() as conn:
        for i in range(n):
            out.append(
                audit.append(
                    conn, "posting-flow", "journal.posted", f"US01-2026-03-LAB-{i:03d}",
                    {"amount": Decimal("1234.56"), "lines": 2, "sources": ["psa:time_entry:TE-1:1"], "i": i},
                )
            )  # fmt: skip
    return out


def _tamper(engine: Engine, sql: str) -> None:
    """Bypass the append-only trigger the way an attacker with DDL rights would."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            conn.exec_driver_sql(sql)
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
            conn.exec_driver_sql(sql)


def test_chain_links_and_verifies(store_engine: Engine) -> None:
    entries = _fill(store_engine)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[0].details["amount"] == "1234.56"
    with store_engine.connect() as conn:
        assert audit.verify(conn) == audit.VerifyResult(True, None, 5, "")
        assert audit.entries(conn, subject="US01-2026-03-LAB-002")[0].hash == entries[2].hash


def test_append_many_and_small_verify_batches(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        audit.append_many(conn, [("a", "x", f"s{i}", None) for i in range(25)])
        audit.append(conn, "b", "y", "s", {"k": "v"})
    with store_engine.connect() as conn:
        r = audit.verify(conn, batch_size=7)
    assert r.ok and r.checked == 26


def test_empty_chain_verifies(store_engine: Engine) -> None:
    with store_engine.connect() as conn:
        assert audit.verify(conn).ok


@pytest.mark.parametrize(
    "verb", ["UPDATE audit_log SET actor = 'x' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 5"]
)
def test_trigger_refuses_update_and_delete(store_engine: Engine, verb: str) -> None:
    _fill(store_engine)
    with pytest.raises(DBAPIError, match="append-only"), store_engine.begin() as conn:
        conn.exec_driver_sql(verb)
    with store_engine.connect() as conn:
        assert audit.verify(conn).ok


def test_postgres_refuses_truncate(store_engine: Engine) -> None:
    if store_engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    _fill(store_engine)
    with pytest.raises(DBAPIError, match="append-only"), store_engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE audit_log")


@pytest.mark.parametrize(
    ("sql", "bad_seq", "reason"),
    [
        ("UPDATE audit_log SET details = '{\"amount\": \"9999.99\"}' WHERE seq = 3", 3, "does not match its hash"),
        ("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1", 1, "does not match its hash"),
        ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        ("DELETE FROM audit_log WHERE seq = 5", 5, "head records entry 5"),
    ],
)
def test_verify_detects_tampering(store_engine: Engine, sql: str, bad_seq: int, reason: str) -> None:
    _fill(store_engine)
    _tamper(store_engine, sql)
    with store_engine.connect() as conn:
        r = audit.verify(conn)
    assert not r.ok
    assert r.first_bad_seq == bad_seq
    assert reason in r.reason


def test_rewritten_hash_breaks_the_next_link(store_engine: Engine) -> None:
    """A forger who edits an entry and recomputes its hash still breaks the link of the entry after it."""
    entries = _fill(store_engine)
    e = entries[1]
    forged = audit.entry_hash(e.prev_hash, e.seq, e.at, "forger", e.action, e.subject, e.details)
    _tamper(store_engine, f"UPDATE audit_log SET actor = 'forger', hash = '{forged}' WHERE seq = 2")
    with store_engine.connect() as conn:
        r = audit.verify(conn)
    assert (r.ok, r.first_bad_seq) == (False, 3)


def test_floats_in_details_are_refused(store_engine: Engine) -> None:
    with store_engine.begin() as conn, pytest.raises(AuditDetailsError, match=r"details.lines\[0\].amount"):
        audit.append(conn, "a", "b", "c", {"lines": [{"amount": 0.1}]})


def test_the_module_offers_no_way_to_change_an_entry() -> None:
    own = {n for n, f in inspect.getmembers(audit, inspect.isfunction) if f.__module__ == audit.__name__}
    assert {n for n in own if not n.startswith("_")} == {"append", "append_many", "entries", "entry_hash", "verify"}
