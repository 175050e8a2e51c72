"""Tryton connector, pure parts: JSON-RPC value encoding, error mapping, journal/invoice/timesheet mapping and the
pre-send move checks (no server needed; the live behaviour is in test_tryton_live.py / test_tryton_sqlite.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.connectors.tryton.client import TrytonClient, TrytonUserWarning, decode, encode, rpc_error
from ledgerbridge.connectors.tryton.mapping import (
    InvoiceContext,
    TrytonChart,
    duration_hours,
    invoice_problems,
    invoice_to_values,
    journal_to_move,
    move_problems,
    readback_totals,
    timesheet_to_time_entry,
)
from ledgerbridge.errors import (
    ConflictError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    TransientError,
)
from ledgerbridge.model.entities import Invoice, InvoiceLine, JournalEntry, JournalLine, JournalType

CHART = TrytonChart(company_currency="USD", journal_id=5, accounts={"1100": 39, "4000": 102, "5000": 108, "2100": 71},
                    currencies={"USD": 1, "EUR": 2}, party_required=frozenset({39}), parties={"C-1": 7},
                    project_parties={"P-1": 7}, analytic={("cost_center", "CC-DEL-US"): 3})


def journal(lines: list[JournalLine], jid: str = "US01-2026-03-labor_cost-0001") -> JournalEntry:
    return JournalEntry(id=jid, legal_entity_id="US01", period="2026-03", entry_date=dt.date(2026, 3, 31),
                        journal_type=JournalType.LABOR_COST, description="labor March", lines=tuple(lines))


def line(no: int, account: str, debit: str = "0", credit: str = "0", currency: str = "USD",
         **kw: object) -> JournalLine:
    return JournalLine(line_no=no, account=account, debit=Decimal(debit), credit=Decimal(credit), currency=currency,
                       **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- encoding


@settings(max_examples=60, deadline=None)
@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2, allow_nan=False,
                   allow_infinity=False),
       st.dates(), st.datetimes(), st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=2)))
def test_tagged_values_round_trip_exactly(amount: Decimal, day: dt.date, stamp: dt.datetime,
                                          span: dt.timedelta) -> None:
    payload = {"amount": amount, "day": day, "stamp": stamp, "span": span, "list": [amount]}
    raw = json.loads(encode(payload))
    assert raw["amount"] == {"__class__": "Decimal", "decimal": str(amount)}  # exact text, no float
    back = decode(encode(payload))
    assert back["amount"] == amount and isinstance(back["amount"], Decimal)
    assert back["day"] == day and back["stamp"] == stamp
    assert abs(back["span"] - span) < dt.timedelta(microseconds=2)


def test_decode_parses_bare_numbers_with_fraction_as_decimal() -> None:
    assert decode(b'{"result": 0.1}')["result"] == Decimal("0.1")


def test_encode_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="cannot send object"):
        encode({"x": object()})


# --------------------------------------------------------------------------------------------------- error mapping


def test_user_error_becomes_validation_error_with_tryton_message() -> None:
    err = rpc_error("model.account.move.create", ["UserError", ['A value is required for field "Party".', "", None]])
    assert isinstance(err, RecordValidationError)
    assert 'field "Party"' in err.message and err.details["rule"] == "tryton.user_error"


@pytest.mark.parametrize("message", [
    'You cannot create a journal-period in closed period "2026-01".',
    'You cannot add/modify/delete lines on closed journal-period "Miscellaneous - 2026-03".',
    'The value "2026-02" for field "Period" in record "(1)" of "Account Move" is not valid according to its domain.',
])
def test_closed_period_messages_get_their_own_rule(message: str) -> None:
    err = rpc_error("model.account.move.create", ["UserError", [message, "", None]])
    assert isinstance(err, RecordValidationError) and err.details["rule"] == "tryton.period_closed"
    assert err.code == "LB-V006" and "period is closed" in err.message


def test_other_rpc_errors() -> None:
    warn = rpc_error("model.account.invoice.post", ["UserWarning", ["invoice_payment_date_1", "Due date past", ""]])
    assert isinstance(warn, TrytonUserWarning) and warn.name == "invoice_payment_date_1"
    assert isinstance(rpc_error("x", ["ConcurrencyException", ["changed"]]), ConflictError)
    unknown = rpc_error("model.account.move.create", ["'nosuchfield'", ""])
    assert isinstance(unknown, PermanentError) and "nosuchfield" in unknown.message
    bug = rpc_error("x", ["division by zero", "Traceback ..."])
    assert isinstance(bug, PermanentError) and bug.code == "LB-P001"


def _html(status: int) -> httpx.Response:
    return httpx.Response(status, headers={"Content-Type": "text/html"},
                          content=f"<html><title>{status}</title></html>".encode())


@pytest.mark.parametrize(("status", "kind"), [(429, RateLimitedError), (403, PermanentError),
                                              (503, TransientError)])
def test_html_status_pages_are_classified(status: int, kind: type[Exception]) -> None:
    # the HTTP layer only: a canned transport stands in for answers a healthy local server never gives
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(json.loads(req.content)["method"])
        if calls[-1] == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [1, "tok", None]})
        return _html(status)

    client = TrytonClient("http://tryton.invalid", "db", "admin", "pw", transport=httpx.MockTransport(handler))
    with pytest.raises(kind):
        client.call("model.res.user.get_preferences", True, {})


def test_gzip_replies_and_relogin_on_401() -> None:
    state = {"expired": True}

    def handler(req: httpx.Request) -> httpx.Response:
        method = json.loads(req.content)["method"]
        if method == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [7, "tok2", None]})
        if state["expired"]:
            state["expired"] = False
            return _html(401)
        body = gzip.compress(json.dumps({"id": 2, "result": {"__class__": "Decimal", "decimal": "10.05"}}).encode())
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)

    client = TrytonClient("http://tryton.invalid", "db", "admin", "pw", transport=httpx.MockTransport(handler))
    assert client.call("model.x.y") == Decimal("10.05")
    assert client.stats.relogins == 1 and client.stats.logins == 2


def test_connection_refused_is_transient() -> None:
    client = TrytonClient("http://127.0.0.1:9", "db", "admin", "pw", timeout=2)
    with pytest.raises(TransientError) as info:
        client.login()
    assert info.value.code == "LB-T003"


# --------------------------------------------------------------------------------------------------- journals


def test_journal_maps_accounts_party_and_analytic() -> None:
    j = journal([line(1, "1100", debit="150.00", dimensions={"customer": "C-1"}),
                 line(2, "4000", credit="150.00", dimensions={"customer": "C-1", "cost_center": "CC-DEL-US"})])
    plan = journal_to_move(j, CHART)
    assert not move_problems(plan)
    values = plan.values(company=1, journal=5, period_id=9)
    assert values["description"] == f"lb:{j.id}" and values["period"] == 9
    rows = values["lines"][0][1]
    assert rows[0] == {"account": 39, "debit": Decimal("150.00"), "credit": Decimal(0), "description": "labor March",
                       "party": 7}
    assert "party" not in rows[1]  # Tryton refuses a party on an account that does not require one
    assert rows[1]["analytic_lines"][0][1][0]["account"] == 3


def test_mapping_problems_name_line_and_fix() -> None:
    j = journal([line(1, "1100", debit="1.00"), line(2, "9999", credit="1.00")])
    problems = move_problems(journal_to_move(j, CHART))
    assert any("line 1" in p and "needs a party" in p for p in problems)
    assert any("line 2" in p and "account 9999" in p and "account_map" in p for p in problems)


def test_foreign_currency_needs_functional_amounts() -> None:
    bare = journal([line(1, "5000", debit="10.00", currency="EUR"), line(2, "2100", credit="10.00", currency="EUR")])
    assert any("FX step" in p for p in move_problems(journal_to_move(bare, CHART)))
    fx = dict(functional_currency="USD", fx_rate=Decimal("1.1"), fx_rate_date=dt.date(2026, 3, 31))
    ok = journal([line(1, "5000", debit="10.00", currency="EUR", functional_debit=Decimal("11.00"), **fx),
                  line(2, "2100", credit="10.00", currency="EUR", functional_credit=Decimal("11.00"), **fx)])
    plan = journal_to_move(ok, CHART)
    assert not move_problems(plan)
    assert [(ln.debit, ln.credit, ln.amount_second_currency) for ln in plan.lines] == [
        (Decimal("11.00"), Decimal(0), Decimal("10.00")), (Decimal(0), Decimal("11.00"), Decimal("-10.00"))]
    rows = [{"debit": ln.debit, "credit": ln.credit, "second_currency": ln.second_currency,
             "amount_second_currency": ln.amount_second_currency} for ln in plan.lines]
    totals = readback_totals(rows, "USD", {2: "EUR"})
    assert totals["EUR"].debit == Decimal("10.00") and totals["EUR"].credit == Decimal("10.00")


def test_unbalanced_or_two_sided_payload_is_caught_before_sending() -> None:
    plan = journal_to_move(journal([line(1, "5000", debit="100.00"), line(2, "2100", credit="100.00")]), CHART)
    first, second = plan.lines
    broken = dataclasses.replace(plan, lines=(first, dataclasses.replace(second, credit=Decimal("99.99"))))
    assert any("does not balance" in p and "0.01" in p for p in move_problems(broken))
    both = dataclasses.replace(plan, lines=(dataclasses.replace(first, credit=Decimal("1")), second))
    assert any("both debit" in p for p in move_problems(both))
    fine = dataclasses.replace(plan, lines=(first, dataclasses.replace(second, credit=Decimal("100.001"))))
    assert any("more decimals" in p for p in move_problems(fine))


# --------------------------------------------------------------------------------------------------- invoices


def _invoice(tax: str = "0") -> Invoice:
    ln = InvoiceLine(line_no=1, description="Consulting", quantity=Decimal("10.5"), unit_price=Decimal("150"),
                     net_amount=Decimal("1575.00"), tax_code="US-EXEMPT", tax_amount=Decimal(tax))
    return Invoice(id="INV-US01-0001", legal_entity_id="US01", customer_id="C-1", project_id="P-1",
                   invoice_date=dt.date(2026, 3, 31), currency="USD", lines=(ln,), net_total=Decimal("1575.00"),
                   tax_total=Decimal(tax), total=Decimal("1575.00") + Decimal(tax))


INV_CTX = InvoiceContext(company=1, journal=1, receivable_account=39, currencies={"USD": 1}, parties={"C-1": 7},
                         addresses={7: 11}, revenue_accounts={"4000": 102}, payment_term=4)


def test_invoice_values_are_explicit() -> None:
    values = invoice_to_values(_invoice(), INV_CTX)
    assert values["reference"] == "INV-US01-0001" and values["invoice_address"] == 11 and values["account"] == 39
    ln = values["lines"][0][1][0]
    assert ln["account"] == 102 and ln["unit_price"] == Decimal("150") and ln["quantity"] == 10.5
    assert not invoice_problems(_invoice(), INV_CTX)


def test_invoice_problems() -> None:
    problems = invoice_problems(_invoice(tax="10.00"), dataclasses.replace(INV_CTX, parties={}))
    assert any("push the customer" in p for p in problems)
    assert any("US-EXEMPT" in p and "tax map" in p for p in problems)


# --------------------------------------------------------------------------------------------------- timesheets


def test_timesheet_line_to_time_entry() -> None:
    stamp = dt.datetime(2026, 3, 2, 9, 0, 0, 123456)
    row = {"id": 42, "work": 3, "employee": 5, "date": dt.date(2026, 3, 2),
           "duration": dt.timedelta(hours=2, minutes=20), "description": "design", "last_modified_at": stamp}
    e = timesheet_to_time_entry(row, projects={3: "P-1"}, resources={5: "R-1"})
    assert (e.id, e.project_id, e.resource_id, e.hours) == ("tryton-ts-42", "P-1", "R-1", Decimal("2.333333"))
    later = timesheet_to_time_entry({**row, "last_modified_at": stamp + dt.timedelta(microseconds=1)},
                                    projects={}, resources={})
    assert later.version == e.version + 1 and later.project_id == "tryton-work-3"
    assert duration_hours(dt.timedelta(minutes=90)) == Decimal("1.5")


# --------------------------------------------------------------------------------------------------- options


def test_from_options_builds_and_reports_every_bad_key() -> None:
    from ledgerbridge.connectors.base import IdempotencyMechanism, LedgerTarget
    from ledgerbridge.connectors.tryton import UNIVERSAL_CHART_MAP, TrytonLedger

    ledger = TrytonLedger.from_options({"url": "http://erp:8000", "database": "prod", "legal_entity_id": "US01",
                                        "account_map": UNIVERSAL_CHART_MAP, "batch_size": 120}, password="s3cret")
    assert isinstance(ledger, LedgerTarget) and ledger.batch_size == 120 and ledger.post_batch_size == 120
    assert ledger.client.endpoint == "http://erp:8000/prod/rpc/" and ledger.client.user == "admin"
    caps = ledger.capabilities()
    assert caps.idempotency is IdempotencyMechanism.LOOKUP_BEFORE_CREATE and caps.limits.concurrency == 1
    with pytest.raises(PermanentError) as info:
        TrytonLedger.from_options({"url": "http://erp:8000", "account_map": {"1100": 1.5}, "batch_size": 0},
                                  password="", system="erp_us")
    msg = info.value.message
    for needle in ("'erp_us'", "options.database", "options.legal_entity_id", "account_map values", "['1100']",
                   "options.batch_size", "secrets.password"):
        assert needle in msg
