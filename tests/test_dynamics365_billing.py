"""Dynamics 365 as the configured master-data and billing target of the real flows (against the sandbox):
customers and projects propagated into each legal entity's F&O company (lookup before create, nothing sent twice,
a refused record dead-lettered with F&O's infolog text); invoices of a month created as free-text invoices through
``billing.run_billing``, posted and numbered by F&O, numbers and statuses read back into the store, the receivable
booked by F&O equal to the invoice totals, and a re-run creating nothing."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dynamics365_support import COMPANIES, SYSTEM, cutoff, d365_ctx, serve
from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.flows import billing, masterdata, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters
from ledgerbridge.store import invoices as invoices_repo

from flows_support import records, tiny_firm

SEP = "2026-09"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("d365-billing-firm"))


def with_master_data(ctx, workdir: Path):
    data = ctx.config.model_dump(mode="json", exclude_none=True)
    data["master_data"] = {"entities": {"customer": {"propagate_to": [SYSTEM]},
                                        "project": {"propagate_to": [SYSTEM]}}}
    ctx.config = LedgerbridgeConfig.model_validate(data, context={"base_dir": str(workdir)})
    ctx.reset_connectors()
    return ctx


def test_master_data_then_a_month_billed(tmp_path: Path, export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as (app, base):
        store = app.state.store
        ctx = with_master_data(d365_ctx(tmp_path / "w", export, base, monkeypatch), tmp_path / "w")
        custs = list(ctx.reference.customers.values())
        projs = list(ctx.reference.projects.values())
        res = masterdata.sync_master(ctx, SOURCE, [*custs, *projs])
        assert res.pushed == {SYSTEM: len(custs) + len(projs)} and res.push_failed == 0
        held = {(r["dataAreaId"], r["CustomerAccount"]) for r in store.rows("CustomersV3")}
        assert held == {(COMPANIES[c.legal_entity_id], c.id) for c in custs}
        assert {(r["dataAreaId"], r["ProjectID"]) for r in store.rows("ProjectsV2")} == {
            (COMPANIES[p.legal_entity_id], p.id) for p in projs}
        batches = app.state.calls.count(path_prefix="/data/$batch")
        assert masterdata.sync_master(ctx, SOURCE, [*custs, *projs]).pushed == {}  # unchanged: nothing sent
        assert app.state.calls.count(path_prefix="/data/$batch") == batches
        orphan = projs[0].model_copy(update={"id": "PRJ-ORPHAN", "customer_id": "CUST-NOT-IN-D365"})
        assert masterdata.sync_master(ctx, SOURCE, [orphan]).push_failed == 1
        with ctx.engine.connect() as conn:
            [letter] = dead_letters.list_letters(conn, flow="masterdata.push")
        assert letter.item_key == "PRJ-ORPHAN" and "CUST-NOT-IN-D365 does not exist" in letter.error_text

        transactions.land(ctx, SOURCE, records(ctx, until=cutoff(SEP)))
        transactions.process_pending(ctx)
        for entity in COMPANIES:
            assert posting.post_period(ctx, entity, SEP).status == "posted"
        out = billing.run_billing(ctx, SEP)
        drafted = out["draft"]["drafted"]
        assert drafted and sorted(out["create"]["created"]) == sorted(drafted) and not out["create"]["failed"], out
        headers = {h["CustomerReference"]: h for h in store.rows("FreeTextInvoiceHeaders")}
        assert set(headers) == set(drafted)
        with ctx.engine.connect() as conn:
            rows = {r.id: r for r in invoices_repo.list_invoices(conn)}
        for key in drafted:
            h, r = headers[key], rows[key]
            assert h["IsPosted"] == "Yes" and r.status == "posted" and r.erp_number == h["InvoiceNumber"]
            assert h["InvoiceNumber"].startswith(f"FTI-{h['dataAreaId'].upper()}-")
            assert (h["TotalLineAmount"], h["TotalTaxAmount"]) == (r.net_total, r.tax_total)
        assert len({h["InvoiceNumber"] for h in headers.values()}) == len(drafted)
        # F&O booked the receivable itself: AR per entity and currency = the invoice totals
        target = ctx.connector(SYSTEM)
        for entity in COMPANIES:
            want: dict[str, Decimal] = defaultdict(Decimal)
            for r in rows.values():
                if r.legal_entity_id == entity:
                    want[r.currency] += r.net_total + r.tax_total
            got: dict[str, Decimal] = defaultdict(Decimal)
            for (_, code, cur), (d, c) in target.account_totals(entity).items():
                if code == "1100":
                    got[cur] += d - c
            assert dict(got) == {k: v for k, v in want.items() if v}, entity
        again = billing.run_billing(ctx, SEP)
        assert again["draft"]["drafted"] == [] and again["create"]["created"] == []
        assert len(store.rows("FreeTextInvoiceHeaders")) == len(drafted)
        assert target.invoice_status(drafted) == {k: target.invoice_status([k])[k] for k in drafted}
        # the customer pays one invoice in F&O (settled): the status poll records it, the PSA hears of it
        headers[drafted[0]]["IsSettled"] = "Yes"
        assert billing.sync_status(ctx) == {drafted[0]: "paid"}
        assert billing.write_back(ctx) == 1
        assert store.reads_without_cross_company == []
