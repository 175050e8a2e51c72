"""Pure pieces of the Salesforce connector and its sandbox (no HTTP): timestamp formats, timecard days for weeks that
start on any weekday, financial approval, withdrawals rebuilt from the compact state, Decimal bodies, the
Sforce-Limit-Info header, and the sandbox's SOQL subset (precedence, keyset predicate, refusals)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from ledgerbridge.connectors.salesforce.client import body, parse_limit_info
from ledgerbridge.connectors.salesforce.mapping import (
    Settings,
    approval_status,
    object_maps,
    parse_stamp,
    state_of,
    timecard_days,
    withdrawn,
)
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus
from ledgerbridge.testing.sandboxes.salesforce import Query, SalesforceFault

CERT = object_maps("certinia", {})
SETTINGS = Settings.from_options("certinia", {})


def header(start: str, **hours: str) -> dict:
    return {"Id": "a0T1", "SystemModstamp": "2026-11-02T09:00:00.000+0000", "pse__Project__c": "a0P1",
            "pse__Resource__c": "0031", "pse__Start_Date__c": start, "pse__Status__c": "Approved",
            "pse__Include_In_Financials__c": True,
            **{f"pse__{d.capitalize()}_Hours__c": Decimal(h) for d, h in hours.items()}}


def test_salesforce_timestamps_in_every_shape_parse_to_utc() -> None:
    want = dt.datetime(2026, 11, 2, 9, 0, 0, 123000, tzinfo=dt.UTC)
    assert parse_stamp("2026-11-02T09:00:00.123+0000") == want
    assert parse_stamp("2026-11-02T09:00:00.123Z") == want
    assert parse_stamp("2026-11-02T10:00:00.123+01:00") == want


@pytest.mark.parametrize("start", ["2026-11-01", "2026-10-31", "2026-11-02"])  # Sunday, Saturday, Monday
def test_timecard_days_land_on_their_weekday_whatever_day_the_week_starts(start: str) -> None:
    days = timecard_days(header(start, monday="8", sunday="2", saturday="0"), CERT["time_entry"], system="sf",
                         version=5, status=ApprovalStatus.APPROVED)
    first = dt.date.fromisoformat(start)
    window = {first + dt.timedelta(days=i) for i in range(7)}
    assert {e.work_date.strftime("%A"): e.hours for e in days.values()} == {"Monday": Decimal("8"),
                                                                            "Sunday": Decimal("2")}
    assert all(e.work_date in window and e.id == f"a0T1:{e.work_date}" for e in days.values())


def test_day_hours_outside_0_to_24_are_refused_with_the_rule() -> None:
    with pytest.raises(RecordValidationError, match=r"salesforce\.hours_range"):
        timecard_days(header("2026-11-02", monday="25"), CERT["time_entry"], system="sf", version=1,
                      status=ApprovalStatus.APPROVED)


def test_approved_is_postable_only_when_included_in_financials() -> None:
    om = CERT["time_entry"]
    assert approval_status(header("2026-11-02"), om, SETTINGS) is ApprovalStatus.APPROVED
    assert approval_status({**header("2026-11-02"), "pse__Include_In_Financials__c": False}, om,
                           SETTINGS) is ApprovalStatus.SUBMITTED
    lax = Settings.from_options("certinia", {"require_financials": False})
    assert approval_status({**header("2026-11-02"), "pse__Include_In_Financials__c": False}, om,
                           lax) is ApprovalStatus.APPROVED
    assert approval_status({**header("2026-11-02"), "pse__Status__c": "Rejected"}, om,
                           SETTINGS) is ApprovalStatus.REJECTED


def test_a_withdrawal_rebuilds_the_last_content_from_the_compact_state() -> None:
    [entry] = timecard_days(header("2026-11-02", tuesday="3.25"), CERT["time_entry"], system="sf", version=7,
                            status=ApprovalStatus.APPROVED).values()
    base, own = state_of(entry)
    back = withdrawn(entry.id, base, own, system="sf", version=8, status=ApprovalStatus.RECALLED, why="gone")
    assert back.model_dump(exclude={"version", "approval_status", "description", "updated_at"}) == entry.model_dump(
        exclude={"version", "approval_status", "description", "updated_at"})


def test_decimals_are_sent_with_their_digits_and_limit_info_is_read() -> None:
    assert body({"a": Decimal("12.50"), "b": [Decimal("0.1")], "c": "x"}) == b'{"a": 12.50, "b": [0.1], "c": "x"}'
    assert parse_limit_info("api-usage=18/100000") == (18, 100000)
    assert parse_limit_info("per-app-api-usage=2/50(appName=x), api-usage=7/15000") == (7, 15000)
    assert parse_limit_info(None) is None


def matches(soql: str, rec: dict) -> bool:
    return Query(soql).matches(rec)


def test_sandbox_soql_keyset_predicate_and_precedence() -> None:
    stamp = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=dt.UTC)
    keyset = ("SELECT Id FROM X WHERE (K = true) AND (SystemModstamp > 2026-11-02T09:00:00Z OR "
              "(SystemModstamp = 2026-11-02T09:00:00Z AND Id > 'a05')) ORDER BY SystemModstamp, Id LIMIT 5")
    assert matches(keyset, {"K": True, "SystemModstamp": stamp, "Id": "a06"})
    assert not matches(keyset, {"K": True, "SystemModstamp": stamp, "Id": "a05"})
    assert matches(keyset, {"K": True, "SystemModstamp": stamp + dt.timedelta(seconds=1), "Id": "a01"})
    assert not matches(keyset, {"K": False, "SystemModstamp": stamp + dt.timedelta(seconds=1), "Id": "a09"})
    # AND binds tighter than OR
    assert matches("SELECT Id FROM X WHERE A = 1 OR B = 1 AND C = 1", {"A": 1, "B": 0, "C": 0})
    assert not matches("SELECT Id FROM X WHERE (A = 1 OR B = 1) AND C = 1", {"A": 1, "B": 0, "C": 0})
    assert matches("SELECT Id FROM X WHERE E IN ('p', 'q\\'s') AND NOT F = null", {"E": "q's", "F": 1})
    q = Query("SELECT Id, Name FROM Opportunity WHERE CloseDate >= 2026-09-01 ORDER BY Name DESC LIMIT 3")
    assert (q.sobject, q.fields, q.order, q.limit) == ("Opportunity", ["Id", "Name"], [("Name", True)], 3)
    bad_queries = ("SELECT FROM X", "SELECT Id FROM X WHERE", "SELECT Id FROM X LIMIT many",
                   "SELECT Id FROM X WHERE A ~ 1")
    for bad in bad_queries:
        with pytest.raises(SalesforceFault) as exc:
            Query(bad)
        assert exc.value.code == "MALFORMED_QUERY"
