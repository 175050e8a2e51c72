"""Redmine change detection against a real Redmine 5.0 (started by ledgerbridge.testing.redmine_server).

Every test first takes a baseline sync (absorbing what earlier tests left on the shared server), then changes
entries through the REST API and checks that the next sync reports exactly the expected change events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from ledgerbridge.connectors.redmine import RedmineClient, RedmineSource, SyncOptions
from ledgerbridge.connectors.redmine.connector import SyncResult, month_end, months_between
from ledgerbridge.domain.approvals import check_history, effective_version, group_histories
from ledgerbridge.errors import PermanentError
from ledgerbridge.model.entities import ApprovalStatus, TimeEntry
from ledgerbridge.model.events import TimeEntryApproved, TimeEntryEdited, TimeEntryRecalled
from ledgerbridge.testing.redmine_server import RedmineSettings
from ledgerbridge.testing.redmine_server import redmine_server as redmine_server

TODAY = dt.datetime.now(dt.UTC).date()
RECENT = TODAY - dt.timedelta(days=2)
OLD = TODAY - dt.timedelta(days=200)


class World:
    """A fresh project on the shared server plus a source whose cursor follows every sync."""

    def __init__(self, settings: RedmineSettings, **sync_kw: Any) -> None:
        self.settings = settings
        self.api: RedmineClient = settings.client()
        self.source = RedmineSource.from_options("psa_rm", settings.options(**sync_kw), settings.api_key)
        ident = f"t{uuid.uuid4().hex[:10]}"
        self.project = self.api.create_project(f"Project {ident}", ident)
        self.cursor = self.source.sync(None).cursor  # baseline: everything already on the server

    def entry(self, hours: str = "7.5", spent_on: dt.date = RECENT, approved: bool = False, billable: bool = True,
              project: dict[str, Any] | None = None) -> dict[str, Any]:
        cf = self.settings.custom_fields
        return self.api.create_time_entry({
            "project_id": (project or self.project)["id"], "hours": hours, "spent_on": spent_on.isoformat(),
            "comments": "work", "custom_fields": [{"id": cf["Approved"], "value": "1" if approved else "0"},
                                                  {"id": cf["Billable"], "value": "1" if billable else "0"}]})

    def set_cf(self, entry_id: int, name: str, value: str) -> None:
        self.api.update_time_entry(entry_id, {"custom_fields": [{"id": self.settings.custom_fields[name],
                                                                  "value": value}]})

    def sync(self, **kw: Any) -> SyncResult:
        result = self.source.sync(self.cursor, **kw)
        assert not result.errors, result.errors
        self.cursor = result.cursor
        return result


@pytest.fixture
def world(redmine_server: RedmineSettings) -> Iterator[World]:
    w = World(redmine_server)
    yield w
    w.source.close()
    w.api.close()


def kinds(result: SyncResult) -> list[tuple[str, str, str]]:
    return sorted((e.kind, e.entry.id, e.entry.approval_status.value) for e in result.events)


def test_create_edit_approve_unapprove_delete(world: World) -> None:
    a = world.entry(hours="7.5")
    b = world.entry(hours="0.3", approved=True, billable=False)
    r1 = world.sync()
    assert kinds(r1) == sorted([("created", str(a["id"]), "draft"), ("created", str(b["id"]), "approved")])
    by_id = {e.entry.id: e for e in r1.events}
    assert by_id[str(a["id"])].entry.hours == Decimal("7.5")
    assert by_id[str(b["id"])].entry.hours == Decimal("0.3")  # exact: never float arithmetic
    assert by_id[str(b["id"])].entry.billable is False and by_id[str(a["id"])].entry.billable is True
    assert by_id[str(a["id"])].entry.work_date == RECENT
    assert by_id[str(a["id"])].entry.project_id == str(world.project["id"])
    assert world.sync().events == []  # nothing twice

    world.api.update_time_entry(a["id"], {"hours": "6.25"})  # edit
    r2 = world.sync()
    assert kinds(r2) == [("updated", str(a["id"]), "draft")]
    assert r2.events[0].entry.hours == Decimal("6.25")
    assert r2.events[0].entry.version > by_id[str(a["id"])].entry.version

    world.set_cf(a["id"], "Approved", "1")  # approve
    world.set_cf(b["id"], "Approved", "0")  # un-approve
    r3 = world.sync()
    assert kinds(r3) == sorted([("updated", str(a["id"]), "approved"), ("updated", str(b["id"]), "draft")])
    assert world.sync().events == []

    world.api.delete_time_entry(a["id"])  # approved, then deleted -> recalled
    world.api.delete_time_entry(b["id"])  # un-approved, then deleted -> unapproved status
    r4 = world.sync()
    assert kinds(r4) == sorted([("deleted", str(a["id"]), "recalled"), ("deleted", str(b["id"]), "draft")])
    assert world.sync().events == []

    history = [e.entry for r in (r1, r2, r3, r4) for e in r.events]
    keys = [e.idempotency_key for r in (r1, r2, r3, r4) for e in r.events]
    assert len(keys) == len(set(keys))
    assert all(k.startswith("redmine:psa_rm:time_entry:") for k in keys)
    grouped = group_histories(history)
    for item, versions in grouped.items():
        assert effective_version(versions) is None, item  # both deleted: nothing stays on the ledger
        assert check_history(versions, item=item) == []  # every transition is one PSA practice allows
    # canonical events and inbox records for the flows
    events = [e.to_business_event() for e in r3.events + r4.events]
    assert {type(ev) for ev in events} == {TimeEntryApproved, TimeEntryEdited, TimeEntryRecalled}
    for record, event in zip(r4.records(), r4.events, strict=True):
        assert TimeEntry.model_validate(record["payload"]) == event.entry
        assert (record["entity"], record["external_id"], record["version"]) == (
            "time_entry", event.entry.id, event.entry.version)


def test_edits_within_one_second_get_distinct_versions(world: World) -> None:
    a = world.entry()
    v = [world.sync().events[0].entry.version]
    for hours in ("1", "2", "3"):
        world.api.update_time_entry(a["id"], {"hours": hours})
        (event,) = world.sync().events
        assert event.entry.hours == Decimal(hours)
        v.append(event.entry.version)
    assert v == sorted(set(v)), v  # strictly increasing even when updated_on did not move


def test_replaying_a_sync_from_the_same_cursor_gives_the_same_keys(world: World) -> None:
    a = world.entry()
    world.sync()
    before = world.cursor
    world.api.update_time_entry(a["id"], {"comments": "changed"})
    first = world.source.sync(before)
    again = world.source.sync(before)  # e.g. the flow crashed before storing the cursor
    assert [e.idempotency_key for e in first.events] == [e.idempotency_key for e in again.events]
    assert len(first.events) == 1


def test_spent_on_moved_out_of_scanned_windows_is_an_edit_not_a_deletion(redmine_server: RedmineSettings) -> None:
    w = World(redmine_server, lookback_days=10, rotate_windows=0, full_scan_every=0)
    a = w.entry(spent_on=RECENT)
    b = w.entry(spent_on=OLD)
    assert kinds(w.sync(full=False)) == [("created", str(a["id"]), "draft")]  # b's window is not scanned
    w.api.update_time_entry(a["id"], {"spent_on": OLD.isoformat()})  # out of the recent range
    r = w.sync(full=False)
    assert kinds(r) == [("updated", str(a["id"]), "draft")]
    assert r.events[0].entry.work_date == OLD
    assert r.stats["moved"] == 1
    assert w.sync(full=False).events == []
    w.api.update_time_entry(b["id"], {"spent_on": RECENT.isoformat()})  # into the recent range
    assert kinds(w.sync(full=False)) == [("created", str(b["id"]), "draft")]
    assert w.sync(full=True).events == []


def test_rotation_reaches_old_windows(redmine_server: RedmineSettings) -> None:
    floor = OLD.replace(day=1)
    w = World(redmine_server, lookback_days=10, rotate_windows=2, full_scan_every=0, scan_floor=floor.isoformat())
    old = w.entry(spent_on=OLD)
    recent_from = (TODAY - dt.timedelta(days=10)).replace(day=1)
    older = months_between(floor, recent_from - dt.timedelta(days=1))
    found, scanned = [], set()
    for _ in range((len(older) + 1) // 2):  # two old months per sync: every old month within this many syncs
        result = w.sync(full=False)
        scanned |= {tuple(s) for s in result.stats["scans"][1:]}
        found += [e for e in result.events if e.entry.id == str(old["id"])]
    assert [e.kind for e in found] == ["created"]
    assert scanned == {(m.isoformat(), month_end(m).isoformat()) for m in older}


def test_archived_project_is_not_a_mass_deletion(world: World) -> None:
    ids = {str(world.entry(approved=True)["id"]) for _ in range(3)}
    assert {e.entry.id for e in world.sync().events} == ids
    world.api.set_project_state(world.project["id"], "archive")
    full = world.sync(full=True)
    assert full.events == [] and full.stats["hidden"] == 3
    incremental = world.sync(full=False)
    assert incremental.events == []
    world.api.set_project_state(world.project["id"], "unarchive")
    assert world.sync().events == []
    # a project deleted for real takes its entries with it: those are deletions
    world.api.delete_project(world.project["id"])
    gone = world.sync()
    assert kinds(gone) == sorted(("deleted", i, "recalled") for i in ids)


def test_closed_project_entries_stay(world: World) -> None:
    world.entry()
    world.sync()
    world.api.set_project_state(world.project["id"], "close")
    assert world.sync(full=True).events == []
    assert str(world.project["id"]) in {p.id for p in world.source.projects()}


def test_write_back_is_visible_and_creates_no_new_version(world: World) -> None:
    a = world.entry(approved=True)
    world.sync()
    results = world.source.mark_invoiced({str(a["id"]): "INV-2026-0001"})
    assert [(r.entry_id, r.status) for r in results] == [(str(a["id"]), "written")]
    assert world.source.invoice_refs([str(a["id"])]) == {str(a["id"]): "INV-2026-0001"}
    assert world.api.time_entry(a["id"])[1]["custom_fields"][2]["value"] == "INV-2026-0001"
    again = world.source.mark_invoiced({str(a["id"]): "INV-2026-0001"})
    assert [r.status for r in again] == ["unchanged"]
    assert world.sync(full=True).events == []  # updated_on moved, business content did not

    world.api.delete_time_entry(a["id"])
    (failed,) = world.source.mark_invoiced({str(a["id"]): "INV-2026-0002"})
    assert failed.status == "failed" and isinstance(failed.error, PermanentError)
    assert failed.error.code == "LB-P004" and str(a["id"]) in failed.error.message


def test_write_back_refused_on_closed_project(world: World) -> None:
    a = world.entry(approved=True)
    world.api.set_project_state(world.project["id"], "close")
    (res,) = world.source.mark_invoiced({str(a["id"]): "INV-9"})
    assert res.status == "failed" and res.error is not None and res.error.code == "LB-P003"


def test_sync_options_validation() -> None:
    with pytest.raises(ValueError, match="lookback_days"):
        SyncOptions.from_options({"lookback_days": -1})
    assert SyncOptions.from_options({"scan_floor": "2024-01-01"}).scan_floor == dt.date(2024, 1, 1)


def test_first_sync_reports_versions_from_updated_on(world: World) -> None:
    a = world.entry()
    raw = world.api.time_entry(a["id"])[1]
    fresh = world.source.sync(None)
    (mine,) = [e for e in fresh.events if e.entry.id == str(a["id"])]
    stamp = int(dt.datetime.fromisoformat(raw["updated_on"].replace("Z", "+00:00")).timestamp())
    assert mine.entry.version == stamp
    assert mine.entry.approval_status is ApprovalStatus.DRAFT


def test_an_entry_that_cannot_be_mapped_is_an_error_once_then_an_event_when_fixed(world: World) -> None:
    bad = world.entry(hours="30")  # Redmine accepts it (no daily limit set); one canonical day holds 24 h at most
    result = world.source.sync(world.cursor)
    assert result.events == []
    (err,) = result.errors
    assert err.details["rule"] == "redmine.hours_range" and err.details["raw"]["id"] == bad["id"]
    assert str(bad["id"]) in err.message and err.details["fix"]
    again = world.source.sync(result.cursor)
    assert again.errors == [] and again.events == []  # reported once, not on every sync
    world.api.update_time_entry(bad["id"], {"hours": "8"})
    fixed = world.source.sync(again.cursor)
    assert [(e.kind, e.entry.id, e.entry.hours) for e in fixed.events] == [("created", str(bad["id"]), Decimal("8"))]
    world.api.update_time_entry(bad["id"], {"hours": "26"})  # a later bad version: an error, no event
    worse = world.source.sync(fixed.cursor)
    assert worse.events == [] and [e.details["rule"] for e in worse.errors] == ["redmine.hours_range"]
    world.api.update_time_entry(bad["id"], {"hours": "9"})
    good = world.source.sync(worse.cursor)
    (event,) = good.events
    assert event.kind == "updated" and event.entry.version > fixed.events[0].entry.version + 1

    never = world.entry(hours="40")  # never valid, then deleted: nothing downstream to reverse
    seen = world.source.sync(good.cursor)
    assert seen.events == [] and len(seen.errors) == 1
    world.api.delete_time_entry(never["id"])
    assert world.source.sync(seen.cursor, full=True).events == []
