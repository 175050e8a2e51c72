"""Kantata OX as a configured PSA source through the whole engine (sandbox over real HTTP): approved timesheets
post; an un-approval (cancelled submission), a re-approved edit and a deletion after posting become reversals
(and a re-post) in the embedded ledger; a sync run again changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.domain.costing import RateBook
from ledgerbridge.flows.sources import load_source_master
from ledgerbridge.model.entities import RateCardLine, RateKind
from ledgerbridge.store import journals, periods
from ledgerbridge.store.schema import staging_lines
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.kantata import create_app

from flows_support import make_ctx, posted_net_by_item, sync_and_post, tiny_firm

TODAY = dt.datetime.now(dt.UTC).date()
DAY = TODAY - dt.timedelta(days=1)
PERIOD = DAY.strftime("%Y-%m")
COST = Decimal("80.00")
SYSTEM = "psa_kt"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, str, str]]:
    monkeypatch.setenv("LB_TEST_KANTATA_ID", "demo-client")
    monkeypatch.setenv("LB_TEST_KANTATA_SECRET", "demo-secret")
    monkeypatch.setenv("LB_TEST_KANTATA_REFRESH", "demo-refresh")
    app = create_app(shuffle_events=True, duplicate_events=True)
    store = app.state.store
    export = tiny_firm(tmp_path / "firm", employees=4, months=1, seed=9)
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    with ctx.engine.begin() as conn:
        periods.set_period(conn, "US01", PERIOD, "open")
    customer = next(c.id for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")
    ws = store.add_workspace("Flow", currency="USD", client_name="Acme")
    user = store.add_user("Ada Lovelace")
    with serve_in_thread(app) as base:
        options = {"url": f"{base}/api/v1", "rescan_every": 1, "rescan_window_seconds": 3600,
                   "rate_limit_wait_seconds": 0.05,
                   "projects": {"legal_entity_id": "US01", "customer_id": customer, "cost_center": "CC-DEL-US"},
                   "resources": {"role": "Consultant", "home_entity_id": "US01", "cost_center": "CC-DEL-US"}}
        system = SystemConfig(connector="kantata", role="psa", options=options, secrets={
            "client_id": SecretRef("${env:LB_TEST_KANTATA_ID}"),
            "client_secret": SecretRef("${env:LB_TEST_KANTATA_SECRET}"),
            "refresh_token": SecretRef("${env:LB_TEST_KANTATA_REFRESH}")})
        routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="ledger")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, SYSTEM: system},
                                                   "routing": routing})
        ctx.reset_connectors()
        assert load_source_master(ctx, SYSTEM) == {"projects": 1, "resources": 1}
        ctx.reference.rate_lines += [
            RateCardLine(id="kt-cost", kind=RateKind.COST, rate=COST, currency="USD",
                         effective_from=dt.date(2020, 1, 1), resource_id=user),
            RateCardLine(id="kt-bill", kind=RateKind.BILL, rate=Decimal("200.00"), currency="USD",
                         effective_from=dt.date(2020, 1, 1), resource_id=user, project_id=ws)]
        ctx.reference.rates = RateBook.from_lines(ctx.reference.rate_lines)
        yield ctx, store, ws, user


def net_by_item(ctx: Any) -> dict[str, Decimal]:
    return posted_net_by_item(ctx, SYSTEM)


def cycle(ctx: Any) -> None:
    sync_and_post(ctx, SYSTEM, "US01", PERIOD)


def test_kantata_approvals_reach_the_ledger_as_posts_and_reversals(setup: tuple[Any, Any, str, str]) -> None:
    ctx, s, ws, user = setup
    day = DAY.isoformat()
    a, b, c, d = (s.add_time_entry(ws, user, day, m) for m in (450, 240, 120, 180))
    sub_a, sub_b, sub_c, sub_d = (s.submit([x]) for x in (a, b, c, d))
    for sub in (sub_a, sub_b, sub_d):
        s.approve(sub)
    cycle(ctx)  # c only submitted: not posted
    assert net_by_item(ctx) == {a: Decimal("600.00"), b: Decimal("320.00"), d: Decimal("240.00")}

    s.cancel(sub_a)  # un-approve a, edit it, resubmit and approve again: reverse 7.5 h, post 5 h
    s.update_time_entry(a, time_in_minutes=300)
    s.approve(s.submit([a]))
    s.cancel(sub_b)  # un-approved after posting: reversed
    s.approve(sub_c)  # approved late: posted
    s.delete_time_entry(d)  # deleted after posting: reversed
    cycle(ctx)
    assert net_by_item(ctx) == {a: Decimal("400.00"), c: Decimal("160.00")}
    with ctx.engine.connect() as conn:
        reversals = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.source_system == SYSTEM, staging_lines.c.sign == -1)).scalar_one()
        before = len(journals.list_journals(conn, legal_entity_id="US01"))
    assert reversals >= 3 * 2  # labor cost and revenue accrual reversed for a, b and d
    cycle(ctx)  # nothing new in Kantata (the duplicated feed and the re-scan read it all again): nothing twice
    with ctx.engine.connect() as conn:
        assert len(journals.list_journals(conn, legal_entity_id="US01")) == before
    assert net_by_item(ctx) == {a: Decimal("400.00"), c: Decimal("160.00")}
    assert ctx.connector("ledger").check() == []
