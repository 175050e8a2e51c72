"""File I/O of the file-journal target: the outbox (journal CSV + manifest, written atomically, manifest last) and
the inbox (acknowledgement files dropped by the target)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import atomic_write_bytes, file_lock
from ledgerbridge.connectors.file_journal.mapping import RenderedRun, ack_names, csv_name, manifest_name
from ledgerbridge.errors import ConflictError, PermanentError

SYSTEM = "file_journal"
LOCK_NAME = ".ledgerbridge.lock"


class WriteOutcome(StrEnum):
    WRITTEN = "written"  # CSV and manifest written now
    COMPLETED = "completed"  # the CSV was already there (same hash) from an interrupted write; manifest added
    UNCHANGED = "unchanged"  # already released with the same content: nothing done


@dataclass(frozen=True, slots=True)
class AckFile:
    name: str
    text: str
    is_json: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileJournalClient:
    """Reads and writes the outbox and inbox folders. One writer at a time per outbox (``flock``)."""

    def __init__(self, outbox: Path | str, inbox: Path | str) -> None:
        self.outbox = Path(outbox)
        self.inbox = Path(inbox)

    # ------------------------------------------------------------------ outbox

    def write_run(self, rendered: RenderedRun) -> WriteOutcome:
        """Release a rendered run: CSV first, manifest last, each atomically.

        Same run id and same CSV hash as what is there -> no-op. Same run id, different hash -> ConflictError
        (posted files are never rewritten; a changed run needs a new run id)."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        csv_path = self.outbox / rendered.csv_name
        man_path = self.outbox / rendered.manifest_name
        with file_lock(self.outbox / LOCK_NAME):
            manifest = self._read_manifest_path(man_path)
            if manifest is not None:
                held = manifest.get("sha256")
                if held != rendered.sha256:
                    raise self._conflict(rendered, str(held), "released (manifest present)")
                if not csv_path.exists() or sha256_file(csv_path) != held:
                    raise PermanentError(
                        f"{SYSTEM}: run {rendered.run_id}: {csv_path} is missing or no longer matches the SHA-256 in "
                        f"{man_path.name}; the released file was altered outside ledgerbridge — restore it from the "
                        "target's copy or investigate before re-posting",
                        details={"run_id": rendered.run_id, "file": str(csv_path)},
                    )
                return WriteOutcome.UNCHANGED
            if csv_path.exists():
                held = sha256_file(csv_path)
                if held != rendered.sha256:
                    raise self._conflict(rendered, held, "written but not released (no manifest)")
                atomic_write_bytes(man_path, rendered.manifest_bytes)
                return WriteOutcome.COMPLETED
            atomic_write_bytes(csv_path, rendered.csv_bytes)
            atomic_write_bytes(man_path, rendered.manifest_bytes)
            return WriteOutcome.WRITTEN

    @staticmethod
    def _conflict(rendered: RenderedRun, held: str, state: str) -> ConflictError:
        return ConflictError(
            f"{SYSTEM}: run {rendered.run_id} is already {state} as {rendered.csv_name} with SHA-256 {held}, but "
            f"this posting renders SHA-256 {rendered.sha256}: the same run id must always carry the same journals "
            "— post the changes as a new run (reversals plus new entries), or resolve in stewardship",
            details={"run_id": rendered.run_id, "file": rendered.csv_name, "held_sha256": held,
                     "new_sha256": rendered.sha256},
        )

    def _read_manifest_path(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise PermanentError(f"{SYSTEM}: manifest {path} is not valid JSON ({exc}); restore it",
                                 details={"file": str(path)}) from None
        if not isinstance(doc, dict):
            raise PermanentError(f"{SYSTEM}: manifest {path} is not a JSON object; restore it",
                                 details={"file": str(path)})
        return doc

    def read_manifest(self, run_id: str) -> dict[str, Any] | None:
        return self._read_manifest_path(self.outbox / manifest_name(run_id))

    def read_released_csv(self, run_id: str) -> str | None:
        """The run's CSV text, verified against its manifest's SHA-256; ``None`` when the run was not released."""
        manifest = self.read_manifest(run_id)
        if manifest is None:
            return None
        path = self.outbox / csv_name(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise PermanentError(
                f"{SYSTEM}: run {run_id}: {path} is missing or does not match the SHA-256 in its manifest; the "
                "released file was altered — restore it before reading acknowledgements",
                details={"run_id": run_id, "file": str(path)},
            )
        return data.decode("utf-8")

    # ------------------------------------------------------------------ inbox

    def read_ack(self, run_id: str) -> AckFile | None:
        """The run's acknowledgement (``<run_id>.ack.csv`` or ``.ack.json``), or ``None`` when none arrived yet."""
        found: list[AckFile] = []
        for name in ack_names(run_id):
            path = self.inbox / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise PermanentError(
                    f"{SYSTEM}: acknowledgement {name} is not UTF-8 (byte {exc.start}); ask the target to write UTF-8",
                    details={"ack_file": name, "run_id": run_id},
                ) from None
            found.append(AckFile(name, text, name.endswith(".json")))
        if len(found) > 1:
            raise PermanentError(
                f"{SYSTEM}: run {run_id} has both {found[0].name} and {found[1].name} in {self.inbox}; keep one",
                details={"run_id": run_id},
            )
        return found[0] if found else None

    def acked_run_ids(self) -> list[str]:
        """Run ids with an acknowledgement in the inbox, sorted."""
        if not self.inbox.exists():
            return []
        out = set()
        for entry in os.scandir(self.inbox):
            for suffix in (".ack.csv", ".ack.json"):
                if entry.name.endswith(suffix) and not entry.name.startswith("."):
                    out.add(entry.name[: -len(suffix)])
        return sorted(out)
