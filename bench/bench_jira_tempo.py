"""Benchmark the Jira Cloud + Tempo source against its sandboxes (real loopback HTTP, in-process servers).

    .venv/bin/python bench/bench_jira_tempo.py                  # 10,000 approved worklogs, 25 users
    .venv/bin/python bench/bench_jira_tempo.py --worklogs 2000 --rate-limit 20

Prints (no asserts):

1. a first sync of N approved worklogs: worklogs read per second and API calls per 10k entries (Jira + Tempo);
2. an incremental sync with nothing changed and one with 1% edited: API calls;
3. the invoice write-back of 500 worklogs (worklog properties): documents written per second, calls per document;
4. rate limits, both sandboxes at ``--rate-limit`` requests/s: a sync with the client reacting to 429s only
   (Retry-After pauses every caller) and one pacing itself (options.rate_limit, 80% headroom): achieved request
   rate / allowed rate and the 429 share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.jira_tempo import JiraTempoSource
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import jira as jira_sandbox
from ledgerbridge.testing.sandboxes import tempo as tempo_sandbox


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()) - 7200)

    def __call__(self) -> float:
        return self.now


def build(n: int, users: int, rate_limit: int | None) -> tuple[Any, Any, Clock, list[str]]:
    clock = Clock()
    opts = {"rate_limit": rate_limit, "rate_window": 1.0} if rate_limit else {}
    japp, tapp = jira_sandbox.create_app(**opts), tempo_sandbox.create_app(**opts)
    js, ts = japp.state.store, tapp.state.store
    js.clock = ts.clock = clock
    pid = js.add_project("BENCH", "Bench")
    issues = [js.add_issue(pid, summary=f"T{i}") for i in range(50)]
    accounts = [js.add_user(f"557058:{i:04d}", f"U{i}") for i in range(users)]
    today = dt.datetime.fromtimestamp(clock(), dt.UTC).date()
    ids = []
    for i in range(n):
        day = (today - dt.timedelta(days=1 + i % 25)).isoformat()
        wid = js.add_worklog(issues[i % 50], accounts[i % users], day, 900 * (1 + i % 16), f"w{i}")
        ts.add_worklog(wid, issues[i % 50], accounts[i % users], day, 900 * (1 + i % 16))
        ids.append(wid)
        if i % 200 == 0:
            clock.now += 1
    for a in accounts:
        for back in (1, 25):
            ts.set_approval(a, today - dt.timedelta(days=back), "APPROVED")
    clock.now += 120
    return japp, tapp, clock, ids


def source(jurl: str, turl: str, clock: Clock, **extra: Any) -> JiraTempoSource:
    options = {"url": jurl, "email": "ada@example.com", "tempo": {"url": turl}, **extra}
    keys = {"api_token": "jira-api-token", "tempo_token": "tempo-api-token"}
    return JiraTempoSource.from_options("bench", options, keys.get, clock=clock)


def calls(japp: Any, tapp: Any) -> int:
    return len(japp.state.calls.calls) + len(tapp.state.calls.calls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worklogs", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=25)
    ap.add_argument("--rate-limit", type=int, default=10, help="sandbox requests/s for part 4")
    ap.add_argument("--rate-worklogs", type=int, default=1500, help="worklogs in part 4")
    args = ap.parse_args()
    n = args.worklogs

    japp, tapp, clock, ids = build(n, args.users, None)
    with serve_in_thread(japp) as jurl, serve_in_thread(tapp) as turl:
        src = source(jurl, turl, clock)
        t = time.perf_counter()
        first = src.sync(None)
        wall = time.perf_counter() - t
        approved = sum(1 for e in first.events if e.entry.approval_status.value == "approved")
        c1 = calls(japp, tapp)
        print(f"1. first sync: {len(first.events)} worklogs ({approved} approved) in {wall:.2f} s = "
              f"{len(first.events) / wall:,.0f} worklogs/s; {c1} API calls = "
              f"{c1 * 10_000 / max(approved, 1):.1f} per 10k approved entries")
        clock.now += 120
        before = calls(japp, tapp)
        second = src.sync(first.cursor)
        print(f"2. incremental, nothing changed: {len(second.events)} events, {calls(japp, tapp) - before} calls")
        for wid in ids[:: 100]:
            japp.state.store.update_worklog(wid, seconds=1800)
        clock.now += 120
        before = calls(japp, tapp)
        t = time.perf_counter()
        third = src.sync(second.cursor)
        print(f"   incremental, 1% edited: {len(third.events)} events, {calls(japp, tapp) - before} calls, "
              f"{time.perf_counter() - t:.2f} s; cursor {len(str(third.cursor)) / 1e6:.1f} MB as text")
        items = tuple(("bench", "time_entry", w) for w in ids[:500])
        update = InvoiceStatusUpdate(key="K", project_id="p", legal_entity_id="US01", invoice_date=dt.date.today(),
                                     currency="USD", total=Decimal("1.00"), erp_system="erp",
                                     erp_number="INV-1", status="posted", items=items)
        before = calls(japp, tapp)
        t = time.perf_counter()
        src.write_invoice_status([update])
        wall = time.perf_counter() - t
        used = calls(japp, tapp) - before
        print(f"3. write-back of {len(items)} worklogs: {len(items) / wall:,.0f} documents/s, "
              f"{used / len(items):.2f} calls per document; again (idempotent): ", end="")
        before = calls(japp, tapp)
        src.write_invoice_status([update])
        print(f"{calls(japp, tapp) - before} calls, 0 writes")
        src.close()

    limit = args.rate_limit
    for label, extra in (("reacting to 429 only", {}),
                         ("pacing at 80% of the limit", {"rate_limit": limit, "headroom": 0.8})):
        japp, tapp, clock, _ = build(args.rate_worklogs, args.users, limit)
        japp.state.options["page_size"] = 100  # more feed pages: more calls to pace
        with serve_in_thread(japp) as jurl, serve_in_thread(tapp) as turl:
            src = source(jurl, turl, clock, **extra)
            t = time.perf_counter()
            src.sync(None)
            wall = time.perf_counter() - t
            for name, app in (("jira", japp), ("tempo", tapp)):
                st = app.state.limits.stats()
                print(f"4. {label}, {name}: {st['accepted']} accepted in {wall:.1f} s = "
                      f"{st['accepted'] / wall:.2f}/s of {limit}/s allowed ({st['accepted'] / wall / limit:.0%}); "
                      f"429 share {st['refused_share']:.1%} ({st['refused']} refused)")
            src.close()


if __name__ == "__main__":
    main()
