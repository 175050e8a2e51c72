"""A real Redmine for tests and benchmarks, driven by ``scripts/redmine`` (see docs/connectors/redmine.md).

In pytest (one server per session, shared by every test module that uses the fixture)::

    from ledgerbridge.testing.redmine_server import redmine_server  # noqa: F401  (the session fixture)

    def test_something(redmine_server):
        client = redmine_server.client()

The fixture installs Redmine when needed (Debian packages, a few minutes once per machine), starts a *private
instance* (``scripts/redmine start --instance pytest-<pid>-<random>``: its own copy of the pristine database, so
concurrent test sessions on one machine never see or reset each other's data) on a free port, yields
:class:`RedmineSettings`, and destroys the instance at the end. When Redmine cannot run (not root, package
repository unreachable) the tests are skipped with the reason — except under ``CI=true``, where they fail: CI must
exercise Redmine.

Outside pytest: ``with running_redmine() as settings: ...`` (raises :class:`RedmineUnavailable` instead of
skipping).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(os.environ.get("LB_REDMINE_SCRIPT", Path(__file__).resolve().parents[3] / "scripts" / "redmine"))
EX_TEMPFAIL = 75  # scripts/redmine: package repository unreachable


class RedmineUnavailable(RuntimeError):
    """Redmine cannot be installed or started here (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class RedmineSettings:
    """Connection settings of a running Redmine, as ``scripts/redmine settings`` prints them."""

    url: str
    api_key: str
    activity_id: int
    custom_fields: dict[str, int]
    admin_password: str = field(repr=False, default="")
    instance: str = "default"  # the scripts/redmine instance (--instance) serving this url

    @classmethod
    def from_json(cls, data: dict[str, Any], instance: str = "default") -> RedmineSettings:
        return cls(url=str(data["url"]), api_key=str(data["api_key"]), activity_id=int(data["activity_id"]),
                   custom_fields={str(k): int(v) for k, v in data["custom_fields"].items()},
                   admin_password=str(data.get("admin_password", "")), instance=instance)

    def client(self, **kw: Any) -> Any:
        """A :class:`~ledgerbridge.connectors.redmine.client.RedmineClient` on this server (admin key)."""
        from ledgerbridge.connectors.redmine.client import RedmineClient

        return RedmineClient(self.url, self.api_key, **kw)

    def options(self, **extra: Any) -> dict[str, Any]:
        """Connector options for this server (custom fields by id)."""
        return {"url": self.url, "billable_field": self.custom_fields["Billable"],
                "approved_field": self.custom_fields["Approved"],
                "invoice_ref_field": self.custom_fields["Invoice ref"], **extra}


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


def _instance_name() -> str:
    return f"pytest-{os.getpid()}-{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(instance: str) -> dict[str, Any]:
    out = _run("settings", "--instance", instance)
    if out.returncode != 0:
        raise RedmineUnavailable(f"scripts/redmine settings failed: {out.stderr.strip()}")
    return dict(json.loads(out.stdout))


_lock = threading.Lock()
_users = 0
_current: tuple[RedmineSettings, str] | None = None


@contextlib.contextmanager
def running_redmine() -> Iterator[RedmineSettings]:
    """Install if needed and start a private Redmine instance on a free port; destroy it at the end.
    Nested uses in one process share one instance."""
    global _users, _current
    with _lock:
        if _current is None:
            _current = _bring_up(_instance_name())
        _users += 1
        current = _current[0]
    try:
        yield current
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _current is not None:
                _run("destroy", "--instance", _current[1], timeout=60)
                _current = None


def _bring_up(instance: str) -> tuple[RedmineSettings, str]:
    if not SCRIPT.exists():
        raise RedmineUnavailable(f"{SCRIPT} not found (set LB_REDMINE_SCRIPT)")
    status = _run("status", timeout=30).stdout
    if os.geteuid() != 0:
        raise RedmineUnavailable("scripts/redmine needs root (apt-get, setpriv to www-data); run the tests as root "
                                 "or start Redmine yourself with 'sudo scripts/redmine install && sudo scripts/redmine "
                                 "start'")
    if "installed: yes" not in status or "bootstrapped: yes" not in status:
        out = _run("install")
        if out.returncode == EX_TEMPFAIL:
            raise RedmineUnavailable(f"the Debian package repository is unreachable, Redmine cannot be installed: "
                                     f"{out.stderr.strip()[-400:]}")
        if out.returncode != 0:
            raise RuntimeError(f"scripts/redmine install failed (exit {out.returncode}): {out.stderr.strip()[-1500:]}")
    out = _run("start", "--instance", instance, "--port", str(free_port()), timeout=180)
    if out.returncode != 0:
        _run("destroy", "--instance", instance, timeout=60)
        raise RuntimeError(f"scripts/redmine start failed: {out.stderr.strip()[-1500:]}")
    return RedmineSettings.from_json(_settings(instance), instance), instance


def _pytest_fixture() -> Any:
    import pytest

    @pytest.fixture(scope="session")
    def redmine_server() -> Iterator[RedmineSettings]:
        """A running Redmine for the test session (see the module docstring)."""
        try:
            cm = running_redmine()
            settings = cm.__enter__()
        except RedmineUnavailable as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"Redmine unavailable and CI=true requires it: {exc}", pytrace=False)
            pytest.skip(f"Redmine unavailable: {exc}")
        try:
            yield settings
        finally:
            cm.__exit__(None, None, None)

    return redmine_server


with contextlib.suppress(ImportError):  # pytest absent: library use only
    redmine_server = _pytest_fixture()

__all__ = ["RedmineSettings", "RedmineUnavailable", "free_port", "redmine_server", "running_redmine"]
