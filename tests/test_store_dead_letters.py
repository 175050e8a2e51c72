"""Dead letters: filing, repeated failures, filters (queue, flow, system, entity, error kind, age) and closing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from ledgerbridge.store import InvalidStatusError, dead_letters
from ledgerbridge.store.dead_letters import NewDeadLetter

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def letter(key: str, *, queue: str = "financial", flow: str = "posting", system: str = "erp_us",
           entity: str = "journal", kind: str = "validation", code: str = "LB-V001", text: str = "bad account") -> NewDeadLetter:  # fmt: skip  # noqa: E501
    return NewDeadLetter(queue, flow, system, entity, key, {"key": key}, kind, code, text)


def test_filters(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        dead_letters.add(conn, [letter("J1"), letter("J2", kind="conflict")], seen_at=T0)
        dead_letters.add(conn, [letter("C1", queue="operational", flow="master", entity="customer")],
                         seen_at=T0 + dt.timedelta(days=2))  # fmt: skip
        dead_letters.add(conn, [letter("T1", system="psa_emea", entity="time_entry")],
                         seen_at=T0 + dt.timedelta(days=5))  # fmt: skip

        def keys(**kw: object) -> list[str]:
            return [d.item_key for d in dead_letters.list_letters(conn, **kw)]  # type: ignore[arg-type]

        assert keys() == ["J1", "J2", "C1", "T1"]
        assert keys(queue="financial") == ["J1", "J2", "T1"]
        assert keys(queue="operational") == ["C1"]
        assert keys(flow="master") == ["C1"]
        assert keys(system="psa_emea") == ["T1"]
        assert keys(entity="journal") == ["J1", "J2"]
        assert keys(error_kind="conflict") == ["J2"]
        assert keys(older_than=T0 + dt.timedelta(days=1)) == ["J1", "J2"]
        assert keys(older_than=T0 + dt.timedelta(days=3)) == ["J1", "J2", "C1"]
        assert keys(older_than=dt.timedelta(days=3650)) == []  # nothing is ten years old
        assert keys(queue="financial", entity="journal", error_kind="validation") == ["J1"]


def test_repeated_failure_bumps_attempts(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        (a,) = dead_letters.add(conn, [letter("J1")], seen_at=T0)
        ids = dead_letters.add(conn, [letter("J1", text="still bad"), letter("J1", text="worse"), letter("J9")],
                               seen_at=T0 + dt.timedelta(hours=1))  # fmt: skip
        assert ids[0] == ids[1] == a and ids[2] != a
        d = dead_letters.get(conn, a)
    assert d is not None
    assert (d.attempts, d.error_text, d.first_seen, d.last_seen) == (3, "worse", T0, T0 + dt.timedelta(hours=1))


def test_mark_replayed_then_new_failure_opens_a_new_letter(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        (a,) = dead_letters.add(conn, [letter("J1")])
        assert dead_letters.mark(conn, [a], "replayed", "fixed account mapping") == 1
        assert dead_letters.mark(conn, [a], "discarded") == 0  # only open letters change
        (b,) = dead_letters.add(conn, [letter("J1")])
        assert b != a
        assert [d.id for d in dead_letters.list_letters(conn)] == [b]
        assert {d.status for d in dead_letters.list_letters(conn, status=None)} == {"open", "replayed"}
        first = dead_letters.get(conn, a)
        assert first is not None and first.resolution == "fixed account mapping"
        with pytest.raises(InvalidStatusError):
            dead_letters.mark(conn, [b], "open")
        with pytest.raises(InvalidStatusError, match="operational"):
            dead_letters.add(conn, [letter("X", queue="urgent")])
