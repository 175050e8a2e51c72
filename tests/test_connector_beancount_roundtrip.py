"""Property: any balanced journal (several currencies, minor units 0/2/3, many lines, odd dimension values and
descriptions) posted to the Beancount ledger loads with zero errors and reads back with exactly its totals."""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.connectors.base import PostingBatch, PostStatus, journal_totals
from ledgerbridge.connectors.beancount_ledger import BeancountLedgerConnector
from ledgerbridge.model import Account, AccountType, JournalEntry, JournalLine, JournalType, LegalEntity
from ledgerbridge.model.money import minor_unit

CHART = [
    Account(code="1200", name="Unbilled receivables", type=AccountType.ASSET),
    Account(code="4000", name="Service revenue (T&M)", type=AccountType.REVENUE),
    Account(code="5100", name="Project expenses", type=AccountType.EXPENSE),
    Account(code="2200", name="Employee expenses payable", type=AccountType.LIABILITY),
]
US01 = LegalEntity(id="US01", name="Sample US", functional_currency="USD", country="US", tax_jurisdiction="US")
CURRENCIES = ("USD", "EUR", "JPY", "BHD")
_seq = itertools.count(1)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def journals(draw: st.DrawFn) -> JournalEntry:
    lines: list[JournalLine] = []
    for cur in draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=3, unique=True)):
        places = minor_unit(cur)
        amounts = draw(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=4))
        debit_acct, credit_acct = draw(st.sampled_from([("1200", "4000"), ("5100", "2200")]))
        for units in amounts:
            lines.append(JournalLine(line_no=len(lines) + 1, account=debit_acct, currency=cur,
                                     debit=Decimal(units).scaleb(-places),
                                     dimensions={"project": draw(text.filter(bool))}, description=draw(text)))
        lines.append(JournalLine(line_no=len(lines) + 1, account=credit_acct, currency=cur,
                                 credit=sum((ln.debit for ln in lines if ln.currency == cur), Decimal(0)),
                                 lineage_count=draw(st.integers(min_value=0, max_value=10**6))))
    return JournalEntry(id=f"US01-2026-03-expense-{next(_seq):06d}", legal_entity_id="US01", period="2026-03",
                        entry_date=dt.date(2026, 3, draw(st.integers(min_value=1, max_value=31))),
                        journal_type=JournalType.EXPENSE, description=draw(text), lines=tuple(lines))


@settings(max_examples=10, deadline=None)
@given(st.lists(journals(), min_size=1, max_size=5))
def test_any_balanced_journal_round_trips_exactly(js: list[JournalEntry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = BeancountLedgerConnector(Path(tmp), CHART, [US01], currencies={"US01": ["EUR", "JPY", "BHD"]})
        results = ledger.post_journals(PostingBatch("RUN-P", "US01", "2026-03", js))
        assert [r.status for r in results] == [PostStatus.POSTED] * len(js), [r.error for r in results]
        assert ledger.check() == []
        held = ledger.read_back([j.id for j in js])
        for j in js:
            assert held[j.id].totals == journal_totals(j)
            assert held[j.id].line_count == len(j.lines)
