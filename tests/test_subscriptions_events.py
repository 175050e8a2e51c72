"""Subscriptions: events of one key strictly in order under concurrency (other keys interleave), duplicate deliveries
run once, and a contract-violating event is dead-lettered with its validation errors (real runtime, loopback HTTP)."""

from __future__ import annotations

from pathlib import Path

from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import set_current
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import dead_letters
from subscriptions_support import approved, context_with, loopback_server, time_approved

KEYS = ("P-A", "P-B", "P-C")
PER_KEY = 4


def test_events_of_one_key_run_strictly_in_order_while_keys_interleave(tmp_path: Path) -> None:
    with loopback_server(delay=0.1) as (url, rec):
        sub = {"name": "timefeed", "event": "time_entry.approved", "key": "entry.project_id", "actions": [
            {"name": "push", "kind": "webhook", "options": {"url": f"{url}/slow"}}]}
        ctx = context_with(tmp_path / "wd", [sub])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                # interleaved arrival: A1 B1 C1 A2 B2 C2 ... (two publish calls: order holds across calls too)
                events = [time_approved(k, seq) for seq in range(1, PER_KEY + 1) for k in KEYS]
                half = len(events) // 2
                first = subs.publish(ctx, events[:half])
                second = subs.publish(ctx, events[half:])
                states = subs.wait(first.workflow_ids + second.workflow_ids, timeout_seconds=90)
        finally:
            set_current(None)
        calls = rec.paths("/slow")
    assert all(s["status"] == "completed" for s in states)
    assert len(calls) == len(KEYS) * PER_KEY
    for key in KEYS:
        seqs = [int(c["body"]["event"]["entry"]["description"]) for c in calls if c["body"]["key"] == key]
        assert seqs == list(range(1, PER_KEY + 1)), f"{key} out of order: {seqs}"
        assert rec.max_in_flight[key] == 1, f"two events of {key} ran at once"
    assert rec.max_total >= 2, "different keys should run concurrently"
    order = [c["body"]["key"] for c in calls]
    assert order != sorted(order), "keys interleave rather than run one after another"


def test_a_duplicate_delivery_runs_the_chain_once(tmp_path: Path) -> None:
    with loopback_server() as (url, rec):
        sub = {"name": "notify", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "hook", "kind": "webhook", "options": {"url": f"{url}/ok"}}]}
        ctx = context_with(tmp_path / "wd", [sub])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                a = subs.publish(ctx, [approved("P-1"), approved("P-1")])
                subs.wait(a.workflow_ids)
                b = subs.publish(ctx, [approved("P-1")])
                subs.wait(b.workflow_ids)
        finally:
            set_current(None)
        assert (a.enqueued, a.duplicates, b.enqueued, b.duplicates) == (1, 1, 0, 1)
        assert a.workflow_ids == b.workflow_ids
        assert len(rec.paths("/ok")) == 1


def test_contract_violating_event_is_dead_lettered_with_its_validation_errors(tmp_path: Path) -> None:
    with loopback_server() as (url, rec):
        sub = {"name": "notify", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "hook", "kind": "webhook", "options": {"url": f"{url}/ok"}}]}
        ctx = context_with(tmp_path / "wd", [sub])
        bad = approved("P-BAD")
        del bad["project"]["customer_id"]
        bad["project"]["currency"] = "usd$"
        unknown = {"event_type": "project.exploded", "event_id": "ev-x", "source_system": "crm"}
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                res = subs.publish(ctx, [bad, approved("P-OK"), unknown])
                states = subs.wait(res.workflow_ids)
        finally:
            set_current(None)
        assert [s["key"] for s in states] == ["P-OK"], "the valid event in the same batch went through"
        assert [c["body"]["key"] for c in rec.paths("/ok")] == ["P-OK"]
    assert len(res.dead_lettered) == 2
    with ctx.engine.connect() as conn:
        letters = {lt.item_key: lt for lt in dead_letters.list_letters(conn, flow=subs.FLOW)}
    letter = letters["event:ev-P-BAD"]
    assert (letter.queue, letter.error_kind, letter.error_code) == ("operational", "validation", "event.contract")
    locs = {tuple(e["loc"]) for e in letter.payload["errors"]}
    assert ("project.approved", "project", "customer_id") in locs
    assert any(loc[-1] == "currency" for loc in locs)
    assert "project.approved.project.customer_id: Field required" in letter.error_text
    assert letter.payload["event"]["project"]["id"] == "P-BAD", "the original payload is kept"
    other = letters["event:ev-x"]
    assert "project.exploded" in other.error_text or "does not match any of the expected tags" in other.error_text
