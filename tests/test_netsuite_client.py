"""The NetSuite connector against its sandbox, below the flows: OAuth 2.0 client credentials (JWT assertion signed
ES256/PS256, verified by the sandbox against the certificate's public key) and TBA signatures, token expiry mid-run,
SuiteQL paging and the row cap split by id, problem details mapped to the error taxonomy, checks before sending
(dimensions per subsidiary, conflicts), incremental invoice reads, and the account concurrency pool held without
retry storms (figures printed)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ledgerbridge.connectors.base import (
    IdempotencyMechanism,
    InvoiceTarget,
    LedgerTarget,
    PostingBatch,
    PostStatus,
)
from ledgerbridge.connectors.netsuite import NetSuiteLedger
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import (
    ContractType,
    Customer,
    Invoice,
    InvoiceLine,
    JournalEntry,
    JournalLine,
    JournalType,
    Project,
)
from netsuite_support import ledger, options, sandbox

USD = "USD"


def pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def journal(n: int, amount: str = "100.00", *, period: str = "2026-09", dims: dict[str, str] | None = None,
            account: str = "5000") -> JournalEntry:
    y, m = map(int, period.split("-"))
    d = dims or {}
    return JournalEntry(
        id=f"US01-{period}-labor_cost-t-{n:04d}", legal_entity_id="US01", period=period,
        entry_date=dt.date(y, m, 28), journal_type=JournalType.LABOR_COST, description=f"test {n}",
        lines=(JournalLine(line_no=1, account=account, debit=Decimal(amount), currency=USD, dimensions=d),
               JournalLine(line_no=2, account="2100", credit=Decimal(amount), currency=USD, dimensions=d)))


def batch(journals: list[JournalEntry], run: str = "run-1") -> PostingBatch:
    return PostingBatch(run, "US01", journals[0].period, journals)


# --------------------------------------------------------------------------------------------------- auth


def test_oauth2_assertion_is_verified_and_bad_credentials_are_permanent() -> None:
    with sandbox() as (app, base):
        good = ledger(app, base)
        assert isinstance(good, LedgerTarget) and isinstance(good, InvoiceTarget)
        caps = good.capabilities()
        assert caps.idempotency is IdempotencyMechanism.UPSERT_EXTERNAL_ID and caps.limits.concurrency == 4
        assert {"journal_entry", "invoice", "customer", "project", "resource"} <= caps.writes
        assert good.period_status("US01", "2026-09") == "open" and good.period_status("XX01", "2026-09") is None
        assert good.client.auth.token_requests == 1 and app.state.auth.issued == 1
        other = pem(ec.generate_private_key(ec.SECP256R1()))
        bad = NetSuiteLedger.from_options("erp_ns", options(base), {"private_key": other}.__getitem__)
        with pytest.raises(PermanentError, match="client assertion") as e:
            bad.period_status("US01", "2026-09")
        assert e.value.code == "LB-P002"
        wrong_kid = ledger(app, base, certificate_id="someone-elses-cert")
        with pytest.raises(PermanentError, match="kid"):
            wrong_kid.period_status("US01", "2026-09")
        with pytest.raises(PermanentError, match="RS256"):
            ledger(app, base, algorithm="RS256")
        assert app.state.auth.issued == 1  # no token for the wrong key or kid


def test_ps256_with_an_rsa_certificate() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with sandbox(public_key=public) as (_app, base):
        led = NetSuiteLedger.from_options("erp_ns", options(base, algorithm="PS256"),
                                          {"private_key": pem(key)}.__getitem__)
        assert led.period_status("US01", "2026-10") == "open"


def test_tba_signatures_are_verified() -> None:
    secrets = {"consumer_key": "lb-consumer-key", "consumer_secret": "lb-consumer-secret",
               "token_id": "lb-token-id", "token_secret": "lb-token-secret"}
    with sandbox() as (app, base):
        led = NetSuiteLedger.from_options("erp_ns", options(base, auth="tba"), secrets.__getitem__)
        led.client.page_size = 2  # limit/offset query parameters are part of the signed base string
        assert len(led.client.suiteql("SELECT id, symbol FROM currency ORDER BY id")) == 4
        assert led.period_status("US01", "2026-09") == "open"
        assert len(app.state.auth.nonces) == led.client.calls  # a fresh nonce per request
        forged = NetSuiteLedger.from_options("erp_ns", options(base, auth="tba"),
                                             {**secrets, "token_secret": "stolen?"}.__getitem__)
        with pytest.raises(PermanentError) as e:
            forged.period_status("US01", "2026-09")
        assert e.value.code == "LB-P002" and "INVALID_LOGIN" in str(e.value.details.get("vendor_codes"))


def test_token_expiry_mid_run_is_refreshed() -> None:
    with sandbox(token_lifetime=0.3) as (app, base):
        led = ledger(app, base)
        results = []
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 1.0:  # a run outliving several tokens
            n += 1
            results += led.post_journals(batch([journal(n)], run=f"r{n}"))
            if n == 5:
                app.state.auth.tokens.clear()  # the account revokes every token: a 401, one refresh, carry on
        assert all(r.status is PostStatus.POSTED for r in results) and len(results) == n
        assert led.client.auth.token_requests >= 3 and app.state.auth.refused >= 1
        assert app.state.store.count("journalentry") == n
        print(f"\n{n} runs, {led.client.auth.token_requests} tokens, {app.state.auth.refused} refused (401)")


# --------------------------------------------------------------------------------------------------- SuiteQL


def test_suiteql_pages_and_splits_at_the_row_cap() -> None:
    with sandbox(suiteql_cap=25) as (app, base):
        led = ledger(app, base, page_size=10, suiteql_cap=25)
        custs = [Customer(id=f"C-{i:03d}", name=f"Customer {i}", legal_entity_id="US01", currency=USD,
                          tax_jurisdiction="US", tax_code="US-EXEMPT") for i in range(60)]
        ids = led.push_customers(custs)
        before = led.client.suiteql_queries
        rows = list(led.client.suiteql_by_id("id, externalid", "customer WHERE isinactive = 'F'"))
        assert [r["externalid"] for r in rows] == sorted(ids, key=lambda k: int(ids[k]))  # every row once, by id
        assert {r["externalid"]: r["id"] for r in rows} == ids
        assert led.client.suiteql_queries - before == 7  # pages 10+10+5 | 10+10+5 | 10 (three queries)
        with pytest.raises(PermanentError, match="row cap"):
            led.client.suiteql("SELECT id FROM customer ORDER BY id")
        with pytest.raises(RecordValidationError, match="INVALID_PARAMETER"):
            led.client.suiteql("DELETE FROM customer")


# --------------------------------------------------------------------------------------------------- refusals


def test_checks_before_sending_and_problem_details() -> None:
    with sandbox() as (app, base):
        store = app.state.store
        led = ledger(app, base)
        cust = Customer(id="C-1", name="Acme", legal_entity_id="US01", currency=USD, tax_jurisdiction="US",
                        tax_code="US-EXEMPT")
        led.push_customers([cust])
        led.push_projects([Project(id="P-1", name="Build", customer_id="C-1", legal_entity_id="US01",
                                   contract_type=ContractType.TIME_AND_MATERIALS, currency=USD,
                                   cost_center="CC-DEL-US", start_date=dt.date(2026, 1, 1))])
        ok = journal(1, dims={"project": "P-1", "cost_center": "CC-DEL-US"})
        uk_dept = journal(2, dims={"project": "P-1", "cost_center": "CC-DEL-UK"})  # restricted to UK01
        no_job = journal(3, dims={"project": "P-404"})
        ar_no_name = journal(4, account="1100")
        res = led.post_journals(batch([ok, uk_dept, no_job, ar_no_name]))
        assert [r.status for r in res] == [PostStatus.POSTED] + [PostStatus.REJECTED] * 3
        assert "not available to subsidiary 1" in str(res[1].error) and "CC-DEL-UK" in str(res[1].error)
        assert "P-404" in str(res[2].error) and "push the projects" in str(res[2].error)
        assert "name" in str(res[3].error) and "AcctRec" in str(res[3].error)
        assert store.external_ids("journalentry") == [ok.id]  # nothing else was sent
        assert app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry") == 1

        # the same id with other content: a conflict, NetSuite's record untouched
        changed = journal(1, "999.00", dims={"project": "P-1", "cost_center": "CC-DEL-US"})
        (c,) = led.post_journals(batch([changed], run="run-2"))
        assert c.status is PostStatus.REJECTED and isinstance(c.error, ConflictError)
        assert led.read_back([ok.id])[ok.id].matches(ok)
        (again,) = led.post_journals(batch([ok], run="run-3"))
        assert again.status is PostStatus.POSTED and again.target_ref == res[0].target_ref

        # what NetSuite itself refuses comes back as problem details, mapped to the taxonomy
        body = {"subsidiary": {"id": "1"}, "currency": {"id": "1"}, "tranDate": "2026-09-30",
                "line": {"items": [{"account": {"id": "11"}, "debit": Decimal("10.00")},
                                   {"account": {"id": "3"}, "credit": Decimal("9.99")}]}}
        with pytest.raises(RecordValidationError, match="out of balance") as e:
            led.client.upsert("journalentry", "raw-1", body)
        assert e.value.details["vendor_codes"] == ["USER_ERROR"]
        store.set_period("2026-08", closed=True)
        balanced = {**body, "tranDate": "2026-08-31", "line": {"items": [
            {"account": {"id": "11"}, "debit": Decimal("10.00")}, {"account": {"id": "3"}, "credit": Decimal("10")}]}}
        with pytest.raises(RecordValidationError, match="closed"):
            led.client.upsert("journalentry", "raw-2", balanced)
        dept_uk = store.one("SELECT id FROM department WHERE externalid = 'CC-DEL-UK'")["id"]
        wrong = {**body, "line": {"items": [{"account": {"id": "11"}, "debit": Decimal("1"), "department": {
            "id": str(dept_uk)}}, {"account": {"id": "3"}, "credit": Decimal("1")}]}}
        with pytest.raises(RecordValidationError, match="INVALID_KEY_OR_REF"):
            led.client.upsert("journalentry", "raw-3", wrong)
        with pytest.raises(PermanentError) as nf:
            led.client.get_record("journalentry", "eid:never-posted")
        assert nf.value.code == "LB-P004"
        assert store.count("journalentry") == 1


def test_multi_currency_journal_becomes_one_document_per_currency() -> None:
    with sandbox() as (app, base):
        led = ledger(app, base)
        eur = dict(currency="EUR", fx_rate=Decimal("1.1"), functional_currency=USD)
        j = JournalEntry(id="US01-2026-09-revenue_accrual-t-0001", legal_entity_id="US01", period="2026-09",
                         entry_date=dt.date(2026, 9, 30), journal_type=JournalType.REVENUE_ACCRUAL, lines=(
                             JournalLine(line_no=1, account="1200", debit=Decimal("100.00"), currency=USD),
                             JournalLine(line_no=2, account="4000", credit=Decimal("100.00"), currency=USD),
                             JournalLine(line_no=3, account="1200", debit=Decimal("50.00"), functional_debit=Decimal(
                                 "55.00"), **eur),
                             JournalLine(line_no=4, account="4000", credit=Decimal("50.00"),
                                         functional_credit=Decimal("55.00"), **eur)))
        (r,) = led.post_journals(batch([j]))
        assert r.status is PostStatus.POSTED and len((r.target_ref or "").split(",")) == 2
        assert sorted(app.state.store.external_ids("journalentry")) == [f"{j.id}~EUR", f"{j.id}~USD"]
        assert led.read_back([j.id])[j.id].matches(j)
        assert led.trial_balance("US01") == {("1200", "EUR"): (Decimal("50.00"), 0), ("1200", USD): (
            Decimal("100.00"), 0), ("4000", "EUR"): (0, Decimal("50.00")), ("4000", USD): (0, Decimal("100.00"))}
        # NetSuite books the EUR document in the subsidiary's USD at the rate we sent
        gl = app.state.store.rows("SELECT tal.debit, tal.credit FROM transactionaccountingline tal JOIN "
                                  "\"transaction\" t ON t.id = tal.\"transaction\" WHERE t.externalid = ?",
                                  f"{j.id}~EUR")
        assert sorted((r["debit"] or "", r["credit"] or "") for r in gl) == [("", "55.00"), ("55.00", "")]
        # a run that died between the two documents: the rerun writes only the missing one
        app.state.store.delete("journalentry", f"eid:{j.id}~EUR")
        puts = app.state.calls.count(method="PUT")
        (again,) = led.post_journals(batch([j], run="run-2"))
        assert again.status is PostStatus.POSTED and len((again.target_ref or "").split(",")) == 2
        assert app.state.calls.count(method="PUT") == puts + 1
        assert sorted(app.state.store.external_ids("journalentry")) == [f"{j.id}~EUR", f"{j.id}~USD"]


# --------------------------------------------------------------------------------------------------- invoices


def test_invoices_created_once_and_read_incrementally() -> None:
    with sandbox() as (app, base):
        led = ledger(app, base)
        led.push_customers([Customer(id="C-UK", name="Brit Ltd", legal_entity_id="UK01", currency="GBP",
                                     tax_jurisdiction="GB", tax_code="UK-VAT20")])

        def inv(i: int, tax: str = "200.00") -> Invoice:
            ln = InvoiceLine(line_no=1, description="Consulting", quantity=Decimal("8"), unit_price=Decimal("125"),
                             net_amount=Decimal("1000.00"), tax_code="UK-VAT20", tax_amount=Decimal(tax),
                             revenue_account="4900")
            return Invoice(id=f"INV-UK-{i}", legal_entity_id="UK01", customer_id="C-UK", project_id="P-9",
                           invoice_date=dt.date(2026, 9, 30), currency="GBP", lines=(ln,), net_total=ln.net_amount,
                           tax_total=ln.tax_amount, total=ln.net_amount + ln.tax_amount)

        got = led.create_invoices([inv(1), inv(2), inv(3), inv(4, tax="199.99")])
        numbers = {got[f"INV-UK-{i}"].number for i in (1, 2, 3)}  # NetSuite's numbers, in arrival order
        assert len(numbers) == 3 and all(n and n.startswith("UK-INV") for n in numbers)
        assert {got[f"INV-UK-{i}"].status for i in (1, 2, 3)} == {"posted"}
        assert isinstance(got["INV-UK-4"], ConflictError)  # NetSuite's tax (20% of 1000) differs from ours
        assert led.create_invoice(inv(2)) == got["INV-UK-2"] and app.state.store.count("invoice") == 4
        led.client.page_size = 1  # one invoice per page: the incremental read pages with offset/hasMore
        changes, cursor = led.changed_invoices(None)
        assert set(changes) == {f"INV-UK-{i}" for i in range(1, 5)} and cursor is not None
        app.state.store.pay_invoice("INV-UK-3")
        changes, cursor2 = led.changed_invoices(cursor)
        assert changes["INV-UK-3"].status == "paid" and cursor2 is not None and cursor2.modified >= cursor.modified
        assert led.invoice_status(["INV-UK-3", "INV-NONE"]) == {"INV-UK-3": changes["INV-UK-3"]}


# --------------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("style", ["429", "sss"])
def test_concurrency_pool_held_without_storms(style: str) -> None:
    pool = 4
    with sandbox(concurrency=pool, latency=0.02, limit_style=style) as (app, base):
        figures = {}
        for name, conc in (("own share", pool), ("over the pool", 2 * pool)):
            app.state.limits.accepted = app.state.limits.refused = app.state.limits.peak_in_flight = 0
            led = ledger(app, base, concurrency=conc)
            led.setup()
            journals = [journal(i + (1000 if conc > pool else 0)) for i in range(40)]
            res = led.post_journals(batch(journals, run=f"run-{conc}"))
            assert all(r.status is PostStatus.POSTED for r in res)
            s = app.state.limits.stats()
            figures[name] = s
            print(f"\n[{style}] client concurrency {conc} vs pool {pool}: peak in flight {s['peak_in_flight']}, "
                  f"{s['accepted']} accepted, {s['refused']} refused ({s['refused_share']:.1%}), "
                  f"pauses {led.client.pacer.pauses}, client peak {led.client.pacer.peak}, settled at "
                  f"{led.client.pacer.share}")
        assert figures["own share"]["refused"] == 0  # a client inside its share is never refused
        assert figures["own share"]["peak_in_flight"] <= pool
        assert figures["over the pool"]["refused_share"] < 0.35  # a refusal pauses all and halves the share
        eids = app.state.store.external_ids("journalentry")
        assert len(eids) == 80 and max(Counter(eids).values()) == 1


def test_class_and_location_rules_checked_per_subsidiary() -> None:
    with sandbox() as (app, base):
        store = app.state.store
        led = ledger(app, base, dimensions={"site": "location", "practice": {"record": "classification"},
                                            "region": {"record": "department", "values": {"NA": "1"}}})
        good = journal(1, dims={"site": "LOC-NYC", "practice": "DEP-DEL", "region": "NA"})
        london = journal(2, dims={"site": "LOC-LON"})  # a UK01 location on a US01 journal
        store.add_segment("classification", "DEP-OLD", "Old practice", inactive=True)
        old = journal(3, dims={"practice": "DEP-OLD"})
        res = led.post_journals(batch([good, london, old]))
        assert [r.status for r in res] == [PostStatus.POSTED, PostStatus.REJECTED, PostStatus.REJECTED]
        assert "location LOC-LON" in str(res[1].error) and "not available to subsidiary 1" in str(res[1].error)
        assert "DEP-OLD" in str(res[2].error) and "inactive" in str(res[2].error)
        lines = store.rows("SELECT tl.location, tl.class, tl.department FROM transactionline tl JOIN \"transaction\" t "
                           "ON t.id = tl.\"transaction\" WHERE t.externalid = ?", good.id)
        loc = store.one("SELECT id FROM location WHERE externalid = 'LOC-NYC'")["id"]
        cls = store.one("SELECT id FROM classification WHERE externalid = 'DEP-DEL'")["id"]
        assert {(r["location"], r["class"], r["department"]) for r in lines} == {(loc, cls, 1)}
        assert store.external_ids("journalentry") == [good.id]


def test_lost_answers_are_retried_without_duplicates() -> None:
    with sandbox(lost_answer_every=3) as (app, base):
        led = ledger(app, base)
        led.push_customers([Customer(id=f"C-{i}", name=f"Customer {i}", legal_entity_id="US01", currency=USD,
                                     tax_jurisdiction="US", tax_code="US-EXEMPT") for i in range(4)])
        js = [journal(i) for i in range(12)]
        res = led.post_journals(batch(js))
        assert all(r.status is PostStatus.POSTED for r in res)
        puts = app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry")
        lost = app.state.calls.count(method="PUT", status=504)
        assert lost >= 4 and puts == 12 + app.state.calls.count(
            method="PUT", path_prefix="/services/rest/record/v1/journalentry", status=504)  # each lost one retried
        eids = app.state.store.external_ids("journalentry")
        assert sorted(eids) == sorted(j.id for j in js)  # applied twice, held once
        assert app.state.store.count("customer") == 4
        assert all(led.read_back([j.id])[j.id].matches(j) for j in js[:3])


def test_preflight_check_names_what_would_stop_a_run() -> None:
    with sandbox() as (app, base):
        store = app.state.store
        chart = ["1100", "1200", "2100", "4000", "4900", "5000"]
        assert ledger(app, base).check(chart, ["2026-09", "2026-10"]) == []
        store.add_account("6000", "Travel", "Expense", [2, 3])  # not available to US01
        store.set_period("2026-09", closed=True)
        problems = ledger(app, base, item_map={"4900": "NO-SUCH-ITEM"}, tax_map={"US-EXEMPT": 99}).check(
            [*chart, "6000", "8000"], ["2026-09", "2028-01"])
        text = "\n".join(problems)
        assert len(problems) == 6, text
        for needle in ("account 6000", "not available to US01", "account 8000: not in NetSuite", "NO-SUCH-ITEM",
                       "tax code US-EXEMPT", "period 2026-09: NetSuite period Sep 2026 is closed",
                       "period 2028-01: NetSuite has no posting period"):
            assert needle in text, (needle, text)
        bad = NetSuiteLedger.from_options("erp_ns", options(base, certificate_id="wrong"),
                                          {"private_key": app.state.demo_private_key}.__getitem__)
        (auth_problem,) = bad.check(chart)
        assert "LB-P002" in auth_problem
