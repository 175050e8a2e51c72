"""A small workflow that proves crash recovery; used by the tests and by the demo's kill test.

``two_step(effects, key, hold_dir)`` runs:

1. step ``crashdemo.effect`` for ``step1`` — adds 1 to the side-effect counter ``(key, "step1")`` in the SQLite
   file ``effects`` (the stand-in for an external write keyed by an idempotency key);
2. step ``crashdemo.hold`` — writes ``<hold_dir>/holding-<n>`` and waits until ``<hold_dir>/release`` exists (the
   moment to kill the process: step 1 is checkpointed, step 2 is in flight);
3. step ``crashdemo.effect`` for ``step2``.

Run it as a separate process::

    python -m ledgerbridge.runtime.crashdemo start   --db sqlite:///x.sqlite --effects e.sqlite --key K --hold-dir d
    kill -9 <pid>                                       # while it holds
    touch d/release
    python -m ledgerbridge.runtime.crashdemo recover --db sqlite:///x.sqlite --key K

``recover`` launches the runtime with the same executor id and application version (recovery happens during
launch), waits for the workflow and prints its result and the side-effect counts as JSON. Expected: step 1 ran
once, the held step ran twice (at-least-once per step), step 2 ran once.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from ledgerbridge.runtime import core as rt
from ledgerbridge.runtime.settings import DEFAULT_APPLICATION_VERSION, RuntimeSettings


def workflow_id_for(key: str) -> str:
    return f"crashdemo:{key}"


def read_effects(effects: str, key: str) -> dict[str, int]:
    """Side-effect counters for ``key``: ``{"step1": n, "step2": m}`` (missing steps absent)."""
    if not Path(effects).exists():
        return {}
    with sqlite3.connect(effects) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, step TEXT, runs INTEGER, PRIMARY KEY(key, step))")
        rows = conn.execute("SELECT step, runs FROM effects WHERE key = ?", (key,)).fetchall()
    return {step: runs for step, runs in rows}


@rt.step("crashdemo.effect")
def effect(effects: str, key: str, step_name: str) -> int:
    with sqlite3.connect(effects, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, step TEXT, runs INTEGER, PRIMARY KEY(key, step))")
        conn.execute(
            "INSERT INTO effects (key, step, runs) VALUES (?, ?, 1) "
            "ON CONFLICT (key, step) DO UPDATE SET runs = runs + 1",
            (key, step_name),
        )
        (runs,) = conn.execute("SELECT runs FROM effects WHERE key = ? AND step = ?", (key, step_name)).fetchone()
    return int(runs)


@rt.step("crashdemo.hold")
def hold(hold_dir: str, timeout_seconds: float) -> int:
    folder = Path(hold_dir)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("holding-*"))) + 1
    (folder / f"holding-{n}").write_text(str(time.time()))
    deadline = time.monotonic() + timeout_seconds
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"crashdemo.hold: {folder / 'release'} did not appear within {timeout_seconds} s")
        time.sleep(0.02)
    return n


@rt.workflow("crashdemo.two_step")
def two_step(effects: str, key: str, hold_dir: str, hold_timeout_seconds: float = 60.0) -> dict[str, Any]:
    step1 = effect(effects, key, "step1")
    held = hold(hold_dir, hold_timeout_seconds)
    step2 = effect(effects, key, "step2")
    return {"key": key, "step1_runs_seen": step1, "hold_run": held, "step2_runs_seen": step2}


def _settings(args: argparse.Namespace) -> RuntimeSettings:
    return RuntimeSettings(
        system_database_url=args.db,
        executor_id=args.executor_id,
        application_version=args.app_version,
        notification_polling_interval_sec=0.01,
        queue_polling_interval_sec=0.05,
        log_level="WARNING",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledgerbridge.runtime.crashdemo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "recover"])
    parser.add_argument("--db", required=True, help="system database URL (sqlite:///... or postgresql://...)")
    parser.add_argument("--key", required=True, help="idempotency key of the demo item")
    parser.add_argument("--effects", help="SQLite file counting side effects (start)")
    parser.add_argument("--hold-dir", help="folder for the holding-* markers and the release file (start)")
    parser.add_argument("--executor-id", default="local")
    parser.add_argument("--app-version", default=DEFAULT_APPLICATION_VERSION)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the workflow result")
    args = parser.parse_args(argv)

    wf_id = workflow_id_for(args.key)
    rt.Runtime.launch(_settings(args))
    try:
        if args.command == "start":
            if not args.effects or not args.hold_dir:
                parser.error("start needs --effects and --hold-dir")
            rt.start(two_step, args.effects, args.key, args.hold_dir, workflow_id=wf_id)
        try:
            value = rt.result(wf_id, timeout_seconds=args.timeout)
        except TimeoutError:
            status = rt.get_workflow(wf_id, with_data=False)
            print(json.dumps({"workflow_id": wf_id, "finished": False,
                              "status": status["status"] if status else None}))
            return 3
        status = rt.get_workflow(wf_id, with_data=False)
        print(json.dumps({"workflow_id": wf_id, "finished": True, "status": status["status"] if status else None,
                          "result": value}))
        return 0
    finally:
        rt.Runtime.shutdown()


if __name__ == "__main__":
    sys.exit(main())
