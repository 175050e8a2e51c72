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

ARGS = ["--employees", "6", "--months", "3", "--seed", "5"]


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


def test_sigkill_at_random_points_then_rerun_gives_the_same_ledger(tmp_path: Path) -> None:
    points = int(os.environ.get("LB_KILL_POINTS", "20"))
    rng = random.Random(int(os.environ.get("LB_KILL_SEED", "20261130")))
    reference = tmp_path / "reference"
    full = run_to_end(reference)
    expected = ledger_text(reference)
    assert expected

    crashed = tmp_path / "crashed"
    schedule = sorted(round(rng.uniform(0.2, full), 2) for _ in range(points))
    rng.shuffle(schedule)
    finished_early = 0
    for delay in schedule:
        p = demo(crashed)
        try:
            p.wait(timeout=delay)
            finished_early += 1  # nothing left to do: the job had already completed
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    run_to_end(crashed)

    assert ledger_text(crashed) == expected, f"ledger differs after kills at {schedule}"
    engine = create_store_engine(f"sqlite:///{crashed / 'state.sqlite'}")
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(posted_journals.c.id))]
        left = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.status != "posted")).scalar_one()
        assert audit.verify(conn).ok
    engine.dispose()
    assert ids and max(Counter(ids).values()) == 1 and left == 0
    ref_engine = create_store_engine(f"sqlite:///{reference / 'state.sqlite'}")
    with ref_engine.connect() as conn:
        assert sorted(ids) == sorted(r[0] for r in conn.execute(sa.select(posted_journals.c.id)))
    ref_engine.dispose()
    print(f"{points} kill points over {full:.1f} s runs ({finished_early} runs had nothing left), schedule {schedule}")
