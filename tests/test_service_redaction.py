"""Secrets never appear in logs or responses: the service flows run with configured secret values (env and file
references), and every captured log record, stdout/stderr line and HTTP answer (body and headers) is searched for
each secret value and for the API tokens."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.runtime.testing import settings_for_test
from ledgerbridge.service import logs
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.webhooks import signed_headers

from flows_support import make_ctx, tiny_firm

WEBHOOK = "whsec-REDACT-ME-9f8e7d6c5b4a"
FILE_SECRET = "ledger-api-key-REDACT-0123456789"


def test_no_secret_or_token_in_any_log_or_response(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="httpx")  # the test client's own request lines (URLs we typed)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    for name in ("", "ledgerbridge", "ledgerbridge.service", "ledgerbridge.runtime.dbos", "dbos", "uvicorn"):
        logging.getLogger(name).addHandler(handler)
    monkeypatch.setenv("LBT_REDACT_SECRET", WEBHOOK)
    (tmp_path / "ledger.key").write_text(FILE_SECRET + "\n")
    ctx = make_ctx(tmp_path / "wd", export_from=tiny_firm(tmp_path, employees=2, months=1))
    st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_REDACT_SECRET}")
    st.with_secret(ctx, "ledger", "api_key", f"${{file:{tmp_path / 'ledger.key'}}}")
    assert ctx.config.systems["ledger"].secret("api_key") == FILE_SECRET
    app = create_app(ctx, ServiceSettings(worker=True, process_window_seconds=0.05),
                     runtime_settings=settings_for_test(f"sqlite:///{tmp_path}/dbos.sqlite", log_level="INFO"))
    answers: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {s: st.issue_token(ctx, s) for s in ("read", "operate", "admin")}

        def call(method: str, url: str, **kw: object) -> None:
            r = client.request(method, url, **kw)  # type: ignore[arg-type]
            answers.append(f"{r.status_code} {dict(r.headers)} {r.text}")

        entries = st.source_entries(ctx, SOURCE)
        for i, entry in enumerate(entries[:4]):
            body = st.body_of(st.time_entry_event(st.fresh_entry(entry, f"R-{i}")))
            call("POST", f"/webhooks/{SOURCE}", content=body, headers=signed_headers(WEBHOOK, body))
            call("POST", f"/webhooks/{SOURCE}", content=body, headers=signed_headers(WEBHOOK, body))  # replay
        body = st.body_of(st.time_entry_event(entries[0]))
        call("POST", f"/webhooks/{SOURCE}", content=body, headers=signed_headers(WEBHOOK, body,
                                                                                 timestamp=int(time.time()) - 999))
        call("POST", f"/webhooks/{SOURCE}", content=body, headers=signed_headers(FILE_SECRET, body))
        leak = json.loads(body)
        leak["entry"]["description"] = 12  # invalid: a 422 must not echo the input
        leak["entry"]["task"] = WEBHOOK
        lb = st.body_of(leak)
        call("POST", f"/webhooks/{SOURCE}", content=lb, headers=signed_headers(WEBHOOK, lb))
        call("POST", "/webhooks/ledger", content=body, headers=signed_headers(WEBHOOK, body))
        h = {"Authorization": f"Bearer {tokens['admin']}"}
        for url in ("/api/v1/runs", "/api/v1/periods", "/api/v1/dead-letters", "/api/v1/workflows",
                    "/api/v1/audit/verify", "/api/v1/audit/entries?limit=10000", "/api/v1/stewardship",
                    "/metrics", "/openapi.json", "/healthz", f"/api/v1/dead-letters?flow={WEBHOOK}"):
            call("GET", url, headers=h)
        call("GET", "/api/v1/runs", headers={"Authorization": f"Bearer {tokens['read']}x"})
        call("POST", "/api/v1/runs", json={"entity": "DE01", "period": "2026-09"},
             headers={"Authorization": f"Bearer {tokens['read']}"})
        call("POST", "/api/v1/runs", json={"entity": sorted(ctx.reference.entities)[0], "period": "2026-09"},
             headers={"Authorization": f"Bearer {tokens['operate']}"})
        deadline = time.monotonic() + 20  # let the worker process and log (it is asynchronous; slow when loaded)
        while time.monotonic() < deadline and not any("inbox.processed" in r.getMessage() for r in seen):
            time.sleep(0.1)
        logs.get_logger().warning("deliberate", value=f"the secret is {WEBHOOK}")  # the last line of defence
    for name in ("", "ledgerbridge", "ledgerbridge.service", "ledgerbridge.runtime.dbos", "dbos", "uvicorn"):
        logging.getLogger(name).removeHandler(handler)
    out = capsys.readouterr()
    logged = "\n".join([caplog.text, *(f"{r.getMessage()} {r.__dict__}" for r in [*caplog.records, *seen]),
                        out.out, out.err])
    assert "deliberate" in logged and "[REDACTED]" in logged
    assert any("webhook.accepted" in r.getMessage() for r in seen)
    assert any("inbox.processed" in r.getMessage() for r in seen)
    everything = logged + "\n".join(answers)
    for secret in (WEBHOOK, FILE_SECRET, *tokens.values(), *(t.split("_", 2)[2] for t in tokens.values())):
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."
    assert any(a.startswith("202") for a in answers) and any(a.startswith("409") for a in answers)
