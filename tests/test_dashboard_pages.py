"""Dashboard pages over a real store produced by the real flows (tiny firm, one resource's October cost rate missing
so its October time is dead-lettered; posted, September closed, mart built, reconciliation stored), driven
in-process with FastAPI's TestClient: login and scopes, tiles equal the computed metrics, replay/discard through
the forms, drill-down to the dead-letter reason, local assets only."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledgerbridge.domain.costing import RateBook
from ledgerbridge.flows import alerts, recon_runs, transactions
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, cutoff_of
from ledgerbridge.flows.marts import build_marts
from ledgerbridge.flows.periods import close_checklist, close_period
from ledgerbridge.flows.posting import post_period
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.testing import issue_token
from ledgerbridge.store import dead_letters, tokens

from flows_support import make_ctx, tiny_firm

PERIODS = ("2026-09", "2026-10")


def build_state(root: Path, *, drop_rate: bool = True, reconcile: bool = True) -> FlowContext:
    """Run the tiny firm's two months through the flows with one October cost rate missing (dead letters; unless
    ``drop_rate=False``), close September, build the mart and store a reconciliation. Returns the context (rates
    still missing)."""
    export = tiny_firm(root / "src")
    ctx = make_ctx(root / "run", export_from=export)
    if drop_rate:
        drop_october_rate(ctx)
    source = ctx.connector(SOURCE)
    for i, period in enumerate(PERIODS):
        errors: list = []
        transactions.land(ctx, SOURCE, source.read_records(errors, until=cutoff_of(period, 5) if i == 0 else None))
        assert not errors
        transactions.process_pending(ctx)
        for entity in sorted(ctx.reference.entities):
            post_period(ctx, entity, period)
        if i == 0:
            for entity in sorted(ctx.reference.entities):
                close_period(ctx, entity, period, force=True)
    build_marts(ctx, ctx.workdir / "mart.duckdb")
    if reconcile:
        recon_runs.run_reconciliation(ctx)
    return ctx


def drop_october_rate(ctx: FlowContext) -> None:
    victim = next(r for r in ctx.reference.rate_lines if r.kind.value == "cost" and r.resource_id
                  and r.effective_from.isoformat() == "2026-10-01")
    ctx.reference.rates = RateBook.from_lines([r for r in ctx.reference.rate_lines if r.id != victim.id])


def restore_rates(ctx: FlowContext) -> None:
    ctx.reference.rates = RateBook.from_lines(ctx.reference.rate_lines)


def open_letters(ctx: FlowContext) -> list:
    with ctx.engine.connect() as conn:
        return dead_letters.list_letters(conn, status="open", limit=10_000)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> FlowContext:
    return build_state(tmp_path_factory.mktemp("dash"))


def client_for(ctx: FlowContext) -> TestClient:
    return TestClient(create_app(ctx, ServiceSettings(worker=False)), follow_redirects=False)


def login(client: TestClient, token: str) -> None:
    r = client.post("/dashboard/login", data={"token": token, "next": "/dashboard/"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/dashboard/"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def test_login_required_and_bad_token_refused(state: FlowContext) -> None:
    c = client_for(state)
    r = c.get("/dashboard/")
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    r = c.post("/dashboard/login", data={"token": "lbt_nope", "next": "/dashboard/"})
    assert r.status_code == 401 and "Unknown, revoked or mistyped token" in r.text
    assert "lb_session" not in r.cookies


def test_overview_tiles_are_the_computed_metrics(state: FlowContext) -> None:
    c = client_for(state)
    login(c, issue_token(state, "read"))
    html = c.get("/dashboard/").text
    m = alerts.compute_metrics(state)
    v = m.values()
    assert v["dead_letters_open"] and v["dead_letters_open"] == len(open_letters(state))
    tile = re.search(r'data-testid="open-dead-letters">(\d+)<', html)
    assert tile and int(tile.group(1)) == int(v["dead_letters_open"])
    # the stored reconciliation explains the dead-lettered cost: variance shown, nothing unexplained
    assert m.recon is not None and m.recon["ok"] and Decimal(m.recon["variance_abs"]) > 0
    assert html.count("<svg") == 4  # lag, aging, variance, margin
    for heading in ("Posting lag distribution", "Exception aging", "Variance by period", "Margin: PSA vs ERP",
                    "Freshness by system and domain"):
        assert heading in html
    # no asset from elsewhere: every src/href is local
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)
    assert c.get("/dashboard/static/dashboard.css").status_code == 200
    assert c.get("/dashboard/static/..%2Fdashboard.py").status_code == 404


def test_read_scope_sees_but_cannot_replay(state: FlowContext) -> None:
    c = client_for(state)
    login(c, issue_token(state, "read"))
    letter = open_letters(state)[0]
    page = c.get(f"/dashboard/dead-letters/{letter.id}")
    assert page.status_code == 200 and letter.error_code in page.text
    assert 'id="replay"' not in page.text and "needs <b>operate</b>" in page.text
    # a crafted POST is refused by scope (the session has a CSRF token, the scope is too narrow)
    sid = c.cookies.get("lb_session")
    sessions = c.app.state.dashboard_sessions  # type: ignore[attr-defined]
    csrf = sessions.get(sid).csrf
    r = c.post(f"/dashboard/dead-letters/{letter.id}/replay", data={"csrf": csrf})
    assert r.status_code == 403 and "operate" in r.json()["message"]
    assert len(open_letters(state)) == len(open_letters(state))  # nothing changed
    assert dead_letters_status(state, letter.id) == "open"


def dead_letters_status(ctx: FlowContext, letter_id: str) -> str:
    with ctx.engine.connect() as conn:
        got = dead_letters.get(conn, letter_id)
    assert got is not None
    return got.status


def test_operate_replays_and_discards_through_the_forms(state: FlowContext) -> None:
    c = client_for(state)
    login(c, issue_token(state, "operate"))
    before = open_letters(state)
    assert len(before) >= 2
    first, second = before[0], before[1]
    page = c.get(f"/dashboard/dead-letters/{first.id}").text
    # without the CSRF token: refused
    assert c.post(f"/dashboard/dead-letters/{first.id}/replay", data={"csrf": "x"}).status_code == 403
    restore_rates(state)  # the fix: the rate is in the reference now
    r = c.post(f"/dashboard/dead-letters/{first.id}/replay", data={"csrf": csrf_of(page)})
    assert r.status_code == 303
    done = c.get(r.headers["location"]).text
    assert "replay replayed" in done
    assert dead_letters_status(state, first.id) == "replayed"
    assert len(open_letters(state)) == len(before) - 1
    # discard needs a reason
    page = c.get(f"/dashboard/dead-letters/{second.id}").text
    assert c.post(f"/dashboard/dead-letters/{second.id}/discard",
                  data={"csrf": csrf_of(page), "reason": " "}).status_code == 400
    r = c.post(f"/dashboard/dead-letters/{second.id}/discard",
               data={"csrf": csrf_of(page), "reason": "entry deleted in the PSA"})
    assert r.status_code == 303 and dead_letters_status(state, second.id) == "discarded"
    listing = c.get("/dashboard/dead-letters").text
    count = re.search(r'data-testid="open-count">(\d+)<', listing)
    assert count and int(count.group(1)) == len(before) - 2


def test_drill_down_shows_the_dead_letter_reason(state: FlowContext) -> None:
    c = client_for(state)
    login(c, issue_token(state, "read"))
    with state.engine.connect() as conn:
        run = recon_runs.latest_run(conn)
        assert run is not None
        cells = recon_runs.run_cells(conn, run.id)
    target = next(x for x in cells if any(e["kind"] == "dead_letter" for e in x["explanations"]))
    page = c.get(f"/dashboard/reconciliation/{run.id}").text
    link = f"/dashboard/reconciliation/{run.id}/{target['legal_entity_id']}/{target['period']}/" \
           f"{target['measure']}/{target['currency'] or 'h'}"
    assert link in page
    cell = c.get(link).text
    assert "dead_letter" in cell
    items = {e["item_id"] for e in target["explanations"] if e["kind"] == "dead_letter"}
    assert all(i in cell for i in items)
    assert 'data-testid="unexplained">0.00<' in cell


def test_other_pages_render_their_data(state: FlowContext) -> None:
    c = client_for(state)
    login(c, issue_token(state, "read"))
    trace = c.get("/dashboard/trace").text
    projects = sorted(state.reference.projects)
    assert any(p in trace for p in projects)
    periods = c.get("/dashboard/periods").text
    assert "closed" in periods and "2026-10" in periods
    # each open period shows its close checklist as the flow computes it
    for entity in sorted(state.reference.entities):
        problems = close_checklist(state, entity, "2026-10")
        for p in problems:
            assert p.split(":")[0] in periods
        if not problems:
            assert "ready to close" in periods
    assert c.get("/dashboard/stewardship").status_code == 200
    assert c.get("/dashboard/reconciliation").status_code == 200
    assert c.get("/dashboard/dead-letters?queue=bogus").status_code == 400


def test_revoked_token_ends_the_session(state: FlowContext) -> None:
    c = client_for(state)
    clear = issue_token(state, "read", "soon-revoked")
    login(c, clear)
    assert c.get("/dashboard/").status_code == 200
    with state.engine.begin() as conn:
        tok = tokens.verify(conn, clear)
        assert tok is not None
        tokens.revoke(conn, tok.id)
    r = c.get("/dashboard/")
    assert r.status_code == 303 and "revoked" in r.headers["location"]


def test_trace_after_billing_shows_invoices_and_the_unbilled(state: FlowContext) -> None:
    from ledgerbridge.flows.billing import run_billing
    from ledgerbridge.service.dashboard import project_trace
    from ledgerbridge.store import invoices as invoices_repo

    run_billing(state, "2026-09")
    with state.engine.connect() as conn:
        invs = [i for i in invoices_repo.list_invoices(conn) if i.kind != "credit_note"]
    assert invs
    rows = {r["project_id"]: r for r in project_trace(state)}
    for inv in invs:
        r = rows[inv.project_id]
        assert r["invoices"] >= 1
        if r["invoices"] <= 4:  # the page lists up to four numbers per project
            assert (inv.erp_number or inv.id) in r["invoice_numbers"]
    tm = [r for r in rows.values() if r["contract"] == "time and materials" and r["invoices"]]
    assert tm and all(0 < r["billed"] <= r["approved"] and r["unbilled"] == r["approved"] - r["billed"] for r in tm)
    assert all(r["unbilled"] is None for r in rows.values() if r["contract"] in ("fixed fee", "milestone"))
    c = client_for(state)
    login(c, issue_token(state, "read"))
    page = c.get("/dashboard/trace").text
    assert tm[0]["project_id"] in page and tm[0]["invoice_numbers"][0] in page
