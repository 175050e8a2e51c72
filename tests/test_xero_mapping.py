"""Xero mapping (pure): exact money in JSON, Xero's /Date()/ format, lock dates -> period status, deterministic
idempotency keys, the narration tag that carries our journal id, foreign-currency lines and pre-send checks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledgerbridge.connectors.xero.mapping import (
    XeroChart,
    dumps,
    held_signature,
    idempotency_key,
    journal_id_of,
    journal_to_manual,
    loads,
    ms_date,
    parse_xero_date,
    parse_xero_datetime,
    period_state,
    readback_totals,
)
from ledgerbridge.model.entities import JournalEntry, JournalLine

CHART = XeroChart(base_currency="USD", account_map={"1200": "620", "4000": "200", "9999": "999"},
                  accounts={"620": {"Status": "ACTIVE"}, "200": {"Status": "ACTIVE"}, "999": {"Status": "ARCHIVED"}},
                  tracking_map={"project": "Project"})


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2, allow_nan=False))
def test_money_survives_json_exactly(amount: Decimal) -> None:
    back = loads(dumps({"LineAmount": amount, "Lines": [amount]}))
    assert Decimal(str(back["LineAmount"])) == amount and Decimal(str(back["Lines"][0])) == amount


@given(st.dates(min_value=dt.date(1970, 1, 2), max_value=dt.date(2100, 1, 1)))
def test_xero_dates_round_trip(day: dt.date) -> None:
    assert parse_xero_date(ms_date(day)) == day
    assert parse_xero_date(day.isoformat()) == day


def test_xero_timestamp_forms() -> None:
    assert parse_xero_datetime("/Date(1790726400000+0000)/") == dt.datetime(2026, 9, 30, tzinfo=dt.UTC)
    assert parse_xero_datetime("2026-09-30T12:00:00") == dt.datetime(2026, 9, 30, 12, tzinfo=dt.UTC)


def test_lock_dates_to_period_status() -> None:
    assert period_state("2026-08", None, None) == "open"
    assert period_state("2026-08", dt.date(2026, 8, 31), None) == "closed"
    assert period_state("2026-08", dt.date(2026, 8, 30), None) == "closing"
    assert period_state("2026-02", dt.date(2026, 8, 31), dt.date(2026, 2, 28)) == "locked"
    assert period_state("2026-09", dt.date(2026, 8, 31), dt.date(2025, 12, 31)) == "open"


def test_idempotency_keys_are_deterministic_and_short() -> None:
    a = idempotency_key("mj", "US01", "J-1:abc", "J-2:def")
    assert a == idempotency_key("mj", "US01", "J-1:abc", "J-2:def") and len(a) <= 128
    assert a != idempotency_key("mj", "US01", "J-1:abc", "J-2:deg")


def entry(jid: str, desc: str = "accrual", **line_kw: object) -> JournalEntry:
    return JournalEntry(id=jid, legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 30),
                        journal_type="revenue_accrual", description=desc, lines=(
        JournalLine(line_no=1, account="1200", debit=Decimal("850.00"), currency="GBP", functional_currency="USD",
                    functional_debit=Decimal("1079.50"), dimensions={"project": "P-1", "unmapped": "x"}),
        JournalLine(line_no=2, account="4000", credit=Decimal("850.00"), currency="GBP", functional_currency="USD",
                    functional_credit=Decimal("1079.50"), dimensions={"project": "P-1"})))


def test_journal_to_manual_journal() -> None:
    plan = journal_to_manual(entry("US01-2026-09-x-1", "a" * 900), CHART)
    assert plan.problems == ()
    body = plan.body
    assert len(body["Narration"]) <= 500 and journal_id_of(body["Narration"]) == "US01-2026-09-x-1"
    assert [ln["AccountCode"] for ln in body["JournalLines"]] == ["620", "200"]
    assert [ln["LineAmount"] for ln in body["JournalLines"]] == [Decimal("1079.50"), Decimal("-1079.50")]
    assert body["JournalLines"][0]["Tracking"] == [{"Name": "Project", "Option": "P-1"}]  # unmapped dims not sent
    totals = readback_totals(body["JournalLines"], "USD")
    assert set(totals) == {"GBP"} and totals["GBP"].debit == totals["GBP"].credit == Decimal("850.00")
    held = {**body, "Date": ms_date(dt.date(2026, 9, 30)),
            "JournalLines": [{**ln, "LineAmount": float(ln["LineAmount"])} for ln in body["JournalLines"]]}
    assert held_signature(held) == plan.signature


def test_pre_send_problems() -> None:
    j = entry("J-bad")
    bad = j.model_copy(update={"lines": (
        j.lines[0].model_copy(update={"account": "9999"}),
        j.lines[1].model_copy(update={"account": "5555", "functional_currency": None, "functional_credit": None}))})
    problems = journal_to_manual(bad, CHART).problems
    assert any("999 is ARCHIVED" in p for p in problems) and any("5555 is not in the account map" in p
                                                                 for p in problems)
    assert any("base currency USD only" in p for p in problems)
