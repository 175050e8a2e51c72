"""What every connector declares, and the contract every *target ledger* connector implements.

- :class:`Capabilities` is a connector's declaration (as dlt destinations declare theirs): the kind of system, the
  entities it reads and writes, how changes are detected, how writes are made idempotent, paging, limits, batch
  sizes, whether posted documents can be read back, and whether a bad record fails alone or fails the batch.
  Flows read this declaration; they never special-case a vendor by name.
- :class:`LedgerTarget` is the protocol the posting flow calls: ``post_journals`` one :class:`PostingBatch`,
  ``read_back`` what the target really holds (never trust a bare 2xx), ``period_status`` where the target knows it.

The small file helpers at the end (:func:`atomic_write_bytes`, :func:`file_lock`) are shared by the file-based
targets (file journal, Beancount ledger), which must never import each other.

See ``docs/connectors.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ledgerbridge.errors import LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Invoice, JournalEntry
from ledgerbridge.model.money import quantum

# --------------------------------------------------------------------------------------------------- capabilities


class SystemKind(StrEnum):
    PSA = "psa"
    ERP = "erp"
    FILE = "file"
    LEDGER = "ledger"


class CursorKind(StrEnum):
    """How a connector notices changes when it reads."""

    UPDATED_AT = "updated_at"  # filter on a last-modified timestamp (with overlap)
    SEQUENCE = "sequence"  # a monotonic id / change number / offset
    WEBHOOK = "webhook"  # the system pushes events
    SNAPSHOT_DIFF = "snapshot_diff"  # full read, compare with the last snapshot
    FILE_DROP = "file_drop"  # new files appear in a folder


class IdempotencyMechanism(StrEnum):
    """How a connector makes a repeated write harmless."""

    UPSERT_EXTERNAL_ID = "upsert_external_id"  # NetSuite eid:, Salesforce external-ID upsert
    IDEMPOTENCY_KEY = "idempotency_key"  # Xero Idempotency-Key header
    LOOKUP_BEFORE_CREATE = "lookup_before_create"  # search the target (or the xref) for the key first
    FILE_MANIFEST = "file_manifest"  # one file per run id, identified by name + SHA-256 in a manifest


class PagingKind(StrEnum):
    NONE = "none"
    OFFSET = "offset"
    PAGE_NUMBER = "page_number"
    CURSOR = "cursor"  # opaque next-page token or link


class FailureMode(StrEnum):
    """What the target does with a batch holding one bad record."""

    LINE_LEVEL = "line_level"  # the bad record is refused alone; the others go through
    ALL_OR_NOTHING = "all_or_nothing"  # the whole batch is refused


@dataclass(frozen=True, slots=True)
class Limits:
    """Throughput limits the runtime must respect for this system (``None`` = not limited / unknown)."""

    requests_per_second: float | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {self.requests_per_second!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency!r}")


@dataclass(frozen=True, slots=True)
class BatchSizes:
    """Largest useful batch per call (``None`` = no limit): records per page read, records per write call."""

    read: int | None = None
    write: int | None = None

    def __post_init__(self) -> None:
        for name in ("read", "write"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"batch size {name} must be at least 1, got {v!r}")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A connector's declaration. Immutable; flows decide behaviour from it, not from the vendor's name."""

    connector: str  # e.g. "file_journal", "beancount_ledger", "netsuite"
    system_kind: SystemKind
    reads: frozenset[str] = frozenset()  # canonical entity names (contract_name), e.g. "time_entry"
    writes: frozenset[str] = frozenset()
    change_detection: frozenset[CursorKind] = frozenset()
    idempotency: IdempotencyMechanism | None = None
    paging: PagingKind = PagingKind.NONE
    limits: Limits = field(default_factory=Limits)
    batch_sizes: BatchSizes = field(default_factory=BatchSizes)
    supports_read_back: bool = False
    failure_mode: FailureMode = FailureMode.LINE_LEVEL

    def __post_init__(self) -> None:
        # accept any iterable of names for convenience, store frozensets (hashable, order-free)
        for name in ("reads", "writes", "change_detection"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        if not self.connector:
            raise ValueError("Capabilities.connector must name the connector")
        if self.writes and self.idempotency is None:
            raise ValueError(
                f"connector {self.connector!r} writes {sorted(self.writes)} but declares no idempotency mechanism: "
                "every write must be repeatable without duplicates; declare one of "
                f"{[m.value for m in IdempotencyMechanism]}"
            )
        if self.reads and not self.change_detection:
            raise ValueError(
                f"connector {self.connector!r} reads {sorted(self.reads)} but declares no change detection "
                f"(one or more of {[c.value for c in CursorKind]})"
            )

    def can_write(self, entity: str) -> bool:
        return entity in self.writes

    def can_read(self, entity: str) -> bool:
        return entity in self.reads


# --------------------------------------------------------------------------------------------------- posting contract


class PostStatus(StrEnum):
    POSTED = "posted"  # the target holds the journal (confirm with read_back)
    REJECTED = "rejected"  # the target refused it; ``error`` says why (the flow dead-letters it)
    PENDING = "pending"  # handed over, outcome not known yet (e.g. a file waiting for its acknowledgement)


@dataclass(frozen=True, slots=True)
class PostingBatch:
    """One posting run: journals of one legal entity and one period, handed to one target.

    ``created_at`` is the run's creation time as recorded by the flow (never the wall clock at write time), so a
    retried write produces identical output; file targets require it.
    """

    run_id: str
    legal_entity_id: str
    period: str
    journals: Sequence[JournalEntry]
    created_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "journals", tuple(self.journals))
        if not self.run_id:
            raise ValueError("PostingBatch.run_id is empty: every posting run needs its deterministic run id")
        seen: set[str] = set()
        for j in self.journals:
            if j.id in seen:
                raise ValueError(
                    f"posting run {self.run_id}: journal {j.id} appears twice; a run holds each journal once"
                )
            seen.add(j.id)
            if j.legal_entity_id != self.legal_entity_id or j.period != self.period:
                raise ValueError(
                    f"posting run {self.run_id} is for {self.legal_entity_id} {self.period} but journal {j.id} is "
                    f"for {j.legal_entity_id} {j.period}: build one run per entity and period"
                )


@dataclass(frozen=True, slots=True)
class PostResult:
    journal_id: str
    status: PostStatus
    target_ref: str | None = None  # where the target holds it: document number, file name, ledger file:line
    error: LedgerbridgeError | None = None

    def __post_init__(self) -> None:
        if self.status is PostStatus.REJECTED and self.error is None:
            raise ValueError(f"journal {self.journal_id}: a rejected result must carry the error")
        if self.status is PostStatus.POSTED and self.error is not None:
            raise ValueError(f"journal {self.journal_id}: a posted result cannot carry an error")


def require_run_entity(run: PostingBatch, legal_entity_id: str, system: str, where: str = "") -> None:
    """A target that keeps one legal entity refuses a run of another as a whole (``LB-P001``): routing sent it to
    the wrong system. ``where`` names the entity's home in the target (``" (company code 1010)"``)."""
    if run.legal_entity_id != legal_entity_id:
        raise PermanentError(f"{system}: this target keeps legal entity {legal_entity_id}{where}, not "
                             f"{run.legal_entity_id} (run {run.run_id}) — route the run to its own target",
                             code="LB-P001", details={"run_id": run.run_id})


def rejected(system: str, journal_id: str, run_id: str, message: str, rule: str,
             extra: Mapping[str, Any] | None = None, *, code: str = "LB-V001") -> PostResult:
    """One journal a target refuses (before sending or on the target's answer): a ``rejected`` result carrying a
    :class:`RecordValidationError` that names the journal, the run and the rule (the flow dead-letters it)."""
    return PostResult(journal_id, PostStatus.REJECTED, None, RecordValidationError(
        f"{system}: journal {journal_id}: {message}", code=code,
        details={"journal_id": journal_id, "run_id": run_id, "rule": rule, **(extra or {})}))


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What the target really holds for one journal: its reference, debit/credit per currency, line count."""

    target_ref: str
    totals: Mapping[str, CurrencyTotals]
    line_count: int

    def mismatches(self, journal: JournalEntry) -> list[str]:
        """Differences between this read-back and the journal we posted (empty list = confirmed)."""
        out: list[str] = []
        expected = journal_totals(journal)
        for cur in sorted(set(expected) | set(self.totals)):
            want = expected.get(cur)
            got = self.totals.get(cur)
            if want is None or got is None or want.debit != got.debit or want.credit != got.credit:
                out.append(f"{cur}: posted {_fmt(want)}, target holds {_fmt(got)}")
        if self.line_count != len(journal.lines):
            out.append(f"line count: posted {len(journal.lines)}, target holds {self.line_count}")
        return out

    def matches(self, journal: JournalEntry) -> bool:
        return not self.mismatches(journal)


def amount_text(value: Decimal, currency: str) -> str:
    """Fixed-point text of an amount for file formats, padded to the currency's minor unit when that is exact
    (``12.5`` USD -> ``12.50``, ``0`` -> ``0.00``); never rounded: an amount with more digits keeps them."""
    q = value.quantize(quantum(currency))
    return f"{q:f}" if q == value else f"{value:f}"


def _fmt(t: CurrencyTotals | None) -> str:
    return "nothing" if t is None else f"debit {t.debit} / credit {t.credit}"


def journal_totals(journal: JournalEntry) -> dict[str, CurrencyTotals]:
    """Debit and credit totals per line currency of one journal (what a read-back must show)."""
    deb: dict[str, Decimal] = defaultdict(Decimal)
    cre: dict[str, Decimal] = defaultdict(Decimal)
    for ln in journal.lines:
        deb[ln.currency] += ln.debit
        cre[ln.currency] += ln.credit
    return {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(set(deb) | set(cre))}


@runtime_checkable
class LedgerTarget(Protocol):
    """The contract every target ledger connector implements (see docs/connectors.md).

    - ``post_journals`` never raises for one bad journal: it returns a ``rejected`` result carrying a
      :class:`~ledgerbridge.errors.LedgerbridgeError`. It raises only when the whole batch cannot be handled
      (target unreachable -> ``TransientError``; the target refused the batch as a whole -> the matching error),
      and then nothing of the batch is applied.
    - Re-posting the same batch is harmless: journals already held are reported ``posted`` again, not duplicated.
      The same journal id with different content is a ``ConflictError``.
    - ``read_back`` answers from what the target holds; a journal id missing from the answer is not confirmed.
    - ``period_status`` returns ``open`` / ``closing`` / ``closed`` / ``locked`` when the target knows the period,
      ``None`` when it does not track periods (the flow's period store then decides alone).
    """

    def capabilities(self) -> Capabilities: ...

    def post_journals(self, run: PostingBatch) -> list[PostResult]: ...

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]: ...

    def period_status(self, entity: str, period: str) -> str | None: ...


# --------------------------------------------------------------------------------------------------- invoice contract


@dataclass(frozen=True, slots=True)
class InvoiceResult:
    """What a target holds for one invoice we created: our deterministic key, its document number and status.

    ``status`` is one of ``draft``, ``submitted``, ``posted``, ``paid``, ``void``, ``credited`` (the canonical
    :class:`~ledgerbridge.model.entities.InvoiceStatus` values). ``books_ledger`` says whether creating the invoice
    in the target also booked its receivable entry in the target's own ledger (an ERP posting its invoice does);
    when it did not, the billing flow stages the invoice's postings for the posting run."""

    key: str
    number: str | None
    status: str
    target_ref: str | None = None
    books_ledger: bool = False


@runtime_checkable
class InvoiceTarget(Protocol):
    """The contract of a system invoices are created in (see docs/sync-billing.md).

    - ``create_invoice`` is idempotent on ``inv.id`` (the deterministic external key): an invoice the target
      already holds under that key is returned as held, never created twice; held with other amounts ->
      ``ConflictError``. A refusal raises the matching :class:`~ledgerbridge.errors.LedgerbridgeError`
      (``RecordValidationError`` for a bad invoice, ``TransientError`` when unreachable).
    - ``invoice_status`` answers from what the target holds; keys it does not hold are absent.
    - A target whose invoices book themselves in its own ledger sets the class attribute ``books_ledger = True``
      (and ``InvoiceResult.books_ledger``): the billing flow then sends work lines on the invoice clearing account
      and stages only the ``invoice_relief`` journal (see docs/sync-billing.md).
    """

    def create_invoice(self, inv: Invoice) -> InvoiceResult: ...

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]: ...


@dataclass(frozen=True, slots=True)
class InvoiceStatusUpdate:
    """One invoice's ERP number and status, written back to the source (PSA) system."""

    key: str
    project_id: str
    legal_entity_id: str
    invoice_date: dt.date
    currency: str
    total: Decimal
    erp_system: str
    erp_number: str | None
    status: str
    credits: str | None = None
    #: the source items (system, entity, id) billed on this invoice, for sources that mark each item (Redmine)
    items: tuple[tuple[str, str, str], ...] = ()


@runtime_checkable
class InvoiceStatusSink(Protocol):
    """A source system that takes invoice numbers and statuses back (PSA write-back). Idempotent: writing the
    same updates again changes nothing; returns the number of invoices whose stored line changed."""

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int: ...


# --------------------------------------------------------------------------------------------------- source contract


def inbox_record(entity: str, item: Any, idempotency_key: str, kind: str) -> dict[str, Any]:
    """One version of a source item (a canonical ``TimeEntry``/``Expense``... with ``id``, ``version`` and
    ``updated_at``) as the inbox record :func:`ledgerbridge.flows.sources.sync_source` lands (the shape
    ``flows.transactions.land`` takes), plus the connector's ``idempotency_key`` and change ``kind``."""
    return {"entity": entity, "external_id": item.id, "version": item.version, "updated_at": item.updated_at,
            "payload": item.model_dump(mode="json"), "idempotency_key": idempotency_key, "kind": kind}


@dataclass(slots=True)
class SourceSyncResult:
    """What a polled source's ``sync(cursor)`` found. ``sync_source`` stores ``cursor`` in the same transaction as
    the ``events`` (each with ``to_record()``) and dead-letters ``errors`` (each a ``LedgerbridgeError`` naming the
    item, the rule and the fix); ``business_events`` (contract JSON such as ``project.approved``) start their
    subscription chains first."""

    events: list[Any]
    errors: list[LedgerbridgeError]
    cursor: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    business_events: list[dict[str, Any]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """Every event as an inbox record, in the order found."""
        return [e.to_record() for e in self.events]


# --------------------------------------------------------------------------------------------------- file helpers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never a part.

    Writes a hidden temp file in the same directory (``.<name>.<random>.tmp``), fsyncs it, ``os.replace``-s it
    over ``path`` and fsyncs the directory. On any error the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Exclusive advisory lock (``flock``) held for the block: one writer per outbox / ledger file at a time,
    across processes on the same machine."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = [
    "BatchSizes",
    "Capabilities",
    "CurrencyTotals",
    "CursorKind",
    "FailureMode",
    "IdempotencyMechanism",
    "InvoiceResult",
    "InvoiceStatusSink",
    "InvoiceStatusUpdate",
    "InvoiceTarget",
    "LedgerTarget",
    "Limits",
    "PagingKind",
    "PostResult",
    "PostStatus",
    "PostingBatch",
    "ReadBack",
    "SourceSyncResult",
    "SystemKind",
    "amount_text",
    "atomic_write_bytes",
    "file_lock",
    "fsync_dir",
    "inbox_record",
    "journal_totals",
    "rejected",
    "require_run_entity",
]
