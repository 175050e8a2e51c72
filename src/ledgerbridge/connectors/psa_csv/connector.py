"""The PSA CSV export as a source system.

Change detection is a *file drop*: each export holds every version of every time entry and expense (a row per
version, docs/file-format.md); the inbox de-duplicates versions already received, so re-reading a drop is
harmless. ``until`` lets a caller read only the versions the PSA had produced by a given moment (the demo replays
three months of arrivals month by month this way).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CursorKind,
    IdempotencyMechanism,
    InvoiceStatusUpdate,
    SystemKind,
    amount_text,
    atomic_write_bytes,
    file_lock,
)
from ledgerbridge.connectors.psa_csv.client import PsaCsvClient
from ledgerbridge.connectors.psa_csv.mapping import record_of
from ledgerbridge.errors import PermanentError
from ledgerbridge.samplefirm import FileError, Firm

CAPABILITIES = Capabilities(
    connector="psa_csv",
    system_kind=SystemKind.PSA,
    reads=frozenset({"legal_entity", "customer", "project", "resource", "rate_card_line", "time_entry", "expense",
                     "billing_milestone", "account", "dimension_value", "tax_code", "fx_rate", "accounting_period"}),
    change_detection=frozenset({CursorKind.FILE_DROP}),
    writes=frozenset({"invoice_status"}),
    idempotency=IdempotencyMechanism.UPSERT_EXTERNAL_ID,
    batch_sizes=BatchSizes(read=5000),
)

#: The status output the PSA reads back: one row per invoice key (ERP number and status), in the export directory.
STATUS_FILE = "invoice_status.csv"
STATUS_COLUMNS = ("invoice_key", "project_id", "legal_entity_id", "invoice_date", "currency", "total", "erp_system",
                  "erp_number", "status", "credits")


class PsaCsvSource:
    uses_reference = False  # reads files only: survives a reference reload

    def __init__(self, system: str, directory: Path, *, status_file: Path | None = None) -> None:
        self.system = system
        self.client = PsaCsvClient(directory)
        self.status_file = Path(status_file) if status_file is not None else Path(directory) / STATUS_FILE

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

    # ------------------------------------------------------------------ write-back (InvoiceStatusSink)

    def read_invoice_status(self) -> dict[str, dict[str, str]]:
        """invoice key -> row of the status output (empty when none was written yet)."""
        try:
            text = self.status_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return {row["invoice_key"]: row for row in csv.DictReader(io.StringIO(text))}

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        """Upsert the invoices' ERP number and status into ``invoice_status.csv`` (one row per invoice key, sorted
        by key). The file is rewritten atomically (temp file + rename) and only when a row changed, under a lock;
        writing the same updates again changes nothing. Returns the rows added or changed."""
        try:
            return self._write_status(updates)
        except OSError as exc:
            raise PermanentError(
                f"psa_csv: cannot write the invoice status output {self.status_file}: {exc} — make the file "
                "writable (or set the status_file option), then replay",
                details={"path": str(self.status_file)}) from exc

    def _write_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.status_file.parent / f".{self.status_file.name}.lock"):
            rows = self.read_invoice_status()
            changed = 0
            for u in updates:
                row = {"invoice_key": u.key, "project_id": u.project_id, "legal_entity_id": u.legal_entity_id,
                       "invoice_date": u.invoice_date.isoformat(), "currency": u.currency,
                       "total": amount_text(u.total, u.currency), "erp_system": u.erp_system,
                       "erp_number": u.erp_number or "", "status": u.status, "credits": u.credits or ""}
                if rows.get(u.key) != row:
                    rows[u.key] = row
                    changed += 1
            if changed:
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=list(STATUS_COLUMNS), lineterminator="\n")
                w.writeheader()
                for key in sorted(rows):
                    w.writerow({c: rows[key].get(c, "") for c in STATUS_COLUMNS})
                atomic_write_bytes(self.status_file, buf.getvalue().encode("utf-8"))
        return changed
