"""Runtime core on a real DBOS (SQLite in tmp_path): settings, launch, idempotent workflow ids, strict JSON
checkpoints, errors surviving replay, management helpers, logging."""

from __future__ import annotations

import ast
import logging
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledgerbridge import __version__
from ledgerbridge import runtime as rt
from ledgerbridge.errors import PermanentError, RecordValidationError
from ledgerbridge.runtime.core import sqlite_engine
from ledgerbridge.runtime.testing import launched_for_test

CALLS: Counter[str] = Counter()
GATE = threading.Event()
ENTERED = threading.Event()


@rt.step("t_core.count")
def count(label: str) -> int:
    CALLS[label] += 1
    return CALLS[label]


@rt.workflow("t_core.two_counts")
def two_counts(label: str) -> dict[str, Any]:
    first = count(f"{label}:1")
    second = count(f"{label}:2")
    return {"first": first, "second": second, "id": rt.current_workflow_id()}


@rt.step("t_core.refuse")
def refuse(item: str) -> None:
    raise PermanentError(f"{item}: forbidden", code="LB-P003", details={"item": item})


@rt.workflow("t_core.catches")
def catches(item: str) -> dict[str, Any]:
    try:
        refuse(item)
    except PermanentError as err:
        after = count(f"catches:{item}")
        return {"caught": err.code, "class": type(err).__name__, "details": err.details, "after": after}
    return {"caught": None}


@rt.workflow("t_core.fails")
def fails(item: str) -> None:
    count(f"fails:{item}")
    raise RecordValidationError(f"invoice {item}: customer has no tax code — map one", code="LB-V001",
                                details={"item": item})


@rt.workflow("t_core.echo")
def echo(value: Any) -> Any:
    return value


@rt.workflow("t_core.bad_output")
def bad_output() -> Any:
    return {"amount": Decimal("1.10")}


@rt.step("t_core.wait_gate")
def wait_gate() -> str:
    ENTERED.set()
    assert GATE.wait(10), "gate never opened"
    return "passed"


@rt.workflow("t_core.gated")
def gated(label: str) -> dict[str, Any]:
    g = wait_gate()
    n = count(f"gated:{label}")
    return {"gate": g, "n": n}


@rt.workflow("t_core.parent")
def parent(n: int) -> dict[str, Any]:
    direct = rt.run(echo, n)
    started = rt.result(rt.start(echo, n + 1), timeout_seconds=5)
    status = rt.get_workflow(rt.current_workflow_id() or "", with_data=False)
    return {"direct": direct, "started": started, "my_status": status["status"] if status else None}


TICKS: list[tuple[Any, Any]] = []


@rt.workflow("t_core.tick")
def tick(scheduled_at: datetime, context: Any) -> str:
    TICKS.append((scheduled_at, context))
    return scheduled_at.isoformat()


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[rt.Runtime]:
    CALLS.clear()
    GATE.clear()
    ENTERED.clear()
    with launched_for_test(tmp_path) as launched:
        yield launched


# ------------------------------------------------------------------------------------------------------- settings


def test_default_settings_pin_version_and_executor() -> None:
    s = rt.RuntimeSettings()
    assert s.system_database_url == "sqlite:///.ledgerbridge/dbos.sqlite"
    assert s.app_name == "ledgerbridge" and s.executor_id == "local" and s.log_level == "INFO"
    assert s.application_version == f"{__version__}+wf{rt.WORKFLOW_SCHEMA_VERSION}" == rt.DEFAULT_APPLICATION_VERSION
    assert rt.RuntimeSettings.from_dict({"executor_id": "w1"}).executor_id == "w1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system_database_url": "mysql://x"}, "not supported"),
        ({"app_name": "lb"}, "at least 3"),
        ({"application_version": " "}, "pin it"),
        ({"executor_id": ""}, "fixed id"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"queue_polling_interval_sec": 0}, ">= 0.001"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rt.RuntimeSettings(**kwargs)
    with pytest.raises(ValueError, match="unknown setting"):
        rt.RuntimeSettings.from_dict({"executorid": "x"})


def test_calls_before_launch_say_what_to_do() -> None:
    rt.Runtime.shutdown()
    with pytest.raises(rt.RuntimeNotLaunchedError, match=r"Runtime\.launch"):
        rt.list_workflows()


# ------------------------------------------------------------------------------------------------------- launch


@pytest.mark.parametrize(("wal", "mode"), [(True, "wal"), (False, "delete")])
def test_sqlite_system_database_journal_mode(tmp_path: Path, wal: bool, mode: str) -> None:
    with launched_for_test(tmp_path, sqlite_wal=wal):
        assert rt.run(echo, {"x": 1}) == {"x": 1}
    with sqlite3.connect(tmp_path / "dbos-system.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode


def test_unreachable_system_database_names_the_url_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://lb:secret@127.0.0.1:{port}/runtime"
    with pytest.raises(rt.RuntimeLaunchError, match=rf"lb:\*\*\*@127\.0\.0\.1:{port}/runtime.*check the URL") as info:
        rt.Runtime.launch(rt.RuntimeSettings(system_database_url=url, log_level="CRITICAL"))
    assert "secret" not in str(info.value)
    assert not rt.Runtime.is_launched()


def test_system_database_clock_has_milliseconds_and_other_strftime_calls_are_sqlites(tmp_path: Path) -> None:
    engine = sqlite_engine(f"sqlite:///{tmp_path}/clock.sqlite")
    try:
        with engine.connect() as conn:
            now_ms = conn.execute(sa.text("SELECT CAST(strftime('%s','now') * 1000 AS INTEGER)")).scalar_one()
            assert abs(now_ms - time.time() * 1000) < 5000
            stamps = {conn.execute(sa.text("SELECT strftime('%s','now') * 1000")).scalar_one() for _ in range(30)}
            assert any(stamp % 1000 for stamp in stamps), "whole seconds only: the millisecond clock is not in use"
            assert conn.execute(sa.text("SELECT strftime('%Y-%m-%d', '2026-03-01 10:00:00')")).scalar_one() == \
                "2026-03-01"
            assert conn.execute(sa.text("SELECT strftime('%H:%M', '2026-03-01 10:05:00', '+1 hour')")).scalar_one() \
                == "11:05"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    finally:
        engine.dispose()


def test_launch_twice_is_refused(runtime: rt.Runtime) -> None:
    with pytest.raises(RuntimeError, match="already launched"):
        rt.Runtime.launch(runtime.settings)


def test_creates_the_sqlite_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/deeper/sys.sqlite"
    with launched_for_test(tmp_path, system_database_url=url):
        assert rt.run(echo, [1, "a"]) == [1, "a"]
    assert (tmp_path / "nested" / "deeper" / "sys.sqlite").exists()


# ------------------------------------------------------------------------------------------------------- workflows


def test_workflow_id_is_an_idempotency_key(runtime: rt.Runtime) -> None:
    first = rt.run(two_counts, "inv-42", workflow_id="post:inv-42@1")
    again = rt.run(two_counts, "inv-42", workflow_id="post:inv-42@1")
    started = rt.start(two_counts, "inv-42", workflow_id="post:inv-42@1")
    assert started == "post:inv-42@1" and rt.result(started, timeout_seconds=10) == first == again
    assert first == {"first": 1, "second": 1, "id": "post:inv-42@1"}
    assert dict(CALLS) == {"inv-42:1": 1, "inv-42:2": 1}
    other = rt.start(two_counts, "inv-42", workflow_id="post:inv-42@2")
    assert rt.result(other, timeout_seconds=10)["first"] == 2


def test_checkpoints_are_strict_json(runtime: rt.Runtime, tmp_path: Path) -> None:
    value = {"a": [1, 2], "b": [None, True, 1.5, "x", {"c": -3}]}
    wf = rt.start(echo, value)
    assert rt.result(wf, timeout_seconds=10) == value
    assert rt.get_workflow(wf)["input"] == {"args": [value], "kwargs": {}}  # type: ignore[index]
    with pytest.raises(TypeError, match=r"\$\.args\[0\]\.a is a tuple.*pass a list"):
        rt.start(echo, {"a": (1, 2)})
    with pytest.raises(TypeError, match=r"\$\.args\[0\]\.amount is a decimal\.Decimal.*model_dump"):
        rt.start(echo, {"amount": Decimal("12.50")})
    with pytest.raises(TypeError, match="non-string key"):
        rt.start(echo, {1: "x"})
    with pytest.raises(TypeError, match="finite"):
        rt.start(echo, float("nan"))
    with pytest.raises(TypeError, match="Decimal"):
        rt.run(bad_output)
    with sqlite3.connect(tmp_path / "dbos-system.sqlite") as conn:
        kinds = {row[0] for row in conn.execute("SELECT serialization FROM workflow_status")}
    assert kinds == {"ledgerbridge_json_v1"}


def test_errors_are_checkpointed_as_json_and_replay_with_their_class(runtime: rt.Runtime, tmp_path: Path) -> None:
    out = rt.run(catches, "INV-7", workflow_id="catches-1")
    assert out == {"caught": "LB-P003", "class": "PermanentError", "details": {"item": "INV-7"}, "after": 1}
    with sqlite3.connect(tmp_path / "dbos-system.sqlite") as conn:
        (error,) = conn.execute(
            "SELECT error FROM operation_outputs WHERE workflow_uuid = 'catches-1' AND function_id = 1"
        ).fetchone()
    assert error.startswith('{"__lb_error__":{"type":"PermanentError"')
    # A fork from step 2 replays step 1's recorded error: the workflow must still catch it as a PermanentError.
    forked = rt.fork("catches-1", 2)
    assert forked["forked_from"] == "catches-1" and forked["workflow_id"] != "catches-1"
    again = rt.result(forked["workflow_id"], timeout_seconds=10)
    assert again == {**out, "after": 2}
    assert CALLS["catches:INV-7"] == 2


def test_failed_workflow_reraises_its_error_and_lists_it(runtime: rt.Runtime) -> None:
    wf = rt.start(fails, "INV-9", workflow_id="fails-1")
    with pytest.raises(RecordValidationError, match="no tax code") as info:
        rt.result(wf, timeout_seconds=10)
    assert info.value.details == {"item": "INV-9"}
    (row,) = rt.list_workflows(status="ERROR")
    assert row["workflow_id"] == "fails-1" and row["name"] == "t_core.fails"
    assert row["error"]["code"] == "LB-V001" and row["error"]["kind"] == "validation"
    assert row["executor_id"] == "local" and row["app_version"] == rt.DEFAULT_APPLICATION_VERSION


# ------------------------------------------------------------------------------------------------------- management


def test_list_workflows_and_steps(runtime: rt.Runtime) -> None:
    for i in range(3):
        rt.run(two_counts, f"L{i}", workflow_id=f"list-{i}")
    rt.run(echo, "e", workflow_id="echo-1")
    rows = rt.list_workflows(name="t_core.two_counts", with_data=True)
    assert [r["workflow_id"] for r in rows] == ["list-2", "list-1", "list-0"]
    assert rows[0]["input"] == {"args": ["L2"], "kwargs": {}} and rows[0]["output"]["id"] == "list-2"
    assert all(r["status"] == "SUCCESS" and r["created_at"].endswith("+00:00") for r in rows)
    assert len(rt.list_workflows(limit=2)) == 2
    assert {r["workflow_id"] for r in rt.list_workflows(status=["SUCCESS"], newest_first=False)} == {
        "list-0", "list-1", "list-2", "echo-1"}
    with pytest.raises(ValueError, match="unknown workflow status"):
        rt.list_workflows(status="DONE")
    steps = rt.workflow_steps("list-1")
    assert [(s["step"], s["name"], s["output"], s["error"]) for s in steps] == [
        (1, "t_core.count", 1, None), (2, "t_core.count", 1, None)]
    assert rt.get_workflow("nope") is None
    with pytest.raises(KeyError, match="no workflow"):
        rt.cancel("nope")


def test_cancel_then_resume_continues_from_the_last_finished_step(runtime: rt.Runtime) -> None:
    wf = rt.start(gated, "c1", workflow_id="gated-1")
    assert ENTERED.wait(10)
    assert rt.cancel(wf)["status"] == "CANCELLED"
    GATE.set()
    with pytest.raises(rt.WorkflowNotFinishedError, match="status CANCELLED") as info:
        rt.result(wf, timeout_seconds=10)
    assert info.value.status == "CANCELLED"
    assert CALLS["gated:c1"] == 0, "a cancelled workflow stops at the next step boundary"
    assert rt.workflow_steps(wf) == [], "the step in flight at the cancel is not recorded: it runs again on resume"
    rt.resume(wf)
    assert rt.result(wf, timeout_seconds=10) == {"gate": "passed", "n": 1}
    assert [s["name"] for s in rt.workflow_steps(wf)] == ["t_core.wait_gate", "t_core.count"]
    assert rt.get_workflow(wf)["status"] == "SUCCESS"  # type: ignore[index]


def test_fork_reruns_from_a_step_under_a_new_id(runtime: rt.Runtime) -> None:
    rt.run(two_counts, "F", workflow_id="fork-src")
    with pytest.raises(ValueError, match="start_step"):
        rt.fork("fork-src", 0)
    new = rt.fork("fork-src", 2)
    out = rt.result(new["workflow_id"], timeout_seconds=10)
    assert out["first"] == 1 and out["second"] == 2, "step 1 replayed from its checkpoint, step 2 ran again"
    assert dict(CALLS) == {"F:1": 1, "F:2": 2}


# ------------------------------------------------------------------------------------------------------- logging


def test_dbos_chatter_is_debug_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with launched_for_test(tmp_path / "a", log_level="INFO"):
        rt.run(echo, 1)
    assert not [r for r in caplog.records if r.name.startswith(("dbos", rt.DBOS_LOGGER_NAME))], caplog.text
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with launched_for_test(tmp_path / "b", log_level="DEBUG"):
        rt.run(echo, 1)
    routed = [r for r in caplog.records if r.name == rt.DBOS_LOGGER_NAME]
    assert routed and {r.levelname for r in routed} == {"DEBUG"}
    assert any("Executor ID" in r.getMessage() for r in routed)


def test_child_workflows_and_status_reads_from_workflow_code_are_checkpointed(runtime: rt.Runtime) -> None:
    out = rt.run(parent, 1, workflow_id="parent-1")
    assert out == {"direct": 1, "started": 2, "my_status": "PENDING"}
    steps = rt.workflow_steps("parent-1")
    assert [s["child_workflow_id"] for s in steps if s["name"] == "t_core.echo"] == ["parent-1-1", "parent-1-3"]
    # a fork replays the whole recorded sequence (children, DBOS's own status records) without re-running it
    forked = rt.fork("parent-1", len(steps) + 1)
    assert rt.result(forked["workflow_id"], timeout_seconds=10) == out


def test_schedules_start_workflows_with_the_tick_time(tmp_path: Path) -> None:
    TICKS.clear()
    with launched_for_test(tmp_path, scheduler_polling_interval_sec=0.05):
        with pytest.raises(ValueError, match="Invalid cron"):
            rt.apply_schedules([rt.ScheduleSpec("bad", tick, "every minute")])
        assert rt.apply_schedules([rt.ScheduleSpec("sync-time", tick, "* * * * * *", context={"system": "psa"})]) \
            == ["sync-time"]
        deadline = time.monotonic() + 10
        while not rt.list_workflows(name="t_core.tick", status="SUCCESS") and time.monotonic() < deadline:
            time.sleep(0.05)
        (row, *_) = rt.list_workflows(name="t_core.tick", status="SUCCESS", with_data=True)
    assert row["workflow_id"].startswith("sched-sync-time-")
    scheduled_at, context = TICKS[0]
    assert isinstance(scheduled_at, datetime) and scheduled_at.tzinfo is not None
    assert context == {"system": "psa"}
    assert row["input"]["args"][0] == scheduled_at and row["output"] == scheduled_at.isoformat()


#: Modules written before RuntimeClient existed that still build a DBOSClient themselves; move them to
#: ledgerbridge.runtime.RuntimeClient and empty this set.
_PENDING_MOVE_TO_RUNTIME_CLIENT: set[str] = set()  # every module goes through ledgerbridge.runtime now


def test_only_the_runtime_package_imports_dbos() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "ledgerbridge"
    offenders = []
    for path in src.rglob("*.py"):
        if path.is_relative_to(src / "runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(src)}:{node.lineno}" for n in names if n.split(".")[0] == "dbos"]
    offenders = [o for o in offenders if o.split(":")[0] not in _PENDING_MOVE_TO_RUNTIME_CLIENT]
    assert offenders == [], "import dbos only inside ledgerbridge.runtime (use its interface instead)"
