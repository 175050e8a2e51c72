"""The PSA CSV export as a source system.

Change detection is a *file drop*: each export holds every version of every time entry and expense (a row per
version, docs/file-format.md); the inbox de-duplicates versions already received, so re-reading a drop is
harmless. ``until`` lets a caller read only the versions the PSA had produced by a given moment (the demo replays
three months of arrivals month by month this way).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import BatchSizes, Capabilities, CursorKind, SystemKind
from ledgerbridge.connectors.psa_csv.client import PsaCsvClient
from ledgerbridge.connectors.psa_csv.mapping import record_of
from ledgerbridge.samplefirm import FileError, Firm

CAPABILITIES = Capabilities(
    connector="psa_csv",
    system_kind=SystemKind.PSA,
    reads=frozenset({"legal_entity", "customer", "project", "resource", "rate_card_line", "time_entry", "expense",
                     "billing_milestone", "account", "dimension_value", "tax_code", "fx_rate", "accounting_period"}),
    change_detection=frozenset({CursorKind.FILE_DROP}),
    batch_sizes=BatchSizes(read=5000),
)


class PsaCsvSource:
    uses_reference = False  # reads files only: survives a reference reload

    def __init__(self, system: str, directory: Path) -> None:
        self.system = system
        self.client = PsaCsvClient(directory)

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def drop_id(self) -> str:
        return self.client.drop_id()

    def load_master(self) -> Firm:
        return self.client.load_master()

    def read_records(
        self, errors: list[FileError], *, until: dt.datetime | None = None, since: dt.datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every time-entry and expense version in the drop (optionally those updated in (since, until]).
        Bad rows are appended to ``errors`` with their line numbers and skipped; the rest flow on."""
        for source in (self.client.time_entries(errors), self.client.expenses(errors)):
            for item in source:
                if item.source_system != self.system:
                    item = item.model_copy(update={"source_system": self.system})
                ts = item.updated_at
                if ts is not None and until is not None and ts > until:
                    continue
                if ts is not None and since is not None and ts <= since:
                    continue
                yield record_of(item)
