"""flows/marts_load.py: source records into a DuckDB reporting table through a staged file — exact decimals,
declared types, NULL vs empty text, the primary key enforced (a duplicate rolls the load back), append and
replace, and the real path: a Kantata sync (sandbox over HTTP) loaded whole."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledgerbridge.connectors.kantata import Credentials, KantataSource
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.flows.marts_load import TIME_ENTRY_COLUMNS, load_rows, load_source_records
from ledgerbridge.model.entities import ApprovalStatus, TimeEntry
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.kantata import create_app


def entry(i: int, hours: str, *, billable: bool = True, description: str = "") -> dict[str, Any]:
    te = TimeEntry(id=f"T{i}", source_system="psa", version=i + 1, project_id="P1", resource_id="R1",
                   work_date=dt.date(2026, 11, 1 + i % 28), hours=Decimal(hours), billable=billable,
                   approval_status=ApprovalStatus.APPROVED, description=description,
                   approved_at=dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC))
    return {"entity": "time_entry", "external_id": te.id, "version": te.version, "payload": te.model_dump(mode="json")}


@pytest.fixture
def duck() -> Any:
    con = duckdb.connect()
    yield con
    con.close()


def test_exact_types_nulls_and_entity_filter(duck: Any, tmp_path: Path) -> None:
    recs = [entry(0, "0.333333"), entry(1, "7.25", billable=False, description="it's \"quoted\"\n"),
            entry(2, "0.1"), {"entity": "expense", "payload": {"id": "E1"}}]
    report = load_source_records(duck, recs, tmpdir=tmp_path)
    assert (report.rows, report.table_rows) == (3, 3)
    assert list(tmp_path.iterdir()) == []  # staged file removed
    types = dict(duck.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_name = 'time_entries'").fetchall())
    assert types["hours"] == "DECIMAL(38,10)" and types["work_date"] == "DATE" and types["billable"] == "BOOLEAN"
    assert list(types) == [c for c, _ in TIME_ENTRY_COLUMNS]
    total, billable = duck.execute("SELECT sum(hours), sum(hours) FILTER (WHERE billable) FROM time_entries").fetchone()
    assert total == Decimal("7.683333") and billable == Decimal("0.433333")
    rows = dict(duck.execute("SELECT id, description FROM time_entries").fetchall())
    assert rows == {"T0": "", "T1": "it's \"quoted\"\n", "T2": ""}  # empty text is not NULL
    assert duck.execute("SELECT task IS NULL, work_date, approved_at FROM time_entries WHERE id = 'T1'").fetchone()[
        :2] == (True, dt.date(2026, 11, 2))


def test_duplicate_key_rolls_back_and_names_it(duck: Any) -> None:
    load_source_records(duck, [entry(0, "1"), entry(1, "2")])
    with pytest.raises(RecordValidationError, match=r"'id': 'T5'.*occurs 2 times"):
        load_source_records(duck, [entry(5, "1"), entry(5, "3"), entry(6, "1")])
    assert duck.execute("SELECT count(*), sum(hours) FROM time_entries").fetchone() == (2, Decimal("3"))
    with pytest.raises(RecordValidationError, match="NULL key"):
        load_rows(duck, "t", [("id", "VARCHAR"), ("n", "INTEGER")], [{"n": 1}])


def test_append_and_replace(duck: Any) -> None:
    cols = [("id", "VARCHAR"), ("amount", "DECIMAL(38,10)")]
    load_rows(duck, "m", cols, [{"id": "a", "amount": Decimal("1.10")}], mode="append")
    r = load_rows(duck, "m", cols, [{"id": "b", "amount": "2.205", "extra": 1}], mode="append")
    assert (r.rows, r.table_rows) == (1, 2)
    assert duck.execute("SELECT sum(amount) FROM m").fetchone()[0] == Decimal("3.305")
    with pytest.raises(RecordValidationError):
        load_rows(duck, "m", cols, [{"id": "a", "amount": 1}], mode="append")
    r = load_rows(duck, "m", cols, [], mode="replace")
    assert (r.rows, r.table_rows) == (0, 0)
    assert duck.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'm' AND "
                        "column_name = 'amount'").fetchone()[0] == "DECIMAL(38,10)"


def test_failing_source_leaves_old_table_and_no_staged_file(duck: Any, tmp_path: Path) -> None:
    load_source_records(duck, [entry(0, "1")], tmpdir=tmp_path)

    def broken() -> Any:
        yield entry(1, "2")
        raise RuntimeError("page 2 refused")

    with pytest.raises(RuntimeError, match="page 2"):
        load_source_records(duck, broken(), tmpdir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert duck.execute("SELECT id FROM time_entries").fetchall() == [("T0",)]


def test_bad_arguments(duck: Any) -> None:
    with pytest.raises(ValueError, match="plain table"):
        load_rows(duck, "x; DROP TABLE y", [("id", "VARCHAR")], [])
    with pytest.raises(ValueError, match="mode"):
        load_rows(duck, "x", [("id", "VARCHAR")], [], mode="merge")
    with pytest.raises(ValueError, match="primary key"):
        load_rows(duck, "x", [("n", "INTEGER")], [])


def test_kantata_sync_loaded_whole(duck: Any) -> None:
    app = create_app()
    store = app.state.store
    store.freeze(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    ws = store.add_workspace("W")
    user = store.add_user("U")
    minutes = [30 + (7 * i) % 600 for i in range(450)]  # 3 pages of 200; many minutes do not divide into exact hours
    ids = [store.add_time_entry(ws, user, f"2026-11-{1 + i % 28:02d}", m, billable=i % 3 > 0)
           for i, m in enumerate(minutes)]
    store.approve(store.submit(ids))
    store.unfreeze()
    with serve_in_thread(app) as base:
        src = KantataSource.from_options("kt", {"url": f"{base}/api/v1"},
                                         Credentials("demo-client", "demo-secret", "demo-refresh"))
        try:
            result = src.sync(None)
        finally:
            src.close()
    assert result.errors == []
    report = load_source_records(duck, result.records())
    assert report.table_rows == len(ids)
    expected = sum((TimeEntry.model_validate(r["payload"]).hours for r in result.records()), Decimal(0))
    assert duck.execute("SELECT sum(hours) FROM time_entries").fetchone()[0] == expected
    assert duck.execute("SELECT count(*) FROM time_entries WHERE approval_status = 'approved'").fetchone()[0] == 450
    assert duck.execute("SELECT count(*) FROM time_entries WHERE billable").fetchone()[0] == 300
