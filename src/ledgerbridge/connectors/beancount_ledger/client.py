"""File I/O of the Beancount ledger; every change is validated with beancount's own loader before it is released.

Layout under ``root`` (one ledger per legal entity, split by period so that validating a run costs the size of its
period, not of the whole history)::

    main.beancount                 options + include "ledger/<ENTITY>.beancount" per entity
    ledger/US01.beancount          include "US01/accounts.beancount" + one include per period file
    ledger/US01/accounts.beancount open directives and ledgerbridge-period custom directives (append-only)
    ledger/US01/2026-01.beancount  the period's transactions (append-only)

Release protocol for a change to a period file (and, with new accounts, the accounts file): copy each released file
to a hidden temp file beside it, append, fsync, load the temp files together with ``beancount.loader`` (the
``bean-check`` equivalent), run the caller's checks on the loaded entries, and only with zero errors ``os.replace``
them over the released files (accounts first: an unused ``open`` is harmless). Otherwise the temp files are deleted
and the released ledger is untouched. A new period file is first released empty and included, so every released
state of ``main.beancount`` loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beancount import loader
from beancount.core import data

from ledgerbridge.connectors.base import atomic_write_bytes, file_lock, fsync_dir
from ledgerbridge.connectors.beancount_ledger.mapping import LedgerState, quote, summarize
from ledgerbridge.errors import RecordValidationError

SYSTEM = "beancount_ledger"
MAIN_NAME = "main.beancount"
LEDGER_DIR = "ledger"
ACCOUNTS_NAME = "accounts.beancount"
INVOICES_NAME = "invoices.beancount"
_PERIOD_FILE = re.compile(r"^\d{4}-\d{2}\.beancount$")
_ID_MARKER = b'\n  journal_id: "'
_HASH_MARKER = b'\n  content_hash: "'

# beancount's public ``load_file`` writes a pickle cache next to the file it loads (a side file per temporary
# copy, and ~25% slower); the uncached loader is the same function without it.
_load_file: Callable[..., tuple[list[data.Directive], list[Any], dict[str, Any]]] = getattr(
    loader, "_uncached_load_file", loader.load_file
)

Stamp = tuple[int, int, int]


def load(path: Path) -> tuple[list[data.Directive], list[Any]]:
    """Load a ledger file and its includes with beancount's loader: parse, book, run plugins, validate."""
    entries, errors, _ = _load_file(str(Path(path).resolve()), None, None, None)
    return entries, errors


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True, slots=True)
class EntityFiles:
    """The files of one entity's ledger."""

    component: str  # e.g. "US01"
    entity_file: Path  # ledger/US01.beancount
    directory: Path  # ledger/US01/
    accounts: Path  # ledger/US01/accounts.beancount

    def period_file(self, period: str) -> Path:
        return self.directory / f"{period}.beancount"

    @property
    def invoices(self) -> Path:
        """ledger/US01/invoices.beancount: the invoice register (custom directives only; no amounts move)."""
        return self.directory / INVOICES_NAME

    def period_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _PERIOD_FILE.match(p.name))


class BeancountLedgerClient:
    """Reads, appends to and validates the ledger files under ``root``. One writer per entity (``flock``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.ledger_dir = self.root / LEDGER_DIR
        self.main_path = self.root / MAIN_NAME
        self._states: dict[Path, tuple[tuple[Stamp | None, Stamp | None], LedgerState]] = {}
        self._ids: dict[Path, tuple[Stamp, dict[str, tuple[str, str]]]] = {}

    def files(self, component: str) -> EntityFiles:
        d = self.ledger_dir / component
        return EntityFiles(component, self.ledger_dir / f"{component}.beancount", d, d / ACCOUNTS_NAME)

    def rel(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def _namer(self, shown: dict[str, Path]) -> Callable[[str], str]:
        """Released name of a loaded file (temp copies shown as the file they will replace), memoised."""
        names: dict[str, str] = {}

        def name_of(fname: str) -> str:
            hit = names.get(fname)
            if hit is None:
                hit = names[fname] = self.rel(shown.get(fname, fname))
            return hit

        return name_of

    # ------------------------------------------------------------------ loading

    @contextlib.contextmanager
    def _view(self, files: Sequence[Path]) -> Iterator[Path]:
        """A throw-away file (outside the ledger) that includes ``files`` by absolute path, for loading them
        together (a period file needs the accounts file that opens its accounts)."""
        fd, name = tempfile.mkstemp(prefix="ledgerbridge-view-", suffix=".beancount")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("".join(f"include {quote(str(f.resolve()))}\n" for f in files))
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def load_files(self, files: Sequence[Path]) -> tuple[list[data.Directive], list[Any]]:
        with self._view(files) as view:
            return load(view)

    def describe_errors(self, errors: Sequence[Any], shown_as: dict[str, Path] | None = None) -> list[str]:
        """``file:line: message [journal id]`` per beancount error; temp files are shown as the released name."""
        out = []
        for err in errors:
            src = getattr(err, "source", None) or {}
            fname = str(src.get("filename", "?"))
            fname = self.rel((shown_as or {}).get(fname, fname))
            entry = getattr(err, "entry", None)
            meta = getattr(entry, "meta", None)
            jid = meta.get("journal_id") if isinstance(meta, dict) else None
            msg = " ".join(str(getattr(err, "message", err)).split())
            out.append(f"{fname}:{src.get('lineno', '?')}: {msg}" + (f" [journal {jid}]" if jid else ""))
        return out

    def state(self, ef: EntityFiles, period_file: Path | None) -> LedgerState:
        """What the released accounts file (and ``period_file``, when given and present) hold. Cached while both
        files are unchanged. Raises when the released files do not load cleanly (edited by hand?)."""
        pf = period_file if period_file is not None and period_file.exists() else None
        key = pf or ef.accounts
        stamps = (_stamp(ef.accounts), _stamp(pf) if pf is not None else None)
        hit = self._states.get(key)
        if hit is not None and hit[0] == stamps:
            return hit[1]
        files = [f for f in (ef.accounts, pf) if f is not None and f.exists()]
        if not files:
            return LedgerState()
        entries, errors = self.load_files(files)
        if errors:
            problems = self.describe_errors(errors)
            raise RecordValidationError(
                f"{SYSTEM}: the released ledger {', '.join(self.rel(f) for f in files)} does not load cleanly "
                "(edited by hand?): " + "; ".join(problems[:20]) + " — fix the file (bean-check) before posting",
                details={"files": [self.rel(f) for f in files], "rule": "beancount.released_ledger_invalid",
                         "errors": problems},
            )
        st = summarize(entries, self._namer({}))
        self._states[key] = (stamps, st)
        return st

    def scan(self, path: Path) -> dict[str, tuple[str, str]]:
        """``{journal_id: (content_hash, target_ref)}`` of a period file by a text scan of the rendered
        ``journal_id:`` / ``content_hash:`` lines — no Beancount load, so a cold post or read-back loads only what it
        must. Used for idempotency (a journal missed here, e.g. hand-formatted, is caught by the duplicate check of
        the validation load) and as the read-back prefilter."""
        stamp = _stamp(path)
        if stamp is None:
            return {}
        hit = self._ids.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        text = path.read_bytes()
        name = self.rel(path)
        out: dict[str, tuple[str, str]] = {}
        lineno, counted = 1, 0
        pos = text.find(_ID_MARKER)
        while pos != -1:
            lineno += text.count(b"\n", counted, pos)  # the id sits on the line after the transaction header
            counted = pos
            start = pos + len(_ID_MARKER)
            end = text.find(b'"', start)
            stop = text.find(b"\n\n", end)
            h = text.find(_HASH_MARKER, end, stop if stop != -1 else len(text))
            digest = text[h + len(_HASH_MARKER): h + len(_HASH_MARKER) + 64].decode("ascii") if h != -1 else ""
            out[text[start:end].decode("utf-8")] = (digest, f"{name}:{lineno}")
            pos = text.find(_ID_MARKER, end)
        self._ids[path] = (stamp, out)
        return out

    def journal_ids_in(self, path: Path) -> frozenset[str]:
        """Journal ids present in a period file (text scan; see :meth:`scan`)."""
        return frozenset(self.scan(path))

    # ------------------------------------------------------------------ writing

    def ensure_layout(self, ef: EntityFiles, period: str | None, headers: Callable[[str], str]) -> None:
        """Create the accounts file and (when ``period`` is given) the period file empty if missing, and write the
        entity file's include list when it changed. ``headers(kind)`` gives the comment header for ``"accounts"``,
        ``"entity"`` or a period. Caller holds the entity lock."""
        ef.directory.mkdir(parents=True, exist_ok=True)
        if not ef.accounts.exists():
            atomic_write_bytes(ef.accounts, headers("accounts").encode("utf-8"))
        if period is not None and not ef.period_file(period).exists():
            atomic_write_bytes(ef.period_file(period), headers(period).encode("utf-8"))
        includes = [ef.accounts, *([ef.invoices] if ef.invoices.exists() else []), *ef.period_files()]
        text = headers("entity") + "".join(
            f"include {quote(str(p.relative_to(self.ledger_dir)))}\n" for p in includes
        )
        self.write_if_changed(ef.entity_file, text)

    def write_if_changed(self, path: Path, text: str) -> bool:
        try:
            if path.read_text(encoding="utf-8") == text:
                return False
        except FileNotFoundError:
            pass
        atomic_write_bytes(path, text.encode("utf-8"))
        return True

    @contextlib.contextmanager
    def entity_lock(self, ef: EntityFiles) -> Iterator[None]:
        with file_lock(self.ledger_dir / f".{ef.component}.lock"):
            yield

    def append_validated(
        self,
        ef: EntityFiles,
        appends: dict[Path, str],
        check: Callable[[LedgerState], list[str]],
        view: Sequence[Path],
    ) -> LedgerState:
        """Append ``appends[file]`` to each released file, load the temp copies together with the other files
        of ``view`` (released), and release only with zero beancount errors and no problem from ``check``.
        Caller holds the entity lock and has called :meth:`ensure_layout`. Returns the state of the view."""
        temps: dict[Path, Path] = {}
        try:
            for path, text in appends.items():
                fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                os.close(fd)
                tmp = Path(tmp_name)
                temps[path] = tmp
                shutil.copyfile(path, tmp)
                with open(tmp, "a", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
            loaded = [temps.get(p, p) for p in view]
            entries, errors = self.load_files(loaded)
            shown = {str(t.resolve()): p for p, t in temps.items()}
            problems = self.describe_errors(errors, shown)

            state = summarize(entries, self._namer(shown))
            if not problems:
                problems = check(state)
            if problems:
                names = ", ".join(self.rel(p) for p in appends)
                raise RecordValidationError(
                    f"{SYSTEM}: beancount refused the change to {names}; nothing was released: "
                    + "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else ""),
                    details={"files": [self.rel(p) for p in appends], "rule": "beancount.validation_failed",
                             "errors": problems},
                )
            for path in sorted(appends, key=lambda p: p != ef.accounts):  # accounts first
                os.replace(temps[path], path)
                del temps[path]
            fsync_dir(ef.directory)
        finally:
            for tmp in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        key = view[-1]
        self._states[key] = ((_stamp(ef.accounts), _stamp(key) if key != ef.accounts else None), state)
        return state

    def check_main(self) -> list[str]:
        """``bean-check`` of the whole ledger: beancount's errors for ``main.beancount`` and everything it includes."""
        if not self.main_path.exists():
            return []
        _, errors = load(self.main_path)
        return self.describe_errors(errors)
