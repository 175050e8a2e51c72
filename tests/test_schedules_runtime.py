"""Schedules on a real runtime (DBOS schedule rows on SQLite): applied from config, listed, paused and resumed (a
per-second cron really fires, and stops firing while paused), triggered (the window from the live cursor runs and
moves it), and the overlap policy (skip while the previous window is still waiting; queue behind it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge import runtime as rt
from ledgerbridge.config.schema import ScheduleConfig
from ledgerbridge.flows import schedules
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.flows.main_job import demo_config
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import cursors


def _ctx(workdir: Path, specs: list[dict[str, Any]]) -> FlowContext:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(workdir)
    cfg = cfg.model_copy(update={"schedules": [ScheduleConfig.model_validate(s) for s in specs]})
    ctx = FlowContext(cfg, workdir=workdir)
    ctx.migrate()
    return ctx


@pytest.fixture()
def launched(tmp_path: Path) -> Any:
    def start(specs: list[dict[str, Any]]) -> FlowContext:
        ctx = _ctx(tmp_path / "wd", specs)
        set_current(ctx)
        return ctx

    with launched_for_test(tmp_path):
        yield start
    set_current(None)


def _ticks(name: str) -> list[dict[str, Any]]:
    return [w for w in rt.list_workflows(name="lb.schedule_tick", limit=1000)
            if w["workflow_id"].startswith(f"sched-{name}-")]


def test_apply_list_pause_resume_a_firing_schedule(launched: Any) -> None:
    ctx = launched([{"name": "every-second", "flow": "post", "cron": "* * * * * *", "overlap": "queue",
                     "options": {"entities": []}},
                    {"name": "nightly", "flow": "ingest", "cron": "0 2 * * *", "options": {"system": "psa_files"}}])
    assert schedules.apply(ctx) == ["every-second", "nightly"]
    assert schedules.apply(ctx) == ["every-second", "nightly"], "applying again is an upsert"
    rows = {r["name"]: r for r in schedules.list_schedules(ctx)}
    assert rows["nightly"]["cron"] == "0 2 * * *" and rows["nightly"]["flow"] == "ingest"
    assert rows["every-second"]["status"] == "ACTIVE" and rows["every-second"]["overlap"] == "queue"
    deadline = time.monotonic() + 8
    while not _ticks("every-second") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ticks("every-second"), "the per-second schedule fired"
    assert schedules.pause("every-second")["status"] == "PAUSED"
    time.sleep(1.1)  # a tick already sleeping may still land
    n = len(_ticks("every-second"))
    time.sleep(1.5)
    assert len(_ticks("every-second")) == n, "a paused schedule does not fire"
    assert schedules.resume("every-second")["status"] == "ACTIVE"
    deadline = time.monotonic() + 8
    while len(_ticks("every-second")) == n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_ticks("every-second")) > n, "resumed, it fires again"
    assert _ticks("nightly") == []
    with pytest.raises(KeyError, match="no schedule named 'nope'"):
        schedules.pause("nope")


def test_trigger_runs_the_window_from_the_live_cursor_and_moves_it(launched: Any) -> None:
    ctx = launched([{"name": "monthly-post", "flow": "post", "cron": "0 3 1 * *", "options": {"entities": []}}])
    schedules.apply(ctx)
    wf = schedules.trigger("monthly-post")
    tick = rt.result(wf, timeout_seconds=30)
    assert "enqueued" in tick, tick
    window = rt.result(tick["enqueued"], timeout_seconds=30)
    assert window["flow"] == "post" and window["end"] == tick["end"]
    assert window["start"] <= tick["end"] and window["result"] == {"runs": []}
    with ctx.engine.connect() as conn:
        assert cursors.get_cursor(conn, schedules.CURSOR_SYSTEM, "monthly-post") == {"window_end": tick["end"]}
    # the next tick starts where the live cursor stopped
    tick2 = rt.result(schedules.trigger("monthly-post"), timeout_seconds=30)
    assert tick2["start"] == tick["end"]
    rt.result(tick2["enqueued"], timeout_seconds=30)
    rows = {r["name"]: r for r in schedules.list_schedules(ctx)}
    assert rows["monthly-post"]["cursor"] == tick2["end"]


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_overlap_policy_while_the_previous_window_waits(launched: Any, overlap: str) -> None:
    ctx = launched([{"name": "win", "flow": "post", "cron": "0 3 1 * *", "overlap": overlap,
                     "options": {"entities": []}}])
    schedules.apply(ctx)
    waiting = rt.enqueue(schedules.schedule_queue("win"), schedules.window_workflow, "post",
                         "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00", {"entities": []}, "win",
                         workflow_id="window:win:earlier", delay_seconds=60)
    tick = rt.result(schedules.trigger("win"), timeout_seconds=30)
    if overlap == "skip":
        assert "skipped" in tick and waiting in tick["skipped"]
        assert "enqueued" not in tick
    else:
        assert tick["enqueued"].startswith("window:win:")
        assert rt.result(tick["enqueued"], timeout_seconds=30)["flow"] == "post"
    rt.cancel(waiting)


def test_a_failing_window_is_dead_lettered_keeps_the_cursor_and_a_later_success_closes_it(launched: Any) -> None:
    from ledgerbridge.runtime import WorkflowNotFinishedError
    from ledgerbridge.store import dead_letters

    ctx = launched([{"name": "bad", "flow": "post", "cron": "0 3 1 * *", "options": {"entities": ["XX99"]}}])
    schedules.apply(ctx)
    ticks = []
    for _ in range(2):
        tick = rt.result(schedules.trigger("bad"), timeout_seconds=30)
        ticks.append(tick)
        with pytest.raises(Exception, match="XX99") as err:
            rt.result(tick["enqueued"], timeout_seconds=30)
        assert not isinstance(err.value, WorkflowNotFinishedError)
    assert ticks[0]["start"] == ticks[1]["start"], "the cursor did not move: the next tick retries from it"
    with ctx.engine.connect() as conn:
        (letter,) = dead_letters.list_letters(conn, flow=schedules.FLOW)
        assert cursors.get_cursor(conn, schedules.CURSOR_SYSTEM, "bad") is None
    assert (letter.queue, letter.system, letter.attempts) == ("operational", "bad", 2)
    assert "XX99" in letter.error_text and "live cursor did not move" in letter.error_text
    # fixed in the configuration: re-applied, the next tick covers the whole gap and closes the letter
    ctx.config = ctx.config.model_copy(update={"schedules": [ScheduleConfig.model_validate(
        {"name": "bad", "flow": "post", "cron": "0 3 1 * *", "options": {"entities": []}})]})
    schedules.apply(ctx)
    tick = rt.result(schedules.trigger("bad"), timeout_seconds=30)
    assert tick["start"] == ticks[0]["start"]
    assert rt.result(tick["enqueued"], timeout_seconds=30)["cursor"] == {"window_end": tick["end"]}
    with ctx.engine.connect() as conn:
        assert dead_letters.list_letters(conn, flow=schedules.FLOW) == []
        assert dead_letters.get(conn, letter.id).status == "replayed"  # type: ignore[union-attr]
