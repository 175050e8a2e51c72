"""Bootstrap a freshly activated Tryton database over JSON-RPC, search-before-create (safe to run again).

Creates, when missing: the company currency (USD by default) with a rate, the company party and
``company.company``, links the admin user to it, the chart of accounts from the "Universal Chart of Accounts"
template (``account.create_chart`` wizard, receivable/payable defaults set), strict sequences for moves and
invoices, one fiscal year per requested year with monthly periods, and checks that the standard journals (REV,
MISC, ...) and the "Net 30 days" payment term exist. Returns a :class:`TrytonSetup` with the ids the connector
needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.tryton.client import SYSTEM, TrytonClient
from ledgerbridge.errors import PermanentError

CHART_TEMPLATE = "Universal Chart of Accounts"
PAYMENT_TERM = "Net 30 days"


@dataclass(frozen=True, slots=True)
class TrytonSetup:
    company_id: int
    currency_id: int
    currency: str
    fiscalyear_ids: dict[int, int]
    journals: dict[str, int]  # code -> id (REV, EXP, CASH, STO, MISC, ...)
    payment_term_id: int | None
    receivable_account_id: int
    payable_account_id: int


def _one(client: TrytonClient, model: str, domain: list[Any]) -> int | None:
    ids = client.search(model, domain, limit=1)
    return ids[0] if ids else None


def ensure_currency(client: TrytonClient, code: str, *, name: str | None = None, symbol: str | None = None,
                    rate: Decimal = Decimal(1), rate_date: dt.date = dt.date(2020, 1, 1)) -> int:
    cid = _one(client, "currency.currency", [("code", "=", code)])
    if cid is not None:
        return cid
    return client.create("currency.currency", [{
        "name": name or code, "code": code, "symbol": symbol or code, "digits": 2, "rounding": Decimal("0.01"),
        "rates": [["create", [{"date": rate_date, "rate": rate}]]],
    }])[0]


def ensure_company(client: TrytonClient, name: str, currency_id: int) -> int:
    party = _one(client, "party.party", [("name", "=", name)])
    if party is None:
        party = client.create("party.party", [{"name": name}])[0]
    company = _one(client, "company.company", [("party", "=", party)])
    if company is None:
        company = client.create("company.company", [{"party": party, "currency": currency_id}])[0]
    user = client.read("res.user", [client.uid or 0], ["company", "companies"])[0]
    if company not in user["companies"] or user["company"] != company:
        client.call("model.res.user.write", [client.uid], {"companies": [["add", [company]]], "company": company},
                    {})
        client.refresh_context()
    return company


def ensure_chart(client: TrytonClient, company_id: int, template: str = CHART_TEMPLATE) -> tuple[int, int]:
    """Create the chart from ``template`` unless the company has accounts; returns (receivable, payable) ids."""
    if not client.search("account.account", [("company", "=", company_id)], limit=1):
        tpl = _one(client, "account.account.template", [("name", "=", template), ("parent", "=", None)])
        if tpl is None:
            raise PermanentError(f"{SYSTEM}: account template {template!r} not found — is module 'account' "
                                 "activated?", code="LB-P004")
        client.run_wizard("account.create_chart", [
            ("create_account", {"account": {"company": company_id, "account_template": tpl}}),
        ])
    receivable = client.search("account.account", [("company", "=", company_id), ("type.receivable", "=", True),
                                                   ("closed", "=", False)], limit=1, order=[("code", "ASC")])
    payable = client.search("account.account", [("company", "=", company_id), ("type.payable", "=", True),
                                               ("closed", "=", False)], limit=1, order=[("code", "ASC")])
    if not receivable or not payable:
        raise PermanentError(f"{SYSTEM}: the chart of company {company_id} has no receivable/payable account",
                             code="LB-P004")
    # default receivable/payable for parties (what the wizard's "properties" step sets)
    cfg = client.model("account.configuration", "search", [], 0, 1, None)
    values = {"default_account_receivable": receivable[0], "default_account_payable": payable[0]}
    if cfg:
        client.model("account.configuration", "write", cfg, values)
    else:
        client.create("account.configuration", [values])
    return receivable[0], payable[0]


def _sequence(client: TrytonClient, model: str, type_name: str, name: str, company_id: int, prefix: str) -> int:
    sid = _one(client, model, [("name", "=", name), ("company", "=", company_id)])
    if sid is not None:
        return sid
    stype = _one(client, "ir.sequence.type", [("name", "=", type_name)])
    if stype is None:
        raise PermanentError(f"{SYSTEM}: sequence type {type_name!r} not found", code="LB-P004")
    return client.create(model, [{"name": name, "sequence_type": stype, "company": company_id, "prefix": prefix,
                                  "padding": 5}])[0]


def ensure_fiscal_year(client: TrytonClient, company_id: int, year: int) -> int:
    name = str(year)
    fy = _one(client, "account.fiscalyear", [("name", "=", name), ("company", "=", company_id)])
    if fy is None:
        move_seq = _sequence(client, "ir.sequence.strict", "Account Move", f"Account Move {year}", company_id,
                             f"JE/{year}/")
        values: dict[str, Any] = {"name": name, "company": company_id, "start_date": dt.date(year, 1, 1),
                                  "end_date": dt.date(year, 12, 31), "move_sequence": move_seq}
        if _one(client, "ir.sequence.type", [("name", "=", "Invoice")]) is not None:  # module account_invoice
            inv_seq = _sequence(client, "ir.sequence.strict", "Invoice", f"Invoice {year}", company_id,
                                f"INV/{year}/")
            values["invoice_sequences"] = [["create", [{
                "company": company_id, "in_invoice_sequence": inv_seq, "in_credit_note_sequence": inv_seq,
                "out_invoice_sequence": inv_seq, "out_credit_note_sequence": inv_seq}]]]
        fy = client.create("account.fiscalyear", [values])[0]
    if not client.search("account.period", [("fiscalyear", "=", fy), ("type", "=", "standard")], limit=1):
        client.button("account.fiscalyear", "create_period", [fy])
    return fy


#: Revenue-type accounts the engine's invoices need and the Universal Chart lacks (code, name); created under the
#: chart's "Adjustments" revenue group by :func:`ensure_revenue_accounts`. Tryton refuses an invoice line on any
#: account whose type is not ``revenue`` (an income-statement type), so reimbursable expense revenue (our 4300)
#: and the invoice clearing account (our 4900, see the ``invoice_relief`` posting rule) must be revenue accounts.
EXTRA_REVENUE_ACCOUNTS: tuple[tuple[str, str], ...] = (
    ("4.3.4", "Reimbursable Expense Revenue"),
    ("4.3.5", "Invoice Clearing (ledgerbridge)"),
)
#: Bumped whenever :func:`bootstrap` creates something new, so test templates built by older code are rebuilt.
BOOTSTRAP_VERSION = 2


def ensure_revenue_accounts(client: TrytonClient, company_id: int, *, parent_code: str = "4.3.0",
                            accounts: Iterable[tuple[str, str]] = EXTRA_REVENUE_ACCOUNTS) -> dict[str, int]:
    """Create the revenue-type accounts in ``accounts`` under ``parent_code`` when missing; code -> id."""
    parent = client.search_read("account.account", [("company", "=", company_id), ("code", "=", parent_code)],
                                ["type"])
    if not parent:
        raise PermanentError(f"{SYSTEM}: account {parent_code} (parent of the revenue accounts ledgerbridge adds) "
                             "not found in the chart", code="LB-P004")
    out: dict[str, int] = {}
    for code, name in accounts:
        found = _one(client, "account.account", [("company", "=", company_id), ("code", "=", code)])
        out[code] = found if found is not None else client.create("account.account", [{
            "code": code, "name": name, "company": company_id, "parent": parent[0]["id"],
            "type": parent[0]["type"]}])[0]
    return out


def bootstrap(client: TrytonClient, *, company_name: str = "Ledgerbridge US01", currency: str = "USD",
              years: Iterable[int] = (2026, 2027), extra_currencies: Iterable[str] = ()) -> TrytonSetup:
    """Bring a database with the modules activated to a usable accounting state; idempotent."""
    currency_id = ensure_currency(client, currency)
    for code in extra_currencies:
        ensure_currency(client, code)
    company_id = ensure_company(client, company_name, currency_id)
    receivable, payable = ensure_chart(client, company_id)
    ensure_revenue_accounts(client, company_id)
    fiscal = {y: ensure_fiscal_year(client, company_id, y) for y in sorted(set(years))}
    journals = {str(r["code"]): int(r["id"]) for r in client.search_read("account.journal", [], ["code"])
                if r.get("code")}
    missing = {"REV", "MISC"} - set(journals)
    if missing:
        raise PermanentError(f"{SYSTEM}: journals {sorted(missing)} are missing — is module 'account' activated?",
                             code="LB-P004")
    try:
        term = _one(client, "account.invoice.payment_term", [("name", "=", PAYMENT_TERM)])
    except PermanentError:  # module account_invoice not activated (the SQLite trap database)
        term = None
    return TrytonSetup(company_id=company_id, currency_id=currency_id, currency=currency, fiscalyear_ids=fiscal,
                       journals=journals, payment_term_id=term, receivable_account_id=receivable,
                       payable_account_id=payable)


#: Our chart codes (chart.md) -> Tryton codes of the Universal Chart created by :func:`bootstrap`. A starting
#: account_map for a bootstrapped database; a real company maps to its own chart.
UNIVERSAL_CHART_MAP: dict[str, str] = {
    "1100": "1.2.1",  # Accounts receivable -> Accounts, Notes And Loans Receivable (party required)
    "1200": "1.4.2",  # Unbilled receivables -> Accrued Income
    "2100": "2.2.1",  # Accrued payroll -> Accrued Expenses (Including Payroll)
    "2200": "2.3.7",  # Employee expenses payable -> Other Financial Liabilities
    "2300": "2.2.3",  # Sales tax / VAT payable -> Accrued Taxes (Other Than Payroll)
    "2400": "2.2.2",  # Deferred revenue -> Deferred Income (Unearned Revenue)
    "4000": "4.2.2",  # Service revenue (T&M) -> Recognized Over Time / Services
    "4100": "4.1.2",  # Fixed-fee revenue -> Recognized Point Of Time / Services
    "4200": "4.3.3",  # Milestone revenue -> Other Adjustments
    "4300": "4.3.4",  # Reimbursable expense revenue -> created by ensure_revenue_accounts (revenue type)
    "5000": "5.1.3",  # Project labor cost -> Cost of Sales / Services
    "5100": "5.2.2",  # Project expenses -> Selling, General And Administrative
    "7900": "6.2.1",  # FX and rounding differences -> Foreign Currency Transaction Gain (Loss)
    "4900": "4.3.5",  # Invoice clearing (invoice_relief) -> created by ensure_revenue_accounts (revenue type)
}
