"""File I/O of the Beancount ledger: one file per legal entity (``ledger/US01.beancount``) included from
``main.beancount``; every change is validated with beancount's own loader before it is released.

Release protocol for an entity file: copy the released file to a hidden temp file in the same folder, append, fsync,
load the temp file with ``beancount.loader`` (the ``bean-check`` equivalent), run the caller's checks on the loaded
entries, and only with zero errors ``os.replace`` it over the released file. Otherwise the temp file is deleted and
the released ledger is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from beancount import loader
from beancount.core import data

from ledgerbridge.connectors.base import atomic_write_bytes, file_lock, fsync_dir
from ledgerbridge.connectors.beancount_ledger.mapping import LedgerState, summarize
from ledgerbridge.errors import RecordValidationError

SYSTEM = "beancount_ledger"
MAIN_NAME = "main.beancount"
LEDGER_DIR = "ledger"

# beancount's public ``load_file`` writes a pickle cache next to the file it loads (a 30 MB side file per
# temporary copy at 50k transactions, and ~25% slower); the uncached loader is the same function without it.
_load_file: Callable[..., tuple[list[data.Directive], list[Any], dict[str, Any]]] = getattr(
    loader, "_uncached_load_file", loader.load_file
)


def load(path: Path) -> tuple[list[data.Directive], list[Any]]:
    """Load a ledger file (and its includes) with beancount's loader: parse, book, run plugins, validate."""
    entries, errors, _ = _load_file(str(Path(path).resolve()), None, None, None)
    return entries, errors


def describe_errors(errors: Sequence[Any], root: Path, shown_as: dict[str, str] | None = None) -> list[str]:
    """``file:line: message [journal id]`` for each beancount error, with temp paths shown as the released name."""
    out = []
    for err in errors:
        src = getattr(err, "source", None) or {}
        fname = str(src.get("filename", "?"))
        fname = (shown_as or {}).get(fname, fname)
        with contextlib.suppress(ValueError):
            fname = str(Path(fname).relative_to(root))
        entry = getattr(err, "entry", None)
        jid = entry.meta.get("journal_id") if entry is not None and hasattr(entry, "meta") else None
        msg = " ".join(str(getattr(err, "message", err)).split())
        out.append(f"{fname}:{src.get('lineno', '?')}: {msg}" + (f" [journal {jid}]" if jid else ""))
    return out


class BeancountLedgerClient:
    """Reads, appends to and validates the ledger files under ``root``. One writer per entity file (``flock``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.ledger_dir = self.root / LEDGER_DIR
        self.main_path = self.root / MAIN_NAME
        self._cache: dict[Path, tuple[tuple[int, int, int], LedgerState]] = {}

    def entity_path(self, component: str) -> Path:
        return self.ledger_dir / f"{component}.beancount"

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def state(self, path: Path) -> LedgerState:
        """What the released entity file holds (empty when it does not exist). Cached while the file is unchanged."""
        stamp = self._stamp(path)
        if stamp is None:
            return LedgerState()
        hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        entries, errors = load(path)
        if errors:
            raise RecordValidationError(
                f"{SYSTEM}: the released ledger {self.rel(path)} does not load cleanly (edited by hand?): "
                + "; ".join(describe_errors(errors, self.root)[:20])
                + " — fix the file (bean-check) before posting to it",
                details={"file": self.rel(path), "rule": "beancount.released_ledger_invalid",
                         "errors": describe_errors(errors, self.root)},
            )
        st = summarize(entries, self.rel(path))
        self._cache[path] = (stamp, st)
        return st

    def journal_ids_in(self, path: Path) -> set[str]:
        """Journal ids present in an entity file, found by a text scan (cheap prefilter for read-back)."""
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return set()
        ids = set()
        marker = b'\n  journal_id: "'
        pos = text.find(marker)
        while pos != -1:
            start = pos + len(marker)
            end = text.find(b'"', start)
            ids.add(text[start:end].decode("utf-8"))
            pos = text.find(marker, end)
        return ids

    def append_validated(
        self, path: Path, text: str, header: str, check: Callable[[LedgerState], list[str]]
    ) -> LedgerState:
        """Append ``text`` to the entity file at ``path`` (created with ``header`` when new), release only if the
        result loads with zero beancount errors and ``check(state)`` returns no problems. Returns the new state.
        On refusal raises :class:`RecordValidationError` with beancount's messages; the released file is
        untouched."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.parent / f".{path.name}.lock"):
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmp = Path(tmp_name)
            try:
                os.close(fd)
                if path.exists():
                    shutil.copyfile(path, tmp)
                else:
                    tmp.write_text(header, encoding="utf-8")
                with open(tmp, "a", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                entries, errors = load(tmp)
                shown = {str(tmp): self.rel(path)}
                problems = describe_errors(errors, self.root, shown)
                state = summarize(entries, self.rel(path))
                if not problems:
                    problems = check(state)
                if problems:
                    raise RecordValidationError(
                        f"{SYSTEM}: beancount refused the change to {self.rel(path)}; nothing was released: "
                        + "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else ""),
                        details={"file": self.rel(path), "rule": "beancount.validation_failed", "errors": problems},
                    )
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
            fsync_dir(path.parent)
            stamp = self._stamp(path)
            if stamp is not None:
                self._cache[path] = (stamp, state)
            return state

    def ensure_main(self, text: str) -> bool:
        """Write ``main.beancount`` when its content differs, after checking it loads with zero errors.
        Returns True when it was (re)written."""
        with file_lock(self.root / f".{MAIN_NAME}.lock"):
            try:
                if self.main_path.read_text(encoding="utf-8") == text:
                    return False
            except FileNotFoundError:
                pass
            fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=f".{MAIN_NAME}.", suffix=".tmp")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                _, errors = load(tmp)
                if errors:
                    problems = describe_errors(errors, self.root, {str(tmp): MAIN_NAME})
                    raise RecordValidationError(
                        f"{SYSTEM}: {MAIN_NAME} would not load cleanly; not released: " + "; ".join(problems[:20]),
                        details={"file": MAIN_NAME, "rule": "beancount.validation_failed", "errors": problems},
                    )
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            atomic_write_bytes(self.main_path, text.encode("utf-8"))
            return True

    def check_main(self) -> list[str]:
        """``bean-check`` of the whole ledger: beancount's errors for ``main.beancount`` and everything it includes."""
        if not self.main_path.exists():
            return []
        _, errors = load(self.main_path)
        return describe_errors(errors, self.root)
