"""The service with its worker (durable runtime launched by the app): webhook -> inbox -> processed -> staged line,
workflow routes (list, steps, cancel, resume), traces that follow a record, and a failing batch becoming an
operational dead letter that carries the trace id."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledgerbridge import runtime as rt
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.runtime.testing import settings_for_test
from ledgerbridge.service import testing as st
from ledgerbridge.service import worker
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.webhooks import signed_headers
from ledgerbridge.store import dead_letters, inbox
from ledgerbridge.store.inbox import InboxItem
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import staging_lines

from flows_support import make_ctx, tiny_firm

SECRET = "whsec-e2e-1b2c3d4e5f"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), employees=3, months=1)


@pytest.fixture
def svc(tmp_path: Path, export: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TestClient, Any, str]]:
    monkeypatch.setenv("LBT_E2E_SECRET", SECRET)
    ctx = make_ctx(tmp_path / "wd", export_from=export)
    st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_E2E_SECRET}")
    spans = InMemorySpanExporter()
    app = create_app(ctx, ServiceSettings(worker=True, process_window_seconds=0.05), span_exporter=spans,
                     runtime_settings=settings_for_test(f"sqlite:///{tmp_path}/dbos.sqlite"))
    with TestClient(app) as client:
        yield ctx, client, spans, st.issue_token(ctx, "operate")


def _wait(cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def _send(client: TestClient, entry: dict[str, Any]) -> dict[str, Any]:
    body = st.body_of(st.time_entry_event(entry))
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_webhook_to_staged_line_with_workflows_and_one_trace(svc: Any) -> None:
    ctx, client, spans, tok = svc
    entries = [st.fresh_entry(e, f"WH-{i}") for i, e in enumerate(st.source_entries(ctx, SOURCE)[:3])]
    answers = [_send(client, e) for e in entries]
    assert not any(a["duplicate"] for a in answers)

    def staged() -> set[str]:
        with ctx.engine.connect() as conn:
            return set(conn.execute(sa.select(staging_lines.c.source_id).where(
                staging_lines.c.source_id.in_([e["id"] for e in entries]))).scalars())

    assert _wait(lambda: staged() == {e["id"] for e in entries})
    with ctx.engine.connect() as conn:
        assert inbox.count_by_status(conn) == {"processed": 3}
    h = {"Authorization": f"Bearer {tok}"}

    def finished() -> list[dict[str, Any]]:
        wfs = client.get("/api/v1/workflows", params={"name": "lb.service.process_inbox"}, headers=h).json()
        return wfs if wfs and all(w["status"] == "SUCCESS" for w in wfs) else []

    wfs = _wait(finished)
    assert any(w["workflow_id"].startswith("svc-intake:") for w in wfs)  # triggered by the deliveries
    steps = [s for w in wfs for s in client.get(f"/api/v1/workflows/{w['workflow_id']}/steps", headers=h).json()]
    assert sum(s["output"]["rows"] for s in steps if s["name"] == "lb.process_batch") == 3, steps
    assert client.get("/api/v1/workflows/nope/steps", headers=h).status_code == 404
    # one trace per delivery: the request span is the parent of the inbox write
    finished = spans.get_finished_spans()
    for a in answers:
        mine = [s for s in finished if format(s.context.trace_id, "032x") == a["trace_id"]]
        names = {s.name: s for s in mine}
        assert {"webhook psa_files", "intake.accept"} <= set(names)
        assert names["intake.accept"].parent.span_id == names["webhook psa_files"].context.span_id
    assert any(s.name == "inbox.process" for s in finished)


def test_cancel_and_resume_a_workflow(svc: Any) -> None:
    _, client, _, tok = svc
    h = {"Authorization": f"Bearer {tok}"}
    wf = rt.enqueue(worker.QUEUE, worker.process_inbox_workflow, 100, workflow_id="test-delayed",
                    delay_seconds=600)
    r = client.post(f"/api/v1/workflows/{wf}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    r = client.post(f"/api/v1/workflows/{wf}/resume", headers=h)
    assert r.status_code == 200 and r.json()["status"] != "CANCELLED"
    assert _wait(lambda: client.get(f"/api/v1/workflows/{wf}", headers=h).json()["status"] == "SUCCESS")
    assert client.post("/api/v1/workflows/nope/cancel", headers=h).status_code == 404


def test_a_failing_batch_becomes_an_operational_dead_letter_with_the_trace_id(svc: Any) -> None:
    ctx, client, spans, _ = svc
    # a corrupt row (no approval_status) lands through another channel: the transactional flow cannot decide it
    with ctx.engine.begin() as conn:
        inbox.add_batch(conn, [InboxItem(SOURCE, "time_entry", "TE-CORRUPT", 1, {"id": "TE-CORRUPT"})])
    _send(client, st.fresh_entry(st.source_entries(ctx, SOURCE)[0], "WH-OK"))

    def letter() -> Any:
        with ctx.engine.connect() as conn:
            got = dead_letters.list_letters(conn, error_code="service.process_failed")
        return got[0] if got else None

    lt = _wait(letter)
    assert lt.queue == "operational" and "KeyError" in lt.error_text
    assert _wait(lambda: lt.payload["trace_id"] in {format(s.context.trace_id, "032x")
                                                    for s in spans.get_finished_spans() if s.name == "inbox.process"})
    with ctx.engine.connect() as conn:  # nothing was half-processed: the batch stays received
        assert set(conn.execute(sa.select(inbox_t.c.status)).scalars()) == {"received"}
