"""Properties of summarization (hypothesis): balance per entity and currency (and functional currency), totals
preserved to the cent per entity/account/currency against the raw signed postings, order independence (ids and
lines), every source item traceable, and reversals netting to zero."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.posting import (
    DEFAULT_ACCOUNT_ROLES,
    DEFAULT_POSTING_RULES,
    default_rules,
    reversal_of,
    summarize,
)
from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import JournalEntry
from ledgerbridge.model.money import quantum

RULES = default_rules()
ENTITIES = {"US01": "USD", "UK01": "GBP", "DE01": "EUR"}
CURRENCIES = ["USD", "GBP", "EUR", "JPY"]
AMOUNT_NAMES = {txn: [ln["amount"] for ln in lines] for txn, lines in DEFAULT_POSTING_RULES.items()}


@st.composite
def postings(draw: st.DrawFn) -> Posting:
    txn = draw(st.sampled_from(sorted(AMOUNT_NAMES)))
    ccy = draw(st.sampled_from(CURRENCIES))
    q = quantum(ccy)
    amounts = tuple((name, draw(st.integers(-500_000, 500_000)) * q) for name in AMOUNT_NAMES[txn])
    dims = []
    if draw(st.booleans()):
        dims.append(("cost_center", draw(st.sampled_from(["CC-A", "CC-B"]))))
    if draw(st.booleans()):
        dims.append(("project", draw(st.sampled_from(["P-1", "P-2", "P-3"]))))
    ref = SourceRef(system="psa", entity="item", id=f"I-{draw(st.integers(0, 30))}", version=draw(st.integers(1, 3)))
    return Posting(
        txn, draw(st.sampled_from(sorted(ENTITIES))), dt.date(2026, 1, 1) + dt.timedelta(days=draw(st.integers(0, 95))),
        ccy, amounts, tuple(sorted(dims)), ref, draw(st.sampled_from([1, -1])),
    )


posting_lists = st.lists(postings(), min_size=0, max_size=40)


def converter(amount: Decimal, f: str, t: str, on: dt.date) -> tuple[Decimal, Decimal, dt.date]:
    # A deterministic, awkward rate per pair (4-6 decimals) so functional rounding differences really occur.
    rate = Decimal(sum(map(ord, f + t)) % 97 + 3) / Decimal("37.13")
    rate = rate.quantize(Decimal("0.000001"))
    return amount * rate, rate, on


def expected_totals(ps: list[Posting]) -> dict[tuple[str, str, str], Decimal]:
    """Signed (debit - credit) per entity/account/currency straight from the raw postings and the config dicts."""
    roles = DEFAULT_ACCOUNT_ROLES["default"]
    out: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for p in ps:
        for line in DEFAULT_POSTING_RULES[p.txn_type]:
            amt = dict(p.amounts)[line["amount"]] * p.sign
            out[(p.legal_entity_id, roles[line["debit"]], p.currency)] += amt
            out[(p.legal_entity_id, roles[line["credit"]], p.currency)] -= amt
    return {k: v for k, v in out.items() if v != 0}


def journal_totals(js: list[JournalEntry]) -> dict[tuple[str, str, str], Decimal]:
    out: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for j in js:
        for ln in j.lines:
            out[(j.legal_entity_id, ln.account, ln.currency)] += ln.debit - ln.credit
    return {k: v for k, v in out.items() if v != 0}


@settings(max_examples=100, deadline=None)
@given(posting_lists)
def test_every_journal_balances_per_currency_and_functional(ps: list[Posting]) -> None:
    s = summarize(ps, RULES, functional_currencies=ENTITIES, converter=converter)
    assert s.ok
    for j in s.journals:
        assert len(j.lines) >= 2
        by_ccy: dict[str, Decimal] = defaultdict(Decimal)
        by_fcy: dict[str, Decimal] = defaultdict(Decimal)
        for ln in j.lines:
            assert (ln.debit > 0) != (ln.credit > 0)  # one side, never zero
            by_ccy[ln.currency] += ln.debit - ln.credit
            if ln.currency != ENTITIES[j.legal_entity_id]:
                assert ln.functional_currency == ENTITIES[j.legal_entity_id]
                assert ln.fx_rate is not None and ln.fx_rate_date is not None
                by_fcy[ln.functional_currency] += (ln.functional_debit or 0) - (ln.functional_credit or 0)
            else:
                assert ln.functional_currency is None
        assert all(v == 0 for v in by_ccy.values()), by_ccy
        assert all(v == 0 for v in by_fcy.values()), by_fcy


@settings(max_examples=100, deadline=None)
@given(posting_lists)
def test_totals_preserved_per_entity_account_currency(ps: list[Posting]) -> None:
    s = summarize(ps, RULES)
    assert s.ok
    assert journal_totals(s.journals) == expected_totals(ps)


@settings(max_examples=60, deadline=None)
@given(posting_lists, st.randoms(use_true_random=False), st.integers(2, 12))
def test_any_order_gives_identical_journals(ps: list[Posting], rnd: object, max_lines: int) -> None:
    shuffled = list(ps)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = summarize(ps, RULES, functional_currencies=ENTITIES, converter=converter, lineage_limit=3, max_lines=max_lines)
    b = summarize(shuffled, RULES, functional_currencies=ENTITIES, converter=converter, lineage_limit=3,
                  max_lines=max_lines)
    assert [j.id for j in a.journals] == [j.id for j in b.journals]
    assert a.journals == b.journals
    assert a.lineage == b.lineage
    assert len({j.id for j in a.journals}) == len(a.journals)


def expected_lines(ps: list[Posting]) -> dict[tuple[str, ...], tuple[Decimal, frozenset[str]]]:
    """Per summarized line key (entity, period, txn, account, dims, currency): net and the refs that moved it."""
    roles = DEFAULT_ACCOUNT_ROLES["default"]
    net: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    refs: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for p in ps:
        have = dict(p.dimensions)
        for line in DEFAULT_POSTING_RULES[p.txn_type]:
            amt = dict(p.amounts)[line["amount"]] * p.sign
            if amt == 0:
                continue
            dims = repr(sorted((d, have[d]) for d in line["dimensions"] if d in have))
            for role, signed in ((line["debit"], amt), (line["credit"], -amt)):
                key = (p.legal_entity_id, f"{p.date:%Y-%m}", p.txn_type, roles[role], dims, p.currency)
                net[key] += signed
                refs[key].add(p.source.key)
    return {k: (v, frozenset(refs[k])) for k, v in net.items() if v != 0}


@settings(max_examples=100, deadline=None)
@given(posting_lists)
def test_every_line_traces_exactly_to_its_sources(ps: list[Posting]) -> None:
    s = summarize(ps, RULES, lineage_limit=2)
    got: dict[tuple[str, ...], tuple[Decimal, frozenset[str]]] = {}
    for j in s.journals:
        for ln in j.lines:
            refs = s.lineage.refs_for(j.id, ln.line_no)
            assert ln.lineage_count == len(refs) == len(set(refs))
            assert ln.lineage == (refs if len(refs) <= 2 else ())
            key = (j.legal_entity_id, j.period, j.journal_type.value, ln.account,
                   repr(sorted(ln.dimensions.items())), ln.currency)
            assert key not in got
            got[key] = (ln.debit - ln.credit, frozenset(r.key for r in refs))
    assert got == expected_lines(ps)


@settings(max_examples=60, deadline=None)
@given(posting_lists)
def test_reversal_nets_to_zero(ps: list[Posting]) -> None:
    s = summarize(ps, RULES, functional_currencies=ENTITIES, converter=converter)
    for j in s.journals:
        r = reversal_of(j, f"{j.id}-R", j.period, j.entry_date)
        net: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        fnet: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for ln in (*j.lines, *r.lines):
            key = (ln.account, repr(sorted(ln.dimensions.items())), ln.currency)
            net[key] += ln.debit - ln.credit
            fnet[key[:2]] += (ln.functional_debit or 0) - (ln.functional_credit or 0)
        assert all(v == 0 for v in net.values())
        assert all(v == 0 for v in fnet.values())
        assert r.reverses == j.id
