"""Install, set up and run a real Tryton 8.2 server for live tests, benchmarks and demos.

Tryton lives in its OWN virtualenv (it pins its own dependencies); ledgerbridge only talks to it over HTTP.

- :func:`install` — ``pip install`` Tryton 8.2 + modules + PostgreSQL driver into
  ``$LEDGERBRIDGE_TRYTON_HOME/venv`` (default ``~/.cache/ledgerbridge/tryton``); skipped when present at 8.2.
- :func:`create_db` — create a database, activate the modules (``trytond-admin``), then bootstrap it over JSON-RPC
  (company, USD, chart, fiscal years 2026-2027 with monthly periods, sequences; search-before-create).
- :func:`ensure_template` — build a template database once; :func:`copy_db` gives a fresh copy in about a
  second (PostgreSQL ``CREATE DATABASE x TEMPLATE tpl``; SQLite file copy).
- :class:`TrytonServer` — start ``trytond -c conf -d db`` on a loopback port, wait until it answers, stop it.
- :func:`live_tryton` — everything above for a pytest fixture: yields :class:`TrytonSettings` and cleans up;
  skips (with the reason) when Tryton cannot be installed, but fails under ``CI=true``.

Command line: ``scripts/tryton`` (``python -m ledgerbridge.testing.tryton_server``), see docs/connectors/tryton.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TRYTON_SERIES = "8.2"
MODULES = ("account_invoice", "analytic_account", "project_invoice", "timesheet_cost")
SQLITE_MODULES = ("account",)  # enough for the SQLite trap test, activates in a fraction of the time
PIP_PACKAGES = (
    "trytond[postgresql]~=8.2.0", "trytond-account~=8.2.0", "trytond-account-invoice~=8.2.0",
    "trytond-company~=8.2.0", "trytond-party~=8.2.0", "trytond-currency~=8.2.0", "trytond-project~=8.2.0",
    "trytond-timesheet~=8.2.0", "trytond-project-invoice~=8.2.0", "trytond-timesheet-cost~=8.2.0",
    "trytond-analytic-account~=8.2.0", "psycopg[binary]",
)
ADMIN_USER = "admin"
DEFAULT_PASSWORD = "lb-tryton-admin"  # local test servers only; never a real credential
PG_HOST = os.environ.get("LB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LB_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("LB_TEST_PG_USER", "postgres")


class TrytonSetupError(RuntimeError):
    """Tryton could not be installed, set up or started; the message names the step and its output."""


@dataclass(frozen=True, slots=True)
class TrytonSettings:
    """Connection settings of a running Tryton server (what a connector's options hold)."""

    url: str
    database: str
    user: str
    password: str
    backend: str

    def as_options(self) -> dict[str, str]:
        return {"url": self.url, "database": self.database, "user": self.user, "password": self.password}


# --------------------------------------------------------------------------------------------------- paths


def home() -> Path:
    return Path(os.environ.get("LEDGERBRIDGE_TRYTON_HOME") or Path.home() / ".cache" / "ledgerbridge" / "tryton")


def venv_dir() -> Path:
    return home() / "venv"


def _bin(name: str) -> Path:
    return venv_dir() / "bin" / name


def password() -> str:
    return os.environ.get("LEDGERBRIDGE_TRYTON_PASSWORD", DEFAULT_PASSWORD)


def _run(cmd: Sequence[str | Path], *, step: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrytonSetupError(f"{step}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise TrytonSetupError(f"{step} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


# --------------------------------------------------------------------------------------------------- install


def installed_version() -> str | None:
    py = _bin("python")
    if not py.exists():
        return None
    proc = subprocess.run([str(py), "-c", "import trytond, psycopg; print(trytond.__version__)"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def install(*, quiet: bool = True) -> str:
    """Install Tryton 8.2 into its own virtualenv unless already there; returns the installed version."""
    version = installed_version()
    if version and version.startswith(TRYTON_SERIES + ".") and _bin("trytond").exists():
        return version
    from ledgerbridge.connectors.base import file_lock

    home().mkdir(parents=True, exist_ok=True)
    with file_lock(home() / ".install.lock"):
        version = installed_version()
        if version and version.startswith(TRYTON_SERIES + "."):
            return version
        # pip of the launching interpreter installs into a pip-less venv (pip --python): creating a venv with
        # its own pip (ensurepip) costs 5-20 s on a busy 2-core machine
        own_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 check=False).returncode == 0
        if not _bin("python").exists():
            base = getattr(sys, "_base_executable", sys.executable)
            _run([str(base), "-m", "venv", *(["--without-pip"] if own_pip else []), venv_dir()],
                 step="create Tryton virtualenv")
        pip: list[str | Path] = ([sys.executable, "-m", "pip", "--python", _bin("python")] if own_pip
                                 else [_bin("python"), "-m", "pip"])
        args: list[str | Path] = [*pip, "install", "--disable-pip-version-check"]
        if quiet:
            args.append("-q")
        _run([*args, *PIP_PACKAGES], step="pip install Tryton " + TRYTON_SERIES, timeout=1200)
        version = installed_version()
        if not version or not version.startswith(TRYTON_SERIES + "."):
            raise TrytonSetupError(f"installed trytond is {version!r}, expected {TRYTON_SERIES}.x")
        return version


# --------------------------------------------------------------------------------------------------- databases


def _pg_connect(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


def _sqlite_dir() -> Path:
    d = home() / "sqlite"
    d.mkdir(parents=True, exist_ok=True)
    return d


def config_path(backend: str, port: int | None = None, *, session_timeout: int = 3600) -> Path:
    """Write (and return) a trytond config for ``backend`` and optional listen ``port``."""
    etc = home() / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    if backend == "postgresql":
        uri = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/"
        path = home() / "filestore"
    elif backend == "sqlite":
        uri, path = "sqlite://", _sqlite_dir()
    else:
        raise ValueError(f"backend must be postgresql or sqlite, not {backend!r}")
    path.mkdir(parents=True, exist_ok=True)
    text = (f"[database]\nuri = {uri}\npath = {path}\n\n[session]\ntimeout = {session_timeout}\n"
            "max_attempt = 50\n\n")
    if port is not None:
        text += f"[web]\nlisten = 127.0.0.1:{port}\n"
    name = f"trytond-{backend}{'-' + str(port) if port else ''}-{session_timeout}.conf"
    conf = etc / name
    conf.write_text(text)
    return conf


def db_exists(name: str, backend: str) -> bool:
    if backend == "sqlite":
        return (_sqlite_dir() / f"{name}.sqlite").exists()
    with _pg_connect() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def drop_db(name: str, backend: str) -> None:
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (_sqlite_dir() / f"{name}.sqlite{suffix}").unlink()
        return
    from psycopg import sql

    with _pg_connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


#: Per-run database names carry the owning process id (``lb_tryton_p<pid>_<random>``) so a later run can drop the
#: copies a SIGKILLed test session left behind (its ``finally`` never ran).
RUN_PREFIX = "lb_tryton_p"
_RUN_NAME = re.compile(rf"^{RUN_PREFIX}(\d+)_[0-9a-f]+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_orphans(backend: str) -> list[str]:
    """Drop the per-run databases whose owning process is gone; returns their names."""
    if backend == "sqlite":
        names = [f.name[:-len(".sqlite")] for f in _sqlite_dir().glob(f"{RUN_PREFIX}*.sqlite")]
    else:
        with _pg_connect() as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                (f"{RUN_PREFIX}%",))]
    dropped = []
    for name in names:
        m = _RUN_NAME.match(name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(Exception):  # another session may be dropping it at the same moment
                drop_db(name, backend)
                dropped.append(name)
    return dropped


def copy_db(template: str, name: str, backend: str) -> None:
    """A fresh copy of ``template`` named ``name`` (PostgreSQL template copy; SQLite file copy without WAL)."""
    if backend == "sqlite":
        import sqlite3

        src = _sqlite_dir() / f"{template}.sqlite"
        # fold the template's write-ahead log into the main file first: a copy of the main file alone would miss
        # whatever the bootstrap wrote after the last automatic checkpoint
        with contextlib.closing(sqlite3.connect(src)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(src, _sqlite_dir() / f"{name}.sqlite")
        return
    from psycopg import sql

    with _pg_connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))


def _empty_db(name: str, backend: str) -> None:
    if backend == "sqlite":
        (_sqlite_dir() / f"{name}.sqlite").touch()
        return
    from psycopg import sql

    with _pg_connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(name)))


def activate_modules(name: str, backend: str, modules: Sequence[str]) -> None:
    """``trytond-admin -u <modules> --activate-dependencies`` (first run sets the admin password and email)."""
    passfile = home() / "etc" / "admin.pass"
    passfile.parent.mkdir(parents=True, exist_ok=True)
    passfile.write_text(password() + "\n")
    env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
    _run([_bin("trytond-admin"), "-c", config_path(backend), "-d", name, "-u", *modules, "--activate-dependencies",
          "--email", "admin@example.com"], step=f"trytond-admin (activate {' '.join(modules)} in {name})", env=env,
         timeout=1800)


def modules_activated(name: str, backend: str, modules: Sequence[str]) -> bool:
    """True when every module in ``modules`` is activated in database ``name`` (read from ``ir_module``)."""
    query = "SELECT count(*) FROM ir_module WHERE state = 'activated' AND name IN ({})"
    try:
        if backend == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(_sqlite_dir() / f"{name}.sqlite")) as db:
                row = db.execute(query.format(",".join("?" * len(modules))), tuple(modules)).fetchone()
        else:
            with _pg_connect(name) as conn:
                row = conn.execute(query.format(",".join(["%s"] * len(modules))), tuple(modules)).fetchone()
    except Exception:  # no ir_module table yet: not activated
        return False
    return row is not None and int(row[0]) == len(set(modules))


def create_db(name: str, backend: str = "postgresql", *, modules: Sequence[str] | None = None,
              company_name: str = "Ledgerbridge US01", currency: str = "USD") -> dict[str, object]:
    """Create (when missing), activate (when not yet) and bootstrap database ``name``; idempotent: a re-run only
    checks. Returns the setup ids."""
    install()
    mods = tuple(modules or (MODULES if backend == "postgresql" else SQLITE_MODULES))
    if not db_exists(name, backend):
        _empty_db(name, backend)
    if not modules_activated(name, backend, mods):
        activate_modules(name, backend, mods)
    with TrytonServer(name, backend) as server:
        return _bootstrap(server.settings(), company_name=company_name, currency=currency)


def _bootstrap(settings: TrytonSettings, *, company_name: str, currency: str) -> dict[str, object]:
    from dataclasses import asdict

    from ledgerbridge.connectors.tryton.bootstrap import bootstrap
    from ledgerbridge.connectors.tryton.client import TrytonClient

    with TrytonClient(settings.url, settings.database, settings.user, settings.password) as client:
        return asdict(bootstrap(client, company_name=company_name, currency=currency))


def template_name(backend: str) -> str:
    mods = MODULES if backend == "postgresql" else SQLITE_MODULES
    from ledgerbridge.connectors.tryton.bootstrap import BOOTSTRAP_VERSION

    return f"lb_tryton_tpl_{TRYTON_SERIES.replace('.', '')}_{len(mods)}_b{BOOTSTRAP_VERSION}"


def ensure_template(backend: str = "postgresql") -> str:
    """Build the template database once (marker file written after a complete bootstrap); returns its name."""
    from ledgerbridge.connectors.base import file_lock

    name = template_name(backend)
    marker = home() / "templates" / f"{backend}-{name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(home() / f".template-{backend}.lock"):
        if marker.exists() and db_exists(name, backend):
            return name
        marker.unlink(missing_ok=True)
        setup = create_db(name, backend)  # resumes a half-built template: activation and bootstrap are idempotent
        marker.write_text(json.dumps(setup, default=str))
    return name


# --------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the launching process dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class TrytonServer:
    """``trytond -c conf -d <db>`` on 127.0.0.1 (started with the database name: without it logins fail)."""

    def __init__(self, database: str, backend: str = "postgresql", port: int | None = None, *,
                 session_timeout: int = 3600, die_with_parent: bool = True) -> None:
        self.die_with_parent = die_with_parent  # a SIGKILLed test run leaves no orphan server (Linux)
        self.database = database
        self.backend = backend
        self.port = port or free_port()
        self.session_timeout = session_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home() / "logs" / f"trytond-{database}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> TrytonSettings:
        return TrytonSettings(self.url, self.database, ADMIN_USER, password(), self.backend)

    def start(self, *, timeout: float = 90.0) -> TrytonServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        conf = config_path(self.backend, self.port, session_timeout=self.session_timeout)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(_bin("trytond")), "-c", str(conf), "-d", self.database],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        body = {"id": 0, "method": "common.server.version", "params": []}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TrytonSetupError(f"trytond exited with {self.proc.returncode}; log {self.log}: "
                                       f"{self.log.read_text()[-1500:]}")
            try:
                if httpx.post(self.url + "/rpc/", json=body, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TrytonSetupError(f"trytond on port {self.port} not ready after {timeout:.0f} s; log {self.log}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> TrytonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------- pytest


def _skip_or_fail(reason: str) -> None:
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires a live Tryton (run scripts/tryton install)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def live_tryton(backend: str = "postgresql", *, session_timeout: int = 3600) -> Iterator[TrytonSettings]:
    """A running Tryton on a fresh copy of the template database; stopped and dropped afterwards.

    Skips the calling tests (visible reason) when PostgreSQL is unreachable or Tryton cannot be installed (PyPI
    unreachable); under ``CI=true`` fails instead."""
    if backend == "postgresql":
        try:
            socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
        except OSError as exc:
            _skip_or_fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc})")
    try:
        install()
    except TrytonSetupError as exc:
        _skip_or_fail(f"Tryton {TRYTON_SERIES} could not be installed (PyPI unreachable?): {str(exc)[-400:]}")
    template = ensure_template(backend)
    drop_orphans(backend)
    name = f"{RUN_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    copy_db(template, name, backend)
    server = TrytonServer(name, backend, session_timeout=session_timeout)
    try:
        server.start()
        yield server.settings()
    finally:
        server.stop()
        drop_db(name, backend)


# --------------------------------------------------------------------------------------------------- CLI


def _pidfile(port: int) -> Path:
    return home() / "run" / f"trytond-{port}.pid"


def _cli_start(db: str, port: int, backend: str) -> None:
    server = TrytonServer(db, backend, port, die_with_parent=False)
    server.start()
    assert server.proc is not None
    pidfile = _pidfile(port)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{server.proc.pid}\n")
    server.proc = None  # leave it running
    print(f"trytond running: url http://127.0.0.1:{port} database {db} user {ADMIN_USER} (pid file {pidfile})")


def _cli_stop(port: int | None) -> None:
    files = [_pidfile(port)] if port else sorted((home() / "run").glob("trytond-*.pid"))
    for f in files:
        if not f.exists():
            print(f"no pid file {f}")
            continue
        pid = int(f.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.2)
        f.unlink(missing_ok=True)
        print(f"stopped trytond pid {pid}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/tryton", description="Install and run Tryton 8.2 for ledgerbridge")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install Tryton 8.2 into its own virtualenv (idempotent)")
    c = sub.add_parser("create-db", help="create, activate and bootstrap a database (idempotent)")
    c.add_argument("name")
    c.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    t = sub.add_parser("template", help="build the template database once; copy it with copy-db")
    t.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    cp = sub.add_parser("copy-db", help="fresh copy of the template database")
    cp.add_argument("name")
    cp.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    d = sub.add_parser("drop-db", help="drop a database")
    d.add_argument("name")
    d.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    s = sub.add_parser("start", help="start trytond in the background")
    s.add_argument("--db", required=True)
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    st = sub.add_parser("stop", help="stop trytond started with 'start'")
    st.add_argument("--port", type=int)
    sub.add_parser("info", help="where things are")
    a = p.parse_args(argv)
    try:
        if a.cmd == "install":
            print(f"trytond {install(quiet=False)} in {venv_dir()}")
        elif a.cmd == "create-db":
            t0 = time.monotonic()
            setup = create_db(a.name, a.backend)
            print(json.dumps(setup, default=str))
            print(f"database {a.name} ready ({a.backend}) in {time.monotonic() - t0:.1f} s")
        elif a.cmd == "template":
            install()
            print(f"template database {ensure_template(a.backend)} ({a.backend}) ready")
        elif a.cmd == "copy-db":
            copy_db(ensure_template(a.backend), a.name, a.backend)
            print(f"database {a.name} copied from the template")
        elif a.cmd == "drop-db":
            drop_db(a.name, a.backend)
        elif a.cmd == "start":
            _cli_start(a.db, a.port, a.backend)
        elif a.cmd == "stop":
            _cli_stop(a.port)
        elif a.cmd == "info":
            print(json.dumps({"home": str(home()), "venv": str(venv_dir()), "installed": installed_version(),
                              "user": ADMIN_USER, "password_env": "LEDGERBRIDGE_TRYTON_PASSWORD",
                              "postgresql": f"{PG_USER}@{PG_HOST}:{PG_PORT}"}, indent=2))
    except TrytonSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
