"""The shared sandbox pieces: real HTTP in a thread, sliding-window + concurrency throttling, option parsing, and
the ``ledgerbridge sandbox`` command's discovery and errors."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from ledgerbridge.cli import app as cli_app
from ledgerbridge.connectors.registry import available
from ledgerbridge.errors import PermanentError
from ledgerbridge.testing.sandbox import CallLog, RateWindow, load_sandbox, parse_options, serve_in_thread


def test_serve_in_thread_answers_over_real_http() -> None:
    api = FastAPI()

    @api.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with serve_in_thread(api) as base:
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base}/ping").json() == {"pong": "yes"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/ping", timeout=1)


def test_rate_window_slides_and_caps_concurrency() -> None:
    now = [100.0]
    w = RateWindow(limit=3, window=60.0, concurrency=2, clock=lambda: now[0])
    assert w.try_acquire() is None and w.try_acquire() is None
    assert w.try_acquire() == 1.0  # two in flight: the concurrency cap refuses
    w.release()
    w.release()
    assert w.try_acquire() is None
    w.release()
    wait = w.try_acquire()  # 3 in the last 60 s: refused until the oldest leaves the window
    assert wait is not None and wait == pytest.approx(60.0)
    now[0] += 60.0
    assert w.try_acquire() is None
    s = w.stats()
    assert (s["accepted"], s["refused"], s["refused_concurrency"], s["peak_in_flight"]) == (4, 2, 1, 2)


def test_call_log_counts() -> None:
    log = CallLog()
    log.add("GET", "/a/1", 200)
    log.add("POST", "/a/2", 429)
    log.add("POST", "/b", 200)
    assert log.count() == 3 and log.count(method="POST") == 2
    assert log.count(path_prefix="/a", status=429) == 1


def test_parse_options_converts_and_refuses() -> None:
    assert parse_options(["rate-limit=60", "fail_share=0.3", "strict=true", "name=acme"]) == {
        "rate_limit": 60, "fail_share": 0.3, "strict": True, "name": "acme"}
    with pytest.raises(PermanentError, match="not key=value"):
        parse_options(["oops"])


def test_unknown_sandbox_names_the_choices() -> None:
    with pytest.raises(PermanentError, match="no sandbox for 'nosuch'"):
        load_sandbox("nosuch")
    result = CliRunner().invoke(cli_app, ["sandbox", "nosuch", "--port", "1"])
    assert result.exit_code == 2 and "no sandbox for 'nosuch'" in result.output
    assert CliRunner().invoke(cli_app, ["sandbox", "list"]).exit_code == 0


def test_registry_lists_packaged_connectors() -> None:
    names = available()
    assert {"tryton", "redmine", "psa_csv", "file_journal", "beancount"} <= set(names)
    assert "beancount_ledger" not in names  # configured as "beancount"
