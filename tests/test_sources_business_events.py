"""A polled source's business events (a CRM closed-won as project.approved) start the matching subscription chains
when the source is synced: once, even when the same events are read again (the cursor lost, a crash before it was
stored); without a subscription they are counted, not silently dropped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerbridge.flows.context import set_current
from ledgerbridge.flows.sources import sync_source
from ledgerbridge.runtime.testing import launched_for_test
from subscriptions_support import approved, context_with, loopback_server


@dataclass
class _Result:
    business_events: list[dict[str, Any]]
    cursor: dict[str, Any] = field(default_factory=lambda: {"n": 1})
    errors: list[Any] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        return []


class _Crm:
    """A source whose sync reports business events only (as the Salesforce CRM profile does)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def sync(self, cursor: Any, *, full: bool | None = None) -> _Result:
        return _Result(list(self.events))


def test_business_events_start_their_chains_once(tmp_path: Path) -> None:
    with loopback_server() as (url, rec):
        sub = {"name": "onboard", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "hook", "kind": "webhook", "options": {"url": f"{url}/ok"}}]}
        ctx = context_with(tmp_path / "wd", [sub])
        ctx._connectors["crm"] = _Crm([approved("P-1"), approved("P-2")])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                first = sync_source(ctx, "crm")
                again = sync_source(ctx, "crm")  # the same events read again: nothing runs twice
                deadline = time.monotonic() + 60
                while len(rec.paths("/ok")) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.5)  # a second run of a chain would have called by now
        finally:
            set_current(None)
    assert (first.business_events, first.chains_started) == (2, 2)
    assert (again.business_events, again.chains_started) == (2, 0)
    assert sorted(c["body"]["key"] for c in rec.paths("/ok")) == ["P-1", "P-2"]


def test_without_a_subscription_events_are_counted(tmp_path: Path) -> None:
    ctx = context_with(tmp_path / "wd", [])
    ctx._connectors["crm"] = _Crm([approved("P-1")])
    out = sync_source(ctx, "crm")
    assert (out.business_events, out.chains_started) == (1, 0)
