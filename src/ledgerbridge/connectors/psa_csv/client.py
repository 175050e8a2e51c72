"""File access for the PSA CSV export: which drop is there (manifest hash) and streaming its rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from ledgerbridge.errors import PermanentError
from ledgerbridge.model.entities import Expense, TimeEntry
from ledgerbridge.samplefirm import FileError, Firm, iter_expenses, iter_time_entries, load_firm


class PsaCsvClient:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _require(self, name: str) -> Path:
        path = self.directory / name
        if not path.exists():
            raise PermanentError(
                f"psa_csv: {path} does not exist — drop the PSA export (docs/file-format.md) into {self.directory}",
                details={"path": str(path)},
            )
        return path

    def drop_id(self) -> str:
        """Identity of the current export drop: SHA-256 of its manifest (or of the time-entry file)."""
        path = self.directory / "manifest.json"
        if not path.exists():
            path = self._require("time_entries.csv")
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def load_master(self) -> Firm:
        self._require("legal_entities.csv")
        return load_firm(self.directory)

    def time_entries(self, errors: list[FileError]) -> Iterator[TimeEntry]:
        return iter_time_entries(self._require("time_entries.csv"), errors)

    def expenses(self, errors: list[FileError]) -> Iterator[Expense]:
        return iter_expenses(self._require("expenses.csv"), errors)
