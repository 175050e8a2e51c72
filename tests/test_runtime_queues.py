"""Queues from QueueSpec: headroom, rate limits and concurrency actually enforced, per-partition order, batch
enqueue — on SQLite and on PostgreSQL (fresh lb_dbos_<random> database)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge import runtime as rt
from ledgerbridge.runtime.testing import fresh_postgres_database, launched_for_test, postgres_reachable

LOCK = threading.Lock()
EVENTS: list[tuple[str, str, float]] = []  # (label, "start"/"end", monotonic time)
RUNNING = {"now": 0, "max": 0}
GO = threading.Event()  # held steps wait for it (set except while a test is still enqueueing)

RATE = rt.QueueSpec("t_q_rate", concurrency=20, rate_limit=5, period_seconds=0.5, headroom=0.8)  # 4 per 0.5 s
CONC = rt.QueueSpec("t_q_conc", concurrency=2)
PART = rt.QueueSpec("t_q_part", concurrency=3, partitioned=True)
QUEUES = [RATE, CONC, PART]


@rt.step("t_q.hold")
def hold(label: str, seconds: float) -> str:
    with LOCK:
        EVENTS.append((label, "start", time.monotonic()))
        RUNNING["now"] += 1
        RUNNING["max"] = max(RUNNING["max"], RUNNING["now"])
    assert GO.wait(20), "the test never released the held steps"
    time.sleep(seconds)
    with LOCK:
        RUNNING["now"] -= 1
        EVENTS.append((label, "end", time.monotonic()))
    return label


@rt.workflow("t_q.job")
def job(label: str, seconds: float) -> str:
    return hold(label, seconds)


def _reset() -> None:
    EVENTS.clear()
    RUNNING.update(now=0, max=0)
    GO.set()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = postgres_reachable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[rt.Runtime]:
    _reset()
    with launched_for_test(tmp_path, queues=QUEUES) as launched:
        yield launched


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rt.Runtime]:
    """The runtime on SQLite, then on a fresh PostgreSQL database (emptied before each test)."""
    _reset()
    overrides = {}
    if request.param == "postgres":
        overrides["system_database_url"] = request.getfixturevalue("pg_url")
    with launched_for_test(tmp_path, queues=QUEUES, **overrides) as launched:
        yield launched


def _dequeued_ms(queue: str) -> list[float]:
    rows = rt.list_workflows(queue=queue, limit=None, newest_first=False)
    return sorted(datetime.fromisoformat(r["dequeued_at"]).timestamp() * 1000 for r in rows)


# ------------------------------------------------------------------------------------------------- plain settings


@pytest.mark.parametrize(
    ("limit", "headroom", "effective"),
    [(10, 0.8, 8), (60, 0.8, 48), (10, 0.9, 9), (1, 0.5, 1), (3, 0.3, 1), (100, 1.0, 100), (None, 0.8, None)],
)
def test_headroom(limit: int | None, headroom: float, effective: int | None) -> None:
    assert rt.QueueSpec("q", concurrency=1, rate_limit=limit, headroom=headroom).effective_rate_limit == effective


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"period_seconds": 0}, "period_seconds"),
        ({"headroom": 1.5}, "headroom"),
        ({"headroom": 0}, "headroom"),
        ({"name": "bad name"}, "queue name"),
    ],
)
def test_queue_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"name": "erp", "concurrency": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        rt.QueueSpec(**values)
    assert rt.QueueSpec.from_dict({"name": "xero", "concurrency": 5, "rate_limit": 60, "period_seconds": 60}).name


# ------------------------------------------------------------------------------------------------- enforced limits


def test_rate_limit_with_headroom_is_enforced(any_runtime: rt.Runtime) -> None:
    effective = rt.register_queues([RATE])["t_q_rate"]
    assert effective["rate_limit"] == 4 and effective["concurrency"] == 20
    ids = rt.enqueue_many("t_q_rate", job, [([f"r{i}", 0.0], f"rate-{i}", None) for i in range(12)])
    assert len(ids) == 12
    for wf in ids:
        assert rt.result(wf, timeout_seconds=30) == wf.replace("rate-", "r")
    starts = _dequeued_ms("t_q_rate")
    window = RATE.period_seconds * 1000
    busiest = max(sum(1 for t in starts if s <= t < s + window) for s in starts)
    assert busiest <= 4, f"more than 4 starts in a {window:.0f} ms window: {starts}"
    assert starts[-1] - starts[0] >= 2 * window - 50, "12 starts at 4 per window need at least 3 windows"


def test_worker_concurrency_is_always_set_and_enforced(runtime: rt.Runtime) -> None:
    ids = [rt.enqueue("t_q_conc", job, f"c{i}", 0.15, workflow_id=f"conc-{i}") for i in range(6)]
    assert [rt.result(wf, timeout_seconds=30) for wf in ids] == [f"c{i}" for i in range(6)]
    assert RUNNING["max"] == 2


def test_partitions_keep_order_and_run_in_parallel(any_runtime: rt.Runtime) -> None:
    plan = [("P1", "a1"), ("P2", "b1"), ("P1", "a2"), ("P1", "a3"), ("P2", "b2"), ("P1", "a4"), ("P2", "b3")]
    # ids chosen so that id order differs from arrival order: order must come from arrival, not the id.
    # Held steps wait until everything is enqueued (a slow machine must not turn this into arrival pacing).
    GO.clear()
    ids = [rt.enqueue("t_q_part", job, label, 0.05, workflow_id=f"part-{9 - n}", partition_key=project)
           for n, (project, label) in enumerate(plan)]
    deadline = time.monotonic() + 20
    while RUNNING["now"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    GO.set()
    for wf in ids:
        rt.result(wf, timeout_seconds=30)
    starts = [label for label, kind, _ in EVENTS if kind == "start"]
    for project, prefix in (("P1", "a"), ("P2", "b")):
        expected = [label for p, label in plan if p == project]
        assert [s for s in starts if s.startswith(prefix)] == expected, EVENTS
        spans = sorted((t0, t1) for (l0, k0, t0) in EVENTS if k0 == "start" and l0.startswith(prefix)
                       for (l1, k1, t1) in EVENTS if k1 == "end" and l1 == l0)
        assert all(prev_end <= next_start for (_, prev_end), (next_start, _) in itertools.pairwise(spans)), EVENTS
    assert RUNNING["max"] >= 2, f"two projects ran side by side: {EVENTS}"
    rows = {r["workflow_id"]: r for r in rt.list_workflows(queue="t_q_part")}
    assert rows["part-9"]["partition_key"] == "P1" and rows["part-8"]["partition_key"] == "P2"


def test_enqueue_checks_queue_and_partition_key(runtime: rt.Runtime) -> None:
    with pytest.raises(ValueError, match="partitioned: pass partition_key"):
        rt.enqueue("t_q_part", job, "x", 0.0)
    with pytest.raises(ValueError, match="not partitioned"):
        rt.enqueue("t_q_conc", job, "x", 0.0, partition_key="P1")
    with pytest.raises(ValueError, match="not registered"):
        rt.enqueue("t_q_nowhere", job, "x", 0.0)
    with pytest.raises(ValueError, match="repeated"):
        rt.enqueue_many("t_q_conc", job, [(["x", 0.0], "dup", None), (["y", 0.0], "dup", None)])


def test_enqueue_is_idempotent_by_workflow_id(runtime: rt.Runtime) -> None:
    first = rt.enqueue_many("t_q_part", job, [(["i1", 0.0], "idem-1", "P9"), (["i2", 0.0], "idem-2", "P9")])
    again = rt.enqueue_many("t_q_part", job, [(["i1", 0.0], "idem-1", "P9"), (["i3", 0.0], "idem-3", "P9")])
    assert first == ["idem-1", "idem-2"] and again == ["idem-3"]
    assert rt.enqueue("t_q_conc", job, "s", 0.0, workflow_id="idem-s") == "idem-s"
    assert rt.enqueue("t_q_conc", job, "other", 0.0, workflow_id="idem-s") == "idem-s"
    for wf in ("idem-1", "idem-2", "idem-3", "idem-s"):
        rt.result(wf, timeout_seconds=30)
    assert sorted(label for label, kind, _ in EVENTS if kind == "start") == ["i1", "i2", "i3", "s"]
