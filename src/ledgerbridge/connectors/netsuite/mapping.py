"""Pure mapping between the canonical model and NetSuite REST records (no I/O).

- :func:`journal_documents` turns a :class:`JournalEntry` into NetSuite ``journalentry`` bodies. A NetSuite journal
  has one transaction currency, while our journal balances per currency: a single-currency journal becomes one
  NetSuite journal with external id = journal id; a journal with lines in several currencies becomes one NetSuite
  journal per currency, external id ``<journal id>~<CUR>`` (each balances on its own). Foreign-currency documents
  carry ``exchangeRate`` = the line FX rate our FX step used. Every problem NetSuite would refuse is found here
  first (unmapped or inactive account, account or dimension value not available to the subsidiary, A/R or A/P
  line without a name, too many decimals) and reported on the document, never raised.
- :func:`invoice_body` turns an :class:`Invoice` into an ``invoice`` body (customer, items, tax codes).
- :func:`period_state` reads an ``accountingperiod`` row's flags as our period status.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledgerbridge.model.entities import Invoice, JournalEntry
from ledgerbridge.model.money import MINOR_UNITS, quantum

SPLIT = "~"  # <journal id>~<currency> for the per-currency documents of a multi-currency journal
ZERO = Decimal(0)
#: NetSuite record -> (journal line field, SuiteQL table)
DIMENSION_RECORDS: dict[str, tuple[str, str]] = {
    "department": ("department", "department"),
    "class": ("class", "classification"),
    "classification": ("class", "classification"),
    "location": ("location", "location"),
    "job": ("entity", "job"),
    "customer": ("entity", "customer"),
}
NAME_REQUIRED = frozenset({"AcctRec", "AcctPay"})  # NetSuite refuses A/R and A/P lines without a name (entity)
#: transaction.status letters of an invoice (CustInvc) -> canonical invoice status
INVOICE_STATUS = {"A": "posted", "B": "paid", "D": "submitted", "E": "void", "V": "void"}


def truthy(value: Any) -> bool:
    """SuiteQL booleans come back as ``"T"``/``"F"`` (sometimes true/false)."""
    return value is True or str(value).upper() in ("T", "TRUE")


def id_set(value: Any) -> frozenset[str]:
    """A multi-select column (``"1, 3"``) or a single id -> the ids; empty = no restriction."""
    if value in (None, ""):
        return frozenset()
    return frozenset(p.strip() for p in str(value).split(",") if p.strip())


@dataclass(frozen=True, slots=True)
class Ref:
    """A NetSuite list record: internal id, whether inactive, and the subsidiaries it is restricted to."""

    id: str
    name: str = ""
    inactive: bool = False
    subsidiaries: frozenset[str] = frozenset()
    kind: str = ""  # account type for accounts (AcctRec, Income, ...)

    def allowed_for(self, subsidiary: str) -> bool:
        return not self.subsidiaries or subsidiary in self.subsidiaries


@dataclass(frozen=True, slots=True)
class DimensionRule:
    """How one of our dimensions lands on a journal line: ``field`` (department/class/location/entity) filled
    with the record of ``record`` whose external id (or ``values[code]``) is the dimension's code."""

    dimension: str
    record: str  # department | classification | location | job | customer
    line_field: str
    required: bool = False
    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, dimension: str, spec: Any) -> DimensionRule:
        if isinstance(spec, str):
            spec = {"record": spec}
        if not isinstance(spec, Mapping) or str(spec.get("record", "")) not in DIMENSION_RECORDS:
            raise ValueError(f"dimensions.{dimension}: give a record, one of {sorted(DIMENSION_RECORDS)} "
                             "(e.g. `cost_center: department` or `{record: department, values: {CC-1: 7}}`)")
        fld, table = DIMENSION_RECORDS[str(spec["record"])]
        vals = spec.get("values") or {}
        if not isinstance(vals, Mapping):
            raise ValueError(f"dimensions.{dimension}.values must map our code -> NetSuite internal id")
        return cls(dimension, table, fld, bool(spec.get("required", False)),
                   {str(k): str(v) for k, v in vals.items()})


@dataclass(slots=True)
class Setup:
    """What mapping needs to know about the account, resolved once by the connector."""

    subsidiaries: Mapping[str, str]  # legal entity -> subsidiary id
    base_currency: Mapping[str, str]  # subsidiary id -> ISO code
    accounts: Mapping[str, Ref]  # our account code -> NetSuite account
    currencies: Mapping[str, str]  # ISO code -> currency id
    rules: Sequence[DimensionRule] = ()
    values: Mapping[tuple[str, str], Ref] = field(default_factory=dict)  # (table, our code) -> record


@dataclass(frozen=True, slots=True)
class DocLine:
    account: str
    debit: Decimal
    credit: Decimal
    memo: str = ""
    dims: tuple[tuple[str, str], ...] = ()  # (field, internal id)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"account": {"id": self.account}}
        if self.debit:
            out["debit"] = self.debit
        if self.credit:
            out["credit"] = self.credit
        if self.memo:
            out["memo"] = self.memo[:4000]
        for fld, value in self.dims:
            out[fld] = {"id": value}
        return out


@dataclass(frozen=True, slots=True)
class JournalDoc:
    """One NetSuite journal entry to upsert for (part of) one of our journals."""

    journal_id: str
    external_id: str
    currency: str
    date: dt.date
    subsidiary: str
    lines: tuple[DocLine, ...]
    exchange_rate: Decimal | None = None
    memo: str = ""
    problems: tuple[str, ...] = ()

    def body(self, *, currency_id: str, period_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subsidiary": {"id": self.subsidiary}, "currency": {"id": currency_id}, "tranDate": self.date.isoformat(),
            "postingPeriod": {"id": period_id}, "memo": self.memo[:999], "approved": True,
            "line": {"items": [ln.body() for ln in self.lines]}}
        if self.exchange_rate is not None:
            out["exchangeRate"] = self.exchange_rate
        return out

    def signature(self) -> tuple[Any, ...]:
        return signature(self.currency, [(ln.account, ln.debit, ln.credit) for ln in self.lines])


def signature(currency: str, lines: Sequence[tuple[str, Decimal, Decimal]]) -> tuple[Any, ...]:
    """Order-free content key of a document: currency and (account, debit, credit) per line."""
    return (currency, tuple(sorted((str(a), Decimal(d or 0), Decimal(c or 0)) for a, d, c in lines)))


def journal_id_of(external_id: str) -> str:
    return external_id.split(SPLIT, 1)[0]


def journal_documents(journal: JournalEntry, setup: Setup) -> list[JournalDoc]:
    """The NetSuite journal(s) for one journal; problems are put on the documents (see the module doc)."""
    sub = setup.subsidiaries.get(journal.legal_entity_id, "")
    by_ccy: dict[str, list[Any]] = defaultdict(list)
    for ln in journal.lines:
        by_ccy[ln.currency].append(ln)
    docs: list[JournalDoc] = []
    split = len(by_ccy) > 1
    for ccy, lines in sorted(by_ccy.items()):
        problems: list[str] = []
        if ccy not in setup.currencies:
            problems.append(f"currency {ccy} is not enabled in NetSuite (Lists > Accounting > Currencies)")
        q = quantum(ccy) if ccy in MINOR_UNITS else None
        out: list[DocLine] = []
        rates = {ln.fx_rate for ln in lines if ln.fx_rate is not None}
        for ln in lines:
            where = f"line {ln.line_no} (account {ln.account})"
            acct = setup.accounts.get(ln.account)
            if acct is None:
                problems.append(f"{where}: account {ln.account} is not in NetSuite (no account with that number, "
                                "and no account_map entry)")
                continue
            problems += ref_problems(acct, f"{where}: NetSuite account {acct.name or acct.id}", sub)
            for amount in (ln.debit, ln.credit):
                if q is not None and amount != amount.quantize(q):
                    problems.append(f"{where}: amount {amount} has more decimals than {ccy} allows")
            dims, dim_problems = line_dimensions(ln.dimensions, setup, sub, where)
            problems += dim_problems
            if acct.kind in NAME_REQUIRED and not any(f == "entity" for f, _ in dims):
                problems.append(f"{where}: NetSuite needs a name (customer/project) on {acct.kind} lines — give the "
                                "line a dimension mapped to job or customer")
            out.append(DocLine(acct.id, ln.debit, ln.credit, ln.description, dims))
        rate: Decimal | None = None
        if ccy != setup.base_currency.get(sub, ccy):
            if len(rates) != 1:
                problems.append(f"{ccy} lines need one FX rate to the subsidiary currency (found {sorted(rates)})")
            else:
                rate = next(iter(rates))
        docs.append(JournalDoc(
            journal.id, f"{journal.id}{SPLIT}{ccy}" if split else journal.id, ccy, journal.entry_date, sub,
            tuple(out), rate, journal.description, tuple(problems)))
    return docs


def ref_problems(ref: Ref, what: str, subsidiary: str) -> list[str]:
    """Why NetSuite would refuse ``ref`` on a line of ``subsidiary``: inactive, or restricted to others."""
    out = [f"{what} is inactive"] if ref.inactive else []
    if not ref.allowed_for(subsidiary):
        out.append(f"{what} is not available to subsidiary {subsidiary} (restricted to "
                   f"{', '.join(sorted(ref.subsidiaries))})")
    return out


def line_dimensions(dimensions: Mapping[str, str], setup: Setup, subsidiary: str, where: str
                    ) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """``(field, internal id)`` pairs for a line's dimensions per the rules, and the problems found: a value not
    in NetSuite, inactive, or not available to the subsidiary; a required dimension missing; two dimensions on
    one field."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for rule in setup.rules:
        code = dimensions.get(rule.dimension)
        if code is None:
            if rule.required:
                problems.append(f"{where}: dimension {rule.dimension} is required by the NetSuite mapping")
            continue
        ref = setup.values.get((rule.record, code))
        if ref is None:
            problems.append(f"{where}: {rule.dimension} {code} has no NetSuite {rule.record} (external id {code}"
                            f"{' or dimensions.' + rule.dimension + '.values' if rule.record != 'job' else ''})"
                            + (" — push the projects first" if rule.record == "job" else ""))
            continue
        problems += ref_problems(ref, f"{where}: NetSuite {rule.record} {code} (id {ref.id})", subsidiary)
        if rule.line_field in out and out[rule.line_field] != ref.id:
            problems.append(f"{where}: two dimensions map to the NetSuite field {rule.line_field}")
        out[rule.line_field] = ref.id
    return tuple(sorted(out.items())), problems


# --------------------------------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    name: str
    start: dt.date
    end: dt.date
    closed: bool = False
    all_locked: bool = False
    ar_locked: bool = False
    ap_locked: bool = False

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Period:
        return cls(str(r["id"]), str(r.get("periodname") or ""), dt.date.fromisoformat(str(r["startdate"])[:10]),
                   dt.date.fromisoformat(str(r["enddate"])[:10]), truthy(r.get("closed")),
                   truthy(r.get("alllocked")), truthy(r.get("arlocked")), truthy(r.get("aplocked")))

    def state(self) -> str:
        """``closed`` (period closed), ``locked`` (all transactions locked), ``closing`` (A/R or A/P locked: the
        close has begun), else ``open``."""
        if self.closed:
            return "closed"
        if self.all_locked:
            return "locked"
        if self.ar_locked or self.ap_locked:
            return "closing"
        return "open"

    def refuses(self, kind: str) -> str | None:
        """Why NetSuite would refuse a ``journal`` or ``invoice`` dated in this period (None = it accepts)."""
        if self.closed:
            return f"NetSuite period {self.name} is closed"
        if self.all_locked:
            return f"NetSuite period {self.name} is locked for all transactions"
        if kind == "invoice" and self.ar_locked:
            return f"NetSuite period {self.name} is locked for A/R"
        return None


def period_for(periods: Sequence[Period], day: dt.date) -> Period | None:
    for p in periods:
        if p.start <= day <= p.end:
            return p
    return None


# --------------------------------------------------------------------------------------------------- invoices


@dataclass(frozen=True, slots=True)
class InvoiceSetup:
    customer: str | None  # internal id of the customer (None: not in NetSuite)
    subsidiary: str
    currency: str | None
    items: Mapping[str, str]  # our revenue account code -> item id ("*" = default)
    taxes: Mapping[str, str]  # our tax code -> NetSuite tax code id


def invoice_body(inv: Invoice, s: InvoiceSetup) -> tuple[dict[str, Any], list[str]]:
    """The ``invoice`` record body and the problems that would make NetSuite refuse it."""
    problems: list[str] = []
    if s.customer is None:
        problems.append(f"customer {inv.customer_id} is not in NetSuite — push the customers first")
    if s.currency is None:
        problems.append(f"currency {inv.currency} is not enabled in NetSuite")
    items = []
    for ln in inv.lines:
        item = s.items.get(ln.revenue_account or "") or s.items.get("*")
        if item is None:
            problems.append(f"line {ln.line_no}: no NetSuite item for revenue account {ln.revenue_account} "
                            "(item_map / invoice_item)")
            continue
        row: dict[str, Any] = {"item": {"id": item}, "description": ln.description[:4000], "quantity": ln.quantity,
                               "rate": ln.unit_price, "amount": ln.net_amount}
        tax = s.taxes.get(ln.tax_code)
        if tax is not None:
            row["taxCode"] = {"id": tax}
        elif ln.tax_amount:
            problems.append(f"line {ln.line_no}: tax code {ln.tax_code} has no NetSuite tax code (tax_map)")
        items.append(row)
    body: dict[str, Any] = {
        "entity": {"id": s.customer}, "subsidiary": {"id": s.subsidiary}, "currency": {"id": s.currency},
        "tranDate": inv.invoice_date.isoformat(), "memo": f"{inv.id} project {inv.project_id}"[:999],
        "otherRefNum": inv.id[:45], "item": {"items": items}}
    if inv.due_date is not None:
        body["dueDate"] = inv.due_date.isoformat()
    return body, problems


__all__ = ["DIMENSION_RECORDS", "INVOICE_STATUS", "SPLIT", "DimensionRule", "DocLine", "InvoiceSetup", "JournalDoc",
           "Period", "Ref", "Setup", "id_set", "invoice_body", "journal_documents", "journal_id_of", "line_dimensions",
           "period_for", "ref_problems", "signature", "truthy"]
