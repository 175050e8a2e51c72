"""Benchmark the Redmine source against a real Redmine 5.0: read rate, and HTTP requests of a full vs an
incremental sync of N entries.

    .venv/bin/python bench/bench_redmine.py                 # N=2,000 (seeded with rails runner), own server
    .venv/bin/python bench/bench_redmine.py --entries 10000
    .venv/bin/python bench/bench_redmine.py --api-creates 100   # also time N creates through the REST API

Starts a private Redmine instance with ledgerbridge.testing.redmine_server (destroyed at the end). Entries
are seeded into a new project with ``scripts/redmine seed`` (one rails runner transaction: the API creates only
~55/s), spread over the last ``--days`` days (default two years), so the incremental sync's recent range holds a
small part of them. Other entries already on the server are included in the counts (printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import time
import uuid
from typing import Any

from ledgerbridge.connectors.redmine import RedmineSource
from ledgerbridge.testing.redmine_server import SCRIPT, RedmineSettings, running_redmine


def seed(instance: str, project: str, n: int, days: int) -> None:
    out = subprocess.run([str(SCRIPT), "seed", "--instance", instance, "--project", project, "--entries", str(n),
                          "--days", str(days)], capture_output=True,
                         text=True, check=False, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"seed failed: {out.stderr}")


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t


def run(settings: RedmineSettings, n: int, days: int, api_creates: int, edits: int, deletes: int) -> None:
    api = settings.client()
    ident = f"bench{uuid.uuid4().hex[:8]}"
    project = api.create_project(ident, ident)
    (_, seconds) = timed(lambda: seed(settings.instance, ident, n, days))
    print(f"seeded {n} entries over the last {days} days with rails runner in {seconds:.1f} s")
    if api_creates:
        day = dt.date.today().isoformat()
        (_, seconds) = timed(lambda: [api.create_time_entry({"project_id": project["id"], "hours": "1",
                                                             "spent_on": day}) for _ in range(api_creates)])
        print(f"REST creates: {api_creates} in {seconds:.2f} s = {api_creates / seconds:.0f} creates/s")

    source = RedmineSource.from_options("bench", settings.options(), settings.api_key)
    total = api.get("/time_entries.json", {"limit": 1})["total_count"]

    raw, seconds = timed(lambda: source.client.time_entries())
    print(f"list all: {len(raw)} entries (total_count {total}) in {seconds:.2f} s = {len(raw) / seconds:.0f} "
          "entries/s read")

    full, seconds = timed(lambda: source.sync(None))
    st = full.stats
    print(f"full sync: {st['listed']} listed, {len(full.events)} events, {st['requests']} HTTP requests, "
          f"{seconds:.2f} s = {st['listed'] / seconds:.0f} entries/s; "
          f"cursor {len(json.dumps(full.cursor)) / 1024:.0f} KiB")

    quiet, seconds = timed(lambda: source.sync(full.cursor, full=False))
    st = quiet.stats
    print(f"incremental sync, no change: {st['listed']} listed in {len(st['scans'])} ranges (recent + "
          f"{source.sync_options.rotate_windows} rotating months), {len(quiet.events)} events, {st['requests']} "
          f"HTTP requests, {seconds:.2f} s")
    recent_only = RedmineSource.from_options("bench", settings.options(rotate_windows=0), settings.api_key)
    res, seconds = timed(lambda: recent_only.sync(full.cursor, full=False))
    print(f"incremental sync, recent range only (rotate_windows=0): {res.stats['listed']} listed, "
          f"{res.stats['requests']} HTTP requests, {seconds:.2f} s")
    recent_only.close()

    mine = [r for r in raw if r["project"]["id"] == project["id"]]
    recent = sorted((r for r in mine if r["spent_on"] >= (dt.date.today() - dt.timedelta(days=20)).isoformat()),
                    key=lambda r: r["id"])
    for r in recent[:edits]:
        api.update_time_entry(r["id"], {"hours": "2.5", "comments": "edited"})
    for r in recent[edits:edits + deletes]:
        api.delete_time_entry(r["id"])
    changed, seconds = timed(lambda: source.sync(quiet.cursor, full=False))
    st = changed.stats
    by_kind: dict[str, int] = {}
    for e in changed.events:
        by_kind[e.kind] = by_kind.get(e.kind, 0) + 1
    print(f"incremental sync after {edits} edits + {deletes} deletions: events {by_kind}, {st['requests']} HTTP "
          f"requests, {seconds:.2f} s")
    again, seconds = timed(lambda: source.sync(changed.cursor, full=True))
    print(f"full sync afterwards: {len(again.events)} events (nothing twice), {again.stats['requests']} HTTP "
          f"requests, {seconds:.2f} s")
    source.close()
    api.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=2000)
    p.add_argument("--days", type=int, default=730, help="spread the seeded entries over this many past days")
    p.add_argument("--api-creates", type=int, default=0, help="also time this many creates through the REST API")
    p.add_argument("--edits", type=int, default=20)
    p.add_argument("--deletes", type=int, default=5)
    args = p.parse_args()
    with running_redmine() as settings:
        run(settings, args.entries, args.days, args.api_creates, args.edits, args.deletes)


if __name__ == "__main__":
    main()
