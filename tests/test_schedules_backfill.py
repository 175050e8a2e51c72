"""Backfill on a tiny generated firm and a real runtime: past windows are ingested, the live cursors (a schedule's
window end, a source's cursor, the drift snapshot) do not move, and a repeated backfill runs nothing twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge import runtime as rt
from ledgerbridge.flows import schedules
from ledgerbridge.flows.context import set_current
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import cursors
from ledgerbridge.store.schema import inbox

from flows_support import make_ctx, tiny_firm

UTC = dt.UTC


def _inbox_rows(ctx: object) -> int:
    with ctx.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())


def test_windows_cut_by_day_week_month() -> None:
    a, b = dt.datetime(2026, 9, 15, tzinfo=UTC), dt.datetime(2026, 11, 2, tzinfo=UTC)
    months = schedules.windows(a, b, "month")
    assert [(x.isoformat()[:10], y.isoformat()[:10]) for x, y in months] == [
        ("2026-09-15", "2026-10-01"), ("2026-10-01", "2026-11-01"), ("2026-11-01", "2026-11-02")]
    assert len(schedules.windows(a, b, "day")) == 48
    assert schedules.windows(a, b, "week")[-1][1] == b
    with pytest.raises(ValueError, match="must be before"):
        schedules.windows(b, a, "day")
    with pytest.raises(ValueError, match="use day, week or month"):
        schedules.windows(a, b, "hour")


def test_backfill_runs_past_windows_without_moving_live_cursors_and_never_twice(tmp_path: Path) -> None:
    export = tiny_firm(tmp_path / "firm", employees=3, months=2)
    ctx = make_ctx(tmp_path / "wd", export_from=export)
    with ctx.engine.begin() as conn:  # live state a backfill must leave alone
        cursors.set_cursor(conn, schedules.CURSOR_SYSTEM, "nightly-ingest", {"window_end": "2026-11-30T02:00:00+00:00"})
        cursors.set_cursor(conn, "psa_files", "time_entries", {"drop": "abc", "offset": 123})
    before = schedules.live_cursors(ctx)
    set_current(ctx)
    try:
        with launched_for_test(tmp_path):
            progress: list[tuple[int, int]] = []
            first = schedules.backfill(ctx, "ingest", dt.datetime(2026, 9, 1, tzinfo=UTC),
                                       dt.datetime(2026, 10, 1, tzinfo=UTC), every="week",
                                       options={"system": "psa_files"},
                                       on_progress=lambda d, t: progress.append((d, t)), timeout_seconds=120)
            after_sept = _inbox_rows(ctx)
            second = schedules.backfill(ctx, "ingest", dt.datetime(2026, 9, 1, tzinfo=UTC),
                                        dt.datetime(2026, 11, 1, tzinfo=UTC), every="month",
                                        options={"system": "psa_files"}, timeout_seconds=120)
            after_all = _inbox_rows(ctx)
            again = schedules.backfill(ctx, "ingest", dt.datetime(2026, 9, 1, tzinfo=UTC),
                                       dt.datetime(2026, 11, 1, tzinfo=UTC), every="month",
                                       options={"system": "psa_files"}, timeout_seconds=120)
            windows_run = [w["workflow_id"] for w in rt.list_workflows(name="lb.flow_window", limit=100)]
            first_window = rt.result(first.windows[0]["workflow_id"])
    finally:
        set_current(None)
    assert (first.started, first.already, first.succeeded, first.failed) == (5, 0, 5, 0)
    assert progress[-1] == (5, 5)
    assert first_window["schedule"] is None and first_window["result"]["until"] == "2026-09-08T00:00:00+00:00"
    assert 0 < after_sept < after_all, "September's windows landed less than September + October"
    assert (second.started, second.already, second.succeeded) == (2, 0, 2)
    assert (again.started, again.already, again.succeeded) == (0, 2, 2), "a repeated backfill runs nothing"
    assert _inbox_rows(ctx) == after_all
    assert len(windows_run) == 7 and len(set(windows_run)) == 7
    assert schedules.live_cursors(ctx) == before, "no live cursor moved"
    assert all(w["workflow_id"].startswith("backfill:ingest:") for w in second.windows)
