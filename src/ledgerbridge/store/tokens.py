"""API tokens of the service (``ledgerbridge tokens create|list|revoke``): stored hashed, never in clear.

A token reads ``lbt_<id>_<secret>``. The row keeps the id, a name, the scope (``read`` < ``operate`` < ``admin``)
and ``token_hash`` = ``<salt hex>$<HMAC-SHA256(salt, secret) hex>`` with a random 16-byte salt per token; the
secret itself is shown once at creation and never stored. Verification recomputes the HMAC and compares in
constant time (:func:`hmac.compare_digest`).

The table is declared here on the store's shared metadata (migration ``0002_api_tokens``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import CheckConstraint, Column, Connection, String, Table, select, update

from ledgerbridge.store.errors import InvalidStatusError, NotFoundError
from ledgerbridge.store.schema import metadata
from ledgerbridge.store.types import UTCDateTime, utcnow

SCOPES = ("read", "operate", "admin")
_TOKEN = re.compile(r"^lbt_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint("scope IN ('read', 'operate', 'admin')", name="scope"),
)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token (no secret in it)."""

    id: str
    name: str
    scope: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(secret: str, salt: bytes) -> str:
    return f"{salt.hex()}${hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()}"


def _row(r: object) -> ApiToken:
    m = r._mapping  # type: ignore[attr-defined]
    return ApiToken(m["id"], m["name"], m["scope"], m["created_at"], m["last_used_at"], m["revoked_at"])


def create(conn: Connection, name: str, scope: str, *, at: dt.datetime | None = None) -> tuple[ApiToken, str]:
    """Store a new token; returns it and the clear token string (the only time it exists)."""
    if scope not in SCOPES:
        raise ValueError(f"token scope {scope!r} is not one of {SCOPES} (read < operate < admin)")
    if not name.strip() or len(name) > 128:
        raise ValueError("a token needs a name of 1 to 128 characters (who or what uses it)")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = at or utcnow()
    conn.execute(api_tokens.insert().values(id=token_id, name=name, scope=scope,
                                            token_hash=_hash(secret, secrets.token_bytes(16)), created_at=now))
    return ApiToken(token_id, name, scope, now, None, None), f"lbt_{token_id}_{secret}"


def verify(conn: Connection, token: str) -> ApiToken | None:
    """The active token matching ``token``, or None (malformed, unknown, revoked or wrong secret)."""
    m = _TOKEN.match(token)
    if m is None:
        return None
    token_id, secret = m.groups()
    r = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if r is None:
        hmac.compare_digest(_hash(secret, b"\0" * 16), _hash(secret, b"\1" * 16))  # same work for unknown ids
        return None
    salt_hex, _, _ = r.token_hash.partition("$")
    if not hmac.compare_digest(_hash(secret, bytes.fromhex(salt_hex)), r.token_hash):
        return None
    found = _row(r)
    return found if found.active else None


def touch(conn: Connection, token_id: str, *, at: dt.datetime | None = None) -> None:
    """Record that the token was used now."""
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at or utcnow()))


def list_tokens(conn: Connection, *, include_revoked: bool = True) -> list[ApiToken]:
    q = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if not include_revoked:
        q = q.where(api_tokens.c.revoked_at.is_(None))
    return [_row(r) for r in conn.execute(q)]


def get(conn: Connection, token_id: str) -> ApiToken | None:
    r = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return _row(r) if r is not None else None


def revoke(conn: Connection, token_id: str, *, at: dt.datetime | None = None) -> ApiToken:
    """Revoke a token (it stops working at once); raises if unknown or already revoked."""
    n = conn.execute(update(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=at or utcnow())).rowcount
    tok = get(conn, token_id)
    if tok is None:
        raise NotFoundError(f"no API token with id {token_id!r} (see `ledgerbridge tokens list`)")
    if n == 0:
        raise InvalidStatusError(f"API token {token_id!r} was already revoked at {tok.revoked_at}")
    return tok
