"""Workday connector against the Workday sandbox over real HTTP: SOAP faults mapped to the error taxonomy (and not
retried as server errors), closed periods refused before sending, idempotent journals and invoices by reference ID,
Response_Filter paging and Transaction_Log incremental reads of projects, throttling answered by waiting, and the
configuration checks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from lxml import etree

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.workday import WorkdayClient, WorkdayLedger
from ledgerbridge.connectors.workday.mapping import NS, WD_NS, envelope, submit_journal_request
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, Invoice, InvoiceLine, JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.workday import create_app

ACCOUNTS = {"1100": "WD-1100", "2100": "WD-2100", "4000": "WD-4000", "5000": "WD-5000"}
REPORTS = {"trial_balance_report": ("ISU_ledgerbridge", "LB_Trial_Balance"),
           "period_status_report": ("ISU_ledgerbridge", "LB_Period_Status")}


@pytest.fixture
def sandbox() -> Iterator[tuple[Any, str]]:
    yield from serve(create_app())


def serve(app: Any) -> Iterator[tuple[Any, str]]:
    app.state.store.accounts = set(ACCOUNTS.values())
    with serve_in_thread(app) as base:
        yield app, base


def ledger(base: str, *, password: str = "lb-workday-demo", page_size: int = 100, reports: bool = True
           ) -> WorkdayLedger:
    client = WorkdayClient(base, "acme", "ISU_ledgerbridge", password)
    return WorkdayLedger(client, legal_entity_id="US01", company_id="C-US01", account_map=ACCOUNTS,
                         page_size=page_size, **(REPORTS if reports else {}))


def journal(jid: str, amount: str, *, period: str = "2026-09", account: str = "5000") -> JournalEntry:
    y, m = map(int, period.split("-"))
    return JournalEntry(id=jid, legal_entity_id="US01", period=period, entry_date=dt.date(y, m, 15),
                        journal_type=JournalType.LABOR_COST, description="labor",
                        lines=(JournalLine(line_no=1, account=account, debit=Decimal(amount), currency="USD",
                                           dimensions={"cost_center": "CC-1", "project": "P-1"}),
                               JournalLine(line_no=2, account="2100", credit=Decimal(amount), currency="USD")))


def batch(*journals: JournalEntry, period: str = "2026-09") -> PostingBatch:
    return PostingBatch(f"run-{period}", "US01", period, journals)


def test_envelope_carries_the_ws_security_username_token() -> None:
    req = submit_journal_request(journal("J-1", "1.00"), ledger("http://x").opts, "v43.0")
    root = etree.fromstring(envelope(req, username="ISU@acme", password="pw"))
    token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
    assert token is not None and token.findtext("wsse:Username", namespaces=NS) == "ISU@acme"
    assert token.find("wsse:Password", NS).get("Type").endswith("#PasswordText")
    body = root.find("env:Body", NS)[0]
    assert etree.QName(body).localname == "Submit_Accounting_Journal_Request"
    ids = body.findall(".//wd:Accounting_Journal_ID", NS)
    assert [i.text for i in ids] == ["J-1"] and body.get(f"{{{WD_NS}}}version") == "v43.0"


def test_sandbox_requires_the_ws_security_header(sandbox: Any) -> None:
    _, base = sandbox
    bare = etree.tostring(etree.fromstring(envelope(
        submit_journal_request(journal("J-1", "1.00"), ledger(base).opts, "v43.0"), username="x", password="y")))
    root = etree.fromstring(bare)
    root.remove(root.find("env:Header", NS))
    answer = httpx.post(f"{base}/ccx/service/acme/Financial_Management/v43.0", content=etree.tostring(root),
                        headers={"Content-Type": "text/xml"})
    assert answer.status_code == 500
    fault = etree.fromstring(answer.content).find(".//env:Fault", NS)
    assert fault.findtext("faultcode") == "SOAP-ENV:Client.authenticationError"


def test_post_idempotent_conflict_and_read_back(sandbox: Any) -> None:
    app, base = sandbox
    target = ledger(base, page_size=2)
    js = [journal(f"J-{i}", f"{100 + i}.25") for i in range(5)]
    first = target.post_journals(batch(*js))
    assert [r.status for r in first] == [PostStatus.POSTED] * 5
    assert all(r.target_ref and r.target_ref.startswith("JE-") for r in first)
    submits = app.state.calls.count(path_prefix="/ccx/service/acme/Financial_Management/v43.0#Submit")
    again = target.post_journals(batch(*js))
    assert [r.target_ref for r in again] == [r.target_ref for r in first]
    assert app.state.calls.count(path_prefix="/ccx/service/acme/Financial_Management/v43.0#Submit") == submits == 5
    assert len(app.state.store.journals) == 5
    changed = target.post_journals(batch(journal("J-1", "999.00")))[0]
    assert changed.status is PostStatus.REJECTED and isinstance(changed.error, ConflictError)
    held = target.read_back([j.id for j in js] + ["J-unknown"])
    assert set(held) == {j.id for j in js} and all(held[j.id].matches(j) for j in js)


def test_faults_mapped_to_the_taxonomy(sandbox: Any) -> None:
    app, base = sandbox
    with pytest.raises(PermanentError) as auth:
        ledger(base, password="wrong", reports=False).post_journals(batch(journal("J-1", "1.00")))
    assert auth.value.code == "LB-P002" and "invalid username or password" in auth.value.message
    assert app.state.calls.count(status=500) == 1  # a client fault is not retried like a server error
    with pytest.raises(PermanentError) as raas:  # RaaS: HTTP Basic with the same ISU
        ledger(base, password="wrong").period_status("US01", "2026-09")
    assert raas.value.code == "LB-P002"
    target = ledger(base, reports=False)
    # an unknown ledger account: Workday's Validation_Fault rejects that journal alone
    bad = journal("J-2", "5.00", account="4000")
    target.opts.account_map["4000"] = "WD-NOPE"
    results = target.post_journals(batch(journal("J-1", "1.00"), bad, journal("J-3", "3.00")))
    assert [r.status for r in results] == [PostStatus.POSTED, PostStatus.REJECTED, PostStatus.POSTED]
    err = results[1].error
    assert isinstance(err, RecordValidationError) and err.code == "LB-V001"
    assert "WD-NOPE" in err.message and err.details["validation_errors"][0]["xpath"].endswith(
        "Ledger_Account_Reference")
    # an unbalanced journal sent as raw SOAP (our model cannot even build one)
    req = submit_journal_request(journal("J-4", "10.00"), target.opts, "v43.0")
    req.find(".//wd:Debit_Amount", NS).text = "10.01"
    with pytest.raises(RecordValidationError, match="out of balance"):
        target.client.call("Financial_Management", req)
    # the same reference ID submitted twice: a duplicate, the stewardship kind
    with pytest.raises(ConflictError) as dup:
        target.client.call("Financial_Management", submit_journal_request(journal("J-1", "1.00"), target.opts,
                                                                          "v43.0"))
    assert dup.value.code == "LB-C004"
    # an operation the service does not offer: Processing_Fault -> permanent
    with pytest.raises(PermanentError, match="not part of service"):
        target.client.call("Resource_Management", req)


def test_closed_period_refused_before_sending_or_by_workday(sandbox: Any) -> None:
    app, base = sandbox
    app.state.store.set_period("C-US01", "2026-08", "Closed")
    target = ledger(base)
    assert target.period_status("US01", "2026-08") == "closed"
    (r,) = target.post_journals(batch(journal("J-8", "1.00", period="2026-08"), period="2026-08"))
    assert r.status is PostStatus.REJECTED and r.error.details["rule"] == "workday.period_closed"
    assert app.state.calls.count(path_prefix="/ccx/service/acme/Financial_Management/v43.0#Submit") == 0
    # without the period report the connector cannot know; Workday's own fault says the same
    (r,) = ledger(base, reports=False).post_journals(batch(journal("J-8", "1.00", period="2026-08"),
                                                           period="2026-08"))
    assert r.status is PostStatus.REJECTED and r.error.details["rule"] == "workday.period_closed"
    assert not app.state.store.journals


def test_bulk_import_background_process_line_errors_and_rerun() -> None:
    for app, base in serve(create_app(import_delay=0.3)):
        target = ledger(base)
        target.bulk_threshold, target.import_batch, target.import_poll = 5, 10, 0.05
        target.opts.account_map["4000"] = "WD-NOPE"
        js = [journal(f"I-{i:02d}", f"{i + 1}.00", account="4000" if i == 7 else "5000") for i in range(25)]
        results = target.post_journals(batch(*js))
        fm = "/ccx/service/acme/Financial_Management/v43.0#"
        assert app.state.calls.count(path_prefix=fm + "Import") == 3  # 10 + 10 + 5 journals
        assert app.state.calls.count(path_prefix=fm + "Submit") == 0
        assert [r.journal_id for r in results if r.status is PostStatus.REJECTED] == ["I-07"]
        assert "WD-NOPE" in results[7].error.message and results[7].error.code == "LB-V001"
        assert sum(r.status is PostStatus.POSTED for r in results) == 24 and len(app.state.store.journals) == 24
        # a process still running when the wait budget ends: pending, and the next run finds the journals
        target.import_wait = 0.0
        late = [journal(f"L-{i}", "9.00") for i in range(6)]
        assert {r.status for r in target.post_journals(batch(*late))} == {PostStatus.PENDING}
        deadline = time.monotonic() + 10
        while any(p["status"] == "In Progress" for p in app.state.store.processes.values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert {r.status for r in target.post_journals(batch(*late))} == {PostStatus.POSTED}
        assert len(app.state.store.journals) == 30
        assert app.state.calls.count(path_prefix=fm + "Import") == 4


def test_throttled_calls_wait_and_complete() -> None:
    # 4 calls per 0.3 s; beyond that the tenant answers 503 + Retry-After and a Server fault (retried)
    for app, base in serve(create_app(rate_limit=4, rate_window=0.3, retry_after=0.1)):
        js = [journal(f"T-{i}", "2.00") for i in range(10)]
        results = ledger(base).post_journals(batch(*js))
        assert all(r.status is PostStatus.POSTED for r in results)
        assert len(app.state.store.journals) == 10  # nothing doubled by the retries
        assert app.state.calls.count(status=503) >= 1  # the limit was hit and waited out


def test_trial_balance_report_equals_what_was_posted(sandbox: Any) -> None:
    _, base = sandbox
    target = ledger(base)
    target.post_journals(batch(journal("A", "10.00"), journal("B", "2.50")))
    target.post_journals(batch(journal("C", "1.25", period="2026-10"), period="2026-10"))
    assert target.account_totals("US01") == {
        ("2026-09", "2100", "USD"): (Decimal("0"), Decimal("12.50")),
        ("2026-09", "5000", "USD"): (Decimal("12.50"), Decimal("0")),
        ("2026-10", "2100", "USD"): (Decimal("0"), Decimal("1.25")),
        ("2026-10", "5000", "USD"): (Decimal("1.25"), Decimal("0"))}
    assert target.trial_balance(["2026-10"]) == {("2100", "USD"): (Decimal(0), Decimal("1.25")),
                                                 ("5000", "USD"): (Decimal("1.25"), Decimal(0))}
    assert target.account_totals("UK01") == {}


def test_projects_paged_and_read_incrementally(sandbox: Any) -> None:
    app, base = sandbox
    store = app.state.store
    t0 = dt.datetime(2026, 9, 1, 10, tzinfo=dt.UTC)
    store.clock = lambda: t0
    for i in range(25):
        store.put_project(f"P-{i:03d}", name=f"Project {i}", customer="C-1", currency="USD", cost_center="CC-1",
                          billing_type="Fixed Fee" if i % 2 else "Time and Materials")
    target = ledger(base, page_size=10)
    before = app.state.calls.count(path_prefix="/ccx/service/acme/Resource_Management")
    full = target.read_projects(None, now=t0 + dt.timedelta(hours=1))
    assert full.pages == 3 and len(full.projects) == 25
    assert app.state.calls.count(path_prefix="/ccx/service/acme/Resource_Management") - before == 3
    p1 = next(p for p in full.projects if p.id == "P-001")
    assert (p1.legal_entity_id, p1.contract_type, p1.customer_id) == ("US01", "fixed_fee", "C-1")
    store.clock = lambda: t0 + dt.timedelta(hours=3)
    store.put_project("P-004", name="Renamed")
    store.put_project("P-020", inactive=True)
    delta = target.read_projects(full.cursor, now=t0 + dt.timedelta(hours=4))
    assert sorted(p.id for p in delta.projects) == ["P-004", "P-020"]
    assert {p.id: (p.name, p.status) for p in delta.projects}["P-020"][1] == "closed"
    assert delta.cursor["updated_through"] == (t0 + dt.timedelta(hours=4)).isoformat()
    assert target.read_projects(delta.cursor, now=t0 + dt.timedelta(hours=5)).projects == []


def invoice(key: str, net: str) -> Invoice:
    line = InvoiceLine(line_no=1, description="Consulting", quantity=Decimal(1), unit_price=Decimal(net),
                       net_amount=Decimal(net), tax_code="US-EXEMPT", tax_amount=Decimal(0), revenue_account="4000")
    return Invoice(id=key, legal_entity_id="US01", customer_id="C-1", project_id="P-1",
                   invoice_date=dt.date(2026, 9, 30), due_date=dt.date(2026, 10, 30), currency="USD", lines=(line,),
                   net_total=Decimal(net), tax_total=Decimal(0), total=Decimal(net))


def test_invoices_created_once_by_reference_id(sandbox: Any) -> None:
    app, base = sandbox
    target = ledger(base)
    first = target.create_invoice(invoice("INV-1", "1200.00"))
    assert first.number and first.number.startswith("CI-") and first.status == "posted" and first.books_ledger
    assert target.create_invoice(invoice("INV-1", "1200.00")) == first
    assert len(app.state.store.invoices) == 1
    with pytest.raises(ConflictError, match="differs from ours"):
        target.create_invoice(invoice("INV-1", "1300.00"))
    wid = next(iter(app.state.store.invoices))
    app.state.store.invoices[wid]["payment"] = "Paid"
    assert target.invoice_status(["INV-1", "INV-404"]) == {"INV-1": first.__class__(
        key="INV-1", number=first.number, status="paid", target_ref=first.target_ref, books_ledger=True)}


def test_customers_upserted_by_reference_then_invoiced(sandbox: Any) -> None:
    app, base = sandbox
    app.state.store.customers = set()  # only customers Workday knows may be invoiced
    target = ledger(base)
    with pytest.raises(RecordValidationError, match="Customer_Reference_ID"):
        target.create_invoice(invoice("INV-9", "10.00"))
    cust = Customer(id="C-1", name="Acme", legal_entity_id="US01", currency="USD", tax_jurisdiction="US",
                    tax_code="US-EXEMPT")
    assert target.push_customers([cust]) == {"C-1": "C-1"}
    assert target.push_customers([cust.model_copy(update={"name": "Acme Corp"})]) == {"C-1": "C-1"}
    assert list(app.state.store.customer_records) == ["C-1"]
    assert app.state.store.customer_records["C-1"]["name"] == "Acme Corp"
    assert target.create_invoice(invoice("INV-9", "10.00")).status == "posted"


def test_options_checked_at_once() -> None:
    with pytest.raises(PermanentError) as err:
        WorkdayLedger.from_options({"url": "http://x", "page_size": 5000, "reports": {"trial_balance": "nope"}},
                                   password="")
    text = str(err.value)
    for key in ("options.tenant", "options.username", "options.company_id", "options.account_map",
                "options.page_size", "options.reports.trial_balance", "secrets.password"):
        assert key in text, key
