"""The shared HTTP layer of the SaaS connectors: pacing within a window and a concurrency cap, one 429 pausing every
caller for Retry-After, transient retries, a 401 refreshing the token once, 2xx-with-error treated as an error."""

from __future__ import annotations

import threading

import httpx
import pytest

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.errors import PermanentError, RateLimitedError, RecordValidationError, TransientError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_pacer_holds_the_window_with_headroom() -> None:
    clock = FakeClock()
    p = Pacer(10, 60.0, headroom=0.8, clock=clock, sleep=clock.sleep)
    assert p.limit == 8
    for _ in range(8):
        p.acquire()
    assert clock.now == 0.0
    p.acquire()  # the ninth waits for the first to leave the 60 s window
    assert clock.now == pytest.approx(60.0) and p.waited == pytest.approx(60.0)


def test_pause_holds_every_caller() -> None:
    clock = FakeClock()
    p = Pacer(None, clock=clock, sleep=clock.sleep)
    p.pause(7.5)
    p.acquire()
    assert clock.now == pytest.approx(7.5) and p.pauses == 1


def test_concurrency_cap_is_never_exceeded() -> None:
    p = Pacer(None, concurrency=2)
    inside, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        with p.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            threading.Event().wait(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2


def _client(answers: list[httpx.Response]) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://vendor"), seen


def test_429_retry_after_is_honoured_then_succeeds() -> None:
    clock = FakeClock()
    http, seen = _client([httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"ok": 1})])
    p = Pacer(None, clock=clock, sleep=clock.sleep)
    r = send(http, "GET", "/x", system="xero", pacer=p, sleep=clock.sleep)
    assert r.json() == {"ok": 1} and len(seen) == 2 and clock.now == pytest.approx(3.0)


def test_long_retry_after_is_raised_for_the_runtime_to_reschedule() -> None:
    http, _ = _client([httpx.Response(429, headers={"Retry-After": "3600"})])
    with pytest.raises(RateLimitedError) as info:
        send(http, "GET", "/x", system="xero", max_wait=60)
    assert info.value.retry_after == 3600


def test_transient_retries_are_bounded() -> None:
    slept: list[float] = []
    http, seen = _client([httpx.Response(503) for _ in range(3)])
    with pytest.raises(TransientError):
        send(http, "GET", "/x", system="d365", attempts=3, sleep=slept.append)
    assert len(seen) == 3 and slept == [0.2, 0.4]


def test_401_refreshes_once() -> None:
    refreshed: list[int] = []
    http, seen = _client([httpx.Response(401), httpx.Response(401)])
    with pytest.raises(PermanentError):
        send(http, "GET", "/x", system="kantata", on_unauthorized=lambda: refreshed.append(1))
    assert refreshed == [1] and len(seen) == 2


def test_2xx_with_error_body_and_validation_are_not_retried() -> None:
    http, seen = _client([httpx.Response(200, json={"success": False, "errors": ["bad"]})])
    with pytest.raises(Exception) as info:
        send(http, "POST", "/x", system="qbo")
    assert len(seen) == 1 and info.value.__class__.__name__.endswith("Error")
    http, seen = _client([httpx.Response(400, json={"message": "no"})])
    with pytest.raises(RecordValidationError):
        send(http, "POST", "/x", system="xero")
    assert len(seen) == 1


def test_retry_transient_false_raises_a_failed_write_at_once_but_still_waits_out_429() -> None:
    clock = FakeClock()
    http, seen = _client([httpx.Response(503)])
    with pytest.raises(TransientError):
        send(http, "POST", "/soap", system="sap", retry_transient=False, sleep=clock.sleep)
    assert len(seen) == 1  # the target may have applied it: the caller looks up what it holds
    http, seen = _client([httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200, json={"ok": 1})])
    p = Pacer(None, clock=clock, sleep=clock.sleep)
    assert send(http, "POST", "/soap", system="sap", pacer=p, retry_transient=False).json() == {"ok": 1}
    assert len(seen) == 2


def test_a_token_refresh_is_not_a_failed_attempt() -> None:
    refreshed: list[int] = []
    http, seen = _client([httpx.Response(401), httpx.Response(200, json={"ok": 1})])
    r = send(http, "GET", "/x", system="oracle", attempts=1, on_unauthorized=lambda: refreshed.append(1))
    assert r.json() == {"ok": 1} and refreshed == [1] and len(seen) == 2
