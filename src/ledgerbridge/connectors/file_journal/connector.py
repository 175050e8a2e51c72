"""The file-journal target: controlled posting by file (CSV journal import + manifest) and acknowledgement.

Flow: ``post_journals`` writes ``<run_id>.journal.csv`` then ``<run_id>.manifest.json`` into the outbox and reports
every journal ``pending``; the target imports the file and drops ``<run_id>.ack.csv`` (or ``.ack.json``) into the
inbox; ``ingest_ack`` (or a later ``post_journals`` of the same run) turns it into ``posted`` / ``rejected``
results; ``read_back`` reports what the target accepted, with totals from the released file.
Formats: ``docs/file-posting.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    FailureMode,
    IdempotencyMechanism,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
)
from ledgerbridge.connectors.file_journal.client import SYSTEM, FileJournalClient, WriteOutcome
from ledgerbridge.connectors.file_journal.mapping import (
    AckFormatError,
    JournalAck,
    WrittenJournal,
    csv_name,
    dimension_problems,
    merge_ack,
    parse_ack_csv,
    parse_ack_json,
    parse_written_csv,
    readback_for,
    render_run,
)
from ledgerbridge.errors import PermanentError, RecordValidationError

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.FILE,
    writes=frozenset({"journal_entry"}),
    idempotency=IdempotencyMechanism.FILE_MANIFEST,
    batch_sizes=BatchSizes(write=100_000),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)


class FileJournalConnector:
    """A :class:`~ledgerbridge.connectors.base.LedgerTarget` that posts by file into ``outbox`` and reads the
    target's acknowledgements from ``inbox``."""

    def __init__(self, outbox: Path | str, inbox: Path | str) -> None:
        self.client = FileJournalClient(outbox, inbox)
        self.last_write: WriteOutcome | None = None

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        """Write the run's file (idempotent). Journals the file cannot carry are ``rejected`` right away; the rest
        are ``pending`` until the acknowledgement arrives — or already ``posted``/``rejected`` when it has."""
        rejected: dict[str, PostResult] = {}
        keep = []
        for j in run.journals:
            problems = dimension_problems(j)
            if problems:
                rejected[j.id] = PostResult(j.id, PostStatus.REJECTED, None, RecordValidationError(
                    f"{SYSTEM}: journal {j.id} cannot be written to the import file: {'; '.join(problems)} — fix "
                    "the dimension values at the source or in the dimension mapping, then replay",
                    details={"journal_id": j.id, "run_id": run.run_id, "rule": "file_journal.dimension_text"},
                ))
            else:
                keep.append(j)
        if not keep:
            self.last_write = None
            return [rejected[j.id] for j in run.journals]
        rendered = render_run(run, keep)
        self.last_write = self.client.write_run(rendered)
        acked = {r.journal_id: r for r in (self.ingest_ack(run.run_id) or [])}
        out = []
        for j in run.journals:
            if j.id in rejected:
                out.append(rejected[j.id])
            else:
                out.append(acked.get(j.id) or PostResult(j.id, PostStatus.PENDING, rendered.csv_name))
        return out

    # ------------------------------------------------------------------ acknowledgement

    def ingest_ack(self, run_id: str) -> list[PostResult] | None:
        """Results for every journal of the released run from its acknowledgement, in file order: accepted ->
        ``posted``; rejected -> ``rejected`` with a :class:`RecordValidationError` carrying the target's error
        codes and texts; not mentioned -> ``pending``. ``None`` when no acknowledgement has arrived.

        A malformed acknowledgement raises :class:`PermanentError` listing every problem with its line number;
        no result is returned for any journal (nothing applied half-way). Reading is side-effect free and
        repeatable."""
        loaded = self._load_ack(run_id)
        if loaded is None:
            return None
        written, acks, ack_name = loaded
        out = []
        for jid in written:
            ack = acks.get(jid)
            if ack is None:
                out.append(PostResult(jid, PostStatus.PENDING, csv_name(run_id)))
            elif ack.accepted:
                out.append(PostResult(jid, PostStatus.POSTED, ack.target_ref or f"{csv_name(run_id)}#{jid}"))
            else:
                out.append(PostResult(jid, PostStatus.REJECTED, ack.target_ref or None,
                                      _rejection(run_id, ack_name, ack)))
        return out

    def _load_ack(self, run_id: str) -> tuple[dict[str, WrittenJournal], dict[str, JournalAck], str] | None:
        ack = self.client.read_ack(run_id)
        if ack is None:
            return None
        text = self.client.read_released_csv(run_id)
        if text is None:
            raise PermanentError(
                f"{SYSTEM}: acknowledgement {ack.name} arrived for run {run_id}, which was never released from "
                f"{self.client.outbox}; check the run id in the file name",
                details={"run_id": run_id, "ack_file": ack.name},
            )
        written = parse_written_csv(text)
        try:
            rows = (parse_ack_json(ack.text, ack.name, run_id) if ack.is_json else parse_ack_csv(ack.text, ack.name))
            acks = merge_ack(rows, written, ack.name)
        except AckFormatError as exc:
            raise PermanentError(
                f"{SYSTEM}: {exc} — ask the target to resend a corrected acknowledgement "
                "(format: docs/file-posting.md)",
                details={"run_id": run_id, "ack_file": ack.name, "problems": exc.problems,
                         "rule": "file_journal.ack_malformed"},
            ) from None
        return written, acks, ack.name

    # ------------------------------------------------------------------ read back

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Journals the target acknowledged as accepted, with debit/credit per currency and line count taken from
        the released (hash-verified) file. Journals pending, rejected or unknown are absent from the answer."""
        wanted = set(journal_ids)
        out: dict[str, ReadBack] = {}
        for run_id in self.client.acked_run_ids():
            if not wanted - out.keys():
                break
            ack = self.client.read_ack(run_id)
            if ack is None or not any(jid in ack.text for jid in wanted - out.keys()):
                continue
            loaded = self._load_ack(run_id)
            if loaded is None:  # pragma: no cover - the ack vanished between the two reads
                continue
            written, acks, _ = loaded
            for jid, ack_j in acks.items():
                if jid in wanted and ack_j.accepted:
                    out[jid] = readback_for(written[jid], ack_j.target_ref or f"{csv_name(run_id)}#{jid}")
        return out

    def period_status(self, entity: str, period: str) -> str | None:
        """A file target does not report periods: the flow's period store decides alone."""
        return None


def _rejection(run_id: str, ack_name: str, ack: JournalAck) -> RecordValidationError:
    parts = []
    for r in ack.errors:
        where = "journal" if r.line_no is None else f"line {r.line_no}"
        code = f"[{r.error_code}] " if r.error_code else ""
        parts.append(f"{where}: {code}{r.error_text}".rstrip())
    return RecordValidationError(
        f"{SYSTEM}: the target rejected journal {ack.journal_id} of run {run_id} ({ack_name}): {'; '.join(parts)} "
        "— fix the cause named by the target, then replay the journal in a new run",
        details={
            "journal_id": ack.journal_id,
            "run_id": run_id,
            "ack_file": ack_name,
            "rule": "file_journal.rejected_by_target",
            "target_errors": [
                {"line_no": r.line_no, "error_code": r.error_code, "error_text": r.error_text} for r in ack.errors
            ],
        },
    )
