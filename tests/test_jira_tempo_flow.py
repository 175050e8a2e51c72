"""Jira Cloud + Tempo as a configured PSA source through the whole engine (config only, built by the registry):
worklogs approved in Tempo are posted to the embedded ledger; a timesheet reopened after posting reverses its
worklogs, a deleted worklog is reversed, a re-approved edited worklog is posted again; a sync run again changes
nothing. Sandboxes on real loopback HTTP."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from jira_tempo_support import EMAIL, TEMPO_TOKEN, TOKEN, environment, seed_basics
from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.domain.costing import RateBook
from ledgerbridge.flows.sources import load_source_master
from ledgerbridge.model.entities import RateCardLine, RateKind
from ledgerbridge.store import journals, periods
from ledgerbridge.store.schema import staging_lines

from flows_support import make_ctx, posted_net_by_item, sync_and_post, tiny_firm

DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
PERIOD = DAY.strftime("%Y-%m")
COST, BILL = Decimal("80.00"), Decimal("200.00")
SYSTEM = "psa_jira"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LB_TEST_JIRA_TOKEN", TOKEN)
    monkeypatch.setenv("LB_TEST_TEMPO_TOKEN", TEMPO_TOKEN)
    export = tiny_firm(tmp_path / "firm", employees=4, months=1, seed=9)
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    with ctx.engine.begin() as conn:
        periods.set_period(conn, "US01", PERIOD, "open")
    customer = next(c.id for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")
    with environment(start=time.time() - 3000) as env:  # the sandboxes' clock runs behind, moved by the test
        basics = seed_basics(env)
        options = {"url": env.jira_url, "email": EMAIL, "tempo": {"url": env.tempo_url},
                   "projects": {"legal_entity_id": "US01", "customer_id": customer, "currency": "USD",
                                "cost_center": "CC-DEL-US"},
                   "resources": {"role": "Consultant", "home_entity_id": "US01", "cost_center": "CC-DEL-US"}}
        system = SystemConfig(connector="jira_tempo", role="psa", options=options,
                              secrets={"api_token": SecretRef("${env:LB_TEST_JIRA_TOKEN}"),
                                       "tempo_token": SecretRef("${env:LB_TEST_TEMPO_TOKEN}")})
        routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="ledger")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, SYSTEM: system},
                                                   "routing": routing})
        ctx.reset_connectors()
        load_source_master(ctx, SYSTEM)
        lines = [RateCardLine(id=f"jt-cost-{a}", kind=RateKind.COST, rate=COST, currency="USD",
                              effective_from=dt.date(2020, 1, 1), resource_id=a) for a in basics["accounts"]]
        lines.append(RateCardLine(id="jt-bill", kind=RateKind.BILL, rate=BILL, currency="USD",
                                  effective_from=dt.date(2020, 1, 1), project_id=basics["project"]))
        ctx.reference.rate_lines += lines
        ctx.reference.rates = RateBook.from_lines(ctx.reference.rate_lines)
        yield ctx, env, basics


def net_by_item(ctx) -> dict[str, Decimal]:
    return posted_net_by_item(ctx, SYSTEM)


def cycle(ctx, env) -> None:
    env.clock.advance(120)  # past the feeds' last-minute gap
    sync_and_post(ctx, SYSTEM, "US01", PERIOD)


def journal_count(ctx) -> int:
    with ctx.engine.connect() as conn:
        return len(journals.list_journals(conn, legal_entity_id="US01"))


def test_tempo_approvals_reach_the_ledger_and_a_reopened_timesheet_reverses(setup) -> None:
    ctx, env, basics = setup
    u0, u1 = basics["accounts"]
    issue = basics["issues"][0]
    a = env.log(issue, u0, DAY, 7 * 3600 + 1800)
    b = env.log(issue, u1, DAY, 4 * 3600)
    c = env.log(basics["issues"][1], u0, DAY, 3 * 3600)
    env.tempo.set_approval(u0, DAY, "APPROVED")
    env.tempo.set_approval(u1, DAY, "APPROVED")
    cycle(ctx, env)
    assert net_by_item(ctx) == {a: Decimal("600.00"), b: Decimal("320.00"), c: Decimal("240.00")}

    env.tempo.set_approval(u1, DAY, "OPEN")  # the manager reopens u1's timesheet after posting
    env.jira.delete_worklog(c)  # deleted after posting
    env.tempo.delete_worklog(env.tempo.tempo_id(c))
    cycle(ctx, env)
    assert net_by_item(ctx) == {a: Decimal("600.00")}
    with ctx.engine.connect() as conn:
        reversed_ = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.source_system == SYSTEM, staging_lines.c.sign == -1)).scalar_one()
    assert reversed_ >= 2 * 2  # labor cost and revenue accrual reversed for b and c

    env.jira.update_worklog(b, seconds=2 * 3600)  # corrected while open, then approved again
    env.tempo.update_worklog(env.tempo.tempo_id(b), seconds=2 * 3600, billable_seconds=2 * 3600)
    env.tempo.set_approval(u1, DAY, "APPROVED")
    cycle(ctx, env)
    assert net_by_item(ctx) == {a: Decimal("600.00"), b: Decimal("160.00")}

    before = journal_count(ctx)
    cycle(ctx, env)  # nothing new in Jira or Tempo: nothing twice
    assert journal_count(ctx) == before
    assert net_by_item(ctx) == {a: Decimal("600.00"), b: Decimal("160.00")}
    assert ctx.connector("ledger").check() == []
