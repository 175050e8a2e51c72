"""Webhook ingress starts subscription chains: a signed ``project.approved`` delivery runs its chain and the target
receives exactly one write; a duplicate delivery writes nothing more; an invalid event is a 422 that starts
nothing; a time entry lands in the inbox AND starts its chain; without the runtime such an event is a 503 that
stores nothing (real runtime, real loopback target)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledgerbridge import runtime as rt
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.runtime.testing import settings_for_test
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.webhooks import signed_headers
from ledgerbridge.store.schema import inbox
from subscriptions_support import Recorder, approved, context_with, loopback_server, time_approved

SECRET = "whsec-subs-9a8b7c6d5e"
CHAIN = "lb.subscription_chain"


def _subscriptions(url: str) -> list[dict[str, Any]]:
    return [
        {"name": "onboard", "event": "project.approved", "key": "project.id",
         "actions": [{"name": "erp_hook", "kind": "webhook",
                      "options": {"url": f"{url}/ok", "system_label": "crm_hook"}}]},
        {"name": "timefeed", "event": "time_entry.approved", "key": "entry.project_id",
         "actions": [{"name": "push", "kind": "webhook", "options": {"url": f"{url}/ok"}}]},
    ]


@pytest.fixture
def svc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TestClient, Recorder]]:
    monkeypatch.setenv("LBT_SUBS_SECRET", SECRET)
    with loopback_server() as (url, rec):
        ctx = context_with(tmp_path / "wd", _subscriptions(url))
        st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_SUBS_SECRET}")
        app = create_app(ctx, ServiceSettings(worker=True, process_window_seconds=0.05),
                         runtime_settings=settings_for_test(f"sqlite:///{tmp_path}/dbos.sqlite"))
        with TestClient(app) as client:
            yield ctx, client, rec


def _post(client: TestClient, event: dict[str, Any], *, resent: bool = False) -> Any:
    """Sign and send. First deliveries are signed 5 s in the past and a ``resent`` one now, so a resend carries a
    new signature (a sender's retry, not a replay) whatever second boundary falls in between."""
    body = st.body_of(event)
    ts = int(time.time()) - (0 if resent else 5)
    return client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body, timestamp=ts))


def _chains() -> list[dict[str, Any]]:
    return rt.list_workflows(name=CHAIN, limit=None)


def _project_event(pid: str) -> dict[str, Any]:
    return {**approved(pid), "source_system": SOURCE}


def test_accepted_project_event_runs_its_chain_and_the_target_gets_one_write(svc: Any) -> None:
    _ctx, client, rec = svc
    r = _post(client, _project_event("P-100"), resent=False)
    assert r.status_code == 202, r.text
    out = r.json()
    key = f"{SOURCE}:project:P-100:approved"
    assert out["idempotency_key"] == key and out["duplicate"] is False
    assert out["chains"] == [f"sub:onboard:{key}"]
    state = rt.result(out["chains"][0], timeout_seconds=30)
    assert state["status"] == "completed"
    calls = rec.paths("/ok")
    assert len(calls) == 1
    assert calls[0]["idempotency_key"] == f"onboard:erp_hook:{key}"
    assert calls[0]["body"]["event"]["project"]["id"] == "P-100" and calls[0]["body"]["key"] == "P-100"
    assert 'ledgerbridge_target_api_calls_total{outcome="200",target="crm_hook"}' in client.get("/metrics").text

    # the same fact again (re-signed one second apart, so not a replay): nothing new starts, nothing is written
    again = _post(client, _project_event("P-100"), resent=True)
    assert again.status_code == 202, again.text
    assert again.json()["duplicate"] is True and again.json()["chains"] == out["chains"]
    assert rt.result(out["chains"][0], timeout_seconds=30)["status"] == "completed"
    assert [w["workflow_id"] for w in _chains()] == out["chains"]
    assert len(rec.paths("/ok")) == 1


def test_invalid_event_is_422_and_starts_nothing(svc: Any) -> None:
    _ctx, client, rec = svc
    bad = _project_event("P-200")
    del bad["project"]["customer_id"]
    r = _post(client, bad)
    assert r.status_code == 422, r.text
    assert ["body", "project", "customer_id"] in [e["loc"] for e in r.json()["errors"]]
    other_system = {**_project_event("P-201"), "source_system": "crm"}
    r2 = _post(client, other_system)
    assert r2.status_code == 422 and r2.json()["errors"][0]["type"] == "system_mismatch"
    unsubscribed = {"event_type": "milestone.completed", "event_id": "m-1", "source_system": SOURCE,
                    "occurred_at": "2026-09-01T09:00:00+00:00",
                    "milestone": {"id": "M-1", "project_id": "P-1", "name": "kick-off", "amount": "100.00",
                                  "currency": "USD", "due_date": "2026-09-30"}}
    r3 = _post(client, unsubscribed)
    assert r3.status_code == 422 and r3.json()["errors"][0]["type"] == "not_accepted", r3.text
    assert _chains() == [] and rec.calls == []


def test_time_entry_lands_in_the_inbox_and_starts_its_chain_once(svc: Any) -> None:
    ctx, client, rec = svc
    ev = {**time_approved("P-300", 1), "source_system": SOURCE}
    ev["entry"] = {**ev["entry"], "source_system": SOURCE}
    r = _post(client, ev)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["idempotency_key"] == f"{SOURCE}:time_entry:TE-P-300-1:1" and out["duplicate"] is False
    with ctx.engine.connect() as conn:
        keys = list(conn.execute(sa.select(inbox.c.idempotency_key)).scalars())
    assert keys == [out["idempotency_key"]]
    assert rt.result(out["chains"][0], timeout_seconds=30)["status"] == "completed"
    again = _post(client, ev, resent=True)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert [c["body"]["key"] for c in rec.paths("/ok")] == ["P-300"]
    assert len(_chains()) == 1


def test_without_the_runtime_a_subscribed_event_is_503_and_nothing_is_stored(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBT_SUBS_SECRET", SECRET)
    ctx = context_with(tmp_path / "wd", _subscriptions("http://127.0.0.1:9"))
    st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_SUBS_SECRET}")
    ev = {**time_approved("P-400", 1), "source_system": SOURCE}
    ev["entry"] = {**ev["entry"], "source_system": SOURCE}
    with TestClient(create_app(ctx, ServiceSettings(worker=False))) as client:
        r = _post(client, ev)
    assert r.status_code == 503, r.text
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() == 0
