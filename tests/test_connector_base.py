"""Connector base: capability declaration rules, the posting contract's value types, read-back comparison and the
atomic-write / lock helpers shared by file targets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ledgerbridge.connectors import base
from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CurrencyTotals,
    CursorKind,
    IdempotencyMechanism,
    Limits,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
    amount_text,
    atomic_write_bytes,
    file_lock,
    journal_totals,
)
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model import JournalEntry, JournalLine, JournalType


def two_currency_journal() -> JournalEntry:
    return JournalEntry(
        id="UK01-2026-01-invoice-0001", legal_entity_id="UK01", period="2026-01", entry_date=dt.date(2026, 1, 31),
        journal_type=JournalType.INVOICE,
        lines=(
            JournalLine(line_no=1, account="1100", debit=Decimal("120.00"), currency="GBP"),
            JournalLine(line_no=2, account="4000", credit=Decimal("100.00"), currency="GBP"),
            JournalLine(line_no=3, account="2300", credit=Decimal("20.00"), currency="GBP"),
            JournalLine(line_no=4, account="1100", debit=Decimal("10.00"), currency="EUR"),
            JournalLine(line_no=5, account="4300", credit=Decimal("10.00"), currency="EUR"),
        ),
    )


# ------------------------------------------------------------------------------------------------ capabilities


def test_capabilities_are_frozen_and_normalised() -> None:
    caps = Capabilities(connector="psa_x", system_kind=SystemKind.PSA, reads=["time_entry", "expense"],
                        change_detection=[CursorKind.UPDATED_AT], limits=Limits(requests_per_second=2.5, concurrency=4),
                        batch_sizes=BatchSizes(read=500))
    assert caps.reads == frozenset({"time_entry", "expense"}) and caps.can_read("expense")
    assert not caps.can_write("journal_entry") and caps.failure_mode is base.FailureMode.LINE_LEVEL
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.connector = "other"  # type: ignore[misc]
    assert hash(caps) == hash(dataclasses.replace(caps))


def test_a_writer_must_declare_idempotency_and_a_reader_change_detection() -> None:
    with pytest.raises(ValueError, match="declares no idempotency mechanism"):
        Capabilities(connector="erp_x", system_kind=SystemKind.ERP, writes={"journal_entry"})
    with pytest.raises(ValueError, match="declares no change detection"):
        Capabilities(connector="psa_x", system_kind=SystemKind.PSA, reads={"time_entry"})
    ok = Capabilities(connector="erp_x", system_kind=SystemKind.ERP, writes={"journal_entry"},
                      idempotency=IdempotencyMechanism.UPSERT_EXTERNAL_ID)
    assert ok.can_write("journal_entry")


@pytest.mark.parametrize("bad", [lambda: Limits(requests_per_second=0), lambda: Limits(concurrency=0),
                                 lambda: BatchSizes(write=0), lambda: BatchSizes(read=-1)])
def test_limits_and_batch_sizes_refuse_nonsense(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------------ posting contract


def test_posting_batch_refuses_mixed_entities_periods_and_duplicates() -> None:
    j = two_currency_journal()
    assert PostingBatch("RUN-1", "UK01", "2026-01", [j]).journals == (j,)
    with pytest.raises(ValueError, match="is for US01 2026-01 but journal UK01-2026-01-invoice-0001 is for UK01"):
        PostingBatch("RUN-1", "US01", "2026-01", [j])
    with pytest.raises(ValueError, match="appears twice"):
        PostingBatch("RUN-1", "UK01", "2026-01", [j, j])
    with pytest.raises(ValueError, match="run_id is empty"):
        PostingBatch("", "UK01", "2026-01", [j])


def test_post_result_invariants() -> None:
    with pytest.raises(ValueError, match="must carry the error"):
        PostResult("J1", PostStatus.REJECTED)
    with pytest.raises(ValueError, match="cannot carry an error"):
        PostResult("J1", PostStatus.POSTED, "ref", RecordValidationError("x"))
    assert PostResult("J1", PostStatus.PENDING, "file.csv").error is None


def test_journal_totals_and_read_back_comparison() -> None:
    j = two_currency_journal()
    totals = journal_totals(j)
    assert totals == {"EUR": CurrencyTotals(Decimal("10.00"), Decimal("10.00")),
                      "GBP": CurrencyTotals(Decimal("120.00"), Decimal("120.00"))}
    assert ReadBack("JE-1", totals, 5).matches(j)
    short = ReadBack("JE-1", {"GBP": totals["GBP"]}, 3)
    assert short.mismatches(j) == ["EUR: posted debit 10.00 / credit 10.00, target holds nothing",
                                   "line count: posted 5, target holds 3"]
    off = ReadBack("JE-1", {**totals, "GBP": CurrencyTotals(Decimal("120.00"), Decimal("119.99"))}, 5)
    assert off.mismatches(j) == ["GBP: posted debit 120.00 / credit 120.00, target holds debit 120.00 / credit 119.99"]
    extra = ReadBack("JE-1", {**totals, "USD": CurrencyTotals(Decimal(1), Decimal(1))}, 5)
    assert not extra.matches(j)


def test_amount_text_pads_but_never_rounds() -> None:
    assert amount_text(Decimal("12.5"), "USD") == "12.50"
    assert amount_text(Decimal("0"), "EUR") == "0.00"
    assert amount_text(Decimal("1.005"), "USD") == "1.005"
    assert amount_text(Decimal("1200"), "JPY") == "1200"
    assert amount_text(Decimal("1E+3"), "GBP") == "1000.00"


# ------------------------------------------------------------------------------------------------ file helpers


def test_atomic_write_replaces_whole_file_and_cleans_up_on_failure(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.csv"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(base.os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"third")
    assert target.read_bytes() == b"second version"
    assert sorted(os.listdir(tmp_path)) == ["out.csv"]


def test_file_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    order: list[str] = []

    def second() -> None:
        with file_lock(lock):
            order.append("second")

    with file_lock(lock):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]
