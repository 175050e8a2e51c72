"""Bearer-token auth with scopes: ``read`` < ``operate`` < ``admin`` (a wider scope includes the narrower ones).

Every admin route declares its scope with ``Depends(require("..."))``. Missing or invalid token -> 401, valid
token with too narrow a scope -> 403; both answers say what to do. Each mutating call (anything but GET/HEAD) is
written to the audit log (actor ``token:<name>#<id>``, the method and path), and ``last_used_at`` is updated (at
most once a minute per token and process for read calls).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledgerbridge.store import audit, tokens
from ledgerbridge.store.tokens import SCOPES, ApiToken

_RANK = {s: i for i, s in enumerate(SCOPES)}
_bearer = HTTPBearer(auto_error=False, description="An API token from `ledgerbridge tokens create`.")
_BEARER = Depends(_bearer)
_touched: dict[str, float] = {}
_touch_lock = threading.Lock()
TOUCH_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    token: ApiToken

    @property
    def actor(self) -> str:
        return f"token:{self.token.name}#{self.token.id}"


def _deny(status: int, message: str) -> HTTPException:
    headers = {"WWW-Authenticate": 'Bearer realm="ledgerbridge"'} if status == 401 else None
    return HTTPException(status_code=status, detail=message, headers=headers)


def require(scope: str) -> Callable[..., Principal]:
    """A FastAPI dependency admitting tokens whose scope includes ``scope``."""
    if scope not in _RANK:
        raise ValueError(f"unknown scope {scope!r}; use one of {SCOPES}")

    def dependency(request: Request, creds: HTTPAuthorizationCredentials | None = _BEARER) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise _deny(401, "missing API token: send 'Authorization: Bearer <token>' (create one with "
                             "`ledgerbridge tokens create --scope read|operate|admin --name NAME`)")
        engine = request.app.state.ctx.engine
        mutating = request.method not in ("GET", "HEAD", "OPTIONS")
        with engine.connect() as conn:
            tok = tokens.verify(conn, creds.credentials)
        if tok is None:
            raise _deny(401, "invalid API token (unknown, revoked or mistyped): check it, or create a new one "
                             "with `ledgerbridge tokens create`")
        if _RANK[tok.scope] < _RANK[scope]:
            raise _deny(403, f"token {tok.name!r} has scope {tok.scope!r}; {request.method} {request.url.path} "
                             f"needs scope {scope!r} or wider (read < operate < admin)")
        principal = Principal(tok)
        now = time.monotonic()
        with _touch_lock:
            due = mutating or now - _touched.get(tok.id, -1e9) >= TOUCH_EVERY_SECONDS
            if due:
                _touched[tok.id] = now
        if due:
            with engine.begin() as conn:
                tokens.touch(conn, tok.id)
                if mutating:
                    audit.append(conn, principal.actor, "api.call", f"{request.method} {request.url.path}",
                                 {"scope": tok.scope, "required_scope": scope,
                                  "request_id": getattr(request.state, "request_id", None)})
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency

