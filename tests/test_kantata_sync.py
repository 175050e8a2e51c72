"""Kantata OX connector against its sandbox over real HTTP: the results + keyed-map envelope joined, paging at
200, change detection from an unordered / duplicated / lossy subscribed-events feed plus ``updated_after``
re-scans (ties at page boundaries), deletions, 429 without Retry-After (no storm), token refresh mid-sync, and an
idempotent external-reference write-back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.kantata import Credentials, KantataSource
from ledgerbridge.errors import PermanentError, RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.kantata import create_app

DAY = "2026-11-16"


class Sandbox:
    def __init__(self, app: Any, base: str) -> None:
        self.app, self.base, self.store = app, base, app.state.store

    def source(self, **options: Any) -> KantataSource:
        opts = {"url": f"{self.base}/api/v1", "rate_limit_wait_seconds": 0.05, "rescan_every": 0, **options}
        return KantataSource.from_options("psa_kt", opts, Credentials("demo-client", "demo-secret", "demo-refresh"))

    def count(self, status: int | None = None, prefix: str = "/api/v1") -> int:
        return int(self.app.state.calls.count(path_prefix=prefix, status=status))


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    opts = getattr(request, "param", {})
    app = create_app(**opts)
    with serve_in_thread(app) as base:
        yield Sandbox(app, base)


def with_options(**opts: Any) -> Any:
    return pytest.mark.parametrize("sandbox", [opts], indirect=True)


def tenant(store: Any) -> tuple[str, str]:
    ws = store.add_workspace("Apollo", client_name="Acme", currency="EUR")
    user = store.add_user("Ada Lovelace")
    return ws, user


def keyed(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["idempotency_key"]: r for r in records}


# --------------------------------------------------------------------------------------------------- reading


def test_first_sync_joins_the_envelope_and_maps_everything(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    s.set_custom_field("Workspace", ws, "7001", "C-ACME")
    s.set_custom_field("User", user, "7010", "CC-DEL-EU")
    a = s.add_time_entry(ws, user, DAY, 450, notes="design", story_id="55")
    b = s.add_time_entry(ws, user, DAY, 20)
    c = s.add_time_entry(ws, user, DAY, 60)
    s.approve(s.submit([a, b]))
    s.submit([c])
    x = s.add_expense(ws, user, DAY, 12550, currency="EUR", approved=True)
    src = sandbox.source(field_map={"project.customer_id": "7001", "resource.cost_center": {"custom_field_id": 7010}},
                         projects={"legal_entity_id": "DE01", "overrides": {ws: {"cost_center": "CC-9"}}})
    result = src.sync(None)
    assert not result.errors and result.stats["full"]
    items = {(r["entity"], r["external_id"]): r["payload"] for r in result.records()}
    assert set(items) == {("time_entry", a), ("time_entry", b), ("time_entry", c), ("expense", x)}
    assert items[("time_entry", a)]["hours"] == "7.5" and items[("time_entry", a)]["task"] == "55"
    assert items[("time_entry", a)]["approval_status"] == "approved"
    assert items[("time_entry", a)]["approved_at"] is not None
    assert items[("time_entry", b)]["hours"] == "0.333333"  # 20 minutes: rounded to 6 places, never a float
    assert items[("time_entry", c)]["approval_status"] == "submitted"
    assert (items[("expense", x)]["amount"], items[("expense", x)]["currency"]) == ("125.50", "EUR")
    [project] = src.projects()
    assert (project.customer_id, project.legal_entity_id, project.currency, project.cost_center) == (
        "C-ACME", "DE01", "EUR", "CC-9")
    [res] = src.resources()
    assert (res.name, res.cost_center, res.active) == ("Ada Lovelace", "CC-DEL-EU", True)
    assert src.sync(result.cursor).records() == []  # nothing changed: nothing emitted


def test_per_page_over_200_is_refused_and_the_client_never_asks_for_more(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    for i in range(450):
        s.add_time_entry(ws, user, DAY, 30 + i % 7)
    src = sandbox.source()
    token = src.client.token()
    refused = httpx.get(f"{sandbox.base}/api/v1/time_entries.json", params={"per_page": 201},
                        headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "per_page"
    sandbox.app.state.calls.clear()
    assert len(src.sync(None).records()) == 450
    assert sandbox.count(prefix="/api/v1/time_entries") == 3  # 200 + 200 + 50
    assert sandbox.count(422) == 0


def test_an_unmappable_entry_is_reported_once_and_the_rest_land(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    good = s.add_time_entry(ws, user, DAY, 60)
    bad = s.add_time_entry(ws, user, DAY, 2000)  # more than a day
    src = sandbox.source()
    first = src.sync(None)
    assert [r["external_id"] for r in first.records()] == [good]
    [err] = first.errors
    assert isinstance(err, RecordValidationError) and err.details["id"] == bad
    assert "kantata.time_in_minutes" in str(err)
    again = src.sync(first.cursor, full=True)
    assert again.errors == [] and again.records() == []
    s.update_time_entry(bad, time_in_minutes=120)  # fixed in Kantata: now it lands
    fixed = src.sync(again.cursor)
    assert [r["external_id"] for r in fixed.records()] == [bad] and not fixed.errors


# --------------------------------------------------------------------------------------------------- change feed


@with_options(shuffle_events=True, duplicate_events=True)
def test_duplicated_out_of_order_events_land_each_version_once(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    s.freeze()
    ids = [s.add_time_entry(ws, user, DAY, 60 + i) for i in range(12)]
    src = sandbox.source()
    cursor = src.sync(None).cursor
    seen: Counter[str] = Counter()
    versions: dict[str, list[int]] = {}
    for round_ in range(3):
        events_before = len(s.events)
        order = ids[::-1] if round_ % 2 == 0 else ids[1::2] + ids[0::2]  # updated_at order != id order
        for n, tid in enumerate(order):
            s.advance(1)
            s.update_time_entry(tid, notes=f"round {round_}", time_in_minutes=100 + 10 * round_ + n)
            if n % 3 == 0:
                s.update_time_entry(tid, billable=bool(round_ % 2))  # a second change in the same second
        s.advance(1)
        s.approve(s.submit(ids[:4]))
        result = src.sync(cursor)
        assert result.stats["events"] == len(s.events) - events_before  # each listed twice, counted once
        assert not result.errors
        records = result.records()
        stamps = [r["updated_at"] for r in records]
        assert stamps == sorted(stamps) and len(set(stamps)) > 1  # the record's own updated_at, not feed order
        for r in records:
            seen[r["idempotency_key"]] += 1
            versions.setdefault(r["external_id"], []).append(r["version"])
        # the same feed read again from the old cursor: the same versions, no new ones
        assert {r["idempotency_key"] for r in src.sync(cursor).records()} == {r["idempotency_key"] for r in records}
        cursor = result.cursor
        assert src.sync(cursor).records() == []  # duplicates already seen: nothing
    assert seen and max(seen.values()) == 1
    assert all(v == sorted(v) and len(set(v)) == len(v) for v in versions.values())
    assert set(versions) == set(ids)


def test_a_dropped_event_is_found_by_the_window_rescan(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    a = s.add_time_entry(ws, user, DAY, 60)
    b = s.add_time_entry(ws, user, DAY, 60)
    src = sandbox.source()
    cursor = src.sync(None).cursor
    s.drop_next(1)  # the update of a never reaches the feed
    s.update_time_entry(a, time_in_minutes=90)
    s.update_time_entry(b, time_in_minutes=30)
    quick = src.sync(cursor)  # events only
    assert [r["external_id"] for r in quick.records()] == [b] and not quick.stats["rescan"]
    rescanning = sandbox.source(rescan_every=1, rescan_window_seconds=600)
    caught = rescanning.sync(quick.cursor)
    assert caught.stats["rescan"]
    assert [(r["external_id"], r["payload"]["hours"]) for r in caught.records()] == [(a, "1.5")]
    assert rescanning.sync(caught.cursor).records() == []  # re-read again: nothing new


def test_rescan_pages_with_ties_at_page_boundaries_miss_nothing(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    src = sandbox.source(rescan_every=1, rescan_window_seconds=3600)
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    s.freeze(base - dt.timedelta(seconds=30))
    cursor = src.sync(None, now=base).cursor
    s.drop_next(10_000)  # no event reaches the feed: only the re-scan can find them
    made = []
    for second, n in enumerate((150, 250, 199, 201, 3)):  # runs of one second straddling every page boundary
        s.advance(1)
        made += [s.add_time_entry(ws, user, DAY, 15 + second) for _ in range(n)]
    sandbox.app.state.calls.clear()
    result = src.sync(cursor, now=base)
    got = Counter(r["external_id"] for r in result.records())
    assert set(got) == set(made) and max(got.values()) == 1 and len(made) == 803
    pages = sandbox.count(prefix="/api/v1/time_entries")
    assert pages <= 2 * (len(made) // 200 + 2)  # keyed paging: re-reading the boundary second, never looping


def test_deletions_become_reversing_versions(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    approved, draft, quiet = (s.add_time_entry(ws, user, DAY, 120) for _ in range(3))
    s.approve(s.submit([approved]))
    x = s.add_expense(ws, user, DAY, 9900, approved=True)
    src = sandbox.source()
    first = src.sync(None)
    versions = {r["external_id"]: r["version"] for r in first.records()}
    s.delete_time_entry(approved)
    s.delete_time_entry(draft)
    s.delete_expense(x)
    s.drop_next(1)
    s.delete_time_entry(quiet)  # its event is lost
    second = src.sync(first.cursor)
    got = {r["external_id"]: r for r in second.records()}
    assert set(got) == {approved, draft, x}
    assert got[approved]["payload"]["approval_status"] == ApprovalStatus.RECALLED.value
    assert got[approved]["version"] == versions[approved] + 1 and got[approved]["kind"] == "deleted"
    assert got[draft]["payload"]["approval_status"] == ApprovalStatus.DRAFT.value
    assert got[x]["entity"] == "expense" and got[x]["payload"]["approval_status"] == "recalled"
    swept = src.sync(second.cursor, full=True)  # the periodic full sweep finds the lost deletion
    assert [(r["external_id"], r["kind"]) for r in swept.records()] == [(quiet, "deleted")]
    assert src.sync(swept.cursor, full=True).records() == []


# --------------------------------------------------------------------------------------------------- limits, auth


@with_options(rate_limit=5, rate_window=0.3)
def test_429_without_retry_after_is_waited_out_without_a_storm(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    ids = [s.add_time_entry(ws, user, DAY, 60) for _ in range(5)]
    src = sandbox.source()
    cursor = src.sync(None).cursor
    for tid in ids:
        s.update_time_entry(tid, notes="x")
    sandbox.app.state.calls.clear()
    stamps: list[tuple[float, int]] = []
    hooks = {"response": [lambda r: stamps.append((time.monotonic(), r.status_code))]}
    src.client._http.event_hooks = hooks
    result = None
    for _ in range(8):  # eight syncs back to back: far above 5 requests per 0.3 s
        result = src.sync(cursor)
        cursor = result.cursor if result.records() else cursor
    assert result is not None and not result.errors
    refused = sandbox.count(429)
    ok = sandbox.count(200)
    assert refused > 0, "the limit was never hit: the test proves nothing"
    assert refused <= ok  # no storm: at most one refusal per answered call
    after_429 = [stamps[i + 1][0] - t for i, (t, st) in enumerate(stamps[:-1]) if st == 429]
    assert after_429 and min(after_429) >= 0.05  # every refusal is followed by a pause (no Retry-After given)


@with_options(rate_limit=5, rate_window=0.3)
def test_client_side_pacing_keeps_under_the_limit(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    for _ in range(3):
        s.add_time_entry(ws, user, DAY, 60)
    src = sandbox.source(rate_limit=4, rate_window_seconds=0.3)
    cursor = src.sync(None).cursor
    for _ in range(4):
        cursor = src.sync(cursor, full=True).cursor
    assert sandbox.count(429) == 0 and sandbox.count(200) == 5 * 3  # feed, time entries, expenses per sync


@with_options(token_max_uses=3)
def test_an_expired_token_is_refreshed_mid_sync(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    for i in range(450):
        s.add_time_entry(ws, user, DAY, 10 + i % 50)
    src = sandbox.source()
    result = src.sync(None)  # feed + 3 pages of entries + expenses: the token dies after 3 calls
    assert len(result.records()) == 450 and not result.errors
    assert sandbox.count(401) >= 1 and sandbox.app.state.tokens.issued >= 2
    assert src.client.stats.tokens == sandbox.app.state.tokens.issued


@with_options(token_lifetime=1)
def test_a_token_near_expiry_is_refreshed_before_use(sandbox: Sandbox) -> None:
    ws, user = tenant(sandbox.store)
    sandbox.store.add_time_entry(ws, user, DAY, 60)
    src = sandbox.source(token_refresh_margin_seconds=5)  # lifetime 1 s < margin: every call refreshes first
    cursor = src.sync(None).cursor
    src.sync(cursor)
    assert sandbox.count(401) == 0 and sandbox.app.state.tokens.issued >= 2


# --------------------------------------------------------------------------------------------------- write-back


def test_write_back_is_idempotent_one_external_reference_per_record(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    a, b = s.add_time_entry(ws, user, DAY, 60), s.add_time_entry(ws, user, DAY, 90)
    s.approve(s.submit([a, b]))
    x = s.add_expense(ws, user, DAY, 5000, approved=True)
    inv = s.add_invoice(ws, number="K-17", time_entry_ids=[a, b])
    src = sandbox.source()
    cursor = src.sync(None).cursor
    update = InvoiceStatusUpdate(
        key="INV-US01-7", project_id=ws, legal_entity_id="US01", invoice_date=dt.date(2026, 11, 30), currency="EUR",
        total=Decimal("300.00"), erp_system="erp", erp_number="INV-US01-000007", status="posted",
        items=(("psa_kt", "time_entry", a), ("psa_kt", "time_entry", b), ("psa_kt", "expense", x),
               ("other", "time_entry", "1")))
    assert src.write_invoice_status([update]) == 1
    assert src.write_invoice_status([update]) == 0  # twice: nothing new
    refs = s.rows("external_references")
    assert len(refs) == 4  # a, b, x and the Kantata invoice, one each
    assert {(r["subject_type"], r["subject_id"]) for r in refs} == {
        ("TimeEntry", a), ("TimeEntry", b), ("Expense", x), ("Invoice", inv)}
    assert {(r["service_model_ref"], r["status"], r["external_status"]) for r in refs} == {
        ("INV-US01-000007", "success", "posted")}
    # a status change updates the same references
    assert src.write_invoice_status([dataclasses.replace(update, status="paid")]) == 1
    assert len(s.rows("external_references")) == 4
    assert {r["external_status"] for r in s.rows("external_references")} == {"paid"}
    assert src.external_references("time_entry", [a])[a][0]["service_model_ref"] == "INV-US01-000007"
    assert src.sync(cursor).records() == []  # the write-back is not a business change: no new version


def test_a_watermark_older_than_the_feed_retention_rescans_from_it(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    a = s.add_time_entry(ws, user, DAY, 60)
    src = sandbox.source(rescan_window_seconds=60)
    cursor = src.sync(None).cursor
    s.drop_next(1)  # the change's event is lost, and by the next sync the feed has aged out anyway
    s.update_time_entry(a, time_in_minutes=75)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    result = src.sync(cursor, now=later)  # rescan window alone (60 s before "later") would not reach it
    assert result.stats["feed_stale"] and result.stats["rescan"]
    assert [(r["external_id"], r["payload"]["hours"]) for r in result.records()] == [(a, "1.25")]


@with_options(events_enabled=False)
def test_without_the_events_add_on_every_sync_rescans_from_the_last_one(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    a = s.add_time_entry(ws, user, DAY, 60)
    src = sandbox.source(rescan_window_seconds=1)  # the window alone would miss what follows
    first = src.sync(None)
    assert first.stats["feed_unavailable"] and [r["external_id"] for r in first.records()] == [a]
    s.update_time_entry(a, time_in_minutes=30)
    b = s.add_time_entry(ws, user, DAY, 45)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    second = src.sync(first.cursor, now=later)
    assert second.stats["rescan"] and not second.stats["full"]
    assert sorted(r["external_id"] for r in second.records()) == sorted([a, b])
    third = src.sync(second.cursor, now=later + dt.timedelta(seconds=30))
    assert third.records() == []
    # the window does not grow: the third re-scan starts at the second sync's start, minus the overlap
    assert dt.datetime.fromisoformat(third.stats["rescan_after"]) == later - dt.timedelta(seconds=300)


def test_write_back_skips_a_deleted_record_and_raises_only_when_nothing_could_be_written(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    a, gone = s.add_time_entry(ws, user, DAY, 60), s.add_time_entry(ws, user, DAY, 30)
    src = sandbox.source()
    s.delete_time_entry(gone)
    update = InvoiceStatusUpdate(
        key="INV-US01-8", project_id=ws, legal_entity_id="US01", invoice_date=dt.date(2026, 11, 30), currency="EUR",
        total=Decimal("10.00"), erp_system="erp", erp_number=None, status="submitted",
        items=(("psa_kt", "time_entry", a), ("psa_kt", "time_entry", gone)))
    assert src.write_invoice_status([update]) == 1
    [failure] = src.write_failures
    assert isinstance(failure, PermanentError) and failure.details["id"] == gone
    [ref] = s.rows("external_references")
    assert (ref["subject_id"], ref["service_model_ref"], ref["status"]) == (a, "INV-US01-8", "pending")
    only_gone = dataclasses.replace(update, items=(("psa_kt", "time_entry", gone),))
    with pytest.raises(PermanentError, match=f"time_entry {gone} is not in Kantata"):
        src.write_invoice_status([only_gone])


@with_options(seed="demo")
def test_the_demo_tenant_syncs_and_the_sandbox_is_listed(sandbox: Sandbox) -> None:
    from ledgerbridge.testing.sandbox import available_sandboxes

    assert "kantata" in available_sandboxes()
    assert "demo-client" in sandbox.app.state.banner
    records = sandbox.source().sync(None).records()
    statuses = Counter((r["entity"], r["payload"]["approval_status"]) for r in records)
    assert statuses == {("time_entry", "approved"): 4, ("time_entry", "draft"): 2, ("expense", "approved"): 1}


@with_options(ignore_updated_after=True)
def test_an_ignored_updated_after_filter_is_detected_and_the_window_read_newest_first(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    s.freeze(base - dt.timedelta(hours=3))
    old = [s.add_time_entry(ws, user, DAY, 30) for _ in range(1000)]  # history, outside the window
    s.freeze(base - dt.timedelta(seconds=20))
    src = sandbox.source(rescan_every=1, rescan_window_seconds=600)
    cursor = src.sync(None, now=base).cursor
    s.drop_next(10_000)
    recent = []
    for _ in range(5):  # 250 recent changes, 50 per second: ties across the 200-row pages
        s.advance(1)
        recent += [s.add_time_entry(ws, user, DAY, 45) for _ in range(50)]
    s.update_time_entry(old[0], time_in_minutes=31)
    recent.append(old[0])
    sandbox.app.state.calls.clear()
    result = src.sync(cursor, now=base)
    assert result.stats["updated_after_ignored"]
    assert sorted(r["external_id"] for r in result.records()) == sorted(recent)
    # newest first, stopping once past the window: not the 1,250 rows' 7 pages twice over
    assert sandbox.count(prefix="/api/v1/time_entries") <= 1 + 2


@with_options(approval_touches_entries=False)
def test_an_approval_seen_only_on_the_submission_still_versions_its_entries(sandbox: Sandbox) -> None:
    s = sandbox.store
    ws, user = tenant(s)
    ids = [s.add_time_entry(ws, user, DAY, 60) for _ in range(3)]
    sub = s.submit(ids)
    src = sandbox.source()
    first = src.sync(None)
    before = {r["external_id"]: r["version"] for r in first.records()}
    stamps = {i: s.get("time_entries", i)["updated_at"] for i in ids}
    s.approve(sub)
    assert {i: s.get("time_entries", i)["updated_at"] for i in ids} == stamps  # the entries did not move
    result = src.sync(first.cursor)
    got = {r["external_id"]: r for r in result.records()}
    assert set(got) == set(ids)
    assert all(r["payload"]["approval_status"] == "approved" and r["version"] == before[i] + 1
               for i, r in got.items())
