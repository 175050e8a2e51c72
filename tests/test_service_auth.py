"""Tokens and scopes: stored hashed, 401 for missing/invalid/revoked, 403 for a narrow scope, every mutating call
audited, last_used_at updated, and the `tokens` commands print a token once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ledgerbridge.cli import app as cli_app
from ledgerbridge.config import default_config
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.store import audit, tokens
from ledgerbridge.store.tokens import api_tokens


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[FlowContext, TestClient]]:
    cfg = default_config()
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": f"sqlite:///{tmp_path}/s.sqlite"})})
    ctx = FlowContext(cfg, workdir=tmp_path)
    ctx.migrate()
    with TestClient(create_app(ctx, ServiceSettings(worker=False))) as client:
        yield ctx, client


def _auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_token_is_stored_salted_and_hashed_and_verifies_in_constant_time(env: tuple[FlowContext, Any]) -> None:
    ctx, _ = env
    a = st.issue_token(ctx, "read", "a")
    b = st.issue_token(ctx, "read", "b")
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(api_tokens)).all()
        assert len(rows) == 2
        for row, clear in zip(sorted(rows, key=lambda r: r.name), (a, b), strict=True):
            secret = clear.split("_", 2)[2]
            assert secret not in row.token_hash and clear not in row.token_hash
            salt, digest = row.token_hash.split("$")
            assert len(salt) == 32 and len(digest) == 64
        assert rows[0].token_hash.split("$")[0] != rows[1].token_hash.split("$")[0]  # per-token salt
        assert tokens.verify(conn, a).name == "a"  # type: ignore[union-attr]
        assert tokens.verify(conn, a[:-1] + ("x" if a[-1] != "x" else "y")) is None
        assert tokens.verify(conn, "lbt_0000000000000000_" + "x" * 43) is None
        assert tokens.verify(conn, "garbage") is None


def test_missing_invalid_and_revoked_tokens_are_401_with_a_clear_message(env: tuple[FlowContext, TestClient]) -> None:
    ctx, client = env
    r = client.get("/api/v1/dead-letters")
    assert r.status_code == 401 and "missing API token" in r.json()["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get("/api/v1/dead-letters", headers=_auth("lbt_0123456789abcdef_" + "z" * 43))
    assert r.status_code == 401 and "invalid API token" in r.json()["message"]
    tok = st.issue_token(ctx, "admin")
    assert client.get("/api/v1/dead-letters", headers=_auth(tok)).status_code == 200
    with ctx.engine.begin() as conn:
        tokens.revoke(conn, tok.split("_")[1])
    assert client.get("/api/v1/dead-letters", headers=_auth(tok)).status_code == 401


def test_scopes_nest_read_operate_admin(env: tuple[FlowContext, TestClient]) -> None:
    ctx, client = env
    read, operate, admin = (st.issue_token(ctx, s) for s in ("read", "operate", "admin"))
    body = {"reason": "test"}
    # a read route: every scope
    for tok in (read, operate, admin):
        assert client.get("/api/v1/audit/verify", headers=_auth(tok)).status_code == 200
    # an operate route: read is refused with the scopes named, operate and admin get through (404: no letter)
    r = client.post("/api/v1/dead-letters/nope/discard", json=body, headers=_auth(read))
    assert r.status_code == 403
    assert "'read'" in r.json()["message"] and "'operate'" in r.json()["message"]
    for tok in (operate, admin):
        assert client.post("/api/v1/dead-letters/nope/discard", json=body, headers=_auth(tok)).status_code == 404
    # an admin route: operate is refused
    r = client.post("/api/v1/periods/E1/2026-01/lock", headers=_auth(operate))
    assert r.status_code == 403 and "'admin'" in r.json()["message"]
    assert client.post("/api/v1/periods/E1/2026-01/lock", headers=_auth(admin)).status_code == 404


def test_every_route_declares_a_scope(env: tuple[FlowContext, TestClient]) -> None:
    _, client = env
    spec = client.get("/openapi.json").json()
    open_routes = {("/healthz", "get"), ("/metrics", "get"), ("/webhooks/{system}", "post")}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if (path, method) in open_routes:
                continue
            assert op.get("security"), (path, method)
            assert re.search(r"scope: (read|operate|admin)", op["summary"]), (path, method, op["summary"])
            r = client.request(method.upper(), path.replace("{", "x").replace("}", "x"))
            assert r.status_code == 401, (path, method, r.status_code)


def test_mutating_calls_are_audited_and_last_used_is_updated(env: tuple[FlowContext, TestClient]) -> None:
    ctx, client = env
    tok = st.issue_token(ctx, "operate", "ops-bot")
    token_id = tok.split("_")[1]
    client.post("/api/v1/dead-letters/missing/discard", json={"reason": "x"}, headers=_auth(tok))
    client.get("/api/v1/dead-letters", headers=_auth(tok))
    with ctx.engine.connect() as conn:
        calls = [e for e in audit.entries(conn) if e.action == "api.call"]
        used = tokens.get(conn, token_id)
        assert audit.verify(conn).ok
    assert len(calls) == 1  # the GET is not audited, the POST is (even though it answered 404)
    assert calls[0].actor == f"token:ops-bot#{token_id}"
    assert calls[0].subject == "POST /api/v1/dead-letters/missing/discard"
    assert tok not in str(calls[0].details)
    assert used is not None and used.last_used_at is not None


def test_tokens_commands_print_the_token_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERBRIDGE_CONFIG", raising=False)
    runner = CliRunner()
    created = runner.invoke(cli_app, ["tokens", "create", "--name", "grafana", "--scope", "read"])
    assert created.exit_code == 0, created.output
    clear = next(line for line in created.output.splitlines() if line.startswith("lbt_"))
    listed = runner.invoke(cli_app, ["tokens", "list", "--json"])
    assert listed.exit_code == 0 and "grafana" in listed.output and clear.split("_", 2)[2] not in listed.output
    token_id = clear.split("_")[1]
    assert runner.invoke(cli_app, ["tokens", "revoke", token_id]).exit_code == 0
    assert runner.invoke(cli_app, ["tokens", "revoke", token_id]).exit_code == 2  # already revoked
    bad = runner.invoke(cli_app, ["tokens", "create", "--name", "x", "--scope", "root"])
    assert bad.exit_code != 0 and "root" in bad.output
