"""Salesforce connector against the Salesforce sandbox (real HTTP on loopback): incremental sync with many rows
sharing one SystemModstamp across page breaks, a same-second save behind the cursor, Certinia weekly timecards split
per day, deletes (feed and full-read sweep), the daily API limit honoured without a storm of retries, the
connector's own budget, an expired session refreshed mid-sync, both OAuth grants, and custom field mapping."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from ledgerbridge.connectors.salesforce import SalesforceSource
from ledgerbridge.errors import PermanentError, RateLimitedError
from ledgerbridge.model.entities import ApprovalStatus
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.salesforce import Store, connector_options, create_app

UTC = dt.UTC
T = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)
KTE = "KimbleOne__TimeEntry__c"
SECOND = dt.timedelta(seconds=1)


@contextmanager
def org(**options: Any) -> Iterator[tuple[Any, str]]:
    app = create_app(seed=False, **options)
    with serve_in_thread(app) as base:
        yield app, base


def source(app: Any, base: str, package: str, **options: Any) -> SalesforceSource:
    return SalesforceSource.from_options("sf", connector_options(app, base, package, **options),
                                         private_key=app.state.private_key_pem)


def kimble_master(st: Store) -> tuple[str, str]:
    group = st.insert("KimbleOne__DeliveryGroup__c", {"Name": "G", "CurrencyIsoCode": "GBP"})
    return group, st.insert("KimbleOne__Resource__c", {"Name": "R", "KimbleOne__IsActive__c": True})


def kimble_entries(st: Store, n: int, *, stamp: dt.datetime, units: str = "7.5") -> list[str]:
    group, res = kimble_master(st)
    return [st.insert(KTE, {"KimbleOne__DeliveryGroup__c": group, "KimbleOne__Resource__c": res,
                            "KimbleOne__EntryDate__c": (dt.date(2026, 10, 1) + dt.timedelta(days=i % 28)).isoformat(),
                            "KimbleOne__EntryUnits__c": Decimal(units), "KimbleOne__Status__c": "Approved",
                            "KimbleOne__IsChargeable__c": True}, stamp=stamp) for i in range(n)]


def drain(src: SalesforceSource, cursor: dict[str, Any] | None = None, most: int = 20) -> tuple[list[Any], dict, int]:
    events: list[Any] = []
    for n in range(1, most + 1):
        r = src.sync(cursor)
        assert r.errors == []
        events += r.events
        cursor = r.cursor
        if not r.stats["incomplete"]:
            return events, cursor, n
    raise AssertionError(f"sync did not finish in {most} runs")


def test_ties_at_page_boundaries_are_neither_lost_nor_duplicated() -> None:
    with org(page_size=7) as (app, base):
        st = app.state.store
        ids = kimble_entries(st, 100, stamp=T) + kimble_entries(st, 5, stamp=T + SECOND)
        src = source(app, base, "kimble", max_records=30)
        events, cursor, runs = drain(src)
        assert runs == 4  # 30 + 30 + 30 + 15: three syncs stopped mid-tie and resumed from (stamp, Id)
        assert Counter(e.entry.id for e in events) == Counter(ids)  # every row exactly once
        assert {e.entry.hours for e in events} == {Decimal("7.5")}

        # saved again in the cursor's second, with an Id below the cursor's: the overlap catches it
        st.update(KTE, ids[0], {"KimbleOne__EntryUnits__c": Decimal("3")}, stamp=T + SECOND)
        later, cursor, _ = drain(src, cursor)  # the overlap re-reads the recent rows (30 per sync here)
        assert [(e.entry.id, e.entry.hours, e.kind) for e in later] == [(ids[0], Decimal("3"), "updated")]
        first = next(e for e in events if e.entry.id == ids[0])
        assert later[0].entry.version > first.entry.version
        again, _, _ = drain(src, cursor)  # re-read rows are recognised by their stamp: nothing emitted
        assert again == []


def certinia_master(st: Store) -> tuple[str, str]:
    proj = st.insert("pse__Proj__c", {"Name": "P", "CurrencyIsoCode": "USD", "pse__Is_Active__c": True})
    return proj, st.insert("Contact", {"Name": "C", "pse__Is_Resource__c": True})


def timecard(st: Store, proj: str, res: str, start: str, hours: dict[str, str], **fields: Any) -> str:
    return st.insert("pse__Timecard_Header__c", {
        "pse__Project__c": proj, "pse__Resource__c": res, "pse__Start_Date__c": start,
        **{f"pse__{d}_Hours__c": Decimal(h) for d, h in hours.items()}, "pse__Status__c": "Approved",
        "pse__Approved__c": True, "pse__Include_In_Financials__c": True, "pse__Billable__c": True, **fields})


def summary(event: Any) -> tuple[str, Decimal, ApprovalStatus]:
    e = event.entry
    if event.entity == "expense":
        return e.expense_date.isoformat(), e.amount, e.approval_status
    return e.work_date.isoformat(), e.hours, e.approval_status


def test_certinia_timecards_split_per_day_edits_and_deletes_withdraw_what_was_approved() -> None:
    with org(page_size=5) as (app, base):
        st = app.state.store
        proj, res = certinia_master(st)
        # a week starting on Sunday 2026-11-01: the Sunday field is 11-01, Monday 11-02, Wednesday 11-04
        card = timecard(st, proj, res, "2026-11-01", {"Sunday": "2", "Monday": "8", "Wednesday": "4"})
        draft = timecard(st, proj, res, "2026-11-09", {"Monday": "5"}, pse__Status__c="Saved",
                         pse__Approved__c=False, pse__Include_In_Financials__c=False)
        pending = timecard(st, proj, res, "2026-11-16", {"Monday": "6"}, pse__Include_In_Financials__c=False)
        exp = st.insert("pse__Expense__c", {"pse__Project__c": proj, "pse__Resource__c": res,
                                            "pse__Expense_Date__c": "2026-11-03", "pse__Amount__c": Decimal("42.10"),
                                            "CurrencyIsoCode": "USD", "pse__Type__c": "Meals",
                                            "pse__Status__c": "Approved", "pse__Include_In_Financials__c": True})
        src = source(app, base, "certinia")
        r = src.sync(None)
        got = {e.entry.id: summary(e) for e in r.events}
        A, D, S = ApprovalStatus.APPROVED, ApprovalStatus.DRAFT, ApprovalStatus.SUBMITTED
        assert got == {f"{card}:2026-11-01": ("2026-11-01", Decimal("2"), A),
                       f"{card}:2026-11-02": ("2026-11-02", Decimal("8"), A),
                       f"{card}:2026-11-04": ("2026-11-04", Decimal("4"), A),
                       f"{draft}:2026-11-09": ("2026-11-09", Decimal("5"), D),
                       f"{pending}:2026-11-16": ("2026-11-16", Decimal("6"), S),  # approved, not in financials
                       exp: ("2026-11-03", Decimal("42.10"), A)}
        assert next(e for e in r.events if e.entry.id == exp).entity == "expense"

        # Monday 8 -> 6, Wednesday emptied; Sunday untouched and not re-emitted
        st.update("pse__Timecard_Header__c", card, {"pse__Monday_Hours__c": Decimal("6"),
                                                     "pse__Wednesday_Hours__c": Decimal("0")})
        now = st.clock()
        feed = src.client.updated("pse__Timecard_Header__c", (now - dt.timedelta(minutes=5)).isoformat(),
                                  (now + dt.timedelta(seconds=1)).isoformat())
        assert set(feed["ids"]) == {card, draft, pending}  # the /updated feed names them too
        r2 = src.sync(r.cursor)
        assert {e.entry.id: (e.entry.hours, e.entry.approval_status, e.kind) for e in r2.events} == {
            f"{card}:2026-11-02": (Decimal("6"), A, "updated"),
            f"{card}:2026-11-04": (Decimal("4"), ApprovalStatus.RECALLED, "deleted")}

        st.delete("pse__Timecard_Header__c", card)  # the delete feed names it
        r3 = src.sync(r2.cursor)
        assert {e.entry.id: e.entry.approval_status for e in r3.events} == {
            f"{card}:2026-11-01": ApprovalStatus.RECALLED, f"{card}:2026-11-02": ApprovalStatus.RECALLED}
        assert r3.stats["full"] is False and r3.stats["deleted"] == 1
        replay = src.sync(r2.cursor)  # a crash before the cursor was stored: the same changes, the same keys
        assert [e.idempotency_key for e in replay.events] == [e.idempotency_key for e in r3.events]
        assert replay.cursor["items"] == r3.cursor["items"]

        st.empty_recycle_bin()  # the feed no longer reaches back: a full read sweeps what is gone
        st.delete("pse__Expense__c", exp, when=st.clock() - dt.timedelta(hours=1))
        st.deleted.clear()
        r4 = src.sync(r3.cursor)
        assert [(e.entry.id, e.entry.approval_status, e.entry.description) for e in r4.events] == [
            (exp, ApprovalStatus.RECALLED, "not found in a full read")]
        assert r4.stats["full"] is False and r4.stats["full_reads"] == "time_entry,expense,milestone"
        assert [e.idempotency_key for e in src.sync(r3.cursor).events] == [e.idempotency_key for e in r4.events]
        assert src.sync(r4.cursor).events == []


def others_use_the_rest_after(src: SalesforceSource, app: Any, responses: int, requests: int) -> None:
    """The org's other integrations spend ``requests`` of the shared allocation right after our ``responses``-th
    answer (as a concurrent backfill would)."""
    seen = [0]

    def hook(response: Any) -> None:
        seen[0] += 1
        if seen[0] == responses:
            app.state.consume(requests)

    src.client._http.event_hooks["response"].append(hook)


def api_statuses(app: Any) -> list[int]:
    return [s for _, p, s in app.state.calls.calls if p.startswith("/services/data")]


def test_a_full_read_spread_over_several_syncs_still_sweeps_what_is_gone() -> None:
    with org(page_size=5) as (app, base):
        st = app.state.store
        ids = kimble_entries(st, 20, stamp=T)
        src = source(app, base, "kimble", max_records=8)
        _, cursor, runs = drain(src)
        assert runs == 3
        st.empty_recycle_bin()  # the delete feed cannot say what went: a full read over 3 syncs must
        for rid in (ids[3], ids[17]):
            st.delete(KTE, rid)
        st.deleted.clear()
        events, _, runs = drain(src, cursor)
        assert runs == 3
        assert [(e.entry.id, e.entry.approval_status) for e in events] == [
            (ids[3], ApprovalStatus.RECALLED), (ids[17], ApprovalStatus.RECALLED)]


def test_request_limit_exceeded_stops_the_sync_without_a_storm() -> None:
    with org(page_size=5, daily_limit=10) as (app, base):
        kimble_entries(app.state.store, 40, stamp=T)
        src = source(app, base, "kimble")
        others_use_the_rest_after(src, app, responses=4, requests=7)  # 1 token + 3 pages, then 3 + 7 = 10/10
        r = src.sync(None)
        assert api_statuses(app) == [200, 200, 200, 403]  # the 403 is the last call: no retry storm
        assert r.stats["stopped"] == "LB-R002" and r.stats["incomplete"] and len(r.events) == 15
        before = len(app.state.calls.calls)
        with pytest.raises(RateLimitedError) as exc:  # nothing to do until the allocation recovers: no call made
            src.sync(r.cursor)
        assert exc.value.code == "LB-R002" and exc.value.retry_after > 500
        assert len(app.state.calls.calls) == before


def test_short_limit_waits_are_honoured_then_the_sync_completes() -> None:
    with org(page_size=5, daily_limit=10, limit_window_seconds=0.3) as (app, base):
        ids = kimble_entries(app.state.store, 40, stamp=T)
        src = source(app, base, "kimble", limit_wait_seconds=0.35, budget_share=1.0)
        others_use_the_rest_after(src, app, responses=4, requests=7)
        events, _, runs = drain(src)
        statuses = api_statuses(app)
        assert runs == 1 and Counter(e.entry.id for e in events) == Counter(ids)
        assert statuses.count(403) == 1 and statuses[statuses.index(403) + 1] == 200  # waited, then accepted
        assert statuses.count(200) == 10  # 8 pages + expense + milestone queries: each made once


def test_the_connector_paces_itself_by_sforce_limit_info() -> None:
    with org(page_size=5, daily_limit=10) as (app, base):
        kimble_entries(app.state.store, 40, stamp=T)
        src = source(app, base, "kimble", budget_share=0.5)
        r = src.sync(None)
        assert api_statuses(app) == [200] * 5  # stopped at 5 of 10 used, before Salesforce had to refuse anything
        assert r.stats["stopped"] == "LB-R002" and len(r.events) == 25

    with org(page_size=5, daily_limit=4, limit_window_seconds=0.3) as (app, base):
        ids = kimble_entries(app.state.store, 40, stamp=T)
        src = source(app, base, "kimble", limit_wait_seconds=0.35, budget_share=1.0)
        events, _, _ = drain(src)
        assert Counter(e.entry.id for e in events) == Counter(ids)
        assert api_statuses(app) == [200] * 10 and src.client.limit_waits == 2  # waited at 4/4 and 8/4... twice


def test_an_expired_query_locator_is_resumed_from_the_last_row_handled() -> None:
    with org(page_size=5) as (app, base):
        ids = kimble_entries(app.state.store, 23, stamp=T)
        app.state.faults["expire_locators"] = 2
        src = source(app, base, "kimble")
        r = src.sync(None)
        assert Counter(e.entry.id for e in r.events) == Counter(ids) and not r.stats["incomplete"]
        assert r.stats["query_restarts"] == 2
        assert app.state.calls.count(path_prefix="/services/data", status=400) == 2


def test_expired_session_is_refreshed_mid_sync() -> None:
    with org(page_size=5) as (app, base):
        ids = kimble_entries(app.state.store, 20, stamp=T)
        app.state.faults["expire_tokens_at_call"] = 3
        src = source(app, base, "kimble")
        events, _, _ = drain(src)
        assert Counter(e.entry.id for e in events) == Counter(ids)
        assert src.client.tokens == 2
        assert [s for _, _, s in app.state.calls.calls].count(401) == 1
        assert app.state.calls.count(path_prefix="/services/oauth2/token") == 2

    with org(token_lifetime=0.2) as (app, base):  # sessions time out between two syncs
        kimble_entries(app.state.store, 3, stamp=T)
        src = source(app, base, "kimble")
        first = src.sync(None)
        time.sleep(0.3)
        assert src.sync(first.cursor).errors == [] and src.client.tokens == 2


def test_client_credentials_and_refused_grants() -> None:
    with org() as (app, base):
        kimble_entries(app.state.store, 3, stamp=T)
        opts = connector_options(app, base, "kimble", auth="client_credentials")
        ok = SalesforceSource.from_options("sf", opts, client_secret=app.state.client_secret)
        assert len(ok.sync(None).events) == 3
        bad = SalesforceSource.from_options("sf", opts, client_secret="wrong")
        with pytest.raises(PermanentError) as exc:
            bad.sync(None)
        assert exc.value.code == "LB-P002"

        from ledgerbridge.testing.sandboxes.salesforce import _keypair

        other_key, _ = _keypair()
        forged = SalesforceSource.from_options("sf", connector_options(app, base, "kimble"), private_key=other_key)
        with pytest.raises(PermanentError, match="invalid assertion"):
            forged.sync(None)
        stranger = SalesforceSource.from_options("sf", {**connector_options(app, base, "kimble"),
                                                        "username": "someone@else"},
                                                 private_key=app.state.private_key_pem)
        with pytest.raises(PermanentError, match="approved this consumer"):
            stranger.sync(None)


def test_field_map_reads_custom_fields_and_refuses_unknown_keys() -> None:
    with org() as (app, base):
        st = app.state.store
        st.add_fields(KTE, "Billable_Flag__c", "Hours_Worked__c")
        group, res = kimble_master(st)
        eid = st.insert(KTE, {"KimbleOne__DeliveryGroup__c": group, "KimbleOne__Resource__c": res,
                              "KimbleOne__EntryDate__c": "2026-11-02", "KimbleOne__EntryUnits__c": Decimal("1"),
                              "Hours_Worked__c": Decimal("6.25"), "KimbleOne__IsChargeable__c": True,
                              "Billable_Flag__c": False, "KimbleOne__Status__c": "Approved"})
        src = source(app, base, "kimble", field_map={"time_entry": {"billable": "Billable_Flag__c",
                                                                    "units": "Hours_Worked__c"}})
        [event] = src.sync(None).events
        assert (event.entry.id, event.entry.hours, event.entry.billable) == (eid, Decimal("6.25"), False)
        days = source(app, base, "kimble", hours_per_unit=8)
        assert days.sync(None).events[0].entry.hours == Decimal("8")
        with pytest.raises(ValueError, match="not a canonical key"):
            source(app, base, "kimble", field_map={"time_entry": {"hourz": "X__c"}})
        with pytest.raises(ValueError, match="unknown object role"):
            source(app, base, "kimble", field_map={"timecard": {"hours": "X__c"}})
        broken = source(app, base, "kimble", field_map={"time_entry": {"billable": "No_Such_Field__c"}})
        with pytest.raises(PermanentError, match="No such column"):
            broken.sync(None)
