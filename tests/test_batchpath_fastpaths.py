"""The batch path's fast paths store and read exactly what the plain paths do (SQLite and PostgreSQL).

staging rows are built as tuples with per-value conversion caches, item_state upserts and inbox marks run as one
driver executemany on SQLite, staged lines are read with per-read decode caches, and the cyclic GC is paused per
batch. Each test states the observable result independently of how it is computed.
"""

from __future__ import annotations

import datetime as dt
import gc
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from ledgerbridge.domain.types import Posting
from ledgerbridge.flows.transactions import gc_paused
from ledgerbridge.model.base import SourceRef
from ledgerbridge.store import DecimalRangeError, inbox, item_state, staging
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import staging_lines


def posting(i: int, amount: object, *, dims: object = (("cost_center", "CC-1"), ("project", "P-1"))) -> Posting:
    return Posting("labor_cost", "US01", dt.date(2026, 9, 1 + i % 28), "USD", (("cost", amount),),
                   dims, SourceRef(system="psa", entity="time_entry", id=f"TE-{i}", version=1))  # type: ignore[arg-type]


def test_equal_amounts_with_different_exponents_store_one_canonical_text(store_engine: Engine) -> None:
    values = [Decimal("1.50"), Decimal("1.5"), Decimal("1.500"), Decimal("-0"), Decimal("0.00"), Decimal("1E+2"),
              Decimal("100"), Decimal("-12.3400")]
    expected = ["1.5", "1.5", "1.5", "0", "0", "100", "100", "-12.34"]
    with store_engine.begin() as conn:
        assert staging.stage_many(conn, [posting(i, v) for i, v in enumerate(values)]) == len(values)
        lines = staging.list_lines(conn)
    assert [str(ln.posting.amounts[0][1]) for ln in lines] == expected


def test_a_float_after_an_equal_decimal_is_still_refused(store_engine: Engine) -> None:
    with store_engine.begin() as conn, pytest.raises(DecimalRangeError, match="TE-1"):
        staging.stage_many(conn, [posting(0, Decimal("1")), posting(1, 1.0)])


def test_signalling_nan_is_refused_with_the_posting_named(store_engine: Engine) -> None:
    with store_engine.begin() as conn, pytest.raises(DecimalRangeError, match="TE-0"):
        staging.stage_many(conn, [posting(0, Decimal("sNaN"))])


def test_dimensions_given_as_lists_store_like_tuples(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        staging.stage_many(conn, [posting(0, Decimal("5"), dims=[["cost_center", "CC-1"], ["project", "P-1"]]),
                                  posting(1, Decimal("5"))])
        lines = staging.list_lines(conn)
    assert lines[0].posting.dimensions == lines[1].posting.dimensions == (("cost_center", "CC-1"), ("project", "P-1"))


def test_list_lines_reads_what_the_row_decoder_reads(store_engine: Engine) -> None:
    """Shared decode caches (same JSON text, same source version on two lines) give the per-row result."""
    rows = []
    for i in range(40):
        p = posting(i % 10, Decimal(f"{i % 3}.{i % 7}0"))
        rows.append(p)
        rows.append(Posting("revenue_accrual", p.legal_entity_id, p.date, "USD", (("billable_value", Decimal("9")),),
                            p.dimensions, p.source, 1))
    with store_engine.begin() as conn:
        staging.stage_many(conn, rows)
        fast = staging.list_lines(conn)
        plain = [staging._line(r) for r in conn.execute(select(staging_lines).order_by(staging_lines.c.id))]
    assert len(fast) == 20 and fast == plain


def test_item_state_upsert_replaces_all_three_fields_last_state_wins(store_engine: Engine) -> None:
    S = item_state.ItemState
    with store_engine.begin() as conn:
        assert item_state.upsert_many(conn, [S("psa", "time_entry", "a", 1, None, None),
                                             S("psa", "time_entry", "b", 2, 2, "approved")]) == 2
        assert item_state.upsert_many(conn, [S("psa", "time_entry", "a", 2, 2, "approved"),
                                             S("psa", "time_entry", "b", 3, None, None),
                                             S("psa", "time_entry", "a", 3, 3, "approved")]) == 2
        got = item_state.get_many(conn, "psa", "time_entry", ["a", "b", "c"])
    assert got == {"a": S("psa", "time_entry", "a", 3, 3, "approved"), "b": S("psa", "time_entry", "b", 3, None, None)}


def test_inbox_mark_counts_only_rows_that_exist(store_engine: Engine) -> None:
    at = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)
    with store_engine.begin() as conn:
        inbox.add_batch(conn, [inbox.InboxItem("psa", "time_entry", str(i), 1, {"i": i}) for i in range(5)])
        ids = [r[0] for r in conn.execute(select(inbox_t.c.id).order_by(inbox_t.c.id))]
        assert inbox.mark_processed(conn, [*ids[:3], 10_000], at=at) == 3
        assert inbox.mark_processed(conn, []) == 0
        rows = conn.execute(select(inbox_t.c.status, inbox_t.c.processed_at).order_by(inbox_t.c.id)).all()
    assert [r.status for r in rows] == ["processed"] * 3 + ["received"] * 2
    assert [r.processed_at for r in rows] == [at] * 3 + [None] * 2


def test_gc_paused_restores_the_collector_and_keeps_it_off_when_it_was_off() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outer pause switches it back on
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("batch failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
