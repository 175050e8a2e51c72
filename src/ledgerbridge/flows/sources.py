"""Polled sources (Redmine, and any connector with ``sync(cursor) -> result``): one sync, landed exactly once.

``sync_source`` reads the source's changes since the stored cursor, then in ONE store transaction lands the change
records in the inbox under the connector's idempotency keys, stores the new cursor and dead-letters the records the
connector could not map (operational queue when nothing ledger-affecting can be derived from them, with the raw
record and the fix). A crash before the commit re-reads the same changes next time; after it, nothing is read twice.
The transactional flow then decides the versions (``transactions.process_pending``): an edit or un-approval after
posting becomes a reversal + re-post, a deletion a reversal.

Business events a source reports beside its records (``result.business_events``: e.g. a CRM opportunity closed-won
as ``project.approved``) start the matching subscription chains (:func:`ledgerbridge.flows.subscriptions.publish`)
*before* the cursor is stored: a crash in between re-reads them next time and the duplicate publish runs nothing
(chains are keyed by the event's idempotency key). They need the durable runtime launched; with no subscription
configured they are counted and audited, not dropped silently.

``load_source_master`` merges the source's projects and resources (mapped with the system's configured defaults
and overrides) into the flow context's reference data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store import audit, cursors, dead_letters, inbox
from ledgerbridge.store.dead_letters import NewDeadLetter
from ledgerbridge.store.inbox import InboxItem

STREAM = "time_entries"


@dataclass
class SyncOutcome:
    system: str
    events: int
    new: int
    duplicates: int
    errors: int
    stats: dict[str, Any]
    business_events: int = 0  # reported by the source
    chains_started: int = 0  # subscription chains those events started (duplicates start none)


def sync_source(ctx: FlowContext, system: str, *, full: bool | None = None) -> SyncOutcome:
    source = ctx.connector(system)
    with ctx.engine.connect() as conn:
        cursor = cursors.get_cursor(conn, system, STREAM)
    result = source.sync(cursor, full=full)
    items = [InboxItem(system, r["entity"], str(r["external_id"]), r["version"], r["payload"],
                       idempotency_key=r.get("idempotency_key")) for r in result.records()]
    letters = [NewDeadLetter("operational", "sources", system, "time_entry",
                             str(err.details.get("entry_id") or err.details.get("id") or err.code),
                             {"details": err.details}, err.kind.value, err.code, str(err))
               for err in result.errors]
    business = list(getattr(result, "business_events", None) or [])
    started = 0
    if business and ctx.config.subscriptions:
        from ledgerbridge.flows import subscriptions

        started = subscriptions.publish(ctx, business).enqueued
    with ctx.engine.begin() as conn:
        new, dup = inbox.add_batch(conn, items, batch_id=f"{system}:sync")
        cursors.set_cursor(conn, system, STREAM, result.cursor)
        if letters:
            dead_letters.add(conn, letters)
        audit.append(conn, "ledgerbridge", "source.synced", f"system:{system}",
                     {"events": len(items), "new": new, "duplicates": dup, "errors": len(letters),
                      "business_events": len(business), "chains_started": started,
                      "stats": {k: v for k, v in result.stats.items() if isinstance(v, int | str | bool)}})
    return SyncOutcome(system, len(items), new, dup, len(letters), dict(result.stats), len(business), started)


def load_source_master(ctx: FlowContext, system: str) -> dict[str, int]:
    """Merge the source's projects and resources into the reference data (existing ids are replaced)."""
    source = ctx.connector(system)
    projects = {p.id: p for p in source.projects()}
    resources = {r.id: r for r in source.resources()}
    ctx.reference.projects.update(projects)
    ctx.reference.resources.update(resources)
    return {"projects": len(projects), "resources": len(resources)}
