"""File-journal target: acknowledgement ingest (accepted / rejected / malformed) and read-back."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from ledgerbridge.connectors.base import CurrencyTotals, PostingBatch, PostStatus, journal_totals
from ledgerbridge.connectors.file_journal import FileJournalConnector
from ledgerbridge.errors import ErrorKind, PermanentError, RecordValidationError
from ledgerbridge.model import JournalEntry, JournalLine, JournalType

RUN = "RUN-US01-2026-01-007"
J1, J2, J3 = (f"US01-2026-01-invoice-{i:04d}" for i in (1, 2, 3))


def invoice_journal(jid: str, net: str, tax: str) -> JournalEntry:
    return JournalEntry(
        id=jid, legal_entity_id="US01", period="2026-01", entry_date=dt.date(2026, 1, 31),
        journal_type=JournalType.INVOICE,
        lines=(
            JournalLine(line_no=1, account="1100", debit=Decimal(net), currency="USD", dimensions={"project": "P-1"}),
            JournalLine(line_no=2, account="1200", credit=Decimal(net), currency="USD", dimensions={"project": "P-1"}),
            JournalLine(line_no=3, account="1100", debit=Decimal(tax), currency="USD"),
            JournalLine(line_no=4, account="2300", credit=Decimal(tax), currency="USD"),
        ),
    )


JOURNALS = [invoice_journal(J1, "1000.00", "200.00"), invoice_journal(J2, "50.00", "10.00"),
            invoice_journal(J3, "7.00", "0.00")]


@pytest.fixture
def posted(tmp_path: Path) -> FileJournalConnector:
    t = FileJournalConnector(tmp_path / "outbox", tmp_path / "inbox")
    t.post_journals(PostingBatch(RUN, "US01", "2026-01", JOURNALS, created_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)))
    (tmp_path / "inbox").mkdir()
    return t


def drop_ack(t: FileJournalConnector, text: str, suffix: str = "csv") -> None:
    (t.client.inbox / f"{RUN}.ack.{suffix}").write_text(text, encoding="utf-8")


def test_no_ack_yet_means_pending_and_nothing_confirmed(posted: FileJournalConnector) -> None:
    assert posted.ingest_ack(RUN) is None
    assert posted.read_back([J1, J2]) == {}


def test_accepted_and_rejected_journals(posted: FileJournalConnector) -> None:
    drop_ack(posted, (
        "journal_id,line_no,status,error_code,error_text,target_ref\n"
        f"{J1},,accepted,,,JE-88001\n"
        f"{J2},4,rejected,GL-ACCT-CLOSED,\"Account 2300 is closed for posting, period 2026-01\",\n"
        f"{J2},1,accepted,,,\n"
    ))
    results = {r.journal_id: r for r in posted.ingest_ack(RUN) or []}
    assert list(results) == [J1, J2, J3]
    assert results[J1].status is PostStatus.POSTED and results[J1].target_ref == "JE-88001"
    assert results[J3].status is PostStatus.PENDING  # not mentioned in the ack: still waiting
    r2 = results[J2]
    assert r2.status is PostStatus.REJECTED
    err = r2.error
    assert isinstance(err, RecordValidationError) and err.kind is ErrorKind.VALIDATION
    assert "Account 2300 is closed for posting, period 2026-01" in err.message and "GL-ACCT-CLOSED" in err.message
    assert err.details["target_errors"] == [{
        "line_no": 4, "error_code": "GL-ACCT-CLOSED",
        "error_text": "Account 2300 is closed for posting, period 2026-01",
    }]
    # re-posting the same run after the ack reports the ack's verdicts, and writes nothing new
    again = posted.post_journals(PostingBatch(RUN, "US01", "2026-01", JOURNALS,
                                              created_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)))
    assert [r.status for r in again] == [PostStatus.POSTED, PostStatus.REJECTED, PostStatus.PENDING]


def test_read_back_reports_accepted_journals_with_totals_from_the_released_file(posted: FileJournalConnector) -> None:
    drop_ack(posted, json.dumps({"run_id": RUN, "results": [
        {"journal_id": J1, "status": "accepted", "target_ref": "JE-1"},
        {"journal_id": J2, "status": "rejected", "error_code": "X", "error_text": "no"},
        {"journal_id": J3, "line_no": None, "status": "accepted"},
    ]}), suffix="json")
    rb = posted.read_back([J1, J2, J3, "US01-2026-01-unknown-0001"])
    assert set(rb) == {J1, J3}
    for j in JOURNALS:
        if j.id in rb:
            assert rb[j.id].totals == journal_totals(j) and rb[j.id].line_count == 4
            assert rb[j.id].matches(j)
    assert rb[J1].totals == {"USD": CurrencyTotals(Decimal("1200.00"), Decimal("1200.00"))}
    assert rb[J1].target_ref == "JE-1" and rb[J3].target_ref == f"{RUN}.journal.csv#{J3}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("journal_id,status,colour\n", "unknown columns ['colour']"),
        ("journal_id,line_no\n", "missing columns ['status']"),
        ("", "the file is empty"),
        (f"journal_id,status\n{J1},maybe\n", "line 2: status 'maybe' is not one of"),
        (f"journal_id,status\n{J1},accepted\nUS01-2026-01-nope,accepted\n", "line 3: journal US01-2026-01-nope is not"),
        (f"journal_id,line_no,status\n{J1},9,accepted\n", "line 2: journal " + J1 + " has no line 9"),
        (f"journal_id,line_no,status\n{J1},x,accepted\n", "line 2: line_no 'x' is not a positive whole number"),
        (f"journal_id,status\n{J1},rejected\n", "line 2: journal " + J1 + " is rejected without error_code"),
        (f"journal_id,status,error_text\n{J1},accepted,\n{J1},rejected,bad\n",
         f"line 3: journal {J1} is rejected but line 2 says accepted"),
        (f"journal_id,status\n{J1},accepted,extra\n", "line 2: 3 fields, header has 2"),
        (f"journal_id,status\n{J1},accepted\n{J2},\"accepted\n", "line 3: not valid CSV (unexpected end of data)"),
    ],
)
def test_malformed_csv_ack_is_refused_with_line_numbers(posted: FileJournalConnector, body: str,
                                                        expected: str) -> None:
    drop_ack(posted, body)
    with pytest.raises(PermanentError) as ei:
        posted.ingest_ack(RUN)
    assert expected in ei.value.message
    assert ei.value.details["rule"] == "file_journal.ack_malformed"
    assert f"{RUN}.ack.csv" in ei.value.message


def test_malformed_ack_applies_nothing_even_when_most_rows_are_fine(posted: FileJournalConnector) -> None:
    drop_ack(posted, f"journal_id,status\n{J1},accepted\n{J2},accepted\n{J3},acepted\n")
    with pytest.raises(PermanentError, match="line 4"):
        posted.ingest_ack(RUN)
    with pytest.raises(PermanentError):  # read_back does not confirm J1/J2 from a broken ack either
        posted.read_back([J1])


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"run_id": "OTHER", "results": []}), "does not match the file's run"),
        (json.dumps({"run_id": RUN, "results": [{"journal_id": J1, "status": "ok"}]}), "result 1: status 'ok'"),
        (json.dumps({"run_id": RUN, "results": [{"journal_id": J1, "state": "accepted"}]}), "unknown fields"),
    ],
)
def test_malformed_json_ack(posted: FileJournalConnector, doc: str, expected: str) -> None:
    drop_ack(posted, doc, suffix="json")
    with pytest.raises(PermanentError, match="malformed") as ei:
        posted.ingest_ack(RUN)
    assert expected in ei.value.message


def test_ack_for_unreleased_run_and_two_ack_files(posted: FileJournalConnector) -> None:
    (posted.client.inbox / "RUN-NEVER.ack.csv").write_text("journal_id,status\nX,accepted\n")
    with pytest.raises(PermanentError, match="never released"):
        posted.ingest_ack("RUN-NEVER")
    drop_ack(posted, f"journal_id,status\n{J1},accepted\n")
    drop_ack(posted, json.dumps({"run_id": RUN, "results": []}), suffix="json")
    with pytest.raises(PermanentError, match="keep one"):
        posted.ingest_ack(RUN)


def test_non_utf8_ack_is_refused(posted: FileJournalConnector) -> None:
    (posted.client.inbox / f"{RUN}.ack.csv").write_bytes(b"journal_id,status\n\xff\xfe,accepted\n")
    with pytest.raises(PermanentError, match="not UTF-8"):
        posted.ingest_ack(RUN)
