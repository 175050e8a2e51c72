"""Posting rules, costed-item adapters, summarization into balanced journals, and reversals.

The path (see :mod:`ledgerbridge.domain.types`)::

    CostedTime / CostedExpense --postings_for_*--> Posting --summarize--> JournalEntry (+ LineageIndex)

Posting rules are configuration (``account_roles`` + ``posting_rules``, shape in ``docs/domain-posting-periods-
validation.md``): each rule line is a debit/credit *pair of roles* on one named amount component of a
:class:`Posting`. The summarizer adds the same signed Decimal to the debit account and subtracts it from the credit
account of the same group, so every journal balances per currency by construction.

Summarization groups by legal entity, period (and the redated-from period), txn_type (= journal type), account,
the dimension values that the rule line lists, and currency; the net of each group becomes one line on the
proper side (a negative net debit is a credit). Lineage: every line carries ``lineage_count`` (distinct source
versions) and, when there are at most ``lineage_limit`` of them, the refs themselves; its description carries
the first 16 hex digits of the lineage digest (sha256 over the sorted ``SourceRef.key`` values, one per line,
joined by ``\\n``); the returned :class:`LineageIndex` maps every journal line to its digest and full refs.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.fx import FxTable, RateDatePolicy
from ledgerbridge.domain.periods import Placement, month_bounds, period_of
from ledgerbridge.domain.types import CostedExpense, CostedTime, Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import JournalEntry, JournalLine, JournalType
from ledgerbridge.model.money import MINOR_UNITS, round_money

__all__ = [
    "DEFAULT_ACCOUNT_ROLES",
    "DEFAULT_POSTING_RULES",
    "DEFAULT_RULES_CONFIG",
    "FxConverter",
    "LineageIndex",
    "LineageRecord",
    "PostingRules",
    "RejectedJournal",
    "RejectedPosting",
    "RuleLine",
    "Summary",
    "converter_from_table",
    "default_rules",
    "default_rules_config",
    "lineage_digest",
    "postings_for_expense",
    "postings_for_time",
    "reversal_of",
    "summarize",
]

# --------------------------------------------------------------------------- default configuration (chart.md)

#: Default ``account_roles`` of chart.md. The config package ships the same in YAML; keep the two identical.
DEFAULT_ACCOUNT_ROLES: Final[dict[str, Any]] = {
    "default": {
        "receivables": "1100",
        "unbilled_receivables": "1200",
        "accrued_payroll": "2100",
        "employee_payable": "2200",
        "tax_payable": "2300",
        "deferred_revenue": "2400",
        "service_revenue": "4000",
        "fixed_fee_revenue": "4100",
        "milestone_revenue": "4200",
        "expense_recovery_revenue": "4300",
        "project_cost": "5000",
        "project_expense": "5100",
        "rounding": "7900",
        "invoice_clearing": "4900",
    },
    "by_entity": {},
}

#: Default ``posting_rules`` of chart.md: txn_type -> list of debit/credit role pairs on one amount component.
DEFAULT_POSTING_RULES: Final[dict[str, Any]] = {
    "labor_cost": [
        {
            "debit": "project_cost", "credit": "accrued_payroll", "amount": "cost",
            "dimensions": ["project", "cost_center"],
        },
    ],
    "revenue_accrual": [
        {
            "debit": "unbilled_receivables", "credit": "service_revenue", "amount": "billable_value",
            "dimensions": ["project", "cost_center"],
        },
    ],
    "expense": [
        {
            "debit": "project_expense", "credit": "employee_payable", "amount": "amount",
            "dimensions": ["project", "cost_center"],
        },
    ],
    "invoice": [
        {"debit": "receivables", "credit": "unbilled_receivables", "amount": "net", "dimensions": ["project"]},
        {"debit": "receivables", "credit": "tax_payable", "amount": "tax", "dimensions": []},
    ],
    "fixed_fee_revenue": [
        {
            "debit": "unbilled_receivables", "credit": "fixed_fee_revenue", "amount": "revenue",
            "dimensions": ["project"],
        },
    ],
    "milestone_revenue": [
        {
            "debit": "unbilled_receivables", "credit": "milestone_revenue", "amount": "revenue",
            "dimensions": ["project"],
        },
    ],
    "expense_recovery": [
        {
            "debit": "unbilled_receivables", "credit": "expense_recovery_revenue", "amount": "billable_value",
            "dimensions": ["project", "cost_center"],
        },
    ],
    "invoice_relief": [
        {"debit": "invoice_clearing", "credit": "unbilled_receivables", "amount": "net", "dimensions": ["project"]},
    ],
}

#: Both halves together, in the YAML file's shape.
DEFAULT_RULES_CONFIG: Final[dict[str, Any]] = {
    "account_roles": DEFAULT_ACCOUNT_ROLES,
    "posting_rules": DEFAULT_POSTING_RULES,
}


def default_rules_config() -> dict[str, Any]:
    """A deep copy of :data:`DEFAULT_RULES_CONFIG` that the caller may change."""
    return copy.deepcopy(DEFAULT_RULES_CONFIG)


# --------------------------------------------------------------------------- rules

_CFG_FIX_ROLE = "define the role under account_roles.default (role -> account code) or correct its spelling"
_RULE_KEYS: Final = frozenset({"debit", "credit", "amount", "dimensions"})
_TXN_TYPES: Final = frozenset(t.value for t in JournalType)


@dataclass(frozen=True, slots=True)
class RuleLine:
    """One debit/credit pair of account roles on one amount component, carrying the listed dimensions."""

    debit: str
    credit: str
    amount: str
    dimensions: tuple[str, ...] = ()


def _cfg_error(path: str, rule: str, message: str, fix: str) -> DomainError:
    return DomainError(f"posting config {path}", rule, message, fix)


def _need_mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _cfg_error(path, "posting_rules.bad_value", f"expected a mapping, got {type(value).__name__}",
                         "write it as key: value pairs")
    return value


def _need_text(value: object, path: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _cfg_error(path, "posting_rules.bad_value", f"expected {what} as a non-empty string, got {value!r}",
                         'quote account codes and role names, e.g. "1100"')
    return value.strip()


def _check_keys(m: Mapping[str, Any], path: str, allowed: frozenset[str], required: Iterable[str]) -> None:
    for k in required:
        if k not in m:
            raise _cfg_error(f"{path}.{k}", "posting_rules.missing_key", f"required key {k!r} is missing",
                             f"add {k}: to {path}")
    for k in m:
        if k not in allowed:
            raise _cfg_error(f"{path}.{k}", "posting_rules.unknown_key", f"unknown key {k!r}",
                             f"allowed keys: {', '.join(sorted(allowed))}")


@dataclass(frozen=True, slots=True)
class PostingRules:
    """Parsed, validated posting rules. Build with :meth:`from_config` or :func:`default_rules`."""

    roles: Mapping[str, str]  # role -> account code (default)
    by_entity: Mapping[str, Mapping[str, str]]  # legal entity -> role -> account code (overrides)
    rules: Mapping[str, tuple[RuleLine, ...]]  # txn_type -> rule lines

    @classmethod
    def from_config(cls, account_roles: Mapping[str, Any], posting_rules: Mapping[str, Any]) -> PostingRules:
        """Parse and validate the two config sections; raises :class:`DomainError` naming the key path."""
        ar = _need_mapping(account_roles, "account_roles")
        _check_keys(ar, "account_roles", frozenset({"default", "by_entity"}), ["default"])
        default = _need_mapping(ar["default"], "account_roles.default")
        roles: dict[str, str] = {}
        for role, code in default.items():
            roles[_need_text(role, "account_roles.default", "a role name")] = _need_text(
                code, f"account_roles.default.{role}", "an account code"
            )
        by_entity: dict[str, dict[str, str]] = {}
        raw_be = ar.get("by_entity") or {}
        for entity, overrides in _need_mapping(raw_be, "account_roles.by_entity").items():
            path = f"account_roles.by_entity.{entity}"
            ov: dict[str, str] = {}
            for role, code in _need_mapping(overrides or {}, path).items():
                if role not in roles:
                    raise _cfg_error(f"{path}.{role}", "posting_rules.unknown_role",
                                     f"override of role {role!r}, which account_roles.default does not define",
                                     _CFG_FIX_ROLE)
                ov[role] = _need_text(code, f"{path}.{role}", "an account code")
            by_entity[_need_text(entity, "account_roles.by_entity", "a legal entity id")] = ov

        rules: dict[str, tuple[RuleLine, ...]] = {}
        for txn, lines in _need_mapping(posting_rules, "posting_rules").items():
            path = f"posting_rules.{txn}"
            if txn not in _TXN_TYPES:
                raise _cfg_error(path, "posting_rules.unknown_txn_type", f"{txn!r} is not a journal type",
                                 f"use one of: {', '.join(sorted(_TXN_TYPES))}")
            if not isinstance(lines, Sequence) or isinstance(lines, str) or not lines:
                raise _cfg_error(path, "posting_rules.empty_rule", "a posting rule needs a list of rule lines",
                                 "give at least one {debit, credit, amount, dimensions} line")
            parsed: list[RuleLine] = []
            for i, raw in enumerate(lines):
                lp = f"{path}[{i}]"
                m = _need_mapping(raw, lp)
                _check_keys(m, lp, _RULE_KEYS, ["debit", "credit", "amount"])
                debit = _need_text(m["debit"], f"{lp}.debit", "a role")
                credit = _need_text(m["credit"], f"{lp}.credit", "a role")
                for side, role in (("debit", debit), ("credit", credit)):
                    if role not in roles:
                        raise _cfg_error(f"{lp}.{side}", "posting_rules.unknown_role",
                                         f"role {role!r} is not defined in account_roles.default", _CFG_FIX_ROLE)
                if debit == credit:
                    raise _cfg_error(lp, "posting_rules.same_role", f"debit and credit are both {debit!r}",
                                     "a rule line moves value between two different roles")
                raw_dims = m.get("dimensions") or []
                if isinstance(raw_dims, str) or not isinstance(raw_dims, Sequence):
                    raise _cfg_error(f"{lp}.dimensions", "posting_rules.bad_value", "expected a list of dimensions",
                                     "write e.g. dimensions: [project, cost_center]")
                dims = tuple(_need_text(d, f"{lp}.dimensions", "a dimension name") for d in raw_dims)
                if len(set(dims)) != len(dims):
                    raise _cfg_error(f"{lp}.dimensions", "posting_rules.bad_value", "a dimension is listed twice",
                                     "list each dimension once")
                parsed.append(RuleLine(debit, credit, _need_text(m["amount"], f"{lp}.amount", "an amount name"), dims))
            rules[txn] = tuple(parsed)
        return cls(roles=roles, by_entity=by_entity, rules=rules)

    def account_for(self, role: str, legal_entity_id: str) -> str:
        """The account code of ``role`` for the entity: its by_entity override, else the default."""
        ov = self.by_entity.get(legal_entity_id)
        if ov is not None:
            code = ov.get(role)
            if code is not None:
                return code
        code = self.roles.get(role)
        if code is None:
            raise DomainError(f"account role {role}", "posting_rules.unknown_role", "the role has no account",
                              _CFG_FIX_ROLE)
        return code

    def lines_for(self, txn_type: str) -> tuple[RuleLine, ...]:
        lines = self.rules.get(txn_type)
        if lines is None:
            raise DomainError(f"txn_type {txn_type}", "posting.no_rule", "no posting rule for this transaction type",
                              f"add posting_rules.{txn_type} to the posting-rule configuration")
        return lines


def default_rules() -> PostingRules:
    """The chart.md default rules, parsed."""
    return PostingRules.from_config(DEFAULT_ACCOUNT_ROLES, DEFAULT_POSTING_RULES)


# --------------------------------------------------------------------------- adapters from costed items


def _check_sign(sign: int, ref: SourceRef) -> None:
    if sign not in (1, -1):
        raise DomainError(str(ref), "posting.bad_sign", f"sign must be 1 (post) or -1 (reverse), got {sign!r}",
                          "pass LedgerDelta.sign")


def postings_for_time(c: CostedTime, sign: int = 1, *, accrue_revenue: bool = True) -> list[Posting]:
    """labor_cost (``cost`` in the cost currency) and, when billable and non-zero, revenue_accrual
    (``billable_value`` in the bill currency). Dimensions: project, cost_center.

    ``accrue_revenue=False`` for time on fixed-fee and milestone projects: their revenue is recognised by percent
    complete or on milestone completion (:mod:`ledgerbridge.domain.revenue`), never accrued at bill rates, which
    would count it twice."""
    _check_sign(sign, c.ref)
    dims = (("cost_center", c.cost_center), ("project", c.project_id))
    out = [
        Posting("labor_cost", c.legal_entity_id, c.work_date, c.cost_currency, (("cost", c.cost_amount),), dims,
                c.ref, sign),
    ]
    if accrue_revenue and c.billable and c.billable_value != 0:
        out.append(Posting("revenue_accrual", c.legal_entity_id, c.work_date, c.bill_currency,
                           (("billable_value", c.billable_value),), dims, c.ref, sign))
    return out


def postings_for_expense(c: CostedExpense, sign: int = 1) -> list[Posting]:
    """expense (``amount`` in the expense currency). Dimensions: project, cost_center."""
    _check_sign(sign, c.ref)
    dims = (("cost_center", c.cost_center), ("project", c.project_id))
    return [Posting("expense", c.legal_entity_id, c.expense_date, c.currency, (("amount", c.amount),), dims,
                    c.ref, sign)]


# --------------------------------------------------------------------------- lineage


def lineage_digest(refs: Iterable[SourceRef]) -> str:
    """sha256 hex over the sorted, distinct ``SourceRef.key`` values joined by newlines."""
    keys = sorted({r.key for r in refs})
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LineageRecord:
    digest: str  # lineage_digest(refs)
    refs: tuple[SourceRef, ...]  # every distinct source version, sorted by key


@dataclass(frozen=True)
class LineageIndex:
    """Full lineage of every summarized line, keyed ``"<journal id>/<line no>"``."""

    records: Mapping[str, LineageRecord] = field(default_factory=dict)

    @staticmethod
    def key(journal_id: str, line_no: int) -> str:
        return f"{journal_id}/{line_no}"

    def refs_for(self, journal_id: str, line_no: int) -> tuple[SourceRef, ...]:
        return self.records[self.key(journal_id, line_no)].refs

    def digest_for(self, journal_id: str, line_no: int) -> str:
        return self.records[self.key(journal_id, line_no)].digest

    def __len__(self) -> int:
        return len(self.records)


# --------------------------------------------------------------------------- summarization


class FxConverter(Protocol):
    """``(amount, from_currency, to_currency, date) -> (converted amount, rate, rate date)``."""

    def __call__(
        self, amount: Decimal, from_currency: str, to_currency: str, on: dt.date, /
    ) -> tuple[Decimal, Decimal, dt.date]: ...


def converter_from_table(table: FxTable, policy: RateDatePolicy = RateDatePolicy.TRANSACTION_DATE) -> FxConverter:
    """An :class:`FxConverter` over an :class:`~ledgerbridge.domain.fx.FxTable`. ``transaction_date`` converts at
    the journal entry date; ``period_end`` at the last day of the entry date's month."""

    def convert(amount: Decimal, from_currency: str, to_currency: str, on: dt.date, /
                ) -> tuple[Decimal, Decimal, dt.date]:
        day = month_bounds(period_of(on))[1] if policy is RateDatePolicy.PERIOD_END else on
        c = table.convert(amount, from_currency, to_currency, day)
        return c.amount, c.rate, c.rate_date

    return convert


#: ``(legal_entity_id, date) -> Placement | "YYYY-MM"``; e.g. ``PeriodBook.placer(policy)``.
PeriodResolver = Callable[[str, dt.date], "Placement | str"]


@dataclass(frozen=True, slots=True)
class RejectedPosting:
    """A posting that could not be summarized (its period, rule or amounts were refused); nothing is lost."""

    posting: Posting
    error: DomainError


@dataclass(frozen=True, slots=True)
class RejectedJournal:
    """A journal that could not be built (e.g. no FX rate); ``lineage`` lists every source version behind it."""

    journal_id: str
    error: DomainError
    lineage: tuple[SourceRef, ...]


@dataclass(frozen=True)
class Summary:
    journals: list[JournalEntry]
    lineage: LineageIndex
    rejected_postings: list[RejectedPosting]
    rejected_journals: list[RejectedJournal]

    @property
    def ok(self) -> bool:
        return not self.rejected_postings and not self.rejected_journals


def _default_resolver(legal_entity_id: str, d: dt.date) -> Placement:
    return Placement(period_of(d), d, None)


def summarize(
    postings: Iterable[Posting],
    rules: PostingRules,
    period_of: PeriodResolver | None = None,
    *,
    batch: str | None = None,
    functional_currencies: Mapping[str, str] | None = None,
    converter: FxConverter | None = None,
    lineage_limit: int = 50,
    max_lines: int = 999,
) -> Summary:
    """Summarize postings into balanced journals (see the module doc for grouping and lineage).

    ``period_of(entity, date)`` places each posting (default: the calendar month, no period checks); pass
    ``PeriodBook.placer(policy)`` so late items are redated or rejected. A posting whose placement, rule or amounts
    are refused goes to ``Summary.rejected_postings``; the rest still post.

    Journal ids: ``{entity}-{period}-{txn_type}[-{batch}]-{seq:04d}``; seq counts, per entity/period/txn_type,
    the journals in a stable order (not redated first, then by redated_from; split chunks in line order), so the
    same postings in any order give identical journals. A journal is split into chunks of at most ``max_lines``
    lines along (currency, dimensions) blocks, each of which balances on its own.

    With ``functional_currencies`` (entity -> currency) and ``converter``, lines in another currency get
    functional amounts at the journal entry date; the rounding difference goes to the largest converted line.
    """
    # The cyclic garbage collector would rescan the millions of live postings on every few thousand allocations
    # (~25% of the run); nothing here creates reference cycles, so it is paused for the call and restored after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _summarize(postings, rules, period_of, batch=batch, functional_currencies=functional_currencies,
                          converter=converter, lineage_limit=lineage_limit, max_lines=max_lines)
    finally:
        if gc_was_enabled:
            gc.enable()


def _summarize(
    postings: Iterable[Posting],
    rules: PostingRules,
    period_of: PeriodResolver | None,
    *,
    batch: str | None,
    functional_currencies: Mapping[str, str] | None,
    converter: FxConverter | None,
    lineage_limit: int,
    max_lines: int,
) -> Summary:
    resolve: PeriodResolver = period_of if period_of is not None else _default_resolver
    rejected: list[RejectedPosting] = []
    # (entity, date) -> (journal group index, entry date) or the DomainError that refused the date.
    placed_at: dict[tuple[str, dt.date], tuple[int, dt.date] | DomainError] = {}
    group_keys: list[tuple[str, str, str | None]] = []  # group index -> (entity, period, redated_from)
    group_index: dict[tuple[str, str, str | None], int] = {}
    buckets: dict[tuple[int, str, tuple[tuple[str, str], ...], str], _Bucket] = {}
    # One pass; per posting: two dict lookups on small tuples, the amount check, one Decimal add, one append.
    for p in postings:
        pk = (p.legal_entity_id, p.date)
        at = placed_at.get(pk)
        if at is None:
            at = placed_at[pk] = _place(p.legal_entity_id, p.date, resolve, group_keys, group_index)
        if isinstance(at, DomainError):
            rejected.append(RejectedPosting(p, at))
            continue
        gidx, entry_date = at
        key = (gidx, p.txn_type, p.dimensions, p.currency)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = _new_bucket(p, rules, entry_date)
        if b.error is not None:
            rejected.append(RejectedPosting(p, b.error))
            continue
        if entry_date > b.last:
            b.last = entry_date
        amounts = p.amounts
        if b.single and len(amounts) == 1 and amounts[0][0] == b.names[0]:
            v = amounts[0][1]
            if v.__class__ is not Decimal or not v.is_finite() or v.quantize(b.q) != v:
                rejected.append(RejectedPosting(p, _unrounded(p, b.names[0], v)))
                continue
            sign = p.sign
            if v:
                if sign == 1:
                    b.totals[0] += v
                elif sign == -1:
                    b.totals[0] -= v
                else:
                    rejected.append(RejectedPosting(p, _bad_sign(p)))
                    continue
                b.refs[0].append(p.source)
            continue
        _add_slow(p, b, rejected)

    # journal key (entity, period, redated_from, txn) -> (currency, dims, account) -> [net, [ref lists]]
    groups: dict[tuple[str, str, str | None, str], dict[_LineKey, list[Any]]] = {}
    dates: dict[tuple[str, str, str | None, str], dt.date] = {}
    projections: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], tuple[tuple[str, str], ...]] = {}
    for (gidx, txn, raw_dims, ccy), b in buckets.items():
        if b.error is not None:
            continue
        entity, period, redated_from = group_keys[gidx]
        jkey = (entity, period, redated_from, txn)
        group = groups.get(jkey)
        if group is None:
            group = groups[jkey] = {}
            dates[jkey] = b.last
        elif b.last > dates[jkey]:
            dates[jkey] = b.last
        for rl, total, rl_refs in zip(b.lines, b.totals, b.refs, strict=True):
            if not rl_refs:
                continue
            pkey = (raw_dims, rl.dimensions)
            dims = projections.get(pkey)
            if dims is None:
                have = dict(raw_dims)
                dims = projections[pkey] = tuple(sorted((n, have[n]) for n in rl.dimensions if have.get(n)))
            for account, signed in ((rules.account_for(rl.debit, entity), total),
                                    (rules.account_for(rl.credit, entity), -total)):
                slot = group.get((ccy, dims, account))
                if slot is None:
                    group[(ccy, dims, account)] = [signed, [rl_refs]]
                else:
                    slot[0] += signed
                    slot[1].append(rl_refs)

    journals, lineage, rejected_journals = _build(
        groups, dates, batch=batch, functional_currencies=functional_currencies or {},
        converter=converter, lineage_limit=lineage_limit, max_lines=max_lines,
    )
    return Summary(journals, LineageIndex(lineage), rejected, rejected_journals)


def _place(
    entity: str, day: dt.date, resolve: PeriodResolver, group_keys: list[tuple[str, str, str | None]],
    group_index: dict[tuple[str, str, str | None], int],
) -> tuple[int, dt.date] | DomainError:
    try:
        got = resolve(entity, day)
    except DomainError as e:
        return e
    placed = Placement(got, day, None) if isinstance(got, str) else got
    gkey = (entity, placed.period, placed.redated_from)
    gidx = group_index.get(gkey)
    if gidx is None:
        gidx = group_index[gkey] = len(group_keys)
        group_keys.append(gkey)
    return gidx, placed.entry_date


class _Bucket:
    """Running signed totals and source refs per rule line of one (journal group, txn_type, dimensions, currency)."""

    __slots__ = ("error", "last", "lines", "names", "q", "refs", "single", "totals")

    def __init__(self, lines: tuple[RuleLine, ...], q: Decimal, last: dt.date, error: DomainError | None) -> None:
        self.lines = lines
        self.names = tuple(rl.amount for rl in lines)
        self.single = len(lines) == 1
        self.q = q
        self.last = last
        self.error = error
        self.totals = [Decimal(0)] * len(lines)
        self.refs: list[list[SourceRef]] = [[] for _ in lines]


def _new_bucket(p: Posting, rules: PostingRules, entry_date: dt.date) -> _Bucket:
    lines = rules.rules.get(p.txn_type)
    if lines is None:
        return _Bucket((), Decimal(1), entry_date, DomainError(
            f"txn_type {p.txn_type}", "posting.no_rule", f"no posting rule for txn_type {p.txn_type!r}",
            f"add posting_rules.{p.txn_type} to the posting-rule configuration"))
    if p.currency not in MINOR_UNITS:
        return _Bucket((), Decimal(1), entry_date, DomainError(
            f"currency {p.currency}", "posting.unknown_currency", f"unknown currency {p.currency!r}",
            "use an ISO 4217 code such as USD, EUR, GBP"))
    return _Bucket(lines, _QUANTA[p.currency], entry_date, None)


_ZERO: Final = Decimal(0)

#: Minor-unit quantum per known currency, computed once.
_QUANTA: Final[dict[str, Decimal]] = {c: Decimal(1).scaleb(-u) for c, u in MINOR_UNITS.items()}


def _unrounded(p: Posting, name: str, v: object) -> DomainError:
    return DomainError(f"posting {p.source}", "posting.unrounded_amount",
                       f"amount {name}={v!r} is not a Decimal rounded to the {p.currency} minor unit",
                       "round amounts with round_money(amount, currency) before posting")


def _bad_sign(p: Posting) -> DomainError:
    return DomainError(f"posting {p.source}", "posting.bad_sign", f"sign must be 1 or -1, got {p.sign!r}",
                       "pass LedgerDelta.sign")


def _add_slow(p: Posting, b: _Bucket, rejected: list[RejectedPosting]) -> None:
    """The general case of the summarize loop: several rule lines, or amounts in another order."""
    vals: list[Decimal] = []
    for name in b.names:
        v: Decimal | None = None
        for k, val in p.amounts:
            if k == name:
                v = val
                break
        if v is None:
            rejected.append(RejectedPosting(p, DomainError(
                f"posting {p.source}", "posting.amount_missing", f"{p.txn_type} posting has no amount named {name!r}",
                f"give the posting an amount {name!r} or fix posting_rules.{p.txn_type}")))
            return
        if v.__class__ is not Decimal or not v.is_finite() or v.quantize(b.q) != v:
            rejected.append(RejectedPosting(p, _unrounded(p, name, v)))
            return
        vals.append(v)
    if p.sign != 1 and p.sign != -1:
        rejected.append(RejectedPosting(p, _bad_sign(p)))
        return
    for i, v in enumerate(vals):
        if v:
            b.totals[i] += v if p.sign == 1 else -v
            b.refs[i].append(p.source)


# A journal line before it becomes a JournalLine: key (currency, dims, account) -> [net, [ref lists]].
_LineKey = tuple[str, tuple[tuple[str, str], ...], str]


def _lineage(ref_lists: list[list[SourceRef]], cache: dict[tuple[int, ...], tuple[str, tuple[SourceRef, ...]]]
             ) -> tuple[str, tuple[SourceRef, ...]]:
    """(digest, sorted distinct refs) of the union of ``ref_lists``; the debit and credit lines of one rule line
    share the same lists, so the result is cached by their identities."""
    ck = tuple(id(r) for r in ref_lists)
    hit = cache.get(ck)
    if hit is not None:
        return hit
    by_key: dict[str, SourceRef] = {}
    for refs in ref_lists:
        for r in refs:
            by_key[r.key] = r
    keys = sorted(by_key)
    out = cache[ck] = (hashlib.sha256("\n".join(keys).encode()).hexdigest(), tuple(by_key[k] for k in keys))
    return out


def _build(
    groups: Mapping[tuple[str, str, str | None, str], dict[_LineKey, list[Any]]],
    dates: Mapping[tuple[str, str, str | None, str], dt.date],
    *,
    batch: str | None,
    functional_currencies: Mapping[str, str],
    converter: FxConverter | None,
    lineage_limit: int,
    max_lines: int,
) -> tuple[list[JournalEntry], dict[str, LineageRecord], list[RejectedJournal]]:
    journals: list[JournalEntry] = []
    index: dict[str, LineageRecord] = {}
    rejected: list[RejectedJournal] = []
    seqs: dict[tuple[str, str, str], int] = {}
    lineage_cache: dict[tuple[int, ...], tuple[str, tuple[SourceRef, ...]]] = {}
    for jkey in sorted(groups, key=lambda k: (k[0], k[1], k[3], k[2] or "")):
        entity, period, redated_from, txn = jkey
        live = sorted(
            ((k, v) for k, v in groups[jkey].items() if v[0] != 0),
            key=lambda kv: (kv[0][0], kv[0][1], kv[1][0] < 0, kv[0][2]),
        )
        for chunk in _chunks(live, max_lines):
            if len(chunk) < 2:
                continue  # cannot happen for balanced blocks; kept as a guard
            seq = seqs.get((entity, period, txn), 0) + 1
            seqs[(entity, period, txn)] = seq
            jid = f"{entity}-{period}-{txn}-{batch}-{seq:04d}" if batch else f"{entity}-{period}-{txn}-{seq:04d}"
            entry_date = dates[jkey]
            records: list[LineageRecord] = []
            jlines: list[JournalLine] = []
            for n, ((ccy, dims, account), (net, ref_lists)) in enumerate(chunk, start=1):
                net = net.quantize(_QUANTA[ccy])  # exact: every source amount was checked to be rounded
                digest, line_refs = _lineage(ref_lists, lineage_cache)
                records.append(LineageRecord(digest, line_refs))
                jlines.append(JournalLine(
                    line_no=n, account=account, currency=ccy, dimensions=dict(dims),
                    debit=net if net > 0 else _ZERO, credit=-net if net < 0 else _ZERO,
                    description=f"{txn}: {len(line_refs)} source item(s), lineage {digest[:16]}",
                    lineage=line_refs if len(line_refs) <= lineage_limit else (), lineage_count=len(line_refs),
                ))
            try:
                fcy = functional_currencies.get(entity)
                if fcy is not None:
                    jlines = _functional(jid, jlines, fcy, converter, entry_date)
                redated = f" (redated from {redated_from})" if redated_from else ""
                entry = JournalEntry(
                    id=jid, legal_entity_id=entity, period=period, entry_date=entry_date, journal_type=JournalType(txn),
                    description=f"{txn} {entity} {period}{redated}",
                    lines=tuple(jlines),
                    redated_from=redated_from,
                )
            except DomainError as e:
                everything = _lineage([r for _, (_, rl_) in chunk for r in rl_], {})[1]
                rejected.append(RejectedJournal(jid, e, everything))
                continue
            journals.append(entry)
            for n, rec in enumerate(records, start=1):
                index[LineageIndex.key(jid, n)] = rec
    return journals, index, rejected


def _chunks(live: list[tuple[_LineKey, list[Any]]], max_lines: int) -> list[list[tuple[_LineKey, list[Any]]]]:
    """Split sorted lines into chunks of at most ``max_lines`` without cutting a (currency, dimensions) block."""
    if len(live) <= max_lines:
        return [live] if live else []
    blocks: list[list[tuple[_LineKey, list[Any]]]] = []
    for item in live:
        if blocks and blocks[-1][0][0][:2] == item[0][:2]:
            blocks[-1].append(item)
        else:
            blocks.append([item])
    out: list[list[tuple[_LineKey, list[Any]]]] = []
    for b in blocks:
        if out and len(out[-1]) + len(b) <= max_lines:
            out[-1].extend(b)
        else:
            out.append(list(b))
    return out


def _with(line: JournalLine, **changes: Any) -> JournalLine:
    """A validated copy of ``line`` with ``changes`` (model_copy would skip validation)."""
    return JournalLine.model_validate({**dict(line), **changes})


def _functional(
    jid: str, lines: list[JournalLine], fcy: str, converter: FxConverter | None, on: dt.date
) -> list[JournalLine]:
    """Fill functional amounts on lines not in ``fcy``; put the rounding difference on the largest line."""
    foreign = [i for i, ln in enumerate(lines) if ln.currency != fcy]
    if not foreign:
        return lines
    if converter is None:
        raise DomainError(f"journal {jid}", "posting.no_fx_converter",
                          f"lines in a currency other than the functional {fcy} and no FX converter given",
                          "pass converter= (e.g. FxTable.convert) to summarize")
    out = list(lines)
    diff = Decimal(0)
    for i in foreign:
        ln = lines[i]
        amount = ln.debit or ln.credit
        converted, rate, rate_date = converter(amount, ln.currency, fcy, on)
        f = round_money(converted, fcy)
        diff += f if ln.debit else -f
        out[i] = _with(ln, fx_rate=rate, fx_rate_date=rate_date, functional_currency=fcy,
                       functional_debit=f if ln.debit else Decimal(0), functional_credit=Decimal(0) if ln.debit else f)
    if diff:
        big = max(foreign, key=lambda i: (out[i].functional_debit or out[i].functional_credit or Decimal(0), -i))
        ln = out[big]
        side = "functional_debit" if ln.debit else "functional_credit"
        new_amt = (getattr(ln, side) or Decimal(0)) + (-diff if ln.debit else diff)
        if new_amt < 0:
            raise DomainError(f"journal {jid}", "posting.fx_rounding",
                              f"functional rounding difference {diff} exceeds the largest line",
                              "check the FX rates; post the difference to the rounding account by hand")
        out[big] = _with(ln, **{side: new_amt})
    return out


# --------------------------------------------------------------------------- reversal


def reversal_of(
    entry: JournalEntry, new_id: str, period: str, date: dt.date, *, description: str | None = None
) -> JournalEntry:
    """A new entry that reverses ``entry`` line for line (debits and credits swapped, functional amounts too),
    in ``period`` on ``date``, with ``reverses`` set. The journal type and lineage are kept, so reports by type
    and traces by source item net to zero."""
    if new_id == entry.id:
        raise DomainError(f"journal {entry.id}", "posting.reversal_same_id", "a reversal needs its own id",
                          "derive the reversal id from the original, e.g. f'{id}-R1'")
    lines = tuple(
        _with(ln, debit=ln.credit, credit=ln.debit,
              functional_debit=ln.functional_credit, functional_credit=ln.functional_debit)
        for ln in entry.lines
    )
    return JournalEntry(
        id=new_id, legal_entity_id=entry.legal_entity_id, period=period, entry_date=date,
        journal_type=entry.journal_type, description=description or f"Reversal of {entry.id}", lines=lines,
        reverses=entry.id,
    )
