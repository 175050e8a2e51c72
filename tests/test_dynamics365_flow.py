"""Dynamics 365 Finance as the configured posting target of the real flows (config only, against the sandbox): a
month of the sample firm's three legal entities posted into three F&O companies; F&O's own general ledger (trial
balance in accounting currency, totals per transaction currency) equals what the engine recorded as posted, to the
cent per account; every F&O read carried ``cross-company=true``; a re-run posts nothing twice; after September is
closed (store and F&O), late changes are redated into October by the late-item policy and F&O never receives a
September journal again; a period closed in F&O alone is refused before sending and dead-lettered."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dynamics365_support import COMPANIES, SYSTEM, cutoff, d365_ctx, serve
from ledgerbridge.connectors.base import InvoiceTarget, LedgerTarget
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
from ledgerbridge.flows.reconcile import reconcile
from ledgerbridge.store import dead_letters, journals

from flows_support import records, tiny_firm

SEP, OCT = "2026-09", "2026-10"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("d365-firm"))


def engine_totals(ctx, entity: str) -> tuple[dict[str, list[Decimal]], dict[tuple[str, str, str], list[Decimal]]]:
    """(functional debit/credit per account, debit/credit per (period, account, currency)) of posted journals."""
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id=entity)
    functional: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    by_currency: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            deb = ln.functional_debit if ln.functional_currency else ln.debit
            cre = ln.functional_credit if ln.functional_currency else ln.credit
            functional[ln.account][0] += deb or Decimal(0)
            functional[ln.account][1] += cre or Decimal(0)
            by_currency[(j.period, ln.account, ln.currency)][0] += ln.debit
            by_currency[(j.period, ln.account, ln.currency)][1] += ln.credit
    return functional, by_currency


def test_a_month_posted_reads_back_to_the_cent(tmp_path: Path, export: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as (app, base):
        ctx = d365_ctx(tmp_path / "w", export, base, monkeypatch)
        transactions.land(ctx, SOURCE, records(ctx, until=cutoff(SEP)))
        transactions.process_pending(ctx)
        outs = {e: posting.post_period(ctx, e, SEP) for e in COMPANIES}
        assert all(o.status == "posted" and o.target == SYSTEM and o.dead_lettered == 0 for o in outs.values()), outs
        assert sum(o.journals for o in outs.values()) == len(app.state.store.journals())
        target = ctx.connector(SYSTEM)
        assert isinstance(target, LedgerTarget) and isinstance(target, InvoiceTarget)
        foreign = 0
        for entity, co in COMPANIES.items():
            functional, by_currency = engine_totals(ctx, entity)
            assert functional, entity
            tb = target.trial_balance(entity, dt.date(2026, 9, 1), dt.date(2026, 9, 30))
            assert {k: list(v) for k, v in tb.items()} == {k: v for k, v in functional.items() if any(v)}, entity
            held = target.account_totals(entity)
            assert {k: list(v) for k, v in held.items()} == {k: v for k, v in by_currency.items() if any(v)}
            foreign += sum(1 for (_, _, cur) in by_currency if cur != ctx.reference.functional_currencies[entity])
            assert all(h["dataAreaId"] == co for h in app.state.store.journals(co))
        assert foreign, "the month should carry foreign-currency lines (exchange rate per line)"
        # the reconciliation reads F&O's ledger side for every entity: each September cell is explained
        recon = reconcile(ctx, ctx.workdir / "psa-export")
        cells = [c for c in recon.cells if c.period == SEP and c.measure != "hours"]
        assert {c.legal_entity_id for c in cells} == set(COMPANIES)
        assert all(c.ledger is not None and c.unexplained == 0 for c in cells), [
            c.to_json(items=False) for c in cells if c.unexplained]
        # every F&O read said cross-company=true: no read silently missed a legal entity
        assert app.state.store.reads_without_cross_company == []
        # a re-run posts nothing twice
        before = len(app.state.store.journals())
        assert {posting.post_period(ctx, e, SEP).status for e in COMPANIES} == {"nothing_to_post"}
        assert len(app.state.store.journals()) == before


def test_closed_period_follows_the_late_item_policy(tmp_path: Path, export: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as (app, base):
        store = app.state.store
        ctx = d365_ctx(tmp_path / "w", export, base, monkeypatch)
        target = ctx.connector(SYSTEM)
        transactions.land(ctx, SOURCE, records(ctx, until=cutoff(SEP)))
        transactions.process_pending(ctx)
        assert posting.post_period(ctx, "US01", SEP).status == "posted"
        assert close_period(ctx, "US01", SEP, force=True)["status"] == "closed"
        assert target.period_status("US01", SEP) == "closed"  # F&O: OnHold
        assert store.tables["LedgerFiscalPeriods"].rows[("usmf", SEP)]["PeriodStatus"] == "OnHold"
        sep_journals = {h["JournalBatchNumber"] for h in store.journals("usmf")}

        transactions.land(ctx, SOURCE, records(ctx, since=cutoff(SEP)))
        transactions.process_pending(ctx)
        octo = posting.post_period(ctx, "US01", OCT)
        assert octo.status == "posted" and octo.redated_lines > 0, octo  # late September items, redated
        new = [h for h in store.journals("usmf") if h["JournalBatchNumber"] not in sep_journals]
        lines = [r for r in store.rows("LedgerJournalLines") if r["dataAreaId"] == "usmf"
                 and r["JournalBatchNumber"] in {h["JournalBatchNumber"] for h in new}]
        assert lines and {r["TransDate"][:7] for r in lines} == {OCT}  # redated, never into the closed September
        assert posting.post_period(ctx, "US01", OCT).status == "nothing_to_post"

        # a period closed in F&O only (the store still thinks it open): refused before sending, dead-lettered
        store.set_period("gbsi", SEP, "OnHold")
        uk = posting.post_period(ctx, "UK01", SEP)
        assert uk.journals == 0 and uk.dead_lettered > 0, uk
        assert store.journals("gbsi") == []
        with ctx.engine.connect() as conn:
            letters = dead_letters.list_letters(conn, flow="posting")
        assert letters and all("OnHold" in lt.error_text and "late-item policy" in lt.error_text for lt in letters)
