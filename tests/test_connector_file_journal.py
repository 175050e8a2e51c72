"""File-journal target: CSV + trailer + manifest content, determinism, atomicity, idempotency, conflicts, acks."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.connectors import base
from ledgerbridge.connectors.base import LedgerTarget, PostingBatch, PostStatus, journal_totals
from ledgerbridge.connectors.file_journal import COLUMNS, FileJournalConnector, WriteOutcome, render_run
from ledgerbridge.connectors.file_journal.mapping import parse_written_csv
from ledgerbridge.errors import ConflictError, ErrorKind, PermanentError, RecordValidationError
from ledgerbridge.model import JournalEntry, JournalLine, JournalType
from ledgerbridge.model.money import minor_unit

CREATED = dt.datetime(2026, 2, 1, 6, 0, tzinfo=dt.UTC)


def journal(seq: int, amount: str, *, currency: str = "USD", entity: str = "US01", period: str = "2026-01",
            dims: dict[str, str] | None = None, description: str = "labor") -> JournalEntry:
    dims = dims if dims is not None else {"project": f"P-{seq}", "cost_center": "CC-DEL-US"}
    return JournalEntry(
        id=f"{entity}-{period}-labor_cost-{seq:04d}", legal_entity_id=entity, period=period,
        entry_date=dt.date(2026, 1, 31), journal_type=JournalType.LABOR_COST, description=description,
        lines=(
            JournalLine(line_no=1, account="5000", debit=Decimal(amount), currency=currency, dimensions=dims,
                        lineage_count=3),
            JournalLine(line_no=2, account="2100", credit=Decimal(amount), currency=currency, dimensions=dims,
                        lineage_count=3),
        ),
    )


def fx_journal() -> JournalEntry:
    """A UK01 journal with a EUR expense converted to GBP (functional amounts, rate and rate date)."""
    kw = {"fx_rate": Decimal("0.85"), "fx_rate_date": dt.date(2026, 1, 31), "functional_currency": "GBP"}
    return JournalEntry(
        id="UK01-2026-01-expense-0001", legal_entity_id="UK01", period="2026-01", entry_date=dt.date(2026, 1, 20),
        journal_type=JournalType.EXPENSE, redated_from="2025-12",
        lines=(
            JournalLine(line_no=1, account="5100", debit=Decimal("100.00"), currency="EUR",
                        functional_debit=Decimal("85.00"), dimensions={"project": "P-9"}, **kw),
            JournalLine(line_no=2, account="2200", credit=Decimal("100.00"), currency="EUR",
                        functional_credit=Decimal("85.00"), **kw),
        ),
    )


def batch(journals: list[JournalEntry], run_id: str = "RUN-US01-2026-01-001", **kw: object) -> PostingBatch:
    j0 = journals[0]
    return PostingBatch(run_id=run_id, legal_entity_id=j0.legal_entity_id, period=j0.period, journals=journals,
                        created_at=kw.get("created_at", CREATED))  # type: ignore[arg-type]


@pytest.fixture
def target(tmp_path: Path) -> FileJournalConnector:
    return FileJournalConnector(tmp_path / "outbox", tmp_path / "inbox")


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


# ------------------------------------------------------------------------------------------------ content


def test_csv_rows_trailer_and_manifest_content(target: FileJournalConnector, tmp_path: Path) -> None:
    js = [journal(1, "1200.5"), journal(2, "99.99", dims={"project": "P-2"}), journal(3, "0.01")]
    results = target.post_journals(batch(js))
    assert [r.status for r in results] == [PostStatus.PENDING] * 3
    assert {r.target_ref for r in results} == {"RUN-US01-2026-01-001.journal.csv"}

    out = tmp_path / "outbox"
    csv_path = out / "RUN-US01-2026-01-001.journal.csv"
    text = csv_path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    rows = rows_of(csv_path)
    lines = [r for r in rows if r["record_type"] == "LINE"]
    trailers = [r for r in rows if r["record_type"] == "TRAILER"]
    assert len(lines) == 6 and len(trailers) == 1
    first = lines[0]
    assert first["journal_id"] == "US01-2026-01-labor_cost-0001"
    assert (first["legal_entity"], first["period"], first["entry_date"], first["journal_type"]) == (
        "US01", "2026-01", "2026-01-31", "labor_cost")
    assert (first["line_no"], first["account"], first["debit"], first["credit"], first["currency"]) == (
        "1", "5000", "1200.50", "0.00", "USD")
    assert first["dimensions"] == "cost_center=CC-DEL-US;project=P-1"  # sorted by key
    assert first["lineage_count"] == "3" and first["description"] == "labor"
    assert lines[3]["dimensions"] == "project=P-2"
    # the trailer's figures are the sums of the LINE rows
    expected_debit = sum(Decimal(r["debit"]) for r in lines)
    expected_credit = sum(Decimal(r["credit"]) for r in lines)
    t = trailers[0]
    assert Decimal(t["debit"]) == expected_debit == Decimal("1300.50")
    assert Decimal(t["credit"]) == expected_credit
    assert t["record_count"] == "6" and t["currency"] == "USD" and t["journal_id"] == ""

    manifest = json.loads((out / "RUN-US01-2026-01-001.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert manifest["size_bytes"] == csv_path.stat().st_size
    assert manifest["run_id"] == "RUN-US01-2026-01-001"
    assert manifest["file_name"] == csv_path.name
    assert manifest["created_at"] == "2026-02-01T06:00:00+00:00"
    assert (manifest["journal_count"], manifest["record_count"]) == (3, 6)
    assert manifest["totals"] == {"USD": {"debit": "1300.50", "credit": "1300.50", "record_count": 6}}


def test_functional_fields_fx_and_redating_are_written() -> None:
    r = render_run(batch([fx_journal()], run_id="RUN-UK01"))
    rows = list(csv.DictReader(io.StringIO(r.csv_bytes.decode(), newline="")))
    line1, line2, trailer = rows
    assert (line1["currency"], line1["debit"], line1["functional_currency"], line1["functional_debit"]) == (
        "EUR", "100.00", "GBP", "85.00")
    assert (line1["fx_rate"], line1["fx_rate_date"], line1["redated_from"]) == ("0.85", "2026-01-31", "2025-12")
    assert line2["functional_credit"] == "85.00" and line2["functional_debit"] == ""
    assert line2["dimensions"] == ""
    assert (trailer["currency"], trailer["debit"], trailer["credit"]) == ("EUR", "100.00", "100.00")


def test_one_trailer_row_per_currency_sorted() -> None:
    js = [journal(1, "10.00", currency="USD"), journal(2, "7.25", currency="EUR"), journal(3, "1.00", currency="EUR")]
    r = render_run(batch(js))
    rows = csv.DictReader(io.StringIO(r.csv_bytes.decode(), newline=""))
    trailers = [row for row in rows if row["record_type"] == "TRAILER"]
    assert [(t["currency"], t["debit"], t["credit"], t["record_count"]) for t in trailers] == [
        ("EUR", "8.25", "8.25", "4"), ("USD", "10.00", "10.00", "2")]
    assert set(json.loads(r.manifest_bytes)["totals"]) == {"EUR", "USD"}


def test_description_with_comma_quote_and_newline_round_trips() -> None:
    tricky = 'Acme, "Phase 2"\nsecond line\rthird\r\nfourth'
    r = render_run(batch([journal(1, "5.00", description=tricky)]))
    rows = list(csv.DictReader(io.StringIO(r.csv_bytes.decode(), newline="")))
    assert rows[0]["description"] == tricky


def test_render_is_deterministic_and_created_at_is_required() -> None:
    js = [journal(i, f"{i}.10") for i in range(1, 20)]
    a, b = render_run(batch(js)), render_run(batch(list(js)))
    assert a.csv_bytes == b.csv_bytes and a.manifest_bytes == b.manifest_bytes and a.sha256 == b.sha256
    later = render_run(batch(js, created_at=CREATED + dt.timedelta(hours=1)))
    assert later.csv_bytes == a.csv_bytes and later.manifest_bytes != a.manifest_bytes
    with pytest.raises(ValueError, match="created_at is required"):
        render_run(PostingBatch("RUN-1", "US01", "2026-01", js))


def test_unsafe_run_id_is_refused(target: FileJournalConnector) -> None:
    with pytest.raises(ValueError, match="cannot name a file"):
        target.post_journals(batch([journal(1, "1.00")], run_id="../escape"))


# ---------------------------------------------------------------------------------------------- idempotency, atomicity


def test_rewrite_same_run_is_a_no_op_and_conflicting_rewrite_raises(target: FileJournalConnector,
                                                                     tmp_path: Path) -> None:
    js = [journal(1, "10.00"), journal(2, "20.00")]
    target.post_journals(batch(js))
    assert target.last_write is WriteOutcome.WRITTEN
    out = tmp_path / "outbox"
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    target.post_journals(batch(js))
    assert target.last_write is WriteOutcome.UNCHANGED
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before and len(after) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    with pytest.raises(ConflictError) as ei:
        target.post_journals(batch([journal(1, "10.00"), journal(2, "20.01")]))
    assert ei.value.kind is ErrorKind.CONFLICT and ei.value.details["run_id"] == "RUN-US01-2026-01-001"
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before


def test_crash_before_replace_leaves_no_visible_file(target: FileJournalConnector, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash between temp write and replace")

    monkeypatch.setattr(base.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        target.post_journals(batch([journal(1, "10.00")]))
    out = tmp_path / "outbox"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".ledgerbridge")] == []

    # the retry after the "crash" writes the complete file and its manifest
    monkeypatch.setattr(base.os, "replace", real_replace)
    target.post_journals(batch([journal(1, "10.00")]))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "RUN-US01-2026-01-001.journal.csv", "RUN-US01-2026-01-001.manifest.json"]


def test_crash_between_csv_and_manifest_is_completed_on_retry(target: FileJournalConnector, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def crash_on_manifest(src: str, dst: str) -> None:
        if str(dst).endswith(".manifest.json"):
            raise OSError("simulated crash before the manifest")
        real_replace(src, dst)

    monkeypatch.setattr(base.os, "replace", crash_on_manifest)
    with pytest.raises(OSError):
        target.post_journals(batch([journal(1, "10.00")]))
    out = tmp_path / "outbox"
    # the CSV is there but not released: no manifest, so a consumer does not pick it up
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["RUN-US01-2026-01-001.journal.csv"]
    monkeypatch.setattr(base.os, "replace", real_replace)
    target.post_journals(batch([journal(1, "10.00")]))
    assert target.last_write is WriteOutcome.COMPLETED
    manifest = json.loads((out / "RUN-US01-2026-01-001.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((out / "RUN-US01-2026-01-001.journal.csv").read_bytes()).hexdigest()


def test_altered_released_file_is_detected(target: FileJournalConnector, tmp_path: Path) -> None:
    target.post_journals(batch([journal(1, "10.00")]))
    csv_path = tmp_path / "outbox" / "RUN-US01-2026-01-001.journal.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b"10.00", b"11.00"))
    with pytest.raises(PermanentError, match="no longer matches"):
        target.post_journals(batch([journal(1, "10.00")]))


def test_journal_with_unwritable_dimension_is_rejected_alone(target: FileJournalConnector, tmp_path: Path) -> None:
    bad = journal(2, "5.00", dims={"project": "P;2"})
    results = target.post_journals(batch([journal(1, "10.00"), bad]))
    assert results[0].status is PostStatus.PENDING
    assert results[1].status is PostStatus.REJECTED
    assert isinstance(results[1].error, RecordValidationError) and "P;2" in results[1].error.message
    rows = rows_of(tmp_path / "outbox" / "RUN-US01-2026-01-001.journal.csv")
    assert {r["journal_id"] for r in rows if r["record_type"] == "LINE"} == {"US01-2026-01-labor_cost-0001"}


def test_connector_satisfies_the_protocol(target: FileJournalConnector) -> None:
    assert isinstance(target, LedgerTarget)
    caps = target.capabilities()
    assert caps.system_kind is base.SystemKind.FILE and caps.can_write("journal_entry")
    assert caps.idempotency is base.IdempotencyMechanism.FILE_MANIFEST and caps.supports_read_back
    assert target.period_status("US01", "2026-01") is None


# ------------------------------------------------------------------------------------------------ property


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@st.composite
def _journal(draw: st.DrawFn, seq: int) -> JournalEntry:
    cur = draw(st.sampled_from(["USD", "JPY", "BHD", "EUR"]))
    places = minor_unit(cur)
    amounts = draw(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=4))
    lines = [JournalLine(line_no=i + 1, account="5000", currency=cur, debit=Decimal(a).scaleb(-places),
                         description=draw(_text)) for i, a in enumerate(amounts)]
    lines.append(JournalLine(line_no=len(lines) + 1, account="2100", currency=cur,
                             credit=sum((ln.debit for ln in lines), Decimal(0))))
    return JournalEntry(id=f"US01-2026-01-labor_cost-{seq:04d}", legal_entity_id="US01", period="2026-01",
                        entry_date=dt.date(2026, 1, 31), journal_type=JournalType.LABOR_COST,
                        description=draw(_text), lines=tuple(lines))


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=6).flatmap(lambda n: st.tuples(*(_journal(i) for i in range(n)))))
def test_written_csv_parses_back_to_the_journals_totals_and_trailer_sums(js: tuple[JournalEntry, ...]) -> None:
    r = render_run(batch(list(js)))
    text = r.csv_bytes.decode("utf-8")
    written = parse_written_csv(text)
    assert set(written) == {j.id for j in js}
    for j in js:
        assert dict(written[j.id].totals) == journal_totals(j) and written[j.id].line_count == len(j.lines)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for t in (row for row in rows if row["record_type"] == "TRAILER"):
        lines = [row for row in rows if row["record_type"] == "LINE" and row["currency"] == t["currency"]]
        assert Decimal(t["debit"]) == sum(Decimal(x["debit"]) for x in lines) == Decimal(t["credit"])
        assert int(t["record_count"]) == len(lines)
    assert json.loads(r.manifest_bytes)["record_count"] == sum(len(j.lines) for j in js)
