"""RuntimeClient: enqueue by workflow name and manage workflows from a process that runs no workflows
(here: a worker runtime and a client on the same SQLite system database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge import runtime as rt
from ledgerbridge.errors import PermanentError
from ledgerbridge.runtime.testing import launched_for_test, settings_for_test

SEEN: list[Any] = []


@rt.step("t_client.record")
def record(value: Any) -> Any:
    SEEN.append(value)
    return value


@rt.workflow("t_client.double")
def double(n: int, note: str = "") -> dict[str, Any]:
    return {"n": record(n) * 2, "note": note}


@rt.workflow("t_client.refuse")
def refuse(item: str) -> None:
    raise PermanentError(f"{item}: no permission", code="LB-P003")


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[rt.RuntimeClient]:
    SEEN.clear()
    queues = [rt.QueueSpec("t_client_q", concurrency=2), rt.QueueSpec("t_client_p", concurrency=2, partitioned=True)]
    with launched_for_test(tmp_path, queues=queues) as worker, \
            rt.RuntimeClient(settings_for_test(worker.settings.system_database_url)) as c:
        yield c


def test_enqueue_by_name_and_wait(client: rt.RuntimeClient) -> None:
    wf = client.enqueue("t_client_q", "t_client.double", 21, workflow_id="c-1", note="from api")
    assert wf == "c-1"
    assert client.result(wf, timeout_seconds=20) == {"n": 42, "note": "from api"}
    assert client.enqueue("t_client_q", "t_client.double", 99, workflow_id="c-1") == "c-1"
    assert client.result("c-1", timeout_seconds=20)["n"] == 42 and SEEN == [21], "same id: not run again"
    row = client.get_workflow("c-1")
    assert row is not None and row["status"] == "SUCCESS" and row["queue"] == "t_client_q"
    assert row["app_version"] == rt.DEFAULT_APPLICATION_VERSION and row["input"] == {"args": [21],
                                                                                       "kwargs": {"note": "from api"}}
    assert [s["name"] for s in client.workflow_steps("c-1")] == ["t_client.record"]
    assert [r["workflow_id"] for r in client.list_workflows(name="t_client.double")] == ["c-1"]


def test_partition_key_errors_and_unknown_queue(client: rt.RuntimeClient) -> None:
    wf = client.enqueue("t_client_p", "t_client.double", 1, workflow_id="c-p", partition_key="PRJ-1")
    assert client.result(wf, timeout_seconds=20)["n"] == 2
    assert client.get_workflow(wf)["partition_key"] == "PRJ-1"  # type: ignore[index]
    with pytest.raises(ValueError, match="not registered"):
        client.enqueue("t_client_nowhere", "t_client.double", 1, workflow_id="c-x")
    bad = client.enqueue("t_client_q", "t_client.refuse", "INV-3", workflow_id="c-bad")
    with pytest.raises(PermanentError, match="no permission"):
        client.result(bad, timeout_seconds=20)
    assert client.list_workflows(status="ERROR")[0]["error"]["code"] == "LB-P003"
    with pytest.raises(rt.WorkflowNotFinishedError, match="UNKNOWN"):
        client.result("nope", timeout_seconds=1)


def test_fork_from_the_client(client: rt.RuntimeClient) -> None:
    client.result(client.enqueue("t_client_q", "t_client.double", 5, workflow_id="c-f"), timeout_seconds=20)
    new = client.fork("c-f", 1)
    assert new["forked_from"] == "c-f"
    assert client.result(new["workflow_id"], timeout_seconds=20) == {"n": 10, "note": ""}
    assert SEEN == [5, 5], "forked from step 1: the step ran again"
    with pytest.raises(KeyError, match="no workflow"):
        client.cancel("nope")
