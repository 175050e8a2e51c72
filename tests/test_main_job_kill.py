"""Crash safety, proven: the main job is SIGKILLed at random points and re-run; the ledger ends byte-identical to
an uninterrupted run (same journals, none twice, all balanced per beancount's loader) and the store holds each
journal once with nothing left unposted.

CI runs 20 kill points (``LB_KILL_POINTS``); the full version is ``LB_KILL_POINTS=100 pytest
tests/test_main_job_kill.py`` (or ``make chaos``). ``LB_KILL_SEED`` picks the schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from ledgerbridge.store import audit, create_store_engine
from ledgerbridge.store.schema import posted_journals, staging_lines

from flows_support import ledger_text

ARGS = ["--employees", "6", "--months", "2", "--seed", "5"]


def demo(workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ledgerbridge.cli", "demo", "run", "--workdir", str(workdir),
                             "--json", *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def run_to_end(workdir: Path) -> float:
    t = time.monotonic()
    p = demo(workdir)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - t


def check_same(workdir: Path, reference: Path, expected: dict[str, bytes]) -> None:
    got = ledger_text(workdir)
    if got != expected:
        import difflib

        diffs = []
        for name in sorted(set(got) | set(expected)):
            a = expected.get(name, b"").decode().splitlines()
            b = got.get(name, b"").decode().splitlines()
            if a != b:
                diffs += list(difflib.unified_diff(a, b, f"reference/{name}", f"{workdir.name}/{name}", lineterm=""))
        raise AssertionError(f"ledger in {workdir.name} differs from the uninterrupted run:\n" + "\n".join(diffs[:200]))
    engine = create_store_engine(f"sqlite:///{workdir / 'state.sqlite'}")
    ref_engine = create_store_engine(f"sqlite:///{reference / 'state.sqlite'}")
    with engine.connect() as conn, ref_engine.connect() as ref:
        ids = [r[0] for r in conn.execute(sa.select(posted_journals.c.id))]
        left = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.status != "posted")).scalar_one()
        assert audit.verify(conn).ok
        assert sorted(ids) == sorted(r[0] for r in ref.execute(sa.select(posted_journals.c.id)))
    engine.dispose()
    ref_engine.dispose()
    assert ids and max(Counter(ids).values()) == 1 and left == 0


def test_sigkill_at_random_points_then_rerun_gives_the_same_ledger(tmp_path: Path) -> None:
    """Kills are counted only when they really interrupt a run. Each chain of kills works on one workdir until a
    run finds nothing left to do; that chain's ledger is then compared with the uninterrupted run's, and a new
    chain starts from scratch, until ``LB_KILL_POINTS`` real kills have happened."""
    points = int(os.environ.get("LB_KILL_POINTS", "20"))
    rng = random.Random(int(os.environ.get("LB_KILL_SEED", "20261130")))
    reference = tmp_path / "reference"
    full = run_to_end(reference)
    expected = ledger_text(reference)
    assert expected

    kills: list[float] = []
    chains = 0
    workdir = tmp_path / f"chain{chains}"
    while len(kills) < points:
        delay = round(rng.uniform(0.3, full), 2)
        p = demo(workdir)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            kills.append(delay)
            continue
        assert p.returncode == 0, p.stderr.read().decode()[-3000:] if p.stderr else ""
        check_same(workdir, reference, expected)  # this chain ran to the end between kills
        chains += 1
        workdir = tmp_path / f"chain{chains}"
    run_to_end(workdir)
    check_same(workdir, reference, expected)
    print(f"{len(kills)} SIGKILLs over {chains + 1} chain(s) of a {full:.1f} s job, at {kills}")
