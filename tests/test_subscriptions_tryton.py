"""create_erp_project against a real Tryton (PostgreSQL): the project is created in Tryton by lookup-before-create
and bound in xref to its timesheet work; a second delivery creates nothing; when a later action fails for good the
binding is removed (the Tryton project stays, and the dead letter says to archive it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgerbridge.config.schema import RouteTargets, SubscriptionConfig, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import set_current
from ledgerbridge.model.entities import Customer
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.store import dead_letters, xref
from ledgerbridge.testing.tryton_server import TrytonSettings, live_tryton
from subscriptions_support import approved, context_with, loopback_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonSettings]:
    with live_tryton("postgresql") as settings:
        yield settings


def test_create_erp_project_in_tryton_binds_it_and_compensation_unbinds(
        tmp_path: Path, tryton: TrytonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_TRYTON_PASSWORD", tryton.password)
    with loopback_server() as (url, _rec):
        chain = {"name": "onboard", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "erp", "kind": "create_erp_project", "compensate": {"kind": "remove_erp_project"}},
            {"name": "crm", "kind": "webhook", "options": {"url": f"{url}/ok"}}]}
        failing = {**chain, "name": "onboard-fails", "actions": [
            chain["actions"][0], {"name": "crm", "kind": "webhook", "options": {"url": f"{url}/fail"}}]}
        ctx = context_with(tmp_path / "wd", [chain])
        erp = SystemConfig(connector="tryton", role="erp",
                           secrets={"password": SecretRef("${env:LB_TRYTON_PASSWORD}")},
                           options={"url": tryton.url, "database": tryton.database, "user": tryton.user,
                                    "legal_entity_id": "US01", "account_map": dict(UNIVERSAL_CHART_MAP)})
        routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="erp_us")}})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp_us": erp},
                                                   "routing": routing})
        target = ctx.connector("erp_us")
        target.push_customers([Customer(id="C-1", name="Acme", legal_entity_id="US01", currency="USD",
                                        tax_jurisdiction="US", tax_code="US-EXEMPT")])
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                ok = subs.wait(subs.publish(ctx, [approved("P-T1")]).workflow_ids)[0]
                dup = subs.publish(ctx, [{**approved("P-T1"), "event_id": "again", "source_system": "crm2"}])
                subs.wait(dup.workflow_ids)
                ctx.config = ctx.config.model_copy(update={"subscriptions": [
                    SubscriptionConfig.model_validate(failing)]})
                bad = subs.wait(subs.publish(ctx, [approved("P-T2")]).workflow_ids)[0]
        finally:
            set_current(None)
    assert ok["status"] == "completed" and ok["actions"][0]["result"]["pushed"] is True
    works = target.client.search_read("project.work", [("comment", "in", ["ledgerbridge:P-T1", "ledgerbridge:P-T2"]),
                                                       ("type", "=", "project")], ["comment"])
    assert sorted(w["comment"] for w in works) == ["ledgerbridge:P-T1", "ledgerbridge:P-T2"], "one project each"
    with ctx.engine.connect() as conn:
        bound = xref.lookup_many(conn, "project", "erp_us", ["P-T1", "P-T2"])
        letters = dead_letters.list_letters(conn, flow=subs.FLOW)
    assert bound["P-T1"].external_id == str(ok["actions"][0]["result"]["external_id"])
    assert "P-T2" not in bound, "the compensation removed the binding"
    assert bad["status"] == "compensated"
    assert bad["compensations"][0]["result"]["note"] == "archive it in the ERP by hand"
    assert len(letters) == 1 and letters[0].payload["chain"]["actions"][0]["result"]["pushed"] is True
