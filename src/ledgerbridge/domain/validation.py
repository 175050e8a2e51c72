"""Validation before any write: journals against the target ledger's master data, invoices against tax rules.

Nothing here raises for a bad item: each check returns a list of :class:`Violation` (item, stable rule code,
message, fix), empty when the item may be written. :func:`raise_for` turns a non-empty list into one
:class:`DomainError` for flows that stop at the first bad item. The rule codes and their fixes are listed in
``docs/domain-posting-periods-validation.md``.

The journal checks are defence in depth: :class:`~ledgerbridge.model.entities.JournalEntry` already refuses an
unbalanced entry at construction, but an entry can arrive through ``model_construct`` or a foreign reader, and
some ERPs post unbalanced moves silently — so balance is checked again here.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.periods import PeriodBook
from ledgerbridge.model.entities import (
    Account,
    Customer,
    DimensionValue,
    Invoice,
    JournalEntry,
    PeriodStatus,
    TaxCode,
)
from ledgerbridge.model.money import MINOR_UNITS, quantum, round_money

__all__ = [
    "ValidationContext",
    "raise_for",
    "validate_invoice_tax",
    "validate_journal",
    "validate_journals",
]


@dataclass(frozen=True)
class ValidationContext:
    """What a journal is checked against. Build it with :meth:`build`.

    - ``accounts``: chart of accounts; an account with ``legal_entity_id`` None is shared by every entity, one with
      an entity id only exists for that entity (it wins over a shared one with the same code).
    - ``dimension_values``: the values of *managed* dimensions (each dimension name that has at least one value
      here). A line's value of a managed dimension must exist, be active and be allowed for the entity; a
      dimension nobody manages here (e.g. ``project`` when projects are not in the ledger's dimension tables) is
      not checked, unless ``known_dimensions`` is given: then any other dimension name is refused.
    - ``periods``: the period book; None skips the period checks (only for dry runs: flows always pass it).
    - ``currencies``: entity -> currencies the ledger accepts for it; None skips the check; an entity missing
      from a given mapping is refused.
    - ``functional_currencies``: entity -> functional currency; lines in another currency must then carry the
      functional amounts with rate and rate date.
    - ``require_lineage``: every line must trace back to source items (``lineage_count`` > 0).
    """

    accounts: Mapping[tuple[str, str | None], Account] = field(default_factory=dict)
    account_entities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    dimension_values: Mapping[tuple[str, str], DimensionValue] = field(default_factory=dict)
    managed_dimensions: frozenset[str] = frozenset()
    known_dimensions: frozenset[str] | None = None
    periods: PeriodBook | None = None
    currencies: Mapping[str, frozenset[str]] | None = None
    functional_currencies: Mapping[str, str] = field(default_factory=dict)
    require_lineage: bool = True

    @classmethod
    def build(
        cls,
        *,
        accounts: Iterable[Account] = (),
        dimension_values: Iterable[DimensionValue] = (),
        periods: PeriodBook | None = None,
        currencies: Mapping[str, Iterable[str]] | None = None,
        functional_currencies: Mapping[str, str] | None = None,
        known_dimensions: Iterable[str] | None = None,
        require_lineage: bool = True,
    ) -> ValidationContext:
        acc: dict[tuple[str, str | None], Account] = {}
        ents: dict[str, set[str]] = defaultdict(set)
        for a in accounts:
            acc[(a.code, a.legal_entity_id)] = a
            if a.legal_entity_id is not None:
                ents[a.code].add(a.legal_entity_id)
        dims = {(d.dimension, d.code): d for d in dimension_values}
        return cls(
            accounts=acc,
            account_entities={k: frozenset(v) for k, v in ents.items()},
            dimension_values=dims,
            managed_dimensions=frozenset(d for d, _ in dims),
            known_dimensions=frozenset(known_dimensions) if known_dimensions is not None else None,
            periods=periods,
            currencies=None if currencies is None else {k: frozenset(v) for k, v in currencies.items()},
            functional_currencies=dict(functional_currencies or {}),
            require_lineage=require_lineage,
        )

    def account(self, code: str, legal_entity_id: str) -> Account | None:
        """The entity's own account with this code, else the shared one."""
        return self.accounts.get((code, legal_entity_id)) or self.accounts.get((code, None))


def _v(item: str, rule: str, message: str, fix: str) -> Violation:
    return Violation(item, rule, message, fix)


def validate_journal(entry: JournalEntry, ctx: ValidationContext) -> list[Violation]:
    """Every broken rule of ``entry`` against ``ctx`` (empty list: the entry may be written)."""
    out: list[Violation] = []
    jitem = f"journal {entry.id}"
    entity = entry.legal_entity_id
    lines = entry.lines

    # ---- shape and balance (defence in depth)
    if len(lines) < 2:
        out.append(_v(jitem, "journal.too_few_lines", f"a journal needs at least 2 lines, it has {len(lines)}",
                      "rebuild the journal with posting.summarize (it never emits fewer than 2 lines)"))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    ftotals: dict[str, Decimal] = defaultdict(Decimal)
    seen_no: set[int] = set()
    for ln in lines:
        item = f"{jitem} line {ln.line_no}"
        if ln.line_no in seen_no:
            out.append(_v(item, "line.duplicate_number", "two lines share this line number",
                          "number lines 1..n once each"))
        seen_no.add(ln.line_no)
        if ln.debit < 0 or ln.credit < 0:
            out.append(_v(item, "line.negative", f"debit {ln.debit} / credit {ln.credit}: amounts cannot be negative",
                          "put a negative debit on the credit side (and vice versa)"))
        if ln.debit and ln.credit:
            out.append(_v(item, "line.both_sides", "the line has both a debit and a credit",
                          "split it into a debit line and a credit line, or net the two"))
        if not ln.debit and not ln.credit:
            out.append(_v(item, "line.zero", "the line has neither a debit nor a credit",
                          "drop zero lines before posting (summarize drops them)"))
        if ln.currency in MINOR_UNITS:
            q = quantum(ln.currency)
            if ln.debit.quantize(q) != ln.debit or ln.credit.quantize(q) != ln.credit:
                out.append(_v(item, "line.unrounded", f"amount has more decimals than {ln.currency} allows",
                              f"round to the {ln.currency} minor unit (round_money) before building the journal"))
        totals[ln.currency] += ln.debit - ln.credit
        if ln.functional_currency is not None:
            ftotals[ln.functional_currency] += (ln.functional_debit or 0) - (ln.functional_credit or 0)
        if ctx.require_lineage and ln.lineage_count <= 0 and not ln.lineage:
            out.append(_v(item, "line.no_lineage", "the line does not trace back to any source item",
                          "build ledger lines with posting.summarize, which records lineage on every line"))
        elif ln.lineage and ln.lineage_count < len(ln.lineage):
            out.append(_v(item, "line.lineage_count", f"lineage_count {ln.lineage_count} is below the "
                          f"{len(ln.lineage)} refs listed", "set lineage_count to the number of source versions"))
    for ccy, diff in sorted(totals.items()):
        if diff != 0:
            out.append(_v(jitem, "journal.unbalanced", f"{ccy} debits exceed credits by {diff}",
                          "rebuild the journal from its postings; never edit lines by hand"))
    for ccy, diff in sorted(ftotals.items()):
        if diff != 0:
            out.append(_v(jitem, "journal.functional_unbalanced",
                          f"functional {ccy} debits exceed credits by {diff}",
                          "put the functional rounding difference on the largest line (summarize does)"))

    # ---- period
    if ctx.periods is not None:
        p = ctx.periods.get(entity, entry.period)
        if p is None:
            out.append(_v(jitem, "period.unknown", f"{entity} has no period {entry.period}",
                          "create the period (ledgerbridge periods sync) before posting into it"))
        else:
            if p.status is not PeriodStatus.OPEN:
                out.append(_v(jitem, "period.not_open", f"period {entity}/{entry.period} is {p.status.value}",
                              "re-place the items with the entity's late-item policy, or reopen the period"))
            if not p.start_date <= entry.entry_date <= p.end_date:
                out.append(_v(jitem, "period.date_outside",
                              f"entry date {entry.entry_date} is outside {entry.period} "
                              f"({p.start_date}..{p.end_date})",
                              "date the entry inside its period (a redated item takes the period's first day)"))

    # ---- currencies
    allowed = None if ctx.currencies is None else ctx.currencies.get(entity)
    if ctx.currencies is not None and allowed is None:
        out.append(_v(jitem, "currency.unknown_entity", f"no allowed currencies configured for {entity}",
                      "add the legal entity to the ledger's currency configuration"))
    fcy = ctx.functional_currencies.get(entity)
    for ln in lines:
        item = f"{jitem} line {ln.line_no}"
        if allowed is not None and ln.currency not in allowed:
            out.append(_v(item, "currency.not_allowed",
                          f"{ln.currency} is not allowed in {entity} (allowed: {', '.join(sorted(allowed))})",
                          f"enable {ln.currency} for {entity} in the ledger, or convert the item"))
        out.extend(_fx_checks(item, ln.currency, fcy, ln.functional_currency, ln.fx_rate, ln.fx_rate_date,
                              ln.functional_debit, ln.functional_credit))

    # ---- accounts and dimensions
    for ln in lines:
        item = f"{jitem} line {ln.line_no}"
        acct = ctx.account(ln.account, entity)
        if acct is None:
            others = ctx.account_entities.get(ln.account)
            if others:
                out.append(_v(item, "account.not_for_entity",
                              f"account {ln.account} exists only for {', '.join(sorted(others))}, not {entity}",
                              f"map the account role to an account of {entity} (account_roles.by_entity)"))
            else:
                out.append(_v(item, "account.unknown", f"account {ln.account} is not in the chart of accounts",
                              "sync the chart of accounts, or fix account_roles in the posting rules"))
        else:
            if not acct.active:
                out.append(_v(item, "account.inactive", f"account {ln.account} ({acct.name}) is inactive",
                              "reactivate the account in the ledger or map the role to an active account"))
            for dim in acct.required_dimensions:
                if not ln.dimensions.get(dim):
                    out.append(_v(item, "dimension.required_missing",
                                  f"account {ln.account} requires dimension {dim!r}",
                                  f"list {dim} in the posting rule's dimensions and set it on the source items"))
        for dim, code in sorted(ln.dimensions.items()):
            out.extend(_dimension_checks(item, dim, code, entity, ctx))
    return out


def _fx_checks(
    item: str, ccy: str, fcy: str | None, line_fcy: str | None, rate: Decimal | None, rate_date: dt.date | None,
    fdebit: Decimal | None, fcredit: Decimal | None,
) -> list[Violation]:
    out: list[Violation] = []
    if line_fcy is not None and fcy is not None and line_fcy != fcy:
        out.append(_v(item, "fx.wrong_functional_currency",
                      f"functional currency {line_fcy} on the line, the entity's is {fcy}",
                      "convert to the legal entity's functional currency"))
    if fcy is not None and ccy != fcy and line_fcy is None:
        out.append(_v(item, "fx.missing_functional", f"{ccy} line without {fcy} functional amounts",
                      "pass functional_currencies and an FX converter to summarize"))
    if line_fcy is not None:
        if rate is None or rate_date is None:
            out.append(_v(item, "fx.missing_rate", "converted amounts without an explicit rate and rate date",
                          "record fx_rate and fx_rate_date on every converted line"))
        elif rate <= 0:
            out.append(_v(item, "fx.bad_rate", f"FX rate {rate} is not positive", "correct the rate feed"))
        if fdebit is None and fcredit is None:
            out.append(_v(item, "fx.missing_functional", "functional currency set without functional amounts",
                          "fill functional_debit / functional_credit"))
        elif line_fcy in MINOR_UNITS:
            for amt in (fdebit, fcredit):
                if amt is not None and round_money(amt, line_fcy) != amt:
                    out.append(_v(item, "fx.unrounded", f"functional amount {amt} is not rounded to {line_fcy}",
                                  f"round converted amounts to the {line_fcy} minor unit"))
    return out


def _dimension_checks(item: str, dim: str, code: str, entity: str, ctx: ValidationContext) -> list[Violation]:
    if dim not in ctx.managed_dimensions:
        if ctx.known_dimensions is not None and dim not in ctx.known_dimensions:
            return [_v(item, "dimension.unknown", f"the ledger has no dimension {dim!r}",
                       f"use one of: {', '.join(sorted(ctx.known_dimensions))}; or drop it from the posting rule")]
        return []
    dv = ctx.dimension_values.get((dim, code))
    if dv is None:
        return [_v(item, "dimension.unknown_value", f"{dim} {code!r} does not exist in the ledger",
                   f"create {dim} {code} in the ledger, or map the source value (mappings.{dim})")]
    out: list[Violation] = []
    if not dv.active:
        out.append(_v(item, "dimension.inactive", f"{dim} {code} ({dv.name}) is inactive",
                      f"reactivate {dim} {code} or map the source value to an active one"))
    if dv.legal_entity_ids and entity not in dv.legal_entity_ids:
        out.append(_v(item, "dimension.not_for_entity",
                      f"{dim} {code} is allowed only for {', '.join(dv.legal_entity_ids)}, not {entity}",
                      f"allow {dim} {code} for {entity} in the ledger, or correct the source item's {dim}"))
    return out


def validate_journals(entries: Iterable[JournalEntry], ctx: ValidationContext) -> list[Violation]:
    """All violations of several journals; also refuses two journals with the same id (``journal.duplicate_id``)."""
    out: list[Violation] = []
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            out.append(_v(f"journal {e.id}", "journal.duplicate_id", "two journals share this id",
                          "journal ids are external keys: give each journal its own sequence"))
        seen.add(e.id)
        out.extend(validate_journal(e, ctx))
    return out


def validate_invoice_tax(
    invoice: Invoice, customer: Customer, tax_codes: Mapping[str, TaxCode] | Iterable[TaxCode]
) -> list[Violation]:
    """Tax rules of an invoice before it is created in the ERP: the customer matches and is active, and each
    line's tax code exists, is active, belongs to the customer's jurisdiction, and its tax amount is what the code
    gives (exclusive: ``round(net * rate)``; inclusive: ``round(gross * rate / (1 + rate))``, gross = net + tax)."""
    codes: Mapping[str, TaxCode] = (
        tax_codes if isinstance(tax_codes, Mapping) else {t.code: t for t in tax_codes}
    )
    out: list[Violation] = []
    iitem = f"invoice {invoice.id}"
    if customer.id != invoice.customer_id:
        out.append(_v(iitem, "invoice.customer_mismatch",
                      f"the invoice is for customer {invoice.customer_id}, checked against {customer.id}",
                      "validate against the invoice's own customer"))
    if customer.legal_entity_id != invoice.legal_entity_id:
        out.append(_v(iitem, "invoice.entity_mismatch",
                      f"customer {customer.id} belongs to {customer.legal_entity_id}, the invoice to "
                      f"{invoice.legal_entity_id}", "bill the customer from its own legal entity"))
    if not customer.active:
        out.append(_v(iitem, "invoice.customer_inactive", f"customer {customer.id} is inactive",
                      "reactivate the customer in the ERP before invoicing"))
    for ln in invoice.lines:
        item = f"{iitem} line {ln.line_no}"
        tc = codes.get(ln.tax_code)
        if tc is None:
            out.append(_v(item, "tax.unknown_code", f"tax code {ln.tax_code!r} does not exist",
                          "sync tax codes from the ERP, or correct the customer's tax code"))
            continue
        if not tc.active:
            out.append(_v(item, "tax.inactive", f"tax code {tc.code} is inactive",
                          f"use an active tax code of jurisdiction {customer.tax_jurisdiction}"))
        if tc.jurisdiction != customer.tax_jurisdiction:
            out.append(_v(item, "tax.wrong_jurisdiction",
                          f"tax code {tc.code} is for jurisdiction {tc.jurisdiction}, customer {customer.id} is in "
                          f"{customer.tax_jurisdiction}",
                          f"give customer {customer.id} a tax code of jurisdiction {customer.tax_jurisdiction}"))
        if invoice.currency in MINOR_UNITS:
            if tc.inclusive:
                gross = ln.net_amount + ln.tax_amount
                expected = round_money(gross * tc.rate / (1 + tc.rate), invoice.currency)
            else:
                expected = round_money(ln.net_amount * tc.rate, invoice.currency)
            if expected != ln.tax_amount:
                out.append(_v(item, "tax.amount_mismatch",
                              f"tax {ln.tax_amount} but {tc.code} at {tc.rate} gives {expected}",
                              "recompute the line tax with billing.compute_tax"))
    return out


def raise_for(violations: Sequence[Violation]) -> None:
    """Raise the first violation as a :class:`DomainError` (message counts the others); no-op when empty."""
    if not violations:
        return
    first = violations[0]
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    raise DomainError(first.item, first.rule, first.message + more, first.fix)
