"""Webhook ingress: signature, stale and replayed deliveries, duplicates (one inbox row), bad payloads (422 naming
the field, nothing stored), unknown systems and systems without a secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers
from ledgerbridge.store.schema import inbox

from flows_support import make_ctx, tiny_firm

SECRET = "whsec-test-7f3a9c21b0"
OLD_SECRET = "whsec-old-5d1e22aa90"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), employees=3, months=1)


@pytest.fixture(scope="module")
def module_ctx(tmp_path_factory: pytest.TempPathFactory, export: Path) -> Any:
    return make_ctx(tmp_path_factory.mktemp("wd"), export_from=export)


@pytest.fixture
def env(module_ctx: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TestClient]]:
    """One store per module (reference data loaded once), an empty inbox and a fresh app per test."""
    ctx = module_ctx
    with ctx.engine.begin() as conn:
        conn.execute(sa.delete(inbox))
    monkeypatch.setenv("LBT_WEBHOOK_SECRET", SECRET)
    saved = ctx.config
    st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_WEBHOOK_SECRET}")
    app = create_app(ctx, ServiceSettings(worker=False, webhook_tolerance_seconds=60))
    with TestClient(app) as client:
        yield ctx, client
    ctx.config = saved


def _rows(ctx: Any) -> list[Any]:
    with ctx.engine.connect() as conn:
        return conn.execute(sa.select(inbox)).all()


def _event(ctx: Any, n: int = 0, **kw: Any) -> dict[str, Any]:
    entry = st.source_entries(ctx, SOURCE)[n]
    return st.time_entry_event(entry, **kw)


def test_signed_delivery_is_in_the_inbox_before_202(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    ev = _event(ctx)
    body = st.body_of(ev)
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["event_id"] == ev["event_id"] and out["duplicate"] is False
    assert out["idempotency_key"] == f"{SOURCE}:time_entry:{ev['entry']['id']}:{ev['entry']['version']}"
    assert len(out["trace_id"]) == 32
    rows = _rows(ctx)
    assert [(r.idempotency_key, r.status) for r in rows] == [(out["idempotency_key"], "received")]
    assert rows[0].payload == ev["entry"]  # the canonical entry JSON
    assert rows[0].batch_id.startswith("wh:")


def test_bad_missing_and_wrong_secret_signatures_are_401_and_store_nothing(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    body = st.body_of(_event(ctx))
    ts = int(time.time())
    cases = {
        "wrong secret": (body, signed_headers("not-the-secret", body, timestamp=ts)),
        "tampered body": (body + b" ", signed_headers(SECRET, body, timestamp=ts)),
        "no signature": (body, {TIMESTAMP_HEADER: str(ts)}),
        "no timestamp": (body, {SIGNATURE_HEADER: sign(SECRET, ts, body)}),
        "timestamp not signed": (body, {TIMESTAMP_HEADER: str(ts + 1), SIGNATURE_HEADER: sign(SECRET, ts, body)}),
        "garbage timestamp": (body, {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: sign(SECRET, ts, body)}),
    }
    for label, (content, headers) in cases.items():
        r = client.post(f"/webhooks/{SOURCE}", content=content, headers=headers)
        assert r.status_code == 401, (label, r.text)
        assert r.json()["message"], label
    assert _rows(ctx) == []


def test_stale_delivery_is_refused_with_the_tolerance_named(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    body = st.body_of(_event(ctx))
    for skew in (-61, 61):
        r = client.post(f"/webhooks/{SOURCE}", content=body,
                        headers=signed_headers(SECRET, body, timestamp=int(time.time()) + skew))
        assert r.status_code == 401 and "stale" in r.json()["message"] and "60 s" in r.json()["message"]
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body,
                                                                                timestamp=int(time.time()) - 50))
    assert r.status_code == 202  # inside the tolerance
    assert len(_rows(ctx)) == 1


def test_replayed_delivery_is_409_and_a_resigned_duplicate_is_202_duplicate(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    body = st.body_of(_event(ctx))
    headers = signed_headers(SECRET, body)
    assert client.post(f"/webhooks/{SOURCE}", content=body, headers=headers).status_code == 202
    replay = client.post(f"/webhooks/{SOURCE}", content=body, headers=headers)
    assert replay.status_code == 409 and "replayed" in replay.json()["message"]
    # the sender retries properly (new timestamp, new signature): acknowledged, no second effect
    again = client.post(f"/webhooks/{SOURCE}", content=body,
                        headers=signed_headers(SECRET, body, timestamp=int(time.time()) - 1))
    assert again.status_code == 202 and again.json()["duplicate"] is True
    # the same version inside another event envelope is the same fact
    ev2 = json.loads(body)
    ev2["event_id"] = "evt-other"
    b2 = st.body_of(ev2)
    third = client.post(f"/webhooks/{SOURCE}", content=b2, headers=signed_headers(SECRET, b2))
    assert third.status_code == 202 and third.json()["duplicate"] is True
    assert len(_rows(ctx)) == 1


def test_a_refused_delivery_is_not_remembered_as_seen(env: tuple[Any, TestClient]) -> None:
    """Only accepted deliveries count for replay detection: a failed attempt can be retried as sent."""
    ctx, client = env
    ev = _event(ctx)
    ev["entry"]["hours"] = "99"
    bad = st.body_of(ev)
    headers = signed_headers(SECRET, bad)
    assert client.post(f"/webhooks/{SOURCE}", content=bad, headers=headers).status_code == 422
    assert client.post(f"/webhooks/{SOURCE}", content=bad, headers=headers).status_code == 422  # not 409


@pytest.mark.parametrize(("mutate", "loc"), [
    (lambda e: e["entry"].__setitem__("hours", "lots"), ["body", "entry", "hours"]),
    (lambda e: e["entry"].pop("project_id"), ["body", "entry", "project_id"]),
    (lambda e: e.__setitem__("occurred_at", "not a time"), ["body", "occurred_at"]),
    (lambda e: e["entry"].__setitem__("approval_status", "submitted"), ["body", "entry", "approval_status"]),
    (lambda e: e.__setitem__("source_system", "other"), ["body", "source_system"]),
    (lambda e: e.__setitem__("event_type", "time_entry.deleted"), ["body"]),
    (lambda e: e["entry"].__setitem__("surprise", 1), ["body", "entry", "surprise"]),
])
def test_bad_payload_is_422_naming_the_field_and_nothing_is_stored(env: tuple[Any, TestClient], mutate: Any,
                                                                    loc: list[str]) -> None:
    ctx, client = env
    ev = _event(ctx)
    mutate(ev)
    body = st.body_of(ev)
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 422, r.text
    out = r.json()
    assert any(e["loc"][:len(loc)] == loc for e in out["errors"]), out
    assert ".".join(loc) in out["message"] or loc == ["body"]
    assert all("input" not in e for e in out["errors"])
    assert _rows(ctx) == []


def test_not_json_and_unaccepted_event_types_are_422(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    body = b"{not json"
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body"]
    ev = {"event_type": "invoice.status_changed", "event_id": "e1", "source_system": SOURCE,
          "occurred_at": "2026-11-30T00:00:00Z", "invoice_id": "INV-1", "status": "paid"}
    body = st.body_of(ev)
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "event_type"]
    assert "not taken by webhook ingress" in r.json()["message"]
    assert _rows(ctx) == []


def test_lone_surrogate_escape_is_422_and_a_surrogate_pair_is_fine(env: tuple[Any, TestClient]) -> None:
    """JSON allows "\\ud800" but it is not Unicode text (it cannot be stored or logged): refused with 422, nothing
    stored (found by the fuzz suite: it used to surface as a 400 from a UnicodeEncodeError deep in the intake)."""
    ctx, client = env
    body = st.body_of(_event(ctx, 0)).replace(b'"entry"', b'"note":"x\\ud800y","entry"', 1)
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 422 and "not valid JSON text" in r.json()["message"], r.text
    assert _rows(ctx) == []
    ev = _event(ctx, 0)
    ev["entry"]["description"] = "launch \U0001F680"
    body = json.dumps(ev).encode()  # ensure_ascii: the emoji travels as the pair \ud83d\ude80
    assert b"\\ud83d\\ude80" in body
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 202, r.text
    assert len(_rows(ctx)) == 1


def test_unknown_system_404_and_system_without_secret_403(env: tuple[Any, TestClient]) -> None:
    ctx, client = env
    body = st.body_of(_event(ctx))
    r = client.post("/webhooks/nope", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 404 and "nope" in r.json()["message"]
    r = client.post("/webhooks/ledger", content=body, headers=signed_headers(SECRET, body))
    assert r.status_code == 403 and "secrets.webhook" in r.json()["message"]
    assert _rows(ctx) == []


def test_previous_secret_is_accepted_during_rotation(env: tuple[Any, TestClient],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, client = env
    monkeypatch.setenv("LBT_WEBHOOK_OLD", OLD_SECRET)
    st.with_secret(ctx, SOURCE, "webhook_previous", "${env:LBT_WEBHOOK_OLD}")
    body = st.body_of(_event(ctx))
    assert client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers(OLD_SECRET, body)).status_code \
        == 202
    body2 = st.body_of(_event(ctx, 1))
    assert client.post(f"/webhooks/{SOURCE}", content=body2, headers=signed_headers(SECRET, body2)).status_code \
        == 202
    assert len(_rows(ctx)) == 2
