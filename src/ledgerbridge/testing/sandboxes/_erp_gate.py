"""Shared by the SAP S/4HANA and Oracle Fusion sandboxes: the front door of a tenant — sliding-window throttling
(429 + Retry-After), basic auth or a bearer token from the OAuth client-credentials endpoint, and the call log."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def install_gate(app: FastAPI, *, user: str, password: str, client_id: str, client_secret: str, token_path: str,
                 token_ttl: float, realm: str, limits: RateWindow, calls: CallLog, require_scope: bool = False,
                 before: Callable[[], None] | None = None) -> dict[str, float]:
    """Add the middleware and the token endpoint to ``app``; returns the live tokens (token -> expiry on the
    monotonic clock; clear it to revoke every token). ``before`` runs ahead of every authenticated request."""
    tokens: dict[str, float] = {}
    basic_ok, client_ok = _basic(user, password), _basic(client_id, client_secret)

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        path = request.url.path
        wait = limits.try_acquire()
        if wait is not None:
            calls.add(request.method, path, 429)
            return Response("Too Many Requests", status_code=429, headers={"Retry-After": f"{wait:.3f}"})
        try:
            auth = request.headers.get("authorization", "")
            if path == token_path:
                ok = auth == client_ok
            elif auth.startswith("Bearer "):
                ok = tokens.get(auth[7:], 0.0) > time.monotonic()
            else:
                ok = auth == basic_ok
            if ok:
                if before is not None:
                    before()
                response = await call_next(request)
            else:
                response = Response("Unauthorized", status_code=401,
                                    headers={"WWW-Authenticate": f'Basic realm="{realm}"'})
        finally:
            limits.release()
        calls.add(request.method, path, response.status_code)
        return response

    @app.post(token_path)
    async def token(request: Request) -> Response:
        form = dict(x.split("=", 1) for x in (await request.body()).decode().split("&") if "=" in x)
        if form.get("grant_type") != "client_credentials" or (require_scope and not form.get("scope")):
            return Response(json.dumps({"error": "invalid_request"}), status_code=400, media_type="application/json")
        tok = secrets.token_urlsafe(24)
        tokens[tok] = time.monotonic() + token_ttl
        return Response(json.dumps({"access_token": tok, "token_type": "Bearer", "expires_in": token_ttl}),
                        media_type="application/json")

    return tokens
