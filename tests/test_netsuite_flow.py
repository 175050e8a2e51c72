"""NetSuite as a configured target of the posting flow (config only), against the NetSuite sandbox: a month of the
sample firm's US01 ledger posted through SuiteTalk REST; NetSuite's own GL (SuiteQL over transaction lines) equals
what the engine recorded as posted, to the cent per account and currency; after September is closed (in NetSuite
and in the store) late changes are redated into October and NetSuite never receives a journal for September again;
a period closed only in NetSuite is refused before sending and dead-lettered; a re-run posts nothing twice. Tokens
expire several times during a run (renewed, nothing fails); three subsidiaries are posted through a pool smaller
than the client's concurrency (refusals held, everything posted once, reconciliation explained)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from ledgerbridge.flows import posting, reconcile, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
from ledgerbridge.store import dead_letters, journals
from netsuite_support import sandbox, wire

from flows_support import make_ctx, records, tiny_firm


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("ns-firm"), employees=6, months=2, seed=7)


def _cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=dt.UTC)


def _engine_totals(ctx, entity: str) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id=entity)
    want: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            want[(ln.account, ln.currency)][0] += ln.debit
            want[(ln.account, ln.currency)][1] += ln.credit
    return {k: (d, c) for k, (d, c) in want.items() if d or c}


def _push_master(ctx, target, entity: str) -> None:
    target.push_customers([c for c in ctx.reference.customers.values() if c.legal_entity_id == entity])
    target.push_projects([p for p in ctx.reference.projects.values() if p.legal_entity_id == entity])


@pytest.mark.parametrize("late", ["next_open_period", "reject"])
def test_month_posted_trial_balance_closed_period_and_rerun(tmp_path: Path, firm: Path, late: str) -> None:
    with sandbox(token_lifetime=0.25) as (app, base):  # tokens expire many times during the run
        store = app.state.store
        ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level", late=late)
        wire(ctx, app.state.demo_private_key, base)
        target = ctx.connector("erp_ns")
        _push_master(ctx, target, "US01")

        transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        sep = posting.post_period(ctx, "US01", "2026-09")
        assert sep.status == "posted" and sep.target == "erp_ns" and sep.journals > 0 and sep.dead_lettered == 0, sep
        # NetSuite's GL for September = what the engine recorded as posted, per account and currency, to the cent
        tb = target.trial_balance("US01", "2026-09", "2026-09")
        assert tb == _engine_totals(ctx, "US01")
        for ccy, debit in sep.control_totals["debit"].items():  # = the run's control totals from staging
            assert sum(d for (_, c), (d, _) in tb.items() if c == ccy) == Decimal(debit)
            assert sum(cr for (_, c), (_, cr) in tb.items() if c == ccy) == Decimal(sep.control_totals["credit"][ccy])
        with ctx.engine.connect() as conn:
            refs = {j.id: j for j in journals.list_journals(conn, legal_entity_id="US01")}
        held = target.read_back(sorted(refs))
        assert set(held) == set(refs) and all(held[i].matches(refs[i]) for i in refs)
        assert all(h.target_ref.startswith("US-JE") for h in held.values())  # NetSuite's document numbers

        # the accountant closes September in NetSuite; the engine closes it in the store
        store.set_period("2026-09", closed=True)
        assert target.period_status("US01", "2026-09") == "closed"
        assert close_period(ctx, "US01", "2026-09")["status"] == "closed"
        sep_docs = store.rows("SELECT t.id FROM \"transaction\" t JOIN accountingperiod p ON p.id = t.postingperiod "
                              "WHERE t.recordtype = 'journalentry' AND p.startdate = '2026-09-01'")
        puts_before = app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry")

        transactions.land(ctx, SOURCE, records(ctx, since=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        octo = posting.post_period(ctx, "US01", "2026-10")
        assert octo.status == "posted", octo
        with ctx.engine.connect() as conn:
            oct_journals = journals.list_journals(conn, legal_entity_id="US01", period="2026-10")
            late_letters = [lt for lt in dead_letters.list_letters(conn) if lt.error_code == "period.closed"]
        redated = [j for j in oct_journals if j.redated_from == "2026-09"]
        if late == "next_open_period":
            assert redated, "the sample firm has late September changes: they must be redated into October"
            assert all(j.entry_date >= dt.date(2026, 10, 1) for j in redated) and not late_letters
        else:  # rejected: each late September change waits in the financial dead-letter queue
            assert not redated and late_letters and {lt.queue for lt in late_letters} == {"financial"}
        assert posting.post_period(ctx, "US01", "2026-10").status == "nothing_to_post"
        sep_after = store.rows("SELECT t.id FROM \"transaction\" t JOIN accountingperiod p ON p.id = t.postingperiod "
                               "WHERE t.recordtype = 'journalentry' AND p.startdate = '2026-09-01'")
        assert sep_after == sep_docs  # NetSuite got nothing more for September
        assert app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry",
                                     status=400) == 0
        assert app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry") > puts_before

        # both months: NetSuite's GL = the engine's posted totals; every external id once
        assert target.trial_balance("US01") == _engine_totals(ctx, "US01")
        eids = store.external_ids("journalentry")
        assert eids and max(Counter(eids).values()) == 1
        assert target.client.auth.token_requests >= 2 and app.state.auth.issued == target.client.auth.token_requests
        print(f"\nNetSuite: {len(eids)} journal entries for {sep.journals + octo.journals} journals, "
              f"{target.client.calls} API calls, {target.client.auth.token_requests} token(s)")


def test_period_closed_only_in_netsuite_is_refused_before_sending(tmp_path: Path, firm: Path) -> None:
    with sandbox() as (app, base):
        ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level")
        wire(ctx, app.state.demo_private_key, base)
        target = ctx.connector("erp_ns")
        _push_master(ctx, target, "US01")
        app.state.store.set_period("2026-09", alllocked=True)  # NetSuite: all transactions locked
        assert target.period_status("US01", "2026-09") == "locked"
        transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.journals == 0 and out.dead_lettered > 0, out
        assert app.state.calls.count(method="PUT", path_prefix="/services/rest/record/v1/journalentry") == 0
        with ctx.engine.connect() as conn:
            letters = dead_letters.list_letters(conn, flow="posting")
        assert letters and {lt.queue for lt in letters} == {"financial"}
        assert all("locked for all transactions" in lt.error_text for lt in letters)


def test_three_subsidiaries_and_foreign_currency_lines(tmp_path: Path, firm: Path) -> None:
    """US01, UK01 and DE01 into their own subsidiaries of one account, two months; a UK01 project billed in USD
    gives USD journals in the GBP subsidiary, sent with our FX rate; each subsidiary's GL = the engine's, and the
    reconciliation (PSA export vs NetSuite's account totals) is fully explained."""
    entities = ("US01", "UK01", "DE01")
    with sandbox(concurrency=2, latency=0.01) as (app, base):  # a pool of 2 (others hold the rest), we ask for 4
        ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level")
        wire(ctx, app.state.demo_private_key, base, entities=entities, concurrency=4)
        target = ctx.connector("erp_ns")
        for e in entities:
            _push_master(ctx, target, e)
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        for e in entities:
            for period in ("2026-09", "2026-10"):
                out = posting.post_period(ctx, e, period)
                assert out.status == "posted" and out.dead_lettered == 0, out
            assert target.trial_balance(e) == _engine_totals(ctx, e), e
        # the reconciliation reads the ledger side from NetSuite (account_totals): PSA = NetSuite, all explained
        recon = reconcile.reconcile(ctx, ctx.workdir / "psa-export")
        assert recon.sources["ledger_entities"] == sorted(entities) and recon.ok, recon.findings[:5]
        assert any(c.ledger for c in recon.cells if c.measure != "hours")
        foreign = app.state.store.rows(
            "SELECT t.externalid, t.exchangerate FROM \"transaction\" t JOIN currency c ON c.id = t.currency "
            "WHERE t.externalid LIKE 'UK01-%' AND c.symbol = 'USD'")
        assert foreign, "the sample firm's UK01 has a USD customer: USD journals in the GBP subsidiary"
        assert all(Decimal(r["exchangerate"]) not in (0, 1) for r in foreign)
        subs = {r["externalid"]: r["subsidiary"] for r in app.state.store.rows(
            "SELECT t.externalid, MIN(tl.subsidiary) AS subsidiary FROM \"transaction\" t JOIN transactionline tl "
            "ON tl.\"transaction\" = t.id GROUP BY t.externalid")}
        assert {subs[x] for x in subs if x.startswith("UK01-")} == {2}
        assert {subs[x] for x in subs if x.startswith("DE01-")} == {3}
        st = app.state.limits.stats()
        print(f"\npool 2, client 4: {st['accepted']} accepted, {st['refused']} refused ({st['refused_share']:.1%}), "
              f"client settled at {target.client.pacer.share}")
