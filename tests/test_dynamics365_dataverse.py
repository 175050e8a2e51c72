"""Project Operations on Dataverse through the Dynamics 365 connector (against the sandbox): projects upserted by
alternate key (created once, then updated in place; create-only refused when the row exists), and cost actuals of
approved time read change-tracked — the first read follows nextLinks to an ``@odata.deltaLink``, the next returns
only what changed (a new version of an edited actual, a new one, the id of a deleted one), then nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dynamics365_support import SECRET, SYSTEM, connector_options, d365_ctx, serve
from ledgerbridge.config.schema import SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.dynamics365 import D365Connector
from ledgerbridge.connectors.dynamics365.mapping import BILLING_CHARGEABLE, CLASS_TIME, TYPE_COST
from ledgerbridge.errors import ConflictError, PermanentError
from ledgerbridge.flows import posting, sources, transactions
from ledgerbridge.model.entities import ContractType, Project, TimeEntry
from ledgerbridge.store import journals

from flows_support import tiny_firm

PROJECT = Project(id="PRJ-00001", name="Bluth Advisory", customer_id="CUST-00001", legal_entity_id="US01",
                  contract_type=ContractType.TIME_AND_MATERIALS, currency="USD", cost_center="CC-DEL-US",
                  start_date=dt.date(2026, 1, 1))


def test_projects_upserted_by_alternate_key() -> None:
    with serve() as (app, base):
        conn = D365Connector.from_options("erp_d365", connector_options(base, project_target="dataverse"),
                                          client_secret=SECRET)
        first = conn.push_projects([PROJECT])
        rows = app.state.store.dataverse["msdyn_projects"]
        assert len(rows) == 1 and next(iter(rows.values()))["msdyn_externalid"] == "PRJ-00001"
        again = conn.push_projects([PROJECT.model_copy(update={"name": "Bluth Advisory (renamed)"})])
        assert again == first and len(rows) == 1
        assert next(iter(rows.values()))["msdyn_subject"] == "Bluth Advisory (renamed)"
        assert app.state.calls.count(method="PATCH", path_prefix="/api/data/v9.2/msdyn_projects") == 2
        with pytest.raises(ConflictError):  # If-None-Match: * — create only
            conn.client.dv_upsert("msdyn_projects", "msdyn_externalid", "PRJ-00001", {"msdyn_subject": "x"},
                                  mode="create")
        assert app.state.store.rows("ProjectsV2") == []  # went to Dataverse, not to F&O


def actual(n: int, hours: str, *, cls: int = CLASS_TIME, typ: int = TYPE_COST) -> dict:
    return {"msdyn_actualid": f"a-{n}", "_msdyn_project_value": "p-1", "_msdyn_bookableresource_value": "r-1",
            "msdyn_documentdate": f"2026-09-{n:02d}T00:00:00Z", "msdyn_quantity": Decimal(hours),
            "msdyn_transactionclassification": cls, "msdyn_transactiontypecode": typ,
            "msdyn_billingtype": BILLING_CHARGEABLE, "msdyn_description": f"work {n}",
            "modifiedon": f"2026-09-{n:02d}T18:00:00Z"}


def seed(store: Any, project: str, resource: str, n: int, hours: str) -> None:
    """Project p-1 and bookable resource r-1 with their external ids, and ``n`` time cost actuals a-1..a-n."""
    store.dv_upsert("msdyn_projects", {"msdyn_projectid": "p-1", "msdyn_externalid": project})
    store.dv_upsert("bookableresources", {"bookableresourceid": "r-1", "msdyn_externalid": resource})
    for i in range(1, n + 1):
        store.dv_upsert("msdyn_actuals", actual(i, hours))


def test_actuals_read_with_delta_links() -> None:
    with serve() as (app, base):
        store = app.state.store
        seed(store, "PRJ-00001", "RES-00007", 5, "7.5")
        store.dv_upsert("msdyn_actuals", actual(6, "7.5", typ=192350004))  # an unbilled-sales actual: not time cost
        conn = D365Connector.from_options("erp_d365", connector_options(base, page_size=2), client_secret=SECRET)
        assert conn.capabilities().can_read("time_entry")
        first = conn.sync(None)
        assert [e.id for e in first.entries] == [f"d365-actual-a-{n}" for n in range(1, 6)]
        assert all(e.project_id == "PRJ-00001" and e.resource_id == "RES-00007" and e.billable
                   and e.hours == Decimal("7.5") for e in first.entries)
        assert first.stats["skipped"] == 1 and first.errors == [] and first.deleted == []
        assert "deltatoken=" in first.cursor["delta_link"]
        rec = first.records()[0]
        assert TimeEntry.model_validate(rec["payload"]).id == rec["external_id"]
        assert app.state.calls.count(path_prefix="/api/data/v9.2/msdyn_actuals") == 3  # 6 rows, 2 per page

        store.dv_upsert("msdyn_actuals", {**actual(2, "8"), "msdyn_actualid": "a-2"})
        store.dv_upsert("msdyn_actuals", actual(7, "4"))
        store.dv_delete("msdyn_actuals", "a-3")
        store.dv_upsert("msdyn_actuals", {**actual(8, "2"), "_msdyn_bookableresource_value": "r-unknown"})
        store.dv_upsert("msdyn_actuals", actual(9, "-7.5"))  # a reversing actual
        second = conn.sync(first.cursor)
        old = {e.id: e for e in first.entries}
        by_id = {e.id: e for e in second.entries}
        assert set(by_id) == {"d365-actual-a-2", "d365-actual-a-7"}
        assert by_id["d365-actual-a-2"].hours == Decimal("8")
        assert by_id["d365-actual-a-2"].version > old["d365-actual-a-2"].version
        assert second.deleted == ["a-3"] and not second.stats["full"]
        unknown, reversing = second.errors
        assert unknown.details["actual"] == "a-8" and "r-unknown" in unknown.message
        assert reversing.details["actual"] == "a-9" and "reversing actual" in reversing.message
        with pytest.raises(PermanentError, match="Track changes"):  # not enabled on that table
            conn.client.dv_changes("bookableresources", select=["bookableresourceid"])
        third = conn.sync(second.cursor)
        assert (third.entries, third.deleted, third.errors) == ([], [], [])
        full = conn.sync(third.cursor, full=True)
        assert len(full.entries) == 5 and len(full.errors) == 2 and full.stats["full"]  # a-3 gone, a-8/a-9 refused


def test_actuals_through_the_flows_into_f_and_o(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Project Operations as the configured time source (sync_source), F&O as the ledger: approved time read by
    delta, costed, posted; an actual edited after posting comes back as one new version and is re-posted."""
    export = tiny_firm(tmp_path / "firm")
    with serve() as (app, base):
        store = app.state.store
        seed(store, "PRJ-00008", "RES-00002", 3, "6.5")
        ctx = d365_ctx(tmp_path / "w", export, base, monkeypatch)
        po = SystemConfig(connector="dynamics365", role="psa", options=connector_options(base),
                          secrets={"client_secret": SecretRef("${env:LB_TEST_D365_SECRET}")})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "po_actuals": po}})
        ctx.reset_connectors()
        first = sources.sync_source(ctx, "po_actuals")
        assert (first.events, first.new, first.errors) == (3, 3, 0)
        transactions.process_pending(ctx)
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.journals > 0 and out.dead_lettered == 0, out
        assert sources.sync_source(ctx, "po_actuals").events == 0  # nothing changed: the delta is empty
        target = ctx.connector(SYSTEM)
        before = target.trial_balance("US01", dt.date(2026, 9, 1), dt.date(2026, 9, 30))["5000"]

        store.dv_upsert("msdyn_actuals", {**actual(2, "8"), "msdyn_actualid": "a-2"})
        second = sources.sync_source(ctx, "po_actuals")
        assert (second.events, second.new) == (1, 1)
        transactions.process_pending(ctx)
        again = posting.post_period(ctx, "US01", "2026-09")
        assert again.status == "posted" and again.journals > 0, again
        hours_cost = target.trial_balance("US01", dt.date(2026, 9, 1), dt.date(2026, 9, 30))["5000"]
        with ctx.engine.connect() as conn:
            posted = journals.list_journals(conn, legal_entity_id="US01")
        want = (sum((ln.debit for j in posted for ln in j.lines if ln.account == "5000"), Decimal(0)),
                sum((ln.credit for j in posted for ln in j.lines if ln.account == "5000"), Decimal(0)))
        # F&O's labor cost = the engine's; the 1.5 extra hours of the edited actual moved it up, nothing twice
        assert hours_cost == want and hours_cost[0] - hours_cost[1] > before[0] - before[1]
