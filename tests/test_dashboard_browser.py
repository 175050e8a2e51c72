"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright (no browser download), against
``ledgerbridge``'s FastAPI app served by uvicorn on a loopback port, over a store produced by the real flows.

Log in with a token, read the overview, replay a dead letter from its page and see the open count drop, drill
into a variance down to the items and their reason. With ``LB_SCREENSHOTS=<dir>`` the main pages are saved as PNG
(``scripts/screenshots`` refreshes ``docs/screenshots/`` that way).

Without Chromium (``scripts/install-browser``) or Playwright the tests skip with the reason, except under
``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge.flows import recon_runs
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.testing import issue_token
from test_dashboard_pages import build_state, open_letters, restore_rates

CHROMIUM = os.environ.get("LB_CHROMIUM", "/usr/lib/chromium/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic"]
SHOTS = os.environ.get("LB_SCREENSHOTS")
VIEWPORT = {"width": 1366, "height": 800}  # a laptop screen


def _need(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run; call scripts/install-browser first)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _need(f"Chromium not found at {CHROMIUM}: run scripts/install-browser (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright is not installed (pip install playwright; never `playwright install`)")
    home = tmp_path_factory.mktemp("browser-home")
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            try:
                yield b
            finally:
                b.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Served:
    def __init__(self, ctx: FlowContext) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(ctx, ServiceSettings(worker=False)),
                                                    host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlowContext, Served]]:
    ctx = build_state(tmp_path_factory.mktemp("browser-state"))
    srv = Served(ctx)
    try:
        yield ctx, srv
    finally:
        srv.stop()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def logged_in(browser: Any, srv: Served, token: str) -> Any:
    context = browser.new_context(viewport=VIEWPORT, base_url=srv.url)
    page = context.new_page()
    page.goto("/dashboard/")
    assert "/dashboard/login" in page.url  # not logged in: sent to the form
    shot(page, "login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/$"))
    return page


def test_login_overview_replay_and_drill_down(browser: Any, served: tuple[FlowContext, Served]) -> None:
    from playwright.sync_api import expect

    ctx, srv = served
    page = logged_in(browser, srv, issue_token(ctx, "operate", "browser-operator"))
    expect(page.locator("h1")).to_have_text("Overview")
    letters = open_letters(ctx)
    assert letters
    expect(page.get_by_test_id("open-dead-letters")).to_have_text(str(len(letters)))
    assert page.locator("svg.chart").count() == 4
    shot(page, "overview")

    # the dead-letter queue, then one letter; replay it once the cause (the missing rate) is fixed
    page.click("#tile-dead-letters")
    expect(page.get_by_test_id("open-count")).to_have_text(str(len(letters)))
    shot(page, "dead-letters")
    page.locator("table a", has_text=letters[0].item_key).first.click()
    expect(page.locator("h1")).to_contain_text(letters[0].item_key)
    expect(page.get_by_test_id("letter-status")).to_have_text("open")
    shot(page, "dead-letter")
    restore_rates(ctx)
    page.click("#replay")
    expect(page.get_by_test_id("letter-status")).to_have_text("replayed")
    expect(page.get_by_test_id("open-count")).to_have_text(str(len(letters) - 1))
    assert len(open_letters(ctx)) == len(letters) - 1
    page.goto("/dashboard/")
    expect(page.get_by_test_id("open-dead-letters")).to_have_text(str(len(letters) - 1))

    # drill into a variance: the stored run -> a cell with variance -> the items and their reason
    page.click("text=Reconciliation")
    page.locator("table a").first.click()
    with ctx.engine.connect() as conn:
        run = recon_runs.latest_run(conn)
        assert run is not None
        cells = recon_runs.run_cells(conn, run.id)
    cell = next(c for c in cells if any(e["kind"] == "dead_letter" for e in c["explanations"]))
    shot(page, "reconciliation-run")
    href = (f"/dashboard/reconciliation/{run.id}/{cell['legal_entity_id']}/{cell['period']}/{cell['measure']}/"
            f"{cell['currency'] or 'h'}")
    page.locator(f'a[href="{href}"]').click()
    expect(page.locator("h1")).to_contain_text(f"{cell['legal_entity_id']} · {cell['period']} · {cell['measure']}")
    expect(page.locator(".reason-kind", has_text="dead_letter")).to_be_visible()
    item = next(e for e in cell["explanations"] if e["kind"] == "dead_letter")
    expect(page.locator("td", has_text=item["item_id"]).first).to_be_visible()
    expect(page.get_by_test_id("unexplained")).to_have_text("0.00")
    shot(page, "reconciliation-drilldown")

    for path, name in (("/dashboard/trace", "trace"), ("/dashboard/periods", "period-close"),
                       ("/dashboard/stewardship", "stewardship")):
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        shot(page, name)
    page.context.close()


def test_read_token_has_no_replay_button(browser: Any, served: tuple[FlowContext, Served]) -> None:
    from playwright.sync_api import expect

    ctx, srv = served
    page = logged_in(browser, srv, issue_token(ctx, "read", "browser-reader"))
    letter = open_letters(ctx)[0]
    page.goto(f"/dashboard/dead-letters/{letter.id}")
    expect(page.locator("h1")).to_contain_text(letter.item_key)
    assert page.locator("#replay").count() == 0
    expect(page.locator("text=replaying or discarding needs")).to_be_visible()
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/dashboard/login$"))
    page.goto("/dashboard/")
    assert "/dashboard/login" in page.url
    page.context.close()

