"""The SQLite trap: Tryton on SQLite posts an unbalanced move silently (Decimal stored as text, the SQL balance
check never fires). Shown against a real Tryton 8.2 on SQLite, then shown caught by the connector's own check
before anything is sent (the payload is built at the mapping level: our model cannot construct an unbalanced
journal)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from ledgerbridge.connectors.base import PostStatus
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.connectors.tryton.connector import TrytonLedger
from ledgerbridge.connectors.tryton.mapping import journal_to_move, move_reference
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.tryton_server import live_tryton


@pytest.fixture(scope="module")
def ledger() -> Iterator[TrytonLedger]:
    with live_tryton("sqlite") as s, TrytonClient(s.url, s.database, s.user, s.password) as client:
        yield TrytonLedger(client, legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP)


def journal(jid: str) -> JournalEntry:
    return JournalEntry(id=jid, legal_entity_id="US01", period="2026-03", entry_date=dt.date(2026, 3, 5),
                        journal_type=JournalType.LABOR_COST, lines=(
                            JournalLine(line_no=1, account="5000", debit=Decimal("100.00"), currency="USD"),
                            JournalLine(line_no=2, account="2100", credit=Decimal("100.00"), currency="USD")))


def unbalanced_plan(ledger: TrytonLedger, jid: str):  # type: ignore[no-untyped-def]
    plan = journal_to_move(journal(jid), ledger.chart())
    debit, credit = plan.lines
    return dataclasses.replace(plan, lines=(debit, dataclasses.replace(credit, credit=Decimal("90.00"))))


def test_tryton_on_sqlite_posts_an_unbalanced_move(ledger: TrytonLedger) -> None:
    c = ledger.client
    plan = unbalanced_plan(ledger, "TRAP-RAW")
    period = c.search("account.period", [("start_date", "=", dt.date(2026, 3, 1)), ("type", "=", "standard")])
    (move,) = c.create("account.move", [plan.values(company=ledger.company, journal=ledger.chart().journal_id,
                                                     period_id=period[0])])
    c.button("account.move", "post", [move])
    state = c.read("account.move", [move], ["state", "lines"])[0]
    lines = c.read("account.move.line", state["lines"], ["debit", "credit"])
    assert state["state"] == "posted"  # the trap: Tryton accepted it
    assert sum(ln["debit"] for ln in lines) - sum(ln["credit"] for ln in lines) == Decimal("10.00")


def test_connector_refuses_the_unbalanced_move_before_sending(ledger: TrytonLedger) -> None:
    c = ledger.client
    creates = c.stats.by_method.get("model.account.move.create", 0)
    bad, good = unbalanced_plan(ledger, "TRAP-LB"), journal_to_move(journal("TRAP-OK"), ledger.chart())
    res = ledger.post_moves([bad, good], run_id="run-trap")
    assert res[0].status is PostStatus.REJECTED and res[0].error is not None
    assert res[0].error.details["rule"] == "tryton.move_invalid"
    assert "does not balance: debit 100.00 != credit 90.00" in res[0].error.message
    assert c.search("account.move", [("description", "=", move_reference("TRAP-LB"))]) == []
    assert res[1].status is PostStatus.POSTED  # the good one went through alone
    assert c.stats.by_method.get("model.account.move.create", 0) == creates + 1
