"""Xero connector against the Xero sandbox, every exchange validated against Xero's official OpenAPI: the
validator catches wrong bodies, Idempotency-Key replays, summarizeErrors=false partial batches, lock dates,
foreign-currency journals, If-Modified-Since paging, the three limits (minute, concurrent, day) and token expiry."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.xero import XeroLedger
from ledgerbridge.connectors.xero.mapping import idempotency_key, ms_date
from ledgerbridge.errors import ConflictError, PermanentError, RateLimitedError, RecordValidationError
from ledgerbridge.model.entities import Customer, Invoice, InvoiceLine, JournalEntry, JournalLine, Project
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import xero as sandbox
from xero_support import SpecCheckingTransport, SpecViolation, options

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type")

SEP = dt.date(2026, 9, 30)


class Env:
    def __init__(self, app: Any, base: str, checker: SpecCheckingTransport, ledger: XeroLedger) -> None:
        self.app, self.base, self.checker, self.ledger = app, base, checker, ledger
        self.store = app.state.store


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    app_opts = getattr(request, "param", {}) or {}
    app = sandbox.create_app(**{"window": 2.0, "calls_per_minute": 200, **app_opts})
    checker = SpecCheckingTransport()
    with serve_in_thread(app) as base:
        led = XeroLedger.from_options(options(base, calls_per_minute=200, window_seconds=2.0),
                                      client_secret=sandbox.CLIENT_SECRET, transport=checker)
        yield Env(app, base, checker, led)
        led.client.close()
    assert checker.problems == [] and checker.checked > 0


def journal(jid: str, amount: str, *, day: dt.date = SEP, debit: str = "1200", credit: str = "4000",
            project: str = "P-1", currency: str = "USD", functional: str | None = None) -> JournalEntry:
    fx: dict[str, Any] = {}
    if functional is not None:
        fx = {"functional_currency": "USD", "fx_rate": Decimal(functional) / Decimal(amount), "fx_rate_date": day}
    return JournalEntry(id=jid, legal_entity_id="US01", period=day.strftime("%Y-%m"), entry_date=day,
                        journal_type="revenue_accrual", description=f"accrual {jid}", lines=(
        JournalLine(line_no=1, account=debit, debit=Decimal(amount), currency=currency, dimensions={"project": project},
                    **({**fx, "functional_debit": Decimal(functional)} if functional else {})),
        JournalLine(line_no=2, account=credit, credit=Decimal(amount), currency=currency,
                    dimensions={"project": project},
                    **({**fx, "functional_credit": Decimal(functional)} if functional else {}))))


def batch(*journals: JournalEntry, run: str = "r1") -> PostingBatch:
    return PostingBatch(run, "US01", journals[0].period, list(journals))


# --------------------------------------------------------------------------------------------------- OpenAPI


def test_the_openapi_check_catches_wrong_requests_and_responses(env: Env) -> None:
    client = env.ledger.client
    client.tenant()
    bad_line = {"ManualJournals": [{"Narration": "x", "JournalLines": [{"LineAmount": "ten", "AccountCode": "1200"}]}]}
    with pytest.raises(SpecViolation, match=r"LineAmount|ten"):
        client.write("PUT", "ManualJournals", bad_line, key="lb-test-bad-1")
    with pytest.raises(SpecViolation, match="Narration"):  # the one required field of a ManualJournal
        client.write("PUT", "ManualJournals", {"ManualJournals": [{"JournalLines": []}]}, key="lb-test-bad-2")
    assert len(env.checker.problems) == 2
    assert env.store.manual_journals == {}  # the validator raised after the sandbox answered 400: nothing saved
    env.checker.problems.clear()

    # a response that breaks the spec (an unknown enum value, a non-uuid id) is caught as well
    def fake(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"Id": str(uuid.uuid4()), "Status": "OK", "ManualJournals": [
            {"ManualJournalID": "not-a-uuid", "Narration": "n", "Status": "HALF_POSTED"}]})

    checker = SpecCheckingTransport(httpx.MockTransport(fake))
    req = httpx.Request("GET", f"{env.base}/api.xro/2.0/ManualJournals",
                        headers={"xero-tenant-id": sandbox.TENANT_ID, "Authorization": "Bearer x"})
    with pytest.raises(SpecViolation, match=r"HALF_POSTED|uuid"):
        checker.handle_request(req)
    # a request without the required xero-tenant-id header
    with pytest.raises(SpecViolation, match="xero-tenant-id"):
        checker.check(httpx.Request("GET", f"{env.base}/api.xro/2.0/Organisation"), None)


# --------------------------------------------------------------------------------------------------- idempotency


def test_idempotency_key_replay_and_reuse_with_another_body(env: Env) -> None:
    led = env.ledger
    led.ensure_tracking("Project", ["P-1"])
    body = {"ManualJournals": [{"Narration": "replay [lb:J-1]", "Date": "2026-09-30", "Status": "POSTED",
                                "JournalLines": [{"LineAmount": 10, "AccountCode": "1200"},
                                                 {"LineAmount": -10, "AccountCode": "4000"}]}]}
    key = idempotency_key("test", "J-1")
    first = led.client.write("PUT", "ManualJournals", body, key=key, summarize_errors=False)
    again = led.client.write("PUT", "ManualJournals", body, key=key, summarize_errors=False)
    assert again["ManualJournals"][0]["ManualJournalID"] == first["ManualJournals"][0]["ManualJournalID"]
    assert again["Id"] == first["Id"] and len(env.store.manual_journals) == 1 and len(env.store.gl) == 1
    changed = json.loads(json.dumps(body))
    changed["ManualJournals"][0]["JournalLines"][0]["LineAmount"] = 11
    changed["ManualJournals"][0]["JournalLines"][1]["LineAmount"] = -11
    with pytest.raises(ConflictError, match="Idempotency-Key"):
        led.client.write("PUT", "ManualJournals", changed, key=key, summarize_errors=False)
    assert len(env.store.manual_journals) == 1
    env.checker.problems.clear()  # the 400 is described by the spec; nothing else went wrong


def test_repost_is_harmless_and_changed_content_is_a_conflict(env: Env) -> None:
    led = env.ledger
    j1, j2 = journal("US01-2026-09-a-1", "100.50"), journal("US01-2026-09-a-2", "7.25", project="P-2")
    first = led.post_journals(batch(j1, j2))
    assert [r.status for r in first] == [PostStatus.POSTED] * 2
    puts = env.app.state.calls.count(method="PUT", path_prefix="/api.xro/2.0/ManualJournals")
    again = led.post_journals(batch(j1, j2, run="r2"))
    assert [(r.status, r.target_ref) for r in again] == [(r.status, r.target_ref) for r in first]
    assert env.app.state.calls.count(method="PUT", path_prefix="/api.xro/2.0/ManualJournals") == puts
    fresh = XeroLedger.from_options(options(env.base), client_secret=sandbox.CLIENT_SECRET,
                                    transport=env.checker)  # no cache: found by its narration tag
    other = journal("US01-2026-09-a-1", "100.51")
    (res,) = fresh.post_journals(batch(other, run="r3"))
    assert res.status is PostStatus.REJECTED and isinstance(res.error, ConflictError)
    assert len(env.store.manual_journals) == 2
    held = fresh.read_back([j1.id, j2.id, "nope"])
    assert set(held) == {j1.id, j2.id} and held[j1.id].matches(j1) and held[j2.id].matches(j2)
    # the accountant voids j2 in Xero: never re-created silently, a conflict for stewardship
    (mid,) = [k for k, mj in env.store.manual_journals.items() if mj["Narration"].endswith(f"[lb:{j2.id}]")]
    env.store.manual_journals[mid] = {**env.store.manual_journals[mid], "Status": "VOIDED",
                                      "UpdatedDateUTC": ms_date(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))}
    (voided,) = fresh.post_journals(batch(j2, run="r4"))
    assert voided.status is PostStatus.REJECTED and "voided" in str(voided.error)
    assert len(env.store.manual_journals) == 2
    assert j2.id not in fresh.read_back([j2.id])


# --------------------------------------------------------------------------------------------------- batches


def test_summarize_errors_false_rejects_only_the_bad_journal(env: Env) -> None:
    led = env.ledger
    led.chart()  # chart cached; then the accountant archives 5100 in Xero (schema drift the pre-check cannot see)
    env.store.accounts["5100"]["Status"] = "ARCHIVED"
    js = [journal(f"US01-2026-09-b-{i}", f"{10 + i}.00") for i in range(3)]
    bad = journal("US01-2026-09-b-9", "5.00", debit="5100", credit="2200")
    pre = journal("US01-2026-09-b-8", "5.00", debit="7777")  # not in Xero: refused before sending
    res = led.post_journals(batch(js[0], bad, js[1], pre, js[2]))
    assert [r.status for r in res] == [PostStatus.POSTED, PostStatus.REJECTED, PostStatus.POSTED,
                                       PostStatus.REJECTED, PostStatus.POSTED]
    assert isinstance(res[1].error, RecordValidationError) and "archived" in res[1].error.message
    assert res[1].error.details["rule"] == "xero.validation"
    assert res[3].error is not None and res[3].error.details["rule"] == "xero.journal_invalid"
    assert env.app.state.calls.count(method="PUT", path_prefix="/api.xro/2.0/ManualJournals") == 1
    assert len(env.store.manual_journals) == 3

    # without summarizeErrors=false Xero refuses the whole request (400 with Elements) and saves nothing
    body = {"ManualJournals": [led.chart() and {"Narration": "ok [lb:x1]", "Date": "2026-09-30", "JournalLines": [
        {"LineAmount": 1, "AccountCode": "1200"}, {"LineAmount": -1, "AccountCode": "4000"}]},
        {"Narration": "bad [lb:x2]", "Date": "2026-09-30", "JournalLines": [
            {"LineAmount": 1, "AccountCode": "1200"}, {"LineAmount": -2, "AccountCode": "4000"}]}]}
    with pytest.raises(RecordValidationError, match="total debits"):
        led.client.write("PUT", "ManualJournals", body, key="lb-test-summarized")
    assert len(env.store.manual_journals) == 3
    env.checker.problems.clear()


def test_lock_dates_give_period_status_and_refuse_journals(env: Env) -> None:
    led = env.ledger
    assert led.period_status("US01", "2026-08") == "open" and led.period_status("UK01", "2026-08") is None
    env.store.set_lock_dates(period=dt.date(2026, 8, 31), year=dt.date(2025, 12, 31))
    assert [led.period_status("US01", p) for p in ("2025-12", "2026-08", "2026-09")] == ["locked", "closed", "open"]
    env.store.set_lock_dates(period=dt.date(2026, 9, 15))
    assert led.period_status("US01", "2026-09") == "closing"
    (res,) = led.post_journals(batch(journal("US01-2026-09-c-1", "3.00", day=dt.date(2026, 9, 10))))
    assert res.status is PostStatus.REJECTED and res.error is not None
    assert res.error.details["rule"] == "xero.period_locked"
    # sent anyway (an older client): Xero refuses the element with its lock-date message
    body = {"ManualJournals": [{"Narration": "late [lb:L1]", "Date": "2026-09-10", "Status": "POSTED",
                                "JournalLines": [{"LineAmount": 1, "AccountCode": "1200"},
                                                 {"LineAmount": -1, "AccountCode": "4000"}]}]}
    out = led.client.write("PUT", "ManualJournals", body, key="lb-test-locked", summarize_errors=False)
    (el,) = out["ManualJournals"]
    assert el["StatusAttributeString"] == "ERROR" and "lock date" in el["ValidationErrors"][0]["Message"]
    assert env.store.manual_journals == {}


def test_foreign_currency_journal_posts_base_amounts_and_reads_back_its_currency(env: Env) -> None:
    led = env.ledger
    j = journal("US01-2026-09-fx-1", "850.00", currency="GBP", functional="1079.50")
    (res,) = led.post_journals(batch(j))
    assert res.status is PostStatus.POSTED
    (mj,) = env.store.manual_journals.values()
    assert [ln["LineAmount"] for ln in mj["JournalLines"]] == [1079.5, -1079.5]
    assert "[lb GBP 850.00]" in mj["JournalLines"][0]["Description"]
    assert led.read_back([j.id])[j.id].matches(j)
    assert led.trial_balance(dt.date(2026, 9, 1), SEP)["1200"] == (Decimal("1079.50"), Decimal(0))
    no_base = j.model_copy(update={"id": "US01-2026-09-fx-2", "lines": tuple(
        ln.model_copy(update={"functional_currency": None, "functional_debit": None, "functional_credit": None})
        for ln in j.lines)})
    (res2,) = led.post_journals(batch(no_base))
    assert res2.status is PostStatus.REJECTED and "base currency USD only" in str(res2.error)


def test_if_modified_since_and_paging(env: Env) -> None:
    led = env.ledger
    led.ensure_tracking("Project", ["P-1"])
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(150):  # seeded as the accountant's own earlier journals
        mid = str(uuid.uuid4())
        env.store.manual_journals[mid] = {"ManualJournalID": mid, "Narration": f"old {i}", "Date": ms_date(SEP),
                                          "Status": "POSTED", "UpdatedDateUTC": ms_date(old), "JournalLines": []}
    rows = led.client.get_pages("ManualJournals", "ManualJournals")
    assert len(rows) == 150 and env.app.state.calls.count(method="GET", path_prefix="/api.xro/2.0/Manual") == 2
    led.post_journals(batch(journal("US01-2026-09-d-1", "1.00")))
    newer = led.client.get_pages("ManualJournals", "ManualJournals", modified_since=old + dt.timedelta(days=1))
    assert [r["Narration"] for r in newer] == ["accrual US01-2026-09-d-1 [lb:US01-2026-09-d-1]"]
    gets = env.app.state.calls.count(method="GET", path_prefix="/api.xro/2.0/Manual")
    led.journals.refresh()  # incremental: one page of what changed since the last read
    assert env.app.state.calls.count(method="GET", path_prefix="/api.xro/2.0/Manual") == gets + 1
    # lookup_since (go-live date): the history before it is never read, not even on the first lookup
    recent = XeroLedger.from_options(options(env.base, lookup_since="2026-06-01"),
                                     client_secret=sandbox.CLIENT_SECRET, transport=env.checker)
    recent.journals.refresh()
    assert list(recent.journals.by_key) == ["US01-2026-09-d-1"] and len(recent.journals.rows) == 1
    # the GL feed is append-only: a second read asks only for journals after the last JournalNumber
    first = led.trial_balance(dt.date(2026, 9, 1), SEP)
    feed = env.app.state.calls.count(path_prefix="/api.xro/2.0/Journals")
    assert led.trial_balance(dt.date(2026, 9, 1), SEP) == first == {"1200": (Decimal("1.00"), Decimal(0)),
                                                                    "4000": (Decimal(0), Decimal("1.00"))}
    assert env.app.state.calls.count(path_prefix="/api.xro/2.0/Journals") == feed + 1


# --------------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("env", [{"calls_per_minute": 20, "window": 1.0, "concurrency": 5}], indirect=True)
def test_minute_limit_held_without_storms(env: Env) -> None:
    led = env.ledger
    client = led.client
    client.tenant()
    # the sandbox's limits scaled down from 60 per minute to 20 per second; 80% headroom absorbs the clock skew
    # between the client's send time and the sandbox's arrival time on a loaded machine
    client.pacer = type(client.pacer)(20, 1.0, concurrency=5, headroom=0.8)
    errors: list[BaseException] = []
    lock = threading.Lock()
    stamps: list[float] = []

    def worker() -> None:
        for _ in range(6):
            try:
                client.get("Organisation")
                with lock:
                    stamps.append(time.monotonic())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    env.app.state.calls.clear()
    started = dt.datetime.now()
    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = (dt.datetime.now() - started).total_seconds()
    limits = env.app.state.limits["minute"].stats()
    total = env.app.state.calls.count(path_prefix="/api.xro/2.0/Organisation")
    refused = env.app.state.calls.count(path_prefix="/api.xro/2.0/Organisation", status=429)
    print(f"\nxero minute limit: {len(stamps)} calls in {seconds:.2f} s = {len(stamps) / seconds:.1f}/s against 20 "
          f"per 1 s window (60/min scaled; the first window may be spent at once); 429 share {refused / total:.1%}; "
          f"peak in flight {limits['peak_in_flight']} of 5")
    assert not errors and len(stamps) == 30
    assert refused <= 2  # paced below the limit: no storm of 429s
    assert limits["peak_in_flight"] <= 5


@pytest.mark.parametrize("env", [{"calls_per_minute": 4, "window": 0.3, "concurrency": 2, "latency": 0.05}],
                         indirect=True)
def test_429_minute_and_concurrent_are_waited_out(env: Env) -> None:
    client = env.ledger.client
    client.tenant()
    client.pacer = type(client.pacer)(1000, 0.3, concurrency=2)  # knows the concurrency, not the minute limit
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(4):
            try:
                client.get("TaxRates")
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = env.app.state.calls
    refused = calls.count(path_prefix="/api.xro/2.0/TaxRates", status=429)
    print(f"\nxero without minute pacing: {refused} x 429 of {calls.count(path_prefix='/api.xro/2.0/TaxRates')} "
          f"calls, {client.pacer.pauses} pauses")
    assert not errors and calls.count(path_prefix="/api.xro/2.0/TaxRates", status=200) == 16
    assert refused > 0 and client.pacer.pauses >= refused  # each 429 paused every caller (Retry-After)

    # more requests in flight than the organisation allows: 429 with X-Rate-Limit-Problem: concurrent
    headers = {"Authorization": f"Bearer {client.token()}", "xero-tenant-id": sandbox.TENANT_ID}
    answers: list[httpx.Response] = []

    def raw() -> None:
        answers.append(httpx.get(f"{env.base}/api.xro/2.0/Organisation", headers=headers))

    env.app.state.faults["latency"] = 0.3
    threading.Event().wait(0.35)  # a fresh window
    raws = [threading.Thread(target=raw) for _ in range(3)]
    for t in raws:
        t.start()
    for t in raws:
        t.join()
    problems = {r.headers.get("X-Rate-Limit-Problem") for r in answers if r.status_code == 429}
    assert "concurrent" in problems and all(r.headers.get("Retry-After") for r in answers if r.status_code == 429)
    ok = [r for r in answers if r.status_code == 200]
    assert ok and all(r.headers["X-MinLimit-Remaining"].isdigit() and r.headers["X-DayLimit-Remaining"].isdigit()
                      and r.headers["X-AppMinLimit-Remaining"].isdigit() for r in ok)


@pytest.mark.parametrize("env", [{"app_limit": 3, "window": 0.3}], indirect=True)
def test_app_wide_minute_limit_is_named_and_waited_out(env: Env) -> None:
    client = env.ledger.client
    client.tenant()
    for _ in range(5):  # the app's limit across all organisations (10,000/min at Xero) also answers 429
        assert client.get("Organisation")["Organisations"]
    refused = [c for c in env.app.state.calls.calls if c[2] == 429]
    assert refused and client.pacer.pauses == len(refused)
    assert env.app.state.limits["appminute"].refused >= len(refused)


@pytest.mark.parametrize("env", [{"day_limit": 6}], indirect=True)
def test_daily_limit_stops_the_run_for_the_runtime_to_reschedule(env: Env) -> None:
    client = env.ledger.client
    client.tenant()
    with pytest.raises(RateLimitedError, match="daily allowance") as info:
        for _ in range(10):
            client.get("Organisation")
    # X-DayLimit-Remaining reached 0: the client stops by itself, Xero is not called for nothing
    assert client.day_remaining == 0 and env.app.state.calls.count(path_prefix="/api.xro/2.0/") == 6
    assert info.value.details["rate_limit_problem"] == "day" and (info.value.retry_after or 0) > 60
    # another process that did not see the headers gets Xero's own answer: 429, X-Rate-Limit-Problem: day
    other = XeroLedger.from_options(options(env.base), client_secret=sandbox.CLIENT_SECRET, transport=env.checker)
    with pytest.raises(RateLimitedError) as xero_said:
        other.organisation()
    assert xero_said.value.details.get("rate_limit_problem") == "day" and (xero_said.value.retry_after or 0) > 60
    assert env.app.state.calls.count(path_prefix="/api.xro/2.0/", status=429) == 1


# --------------------------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("env", [{"token_lifetime": 0.3}], indirect=True)
def test_token_expiry_mid_run_is_renewed(env: Env) -> None:
    led = env.ledger
    led.push_customers([Customer(id="C-1", name="Acme", legal_entity_id="US01", currency="USD",
                                 tax_jurisdiction="US", tax_code="US-EXEMPT")])
    first = led.client.token_refreshes
    for i in range(4):  # ~0.5 s of posting across token lifetimes of 0.3 s
        (res,) = led.post_journals(batch(journal(f"US01-2026-09-t-{i}", f"{i + 1}.00")))
        assert res.status is PostStatus.POSTED
        threading.Event().wait(0.12)
    assert led.client.token_refreshes > first
    led.client.token(force=True)
    env.app.state.revoke_tokens()  # revoked / expired early: the 401 renews the token once and retries
    assert led.client.get("Organisation")["Organisations"][0]["BaseCurrency"] == "USD"
    assert env.app.state.calls.count(path_prefix="/api.xro/2.0/Organisation", status=401) == 1
    assert len(env.store.manual_journals) == 4


def test_refresh_token_grant_rotates_the_refresh_token(env: Env, tmp_path: Path) -> None:
    seen: list[str] = []
    token_file = tmp_path / "xero-refresh-token"
    led = XeroLedger.from_options(options(env.base), client_secret=sandbox.CLIENT_SECRET,
                                  refresh_token="sandbox-refresh-0", transport=env.checker,
                                  on_refresh_token=seen.append, token_file=token_file)
    assert led.organisation()["BaseCurrency"] == "USD"
    assert seen and seen[-1] != "sandbox-refresh-0" and led.client.refresh_token == seen[-1]
    assert token_file.read_text() == seen[-1] and token_file.stat().st_mode & 0o777 == 0o600
    # a restart configured with the (now spent) original token starts from the rotated one in the file
    restarted = XeroLedger.from_options(options(env.base), client_secret=sandbox.CLIENT_SECRET,
                                        refresh_token="sandbox-refresh-0", transport=env.checker,
                                        token_file=token_file)
    assert restarted.organisation()["BaseCurrency"] == "USD" and token_file.read_text() != seen[-1]
    stale = XeroLedger.from_options(options(env.base), client_secret=sandbox.CLIENT_SECRET,
                                    refresh_token="sandbox-refresh-0", transport=env.checker)
    with pytest.raises(PermanentError, match="invalid_grant"):  # the spent refresh token is refused
        stale.organisation()
    wrong = XeroLedger.from_options(options(env.base), client_secret="not-the-secret", transport=env.checker)
    with pytest.raises(PermanentError, match="invalid_client"):
        wrong.organisation()


# ----------------------------------------------------------------------------------------- master data, invoices

CUSTOMERS = [Customer(id=f"C-{i}", name=f"Customer {i}", legal_entity_id="US01", currency="USD",
                      tax_jurisdiction="US", tax_code="US-EXEMPT") for i in range(1, 4)]


def invoice(iid: str, customer: str, lines: list[tuple[str, str]], tax: str = "US-EXEMPT") -> Invoice:
    rate = Decimal("0.20") if tax == "UK-VAT20" else Decimal(0)
    ils = tuple(InvoiceLine(line_no=n, description=f"Consulting {n}", quantity=Decimal(q), unit_price=Decimal(p),
                            net_amount=(Decimal(q) * Decimal(p)).quantize(Decimal("0.01")), tax_code=tax,
                            tax_amount=((Decimal(q) * Decimal(p)).quantize(Decimal("0.01")) * rate).quantize(
                                Decimal("0.01"))) for n, (q, p) in enumerate(lines, 1))
    net = sum((ln.net_amount for ln in ils), Decimal(0))
    tax_total = sum((ln.tax_amount for ln in ils), Decimal(0))
    return Invoice(id=iid, legal_entity_id="US01", customer_id=customer, project_id="P-1",
                   invoice_date=dt.date(2026, 9, 30), currency="USD", lines=ils, net_total=net,
                   tax_total=tax_total, total=net + tax_total)


def test_contacts_and_projects_pushed_once_and_updated(env: Env) -> None:
    led = env.ledger
    ids = led.push_customers(CUSTOMERS)
    assert set(ids) == {c.id for c in CUSTOMERS} and len(env.store.contacts) == 3
    assert led.push_customers(CUSTOMERS) == ids
    assert env.app.state.calls.count(method="PUT", path_prefix="/api.xro/2.0/Contacts") == 1
    renamed = CUSTOMERS[1].model_copy(update={"name": "Customer Two Ltd"})
    assert led.push_customers([renamed]) == {renamed.id: ids[renamed.id]}
    assert env.store.contacts[ids[renamed.id]]["Name"] == "Customer Two Ltd" and len(env.store.contacts) == 3
    clash = Customer(id="C-9", name="Customer 1", legal_entity_id="US01", currency="USD", tax_jurisdiction="US",
                     tax_code="US-EXEMPT")
    with pytest.raises(RecordValidationError, match=r"C-9.*unique"):  # Xero: contact names are unique
        led.push_customers([clash, CUSTOMERS[2].model_copy(update={"id": "C-10", "name": "New one"})])
    assert "C-10" in {c.get("AccountNumber") for c in env.store.contacts.values()}  # the good one was kept
    projects = [Project(id=f"P-{i}", name=f"Project {i}", customer_id="C-1", legal_entity_id="US01",
                        contract_type="time_and_materials", currency="USD", cost_center="CC-1",
                        start_date=dt.date(2026, 1, 1)) for i in range(1, 4)]
    opts = led.push_projects(projects)
    assert set(opts) == {"P-1", "P-2", "P-3"} and led.push_projects(projects) == opts
    (cat,) = env.store.tracking.values()
    assert cat["Name"] == "Project" and sorted(o["Name"] for o in cat["Options"]) == ["P-1", "P-2", "P-3"]


def test_invoice_target_contract(env: Env) -> None:
    from ledgerbridge.connectors import base

    led = env.ledger
    assert isinstance(led, base.InvoiceTarget) and isinstance(led, base.LedgerTarget)
    led.push_customers(CUSTOMERS)
    invs = [invoice("INV-US01-2026-09-0001", "C-1", [("10.5", "150"), ("2.25", "180")]),
            invoice("INV-US01-2026-09-0002", "C-2", [("1", "1234.56")], tax="UK-VAT20"),
            invoice("INV-US01-2026-09-0003", "C-404", [("1", "10")])]
    out = led.create_invoices(invs)
    ok = out[invs[0].id]
    assert isinstance(ok, base.InvoiceResult) and (ok.status, ok.books_ledger) == ("posted", True)
    assert ok.number == "INV-0001" and out[invs[1].id].number == "INV-0002"
    assert isinstance(out[invs[2].id], RecordValidationError) and "C-404" in str(out[invs[2].id])
    held = {i["Reference"]: i for i in env.store.invoices.values()}
    assert Decimal(str(held[invs[1].id]["TotalTax"])) == Decimal("246.91")
    assert led.create_invoice(invs[0]) == ok and len(env.store.invoices) == 2  # idempotent on the key
    assert led.invoice_status([invs[0].id, "INV-NEVER"]) == {invs[0].id: ok}
    other = invs[0].model_copy(update={"lines": invs[0].lines[:1], "net_total": invs[0].lines[0].net_amount,
                                       "total": invs[0].lines[0].net_amount})
    with pytest.raises(ConflictError, match="differs"):
        led.create_invoice(other)
    # Xero's answer for an invoice the pre-check cannot see coming (tax rate deleted meanwhile): that one alone
    del env.store.tax_rates["OUTPUT"]
    bad, good = (invoice("INV-US01-2026-09-0004", "C-3", [("2", "50")], tax="UK-VAT20"),
                 invoice("INV-US01-2026-09-0005", "C-3", [("3", "50")]))
    res = led.create_invoices([bad, good])
    assert isinstance(res[bad.id], RecordValidationError) and "TaxType" in str(res[bad.id])
    assert isinstance(res[good.id], base.InvoiceResult) and res[good.id].number == "INV-0003"
    (credit,) = led.create_invoices([invoice("CN-INV-US01-2026-09-0001-1", "C-1", [("-2", "150")])]).values()
    assert isinstance(credit, RecordValidationError) and "credit note" in str(credit)
    # the GL feed holds the receivable of every authorised invoice
    totals = led.trial_balance(dt.date(2026, 9, 1), SEP)
    assert totals["1100"][0] == sum((Decimal(str(i["Total"])) for i in env.store.invoices.values()), Decimal(0))
