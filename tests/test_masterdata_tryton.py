"""Master data propagation into a real ERP: customers and projects pushed to a live Tryton (PostgreSQL backend,
project modules) through the configured connector, bound in the xref with Tryton's ids, not sent again when
unchanged, and a record Tryton refuses waiting in the operational dead-letter queue. Skips visibly when Tryton
cannot be installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.flows import masterdata
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.store import dead_letters, xref
from ledgerbridge.testing.tryton_server import TrytonSettings, live_tryton

from flows_support import tiny_firm


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonSettings]:
    with live_tryton("postgresql") as s:
        yield s


@pytest.fixture
def ctx(tmp_path: Path, tryton: TrytonSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlowContext]:
    monkeypatch.setenv("LB_TEST_TRYTON_PASSWORD", tryton.password)
    tiny_firm(tmp_path)
    data = demo_config(tmp_path).model_dump(mode="json", exclude_none=True)
    data["systems"]["erp_tryton"] = {
        "connector": "tryton", "role": "erp", "secrets": {"password": "${env:LB_TEST_TRYTON_PASSWORD}"},
        "options": {"url": tryton.url, "database": tryton.database, "user": tryton.user, "legal_entity_id": "US01",
                    "account_map": dict(UNIVERSAL_CHART_MAP)}}
    data["master_data"] = {"entities": {
        "customer": {"fields": {"credit_terms_days": "erp_tryton"}, "propagate_to": ["erp_tryton"]},
        "project": {"propagate_to": ["erp_tryton"]}}}
    c = FlowContext(LedgerbridgeConfig.model_validate(data, context={"base_dir": str(tmp_path)}), workdir=tmp_path)
    c.migrate()
    load_reference(c, SOURCE)
    yield c
    c.engine.dispose()


def test_propagation_pushes_to_tryton_once(ctx: FlowContext) -> None:
    custs = list(ctx.reference.customers.values())
    projs = list(ctx.reference.projects.values())
    res = masterdata.sync_master(ctx, SOURCE, [*custs, *projs])
    with ctx.engine.connect() as conn:
        errors = [lt.error_text for lt in dead_letters.list_letters(conn)]
    assert res.pushed == {"erp_tryton": len(custs) + len(projs)} and res.push_failed == 0, errors[:2]
    tryton = ctx.connector("erp_tryton")
    parties = {r["code"]: r["id"] for r in tryton.client.search_read(
        "party.party", [("code", "in", [c.id for c in custs])], ["code"])}
    assert set(parties) == {c.id for c in custs}
    with ctx.engine.connect() as conn:
        bound = xref.lookup_many(conn, "customer", "erp_tryton", [c.id for c in custs])
    assert {cid: int(b.external_id) for cid, b in bound.items()} == parties
    # nothing changed: nothing is sent again
    creates = dict(tryton.client.stats.by_method)
    assert masterdata.sync_master(ctx, SOURCE, [*custs, *projs]).pushed == {}
    assert masterdata.push_pending(ctx, "customer").pushed == {}
    assert tryton.client.stats.by_method.get("model.party.party.create") == creates.get("model.party.party.create")


def test_a_record_tryton_refuses_waits_in_the_operational_queue(ctx: FlowContext) -> None:
    proj = next(iter(ctx.reference.projects.values()))
    orphan = proj.model_copy(update={"id": "PRJ-ORPHAN", "customer_id": "CUST-NOT-IN-TRYTON"})
    res = masterdata.sync_master(ctx, SOURCE, [orphan])
    assert res.propagated > 0 and res.push_failed == 1
    assert ctx.reference.projects["PRJ-ORPHAN"].customer_id == "CUST-NOT-IN-TRYTON"  # canonical side recorded
    with ctx.engine.connect() as conn:
        [letter] = dead_letters.list_letters(conn, flow="masterdata.push")
    assert (letter.queue, letter.system, letter.entity, letter.item_key) == (
        "operational", "erp_tryton", "project", "PRJ-ORPHAN")
    assert "CUST-NOT-IN-TRYTON" in letter.error_text and letter.payload["record"]["id"] == "PRJ-ORPHAN"
