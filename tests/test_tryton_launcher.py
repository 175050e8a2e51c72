"""The Tryton launcher and scripts/tryton: an unreachable package index makes the live tests skip with the reason
(and fail under CI=true); the command line copies the template, starts a server that answers, stops it and drops
the copy; bootstrapping an already bootstrapped database creates nothing."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from ledgerbridge.connectors.tryton.bootstrap import bootstrap
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.testing import tryton_server as ts

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tryton"
OFFLINE_PIP = {  # a package index nobody listens on, no local wheels, no retries
    "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "", "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "2",
}


@pytest.fixture
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEDGERBRIDGE_TRYTON_HOME", str(tmp_path / "tryton"))
    for k, v in OFFLINE_PIP.items():
        monkeypatch.setenv(k, v)
    return tmp_path / "tryton"


def test_unreachable_index_skips_with_reason_and_fails_under_ci(offline_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"could not be installed.*pip install Tryton 8\.2 failed"), \
            ts.live_tryton("sqlite"):
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires a live Tryton"), ts.live_tryton("sqlite"):
        pass


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False)


def test_script_copies_starts_stops_and_drops() -> None:
    try:
        ts.install()
    except ts.TrytonSetupError as exc:
        ts._skip_or_fail(f"Tryton could not be installed: {str(exc)[-300:]}")
    assert os.access(SCRIPT, os.X_OK)
    name, port = f"lb_tryton_cli_{uuid.uuid4().hex[:8]}", ts.free_port()
    out = _script("copy-db", name, "--backend", "sqlite")
    assert out.returncode == 0, out.stderr
    try:
        out = _script("start", "--db", name, "--port", str(port), "--backend", "sqlite")
        assert out.returncode == 0 and f"127.0.0.1:{port}" in out.stdout, out.stderr
        reply = httpx.post(f"http://127.0.0.1:{port}/rpc/", json={"id": 1, "method": "common.server.version",
                                                                   "params": []}).json()
        assert reply["result"].startswith("8.2")
        with TrytonClient(f"http://127.0.0.1:{port}", name, ts.ADMIN_USER, ts.password()) as client:
            models = ("company.company", "account.fiscalyear", "account.period", "account.account",
                      "ir.sequence.strict")
            counts = {m: len(client.search(m, [])) for m in models}
            first = bootstrap(client)  # the copy is bootstrapped already: a second run creates nothing
            assert {m: len(client.search(m, [])) for m in counts} == counts
            assert first.fiscalyear_ids.keys() == {2026, 2027} and counts["account.period"] >= 24
    finally:
        stop = _script("stop", "--port", str(port))
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
        _script("drop-db", name, "--backend", "sqlite")
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://127.0.0.1:{port}/rpc/", json={"id": 1, "method": "common.server.version", "params": []})
    assert not ts.db_exists(name, "sqlite")


def test_databases_left_by_a_killed_run_are_dropped() -> None:
    """A copy named for a process that no longer exists (a SIGKILLed test session) is dropped by the next run's
    sweep; one of a live process is kept."""
    try:
        ts.install()
    except ts.TrytonSetupError as exc:
        ts._skip_or_fail(f"Tryton could not be installed: {str(exc)[-300:]}")
    template = ts.ensure_template("sqlite")
    gone_pid = 2**22 + 12345  # above the default pid_max: never a live process
    orphan, mine = f"{ts.RUN_PREFIX}{gone_pid}_deadbeef", f"{ts.RUN_PREFIX}{os.getpid()}_cafef00d"
    for name in (orphan, mine):
        ts.copy_db(template, name, "sqlite")
    try:
        assert orphan in ts.drop_orphans("sqlite")
        assert not ts.db_exists(orphan, "sqlite") and ts.db_exists(mine, "sqlite")
    finally:
        ts.drop_db(mine, "sqlite")
        ts.drop_db(orphan, "sqlite")
