"""/metrics in business terms: posting lag (approved -> posted, per source version, counted once), dead letters by
queue and age, data freshness per system and domain, flow and webhook counters, target API calls and 429s,
reconciliation variance."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ledgerbridge.flows import transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.service import metrics
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.store import inbox, journals

from flows_support import make_ctx, records, tiny_firm


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), employees=3, months=1)


@pytest.fixture
def env(tmp_path: Path, export: Path) -> Iterator[tuple[Any, TestClient, str]]:
    ctx = make_ctx(tmp_path / "wd", export_from=export)
    recs = records(ctx)
    bad = next(r for r in recs if r["entity"] == "time_entry" and r["payload"]["approval_status"] == "approved")
    recs.append({**bad, "external_id": "TE-BAD", "payload": {**bad["payload"], "id": "TE-BAD",
                                                             "project_id": "P-NOPE"}})
    transactions.land(ctx, SOURCE, recs)
    transactions.process_pending(ctx)
    with TestClient(create_app(ctx, ServiceSettings(worker=False))) as client:
        yield ctx, client, st.issue_token(ctx, "operate")


def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_posting_lag_counts_every_posted_source_version_once(env: Any) -> None:
    ctx, client, tok = env
    for entity in sorted(ctx.reference.entities):
        for period in ("2026-09",):
            client.post("/api/v1/runs", json={"entity": entity, "period": period},
                        headers={"Authorization": f"Bearer {tok}"})
    # expected, computed through the repositories: every source version on a posted journal with an approved_at
    want: dict[str, list[float]] = {}
    seen: set[str] = set()
    with ctx.engine.connect() as conn:
        posted = sorted(journals.list_journals(conn), key=lambda j: (j.posted_at, j.id))
        first_posted: dict[str, tuple[Any, str]] = {}
        for j in posted:
            for line in j.lines:
                for ref in line.lineage:
                    key = f"{ref['system']}:{ref['entity']}:{ref['id']}:{ref['version']}"
                    first_posted.setdefault(key, (j.posted_at, j.legal_entity_id))
        payloads = inbox.get_many(conn, list(first_posted))
    for key, (at, entity) in first_posted.items():
        approved = payloads[key].payload.get("approved_at") if key in payloads else None
        if approved and key not in seen:
            seen.add(key)
            lag = (at - dt.datetime.fromisoformat(approved)).total_seconds()
            want.setdefault(entity, []).append(lag)
    assert want, "the posting runs posted nothing"
    m = _scrape(client)
    for entity, lags in want.items():
        assert _get(m, "ledgerbridge_posting_lag_seconds_count", legal_entity=entity) == len(lags)
        assert _get(m, "ledgerbridge_posting_lag_seconds_sum", legal_entity=entity) == pytest.approx(sum(lags))
    again = _scrape(client)  # a second scrape adds nothing
    for entity, lags in want.items():
        assert _get(again, "ledgerbridge_posting_lag_seconds_count", legal_entity=entity) == len(lags)
    m2 = _scrape(client)
    assert _get(m2, "ledgerbridge_posting_runs", status="posted") == len(want)
    assert _get(m2, "ledgerbridge_flow_runs_total", flow="posting", outcome="completed") >= len(want)


def test_dead_letters_freshness_and_inbox_gauges(env: Any) -> None:
    _, client, _ = env
    m = _scrape(client)
    assert _get(m, "ledgerbridge_dead_letters", queue="financial", age="lt_1h") == 1
    assert _get(m, "ledgerbridge_dead_letters", queue="financial", age="gt_7d") == 0
    assert ("ledgerbridge_dead_letters", (("age", "1d_7d"), ("queue", "operational"))) in m
    rx = _get(m, "ledgerbridge_data_freshness_seconds", system=SOURCE, domain="time_entry", stage="received")
    px = _get(m, "ledgerbridge_data_freshness_seconds", system=SOURCE, domain="time_entry", stage="processed")
    assert 0 < px <= rx < 600
    assert _get(m, "ledgerbridge_inbox_items", status="processed") > 0


def test_webhook_counters_and_accept_latency(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, client, _ = env
    monkeypatch.setenv("LBT_M_SECRET", "whsec-metrics-0a0b0c")
    st.with_secret(ctx, SOURCE, "webhook", "${env:LBT_M_SECRET}")
    from ledgerbridge.service.webhooks import signed_headers

    body = st.body_of(st.time_entry_event(st.fresh_entry(st.source_entries(ctx, SOURCE)[0], "M-1")))
    client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers("whsec-metrics-0a0b0c", body))
    client.post(f"/webhooks/{SOURCE}", content=body, headers=signed_headers("wrong", body))
    m = _scrape(client)
    assert _get(m, "ledgerbridge_webhooks_total", system=SOURCE, outcome="accepted") == 1
    assert _get(m, "ledgerbridge_webhooks_total", system=SOURCE, outcome="bad_signature") == 1
    assert _get(m, "ledgerbridge_webhook_accept_seconds_count", system=SOURCE) == 1
    assert not [k for k in m if k[0].endswith("_created")]


def test_target_calls_429s_and_reconciliation_variance(env: Any) -> None:
    _, client, _ = env
    before = _scrape(client)
    metrics.record_api_call("netsuite", 200)
    metrics.record_api_call("netsuite", 429)
    metrics.record_rate_limited("netsuite")
    from ledgerbridge.flows.reconcile import Cell, Reconciliation

    recon = Reconciliation(cells=[Cell("DE01", "2026-09", "revenue", "EUR", variance=Decimal("12.50"),
                                       unexplained=Decimal("0.01"))])
    assert metrics.record_reconciliation(recon) == 1
    m = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _get(m, name, **labels) - _get(before, name, **labels)

    assert delta("ledgerbridge_target_api_calls_total", target="netsuite", outcome="200") == 1
    assert delta("ledgerbridge_target_api_calls_total", target="netsuite", outcome="429") == 1
    assert delta("ledgerbridge_target_rate_limited_total", target="netsuite") == 2
    labels = {"legal_entity": "DE01", "period": "2026-09", "measure": "revenue", "currency": "EUR"}
    assert _get(m, "ledgerbridge_reconciliation_unexplained", **labels) == 0.01
    assert _get(m, "ledgerbridge_reconciliation_variance", **labels) == 12.5


def test_every_metric_has_a_business_name_and_help(env: Any) -> None:
    _, client, _ = env
    text = client.get("/metrics").text
    names = set(re.findall(r"^# HELP (\S+) ", text, flags=re.M))
    assert {"ledgerbridge_posting_lag_seconds", "ledgerbridge_dead_letters", "ledgerbridge_data_freshness_seconds",
            "ledgerbridge_flow_runs_total", "ledgerbridge_target_api_calls_total",
            "ledgerbridge_target_rate_limited_total", "ledgerbridge_reconciliation_unexplained",
            "ledgerbridge_webhooks_total"} <= names
    assert all(n.startswith("ledgerbridge_") for n in names), names
