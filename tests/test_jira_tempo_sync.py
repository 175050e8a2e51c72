"""Jira Cloud + Tempo change detection against the sandboxes (real HTTP; every Jira exchange checked against
Atlassian's OpenAPI description): mapping, ties at page boundaries, the deleted feed, the feeds' last-minute gap,
Tempo-only changes, the invoice write-back."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from jira_tempo_support import environment, ids, seed_basics
from ledgerbridge.model.entities import ApprovalStatus


@pytest.fixture
def env():
    with environment() as e:
        yield e


def day_ago(env, n: int = 2) -> dt.date:
    return dt.datetime.fromtimestamp(env.clock(), dt.UTC).date() - dt.timedelta(days=n)


def test_first_sync_maps_worklogs_approvals_and_master_data(env) -> None:
    b = seed_basics(env)
    a0, a1 = b["accounts"]
    day = day_ago(env)
    w1 = env.log(b["issues"][0], a0, day, 7 * 3600 + 1800, comment="design review")
    w2 = env.log(b["issues"][1], a1, day, 1000, billable=False)
    env.tempo.set_approval(a0, day, "APPROVED")
    env.tempo.set_approval(a1, day, "IN_REVIEW")
    env.clock.advance(120)
    src = env.source()
    r = src.sync(None)
    assert not r.errors
    got = {e.entry.id: e.entry for e in r.events}
    assert set(got) == {w1, w2} and all(e.kind == "created" for e in r.events)
    e1, e2 = got[w1], got[w2]
    assert (e1.hours, e1.billable, e1.approval_status, e1.project_id, e1.resource_id, e1.work_date) == (
        Decimal("7.5000"), True, ApprovalStatus.APPROVED, b["project"], a0, day)
    assert e1.task == "ACME-1" and e1.description == "design review"
    assert (e2.hours, e2.billable, e2.approval_status) == (Decimal("0.2778"), False, ApprovalStatus.SUBMITTED)
    assert {p.id for p in src.projects()} == {b["project"]}
    assert {r.id for r in src.resources()} == {a0, a1}  # the app account is not a resource
    again = src.sync(r.cursor)
    assert again.events == [] and again.stats["fetched"] == 0  # overlap re-read: known times, no list call
    replay = env.source().sync(None)  # a lost cursor: the same versions, so the inbox keys repeat (no duplicates)
    assert [e.idempotency_key for e in replay.events] == [e.idempotency_key for e in r.events]


def test_ties_at_page_boundaries_are_read_once_each(env) -> None:
    env.jira_app.state.options["page_size"] = 5
    b = seed_basics(env)
    day = day_ago(env)
    made: list[str] = []
    for n in (3, 4, 3):  # 3 changes at t0, 4 sharing t1 (they straddle the first page's end), 3 at t2
        made += [env.log(b["issues"][0], b["accounts"][0], day, 3600) for _ in range(n)]
        env.clock.advance(0.001)
    env.clock.advance(120)
    env.jira_app.state.calls.clear()
    r = env.source(with_tempo=False).sync(None)
    assert sorted(ids(r), key=int) == sorted(made, key=int)  # each exactly once
    assert env.jira_app.state.calls.count(path_prefix="/rest/api/3/worklog/updated") >= 3  # really paged
    assert r.stats["feed_updated"] == 10


def test_deleted_feed_reverses_known_worklogs_only(env) -> None:
    b = seed_basics(env)
    a0 = b["accounts"][0]
    day = day_ago(env)
    keep = env.log(b["issues"][0], a0, day, 3600)
    gone = env.log(b["issues"][1], a0, day, 7200)
    env.tempo.set_approval(a0, day, "APPROVED")
    env.clock.advance(120)
    src = env.source()
    first = src.sync(None)
    v_gone = next(e.entry.version for e in first.events if e.entry.id == gone)
    env.jira.delete_worklog(gone)
    env.tempo.delete_worklog(env.tempo.tempo_id(gone))
    ghost = env.log(b["issues"][0], a0, day, 600)  # created and deleted between two syncs: never reported
    env.jira.delete_worklog(ghost)
    env.clock.advance(120)
    r = src.sync(first.cursor)
    assert [(e.kind, e.entry.id) for e in r.events] == [("deleted", gone)]
    dead = r.events[0].entry
    assert dead.version == v_gone + 1 and dead.approval_status is ApprovalStatus.RECALLED
    assert dead.hours == Decimal("2.0000")
    assert gone not in r.cursor["entries"] and keep in r.cursor["entries"]
    assert src.sync(r.cursor).events == []


def test_change_inside_the_last_minute_gap_is_picked_up_next_sync(env) -> None:
    b = seed_basics(env)
    day = day_ago(env)
    early = env.log(b["issues"][0], b["accounts"][0], day, 3600)
    env.clock.advance(120)
    src = env.source(with_tempo=False)
    first = src.sync(None)
    assert ids(first) == [early]
    env.clock.advance(5)
    late = env.log(b["issues"][0], b["accounts"][1], day, 1800)  # changed 20 s before the next sync
    env.jira.update_worklog(early, seconds=5400)
    env.clock.advance(20)
    now_ms = int(env.clock() * 1000)
    second = src.sync(first.cursor)
    assert second.events == []  # Jira leaves out the last minute: nothing visible yet
    assert second.cursor["updated_since"] <= now_ms - 60_000  # the cursor stays behind the gap
    env.clock.advance(90)
    third = src.sync(second.cursor)
    got = {e.entry.id: e.entry for e in third.events}
    assert set(got) == {late, early}
    assert got[early].hours == Decimal("1.5000")
    assert got[early].version > next(e.entry.version for e in first.events)


def test_late_surfacing_change_is_caught_by_the_overlap() -> None:
    # one worklog surfaces up to 4 minutes after the last-minute gap (replication lag): the overlap re-reads it
    with environment(jira={"gap_jitter_seconds": 240}) as env:
        b = seed_basics(env)
        day = day_ago(env)
        made = [env.log(b["issues"][i % 3], b["accounts"][i % 2], day, 600 * (i + 1)) for i in range(12)]
        src = env.source(with_tempo=False)
        seen: set[str] = set()
        cursor = None
        for _ in range(8):  # syncs every 45 s
            env.clock.advance(45)
            r = src.sync(cursor)
            seen |= set(ids(r))
            cursor = r.cursor
        assert seen == set(made)


def test_tempo_only_changes_make_new_versions(env) -> None:
    b = seed_basics(env)
    a0 = b["accounts"][0]
    day = day_ago(env)
    w = env.log(b["issues"][0], a0, day, 3600, billable=True, attributes={"_Account_": "ACC-7"})
    env.clock.advance(120)
    src = env.source(project_from="account")
    first = src.sync(None)
    assert [(e.entry.project_id, e.entry.billable) for e in first.events] == [("ACC-7", True)]
    env.tempo.update_worklog(env.tempo.tempo_id(w), billable_seconds=0)  # Tempo-only: Jira's worklog unchanged
    env.clock.advance(120)
    second = src.sync(first.cursor)
    assert [(e.entry.id, e.entry.billable) for e in second.events] == [(w, False)]
    assert second.events[0].entry.version > first.events[0].entry.version


def test_attribute_mapping_and_unmappable_worklog(env) -> None:
    b = seed_basics(env)
    day = day_ago(env)
    good = env.log(b["issues"][0], b["accounts"][0], day, 3600, attributes={"_Billable_": "No", "_Account_": "A1"})
    bad = env.log(b["issues"][1], b["accounts"][0], day, 3600, attributes={"_Billable_": "Yes"})  # no account
    env.clock.advance(120)
    r = env.source(project_from="account", billable_attribute="_Billable_").sync(None)
    assert [(e.entry.id, e.entry.billable, e.entry.project_id) for e in r.events] == [(good, False, "A1")]
    assert len(r.errors) == 1 and r.errors[0].details["entry_id"] == bad
    assert r.errors[0].details["rule"] == "jira.project"


def test_invoice_write_back_is_idempotent_and_makes_no_version(env) -> None:
    from ledgerbridge.connectors.base import InvoiceStatusUpdate

    b = seed_basics(env)
    day = day_ago(env)
    w1, w2 = (env.log(b["issues"][0], b["accounts"][0], day, 3600) for _ in range(2))
    env.clock.advance(120)
    src = env.source(with_tempo=False)
    first = src.sync(None)
    update = InvoiceStatusUpdate(key="INV-KEY-1", project_id=b["project"], legal_entity_id="US01",
                                 invoice_date=day, currency="USD", total=Decimal("100.00"), erp_system="erp",
                                 erp_number="INV-US01-000012", status="posted",
                                 items=(("psa_jira", "time_entry", w1), ("psa_jira", "time_entry", w2),
                                        ("other", "time_entry", "1")))
    assert src.write_invoice_status([update]) == 1
    assert src.invoice_refs([w1, w2]) == {w1: {"invoice": "INV-US01-000012", "status": "posted"},
                                          w2: {"invoice": "INV-US01-000012", "status": "posted"}}
    puts = env.jira_app.state.calls.count(method="PUT")
    assert src.write_invoice_status([update]) == 0 and env.jira_app.state.calls.count(method="PUT") == puts
    env.clock.advance(120)
    after = src.sync(first.cursor)  # the property write bumped Jira's updated time, not the business content
    assert after.events == [] and after.stats["fetched"] == 2


def test_a_hidden_issue_makes_its_worklog_unmappable_not_the_sync(env) -> None:
    b = seed_basics(env)
    day = day_ago(env)
    ok = env.log(b["issues"][0], b["accounts"][0], day, 3600)
    hidden = env.log(b["issues"][1], b["accounts"][0], day, 3600)
    env.jira.issues.pop(b["issues"][1])  # issue security: the issue answers 404 to this account
    env.clock.advance(120)
    r = env.source(with_tempo=False).sync(None)
    assert ids(r) == [ok]
    assert [(e.details["entry_id"], e.details["rule"]) for e in r.errors] == [(hidden, "jira.project")]
