"""Protocol-faithful sandboxes of SaaS systems: the shared pieces, and ``ledgerbridge sandbox <system>``.

No live tenant of a SaaS PSA or ERP is reachable from a test machine (nor, before go-live, from a firm's own), so
each SaaS connector comes with a sandbox: a small HTTP server that speaks the vendor's protocol as the vendor
documents it — authentication, paging, change feeds, throttling and error shapes — and keeps its records in memory.
A firm runs one with ``ledgerbridge sandbox <system> --port P`` to try its mappings and flows before touching a real
tenant; the tests run the same sandboxes in a thread (:func:`serve_in_thread`).

A sandbox is a module ``ledgerbridge.testing.sandboxes.<system>`` exposing::

    def create_app(**options) -> ASGI application      # options come from ``--option key=value``
    DESCRIPTION: str                                   # one line for ``ledgerbridge sandbox list``

Shared here:

- :func:`serve_in_thread` — run an ASGI app on a free loopback port (real HTTP, real sockets) for a test or bench.
- :class:`RateWindow` — the sliding-window and concurrency accounting every vendor's throttling is built from,
  with the figures a bench needs (accepted, refused, peak concurrency).
- :class:`CallLog` — every request a sandbox answered (method, path, status), for API-efficiency counts.
- :func:`available_sandboxes` / :func:`load_sandbox` — discovery for the command.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ledgerbridge.errors import PermanentError

# --------------------------------------------------------------------------------------------------- serving


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                    startup_timeout: float = 15.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yield its base URL (``http://127.0.0.1:<port>``); stop it on
    exit. Raises ``RuntimeError`` when the server does not come up within ``startup_timeout`` seconds."""
    import uvicorn

    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"sandbox:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"sandbox server on {host}:{port} did not start within {startup_timeout} s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------------------- throttling


@dataclass
class RateWindow:
    """Sliding-window request limit plus a concurrency cap, as vendors enforce them.

    ``limit`` requests per ``window`` seconds (``None`` = unlimited) and at most ``concurrency`` requests in flight
    (``None`` = unlimited). :meth:`try_acquire` answers ``None`` when the request may proceed (call :meth:`release`
    when it finishes) or the number of seconds until a slot frees (the sandbox turns that into the vendor's 429,
    with or without Retry-After as the vendor does). Thread-safe; the clock is injectable for tests.
    """

    limit: int | None = None
    window: float = 1.0
    concurrency: int | None = None
    clock: Any = time.monotonic
    accepted: int = 0
    refused: int = 0
    refused_concurrency: int = 0
    peak_in_flight: int = 0
    _stamps: deque[float] = field(default_factory=deque, repr=False)
    _in_flight: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def try_acquire(self) -> float | None:
        with self._lock:
            now = self.clock()
            while self._stamps and self._stamps[0] <= now - self.window:
                self._stamps.popleft()
            if self.concurrency is not None and self._in_flight >= self.concurrency:
                self.refused += 1
                self.refused_concurrency += 1
                return 1.0
            if self.limit is not None and len(self._stamps) >= self.limit:
                self.refused += 1
                return max(0.001, self._stamps[0] + self.window - now)
            self._stamps.append(now)
            self._in_flight += 1
            self.accepted += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return None

    def release(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def stats(self) -> dict[str, Any]:
        total = self.accepted + self.refused
        return {"accepted": self.accepted, "refused": self.refused, "refused_concurrency": self.refused_concurrency,
                "peak_in_flight": self.peak_in_flight, "refused_share": (self.refused / total) if total else 0.0}


@dataclass
class CallLog:
    """Requests a sandbox answered: ``(method, path, status)`` in arrival order (thread-safe)."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.calls.append((method, path, status))

    def count(self, *, method: str | None = None, path_prefix: str = "", status: int | None = None) -> int:
        with self._lock:
            return sum(1 for m, p, s in self.calls
                       if (method is None or m == method) and p.startswith(path_prefix)
                       and (status is None or s == status))

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


# --------------------------------------------------------------------------------------------------- discovery


def available_sandboxes() -> list[str]:
    from ledgerbridge.testing import sandboxes

    return sorted(m.name for m in pkgutil.iter_modules(sandboxes.__path__) if not m.name.startswith("_"))


def load_sandbox(system: str) -> Any:
    """The sandbox module of ``system``; a clear error naming the choices when there is none."""
    names = available_sandboxes()
    if system not in names:
        raise PermanentError(f"no sandbox for {system!r}; available: {', '.join(names) or 'none'}",
                             details={"system": system})
    return importlib.import_module(f"ledgerbridge.testing.sandboxes.{system}")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs from the command line; integers, floats and true/false are converted."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PermanentError(f"option {pair!r} is not key=value", details={"option": pair})
        value: Any = raw
        if raw.lower() in {"true", "false"}:
            value = raw.lower() == "true"
        else:
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    continue
        out[key.replace("-", "_")] = value
    return out
