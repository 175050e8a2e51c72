"""Business metrics and alert rules on a store produced by the real flows (tiny firm; one October cost rate
missing so October time is dead-lettered): metrics computed from the store agree with independent counts, a rule
fires on breach to a loopback webhook (real HTTP server) once per breach with its runbook link, waits for its
duration, resolves, falls back to the log when the webhook fails, and unknown metrics are refused by name."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ledgerbridge.config.schema import AlertRule, AlertsConfig
from ledgerbridge.flows import alerts
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store.schema import dead_letters as dl_t
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import posted_journals as pj_t
from test_dashboard_pages import build_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> FlowContext:
    return build_state(tmp_path_factory.mktemp("alerts"))


class Hook:
    """A loopback HTTP server recording the JSON bodies posted to it (status ``code``)."""

    def __init__(self, code: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def with_rules(ctx: FlowContext, *rules: AlertRule, **kw: Any) -> FlowContext:
    """A copy of the context whose config has these alert rules (same engine/store)."""
    c = FlowContext.__new__(FlowContext)
    c.__dict__.update(ctx.__dict__)
    c.config = ctx.config.model_copy(update={"alerts": AlertsConfig(rules=list(rules), **kw)})
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alert_state")
    return c


def test_metrics_agree_with_the_store(state: FlowContext) -> None:
    m = alerts.compute_metrics(state)
    v = m.values()
    with state.engine.connect() as conn:
        open_fin = conn.execute(sa.select(sa.func.count()).select_from(dl_t).where(
            dl_t.c.status == "open", dl_t.c.queue == "financial")).scalar_one()
        first_journal = conn.execute(sa.select(sa.func.min(pj_t.c.posted_at))).scalar_one()
        approved = [dt.datetime.fromisoformat(a) for (a,) in conn.execute(
            sa.select(inbox_t.c.payload["approved_at"].as_string()).where(inbox_t.c.entity == "time_entry")) if a]
    assert open_fin > 0 and v["dead_letters_open_financial"] == open_fin
    assert sum(n for _, n in m.aging["financial"]) == open_fin
    assert sum(n for _, n in m.lag_histogram()) == len(m.posting_lag_hours) > 0
    # every lag is posted_at - approved_at: none shorter than (first posting - latest approval)
    floor = (first_journal.replace(tzinfo=dt.UTC) - max(approved)).total_seconds() / 3600
    assert min(m.posting_lag_hours.values()) >= max(floor, 0) - 1e-6
    assert v["posting_lag_p50_hours"] <= v["posting_lag_p95_hours"] <= v["posting_lag_max_hours"]
    assert {f["domain"] for f in m.freshness} == {"time_entry", "expense"}
    assert v["stale_domains"] == 0  # just received
    assert m.recon is not None and v["recon_unexplained_cells"] == 0 and v["recon_variance_abs"] > 0
    assert m.roi["items_posted"] == m.roi["auto_posted"]  # nobody replayed anything yet
    # an hour-long stale threshold, evaluated two hours later: every domain is stale
    later = alerts.compute_metrics(state, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
                                   settings=AlertsConfig(stale_after_hours=1))
    assert later.values()["stale_domains"] == len(m.freshness)


def test_rule_fires_once_to_the_webhook_then_resolves(state: FlowContext, hook: Hook) -> None:
    ctx = with_rules(state, AlertRule(name="fin_dlq", metric="dead_letters_open_financial", threshold=Decimal(0),
                                      severity="critical", webhook_url=hook.url))
    out = alerts.check_alerts(ctx)
    assert [o.state for o in out] == ["firing"]
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert body["alert"] == "fin_dlq" and body["status"] == "firing" and body["severity"] == "critical"
    assert body["value"] == alerts.compute_metrics(state).values()["dead_letters_open_financial"] > 0
    assert body["runbook"] == "docs/runbooks/dead-letters.md" and (ROOT / body["runbook"]).exists()
    # still breached: no second notification
    assert [o.state for o in alerts.check_alerts(ctx)] == ["fired"] and len(hook.bodies) == 1
    # the queue is worked (letters discarded): the rule resolves and says so once
    with state.engine.begin() as conn:
        ids = [i for (i,) in conn.execute(sa.select(dl_t.c.id).where(dl_t.c.status == "open"))]
        conn.execute(dl_t.update().where(dl_t.c.id.in_(ids)).values(status="discarded", resolution="test"))
    try:
        assert [o.state for o in alerts.check_alerts(ctx)] == ["resolved"]
        assert [b["status"] for b in hook.bodies] == ["firing", "resolved"]
        assert [o.state for o in alerts.check_alerts(ctx)] == ["ok"] and len(hook.bodies) == 2
    finally:
        with state.engine.begin() as conn:
            conn.execute(dl_t.update().where(dl_t.c.id.in_(ids)).values(status="open", resolution=None))


def test_duration_holds_the_alert_back(state: FlowContext, hook: Hook) -> None:
    ctx = with_rules(state, AlertRule(name="lag", metric="posting_lag_p95_hours", threshold=Decimal(1),
                                      for_minutes=30), webhook_url=hook.url)
    t0 = dt.datetime.now(dt.UTC)
    m = alerts.compute_metrics(state, now=t0)
    assert [o.state for o in alerts.check_alerts(ctx, now=t0, metrics=m)] == ["pending"]
    assert [o.state for o in alerts.check_alerts(ctx, now=t0 + dt.timedelta(minutes=29), metrics=m)] == ["pending"]
    assert hook.bodies == []
    out = alerts.check_alerts(ctx, now=t0 + dt.timedelta(minutes=31), metrics=m)
    assert [o.state for o in out] == ["firing"] and out[0].breach_since == t0.isoformat()
    assert len(hook.bodies) == 1 and hook.bodies[0]["runbook"] == "docs/runbooks/posting-lag.md"


def test_failing_webhook_falls_back_to_the_log(state: FlowContext) -> None:
    bad = Hook(code=500)
    try:
        ctx = with_rules(state, AlertRule(name="dlq", metric="dead_letters_open", threshold=Decimal(0),
                                          webhook_url=bad.url))
        out = alerts.check_alerts(ctx)
        assert out[0].state == "firing" and out[0].notified == "log"
        assert out[0].error and "500" in out[0].error and len(bad.bodies) == 1
    finally:
        bad.close()


def test_below_threshold_stays_ok_and_unknown_metric_is_named(state: FlowContext, hook: Hook) -> None:
    ctx = with_rules(state, AlertRule(name="calm", metric="dead_letters_open", threshold=Decimal(10_000),
                                      webhook_url=hook.url))
    assert [o.state for o in alerts.check_alerts(ctx)] == ["ok"] and hook.bodies == []
    bad = with_rules(state, AlertRule(name="typo", metric="dead_leters", threshold=Decimal(1)))
    with pytest.raises(ValueError, match=r"alerts.rules\[typo\]: unknown metric 'dead_leters'"):
        alerts.check_alerts(bad)


def test_every_metric_has_its_runbook() -> None:
    for name, (_desc, page) in alerts.METRICS.items():
        assert (ROOT / "docs" / "runbooks" / page).exists(), f"{name}: docs/runbooks/{page} missing"


def test_cli_alerts_check_exits_1_when_firing(state: FlowContext, tmp_path: Path, hook: Hook) -> None:
    from ledgerbridge.cli import app

    url = str(state.config.store.url)
    cfg = tmp_path / "lb.yaml"
    cfg.write_text(f"version: 1\nstore:\n  url: {json.dumps(url)}\nalerts:\n  webhook_url: {hook.url}\n  rules:\n"
                   "    - {name: dlq, metric: dead_letters_open, threshold: 0}\n")
    with state.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alert_state")
    res = CliRunner().invoke(app, ["alerts", "check", "--config", str(cfg), "--json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    assert doc[0]["state"] == "firing" and doc[0]["runbook"] == "docs/runbooks/dead-letters.md"
    assert len(hook.bodies) == 1
