"""Subscriptions as sagas on a real runtime (DBOS on SQLite): each action a durable step with its own retry policy,
compensation of the completed steps in reverse order on a permanent failure (a real failing HTTP endpoint on
loopback), the event dead-lettered with the chain's state, and the whole chain one trace."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledgerbridge import runtime as rt
from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import set_current
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import dead_letters, xref
from subscriptions_support import approved, context_with, loopback_server

FAST = {"max_attempts": 3, "interval_seconds": "0.01", "max_interval_seconds": "0.05"}


def _chain(url: str, mart: Path, last: str) -> dict[str, Any]:
    return {"name": "onboard", "event": "project.approved", "key": "project.id", "mode": "ordered", "actions": [
        {"name": "erp", "kind": "create_erp_project", "compensate": {"kind": "remove_erp_project"}},
        {"name": "report", "kind": "mart", "options": {"path": str(mart), "table": "approved_projects"},
         "compensate": {"kind": "mart_remove"}},
        {"name": "notify", "kind": "webhook", "options": {"url": f"{url}/flaky/2"}, "retry": FAST,
         "compensate": {"kind": "webhook", "options": {"url": f"{url}/undo"}}},
        {"name": "crm", "kind": "set_crm_status", "options": {"url": f"{url}{last}", "status": "onboarded"},
         "retry": FAST},
        {"name": "done", "kind": "log", "options": {"message": "onboarded {key}"}},
    ]}


@pytest.fixture()
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    subs.set_tracer_provider(provider)
    yield exporter
    subs.set_tracer_provider(None)


def _mart_rows(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as con:
        return con.execute("SELECT event_key_value, action FROM approved_projects ORDER BY 1").fetchall()


def _run(tmp_path: Path, last: str, spans: Any) -> tuple[Any, dict[str, Any], Any, Path]:
    mart = tmp_path / "events.sqlite"
    with loopback_server() as (url, rec):
        ctx = context_with(tmp_path / "wd", [_chain(url, mart, last)])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                res = subs.publish(ctx, [approved("P-1")])
                (state,) = subs.wait(res.workflow_ids, timeout_seconds=60)
                steps = rt.workflow_steps(res.workflow_ids[0])
        finally:
            set_current(None)
    return ctx, {"state": state, "steps": steps, "calls": list(rec.calls)}, rec, mart


def test_chain_completes_each_action_a_durable_step_with_its_own_retries(tmp_path: Path, spans: Any) -> None:
    ctx, out, _rec, mart = _run(tmp_path, "/ok", spans)
    state = out["state"]
    assert state["status"] == "completed", state
    assert [a["action"] for a in state["actions"]] == ["erp", "report", "notify", "crm", "done"]
    # the flaky endpoint answered 503 twice: the notify action's own policy (3 attempts) retried it
    notify = [c for c in out["calls"] if c["path"].startswith("/flaky")]
    assert [c["attempt"] for c in notify] == [1, 2, 3]
    assert len({c["idempotency_key"] for c in notify}) == 1, "every retry carries the same idempotency key"
    step_names = [s["name"] for s in out["steps"]]
    assert step_names.count("sub.onboard.notify") == 3 and "sub.onboard.erp" in step_names
    with ctx.engine.connect() as conn:
        bound = xref.lookup_many(conn, "project", "ledger", ["P-1"])
        assert bound["P-1"].external_id == "ledgerbridge:P-1"
        assert dead_letters.list_letters(conn, flow=subs.FLOW) == []
    assert _mart_rows(mart) == [("P-1", "report")]
    crm = [c for c in out["calls"] if c["path"] == "/ok"]
    assert crm[0]["method"] == "PATCH" and crm[0]["body"]["status"] == "onboarded"


def test_permanent_failure_compensates_completed_steps_in_reverse_and_dead_letters_the_chain(
        tmp_path: Path, spans: Any) -> None:
    ctx, out, _rec, mart = _run(tmp_path, "/fail", spans)
    state = out["state"]
    assert state["status"] == "compensated", state
    assert [a["action"] for a in state["actions"]] == ["erp", "report", "notify", "crm"]
    assert state["actions"][-1]["ok"] is False and state["actions"][-1]["error"]["kind"] == "validation"  # 400
    assert state["not_run"] == ["done"]
    # reverse order of completion: notify, report, erp
    assert [c["action"] for c in state["compensations"]] == ["notify", "report", "erp"]
    assert all(c["ok"] for c in state["compensations"])
    # the 400 is permanent: no retry of the CRM call
    assert len([c for c in out["calls"] if c["path"] == "/fail"]) == 1
    undo = [c for c in out["calls"] if c["path"] == "/undo"]
    assert len(undo) == 1 and undo[0]["body"]["compensation"] is True
    assert undo[0]["idempotency_key"].startswith("onboard:notify:undo:")
    # effects undone: no binding, no mart row
    with ctx.engine.connect() as conn:
        assert xref.lookup_many(conn, "project", "ledger", ["P-1"]) == {}
        letters = dead_letters.list_letters(conn, flow=subs.FLOW)
    assert _mart_rows(mart) == []
    (letter,) = letters
    assert letter.queue == "operational" and letter.entity == "project.approved"
    assert letter.payload["chain"]["compensations"][0]["action"] == "notify"
    assert letter.payload["event"]["project"]["id"] == "P-1"
    assert "crm" in letter.error_text and "Compensated: ['notify', 'report', 'erp']" in letter.error_text
    # one trace: the chain span, every action and compensation under it, the trace id in the letter
    trace_id = letter.payload["trace_id"]
    assert trace_id == state["trace_id"] == subs.trace_ids(state["workflow_id"])[0]
    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {trace_id}
    (chain,) = [s for s in finished if s.name == "subscription onboard"]
    children = [s for s in finished if s is not chain]
    assert {s.parent.span_id for s in children} == {chain.context.span_id}
    names = [s.name for s in sorted(children, key=lambda s: s.start_time)]
    assert names[:3] == ["action erp", "action report", "action notify"]
    assert names[-3:] == ["compensate notify", "compensate report", "compensate erp"]
    # the traceparent header carried the same trace to the endpoint
    assert all(c["traceparent"].split("-")[1] == trace_id for c in out["calls"])


def test_parallel_actions_run_at_once_and_a_failure_compensates_the_others(tmp_path: Path, spans: Any) -> None:
    mart = tmp_path / "par.sqlite"
    with loopback_server(delay=0.4) as (url, rec):
        sub = {"name": "fanout", "event": "project.approved", "key": "project.id", "mode": "parallel", "actions": [
            {"name": "a", "kind": "webhook", "options": {"url": f"{url}/slow/a"},
             "compensate": {"kind": "webhook", "options": {"url": f"{url}/undo/a"}}},
            {"name": "b", "kind": "webhook", "options": {"url": f"{url}/slow/b"}},
            {"name": "m", "kind": "mart", "options": {"path": str(mart), "table": "approved_projects"},
             "compensate": {"kind": "mart_remove"}},
            {"name": "x", "kind": "webhook", "options": {"url": f"{url}/fail"}},
        ]}
        ctx = context_with(tmp_path / "wd", [sub])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                res = subs.publish(ctx, [approved("P-9")])
                (state,) = subs.wait(res.workflow_ids, timeout_seconds=60)
        finally:
            set_current(None)
        slow = rec.paths("/slow")
    assert rec.max_in_flight["P-9"] >= 2, "the slow actions overlapped"
    assert abs(slow[0]["at"] - slow[1]["at"]) < 0.35
    assert state["status"] == "compensated"
    assert sorted(c["action"] for c in state["compensations"]) == ["a", "b", "m"]
    assert [c.get("skipped") for c in state["compensations"] if c["action"] == "b"] == ["no compensation"]
    assert len(rec.paths("/undo/a")) == 1 and _mart_rows(mart) == []


def test_replay_of_a_dead_lettered_chain_runs_it_again_with_the_fixed_configuration(
        tmp_path: Path, spans: Any) -> None:
    mart = tmp_path / "events.sqlite"
    with loopback_server() as (url, rec):
        ctx = context_with(tmp_path / "wd", [_chain(url, mart, "/fail")])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                res = subs.publish(ctx, [approved("P-7")])
                assert subs.wait(res.workflow_ids)[0]["status"] == "compensated"
                with ctx.engine.connect() as conn:
                    letters = dead_letters.list_letters(conn, flow=subs.FLOW)
                fixed = context_with(tmp_path / "wd", [_chain(url, mart, "/ok")])
                ctx.config = fixed.config  # the CRM endpoint was fixed in the configuration
                out = subs.replay(ctx, letters)
                again = subs.replay(ctx, letters)
                (state,) = subs.wait([f"{res.workflow_ids[0]}:replay-1"])
        finally:
            set_current(None)
    assert out["replayed"] == [letters[0].id] and again["skipped"] == [letters[0].id]
    assert state["status"] == "completed"
    assert _mart_rows(mart) == [("P-7", "report")]
    with ctx.engine.connect() as conn:
        assert dead_letters.list_letters(conn, flow=subs.FLOW) == []
        assert dead_letters.get(conn, letters[0].id).status == "replayed"  # type: ignore[union-attr]
    assert len(rec.paths("/fail")) == 1 and len(rec.paths("/ok")) == 1
