"""Intake: the one door through which source records enter the engine (file drops, pollers, webhooks).

``accept`` lands records in the inbox (embedded default: the database inbox, de-duplicated on the idempotency key
``system:entity:id:version`` — the same key whichever channel delivers a version, so a version sent by webhook
and again in a file export is one inbox row). When the configuration has a ``bus`` section, the same call
publishes to NATS JetStream instead (``Nats-Msg-Id`` = that key; the workers' consumer lands the records in the
inbox, see ``docs/distributed.md``); callers do not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ledgerbridge.flows import drift
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.transactions import LandResult, land


@dataclass(frozen=True)
class AcceptResult:
    received: int
    new: int
    duplicates: int
    channel: str  # "inbox" (embedded) or the bus name


def record_key(system: str, rec: dict[str, Any]) -> str:
    return f"{system}:{rec['entity']}:{rec['external_id']}:{rec['version']}"


def accept(ctx: FlowContext, system: str, records: Iterable[dict[str, Any]], *, batch_size: int = 5000,
           batch_prefix: str = "") -> AcceptResult:
    """Durably accept source records (``entity, external_id, version, payload``); returns what was new.

    On the bus, ``new``/``duplicates`` are as JetStream saw them (a repeat inside its duplicate window is a
    duplicate); the inbox key drops any later repeat when the consumer lands it. Either way, once this returns the
    records are stored durably."""
    records = drift.gate(ctx, system, records)  # payload drift: checks only streams with a snapshot
    if ctx.config.bus is not None:
        from ledgerbridge.bus.publisher import shared_publisher

        pub = shared_publisher(ctx.config.bus).publish(system, records)
        return AcceptResult(pub.received, pub.new, pub.duplicates, "jetstream")
    res: LandResult = land(ctx, system, records, batch_size=batch_size, batch_prefix=batch_prefix)
    return AcceptResult(res.received, res.new, res.duplicates, "inbox")
