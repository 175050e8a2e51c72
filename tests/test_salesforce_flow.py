"""Certinia (Salesforce) as a configured PSA source through the whole engine: a weekly timecard approved and
included in financials is posted per day; recalled after posting it is reversed; approved again with other hours it
is re-posted; an expense rejected after posting is reversed; a sync with nothing new changes nothing. Runs against
the Salesforce sandbox (real HTTP) with the flows and the embedded Beancount ledger, like test_redmine_flow.py."""

from __future__ import annotations

import datetime as dt
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
from ledgerbridge.testing.sandboxes.salesforce import connector_options, create_app

from flows_support import make_ctx, posted_net_by_item, sync_and_post, tiny_firm

PERIOD = "2026-09"
WEEK = "2026-09-14"  # a Monday
COST, BILL = Decimal("80.00"), Decimal("200.00")
TC = "pse__Timecard_Header__c"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    app = create_app(seed=False, page_size=50)
    st = app.state.store
    proj = st.insert("pse__Proj__c", {"Name": "Flow", "CurrencyIsoCode": "USD", "pse__Is_Active__c": True,
                                      "pse__Billing_Type__c": "Time and Materials", "pse__Start_Date__c": "2026-09-01"})
    person = st.insert("Contact", {"Name": "Ada", "pse__Is_Resource__c": True, "pse__Is_Resource_Active__c": True})
    with serve_in_thread(app) as base:
        monkeypatch.setenv("LB_TEST_SF_KEY", app.state.private_key_pem)
        export = tiny_firm(tmp_path / "firm", employees=4, months=1, seed=9)
        ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
        with ctx.engine.begin() as conn:
            periods.set_period(conn, "US01", PERIOD, "open")
        customer = next(c.id for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")
        options = connector_options(app, base, "certinia", projects={
            "legal_entity_id": "US01", "customer_id": customer, "currency": "USD", "cost_center": "CC-DEL-US"},
            resources={"role": "Consultant", "home_entity_id": "US01", "cost_center": "CC-DEL-US"})
        system = SystemConfig(connector="salesforce", role="psa", options=options,
                              secrets={"private_key": SecretRef("${env:LB_TEST_SF_KEY}")})
        routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="ledger")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "psa_sf": system},
                                                   "routing": routing})
        ctx.reset_connectors()
        assert load_source_master(ctx, "psa_sf") == {"projects": 1, "resources": 1}
        ctx.reference.rate_lines += [
            RateCardLine(id="sf-cost", kind=RateKind.COST, rate=COST, currency="USD",
                         effective_from=dt.date(2020, 1, 1), resource_id=person),
            RateCardLine(id="sf-bill", kind=RateKind.BILL, rate=BILL, currency="USD",
                         effective_from=dt.date(2020, 1, 1), resource_id=person, project_id=proj)]
        ctx.reference.rates = RateBook.from_lines(ctx.reference.rate_lines)
        yield ctx, st, proj, person


def net(ctx: Any, entity: str, txn_type: str) -> dict[str, Decimal]:
    return posted_net_by_item(ctx, "psa_sf", txn_type=txn_type, entity=entity)


def cycle(ctx: Any) -> None:
    sync_and_post(ctx, "psa_sf", "US01", PERIOD)


def test_timecard_recalled_after_posting_is_reversed_and_reposted_when_approved_again(setup) -> None:
    ctx, st, proj, person = setup
    card = st.insert(TC, {"pse__Project__c": proj, "pse__Resource__c": person, "pse__Start_Date__c": WEEK,
                          "pse__Monday_Hours__c": Decimal("7.5"), "pse__Tuesday_Hours__c": Decimal("4"),
                          "pse__Status__c": "Approved", "pse__Approved__c": True,
                          "pse__Include_In_Financials__c": True, "pse__Billable__c": True})
    exp = st.insert("pse__Expense__c", {"pse__Project__c": proj, "pse__Resource__c": person,
                                        "pse__Expense_Date__c": "2026-09-15", "pse__Amount__c": Decimal("42.10"),
                                        "CurrencyIsoCode": "USD", "pse__Type__c": "Meals", "pse__Billable__c": True,
                                        "pse__Status__c": "Approved", "pse__Include_In_Financials__c": True})
    mon, tue = f"{card}:2026-09-14", f"{card}:2026-09-15"
    cycle(ctx)
    assert net(ctx, "time_entry", "labor_cost") == {mon: Decimal("600.00"), tue: Decimal("320.00")}
    posted_expense = net(ctx, "expense", "expense")
    assert list(posted_expense) == [exp]

    # recalled after it was included in financials: Certinia puts it back to Saved and clears the flag
    st.update(TC, card, {"pse__Status__c": "Saved", "pse__Approved__c": False,
                         "pse__Include_In_Financials__c": False})
    st.update("pse__Expense__c", exp, {"pse__Status__c": "Rejected", "pse__Include_In_Financials__c": False})
    cycle(ctx)
    assert net(ctx, "time_entry", "labor_cost") == {}
    assert net(ctx, "expense", "expense") == {}

    st.update(TC, card, {"pse__Monday_Hours__c": Decimal("5"), "pse__Status__c": "Approved",
                         "pse__Approved__c": True, "pse__Include_In_Financials__c": True})
    cycle(ctx)
    assert net(ctx, "time_entry", "labor_cost") == {mon: Decimal("400.00"), tue: Decimal("320.00")}
    with ctx.engine.connect() as conn:
        reversals = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.source_system == "psa_sf", staging_lines.c.sign == -1)).scalar_one()
        before = len(journals.list_journals(conn, legal_entity_id="US01"))
    assert reversals >= 2 * 2 + 1  # labour cost and revenue accrual of both days, and the expense
    cycle(ctx)  # nothing new in Salesforce: nothing twice
    with ctx.engine.connect() as conn:
        assert len(journals.list_journals(conn, legal_entity_id="US01")) == before
    assert ctx.connector("ledger").check() == []
