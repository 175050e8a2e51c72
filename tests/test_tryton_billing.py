"""Tryton connector against a real Tryton 8.2 on PostgreSQL: master data pushed search-before-create, customer
invoices created, posted (Tryton's payment-date warning skipped) and read back with their number, and timesheet
lines read incrementally with a (last_modified_at, id) cursor."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from ledgerbridge.connectors.base import PostStatus
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.connectors.tryton.connector import TrytonLedger
from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import (
    ContractType,
    Customer,
    Invoice,
    InvoiceLine,
    Project,
    Resource,
)
from ledgerbridge.testing.tryton_server import TrytonSettings, live_tryton

pytestmark = pytest.mark.postgres

CUSTOMERS = [Customer(id=f"C-{i}", name=f"Customer {i}", legal_entity_id="US01", currency="USD",
                      tax_jurisdiction="US", tax_code="US-EXEMPT") for i in range(1, 4)]
PROJECTS = [Project(id=f"P-{i}", name=f"Project {i}", customer_id=f"C-{1 + i % 3}", legal_entity_id="US01",
                    contract_type=ContractType.TIME_AND_MATERIALS, currency="USD", cost_center="CC-DEL-US",
                    start_date=dt.date(2026, 1, 1)) for i in range(1, 5)]
RESOURCES = [Resource(id=f"R-{i}", name=f"Consultant {i}", role="Consultant", cost_center="CC-DEL-US",
                      home_entity_id="US01") for i in range(1, 4)]


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonSettings]:
    with live_tryton("postgresql") as settings:
        yield settings


@pytest.fixture(scope="module")
def ledger(tryton: TrytonSettings) -> Iterator[TrytonLedger]:
    with TrytonClient(tryton.url, tryton.database, tryton.user, tryton.password) as client:
        led = TrytonLedger(client, legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP)
        led.push_customers(CUSTOMERS)
        led.push_projects(PROJECTS)
        led.push_employees(RESOURCES, {r.id: Decimal("48.50") + i for i, r in enumerate(RESOURCES)})
        yield led


def test_master_data_push_is_search_before_create(ledger: TrytonLedger) -> None:
    c = ledger.client
    before = {m: len(c.search(m, [])) for m in ("party.party", "project.work", "company.employee")}
    parties = ledger.push_customers(CUSTOMERS)
    works = ledger.push_projects(PROJECTS)
    employees = ledger.push_employees(RESOURCES, {r.id: Decimal("1") for r in RESOURCES})
    assert {m: len(c.search(m, [])) for m in before} == before
    assert works == ledger.works and employees == ledger.employees and parties == ledger.parties | parties
    product = ledger.push_service_product("SRV-HOUR", "Consulting hour", Decimal("150"))
    assert ledger.push_service_product("SRV-HOUR", "Consulting hour", Decimal("150")) == product
    rows = c.read("company.employee", [employees["R-2"]], ["cost_price"])
    assert rows[0]["cost_price"] == Decimal("49.50")
    proj = c.search_read("project.work", [("comment", "=", "ledgerbridge:P-1")], ["party", "type", "timesheet_works"])
    assert proj[0]["party"] == parties["C-2"] and proj[0]["timesheet_works"] == [works["P-1"]]
    with pytest.raises(RecordValidationError, match="C-404"):
        ledger.push_projects([PROJECTS[0].model_copy(update={"id": "P-X", "customer_id": "C-404"})])


def invoice(iid: str, customer: str, day: int, lines: list[tuple[str, str]]) -> Invoice:
    ils = tuple(InvoiceLine(line_no=n, description=f"Consulting {n}", quantity=Decimal(q), unit_price=Decimal(p),
                            net_amount=(Decimal(q) * Decimal(p)).quantize(Decimal("0.01")), tax_code="US-EXEMPT",
                            tax_amount=Decimal(0)) for n, (q, p) in enumerate(lines, 1))
    net = sum((ln.net_amount for ln in ils), Decimal(0))
    return Invoice(id=iid, legal_entity_id="US01", customer_id=customer, project_id="P-1",
                   invoice_date=dt.date(2026, 3, day), currency="USD", lines=ils, net_total=net,
                   tax_total=Decimal(0), total=net)


def test_invoice_round_trip(ledger: TrytonLedger) -> None:
    c = ledger.client
    invs = [invoice("INV-US01-2026-03-0001", "C-1", 31, [("10.5", "150"), ("2.25", "180")]),
            invoice("INV-US01-2026-03-0000", "C-3", 30, [("3", "99.99")]),  # older: numbered first
            invoice("INV-US01-2026-03-0002", "C-2", 31, [("1", "1234.56")]),
            invoice("INV-US01-2026-03-0003", "C-404", 31, [("1", "10")])]
    res = ledger.post_invoices(invs)
    assert [r.status for r in res] == [PostStatus.POSTED] * 3 + [PostStatus.REJECTED]
    assert res[0].number and res[0].number.startswith("INV/2026/") and len({r.number for r in res[:3]}) == 3
    assert res[1].number is not None and res[1].number < res[0].number  # posted in date order
    assert "C-404" in str(res[3].error)
    assert c.stats.warnings_skipped >= 1  # due date in the past: Tryton's UserWarning was skipped, not ignored
    held = ledger.read_invoices([i.id for i in invs[:3]])
    assert held[invs[0].id]["total_amount"] == Decimal("1980.00") and held[invs[0].id]["state"] == "posted"
    move = c.read("account.move", [held[invs[2].id]["move"]], ["state", "lines"])[0]
    lines = c.read("account.move.line", move["lines"], ["debit", "credit", "party"])
    assert move["state"] == "posted" and sum(ln["debit"] for ln in lines) == Decimal("1234.56")
    again = ledger.post_invoices(invs[:3])
    assert [(r.status, r.number) for r in again] == [(r.status, r.number) for r in res[:3]]
    assert len(c.search("account.invoice", [("reference", "in", [i.id for i in invs])])) == 3


def test_timesheet_incremental_read_with_cursor(ledger: TrytonLedger) -> None:
    c = ledger.client
    emp, work = ledger.employees["R-1"], ledger.works["P-2"]

    def log(days: range, hours: float) -> list[int]:
        return c.create("timesheet.line", [{"company": ledger.company, "employee": emp, "work": work,
                                            "date": dt.date(2026, 3, d), "duration": dt.timedelta(hours=hours),
                                            "description": f"work {d}"} for d in days])

    first_ids = log(range(2, 9), 7.5)
    read = ledger.read_time_entries(None, page_size=3)  # keyset paging over 3 pages
    entries, cursor = read.entries, read.cursor
    assert [e.id for e in entries] == [f"tryton-ts-{i}" for i in sorted(first_ids)] and read.rejected == []
    assert {e.project_id for e in entries} == {"P-2"} and {e.resource_id for e in entries} == {"R-1"}
    assert {e.hours for e in entries} == {Decimal("7.5")}
    assert cursor is not None and cursor.line_id == max(first_ids)

    # nothing changed: only the overlap window comes back, never anything older
    again = ledger.read_time_entries(cursor, page_size=3)
    assert {e.id for e in again.entries} <= {e.id for e in entries} and again.cursor == cursor

    # an edit and new lines (one impossible): the edited line comes back as a new version, new lines follow,
    # the impossible one is reported with its reason and the cursor moves past it
    c.write("timesheet.line", [first_ids[0]], {"duration": dt.timedelta(hours=8)})
    new_ids = log(range(9, 11), 4)
    (huge,) = log(range(11, 12), 30)
    changed = ledger.read_time_entries(cursor, page_size=3)
    by_id = {e.id: e for e in changed.entries}
    edited = by_id[f"tryton-ts-{first_ids[0]}"]
    old = next(e for e in entries if e.id == edited.id)
    assert edited.hours == Decimal("8") and edited.version > old.version
    assert {f"tryton-ts-{i}" for i in new_ids} <= set(by_id) and f"tryton-ts-{huge}" not in by_id
    (bad,) = changed.rejected
    assert bad.details["line_id"] == huge and f"timesheet line {huge}" in bad.message and "24" in bad.message
    cursor3 = changed.cursor
    assert cursor3 is not None and cursor3.line_id == huge
    assert (cursor3.modified_at, cursor3.line_id) > (cursor.modified_at, cursor.line_id)


def test_invoice_with_mapped_tax(ledger: TrytonLedger) -> None:
    c = ledger.client
    chart = ledger.chart()
    (tax,) = c.create("account.tax", [{"name": "UK VAT 20%", "description": "UK-VAT20", "type": "percentage",
                                        "rate": Decimal("0.20"), "company": ledger.company,
                                        "invoice_account": chart.accounts["2300"],
                                        "credit_note_account": chart.accounts["2300"]}])
    taxed = TrytonLedger(c, legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP, tax_map={"UK-VAT20": tax})
    taxed.parties.update(ledger.parties)
    ln = InvoiceLine(line_no=1, description="Advisory", quantity=Decimal("7.5"), unit_price=Decimal("210"),
                     net_amount=Decimal("1575.00"), tax_code="UK-VAT20", tax_amount=Decimal("315.00"))
    inv = Invoice(id="INV-US01-2027-01-0100", legal_entity_id="US01", customer_id="C-3", project_id="P-2",
                  invoice_date=dt.date(2027, 1, 15), currency="USD", lines=(ln,), net_total=Decimal("1575.00"),
                  tax_total=Decimal("315.00"), total=Decimal("1890.00"))
    (res,) = taxed.post_invoices([inv])
    assert res.status is PostStatus.POSTED, res.error
    held = taxed.read_invoices([inv.id])[inv.id]
    assert (held["untaxed_amount"], held["tax_amount"], held["total_amount"]) == (
        Decimal("1575.00"), Decimal("315.00"), Decimal("1890.00"))
    (unmapped,) = ledger.post_invoices([inv.model_copy(update={"id": "INV-US01-2027-01-0101"})])
    assert unmapped.status is PostStatus.REJECTED and "tax map" in str(unmapped.error)
    assert (res.number or "").startswith("INV/2027/")  # its own fiscal year's sequence


def test_invoice_target_contract(ledger: TrytonLedger) -> None:
    from ledgerbridge.connectors import base

    if not hasattr(base, "InvoiceTarget"):
        pytest.skip("ledgerbridge.connectors.base has no InvoiceTarget contract in this checkout")
    assert isinstance(ledger, base.InvoiceTarget)
    inv = invoice("INV-US01-2026-04-0001", "C-2", 30, [("4", "125")]).model_copy(
        update={"invoice_date": dt.date(2026, 4, 30)})
    held = ledger.create_invoice(inv)
    assert isinstance(held, base.InvoiceResult)
    assert (held.key, held.status, held.books_ledger) == (inv.id, "posted", True)
    assert held.number and held.number.startswith("INV/2026/")
    assert ledger.create_invoice(inv) == held  # idempotent on the key
    assert ledger.invoice_status([inv.id, "INV-NEVER"]) == {inv.id: held}
    with pytest.raises(RecordValidationError, match="C-404"):
        ledger.create_invoice(inv.model_copy(update={"id": "INV-US01-2026-04-0002", "customer_id": "C-404"}))
