"""SAP S/4HANA Cloud connector against its sandbox over real HTTP: SOAP journal entries with the confirmation log
read per journal (HTTP 200 is not success), lookup by DocumentReferenceID before create, CSRF fetch and re-fetch,
OAuth token refresh, OData paging, the asynchronous bulk service, enterprise projects, and the timesheet 201 no-op."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerbridge.connectors.base import LedgerTarget, PostingBatch, PostStatus
from ledgerbridge.connectors.sap_s4 import SapS4Client, SapS4Ledger
from ledgerbridge.connectors.sap_s4.mapping import bulk_request, document_reference, journal_to_plan
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import ContractType, JournalEntry, JournalLine, JournalType, Project, TimeEntry
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.sap_s4 import DEMO_ACCOUNT_MAP, create_app, parse_filter

SYNC = "/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfirmation_in"


class Sandbox:
    def __init__(self, app: Any, url: str) -> None:
        self.app, self.url = app, url
        self.store, self.calls = app.state.store, app.state.calls

    def ledger(self, *, oauth: bool = False, **kw: Any) -> SapS4Ledger:
        creds = {"client_id": "LB_CLIENT", "client_secret": "lb-secret"} if oauth else {
            "user": "COMM_USER_LB", "password": "Welcome1!"}
        client = SapS4Client(self.url, confirmation_url=f"{self.url}/confirmation-inbox", **creds)
        kw.setdefault("persons", {"R-1": "50000001"})
        return SapS4Ledger(client, legal_entity_id="US01", company_code="1710", account_map=DEMO_ACCOUNT_MAP, **kw)


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    options = getattr(request, "param", {})
    app = create_app(**options)
    with serve_in_thread(app) as url:
        yield Sandbox(app, url)


def jl(no: int, account: str, debit: str = "0", credit: str = "0") -> JournalLine:
    return JournalLine(line_no=no, account=account, debit=Decimal(debit), credit=Decimal(credit), currency="USD",
                       dimensions={"cost_center": "CC-DEL-US"})


def journal(jid: str, amount: str, day: int = 15, period: str = "2026-09", account: str = "5000") -> JournalEntry:
    y, m = map(int, period.split("-"))
    return JournalEntry(id=jid, legal_entity_id="US01", period=period, entry_date=dt.date(y, m, day),
                        journal_type=JournalType.LABOR_COST, description=f"labor {jid}",
                        lines=(jl(1, account, debit=amount), jl(2, "2100", credit=amount)))


def batch(run: str, *journals: JournalEntry) -> PostingBatch:
    return PostingBatch(run_id=run, legal_entity_id="US01", period=journals[0].period, journals=journals)


def soap_posts(sb: Sandbox) -> int:
    return sb.calls.count(method="POST", path_prefix="/sap/bc/srt/")


def test_post_read_back_and_repost_is_idempotent(sandbox: Sandbox) -> None:
    led = sandbox.ledger(batch_size=2)
    assert isinstance(led, LedgerTarget) and led.period_status("US01", "2026-09") is None
    run = batch("r1", *(journal(f"US01-2026-09-labor-{i}", f"{100 + i}.{i:02d}") for i in range(5)))
    first = led.post_journals(run)
    assert [r.status for r in first] == [PostStatus.POSTED] * 5, [r.error for r in first]
    assert soap_posts(sandbox) == 3  # 2 + 2 + 1 journals per message
    held = led.read_back([j.id for j in run.journals] + ["never-posted"])
    assert set(held) == {j.id for j in run.journals}
    assert all(held[j.id].matches(j) for j in run.journals)
    assert [held[r.journal_id].target_ref for r in first] == [r.target_ref for r in first]

    again = led.post_journals(run)
    assert [(r.status, r.target_ref) for r in again] == [(r.status, r.target_ref) for r in first]
    assert soap_posts(sandbox) == 3  # found by DocumentReferenceID, nothing sent
    for j in run.journals:
        assert len(sandbox.store.documents(document_reference(j.id))) == 1

    changed = journal(run.journals[0].id, "999.99")
    (res,) = led.post_journals(batch("r2", changed))
    assert res.status is PostStatus.REJECTED and isinstance(res.error, ConflictError)
    assert len(sandbox.store.documents(document_reference(changed.id))) == 1


def test_http_200_with_error_log_rejects_only_that_journal(sandbox: Sandbox) -> None:
    sandbox.store.closed_periods.add(("1710", "2026-08"))
    led = sandbox.ledger(batch_size=10)
    led.account_map["7900"] = "79999999"  # mapped, but not a G/L account in the tenant
    good = journal("J-GOOD", "10.00")
    unknown = journal("J-UNKNOWN", "20.00", account="7900")
    results = led.post_journals(batch("r1", good, unknown))
    closed = led.post_journals(batch("r2", journal("J-CLOSED", "30.00", period="2026-08")))
    assert sandbox.calls.count(method="POST", path_prefix=SYNC, status=200) == 2  # HTTP said fine both times
    assert [r.status for r in results] == [PostStatus.POSTED, PostStatus.REJECTED]
    err = results[1].error
    assert isinstance(err, RecordValidationError) and "79999999 is not defined" in err.message
    assert err.details["rule"] == "sap.journal_refused" and err.details["log"][0]["severity"] == 3
    (c,) = closed
    assert c.status is PostStatus.REJECTED and c.error is not None
    assert c.error.details["rule"] == "sap.period_closed" and "Posting period 008 2026 is not open" in c.error.message
    assert set(led.read_back(["J-GOOD", "J-UNKNOWN", "J-CLOSED"])) == {"J-GOOD"}


def test_refused_before_sending_and_sandbox_checks_balance(sandbox: Sandbox) -> None:
    led = sandbox.ledger()
    bad = JournalEntry(id="J-FX", legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 1),
                       journal_type=JournalType.LABOR_COST, lines=(
                           jl(1, "5000", debit="1"), jl(2, "2100", credit="1"),
                           JournalLine(line_no=3, account="5000", debit=Decimal(2), currency="EUR"),
                           JournalLine(line_no=4, account="9999", credit=Decimal(2), currency="EUR")))
    (res,) = led.post_journals(batch("r1", bad))
    assert res.status is PostStatus.REJECTED and res.error is not None
    assert res.error.details["rule"] == "sap.journal_invalid" and len(res.error.details["problems"]) == 2
    assert soap_posts(sandbox) == 0
    # what the connector would never send: an unbalanced entry — SAP's own check answers in the log
    plan = journal_to_plan(journal("J-UNBAL", "5.00"), company_code="1710", account_map=DEMO_ACCOUNT_MAP,
                           dimension_map={})
    plan = plan.__class__(plan.journal_id, plan.reference, plan.company_code, plan.posting_date, plan.header_text,
                          (plan.items[0], plan.items[1].__class__("21100000", Decimal("-4.99"), "USD", None)))
    xml = bulk_request([plan], message_id="M1", created=dt.datetime.now(dt.UTC))
    r = httpx.post(sandbox.url + SYNC, content=xml, auth=("COMM_USER_LB", "Welcome1!"))
    assert r.status_code == 200 and b"Balance in transaction currency USD: 0.01" in r.content
    assert not sandbox.store.items


@pytest.mark.parametrize("sandbox", [{"csrf_rotate_after": 1}], indirect=True)
def test_csrf_token_fetched_and_refetched_after_validation_failure(sandbox: Sandbox) -> None:
    root = sandbox.url + "/sap/opu/odata/sap/API_ENTERPRISE_PROJECT_SRV;v=0002/"
    body = {"Project": "P-RAW", "ProjectDescription": "raw", "ProjectProfileCode": "YP02", "CompanyCode": "1710",
            "ProjectStartDate": "/Date(1767225600000)/"}
    with httpx.Client(auth=("COMM_USER_LB", "Welcome1!")) as h:
        r = h.post(root + "A_EnterpriseProject", json=body)
        assert r.status_code == 403 and r.text == "CSRF token validation failed"
        token = h.get(root, headers={"x-csrf-token": "Fetch"}).headers["x-csrf-token"]
        assert h.post(root + "A_EnterpriseProject", json=body, headers={"x-csrf-token": token}).status_code == 201
        # the session ended after one write (csrf_rotate_after=1): the old token fails
        assert h.post(root + "A_EnterpriseProject", json={**body, "Project": "P-2"},
                      headers={"x-csrf-token": token}).status_code == 403
    led = sandbox.ledger()
    projects = [Project(id=f"PRJ-{i}", name=f"Project {i}", customer_id="C-1", legal_entity_id="US01",
                        contract_type=ContractType.TIME_AND_MATERIALS, currency="USD", cost_center="CC-DEL-US",
                        start_date=dt.date(2026, 1, 1)) for i in range(3)]
    ids = led.push_projects(projects)
    assert set(ids) == {"PRJ-0", "PRJ-1", "PRJ-2"} and len(set(ids.values())) == 3
    assert led.client.csrf_fetches == 3  # one fetch, then one re-fetch after each 403
    assert sandbox.calls.count(method="POST", path_prefix="/sap/opu/", status=403) == 4  # 2 raw + 2 by the client
    assert led.push_projects(projects) == ids  # looked up by Project, none created twice
    assert len(sandbox.store.projects) == 4


@pytest.mark.parametrize("sandbox", [{"token_ttl": 3600.0}], indirect=True)
def test_oauth_token_is_refreshed_once_on_401(sandbox: Sandbox) -> None:
    led = sandbox.ledger(oauth=True)
    led.post_journals(batch("r1", journal("J-1", "1.00")))
    assert led.client.auth.fetched == 1
    sandbox.app.state.tokens.clear()  # the tenant revokes every token (e.g. the arrangement's secret rotated)
    assert led.read_back(["J-1"])["J-1"].line_count == 2
    assert led.client.auth.fetched == 2
    assert sandbox.calls.count(status=401) == 1


@pytest.mark.parametrize("sandbox", [{"page_size": 3}], indirect=True)
def test_odata_server_paging_is_followed(sandbox: Sandbox) -> None:
    led = sandbox.ledger(batch_size=50)
    run = batch("r1", *(journal(f"J-{i}", f"{i + 1}.00") for i in range(7)))
    assert all(r.status is PostStatus.POSTED for r in led.post_journals(run))
    held = led.read_back([j.id for j in run.journals])
    assert len(held) == 7 and all(h.line_count == 2 for h in held.values())
    totals = led.account_totals("US01")
    assert totals[("2026-09", "5000", "USD")] == (Decimal("28.00"), Decimal(0))
    assert led.account_totals("UK01") == {}


@pytest.mark.parametrize("sandbox", [{"async_delay": 2}], indirect=True)
def test_async_bulk_confirmation_read_later_and_duplicate_message_dropped(sandbox: Sandbox) -> None:
    led = sandbox.ledger(mode="async", batch_size=10, confirmation_wait=0.0)
    run = batch("r1", journal("J-A1", "5.00"), journal("J-A2", "6.00", period="2026-09"))
    pending = led.post_journals(run)  # confirmation not delivered yet
    assert [r.status for r in pending] == [PostStatus.PENDING] * 2
    led.confirmation_wait = 5.0
    assert [r.status for r in led.post_journals(run)] == [PostStatus.POSTED] * 2  # found by reference
    assert sandbox.calls.count(method="POST", path_prefix="/sap/bc/srt/scs_ext/sap/journalentrybulk") == 1
    # the same message sent again (e.g. a retry of a lost 202) is dropped by SAP's duplicate detection
    plans = [journal_to_plan(j, company_code="1710", account_map=DEMO_ACCOUNT_MAP, dimension_map={})
             for j in run.journals]
    mid = led.message_id("r1", plans)
    led.client.soap("/sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest_in",
                    bulk_request(plans, message_id=mid, created=dt.datetime.now(dt.UTC)), "x")
    assert len(sandbox.store.documents()) == 2
    led2 = sandbox.ledger(mode="async", batch_size=10)
    res = led2.post_journals(batch("r2", journal("J-A3", "7.00"), journal("J-A4", "8.00", account="7900")))
    assert [r.status for r in res] == [PostStatus.POSTED, PostStatus.POSTED]
    led2.account_map["4000"] = "40000000"
    (bad,) = led2.post_journals(batch("r3", journal("J-A5", "9.00", account="4000")))
    assert bad.status is PostStatus.REJECTED and "40000000 is not defined" in str(bad.error)


def entry(eid: str, hours: str = "7.5") -> TimeEntry:
    return TimeEntry(id=eid, source_system="psa", version=1, project_id="PRJ-1", resource_id="R-1",
                     work_date=dt.date(2026, 9, 3), hours=Decimal(hours), billable=True,
                     approval_status="approved")


def test_timesheet_without_operation_is_a_201_no_op_in_the_tenant(sandbox: Sandbox) -> None:
    url = sandbox.url + "/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET/"
    body = {"CompanyCode": "1710", "PersonWorkAgreement": "50000001", "TimeSheetDate": "/Date(1788393600000)/",
            "TimeSheetIsReleasedOnSave": True, "TimeSheetDataFields": {"RecordedQuantity": "8",
                                                                       "HoursUnitOfMeasure": "H"}}
    with httpx.Client(auth=("COMM_USER_LB", "Welcome1!")) as h:
        token = h.get(url, headers={"x-csrf-token": "Fetch"}).headers["x-csrf-token"]
        r = h.post(url + "TimeSheetEntryCollection", json=body, headers={"x-csrf-token": token})
        assert r.status_code == 201 and r.json()["d"]["TimeSheetRecord"] == ""
        assert sandbox.store.timesheets == []  # 201 and nothing saved
        ok = h.post(url + "TimeSheetEntryCollection", json={**body, "TimeSheetOperation": "C"},
                    headers={"x-csrf-token": token})
        assert ok.status_code == 201 and ok.json()["d"]["TimeSheetRecord"]
    led = sandbox.ledger()
    push = led.push_time_entries([entry("TE-1"), entry("TE-2", "3.25")])
    assert not push.errors and len(push.records) == 2
    sent = [c for c in sandbox.store.timesheets if c["TimeSheetDataFields"].get("TimeSheetNote")]
    assert {c["TimeSheetDataFields"]["TimeSheetNote"] for c in sent} == {"lb:TE-1@1", "lb:TE-2@1"}
    assert led.push_time_entries([entry("TE-1"), entry("TE-2", "3.25")]) == push  # read first, not re-created
    assert len(sandbox.store.timesheets) == 3


@pytest.mark.parametrize("sandbox", [{"timesheet_noop": True}], indirect=True)
def test_timesheet_no_op_is_detected_by_read_back(sandbox: Sandbox) -> None:
    led = sandbox.ledger()
    push = led.push_time_entries([entry("TE-9"), TimeEntry(**{**entry("TE-10").model_dump(), "resource_id": "R-X"})])
    assert not push.records
    noop = push.errors["TE-9"]
    assert isinstance(noop, PermanentError) and noop.details["rule"] == "sap.timesheet_noop"
    assert "answered 201" in noop.message
    assert sandbox.calls.count(method="POST", path_prefix="/sap/opu/", status=201) == 1
    assert push.errors["TE-10"].details["rule"] == "sap.person_unmapped"


def test_timesheet_date_gt_filter_is_ignored_like_the_kba_says() -> None:
    rows = [{"TimeSheetDate": dt.date(2026, 9, d), "PersonWorkAgreement": "1"} for d in (1, 2, 3)]
    ignoring = parse_filter("TimeSheetDate gt datetime'2026-09-02T00:00:00' and PersonWorkAgreement eq '1'",
                            ignored=frozenset({("TimeSheetDate", "gt")}))
    honest = parse_filter("TimeSheetDate gt datetime'2026-09-02T00:00:00' and (PersonWorkAgreement eq '1' or "
                          "PersonWorkAgreement eq '2')")
    assert sum(map(ignoring, rows)) == 3 and sum(map(honest, rows)) == 1


def test_from_options_reports_every_problem() -> None:
    with pytest.raises(PermanentError) as info:
        SapS4Ledger.from_options({"auth": "oauth", "mode": "later"}, secret=lambda name: "")
    problems = info.value.details["problems"]
    assert any("url" in p for p in problems) and any("account_map" in p for p in problems)
    assert any("client_id" in p for p in problems) and any("mode" in p for p in problems)


@pytest.mark.parametrize("sandbox", [{"rate_limit": 3, "rate_window": 0.3}], indirect=True)
def test_throttled_creates_are_resent_once_and_never_doubled(sandbox: Sandbox) -> None:
    led = sandbox.ledger(batch_size=1)  # no client pacing: the sandbox's 429s must be absorbed
    run = batch("r1", *(journal(f"J-T{i}", f"{i + 1}.00") for i in range(6)))
    assert [r.status for r in led.post_journals(run)] == [PostStatus.POSTED] * 6
    assert sandbox.calls.count(status=429) > 0
    assert all(len(sandbox.store.documents(document_reference(j.id))) == 1 for j in run.journals)


def test_soap_client_fault_refuses_the_message_without_retrying(sandbox: Sandbox) -> None:
    led = sandbox.ledger()
    with pytest.raises(RecordValidationError) as info:
        led.client.soap(SYNC, b"<not-soap/>", "x")
    assert info.value.details["rule"] == "sap.soap_client_fault"
    assert sandbox.calls.count(method="POST", path_prefix=SYNC) == 1


def test_foreign_currency_lines_carry_the_company_code_amount(sandbox: Sandbox) -> None:
    led = sandbox.ledger()
    eur = JournalEntry(id="J-EUR", legal_entity_id="US01", period="2026-09", entry_date=dt.date(2026, 9, 5),
                       journal_type=JournalType.REVENUE_ACCRUAL, lines=tuple(
                           JournalLine(line_no=n, account=a, currency="EUR", functional_currency="USD",
                                       fx_rate=Decimal("1.1"), fx_rate_date=dt.date(2026, 9, 5),
                                       **{side: Decimal("100.00"), f"functional_{side}": Decimal("110.00")})
                           for n, a, side in ((1, "1200", "debit"), (2, "4000", "credit"))))
    (res,) = led.post_journals(batch("r1", eur))
    assert res.status is PostStatus.POSTED, res.error
    assert led.read_back(["J-EUR"])["J-EUR"].matches(eur)  # entered EUR
    tb = led.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 9, 30))
    assert tb["1200"] == (Decimal("110.00"), 0) and tb["4000"] == (0, Decimal("110.00"))  # company code USD
    assert led.account_totals("US01")[("2026-09", "1200", "EUR")] == (Decimal("100.00"), 0)


@pytest.mark.parametrize("sandbox", [{"token_ttl": 0.5, "session_ttl": 0.4}], indirect=True)
def test_token_and_session_expiry_mid_run(sandbox: Sandbox) -> None:
    led = sandbox.ledger(oauth=True)
    mk = [Project(id=f"PX-{i}", name="x", customer_id="C", legal_entity_id="US01", currency="USD",
                  contract_type=ContractType.TIME_AND_MATERIALS, cost_center="CC", start_date=dt.date(2026, 1, 1))
          for i in range(2)]
    led.push_projects(mk[:1])
    time.sleep(0.6)  # token and CSRF session both expired
    led.push_projects(mk[1:])
    assert led.client.auth.fetched == 2 and sandbox.calls.count(status=401) == 0  # renewed before expiry
    assert led.client.csrf_fetches == 2  # the expired session's token failed once (403), fetched again
    assert sandbox.calls.count(method="POST", path_prefix="/sap/opu/", status=403) == 1
    assert len(sandbox.store.projects) == 2
