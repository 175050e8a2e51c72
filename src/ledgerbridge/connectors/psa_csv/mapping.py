"""Pure mapping of the export's rows to what the inbox stores: the canonical item as JSON, keyed by version."""

from __future__ import annotations

from typing import Any

from ledgerbridge.model.entities import Expense, TimeEntry


def record_of(item: TimeEntry | Expense) -> dict[str, Any]:
    """The inbox record of one source version: entity, id, version and the canonical JSON payload."""
    entity = "time_entry" if isinstance(item, TimeEntry) else "expense"
    return {
        "entity": entity,
        "external_id": item.id,
        "version": item.version,
        "updated_at": item.updated_at,
        "payload": item.model_dump(mode="json"),
    }
