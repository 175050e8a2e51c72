"""Canonical journals <-> Beancount text and entries. Pure: no file system (the loader lives in ``client``).

Account names: ``<Root>:<ENTITY>:<code>-<CamelName>``, e.g. ``Assets:US01:1100-AccountsReceivable``, where Root
follows the account type (asset Assets, liability Liabilities, equity Equity, revenue Income, expense Expenses),
ENTITY is the legal entity id upper-cased, and CamelName is the chart name folded to ASCII letters and digits with
each word capitalised (``Service revenue (T&M)`` -> ``ServiceRevenueTM``). See ``docs/connectors.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from beancount.core import data

from ledgerbridge.connectors.base import CurrencyTotals, ReadBack, amount_text
from ledgerbridge.model.entities import Account, AccountType, Invoice, JournalEntry

ROOTS: dict[AccountType, str] = {
    AccountType.ASSET: "Assets",
    AccountType.LIABILITY: "Liabilities",
    AccountType.EQUITY: "Equity",
    AccountType.REVENUE: "Income",
    AccountType.EXPENSE: "Expenses",
}

PERIOD_DIRECTIVE = "ledgerbridge-period"
PERIOD_STATUSES = ("open", "closing", "closed", "locked")
DIM_PREFIX = "dim_"

_COMPONENT_BAD = re.compile(r"[^A-Za-z0-9-]+")
_WORD = re.compile(r"[A-Za-z0-9]+")
_META_KEY_TAIL = re.compile(r"^[A-Za-z0-9_-]+$")
_LINK = re.compile(r"^[A-Za-z0-9\-_/.]+$")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def camel_name(name: str) -> str:
    """``'Sales tax / VAT payable'`` -> ``'SalesTaxVATPayable'``; deterministic, ASCII letters and digits only."""
    return "".join(w[0].upper() + w[1:] for w in _WORD.findall(_ascii(name)))


def entity_component(entity_id: str) -> str:
    comp = _COMPONENT_BAD.sub("-", _ascii(entity_id).upper()).strip("-")
    if not comp or not comp[0].isalnum():
        raise ValueError(f"legal entity id {entity_id!r} cannot name a Beancount account component: use letters "
                         "and digits, starting with a letter or digit")
    return comp


def account_name(account: Account, entity_id: str) -> str:
    """The Beancount account for ``account`` in ``entity_id``'s ledger."""
    code = _COMPONENT_BAD.sub("-", _ascii(account.code)).strip("-")
    if not code or not code[0].isalnum():
        raise ValueError(f"account code {account.code!r} cannot start a Beancount account component")
    name = camel_name(account.name)
    return f"{ROOTS[account.type]}:{entity_component(entity_id)}:{code}{'-' + name if name else ''}"


def quote(text: str) -> str:
    """A Beancount string literal; line breaks become spaces (a narration is one line)."""
    one_line = " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text
    return '"' + one_line.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Chart:
    """Resolves an account code for an entity: the entity's own account first, then the shared one."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self._by_key: dict[tuple[str | None, str], Account] = {}
        for a in accounts:
            key = (a.legal_entity_id, a.code)
            if key in self._by_key:
                raise ValueError(f"account {a.code} is defined twice for {a.legal_entity_id or 'all entities'}")
            self._by_key[key] = a

        self._names: dict[tuple[str, str], str] = {}

    def resolve(self, entity_id: str, code: str) -> Account | None:
        return self._by_key.get((entity_id, code)) or self._by_key.get((None, code))

    def name(self, entity_id: str, account: Account) -> str:
        """:func:`account_name`, memoised (a run renders the same few accounts thousands of times)."""
        key = (entity_id, account.code)
        hit = self._names.get(key)
        if hit is None:
            hit = self._names[key] = account_name(account, entity_id)
        return hit


# --------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderedJournal:
    journal_id: str
    text: str  # the transaction, ending with a blank line
    content_hash: str  # SHA-256 of what the ledger holds for it (run id and hash lines excluded)
    accounts: frozenset[str]


def journal_problems(
    journal: JournalEntry,
    chart: Chart,
    currencies: frozenset[str],
    opened: Mapping[str, frozenset[str] | None],
    open_date: dt.date,
) -> list[str]:
    """Reasons the journal cannot go into this entity's ledger (empty = it can)."""
    out: list[str] = []
    if any(ch in journal.id for ch in '"\\\r\n'):
        out.append(f"journal id {journal.id!r} contains a quote, backslash or line break; journal ids must be "
                   "plain keys (entity + period + rule + sequence)")
    if journal.entry_date < open_date:
        out.append(f"entry date {journal.entry_date} is before the ledger's account open date {open_date} — "
                   "configure an earlier open_date for the Beancount target")
    for ln in journal.lines:
        acct = chart.resolve(journal.legal_entity_id, ln.account)
        if acct is None:
            out.append(f"line {ln.line_no}: account {ln.account} is not in the chart of accounts of "
                       f"{journal.legal_entity_id} — add it to the chart or fix the posting rule's account role")
            continue
        if not acct.active:
            out.append(f"line {ln.line_no}: account {ln.account} ({acct.name}) is inactive — reactivate it or map "
                       "the posting rule to an active account")
            continue
        name = chart.name(journal.legal_entity_id, acct)
        allowed = opened.get(name, currencies)
        if allowed is not None and ln.currency not in allowed:
            out.append(f"line {ln.line_no}: currency {ln.currency} is not allowed on {name} (allowed: "
                       f"{', '.join(sorted(allowed))}) — add {ln.currency} to the entity's ledger currencies"
                       + (" and to that account's open directive" if name in opened else ""))
        for key in ln.dimensions:
            if not _META_KEY_TAIL.match(key):
                out.append(f"line {ln.line_no}: dimension name {key!r} cannot be a Beancount metadata key (use "
                           "letters, digits, '_' and '-')")
    return out


def render_journal(journal: JournalEntry, chart: Chart, run_id: str) -> RenderedJournal:
    """One balanced Beancount transaction for ``journal`` (check :func:`journal_problems` first).

    Debits are positive, credits negative, in the line currency; functional amounts, FX rate and rate date,
    dimensions (``dim_<name>``) go into posting metadata, and so do the line number and lineage count when they
    differ from the posting's position (1-based) and the transaction's ``lineage_count`` (the lines' maximum)."""
    e = journal.legal_entity_id
    links = sorted({x for x in (journal.id, journal.reverses) if x and _LINK.match(x)})
    head = f"{journal.entry_date.isoformat()} * {quote(journal.description or journal.journal_type.value)}"
    if links:
        head += " " + " ".join(f"^{x}" for x in links)
    lineage = max((ln.lineage_count for ln in journal.lines), default=0)
    meta = [f"  journal_id: {quote(journal.id)}", f"  period: {quote(journal.period)}",
            f"  journal_type: {quote(journal.journal_type.value)}", f"  lineage_count: {lineage}"]
    if journal.reverses:
        meta.append(f"  reverses: {quote(journal.reverses)}")
    if journal.redated_from:
        meta.append(f"  redated_from: {quote(journal.redated_from)}")
    body: list[str] = []
    accounts = set()
    for pos, ln in enumerate(sorted(journal.lines, key=lambda x: x.line_no), start=1):
        acct = chart.resolve(e, ln.account)
        if acct is None:
            raise ValueError(f"journal {journal.id} line {ln.line_no}: account {ln.account} not in the chart")
        name = chart.name(e, acct)
        accounts.add(name)
        body.append(f"  {name}  {amount_text(ln.debit - ln.credit, ln.currency)} {ln.currency}")
        # written only when they differ from the defaults (position; the transaction's lineage_count): a smaller
        # ledger loads faster, and nothing is lost
        if ln.line_no != pos:
            body.append(f"    line_no: {ln.line_no}")
        for k in sorted(ln.dimensions):
            body.append(f"    {DIM_PREFIX}{k}: {quote(ln.dimensions[k])}")
        if ln.lineage_count != lineage:
            body.append(f"    lineage_count: {ln.lineage_count}")
        if ln.functional_currency is not None:
            fc = ln.functional_currency
            famt = (ln.functional_debit or Decimal(0)) - (ln.functional_credit or Decimal(0))
            body.append(f"    functional_currency: {quote(fc)}")
            body.append(f"    functional_amount: {quote(amount_text(famt, fc))}")
        if ln.fx_rate is not None:
            body.append(f"    fx_rate: {quote(f'{ln.fx_rate:f}')}")
        if ln.fx_rate_date is not None:
            body.append(f"    fx_rate_date: {ln.fx_rate_date.isoformat()}")
        if ln.description:
            body.append(f"    description: {quote(ln.description)}")
    held = "\n".join([head, *meta, *body]) + "\n"
    digest = hashlib.sha256(held.encode("utf-8")).hexdigest()
    text = "\n".join([head, *meta, f"  run_id: {quote(run_id)}", f"  content_hash: {quote(digest)}", *body])
    return RenderedJournal(journal.id, text + "\n\n", digest, frozenset(accounts))


def render_opens(accounts: Iterable[str], currencies: frozenset[str], open_date: dt.date) -> str:
    cur = " " + ",".join(sorted(currencies)) if currencies else ""
    lines = [f"{open_date.isoformat()} open {a}{cur}\n" for a in sorted(accounts)]
    return "".join(lines) + "\n" if lines else ""


def render_period_status(entity_id: str, period: str, status: str, on: dt.date) -> str:
    if status not in PERIOD_STATUSES:
        raise ValueError(f"period status {status!r} is not one of {list(PERIOD_STATUSES)}")
    return f"{on.isoformat()} custom {quote(PERIOD_DIRECTIVE)} {quote(period)} {quote(status)}\n\n"


INVOICE_DIRECTIVE = "ledgerbridge-invoice"


def render_invoice(inv: Invoice, number: str, status: str, credits: str = "") -> str:
    """The ``custom "ledgerbridge-invoice" NUMBER KEY STATUS`` directive registering an invoice (no amounts move:
    the receivable entry is the posting run's ``invoice`` journal, lineage ``ledgerbridge:invoice:KEY``)."""
    meta = [f"  customer: {quote(inv.customer_id)}", f"  project: {quote(inv.project_id)}",
            f"  currency: {quote(inv.currency)}", f"  net: {quote(amount_text(inv.net_total, inv.currency))}",
            f"  tax: {quote(amount_text(inv.tax_total, inv.currency))}",
            f"  total: {quote(amount_text(inv.total, inv.currency))}", f"  lines: {len(inv.lines)}"]
    if inv.due_date is not None:
        meta.append(f"  due_date: {inv.due_date.isoformat()}")
    if credits:
        meta.append(f"  credits: {quote(credits)}")
    head = (f"{inv.invoice_date.isoformat()} custom {quote(INVOICE_DIRECTIVE)} {quote(number)} {quote(inv.id)} "
            f"{quote(status)}")
    return "\n".join([head, *meta]) + "\n\n"


def read_invoices(entries: Sequence[data.Directive]) -> dict[str, dict[str, object]]:
    """key -> ``{key, number, status, currency, net, tax, credits, ref}`` of the invoice directives held."""
    out: dict[str, dict[str, object]] = {}
    for entry in entries:
        if isinstance(entry, data.Custom) and entry.type == INVOICE_DIRECTIVE and len(entry.values) == 3:
            number, key, status = (str(v.value) for v in entry.values)
            m = entry.meta
            out[key] = {"key": key, "number": number, "status": status, "currency": str(m.get("currency", "")),
                        "net": Decimal(str(m.get("net", "0"))), "tax": Decimal(str(m.get("tax", "0"))),
                        "credits": m.get("credits"), "ref": f"{number}@{m.get('lineno')}"}
    return out


# --------------------------------------------------------------------------------------------------- reading back


@dataclass(frozen=True, slots=True)
class HeldJournal:
    """A journal as the loaded ledger holds it."""

    journal_id: str
    content_hash: str
    readback: ReadBack


@dataclass(slots=True)
class LedgerState:
    """What one loaded entity ledger holds: journals by id, open accounts (with currency constraint), periods."""

    journals: dict[str, HeldJournal] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # journal ids present more than once (must stay empty)
    opened: dict[str, frozenset[str] | None] = field(default_factory=dict)
    periods: dict[str, str] = field(default_factory=dict)


def summarize(entries: Sequence[data.Directive], name_of: Callable[[str], str]) -> LedgerState:
    """Summarise loaded entries. ``name_of`` maps an entry's file name to the name shown in target refs
    (``ledger/US01/2026-01.beancount``); a target ref is ``<name>:<line>``."""
    state = LedgerState()
    periods: list[tuple[dt.date, int, str, str]] = []
    for entry in entries:
        if isinstance(entry, data.Transaction):
            jid = entry.meta.get("journal_id")
            if not isinstance(jid, str):
                continue
            deb: dict[str, Decimal] = defaultdict(Decimal)
            cre: dict[str, Decimal] = defaultdict(Decimal)
            for p in entry.postings:
                units = p.units
                if units is None or not isinstance(units.number, Decimal) or not units.currency:
                    continue
                deb[units.currency] += max(units.number, Decimal(0))
                cre[units.currency] += max(-units.number, Decimal(0))
            totals = {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(set(deb) | set(cre))}
            ref = f"{name_of(str(entry.meta.get('filename', '?')))}:{entry.meta.get('lineno')}"
            rb = ReadBack(ref, totals, len(entry.postings))
            if jid in state.journals:
                state.duplicates.append(jid)
            state.journals[jid] = HeldJournal(jid, str(entry.meta.get("content_hash", "")), rb)
        elif isinstance(entry, data.Open):
            state.opened[entry.account] = frozenset(entry.currencies) if entry.currencies else None
        elif isinstance(entry, data.Custom) and entry.type == PERIOD_DIRECTIVE and len(entry.values) == 2:
            period, status = (v.value for v in entry.values)
            periods.append((entry.date, int(entry.meta.get("lineno", 0)), str(period), str(status)))
    for _, _, period, status in sorted(periods):  # the latest declaration of a period wins
        state.periods[period] = status
    return state
