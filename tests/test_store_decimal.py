"""Decimal values round-trip exactly on both backends (0.01, large, negative, many places) and are never rounded."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select

from ledgerbridge.store import DecimalRangeError, to_exact_decimal
from ledgerbridge.store.schema import posted_journal_lines, posted_journals
from ledgerbridge.store.types import utcnow

EDGE = [
    "0.01", "-0.01", "0", "1", "-1", "100.00", "0.0000000001", "-0.0000000001",
    "999999999999999999.9999999999", "-999999999999999999.9999999999", "123456789012345678", "1E+3", "12.3450",
]  # fmt: skip


def _journal(conn: object) -> None:
    conn.execute(  # type: ignore[attr-defined]
        insert(posted_journals).values(
            id="J1", legal_entity_id="US01", period="2026-03", entry_date=dt.date(2026, 3, 31),
            journal_type="labor_cost", target_system="erp", payload={}, content_hash="x", posted_at=utcnow(),
        )
    )  # fmt: skip


def _store_and_read(engine: Engine, values: list[Decimal]) -> list[Decimal]:
    with engine.begin() as conn:
        conn.execute(posted_journal_lines.delete())
        conn.execute(posted_journals.delete())
        _journal(conn)
        conn.execute(
            insert(posted_journal_lines),
            [
                {"journal_id": "J1", "line_no": i + 1, "account": "5000", "debit": v, "credit": -v, "currency": "USD",
                 "dimensions": {}, "fx_rate": v, "lineage": {}}
                for i, v in enumerate(values)
            ],
        )  # fmt: skip
        rows = conn.execute(
            select(posted_journal_lines.c.debit, posted_journal_lines.c.credit, posted_journal_lines.c.fx_rate)
            .order_by(posted_journal_lines.c.line_no)
        ).all()  # fmt: skip
    for d, c, f in rows:
        assert c == -d and f == d
        assert isinstance(d, Decimal)
    return [r[0] for r in rows]


def test_edge_values_round_trip_exactly(store_engine: Engine) -> None:
    values = [Decimal(v) for v in EDGE]
    back = _store_and_read(store_engine, values)
    assert back == values  # equal value
    # canonical form, identical on both backends: no padding zeros, no exponent
    assert [format(b, "f") for b in back] == [
        "0.01", "-0.01", "0", "1", "-1", "100", "0.0000000001", "-0.0000000001",
        "999999999999999999.9999999999", "-999999999999999999.9999999999", "123456789012345678", "1000", "12.345",
    ]  # fmt: skip
    # sums of stored cents are exact (no float drift): 0.01 * 10 == 0.10
    assert sum(_store_and_read(store_engine, [Decimal("0.01")] * 10), Decimal(0)) == Decimal("0.10")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.decimals(min_value=Decimal("-1e17"), max_value=Decimal("1e17"), places=10, allow_nan=False),
        min_size=1,
        max_size=20,
    )
)
def test_any_numeric_28_10_value_round_trips(store_engine: Engine, values: list[Decimal]) -> None:
    assert _store_and_read(store_engine, values) == values


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0.1, "float"),
        (True, "float"),
        (Decimal("0.00000000001"), "at most 18 digits before and 10 after"),
        (Decimal("1e18"), "at most 18 digits before"),
        (Decimal("NaN"), "not finite"),
        ("12,50", "not a decimal number"),
    ],
)
def test_values_that_cannot_be_stored_exactly_are_refused(value: object, why: str) -> None:
    with pytest.raises(DecimalRangeError, match=why):
        to_exact_decimal(value)


def test_refused_value_never_reaches_the_database(store_engine: Engine) -> None:
    with pytest.raises(Exception, match="cannot be stored exactly"), store_engine.begin() as conn:
        _journal(conn)
        conn.execute(
            insert(posted_journal_lines).values(
                journal_id="J1", line_no=1, account="5000", debit=Decimal("0.123456789012"), credit=0,
                currency="USD", dimensions={}, lineage={},
            )
        )  # fmt: skip
    with store_engine.connect() as conn:
        assert conn.execute(select(posted_journal_lines)).all() == []
