"""call_with_policy: transient backoff, Retry-After honoured without burning attempts, budgets, no retry of
permanent/validation/conflict, durable attempts and sleeps in workflows (real DBOS on SQLite)."""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerbridge import runtime as rt
from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    RetriesExhaustedError,
    TransientError,
)
from ledgerbridge.runtime.testing import launched_for_test

FAST = rt.RetryPolicy(max_attempts=3, interval_seconds=0.02, backoff_rate=2.0, max_interval_seconds=1.0)

#: scripted answers of a fake target: each call pops the next; an exception instance is raised, anything else returned
SCRIPT: deque[Any] = deque()
CALLS: list[Any] = []


def target(payload: str) -> dict[str, Any]:
    CALLS.append(payload)
    outcome = SCRIPT.popleft()
    if isinstance(outcome, BaseException):
        raise outcome
    return {"payload": payload, "answer": outcome}


def script(*outcomes: Any) -> None:
    SCRIPT.clear()
    SCRIPT.extend(outcomes)
    CALLS.clear()


@rt.workflow("t_retry.call")
def call_in_workflow(payload: str, policy: dict[str, Any]) -> dict[str, Any]:
    return rt.call_with_policy(target, rt.RetryPolicy.from_dict(policy), payload, name="target.post", system="erp")


@rt.step("t_retry.outer_step")
def outer_step(payload: str) -> dict[str, Any]:
    return rt.call_with_policy(target, FAST, payload, name="target.post", system="erp")


@rt.workflow("t_retry.in_step")
def call_in_step(payload: str) -> dict[str, Any]:
    return outer_step(payload)


@rt.with_retry(FAST, name="target.decorated", system="erp")
def decorated(payload: str) -> dict[str, Any]:
    return target(payload)


@rt.workflow("t_retry.decorated")
def call_decorated(payload: str) -> dict[str, Any]:
    return decorated(payload)


def _policy(**kw: Any) -> dict[str, Any]:
    base = {"max_attempts": 3, "interval_seconds": 0.02, "backoff_rate": 2.0, "max_interval_seconds": 1.0}
    base.update(kw)
    return base


def _planned_sleeps(workflow_id: str) -> list[float]:
    """Durations of the durable sleeps: DBOS records the wake-up time as the sleep step's output."""
    out = []
    for s in rt.workflow_steps(workflow_id):
        if s["name"] == "DBOS.sleep":
            started = datetime.fromisoformat(s["started_at"]).timestamp()
            out.append(round(s["output"] - started, 2))
    return out


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[rt.Runtime]:
    with launched_for_test(tmp_path) as launched:
        yield launched


# ------------------------------------------------------------------------------------------- in workflow code (durable)


def test_transient_failures_are_retried_with_backoff_as_durable_steps(runtime: rt.Runtime) -> None:
    script(TransientError("502 from gateway", code="LB-T004"), TransientError("reset", code="LB-T003"), "ok")
    out = rt.run(call_in_workflow, "INV-1", _policy(interval_seconds=0.1), workflow_id="tr-1")
    assert out == {"payload": "INV-1", "answer": "ok"} and len(CALLS) == 3
    steps = rt.workflow_steps("tr-1")
    assert [s["name"] for s in steps] == ["target.post", "DBOS.sleep"] * 2 + ["target.post"]
    assert [s["error"]["code"] if s["error"] else None for s in steps[::2]] == ["LB-T004", "LB-T003", None]
    assert _planned_sleeps("tr-1") == pytest.approx([0.1, 0.2], abs=0.05)


def test_rate_limits_wait_exactly_as_told_and_do_not_burn_attempts(runtime: rt.Runtime) -> None:
    slow = [RateLimitedError("429", retry_after=0.15) for _ in range(3)]
    script(*slow, TransientError("t"), "ok")
    started = time.monotonic()
    out = rt.run(call_in_workflow, "INV-2", _policy(max_attempts=2), workflow_id="rl-1")
    assert out["answer"] == "ok" and len(CALLS) == 5, "3 rate limits + 1 transient fit in max_attempts=2"
    assert time.monotonic() - started >= 0.45
    assert _planned_sleeps("rl-1") == pytest.approx([0.15, 0.15, 0.15, 0.02], abs=0.05)


def test_transient_exhaustion_raises_with_attempts_and_last_error(runtime: rt.Runtime) -> None:
    script(*(TransientError(f"503 #{i}", code="LB-T004") for i in range(5)))
    wf = rt.start(call_in_workflow, "INV-3", _policy(max_attempts=3), workflow_id="ex-1")
    with pytest.raises(RetriesExhaustedError) as info:
        rt.result(wf, timeout_seconds=20)
    err = info.value
    assert err.code == "LB-X001" and err.kind == "transient" and err.attempts == 3 and len(CALLS) == 3
    assert isinstance(err.last_error, TransientError) and err.last_error.message == "503 #2"
    assert err.details["failed_attempts"] == 3 and "max_attempts=3" in err.message
    assert rt.get_workflow(wf)["error"]["code"] == "LB-X001"  # type: ignore[index]


def test_recorded_attempts_replay_so_the_count_survives_a_restart(runtime: rt.Runtime) -> None:
    script(TransientError("first"), "ok")
    assert rt.run(call_in_workflow, "INV-4", _policy(max_attempts=2), workflow_id="dur-1")["answer"] == "ok"
    # Re-run from step 3 (the second attempt): attempt 1's failure and the sleep are replayed from checkpoints, so
    # one more transient failure exhausts max_attempts=2 — the count carried on instead of restarting at zero.
    script(TransientError("second"))
    forked = rt.fork("dur-1", 3)
    with pytest.raises(RetriesExhaustedError) as info:
        rt.result(forked["workflow_id"], timeout_seconds=20)
    assert info.value.attempts == 2 and len(CALLS) == 1
    assert info.value.last_error is not None and info.value.last_error.message == "second"


def test_inside_a_step_the_loop_runs_in_place(runtime: rt.Runtime) -> None:
    script(TransientError("t"), "ok")
    out = rt.run(call_in_step, "INV-5", workflow_id="st-1")
    assert out["answer"] == "ok" and len(CALLS) == 2
    assert [s["name"] for s in rt.workflow_steps("st-1")] == ["t_retry.outer_step"]


def test_decorator_form(runtime: rt.Runtime) -> None:
    script(RateLimitedError("slow", retry_after=0.01), "ok")
    assert rt.run(call_decorated, "INV-6", workflow_id="dec-1")["answer"] == "ok"
    assert [s["name"] for s in rt.workflow_steps("dec-1")] == ["target.decorated", "DBOS.sleep", "target.decorated"]


# ------------------------------------------------------------------------------------------- outside workflows


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("401", code="LB-P002"),
        RecordValidationError("no tax code"),
        ConflictError("stale", code="LB-C003"),
    ],
)
def test_permanent_validation_and_conflict_are_never_retried(error: LedgerbridgeError) -> None:
    script(TransientError("t"), error, "never reached")
    with pytest.raises(type(error)) as info:
        rt.call_with_policy(target, FAST, "X")
    assert info.value is error and error.details["attempts"] == 2 and len(CALLS) == 2


def test_retry_after_beyond_the_budget_fails_at_once_for_rescheduling() -> None:
    script(RateLimitedError("daily limit", code="LB-R002", retry_after=3600.0), "never")
    started = time.monotonic()
    with pytest.raises(RetriesExhaustedError) as info:
        rt.call_with_policy(target, rt.RetryPolicy(rate_limit_budget_seconds=60), "X", name="sf.upsert")
    err = info.value
    assert time.monotonic() - started < 5, "did not wait an hour"
    assert err.code == "LB-X002" and err.kind == "rate_limited" and err.retry_after == 3600.0
    assert err.last_error is not None and err.last_error.code == "LB-R002" and len(CALLS) == 1
    assert "sf.upsert" in err.message


def test_rate_limit_wait_count_is_capped_and_unknown_retry_after_uses_backoff() -> None:
    policy = rt.RetryPolicy(max_attempts=5, interval_seconds=0.01, max_rate_limit_waits=2)
    script(*(RateLimitedError("NetSuite pool full", code="LB-R003") for _ in range(5)))
    with pytest.raises(RetriesExhaustedError) as info:
        rt.call_with_policy(target, policy, "X")
    assert info.value.code == "LB-X002" and info.value.details["rate_limit_waits"] == 2 and len(CALLS) == 3


def test_transient_retry_after_longer_than_backoff_is_honoured_up_to_the_max_interval() -> None:
    script(TransientError("503", code="LB-T004", retry_after=0.3), "ok")
    started = time.monotonic()
    assert rt.call_with_policy(target, FAST, "X")["answer"] == "ok"
    assert time.monotonic() - started >= 0.3
    capped = rt.RetryPolicy(max_attempts=2, interval_seconds=0.01, max_interval_seconds=0.05)
    script(TransientError("503", code="LB-T004", retry_after=3600.0), "ok")
    started = time.monotonic()
    assert rt.call_with_policy(target, capped, "X")["answer"] == "ok"
    assert time.monotonic() - started < 5


def test_unclassified_exceptions_are_bugs_and_propagate_untouched() -> None:
    script(KeyError("mapping"), "never")
    with pytest.raises(KeyError):
        rt.call_with_policy(target, FAST, "X")
    assert len(CALLS) == 1


def test_real_connection_errors_are_classified_and_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = []

    def get() -> int:
        calls.append(1)
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code

    with pytest.raises(RetriesExhaustedError) as info:
        rt.call_with_policy(get, FAST, name="psa.get", system="psa")
    assert len(calls) == 3 and info.value.attempts == 3
    assert info.value.last_error is not None and info.value.last_error.code == "LB-T003"
    assert info.value.last_error.details["system"] == "psa"


def test_policy_validation_and_backoff() -> None:
    p = rt.RetryPolicy(interval_seconds=1, backoff_rate=3, max_interval_seconds=5)
    assert [p.backoff(n) for n in (1, 2, 3, 4)] == [1, 3, 5, 5]
    with pytest.raises(ValueError, match="max_attempts"):
        rt.RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_rate"):
        rt.RetryPolicy(backoff_rate=0.5)
    with pytest.raises(ValueError, match="unknown setting"):
        rt.RetryPolicy.from_dict({"retries": 3})
