"""Helpers for driving the service in tests and benchmarks (users can use them to test their senders too)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store import tokens


def with_secret(ctx: FlowContext, system: str, key: str, reference: str) -> None:
    """Give ``system`` the secret ``key`` (a ``${env:..}``/``${file:..}`` reference) in ``ctx.config``."""
    cfg = ctx.config
    sc = cfg.systems[system]
    ref = SecretRef(reference, key_path=f"systems.{system}.secrets.{key}")
    systems = dict(cfg.systems)
    systems[system] = sc.model_copy(update={"secrets": {**sc.secrets, key: ref}})
    ctx.config = cfg.model_copy(update={"systems": systems})


def time_entry_event(entry: dict[str, Any], *, event_type: str = "time_entry.approved",
                     event_id: str | None = None, source_system: str | None = None) -> dict[str, Any]:
    """A time-entry event around an entry payload (canonical TimeEntry JSON)."""
    return {"event_type": event_type, "event_id": event_id or f"evt-{uuid.uuid4().hex[:16]}",
            "source_system": source_system or entry["source_system"],
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(), "entry": entry}


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def issue_token(ctx: FlowContext, scope: str, name: str | None = None) -> str:
    """Create a token in the store and return its clear value."""
    with ctx.engine.begin() as conn:
        _tok, clear = tokens.create(conn, name or f"test-{scope}", scope)
    return clear


def source_entries(ctx: FlowContext, system: str, *, entity: str = "time_entry",
                   status: str = "approved") -> list[dict[str, Any]]:
    """Canonical payloads of ``entity`` versions in ``status`` read from a file source (to build events from)."""
    errors: list[Any] = []
    out = [r["payload"] for r in ctx.connector(system).read_records(errors)
           if r["entity"] == entity and r["payload"]["approval_status"] == status]
    if errors:
        raise ValueError(f"source {system} has bad rows: {errors[:3]}")
    return out


def fresh_entry(entry: dict[str, Any], new_id: str) -> dict[str, Any]:
    """A copy of ``entry`` as another item (id ``new_id``, version 1)."""
    return {**entry, "id": new_id, "version": 1}
