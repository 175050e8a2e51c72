"""Dynamics 365 documents at the connector level (against the sandbox): a journal created but never posted (a run
that stopped between the two) is posted on re-post, not created again; free-text invoices are idempotent on our key,
a held invoice with other amounts is a conflict and a bad one is refused alone; an app not registered in F&O's
Microsoft Entra applications form gets a clear permanent error."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from dynamics365_support import SECRET, connector_options, serve
from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.dynamics365 import D365Connector, Op
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, Invoice, InvoiceLine, JournalEntry, JournalLine, JournalType


def connector(base: str) -> D365Connector:
    return D365Connector.from_options("erp_d365", connector_options(base), client_secret=SECRET)


def test_an_unposted_journal_left_behind_is_posted_not_duplicated() -> None:
    with serve() as (app, base):
        conn = connector(base)
        j = JournalEntry(id="HALF-1", legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 8),
                         journal_type=JournalType.LABOR_COST, description="half",
                         lines=(JournalLine(line_no=1, account="5000", debit=Decimal("40.00"), currency="USD"),
                                JournalLine(line_no=2, account="2100", credit=Decimal("40.00"), currency="USD")))
        plan_lines = [{"dataAreaId": "usmf", "LineNumber": Decimal(n), "AccountDisplayValue": acct,
                       "TransDate": "2026-09-08T12:00:00Z", "CurrencyCode": "USD", "DebitAmount": d,
                       "CreditAmount": c, "ExchangeRate": Decimal(100)}
                      for n, acct, d, c in ((1, "5000", Decimal("40.00"), Decimal(0)),
                                            (2, "2100", Decimal(0), Decimal("40.00")))]
        (created,) = conn.client.fo_batch([[Op("POST", "LedgerJournalHeaders", {
            "dataAreaId": "usmf", "JournalName": "GenJrn", "Description": "lb:HALF-1"}),
            *(Op("POST", "$1/JournalLines", ln) for ln in plan_lines)]])  # created, never posted
        assert created.ok and [h["IsPosted"] for h in app.state.store.journals()] == ["No"]
        (res,) = conn.post_journals(PostingBatch("r-half", "US01", "2026-09", [j]))
        assert res.status is PostStatus.POSTED and res.target_ref == created.answers[0][1]["JournalBatchNumber"]
        assert [h["IsPosted"] for h in app.state.store.journals()] == ["Yes"]
        assert conn.read_back(["HALF-1"])["HALF-1"].matches(j)


def invoice(iid: str, amount: str, tax_code: str = "US-EXEMPT") -> Invoice:
    net = Decimal(amount)
    line = InvoiceLine(line_no=1, description="Consulting", quantity=Decimal("1"), unit_price=net, net_amount=net,
                       tax_code=tax_code, tax_amount=Decimal(0), revenue_account="1200")
    return Invoice(id=iid, legal_entity_id="US01", customer_id="C-1", project_id="PRJ-00001",
                   invoice_date=dt.date(2026, 9, 30), currency="USD", lines=(line,), net_total=net,
                   tax_total=Decimal(0), total=net)


def test_invoices_idempotent_conflicting_and_refused_alone() -> None:
    with serve() as (app, base):
        conn = connector(base)
        conn.push_customers([Customer(id="C-1", name="Acme", legal_entity_id="US01", currency="USD",
                                      tax_jurisdiction="US", tax_code="US-EXEMPT")])
        first = conn.create_invoice(invoice("INV-1", "1500.00"))
        assert first.status == "posted" and first.number == "FTI-USMF-000001" and first.books_ledger
        assert conn.create_invoice(invoice("INV-1", "1500.00")) == first  # held: returned, not created again
        with pytest.raises(ConflictError, match="differs from ours"):
            conn.create_invoice(invoice("INV-1", "1400.00"))
        out = conn.create_invoices([invoice("INV-2", "10.00"), invoice("INV-3", "20.00", tax_code="NO-SUCH")])
        assert out["INV-2"].number == "FTI-USMF-000002"  # type: ignore[union-attr]
        assert isinstance(out["INV-3"], RecordValidationError) and "NO-SUCH" in out["INV-3"].message
        assert len(app.state.store.rows("FreeTextInvoiceHeaders")) == 2
        assert conn.invoice_status(["INV-1", "INV-2", "INV-404"]).keys() == {"INV-1", "INV-2"}


def test_an_app_not_registered_in_f_and_o_is_told_so() -> None:
    with serve() as (app, base):
        app.state.store.fo_apps.clear()
        with pytest.raises(PermanentError, match="Microsoft Entra applications") as err:
            connector(base).period_status("US01", "2026-09")
        assert err.value.code == "LB-P003"
