"""Tryton connector against a real Tryton 8.2 on PostgreSQL: journals posted and read back, trial balance equal
to what we sent per account to the cent, closed periods refused before sending, idempotent and SIGKILL-safe
re-posting, session expiry. Each module runs on a fresh copy of the template database (see
ledgerbridge.testing.tryton_server); skipped with a reason when Tryton cannot be installed, failed under CI=true."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from ledgerbridge.connectors.base import LedgerTarget, PostingBatch, PostStatus
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
from ledgerbridge.connectors.tryton.client import TrytonClient
from ledgerbridge.connectors.tryton.connector import TrytonLedger
from ledgerbridge.connectors.tryton.mapping import move_reference
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, DimensionValue, JournalEntry, JournalLine, JournalType
from ledgerbridge.testing.tryton_server import TrytonSettings, live_tryton

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonSettings]:
    with live_tryton("postgresql") as settings:
        yield settings


@pytest.fixture
def client(tryton: TrytonSettings) -> Iterator[TrytonClient]:
    with TrytonClient(tryton.url, tryton.database, tryton.user, tryton.password) as c:
        yield c


@pytest.fixture
def ledger(client: TrytonClient) -> TrytonLedger:
    led = TrytonLedger(client, legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP)
    led.push_customers([Customer(id="C-ACME", name="Acme Corp", legal_entity_id="US01", currency="USD",
                                 tax_jurisdiction="US", tax_code="US-EXEMPT")])
    led.push_analytic_accounts("cost_center", [DimensionValue(dimension="cost_center", code="CC-DEL-US",
                                                              name="Delivery US")])
    return led


def jl(no: int, account: str, debit: str = "0", credit: str = "0", **dims: str) -> JournalLine:
    return JournalLine(line_no=no, account=account, debit=Decimal(debit), credit=Decimal(credit), currency="USD",
                       dimensions=dims)


def entry(jid: str, period: str, day: int, lines: list[JournalLine],
          jtype: JournalType = JournalType.LABOR_COST) -> JournalEntry:
    y, m = map(int, period.split("-"))
    return JournalEntry(id=jid, legal_entity_id="US01", period=period, entry_date=dt.date(y, m, day),
                        journal_type=jtype, description=f"{jtype} {jid}", lines=tuple(lines))


def month_batch(period: str, n: int, prefix: str) -> PostingBatch:
    """n journals mixing labor cost, revenue accrual and invoices (receivable line with a customer)."""
    journals = []
    for i in range(n):
        amt = f"{(i * 37) % 900 + 1}.{i % 100:02d}"
        kind = i % 3
        if kind == 0:
            lines = [jl(1, "5000", debit=amt, cost_center="CC-DEL-US"), jl(2, "2100", credit=amt)]
            jt = JournalType.LABOR_COST
        elif kind == 1:
            lines = [jl(1, "1200", debit=amt), jl(2, "4000", credit=amt, cost_center="CC-DEL-US")]
            jt = JournalType.REVENUE_ACCRUAL
        else:
            tax = "0.07"
            lines = [jl(1, "1100", debit=str(Decimal(amt) + Decimal(tax)), customer="C-ACME"),
                     jl(2, "1200", credit=amt), jl(3, "2300", credit=tax)]
            jt = JournalType.INVOICE
        journals.append(entry(f"{prefix}-{i:04d}", period, 1 + i % 28, lines, jt))
    return PostingBatch(run_id=f"run-{prefix}", legal_entity_id="US01", period=period, journals=journals)


def moves_with_reference(client: TrytonClient, journal_id: str) -> list[dict[str, object]]:
    return client.search_read("account.move", [("description", "=", move_reference(journal_id))], ["state", "number"])


def test_post_read_back_and_trial_balance_to_the_cent(ledger: TrytonLedger, client: TrytonClient) -> None:
    assert isinstance(ledger, LedgerTarget)
    run = month_batch("2026-04", 45, "TB")
    results = ledger.post_journals(run)
    assert [r.status for r in results] == [PostStatus.POSTED] * 45, [r.error for r in results if r.error]
    assert all(r.target_ref and r.target_ref.startswith("JE/2026/") for r in results)
    held = ledger.read_back([j.id for j in run.journals] + ["never-posted"])
    assert set(held) == {j.id for j in run.journals}
    for j in run.journals:
        assert held[j.id].mismatches(j) == []
        assert held[j.id].target_ref == next(r.target_ref for r in results if r.journal_id == j.id)

    # trial balance over RPC: Tryton's own account debit/credit for April equal what we sent per account
    expected: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in run.journals:
        for ln in j.lines:
            expected[ln.account][0] += ln.debit
            expected[ln.account][1] += ln.credit
    chart = ledger.chart()
    tb = ledger.trial_balance(dt.date(2026, 4, 1), dt.date(2026, 4, 30))
    got = {code: list(tb[code]) for code in expected}
    assert got == dict(expected)
    assert all(isinstance(v, Decimal) for pair in got.values() for v in pair)
    assert all(tb[code] == (0, 0) for code in set(tb) - set(expected))  # nothing else moved in April

    # dimension -> analytic lines on the cost-center lines
    analytic = client.search_read("analytic_account.line", [("account", "=", chart.analytic[("cost_center",
                                                                                            "CC-DEL-US")])],
                                  ["debit", "credit"])
    cc = sum(ln.debit + ln.credit for j in run.journals for ln in j.lines if ln.dimensions.get("cost_center"))
    assert sum(r["debit"] + r["credit"] for r in analytic) == cc


def test_closed_period_is_refused_before_sending(ledger: TrytonLedger, client: TrytonClient) -> None:
    period = client.search("account.period", [("name", "=", "2026-02"), ("type", "=", "standard")])
    client.button("account.period", "close", period)
    assert ledger.period_status("US01", "2026-02") == "closed"
    assert ledger.period_status("US01", "2026-05") == "open"
    assert ledger.period_status("UK01", "2026-02") is None
    run = PostingBatch(run_id="run-closed", legal_entity_id="US01", period="2026-02",
                       journals=[entry("CLOSED-1", "2026-02", 10, [jl(1, "5000", debit="10.00"),
                                                                   jl(2, "2100", credit="10.00")])])
    creates = client.stats.by_method.get("model.account.move.create", 0)
    (res,) = ledger.post_journals(run)
    assert res.status is PostStatus.REJECTED and isinstance(res.error, RecordValidationError)
    assert res.error.details["rule"] == "tryton.period_closed" and "2026-02" in res.error.message
    assert res.error.code == "LB-V006"  # its own stable code: closed period, not a bad record
    assert client.stats.by_method.get("model.account.move.create", 0) == creates  # nothing was sent
    assert moves_with_reference(client, "CLOSED-1") == []

    # and when something does reach Tryton, its own closed-period refusal maps to the same rule
    chart = ledger.chart()
    with pytest.raises(RecordValidationError) as info:
        client.create("account.move", [{"company": ledger.company, "journal": chart.journal_id, "period": period[0],
                                        "date": dt.date(2026, 2, 10), "description": "raw"}])
    assert info.value.details["rule"] == "tryton.period_closed", info.value.message
    assert '"2026-02" for field "Period"' in info.value.details["tryton_message"]


def test_repost_is_idempotent_and_changed_content_is_a_conflict(ledger: TrytonLedger, client: TrytonClient) -> None:
    run = month_batch("2026-05", 12, "IDEM")
    first = ledger.post_journals(run)
    creates = client.stats.by_method.get("model.account.move.create", 0)
    again = ledger.post_journals(run)
    assert [(r.status, r.target_ref) for r in again] == [(r.status, r.target_ref) for r in first]
    assert client.stats.by_method.get("model.account.move.create", 0) == creates
    for j in run.journals:
        assert len(moves_with_reference(client, j.id)) == 1
    j0 = run.journals[0]
    changed = j0.model_copy(update={"lines": (jl(1, "5000", debit="999.99"), jl(2, "2100", credit="999.99"))})
    (res,) = ledger.post_journals(PostingBatch(run_id="run-idem-2", legal_entity_id="US01", period="2026-05",
                                               journals=[changed]))
    assert res.status is PostStatus.REJECTED and isinstance(res.error, ConflictError)
    assert len(moves_with_reference(client, j0.id)) == 1


CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys, datetime as dt
    from decimal import Decimal
    from ledgerbridge.connectors.base import PostingBatch
    from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP
    from ledgerbridge.connectors.tryton.client import TrytonClient
    from ledgerbridge.connectors.tryton.connector import TrytonLedger
    from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType

    url, db, user, pw = sys.argv[1:5]
    ledger = TrytonLedger(TrytonClient(url, db, user, pw), legal_entity_id="US01", account_map=UNIVERSAL_CHART_MAP)
    ledger._post = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # die after create, before post
    journals = [JournalEntry(id=f"CRASH-{i}", legal_entity_id="US01", period="2026-06",
                             entry_date=dt.date(2026, 6, 3), journal_type=JournalType.LABOR_COST,
                             lines=(JournalLine(line_no=1, account="5000", debit=Decimal("12.34"), currency="USD"),
                                    JournalLine(line_no=2, account="2100", credit=Decimal("12.34"), currency="USD")))
                for i in range(3)]
    ledger.post_journals(PostingBatch(run_id="run-crash", legal_entity_id="US01", period="2026-06",
                                      journals=journals))
    print("not killed")
""")


def test_sigkill_between_create_and_post_is_recovered_without_duplicates(
        ledger: TrytonLedger, client: TrytonClient, tryton: TrytonSettings) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, tryton.url, tryton.database, tryton.user,
                           tryton.password], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert [m["state"] for m in moves_with_reference(client, "CRASH-0")] == ["draft"]
    journals = [entry(f"CRASH-{i}", "2026-06", 3, [jl(1, "5000", debit="12.34"), jl(2, "2100", credit="12.34")])
                for i in range(4)]  # the re-run also carries one journal the crashed run never saw
    results = ledger.post_journals(PostingBatch(run_id="run-crash", legal_entity_id="US01", period="2026-06",
                                                journals=journals))
    assert [r.status for r in results] == [PostStatus.POSTED] * 4
    for j in journals:
        held = moves_with_reference(client, j.id)
        assert len(held) == 1 and held[0]["state"] == "posted"
    assert all(rb.matches(j) for j, rb in zip(journals, ledger.read_back([j.id for j in journals]).values(),
                                               strict=True))


def test_bad_journals_are_rejected_alone(ledger: TrytonLedger, client: TrytonClient) -> None:
    good = entry("ALONE-OK", "2026-07", 2, [jl(1, "5000", debit="5.00"), jl(2, "2100", credit="5.00")])
    no_party = entry("ALONE-NOPARTY", "2026-07", 2, [jl(1, "1100", debit="5.00"), jl(2, "4000", credit="5.00")])
    unmapped = entry("ALONE-UNMAPPED", "2026-07", 2, [jl(1, "5000", debit="5.00"), jl(2, "8888", credit="5.00")])
    wrong_period = entry("ALONE-DATE", "2026-07", 2, [jl(1, "5000", debit="5.00"), jl(2, "2100", credit="5.00")])
    wrong_period = wrong_period.model_copy(update={"entry_date": dt.date(2026, 8, 1)})
    res = ledger.post_journals(PostingBatch(run_id="run-alone", legal_entity_id="US01", period="2026-07",
                                            journals=[good, no_party, unmapped, wrong_period]))
    assert [r.status for r in res] == [PostStatus.POSTED] + [PostStatus.REJECTED] * 3
    assert "needs a party" in res[1].error.message  # type: ignore[union-attr]
    assert "8888" in res[2].error.message and "account_map" in res[2].error.message  # type: ignore[union-attr]
    assert res[3].error.details["rule"] == "tryton.period_mismatch"  # type: ignore[union-attr]
    with pytest.raises(PermanentError, match="keeps legal entity US01"):
        ledger.post_journals(PostingBatch(run_id="run-uk", legal_entity_id="UK01", period="2026-07", journals=[
            good.model_copy(update={"legal_entity_id": "UK01"})]))


def test_session_expiry_relogs_in(ledger: TrytonLedger, client: TrytonClient, tryton: TrytonSettings) -> None:
    ledger.period_status("US01", "2026-01")
    header = client.session_header
    assert header is not None
    # end the session server-side (what the idle timeout does): the next call gets 401 and logs in again
    out = httpx.post(f"{tryton.url}/{tryton.database}/rpc/", headers={"Authorization": header},
                     json={"id": 1, "method": "common.db.logout", "params": []})
    assert out.status_code == 200
    logins = client.stats.logins
    assert ledger.period_status("US01", "2026-01") == "open"
    assert client.stats.relogins == 1 and client.stats.logins == logins + 1


def test_wrong_password_is_permanent(tryton: TrytonSettings) -> None:
    with TrytonClient(tryton.url, tryton.database, tryton.user, "not-the-password") as c, \
            pytest.raises(PermanentError) as info:
        c.login()
    assert info.value.code in ("LB-P002", "LB-P003")


def test_foreign_currency_lines_carry_second_currency(ledger: TrytonLedger, client: TrytonClient) -> None:
    from ledgerbridge.connectors.tryton.bootstrap import ensure_currency

    ensure_currency(client, "EUR", rate=Decimal("0.9"))
    fx = {"currency": "EUR", "functional_currency": "USD", "fx_rate": Decimal("1.1111"),
          "fx_rate_date": dt.date(2026, 8, 31)}
    j = entry("FX-1", "2026-08", 31, [
        JournalLine(line_no=1, account="5000", debit=Decimal("90.00"), functional_debit=Decimal("100.00"), **fx),
        JournalLine(line_no=2, account="2100", credit=Decimal("90.00"), functional_credit=Decimal("100.00"), **fx)])
    (res,) = ledger.post_journals(PostingBatch(run_id="run-fx", legal_entity_id="US01", period="2026-08",
                                               journals=[j]))
    assert res.status is PostStatus.POSTED, res.error
    held = ledger.read_back(["FX-1"])["FX-1"]
    assert held.matches(j) and set(held.totals) == {"EUR"}
    move = moves_with_reference(client, "FX-1")[0]
    lines = client.search_read("account.move.line", [("move", "=", move["id"])],
                               ["debit", "credit", "amount_second_currency"])
    assert sorted((r["debit"], r["credit"], r["amount_second_currency"]) for r in lines) == [
        (Decimal("0"), Decimal("100.00"), Decimal("-90.00")), (Decimal("100.00"), Decimal("0"), Decimal("90.00"))]


def test_period_close_is_mirrored_into_tryton(ledger: TrytonLedger, client: TrytonClient) -> None:
    chart = ledger.chart()
    (period,) = client.search("account.period", [("name", "=", "2026-09"), ("type", "=", "standard")])
    (draft,) = client.create("account.move", [{
        "company": ledger.company, "journal": chart.journal_id, "period": period, "date": dt.date(2026, 9, 9),
        "lines": [["create", [{"account": chart.accounts["5000"], "debit": Decimal("3.00"), "credit": Decimal(0)},
                              {"account": chart.accounts["2100"], "debit": Decimal(0), "credit": Decimal("3.00")}]]]}])
    with pytest.raises(RecordValidationError, match="2026-09"):  # Tryton: post the draft moves first
        ledger.set_period_status("US01", "2026-09", "closed")
    assert ledger.period_status("US01", "2026-09") == "open"
    client.button("account.move", "post", [draft])
    ledger.set_period_status("US01", "2026-09", "closing")  # Tryton has no 'closing': stays open
    assert ledger.period_status("US01", "2026-09") == "open"
    ledger.set_period_status("US01", "2026-09", "closed")
    assert ledger.period_status("US01", "2026-09") == "closed"
    ledger.set_period_status("US01", "2026-09", "open")
    assert ledger.period_status("US01", "2026-09") == "open"
    ledger.set_period_status("US01", "2026-09", "locked")
    assert ledger.period_status("US01", "2026-09") == "locked"
    with pytest.raises(RecordValidationError, match="locked"):
        ledger.set_period_status("US01", "2026-09", "open")
    ledger.set_period_status("UK01", "2026-09", "open")  # another entity: not this target's business


def test_duplicate_reference_and_invalid_draft(ledger: TrytonLedger, client: TrytonClient) -> None:
    import dataclasses

    from ledgerbridge.connectors.tryton.mapping import journal_to_move

    chart = ledger.chart()
    (period,) = client.search("account.period", [("name", "=", "2026-10"), ("type", "=", "standard")])
    j = entry("DUP-1", "2026-10", 5, [jl(1, "5000", debit="20.00"), jl(2, "2100", credit="20.00")])
    run = PostingBatch(run_id="run-dup", legal_entity_id="US01", period="2026-10", journals=[j])
    assert ledger.post_journals(run)[0].status is PostStatus.POSTED
    # someone copies the move in Tryton, reference included: re-posting is a conflict, read-back shows it
    plan = journal_to_move(j, chart)
    (copy,) = client.create("account.move", [plan.values(company=ledger.company, journal=chart.journal_id,
                                                          period_id=period)])
    client.button("account.move", "post", [copy])
    (res,) = ledger.post_journals(run)
    assert isinstance(res.error, ConflictError) and copy in res.error.details["move_ids"]
    assert ledger.read_back(["DUP-1"])["DUP-1"].mismatches(j) != []

    # an unbalanced draft carrying a journal's reference (a crashed run of an older build): refused and deleted,
    # never posted
    good = journal_to_move(entry("DRAFT-BAD", "2026-10", 6, [jl(1, "5000", debit="30.00"),
                                                             jl(2, "2100", credit="30.00")]), chart)
    bad = dataclasses.replace(good, lines=(good.lines[0], dataclasses.replace(good.lines[1], credit=Decimal("3.00"))))
    client.create("account.move", [bad.values(company=ledger.company, journal=chart.journal_id, period_id=period)])
    (res,) = ledger.post_moves([bad], run_id="run-draft-bad")
    assert res.status is PostStatus.REJECTED and res.error is not None
    assert res.error.details["rule"] == "tryton.move_invalid" and "does not balance" in res.error.message
    assert moves_with_reference(client, "DRAFT-BAD") == []
