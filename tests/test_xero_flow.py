"""Xero as a configured target of the real flows (config only), against the Xero sandbox with every exchange the
engine makes validated against Xero's official OpenAPI: the sample firm's US01 months posted and Xero's own
trial balance equal to what the engine recorded, to the cent per account; journals Xero refuses in a
summarizeErrors=false batch dead-lettered alone and replayed after the fix; September locked in Xero and closed in
ledgerbridge, late changes redated into October; a posting run SIGKILLed mid-run and rerun without duplicates;
master data pushed and invoices billed into Xero with their numbers and statuses read back."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge.connectors.xero.mapping import journal_id_of
from ledgerbridge.flows import billing, dlq, masterdata, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
from ledgerbridge.store import dead_letters, journals
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import xero as sandbox
from xero_support import SpecCheckingTransport, check_builds, seed_chart, wire

from flows_support import make_ctx, records, tiny_firm

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type")
SEP, OCT = "2026-09", "2026-10"
LIMITS = {"calls_per_minute": 60, "window_seconds": 1.0}  # Xero's 60 per minute, scaled to 60 per second


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("xero-firm"), employees=6, months=2, seed=7)


@pytest.fixture
def xero(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    monkeypatch.setenv("LB_XERO_CLIENT_SECRET", sandbox.CLIENT_SECRET)
    app = sandbox.create_app(window=1.0, calls_per_minute=60, **(getattr(request, "param", None) or {}))
    with serve_in_thread(app) as base:
        yield app, base
        app.state.release.set()


@pytest.fixture
def checker(monkeypatch: pytest.MonkeyPatch) -> Iterator[SpecCheckingTransport]:
    chk = SpecCheckingTransport()
    check_builds(monkeypatch, chk)
    yield chk
    assert chk.problems == [] and chk.checked > 0


def _cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=dt.UTC)


def _held_by_journal(app: Any) -> Counter[str]:
    return Counter(journal_id_of(mj["Narration"]) for mj in app.state.store.manual_journals.values())


def test_months_posted_by_config_trial_balance_and_locked_period(tmp_path: Path, firm: Path, xero: tuple[Any, str],
                                                                 checker: SpecCheckingTransport) -> None:
    app, base = xero
    ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level")
    seed_chart(app.state.store, ctx.reference.accounts)
    target = wire(ctx, base, **LIMITS)

    transactions.land(ctx, SOURCE, records(ctx, until=_cutoff(SEP)))
    transactions.process_pending(ctx)
    target.chart()  # cached; then the accountant archives 2200 in Xero: only Xero can refuse those journals
    app.state.store.accounts["2200"]["Status"] = "ARCHIVED"
    sep = posting.post_period(ctx, "US01", SEP)
    assert sep.status == "posted" and sep.target == "erp_us" and sep.journals > 0 and sep.dead_lettered > 0, sep
    assert app.state.calls.count(method="PUT", path_prefix="/api.xro/2.0/ManualJournals") == 1  # one batch
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, flow="posting")
    assert letters and all("archived" in lt.error_text for lt in letters)  # Xero's element message, per line
    assert {lt.queue for lt in letters} == {"financial"}
    app.state.store.accounts["2200"]["Status"] = "ACTIVE"  # fixed in Xero: the letters are replayed
    replayed = dlq.replay(ctx, letters)
    assert replayed.replayed == len(letters), replayed.details
    again = posting.post_period(ctx, "US01", SEP)
    assert again.status in ("posted", "nothing_to_post"), again
    # the accountant locks September in Xero; ledgerbridge closes it too
    app.state.store.set_lock_dates(period=dt.date(2026, 9, 30))
    assert target.period_status("US01", SEP) == "closed" and target.period_status("US01", OCT) == "open"
    assert close_period(ctx, "US01", SEP)["status"] == "closed"
    sep_held = dict(app.state.store.manual_journals)

    transactions.land(ctx, SOURCE, records(ctx, since=_cutoff(SEP)))
    transactions.process_pending(ctx)
    octo = posting.post_period(ctx, "US01", OCT)
    assert octo.status == "posted" and octo.journals > 0, octo
    assert octo.redated_lines > 0  # late September changes were redated into October by the late-item policy
    assert posting.post_period(ctx, "US01", OCT).status == "nothing_to_post"
    new = [mj for k, mj in app.state.store.manual_journals.items() if k not in sep_held]
    assert new and all(mj["DateString"] >= "2026-10-01" for mj in new)  # nothing went into locked September
    assert max(_held_by_journal(app).values()) == 1

    # Xero's trial balance (base currency, from its GL journal feed) = the functional amounts the engine posted
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id="US01")
    want: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            foreign = ln.functional_currency and ln.functional_currency != ln.currency
            want[ln.account][0] += (ln.functional_debit if foreign else ln.debit) or Decimal(0)
            want[ln.account][1] += (ln.functional_credit if foreign else ln.credit) or Decimal(0)
    tb = target.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 10, 31))
    assert tb == {code: (d, c) for code, (d, c) in want.items() if d or c}
    # Xero's Trial Balance report (year to date at 31 October) says the same, per account
    report = target.report_trial_balance(dt.date(2026, 10, 31))
    net = {code: d - c for code, (d, c) in tb.items()}
    assert {code: d - c for code, (d, c) in report.items()} == net
    by_period = target.account_totals("US01")
    assert {p for p, _, cur in by_period} == {SEP, OCT} and {cur for _, _, cur in by_period} == {"USD"}
    print(f"\nxero flow: {len(posted)} journals, {sum(len(j.lines) for j in posted)} lines posted in "
          f"{target.client.calls} API calls; {checker.checked} exchanges validated against the OpenAPI "
          f"({len(checker.operations)} operations)")


CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from flows_support import make_ctx
    import functools
    import ledgerbridge.connectors.xero as pkg
    from xero_support import SpecCheckingTransport, wire
    from ledgerbridge.flows import posting
    pkg.build = functools.partial(pkg.build, transport=SpecCheckingTransport())  # the child is validated too
    args = json.loads(sys.argv[2])
    ctx = make_ctx(Path(args["workdir"]), export_from=Path(args["firm"]), failure_mode="line_level")
    wire(ctx, args["base"], **args["options"])
    print(posting.post_period(ctx, "US01", args["period"]))
""")


@pytest.mark.parametrize("xero", [{"hold_after": 2}], indirect=True)
def test_kill_mid_run_and_rerun_posts_nothing_twice(tmp_path: Path, firm: Path, xero: tuple[Any, str],
                                                    checker: SpecCheckingTransport) -> None:
    app, base = xero
    wd = tmp_path / "w"
    ctx = make_ctx(wd, export_from=firm, failure_mode="line_level")
    opts = {**LIMITS, "batch_size": 1}  # one journal per request: the run is killed between requests
    seed_chart(app.state.store, ctx.reference.accounts)
    wire(ctx, base, **opts)
    transactions.land(ctx, SOURCE, records(ctx, until=_cutoff(SEP)))
    transactions.process_pending(ctx)
    args = {"workdir": str(wd), "firm": str(firm), "base": base, "options": opts, "period": SEP}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), json.dumps(args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        # the 2nd manual journal is saved by Xero and its answer held: kill the run right there
        assert app.state.hold.wait(45), child.communicate(timeout=5)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:  # pragma: no cover
            child.kill()
    assert child.returncode == -signal.SIGKILL
    app.state.release.set()
    held_before = _held_by_journal(app)
    assert sum(held_before.values()) == 2

    target = wire(ctx, base, **opts)
    out = posting.post_period(ctx, "US01", SEP)  # picks up the unfinished run
    assert out.status == "posted", out
    held = _held_by_journal(app)
    assert max(held.values()) == 1 and len(held) == out.journals  # every journal once, none twice
    assert set(held_before) <= set(held)
    with ctx.engine.connect() as conn:
        assert {j.id for j in journals.list_journals(conn, legal_entity_id="US01")} == set(held)
    assert posting.post_period(ctx, "US01", SEP).status == "nothing_to_post"
    rb = target.read_back(list(held))
    assert set(rb) == set(held)


def test_master_data_and_invoice_round_trip_through_billing(tmp_path: Path, firm: Path, xero: tuple[Any, str],
                                                            checker: SpecCheckingTransport) -> None:
    app, base = xero
    ctx = make_ctx(tmp_path / "w", export_from=firm, failure_mode="line_level")
    seed_chart(app.state.store, ctx.reference.accounts)
    target = wire(ctx, base, master_data=True, **LIMITS)
    us = [c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01"]
    projects = [p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01"]
    res = masterdata.sync_master(ctx, SOURCE, [*us, *projects])
    assert res.push_failed == 0 and res.pushed.get("erp_us") == len(us) + len(projects), res
    store = app.state.store
    assert {c["AccountNumber"] for c in store.contacts.values()} == {c.id for c in us}
    (cat,) = [c for c in store.tracking.values() if c["Name"] == "Project"]
    assert {o["Name"] for o in cat["Options"]} >= {p.id for p in projects}
    assert masterdata.push_pending(ctx, "customer").pushed == {}  # unchanged: nothing sent again

    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    assert posting.post_period(ctx, "US01", SEP).status == "posted"
    started = time.monotonic()
    out = billing.run_billing(ctx, SEP, "US01")
    created = out["create"]["created"]
    with ctx.engine.connect() as conn:
        from ledgerbridge.store import dead_letters

        letters = [lt.error_text for lt in dead_letters.list_letters(conn) if lt.flow == "billing"]
    assert created and not out["create"]["failed"], letters[:3]
    invs = {i["Reference"]: i for i in store.invoices.values()}
    assert set(invs) == set(created)
    held = target.invoice_status(created)
    assert all(h.status == "posted" and h.number == invs[k]["InvoiceNumber"] and h.books_ledger
               for k, h in held.items())
    with ctx.engine.connect() as conn:
        from ledgerbridge.store import invoices as invoices_repo

        rows = {r.id: r for r in invoices_repo.list_invoices(conn) if r.id in held}
    assert {k: (r.erp_number, r.status) for k, r in rows.items()} == {k: (h.number, "posted") for k, h in held.items()}
    for k, r in rows.items():  # Xero's totals are ours to the cent
        assert Decimal(str(invs[k]["Total"])) == Decimal(str(r.payload["total"]))
    again = billing.run_billing(ctx, SEP, "US01")
    assert again["create"]["created"] == [] and len(store.invoices) == len(created)
    print(f"\nxero billing: {len(created)} invoices created and read back in {time.monotonic() - started:.2f} s")
