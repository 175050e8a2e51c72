"""Workday as a configured target of the posting flow (config only), against the Workday sandbox over real HTTP:
a month of the tiny firm's US01 ledger is posted, read back and reconciled (the tenant's trial-balance report =
what the engine recorded as posted, per period, account and currency, to the cent); a closed Workday period is
refused before sending; a posting run SIGKILLed mid-run and re-run leaves every journal in Workday exactly once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.store import journals
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.workday import create_app

from flows_support import make_ctx, records, tiny_firm

PASSWORD = "lb-workday-demo"
TESTS = Path(__file__).parent


def _cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=dt.UTC)


def wd_system(base_url: str, accounts: list[str], entity: str, company: str) -> SystemConfig:
    return SystemConfig(connector="workday", role="erp", secrets={"password": SecretRef("${env:LB_WORKDAY_PASSWORD}")},
                        options={"url": base_url, "tenant": "acme", "username": "ISU_ledgerbridge",
                                 "legal_entity_id": entity, "company_id": company, "version": "v43.0",
                                 "account_map": {a: f"WD-{a}" for a in accounts}, "page_size": 2,
                                 "reports": {"trial_balance": "ISU_ledgerbridge/LB_Trial_Balance",
                                             "period_status": "ISU_ledgerbridge/LB_Period_Status"}})


def wired_ctx(workdir: Path, base_url: str, export: Path | None = None) -> Any:
    """The demo configuration with US01's ledger and invoices routed to a Workday company, and UK01's ledger (GBP,
    with USD lines) to a second one (options + secret by env)."""
    os.environ["LB_WORKDAY_PASSWORD"] = PASSWORD
    ctx = make_ctx(workdir, export_from=export, failure_mode="line_level")
    accounts = sorted({a.code for a in ctx.reference.accounts})
    routing = ctx.config.routing.model_copy(update={"by_entity": {
        "US01": RouteTargets(ledger="erp_wd", invoices="erp_wd"), "UK01": RouteTargets(ledger="erp_wd_uk")}})
    ctx.config = ctx.config.model_copy(update={"systems": {
        **ctx.config.systems, "erp_wd": wd_system(base_url, accounts, "US01", "C-US01"),
        "erp_wd_uk": wd_system(base_url, accounts, "UK01", "C-UK01")}, "routing": routing})
    ctx.reset_connectors()
    return ctx


def seed(app: Any, ctx: Any) -> None:
    app.state.store.accounts = {f"WD-{a.code}" for a in ctx.reference.accounts}
    app.state.store.companies["C-UK01"] = "GBP"


def posted_totals(ctx: Any, entity: str = "US01") -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
    with ctx.engine.connect() as conn:
        held = journals.list_journals(conn, legal_entity_id=entity)
    want: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in held:
        for ln in j.lines:
            want[(j.period, ln.account, ln.currency)][0] += ln.debit
            want[(j.period, ln.account, ln.currency)][1] += ln.credit
    return {k: (d, c) for k, (d, c) in want.items()}


def test_month_posted_read_back_and_reconciled_by_config(tmp_path: Path) -> None:
    app = create_app()
    export = tiny_firm(tmp_path / "firm")
    with serve_in_thread(app) as base:
        ctx = wired_ctx(tmp_path / "w", base, export)
        seed(app, ctx)
        target = ctx.connector("erp_wd")
        assert type(target).__name__ == "WorkdayLedger"
        transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.target == "erp_wd" and out.journals > 2, out  # > one look-up page
        store = app.state.store
        keys = Counter(j["key"] for j in store.journals.values() if j["company"] == "C-US01")
        assert len(keys) == out.journals and set(keys.values()) == {1}
        # read back through the connector equals what the engine recorded
        with ctx.engine.connect() as conn:
            recorded = journals.list_journals(conn, legal_entity_id="US01")
        held = target.read_back([j.id for j in recorded])
        assert set(held) == {j.id for j in recorded}
        assert all(held[j.id].matches(j) for j in recorded)
        # reconciliation: Workday's trial-balance report = the engine's posted totals, per period/account/currency
        assert target.account_totals("US01") == posted_totals(ctx)
        tb = target.trial_balance(["2026-09"])
        assert sum(d for d, _ in tb.values()) == sum(c for _, c in tb.values()) > 0
        # ... and = the run's control totals (what was staged and confirmed), per currency
        for cur, debit in out.control_totals["debit"].items():
            assert sum(d for (_, c), (d, _) in tb.items() if c == cur) == Decimal(debit)
            assert sum(cr for (_, c), (_, cr) in tb.items() if c == cur) == Decimal(out.control_totals["credit"][cur])
        # UK01 (GBP company) holds USD lines: they travel with their GBP ledger amounts and balance in both
        uk = posting.post_period(ctx, "UK01", "2026-09")
        assert uk.status == "posted" and uk.target == "erp_wd_uk" and "USD" in uk.control_totals["debit"], uk
        uk_target = ctx.connector("erp_wd_uk")
        assert uk_target.account_totals("UK01") == posted_totals(ctx, "UK01")
        assert all(ln["currency"] == "GBP" or ln["ledger_debit"] + ln["ledger_credit"] > 0
                   for j in app.state.store.journals.values() if j["company"] == "C-UK01" for ln in j["lines"]
                   if ln["debit"] + ln["credit"] > 0)
        # a rerun posts nothing twice
        assert posting.post_period(ctx, "US01", "2026-09").status in ("nothing_to_post", "already_posted")
        assert len(store.journals) == out.journals + uk.journals
        # Workday closes September: late items are not sent there; the connector knows the period is closed
        store.set_period("C-US01", "2026-09", "Closed")
        assert target.period_status("US01", "2026-09") == "closed"
        assert target.period_status("US01", "2026-10") == "open"
        assert target.period_status("UK01", "2026-09") is None


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_workday_flow import wired_ctx
    from ledgerbridge.flows import posting
    ctx = wired_ctx(Path({wd!r}), {base!r})
    print(posting.post_period(ctx, "US01", "2026-09").status)
""")


def test_sigkill_mid_run_then_rerun_leaves_each_journal_once(tmp_path: Path) -> None:
    app = create_app(hold_after=1)
    export = tiny_firm(tmp_path / "firm")
    with serve_in_thread(app) as base:
        wd = tmp_path / "w"
        ctx = wired_ctx(wd, base, export)
        seed(app, ctx)
        transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        ctx.engine.dispose()
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS), wd=str(wd), base=base)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 40
        while app.state.submits < 2:  # the 2nd submission is applied, its answer held
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached the second submission"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        app.state.release.set()
        store = app.state.store
        assert len(store.journals) >= 2  # applied before the kill (answers held)
        ctx = wired_ctx(wd, base)
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.journals > 2, out
        keys = Counter(j["key"] for j in store.journals.values())
        assert set(keys.values()) == {1}, [k for k, n in keys.items() if n > 1]
        with ctx.engine.connect() as conn:
            recorded = {j.id for j in journals.list_journals(conn, legal_entity_id="US01")}
        assert set(keys) == recorded
        assert ctx.connector("erp_wd").account_totals("US01") == posted_totals(ctx)


def test_billing_flow_creates_invoices_once_and_reads_their_status(tmp_path: Path) -> None:
    app = create_app()
    with serve_in_thread(app) as base:
        ctx = wired_ctx(tmp_path / "w", base, tiny_firm(tmp_path / "firm"))
        seed(app, ctx)
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        for entity in sorted(ctx.reference.entities):
            assert posting.post_period(ctx, entity, "2026-09").status in ("posted", "nothing_to_post")
        billing.run_billing(ctx, "2026-09")
        with ctx.engine.connect() as conn:
            ours = [r for r in invoices_repo.list_invoices(conn) if r.legal_entity_id == "US01"]
        assert ours and all(r.erp_system == "erp_wd" for r in ours)
        held = {i["key"]: i for i in app.state.store.invoices.values()}
        assert set(held) == {r.id for r in ours}
        assert all(r.erp_number == held[r.id]["number"] and r.status == "posted" for r in ours)
        assert all(held[r.id]["net"] == r.net_total and held[r.id]["tax"] == r.tax_total for r in ours)
        # the customer pays one invoice in Workday: the status stage picks it up; nothing is created twice
        first = sorted(held)[0]
        held[first]["payment"] = "Paid"
        again = billing.run_billing(ctx, "2026-09")
        assert again["status_changes"] == {first: "paid"}
        assert len(app.state.store.invoices) == len(ours)
        # the relief postings the engine staged go to Workday with the next posting run; its ledger still agrees
        assert posting.post_period(ctx, "US01", "2026-09").status == "posted"
        assert ctx.connector("erp_wd").account_totals("US01") == posted_totals(ctx)
