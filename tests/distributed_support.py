"""Helpers for the distributed tests: a fresh PostgreSQL database per test, a configuration file pointing the
store and the runtime at it, and worker subprocesses (``ledgerbridge worker --executor-id ...``)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.flows.main_job import demo_config

from conftest import PG_HOST, PG_PORT, PG_USER, requires_service

NATS_HOST = os.environ.get("LB_TEST_NATS_HOST", "127.0.0.1")
NATS_PORT = int(os.environ.get("LB_TEST_NATS_PORT", "4222"))


@contextmanager
def fresh_database(prefix: str = "lb_dist") -> Iterator[str]:
    """A new PostgreSQL database (store + DBOS system schema share it), dropped afterwards; yields its URL."""
    requires_service(PG_HOST, PG_PORT, "PostgreSQL")
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dist_config(workdir: Path, db_url: str, *, systems: dict[str, dict[str, Any]] | None = None,
                bus: dict[str, Any] | None = None) -> tuple[LedgerbridgeConfig, Path]:
    """The demo configuration of ``workdir`` on PostgreSQL, written to ``workdir/ledgerbridge.yaml``.
    ``systems`` updates systems' fields (e.g. limits), ``bus`` adds a bus section."""
    cfg = demo_config(workdir)
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["store"]["url"] = db_url
    data["runtime"]["system_database_url"] = db_url
    data["runtime"]["log_level"] = "WARNING"
    for name, upd in (systems or {}).items():
        data["systems"][name].update(upd)
    if bus is not None:
        data["bus"] = bus
    path = workdir / "ledgerbridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    from ledgerbridge.config import load_config

    return load_config(path), path


class WorkerProc:
    """``ledgerbridge worker`` as a subprocess; :meth:`wait_ready` blocks until it prints its ready line."""

    def __init__(self, executor_id: str, config: Path, *, poll: float = 0.1, bus: bool = False,
                 log_dir: Path | None = None) -> None:
        self.executor_id = executor_id
        self.config = config
        self.poll = poll
        self.bus = bus
        self.log_dir = log_dir or config.parent
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self) -> WorkerProc:
        self.starts += 1
        args = [sys.executable, "-m", "ledgerbridge.cli", "worker", "--executor-id", self.executor_id,
                "--config", str(self.config), "--poll-interval", str(self.poll), "--grace", "10"]
        if not self.bus:
            args.append("--no-bus")
        self.stderr_path = self.log_dir / f"{self.executor_id}.{self.starts}.stderr"
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr_path.open("w"), text=True,
                                     start_new_session=True)
        self._lines = queue.Queue()
        out = self.proc.stdout
        assert out is not None
        threading.Thread(target=lambda: [self._lines.put(line) for line in out], daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"worker {self.executor_id} exited {self.proc.returncode}: {self.stderr()}") from None
                continue
            if "ready" in line:
                return self
        raise AssertionError(f"worker {self.executor_id} not ready after {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-3000:] if self.stderr_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful stop); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"worker {self.executor_id} ignored SIGTERM for {timeout} s") from None


@contextmanager
def workers(config: Path, ids: tuple[str, ...] = ("w1", "w2"), **kw: Any) -> Iterator[dict[str, WorkerProc]]:
    """Start workers together (DBOS serialises its schema migration with an advisory lock) and wait until each is
    ready."""
    procs: dict[str, WorkerProc] = {}
    try:
        for i in ids:
            procs[i] = WorkerProc(i, config, **kw).start()
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            if p.proc is not None and p.proc.poll() is None:
                p.terminate()
