"""Beancount ledger target: rendered ledger loads with zero errors, the validation gate refuses a corrupted render and
leaves the ledger untouched, idempotent re-post, conflicts, read-back totals, pre-check rejections, periods."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from beancount import loader
from beancount.core import data

from ledgerbridge.connectors.base import LedgerTarget, PostingBatch, PostStatus, journal_totals
from ledgerbridge.connectors.beancount_ledger import BeancountLedgerConnector, account_name, camel_name
from ledgerbridge.connectors.beancount_ledger import client as bclient
from ledgerbridge.connectors.beancount_ledger import connector as bconnector
from ledgerbridge.connectors.beancount_ledger.mapping import RenderedJournal
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model import Account, AccountType, JournalEntry, JournalLine, JournalType, LegalEntity

A, L, R, X = AccountType.ASSET, AccountType.LIABILITY, AccountType.REVENUE, AccountType.EXPENSE
CHART = [Account(code=c, name=n, type=t) for c, n, t in [
    ("1100", "Accounts receivable", A), ("1200", "Unbilled receivables", A), ("2100", "Accrued payroll", L),
    ("2200", "Employee expenses payable", L), ("2300", "Sales tax / VAT payable", L), ("2400", "Deferred revenue", L),
    ("4000", "Service revenue (T&M)", R), ("4100", "Fixed-fee revenue", R), ("4200", "Milestone revenue", R),
    ("4300", "Reimbursable expense revenue", R), ("5000", "Project labor cost", X), ("5100", "Project expenses", X),
    ("7900", "FX and rounding differences", X),
]] + [Account(code="9990", name="Retired suspense", type=X, active=False)]
ENTITIES = [
    LegalEntity(id="US01", name="Sample US", functional_currency="USD", country="US", tax_jurisdiction="US"),
    LegalEntity(id="UK01", name="Sample UK", functional_currency="GBP", country="GB", tax_jurisdiction="GB"),
    LegalEntity(id="DE01", name="Sample DE", functional_currency="EUR", country="DE", tax_jurisdiction="DE"),
]


def labor(seq: int, amount: str, *, entity: str = "US01", currency: str = "USD", period: str = "2026-01",
          debit_account: str = "5000", **extra: object) -> JournalEntry:
    dims = {"project": f"P-{seq % 7}", "cost_center": "CC-DEL-US"}
    return JournalEntry(
        id=f"{entity}-{period}-labor_cost-{seq:05d}", legal_entity_id=entity, period=period,
        entry_date=dt.date(int(period[:4]), int(period[5:]), 28), journal_type=JournalType.LABOR_COST,
        description=f"Labor cost {entity} {period} #{seq}",
        lines=(
            JournalLine(line_no=1, account=debit_account, debit=Decimal(amount), currency=currency, dimensions=dims,
                        lineage_count=4),
            JournalLine(line_no=2, account="2100", credit=Decimal(amount), currency=currency, dimensions=dims,
                        lineage_count=4),
        ),
        **extra,  # type: ignore[arg-type]
    )


def uk_invoice_with_eur_and_fx() -> JournalEntry:
    """UK01 invoice in EUR with GBP functional amounts, VAT line, a quote in the text, redated from December."""
    fx = {"fx_rate": Decimal("0.8500"), "fx_rate_date": dt.date(2026, 1, 31), "functional_currency": "GBP"}
    return JournalEntry(
        id="UK01-2026-01-invoice-00001", legal_entity_id="UK01", period="2026-01", entry_date=dt.date(2026, 1, 31),
        journal_type=JournalType.INVOICE, description='Invoice "INV-7" for Acme \\ Co', redated_from="2025-12",
        lines=(
            JournalLine(line_no=1, account="1100", debit=Decimal("1000.00"), currency="EUR",
                        functional_debit=Decimal("850.00"), dimensions={"project": "P-EU"}, **fx),
            JournalLine(line_no=2, account="1200", credit=Decimal("1000.00"), currency="EUR",
                        functional_credit=Decimal("850.00"), dimensions={"project": "P-EU"}, **fx),
            JournalLine(line_no=3, account="1100", debit=Decimal("200.00"), currency="EUR",
                        functional_debit=Decimal("170.00"), **fx),
            JournalLine(line_no=4, account="2300", credit=Decimal("200.00"), currency="EUR",
                        functional_credit=Decimal("170.00"), description="VAT 20%", **fx),
        ),
    )


def test_line_numbers_and_lineage_counts_that_differ_from_the_defaults_are_written(
    tmp_path: Path,
) -> None:
    j = JournalEntry(
        id="US01-2026-01-rounding-00001", legal_entity_id="US01", period="2026-01", entry_date=dt.date(2026, 1, 31),
        journal_type=JournalType.ROUNDING,
        lines=(
            JournalLine(line_no=10, account="7900", debit=Decimal("0.01"), currency="USD", lineage_count=5),
            JournalLine(line_no=20, account="1100", credit=Decimal("0.01"), currency="USD", lineage_count=2),
        ),
    )
    ledger = BeancountLedgerConnector(tmp_path / "books", CHART, ENTITIES)
    assert ledger.post_journals(run([j]))[0].status is PostStatus.POSTED
    entries, errors, _ = loader.load_file(str(ledger.client.root / "main.beancount"))
    assert errors == []
    (txn,) = [e for e in entries if isinstance(e, data.Transaction)]
    assert txn.meta["lineage_count"] == 5 and txn.narration == "rounding"
    assert [p.meta.get("line_no") for p in txn.postings] == [10, 20]
    assert [p.meta.get("lineage_count") for p in txn.postings] == [None, 2]


def run(journals: list[JournalEntry], run_id: str = "RUN-1") -> PostingBatch:
    return PostingBatch(run_id, journals[0].legal_entity_id, journals[0].period, journals)


@pytest.fixture
def ledger(tmp_path: Path) -> BeancountLedgerConnector:
    return BeancountLedgerConnector(tmp_path / "books", CHART, ENTITIES, currencies={"UK01": ["EUR"]})


def entity_file(ledger: BeancountLedgerConnector, entity: str, period: str = "2026-01") -> Path:
    """The period file that holds ``entity``'s transactions of ``period``."""
    return ledger.client.root / "ledger" / entity / f"{period}.beancount"


def leftovers(ledger: BeancountLedgerConnector) -> list[str]:
    return sorted(p.name for p in ledger.client.root.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------------ mapping


def test_account_names_follow_the_scheme() -> None:
    names = {a.code: account_name(a, "US01") for a in CHART}
    assert names["1100"] == "Assets:US01:1100-AccountsReceivable"
    assert names["2300"] == "Liabilities:US01:2300-SalesTaxVATPayable"
    assert names["4000"] == "Income:US01:4000-ServiceRevenueTM"
    assert names["7900"] == "Expenses:US01:7900-FXAndRoundingDifferences"
    assert account_name(CHART[0], "de01") == "Assets:DE01:1100-AccountsReceivable"
    assert camel_name("Frais de déplacement / Übernachtung") == "FraisDeDeplacementUbernachtung"
    assert len(set(names.values())) == len(names)


# ------------------------------------------------------------------------------------------------ posting


def test_rendered_ledger_loads_with_zero_errors_and_carries_metadata(ledger: BeancountLedgerConnector) -> None:
    us = [labor(i, f"{100 + i}.25") for i in range(1, 6)]
    reversal = labor(6, "101.25", reverses=us[0].id)
    res_us = ledger.post_journals(run([*us, reversal]))
    res_uk = ledger.post_journals(run([uk_invoice_with_eur_and_fx()], run_id="RUN-UK"))
    assert {r.status for r in res_us + res_uk} == {PostStatus.POSTED}

    # beancount's own loader on the main file (includes both entity files): zero errors
    entries, errors, options = loader.load_file(str(ledger.client.root / "main.beancount"))
    assert errors == []
    assert ledger.check() == []
    assert sorted(options["operating_currency"]) == ["EUR", "GBP", "USD"]
    txns = {e.meta["journal_id"]: e for e in entries if isinstance(e, data.Transaction)}
    assert set(txns) == {j.id for j in us} | {reversal.id, "UK01-2026-01-invoice-00001"}

    rev = txns[reversal.id]
    assert rev.meta["reverses"] == us[0].id and rev.meta["period"] == "2026-01"
    assert rev.meta["journal_type"] == "labor_cost" and rev.meta["lineage_count"] == 4
    assert rev.links == {reversal.id, us[0].id}
    p1 = rev.postings[0]
    assert p1.account == "Expenses:US01:5000-ProjectLaborCost" and p1.units.number == Decimal("101.25")
    assert rev.postings[1].units.number == Decimal("-101.25")
    assert (p1.meta["dim_project"], p1.meta["dim_cost_center"]) == ("P-6", "CC-DEL-US")
    assert "line_no" not in p1.meta and "lineage_count" not in p1.meta  # defaults: position, transaction's count

    inv = txns["UK01-2026-01-invoice-00001"]
    assert inv.narration == 'Invoice "INV-7" for Acme \\ Co' and inv.meta["redated_from"] == "2025-12"
    assert [p.units.currency for p in inv.postings] == ["EUR"] * 4
    assert inv.postings[0].account == "Assets:UK01:1100-AccountsReceivable"
    assert inv.postings[3].meta["functional_amount"] == "-170.00"
    assert inv.postings[3].meta["functional_currency"] == "GBP" and inv.postings[3].meta["fx_rate"] == "0.8500"
    assert inv.postings[3].meta["fx_rate_date"] == dt.date(2026, 1, 31)
    # every account used is opened with the entity's currencies
    opens = {e.account: e.currencies for e in entries if isinstance(e, data.Open)}
    assert opens["Assets:UK01:1100-AccountsReceivable"] == ["EUR", "GBP"]
    assert opens["Expenses:US01:5000-ProjectLaborCost"] == ["USD"]
    assert leftovers(ledger) == []


def test_read_back_totals_equal_the_journals_totals(ledger: BeancountLedgerConnector) -> None:
    js = [labor(i, f"{i * 37}.{i:02d}") for i in range(1, 30)]
    inv = uk_invoice_with_eur_and_fx()
    ledger.post_journals(run(js))
    ledger.post_journals(run([inv], run_id="RUN-UK"))
    fresh = BeancountLedgerConnector(ledger.client.root, CHART, ENTITIES, currencies={"UK01": ["EUR"]})  # cold cache
    rb = fresh.read_back([j.id for j in js] + [inv.id, "US01-2026-01-labor_cost-99999"])
    assert set(rb) == {j.id for j in js} | {inv.id}
    for j in [*js, inv]:
        assert rb[j.id].totals == journal_totals(j)
        assert rb[j.id].line_count == len(j.lines) and rb[j.id].matches(j)
    assert rb[inv.id].totals["EUR"].debit == Decimal("1200.00")
    assert rb[js[0].id].target_ref.startswith("ledger/US01/2026-01.beancount:")


def test_repost_is_idempotent(ledger: BeancountLedgerConnector) -> None:
    js = [labor(i, "10.00") for i in range(1, 4)]
    first = ledger.post_journals(run(js))
    path = entity_file(ledger, "US01")
    before = path.read_bytes()
    again = ledger.post_journals(run(js, run_id="RUN-1-retry"))
    assert path.read_bytes() == before
    assert [r.target_ref for r in again] == [r.target_ref for r in first]
    assert all(r.status is PostStatus.POSTED for r in again)

    more = ledger.post_journals(run([*js, labor(4, "11.00")], run_id="RUN-2"))
    assert [r.status for r in more] == [PostStatus.POSTED] * 4
    text = path.read_text()
    for j in [*js, labor(4, "11.00")]:
        assert text.count(f'journal_id: "{j.id}"') == 1


def test_held_journal_is_still_recognised_after_its_account_is_deactivated(tmp_path: Path) -> None:
    ledger = BeancountLedgerConnector(tmp_path / "books", CHART, ENTITIES)
    first = ledger.post_journals(run([labor(1, "10.00")]))
    retired = [a.model_copy(update={"active": False}) if a.code == "5000" else a for a in CHART]
    later = BeancountLedgerConnector(tmp_path / "books", retired, ENTITIES)
    again = later.post_journals(run([labor(1, "10.00"), labor(2, "1.00")], run_id="RUN-2"))
    assert again[0].status is PostStatus.POSTED and again[0].target_ref == first[0].target_ref
    assert again[1].status is PostStatus.REJECTED and "is inactive" in str(again[1].error)


def test_same_journal_id_with_different_content_is_a_conflict(ledger: BeancountLedgerConnector) -> None:
    ledger.post_journals(run([labor(1, "10.00")]))
    before = entity_file(ledger, "US01").read_bytes()
    res = ledger.post_journals(run([labor(1, "10.01"), labor(2, "5.00")], run_id="RUN-2"))
    assert res[0].status is PostStatus.REJECTED and isinstance(res[0].error, ConflictError)
    assert res[0].target_ref == ledger.read_back([labor(1, "10.00").id])[labor(1, "10.00").id].target_ref
    assert res[1].status is PostStatus.POSTED
    assert entity_file(ledger, "US01").read_bytes().startswith(before)
    assert ledger.read_back([labor(1, "10.00").id])[labor(1, "10.00").id].matches(labor(1, "10.00"))


def test_bad_journals_are_rejected_alone(ledger: BeancountLedgerConnector) -> None:
    unknown = labor(2, "5.00", debit_account="5999")
    inactive = labor(3, "5.00", debit_account="9990")
    wrong_ccy = labor(4, "5.00", currency="JPY")
    ancient = labor(5, "5.00", period="1999-12")
    res = ledger.post_journals(run([labor(1, "10.00"), unknown, inactive, wrong_ccy]))
    assert [r.status for r in res] == [PostStatus.POSTED] + [PostStatus.REJECTED] * 3
    msgs = [r.error.message for r in res[1:] if r.error is not None]
    assert "account 5999 is not in the chart of accounts of US01" in msgs[0]
    assert "account 9990 (Retired suspense) is inactive" in msgs[1]
    assert "currency JPY is not allowed on Expenses:US01:5000-ProjectLaborCost" in msgs[2]
    assert all(isinstance(r.error, RecordValidationError) for r in res[1:])
    quoted = labor(6, "5.00").model_copy(update={"id": 'US01-2026-01-"x"'})
    (q,) = ledger.post_journals(run([quoted], run_id="RUN-Q"))
    assert q.status is PostStatus.REJECTED and "contains a quote, backslash or line break" in str(q.error)
    (old,) = ledger.post_journals(run([ancient], run_id="RUN-OLD"))
    assert old.status is PostStatus.REJECTED and "before the ledger's account open date 2000-01-01" in str(old.error)
    ids = [j.id for j in (unknown, inactive, wrong_ccy, ancient)]
    assert set(ledger.read_back(ids)) == set()
    assert ledger.check() == []


def test_unknown_entity_is_a_permanent_error(ledger: BeancountLedgerConnector) -> None:
    with pytest.raises(PermanentError, match="no ledger is configured for legal entity 'FR01'"):
        ledger.post_journals(run([labor(1, "1.00", entity="FR01")]))


def test_closed_period_refuses_new_journals(ledger: BeancountLedgerConnector) -> None:
    ledger.post_journals(run([labor(1, "10.00")]))
    assert ledger.period_status("US01", "2026-01") is None
    ledger.set_period_status("US01", "2026-01", "closed", dt.date(2026, 2, 5))
    assert ledger.period_status("US01", "2026-01") == "closed"
    res = ledger.post_journals(run([labor(1, "10.00"), labor(2, "3.00")], run_id="RUN-LATE"))
    assert res[0].status is PostStatus.POSTED  # already held before the close: reported, not re-posted
    assert res[1].status is PostStatus.REJECTED and "period 2026-01 of US01 is closed" in str(res[1].error)
    ledger.set_period_status("US01", "2026-01", "open", dt.date(2026, 2, 6))
    assert ledger.post_journals(run([labor(2, "3.00")], run_id="RUN-REOPEN"))[0].status is PostStatus.POSTED
    with pytest.raises(ValueError, match="not one of"):
        ledger.set_period_status("US01", "2026-02", "shut", dt.date(2026, 3, 1))


# ------------------------------------------------------------------------------------------------ validation gate


def _corrupt(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    real = bconnector.render_journal

    def corrupted(*args: object, **kw: object) -> RenderedJournal:
        r = real(*args, **kw)  # type: ignore[arg-type]
        return dataclasses.replace(r, text=r.text.replace(old, new))

    monkeypatch.setattr(bconnector, "render_journal", corrupted)


@pytest.mark.parametrize(
    ("old", "new", "beancount_says"),
    [
        ("-10.00 USD", "-9.00 USD", "Transaction does not balance"),
        ("Liabilities:US01:2100-AccruedPayroll  -", "Liabilities:US01:2199-NeverOpened  -", "unknown account"),
        ("  Liabilities:US01:2100-AccruedPayroll  -10.00 USD", "  Liabilities:US01:2100-AccruedPayroll  -1O.00 USD",
         "ledger/US01/2026-01.beancount:"),
    ],
)
def test_validation_gate_refuses_a_corrupted_render_and_leaves_the_ledger_untouched(
    ledger: BeancountLedgerConnector, monkeypatch: pytest.MonkeyPatch, old: str, new: str, beancount_says: str
) -> None:
    ledger.post_journals(run([labor(1, "10.00")]))
    path = entity_file(ledger, "US01")
    before = path.read_bytes()
    _corrupt(monkeypatch, old, new)
    with pytest.raises(RecordValidationError) as ei:
        ledger.post_journals(run([labor(2, "10.00")], run_id="RUN-2"))
    assert beancount_says in ei.value.message
    assert ei.value.details["rule"] == "beancount.validation_failed"
    assert path.read_bytes() == before
    assert leftovers(ledger) == []
    assert labor(2, "10.00").id not in ledger.read_back([labor(2, "10.00").id])


def test_gate_also_checks_amounts_beancount_would_accept(ledger: BeancountLedgerConnector,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A render that still balances but holds other amounts than the journal is refused by the exact check."""
    _corrupt(monkeypatch, "10.00 USD", "10.10 USD")
    expected = re.escape("posted debit 10.00 / credit 10.00, target holds debit 10.10")
    with pytest.raises(RecordValidationError, match=expected):
        ledger.post_journals(run([labor(1, "10.00")]))
    assert "journal_id" not in entity_file(ledger, "US01").read_text()  # released empty, nothing appended
    assert ledger.read_back([labor(1, "10.00").id]) == {}
    assert leftovers(ledger) == []


def test_crash_before_release_leaves_the_ledger_untouched(ledger: BeancountLedgerConnector,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.post_journals(run([labor(1, "10.00")]))
    path = entity_file(ledger, "US01")
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash between validation and release")

    monkeypatch.setattr(bclient.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ledger.post_journals(run([labor(2, "10.00")], run_id="RUN-2"))
    assert path.read_bytes() == before and leftovers(ledger) == []


def test_hand_broken_ledger_is_reported_not_appended_to(ledger: BeancountLedgerConnector) -> None:
    ledger.post_journals(run([labor(1, "10.00")]))
    path = entity_file(ledger, "US01")
    path.write_text(path.read_text() + "2026-01-30 * \"hand edit\"\n  Assets:US01:Nope  1.00 USD\n"
                    "  Assets:US01:Nope2  -1.00 USD\n")
    broken = path.read_bytes()
    fresh = BeancountLedgerConnector(ledger.client.root, CHART, ENTITIES)
    with pytest.raises(RecordValidationError, match="unknown account 'Assets:US01:Nope'"):
        fresh.post_journals(run([labor(2, "1.00")], run_id="RUN-2"))
    assert path.read_bytes() == broken
    with pytest.raises(RecordValidationError, match="does not load cleanly"):
        fresh.read_back([labor(1, "10.00").id])
    assert any("unknown account 'Assets:US01:Nope'" in e for e in ledger.check())


def test_connector_satisfies_the_protocol(ledger: BeancountLedgerConnector) -> None:
    assert isinstance(ledger, LedgerTarget)
    caps = ledger.capabilities()
    assert caps.supports_read_back and caps.can_write("journal_entry")
    assert caps.idempotency.value == "lookup_before_create"


def test_set_period_status_twice_writes_one_directive(tmp_path) -> None:
    """A close step re-run after a crash declares the same status again: the ledger must not change."""
    import datetime as dt

    from ledgerbridge.connectors.beancount_ledger import BeancountLedgerConnector
    from ledgerbridge.model.entities import Account, AccountType, LegalEntity

    led = BeancountLedgerConnector(
        tmp_path / "ledger", [Account(code="1100", name="Accounts receivable", type=AccountType.ASSET)],
        [LegalEntity(id="US01", name="US", functional_currency="USD", country="US", tax_jurisdiction="US")])
    led.set_period_status("US01", "2026-09", "closed", dt.date(2026, 9, 30))
    files = {p: p.read_bytes() for p in (tmp_path / "ledger").rglob("*.beancount")}
    led.set_period_status("US01", "2026-09", "closed", dt.date(2026, 9, 30))
    assert {p: p.read_bytes() for p in (tmp_path / "ledger").rglob("*.beancount")} == files
    assert led.period_status("US01", "2026-09") == "closed" and led.check() == []
    led.set_period_status("US01", "2026-09", "open", dt.date(2026, 10, 2))  # a real change is still written
    assert led.period_status("US01", "2026-09") == "open"
