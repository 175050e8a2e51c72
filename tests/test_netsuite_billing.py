"""NetSuite as the invoice and master-data target, through the real flows and config wiring: customers, projects
(jobs) and resources (employees) propagated by the master-data flow with upserts by external id (pushing again
sends nothing; pushing anyway creates nothing twice), and September's invoices created by ``billing.run_billing``
with NetSuite's document number and status written back; a payment in NetSuite becomes ``paid`` on the next
status sync; re-running billing creates nothing twice."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest

from ledgerbridge.config.schema import MasterDataConfig, MasterEntityRules
from ledgerbridge.flows import billing, masterdata, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters, xref
from ledgerbridge.store import invoices as invoices_repo
from netsuite_support import sandbox, wire

from flows_support import make_ctx, records, tiny_firm

SEP = "2026-09"


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("ns-billing-firm"), employees=6, months=1, seed=7)


def _master_config(ctx) -> None:
    rules = {e: MasterEntityRules(propagate_to=["erp_ns"]) for e in ("customer", "project", "resource")}
    ctx.config = ctx.config.model_copy(update={"master_data": MasterDataConfig(entities=rules)})


def test_master_data_push_is_idempotent_by_external_id(tmp_path: Path, firm: Path) -> None:
    with sandbox() as (app, base):
        store = app.state.store
        ctx = make_ctx(tmp_path / "w", export_from=firm)
        wire(ctx, app.state.demo_private_key, base, entities=("US01", "UK01", "DE01"))
        _master_config(ctx)
        ref = ctx.reference
        custs, projs, res = list(ref.customers.values()), list(ref.projects.values()), list(ref.resources.values())
        out = masterdata.sync_master(ctx, SOURCE, [*custs, *projs, *res])
        with ctx.engine.connect() as conn:
            errors = [lt.error_text for lt in dead_letters.list_letters(conn)]
        assert out.push_failed == 0 and out.pushed == {"erp_ns": len(custs) + len(projs) + len(res)}, errors[:3]
        counts = {r: store.count(r) for r in ("customer", "job", "employee")}
        assert counts == {"customer": len(custs), "job": len(projs), "employee": len(res)}
        with ctx.engine.connect() as conn:
            bound = xref.lookup_many(conn, "customer", "erp_ns", [c.id for c in custs])
        ids = {r["externalid"]: str(r["id"]) for r in store.rows("SELECT id, externalid FROM customer")}
        assert {cid: b.external_id for cid, b in bound.items()} == ids
        # each job under its customer, each employee in its home subsidiary with its cost center's department
        job = store.one("SELECT parent, subsidiary FROM job WHERE externalid = ?", projs[0].id)
        assert job is not None and str(job["parent"]) == ids[projs[0].customer_id]
        emp = store.one("SELECT e.subsidiary, d.externalid AS dept FROM employee e JOIN department d "
                        "ON d.id = e.department WHERE e.externalid = ?", res[0].id)
        assert emp is not None and emp["dept"] == res[0].cost_center

        # nothing changed: nothing is sent; pushed anyway (a retry after a crash): upserts, no duplicates
        puts = app.state.calls.count(method="PUT")
        assert masterdata.sync_master(ctx, SOURCE, [*custs, *projs, *res]).pushed == {}
        assert app.state.calls.count(method="PUT") == puts
        target = ctx.connector("erp_ns")
        assert target.push_customers(custs) == ids
        assert {r: store.count(r) for r in ("customer", "job", "employee")} == counts
        renamed = custs[0].model_copy(update={"name": "Renamed Co"})
        assert masterdata.sync_master(ctx, SOURCE, [renamed]).pushed == {"erp_ns": 1}
        assert store.one("SELECT companyname FROM customer WHERE externalid = ?", custs[0].id)["companyname"] == \
            "Renamed Co" and store.count("customer") == len(custs)


def test_invoice_round_trip_through_billing(tmp_path: Path, firm: Path) -> None:
    with sandbox() as (app, base):
        store = app.state.store
        ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level")
        wire(ctx, app.state.demo_private_key, base)
        target = ctx.connector("erp_ns")
        target.push_customers([c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01"])
        target.push_projects([p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01"])
        transactions.land(ctx, SOURCE, records(ctx, until=dt.datetime(2026, 10, 5, 23, 59, 59, tzinfo=dt.UTC)))
        transactions.process_pending(ctx)
        assert posting.post_period(ctx, "US01", SEP).status == "posted"

        out = billing.run_billing(ctx, SEP, "US01")
        drafted = out["draft"]["drafted"]
        created = out["create"]
        assert drafted and sorted(created["created"]) == sorted(drafted) and not created["failed"], created
        with ctx.engine.connect() as conn:
            rows = {r.id: r for r in invoices_repo.list_invoices(conn, legal_entity_id="US01")}
        held = {r["externalid"]: r for r in store.rows(
            "SELECT externalid, tranid, status, foreigntotal FROM \"transaction\" WHERE recordtype = 'invoice'")}
        assert set(held) == set(drafted)
        for inv_id in drafted:
            row = rows[inv_id]
            assert row.erp_number == held[inv_id]["tranid"] and row.erp_number.startswith("US-INV")
            assert row.status == "posted"  # NetSuite status A (Open)
            assert Decimal(held[inv_id]["foreigntotal"]) == row.net_total + row.tax_total
        status = ctx.workdir / "psa-export" / "invoice_status.csv"
        written = {r["invoice_key"]: r for r in csv.DictReader(io.StringIO(status.read_text()))}
        assert {k: (written[k]["erp_number"], written[k]["status"]) for k in drafted} == {
            k: (rows[k].erp_number, "posted") for k in drafted}

        # NetSuite booked each invoice (Dr 1100 / Cr clearing 4900); the engine staged only the relief (Dr 4900 /
        # Cr 1200), posted by the next run: in NetSuite's GL the clearing nets to zero and receivables equal the
        # invoice totals
        relief = posting.post_period(ctx, "US01", SEP)
        assert relief.status == "posted" and relief.journals > 0 and relief.dead_lettered == 0, relief
        tb = target.trial_balance("US01", SEP, SEP)
        clearing_debit, clearing_credit = tb[("4900", "USD")]
        assert clearing_debit == clearing_credit > 0
        assert tb[("1100", "USD")] == (sum(Decimal(h["foreigntotal"]) for h in held.values()), Decimal(0))

        # the customer pays in NetSuite: the next status sync and write-back say so
        paid = drafted[0]
        store.pay_invoice(paid)
        assert billing.sync_status(ctx, "US01") == {paid: "paid"}
        assert billing.write_back(ctx, "US01") == 1
        written = {r["invoice_key"]: r for r in csv.DictReader(io.StringIO(status.read_text()))}
        assert written[paid]["status"] == "paid"

        # again: nothing drafted, created or duplicated
        again = billing.run_billing(ctx, SEP, "US01")
        assert again["create"]["created"] == [] and again["draft"]["drafted"] == []
        assert store.count("invoice") == len(drafted)
        assert target.create_invoice(invoices_repo_payload(ctx, paid)).number == rows[paid].erp_number
        assert store.count("invoice") == len(drafted)


def invoices_repo_payload(ctx, invoice_id: str):
    from ledgerbridge.model.entities import Invoice

    with ctx.engine.connect() as conn:
        row = invoices_repo.get(conn, invoice_id)
    assert row is not None
    return Invoice.model_validate(row.payload)
