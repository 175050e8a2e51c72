"""Posting runs and posted journals: idempotent by id, never edited, lines and lineage kept."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.store import InvalidStatusError, JournalConflictError, RunConflictError, journals


def entry(jid: str, amount: str = "1234.56", description: str = "") -> JournalEntry:
    a = Decimal(amount)
    lineage = (SourceRef(system="psa", entity="time_entry", id="TE-1", version=2),)
    return JournalEntry(
        id=jid, legal_entity_id="UK01", period="2026-03", entry_date=dt.date(2026, 3, 31),
        journal_type=JournalType.LABOR_COST, description=description,
        lines=(
            JournalLine(line_no=1, account="5000", debit=a, currency="USD", dimensions={"project": "P1"},
                        fx_rate=Decimal("0.7912345678"), fx_rate_date=dt.date(2026, 3, 31), functional_currency="GBP",
                        functional_debit=Decimal("976.82"), lineage=lineage, lineage_count=3),
            JournalLine(line_no=2, account="2100", credit=a, currency="USD", fx_rate=Decimal("0.7912345678"),
                        fx_rate_date=dt.date(2026, 3, 31), functional_currency="GBP",
                        functional_credit=Decimal("976.82")),
        ),
    )  # fmt: skip


def test_runs_are_idempotent_and_finish_once(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        r = journals.start_run(conn, "UK01:2026-03:erp", legal_entity_id="UK01", period="2026-03", target_system="erp",
                               control_totals={"lines": 2})  # fmt: skip
        again = journals.start_run(conn, "UK01:2026-03:erp", legal_entity_id="UK01", period="2026-03",
                                   target_system="erp")  # fmt: skip
        assert again == r and r.status == "started"
        with pytest.raises(RunConflictError):
            journals.start_run(conn, "UK01:2026-03:erp", legal_entity_id="US01", period="2026-03", target_system="erp")
        done = journals.finish_run(conn, r.id, "posted", control_totals={"debit": Decimal("10.00")})
        assert done.status == "posted" and done.finished_at is not None
        assert done.control_totals == {"debit": "10.00"}
        assert journals.finish_run(conn, r.id, "posted") == done
        with pytest.raises(InvalidStatusError, match="already posted"):
            journals.finish_run(conn, r.id, "failed")
        assert [x.id for x in journals.list_runs(conn, legal_entity_id="UK01", status="posted")] == [r.id]


def test_record_is_idempotent_and_round_trips(store_engine: Engine) -> None:
    e1, e2 = entry("UK01-2026-03-LAB-001"), entry("UK01-2026-03-LAB-002", "0.01")
    with store_engine.begin() as conn:
        journals.start_run(conn, "run1", legal_entity_id="UK01", period="2026-03", target_system="erp")
        res = journals.record_journals(conn, [e1, e2], target_system="erp", posting_run_id="run1",
                                       target_refs={e1.id: "JE-77"})  # fmt: skip
        assert (res.inserted, res.existing) == ([e1.id, e2.id], [])
        res = journals.record_journals(conn, [e2, e1, entry("UK01-2026-03-LAB-003")], target_system="erp")
        assert (res.inserted, res.existing) == (["UK01-2026-03-LAB-003"], [e2.id, e1.id])
        got = journals.get_journal(conn, e1.id)
        assert [j.id for j in journals.list_journals(conn, posting_run_id="run1")] == [e1.id, e2.id]
    assert got is not None
    assert got.entry() == e1
    assert got.target_ref == "JE-77" and got.posting_run_id == "run1" and got.content_hash == journals.content_hash(e1)
    l1 = got.lines[0]
    assert (l1.debit, l1.credit, l1.fx_rate, l1.functional_debit) == (
        Decimal("1234.56"), Decimal(0), Decimal("0.7912345678"), Decimal("976.82"),
    )  # fmt: skip
    assert l1.lineage == [{"system": "psa", "entity": "time_entry", "id": "TE-1", "version": 2}]
    assert l1.lineage_count == 3 and l1.dimensions == {"project": "P1"}


def test_posted_journal_is_never_edited(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        journals.record_journals(conn, [entry("J1")], target_system="erp")
    with store_engine.begin() as conn:
        # refused before anything is written, even if the caller goes on and commits
        with pytest.raises(JournalConflictError, match="J1 already posted with different content"):
            journals.record_journals(conn, [entry("J2"), entry("J1", "999.99")], target_system="erp")
        with pytest.raises(JournalConflictError, match="twice in the batch"):
            journals.record_journals(conn, [entry("J3"), entry("J3", description="other")], target_system="erp")
    with store_engine.begin() as conn:
        assert journals.get_journal(conn, "J2") is None
        assert journals.get_journal(conn, "J3") is None
        got = journals.get_journal(conn, "J1")
        assert got is not None and got.lines[0].debit == Decimal("1234.56")
        journals.set_target_ref(conn, "J1", "JE-1")
        journals.set_target_ref(conn, "J1", "JE-1")
        with pytest.raises(JournalConflictError, match="refusing"):
            journals.set_target_ref(conn, "J1", "JE-2")
