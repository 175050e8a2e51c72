"""Crash recovery: a workflow process is SIGKILLed after step 1 committed; a relaunch with the same executor id and
application version finishes it without re-running step 1. A relaunch under another version does not touch it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledgerbridge.runtime.crashdemo import read_effects

DEMO = [sys.executable, "-m", "ledgerbridge.runtime.crashdemo"]


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _run(args: list[str], timeout: float = 60) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(DEMO + args, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from crashdemo {args}: rc={proc.returncode}\nstdout={proc.stdout}\nstderr={proc.stderr}"
    return json.loads(lines[-1])


def test_sigkill_mid_workflow_then_relaunch_completes_without_rerunning_step1(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/system.sqlite"
    effects = str(tmp_path / "effects.sqlite")
    hold_dir = tmp_path / "hold"
    key = "TE-1001@2"

    worker = subprocess.Popen(
        [*DEMO, "start", "--db", db, "--effects", effects, "--key", key, "--hold-dir", str(hold_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # step 2 has started, so step 1's checkpoint is committed
        _wait_for(lambda: (hold_dir / "holding-1").exists() or worker.poll() is not None, 30, "step 2 to start")
        assert worker.poll() is None, f"worker exited early: {worker.communicate()}"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert read_effects(effects, key) == {"step1": 1}, "step 1 ran once and step 2's effect never ran"

    (hold_dir / "release").write_text("go")

    # A relaunch under another application version must leave the workflow alone (recovery needs a version match).
    other = _run(["recover", "--db", db, "--key", key, "--app-version", "0.0.0+other", "--timeout", "1.0"])
    assert other["finished"] is False and other["status"] == "PENDING", other
    assert read_effects(effects, key) == {"step1": 1}
    assert not (hold_dir / "holding-2").exists()

    # Same executor id and version: recovered during launch and finished.
    done = _run(["recover", "--db", db, "--key", key])
    assert done["finished"] is True and done["status"] == "SUCCESS", done
    result = done["result"]
    assert result["key"] == key
    assert result["step1_runs_seen"] == 1, "step 1's recorded output is replayed, not re-executed"
    assert result["hold_run"] == 2, "the step in flight at the kill runs again (at-least-once per step)"
    assert read_effects(effects, key) == {"step1": 1, "step2": 1}
