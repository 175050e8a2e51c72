"""Pure mapping between the canonical model and Tryton values (no I/O).

- :func:`journal_to_move` turns a :class:`JournalEntry` into a :class:`MovePlan`: the ``account.move`` values to
  create plus everything needed to check it before sending (:func:`move_problems`) and to compare it with what
  Tryton holds (:func:`move_signature`).
- :func:`invoice_to_values` turns an :class:`Invoice` into ``account.invoice`` values.
- :func:`timesheet_to_time_entry` turns a ``timesheet.line`` row into a canonical :class:`TimeEntry`.

Amounts are :class:`~decimal.Decimal` throughout. Tryton's ``debit``/``credit`` are in the company currency; a line
in another currency carries ``second_currency`` and a signed ``amount_second_currency`` and must have functional
amounts (``functional_debit``/``functional_credit``) from our FX step.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import CurrencyTotals
from ledgerbridge.model.entities import ApprovalStatus, Invoice, JournalEntry, TimeEntry

REF_PREFIX = "lb:"  # account.move.description = "lb:<journal id>" (exact, searchable with "in")
ZERO = Decimal(0)


def move_reference(journal_id: str) -> str:
    """The deterministic reference stored in ``account.move.description`` for idempotent lookup."""
    return f"{REF_PREFIX}{journal_id}"


def journal_id_of(reference: str | None) -> str | None:
    if reference and reference.startswith(REF_PREFIX):
        return reference[len(REF_PREFIX):]
    return None


@dataclass(frozen=True, slots=True)
class TrytonChart:
    """What mapping needs to know about the Tryton side of one company.

    ``accounts``: our chart code -> Tryton ``account.account`` id. ``party_required``: Tryton account ids that need
    a party on every line (receivables/payables). ``currencies``: ISO code -> ``currency.currency`` id.
    ``parties``: customer id -> ``party.party`` id; ``project_parties``: project id -> party id (the project's
    customer), used when a line names a project but no customer. ``analytic``: (dimension, code) ->
    ``analytic_account.account`` id (optional; lines get analytic lines for the dimensions found here).
    """

    company_currency: str
    journal_id: int
    accounts: Mapping[str, int]
    currencies: Mapping[str, int]
    party_required: frozenset[int] = frozenset()
    parties: Mapping[str, int] = field(default_factory=dict)
    project_parties: Mapping[str, int] = field(default_factory=dict)
    analytic: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MoveLine:
    account: int
    debit: Decimal
    credit: Decimal
    description: str = ""
    party: int | None = None
    second_currency: int | None = None
    amount_second_currency: Decimal | None = None
    currency_code: str = ""  # the line's own currency (company currency when no second currency)
    analytic: tuple[int, ...] = ()

    def values(self, date: dt.date) -> dict[str, Any]:
        out: dict[str, Any] = {"account": self.account, "debit": self.debit, "credit": self.credit,
                               "description": self.description}
        if self.party is not None:
            out["party"] = self.party
        if self.second_currency is not None:
            out["second_currency"] = self.second_currency
            out["amount_second_currency"] = self.amount_second_currency
        if self.analytic:
            out["analytic_lines"] = [["create", [
                {"account": a, "debit": self.debit, "credit": self.credit, "date": date} for a in self.analytic]]]
        return out


@dataclass(frozen=True, slots=True)
class MovePlan:
    """One ``account.move`` to create: header, lines and the journal it comes from."""

    journal_id: str
    reference: str
    date: dt.date
    period: str  # "YYYY-MM"
    lines: tuple[MoveLine, ...]
    problems: tuple[str, ...] = ()  # mapping problems found while building (unknown account, missing party...)

    def values(self, *, company: int, journal: int, period_id: int) -> dict[str, Any]:
        return {"company": company, "journal": journal, "period": period_id, "date": self.date,
                "description": self.reference,
                "lines": [["create", [ln.values(self.date) for ln in self.lines]]]}


def journal_to_move(journal: JournalEntry, chart: TrytonChart) -> MovePlan:
    """Map one journal; problems are collected on the plan (never raised) so the caller can reject it alone."""
    problems: list[str] = []
    lines: list[MoveLine] = []
    for ln in journal.lines:
        where = f"line {ln.line_no} (account {ln.account})"
        account = chart.accounts.get(ln.account)
        if account is None:
            problems.append(f"{where}: account {ln.account} has no Tryton account in the account map — add it to "
                            "the target's account_map")
            continue
        party = None  # Tryton refuses a party on an account that does not require one
        if account in chart.party_required:
            customer = ln.dimensions.get("customer")
            if customer is not None:
                party = chart.parties.get(customer)
            elif ln.dimensions.get("project") is not None:
                party = chart.project_parties.get(ln.dimensions["project"])
        if account in chart.party_required and party is None:
            problems.append(f"{where}: Tryton account {account} needs a party but the line names no known customer "
                            "(dimension 'customer' or a project whose customer is pushed) — push the customer first")
        second: int | None = None
        amount_second: Decimal | None = None
        debit, credit = ln.debit, ln.credit
        if ln.currency != chart.company_currency:
            second = chart.currencies.get(ln.currency)
            if second is None:
                problems.append(f"{where}: currency {ln.currency} does not exist in Tryton — create it there")
            if ln.functional_currency != chart.company_currency or (
                    ln.functional_debit is None and ln.functional_credit is None):
                problems.append(f"{where}: amount in {ln.currency} has no functional amount in the company currency "
                                f"{chart.company_currency} — run the FX step before posting to Tryton")
                continue
            amount_second = ln.debit - ln.credit
            debit, credit = ln.functional_debit or ZERO, ln.functional_credit or ZERO
        analytic = tuple(chart.analytic[(d, v)] for d, v in sorted(ln.dimensions.items()) if (d, v) in chart.analytic)
        lines.append(MoveLine(account=account, debit=debit, credit=credit,
                              description=ln.description or journal.description, party=party,
                              second_currency=second, amount_second_currency=amount_second,
                              currency_code=ln.currency, analytic=analytic))
    return MovePlan(journal_id=journal.id, reference=move_reference(journal.id), date=journal.entry_date,
                    period=journal.period, lines=tuple(lines), problems=tuple(problems))


def move_problems(plan: MovePlan, *, quantum: Decimal = Decimal("0.01")) -> list[str]:
    """Everything that must be true before a move is sent (Tryton on SQLite posts an unbalanced move silently,
    so the balance is checked here, on the exact values that will be sent)."""
    out = list(plan.problems)
    if len(plan.lines) < 2:
        out.append(f"move has {len(plan.lines)} line(s); a journal entry needs at least two")
    debit = credit = ZERO
    second: dict[int, Decimal] = defaultdict(Decimal)
    for i, ln in enumerate(plan.lines, 1):
        if ln.debit < 0 or ln.credit < 0:
            out.append(f"line {i}: negative amount (debit {ln.debit}, credit {ln.credit}) — use the other side")
        if ln.debit and ln.credit:
            out.append(f"line {i}: both debit {ln.debit} and credit {ln.credit} — a line is one side only")
        for v in (ln.debit, ln.credit):
            if v != v.quantize(quantum):
                out.append(f"line {i}: amount {v} has more decimals than the company currency allows ({quantum})")
        debit += ln.debit
        credit += ln.credit
        if ln.second_currency is not None and ln.amount_second_currency is not None:
            second[ln.second_currency] += ln.amount_second_currency
    if debit != credit:
        out.append(f"move does not balance: debit {debit} != credit {credit} (difference {debit - credit}) — "
                   "Tryton on SQLite would post it anyway; fix the journal")
    for cur, total in sorted(second.items()):
        if total != 0:
            out.append(f"move does not balance in second currency {cur}: sum {total}")
    return out


def move_signature(lines: list[tuple[int, Decimal, Decimal, Decimal | None]]) -> tuple[tuple[Any, ...], ...]:
    """Order-free comparable form of (account, debit, credit, amount_second_currency) lines."""
    return tuple(sorted((a, d, c, s is None, s if s is not None else ZERO) for a, d, c, s in lines))


def plan_signature(plan: MovePlan) -> tuple[tuple[Any, ...], ...]:
    return move_signature([(ln.account, ln.debit, ln.credit, ln.amount_second_currency) for ln in plan.lines])


def readback_totals(lines: Sequence[Mapping[str, Any]], company_currency: str,
                    currency_codes: Mapping[int, str]) -> dict[str, CurrencyTotals]:
    """Debit/credit per line currency of Tryton move lines (``debit``, ``credit``, ``second_currency``,
    ``amount_second_currency``): a line with a second currency counts in that currency (sign gives the side)."""
    deb: dict[str, Decimal] = defaultdict(Decimal)
    cre: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        cur_id = ln.get("second_currency")
        if cur_id:
            code = currency_codes.get(int(cur_id), f"#{cur_id}")
            amt = Decimal(ln.get("amount_second_currency") or 0)
            if amt >= 0:
                deb[code] += amt
            else:
                cre[code] -= amt
            deb.setdefault(code, ZERO)
            cre.setdefault(code, ZERO)
        else:
            deb[company_currency] += Decimal(ln["debit"])
            cre[company_currency] += Decimal(ln["credit"])
    return {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(set(deb) | set(cre))}


# --------------------------------------------------------------------------------------------------- invoices


@dataclass(frozen=True, slots=True)
class InvoiceContext:
    """Tryton ids an invoice needs. ``revenue_accounts`` maps our chart code to a Tryton account id;
    ``default_revenue`` is our code used when a line names none. ``taxes`` maps our tax code to a Tryton
    ``account.tax`` id (a line with tax but no mapped tax is refused)."""

    company: int
    journal: int
    receivable_account: int
    currencies: Mapping[str, int]
    parties: Mapping[str, int]
    addresses: Mapping[int, int]  # party id -> invoice address id
    revenue_accounts: Mapping[str, int]
    default_revenue: str = "4000"
    payment_term: int | None = None
    taxes: Mapping[str, int] = field(default_factory=dict)


def invoice_problems(inv: Invoice, ctx: InvoiceContext) -> list[str]:
    out: list[str] = []
    party = ctx.parties.get(inv.customer_id)
    if party is None:
        out.append(f"customer {inv.customer_id} is not in Tryton — push the customer first")
    elif party not in ctx.addresses:
        out.append(f"customer {inv.customer_id} (party {party}) has no address in Tryton — give the party an address")
    if inv.currency not in ctx.currencies:
        out.append(f"currency {inv.currency} does not exist in Tryton — create it there")
    for ln in inv.lines:
        code = ln.revenue_account or ctx.default_revenue
        if code not in ctx.revenue_accounts:
            out.append(f"line {ln.line_no}: revenue account {code} is not in the account map — add it")
        if ln.tax_amount and ln.tax_code not in ctx.taxes:
            out.append(f"line {ln.line_no}: tax {ln.tax_code} ({ln.tax_amount}) has no Tryton tax in the tax map — "
                       "map it (option tax_map) or invoice it tax-exempt")
        if ln.quantity * ln.unit_price != ln.net_amount:
            out.append(f"line {ln.line_no}: quantity {ln.quantity} x unit price {ln.unit_price} = "
                       f"{ln.quantity * ln.unit_price}, not the net amount {ln.net_amount}: Tryton recomputes line "
                       "amounts, so send a unit price that gives the net exactly")
    return out


def invoice_to_values(inv: Invoice, ctx: InvoiceContext) -> dict[str, Any]:
    """``account.invoice`` values (customer invoice) with every on-change value given explicitly.
    ``reference`` holds our deterministic invoice id (idempotent lookup)."""
    party = ctx.parties[inv.customer_id]
    currency = ctx.currencies[inv.currency]
    lines = []
    for ln in inv.lines:
        values: dict[str, Any] = {
            "type": "line", "company": ctx.company, "currency": currency,
            "account": ctx.revenue_accounts[ln.revenue_account or ctx.default_revenue],
            "description": ln.description, "quantity": float(ln.quantity), "unit_price": ln.unit_price,
        }
        if ln.tax_amount and ln.tax_code in ctx.taxes:
            values["taxes"] = [["add", [ctx.taxes[ln.tax_code]]]]
        lines.append(values)
    out: dict[str, Any] = {
        "type": "out", "company": ctx.company, "party": party, "invoice_address": ctx.addresses[party],
        "account": ctx.receivable_account, "currency": currency, "journal": ctx.journal,
        "invoice_date": inv.invoice_date, "reference": inv.id, "description": f"{inv.project_id} {inv.id}"[:120],
        "comment": f"ledgerbridge invoice {inv.id} (project {inv.project_id})",
        "lines": [["create", lines]],
    }
    if ctx.payment_term is not None:
        out["payment_term"] = ctx.payment_term
    return out


# --------------------------------------------------------------------------------------------------- timesheets


def duration_hours(value: dt.timedelta | None) -> Decimal:
    """Exact hours of a Tryton duration, to 6 decimals (Tryton keeps seconds)."""
    if value is None:
        return ZERO
    micro = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    return (Decimal(micro) / Decimal(3_600_000_000)).quantize(Decimal("0.000001"))


def modified_version(stamp: dt.datetime) -> int:
    """A version number that grows with every change of a Tryton record: its ``last_modified_at`` in
    microseconds since 2000-01-01 (Tryton keeps no revision counter)."""
    delta = stamp - dt.datetime(2000, 1, 1)
    return max(1, (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def timesheet_to_time_entry(row: Mapping[str, Any], *, projects: Mapping[int, str],
                            resources: Mapping[int, str], source_system: str = "tryton") -> TimeEntry:
    """A ``timesheet.line`` row (fields ``id, work, employee, date, duration, description, last_modified_at``)
    as a canonical approved time entry. ``projects`` maps timesheet.work id -> our project id, ``resources``
    employee id -> our resource id (unknown ones are named ``tryton-work-<id>`` / ``tryton-employee-<id>``)."""
    stamp = row["last_modified_at"]
    work = int(row["work"])
    emp = int(row["employee"])
    return TimeEntry(
        id=f"tryton-ts-{row['id']}", source_system=source_system, version=modified_version(stamp),
        project_id=projects.get(work, f"tryton-work-{work}"), resource_id=resources.get(emp, f"tryton-employee-{emp}"),
        work_date=row["date"], hours=duration_hours(row.get("duration")), billable=True,
        approval_status=ApprovalStatus.APPROVED, approved_at=stamp, updated_at=stamp,
        description=row.get("description") or "",
    )
