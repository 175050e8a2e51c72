"""Redmine as a configured PSA source through the whole engine, live: entries created, approved, edited,
un-approved and deleted in a real Redmine reach the embedded ledger as posts, reversals and re-posts; a sync run
again changes nothing. Uses the session's private Redmine instance (ledgerbridge.testing.redmine_server)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.domain.costing import RateBook
from ledgerbridge.flows.sources import load_source_master
from ledgerbridge.model.entities import RateCardLine, RateKind
from ledgerbridge.store import journals
from ledgerbridge.store.schema import staging_lines
from ledgerbridge.testing.redmine_server import RedmineSettings
from ledgerbridge.testing.redmine_server import redmine_server as redmine_server

from flows_support import make_ctx, posted_net_by_item, sync_and_post, tiny_firm

TODAY = dt.datetime.now(dt.UTC).date()
DAY = TODAY - dt.timedelta(days=1)
PERIOD = DAY.strftime("%Y-%m")
COST, BILL = Decimal("80.00"), Decimal("200.00")


@pytest.fixture
def setup(tmp_path: Path, redmine_server: RedmineSettings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LB_TEST_REDMINE_KEY", redmine_server.api_key)
    export = tiny_firm(tmp_path / "firm", employees=4, months=1, seed=9)
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    # the firm's periods must cover today: open the current month for US01
    from ledgerbridge.store import periods

    with ctx.engine.begin() as conn:
        periods.set_period(conn, "US01", PERIOD, "open")
    customer = next(c.id for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")
    api = redmine_server.client()
    ident = f"lbflow{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}"
    project = api.create_project(f"Flow {ident}", ident)
    options = redmine_server.options(
        projects={"legal_entity_id": "US01", "customer_id": customer, "currency": "USD",
                  "cost_center": "CC-DEL-US"},
        resources={"role": "Consultant", "home_entity_id": "US01", "cost_center": "CC-DEL-US"})
    system = SystemConfig(connector="redmine", role="psa", options=options,
                          secrets={"api_key": SecretRef("${env:LB_TEST_REDMINE_KEY}")})
    routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="ledger")}})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "psa_rm": system},
                                               "routing": routing})
    ctx.reset_connectors()
    load_source_master(ctx, "psa_rm")
    admin = next(r for r in ctx.connector("psa_rm").resources() if r.active)
    lines = [RateCardLine(id="rm-cost", kind=RateKind.COST, rate=COST, currency="USD",
                          effective_from=dt.date(2020, 1, 1), resource_id=admin.id),
             RateCardLine(id="rm-bill", kind=RateKind.BILL, rate=BILL, currency="USD",
                          effective_from=dt.date(2020, 1, 1), resource_id=admin.id, project_id=str(project["id"]))]
    ctx.reference.rate_lines += lines
    ctx.reference.rates = RateBook.from_lines(ctx.reference.rate_lines)
    yield ctx, api, redmine_server, project
    api.close()


def entry(api, settings: RedmineSettings, project, hours: str, approved: bool) -> int:
    cf = settings.custom_fields
    e = api.create_time_entry({"project_id": project["id"], "hours": hours, "spent_on": DAY.isoformat(),
                               "comments": "flow", "custom_fields": [
                                   {"id": cf["Approved"], "value": "1" if approved else "0"},
                                   {"id": cf["Billable"], "value": "1"}]})
    return int(e["id"])


def set_cf(api, settings: RedmineSettings, entry_id: int, name: str, value: str) -> None:
    api.update_time_entry(entry_id, {"custom_fields": [{"id": settings.custom_fields[name], "value": value}]})


def net_by_item(ctx) -> dict[str, Decimal]:
    return posted_net_by_item(ctx, "psa_rm")


def cycle(ctx) -> None:
    sync_and_post(ctx, "psa_rm", "US01", PERIOD)


def test_redmine_changes_reach_the_ledger_as_posts_and_reversals(setup) -> None:
    ctx, api, settings, project = setup
    a = entry(api, settings, project, "7.5", approved=True)
    b = entry(api, settings, project, "4", approved=True)
    c = entry(api, settings, project, "2", approved=False)
    d = entry(api, settings, project, "3", approved=True)
    cycle(ctx)
    assert net_by_item(ctx) == {str(a): Decimal("600.00"), str(b): Decimal("320.00"), str(d): Decimal("240.00")}

    api.update_time_entry(a, {"hours": "5"})  # edited after posting: reverse 7.5 h, post 5 h
    set_cf(api, settings, b, "Approved", "0")  # un-approved after posting: reversed
    set_cf(api, settings, c, "Approved", "1")  # approved late: posted
    api.delete_time_entry(d)  # deleted after posting: reversed
    cycle(ctx)
    assert net_by_item(ctx) == {str(a): Decimal("400.00"), str(c): Decimal("160.00")}
    with ctx.engine.connect() as conn:
        rev = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.source_system == "psa_rm", staging_lines.c.sign == -1)).scalar_one()
        posted = journals.list_journals(conn, legal_entity_id="US01")
    assert rev >= 3 * 2  # labor cost and revenue accrual reversed for a, b and d
    before = len(posted)
    cycle(ctx)  # nothing new in Redmine: nothing twice
    with ctx.engine.connect() as conn:
        assert len(journals.list_journals(conn, legal_entity_id="US01")) == before
    assert net_by_item(ctx) == {str(a): Decimal("400.00"), str(c): Decimal("160.00")}
    assert ctx.connector("ledger").check() == []
