"""Client-side pacing and retrying for the HTTP connectors (shared, so no connector writes its own loop).

- :class:`Pacer` keeps a client under a vendor's limits *before* the vendor has to say no: at most ``limit``
  requests per sliding ``window`` seconds and at most ``concurrency`` in flight (NetSuite's account pool, Xero's
  5 concurrent). When an answer is rate-limited, :meth:`Pacer.pause` holds **every** caller until the vendor's
  ``Retry-After`` has passed — one 429 does not become a storm of retries from the other threads.
- :func:`send` performs one logical call: pace, send, classify the answer (:func:`ledgerbridge.errors.classify_http`
  plus the connector's own body check, since a 2xx is not proof), count it in the metrics, and retry transient and
  rate-limited answers a bounded number of times. Permanent, validation and conflict errors are raised at once.

The durable runtime retries whole steps on top of this (``runtime/retry.py``); this layer only smooths single calls
so one slow answer or one 429 does not fail a batch of hundreds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from ledgerbridge.errors import (
    BodyErrorDetector,
    ErrorKind,
    LedgerbridgeError,
    RateLimitedError,
    TransientError,
    classify_exception,
    classify_http,
)


class Pacer:
    """Sliding-window request pacing plus a concurrency cap, shared by all threads using one client.

    ``limit`` requests per ``window`` seconds (``None`` = no window limit); ``concurrency`` in flight (``None`` =
    unlimited). ``headroom`` (0 < h <= 1) scales the window limit down so a client leaves room for other users of
    the same tenant (the engine's default is 80%). ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, limit: int | None = None, window: float = 1.0, *, concurrency: int | None = None,
                 headroom: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        self.limit = None if limit is None else max(1, int(limit * headroom))
        self.window = window
        self.concurrency = concurrency
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self.waited = 0.0  # seconds spent waiting for the window or a pause (a figure for benches)
        self.pauses = 0

    def _wait_time(self, now: float) -> float:
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()
        wait = max(0.0, self._paused_until - now)
        if self.limit is not None and len(self._stamps) >= self.limit:
            wait = max(wait, self._stamps[0] + self.window - now)
        return wait

    def acquire(self) -> None:
        """Block until a request may be sent, and count it in the window."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_time(now)
                if wait <= 0:
                    self._stamps.append(now)
                    return
            self.waited += wait
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The vendor said wait ``seconds``: hold every caller of this client that long."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
            self.pauses += 1

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a concurrency slot and a window slot for one request."""
        if self._slots is not None:
            self._slots.acquire()
        try:
            self.acquire()
            yield
        finally:
            if self._slots is not None:
                self._slots.release()


def send(http: httpx.Client, method: str, url: str, *, system: str, pacer: Pacer | None = None,
         attempts: int = 5, body_error: BodyErrorDetector | None = None,
         default_wait: float = 1.0, max_wait: float = 60.0, sleep: Callable[[float], None] = time.sleep,
         on_unauthorized: Callable[[], None] | None = None, retry_transient: bool = True,
         **kwargs: Any) -> httpx.Response:
    """Send one request with pacing, classification, metrics and bounded retries; return the good response.

    - rate-limited answers pause the pacer for ``retry_after`` (or ``default_wait`` when the vendor sends none, as
      NetSuite and Kantata do), then retry; a ``retry_after`` above ``max_wait`` is raised at once so the runtime
      can reschedule instead of holding a worker;
    - transient answers (5xx, timeouts, resets) retry with exponential backoff (0.2 s, 0.4 s, ... capped at 5 s);
    - a 401 calls ``on_unauthorized`` once (the client refreshes its token), then retries (not counted as an
      attempt);
    - ``retry_transient=False`` for a write the target may have applied although the answer failed (a SOAP post, a
      file import without an idempotency key): a timeout, reset or 5xx is raised at once for the caller to look up
      what the target holds; a rate-limited answer (refused before any processing) is still retried;
    - everything else raises the classified :class:`~ledgerbridge.errors.LedgerbridgeError` at once.
    ``kwargs`` go to ``httpx.Client.request`` (``json=``, ``params=``, ``headers=``, ``content=`` ...).
    """
    from ledgerbridge.service.metrics import record_api_call, record_rate_limited

    refreshed = False
    last: LedgerbridgeError | None = None
    attempt = 0
    while attempt < attempts:
        attempt += 1
        ctx = pacer.slot() if pacer is not None else contextlib.nullcontext()
        try:
            with ctx:
                response = http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            record_api_call(system, "timeout" if isinstance(exc, httpx.TimeoutException) else "error")
            err = classify_exception(exc, system=system) or TransientError(f"{system}: {exc}", code="LB-T001")
            if err.kind is not ErrorKind.TRANSIENT or not retry_transient:
                raise err from exc
            last = err
            if attempt < attempts:
                sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            continue
        record_api_call(system, response.status_code)
        if response.status_code == 401 and on_unauthorized is not None and not refreshed:
            refreshed = True
            on_unauthorized()
            attempt -= 1  # the retry with a fresh token is not a failed attempt
            continue
        err = classify_http(response.status_code, response.headers, response.content, system=system,
                            body_error_detector=body_error)
        if err is None:
            return response
        if isinstance(err, RateLimitedError):
            if response.status_code != 429:
                record_rate_limited(system)
            wait = err.retry_after if err.retry_after is not None else default_wait * attempt
            if wait > max_wait:
                raise err
            last = err
            if pacer is not None:
                pacer.pause(wait)
            else:
                sleep(wait)
            continue
        if err.kind is ErrorKind.TRANSIENT and retry_transient:
            last = err
            if attempt < attempts:
                sleep(min(max(err.retry_after or 0.0, 0.2 * 2 ** (attempt - 1)), 5.0))
            continue
        raise err
    assert last is not None
    raise last
