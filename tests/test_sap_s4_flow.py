"""SAP S/4HANA Cloud as a configured target of the posting flow (config only, sandbox over HTTP): a month of the
sample firm's US01 ledger is posted, SAP's own trial balance equals what the engine recorded as posted to the cent
per account, the reconciliation reads SAP's account totals and explains every cell; a posting run SIGKILLed while
SAP holds its answer is re-run without a single duplicate document."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path

import pytest

from ledgerbridge.connectors.sap_s4.mapping import document_reference
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.reconcile import reconcile
from ledgerbridge.store import journals
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.sap_s4 import DEMO_ACCOUNT_MAP, create_app
from sap_oracle_flow_support import erp_ctx, posted_totals, posting_child

from flows_support import records


def options(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "legal_entity_id": "US01", "company_code": "1710", "user": "COMM_USER_LB",
            "account_map": dict(DEMO_ACCOUNT_MAP), **extra}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_month_posted_read_back_and_reconciled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("LB_SAP_PASSWORD", "Welcome1!")
    app = create_app(csrf_rotate_after=1)
    with serve_in_thread(app) as url:
        opts = options(url, batch_size=2, mode=mode, confirmation_url=f"{url}/confirmation-inbox")
        ctx = erp_ctx(tmp_path, "sap_us", "sap_s4", opts, {"password": "LB_SAP_PASSWORD"})
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.target == "sap_us" and out.journals > 0 and not out.dead_lettered, out
        assert posting.post_period(ctx, "US01", "2026-09").status == "nothing_to_post"
        with ctx.engine.connect() as conn:
            posted = journals.list_journals(conn, legal_entity_id="US01")
        assert len(app.state.store.documents()) == len(posted) == out.journals
        assert all(j.target_ref and j.target_ref.startswith("1710/") for j in posted)
        soap = "/sap/bc/srt/scs_ext/sap/journalentry" + (
            "bulkcreationrequest_in" if mode == "async" else "createrequestconfirmation_in")
        assert app.state.calls.count(method="POST", path_prefix=soap) == (out.journals + 1) // 2

        target = ctx.connector("sap_us")
        tb = target.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 9, 30))
        want = posted_totals(ctx, "US01")
        for code, pair in want.items():
            assert tb[code] == pair, f"account {code}: SAP {tb[code]} vs engine {pair}"
        assert {c for c, (d, cr) in tb.items() if d or cr} == {c for c, (d, cr) in want.items() if d or cr}

        recon = reconcile(ctx, ctx.workdir / "psa-export")
        cells = [c for c in recon.cells if c.legal_entity_id == "US01" and c.period == "2026-09"
                 and c.measure != "hours"]
        assert cells and all(c.ledger is not None and c.unexplained == 0 for c in cells), [
            c.to_json(items=False) for c in cells]
        assert sum(c.ledger or 0 for c in cells) > 0


def test_sigkilled_posting_run_is_rerun_without_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_SAP_PASSWORD", "Welcome1!")
    app = create_app(hold_after=1)  # SAP creates the first document, then its answer hangs
    store = app.state.store
    with serve_in_thread(app) as url:
        opts = options(url, batch_size=1)
        ctx = erp_ctx(tmp_path, "sap_us", "sap_s4", opts, {"password": "LB_SAP_PASSWORD"})
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        child = posting_child(ctx, "sap_us", "sap_s4", opts, {"password": "LB_SAP_PASSWORD"}, "2026-09")
        deadline = time.monotonic() + 45
        while not store.documents() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert len(store.documents()) == 1  # created in SAP, never confirmed to the engine
        app.state.release.set()

        out = posting.post_period(ctx, "US01", "2026-09")  # picks up the killed run
        assert out.status == "posted" and out.journals >= 2, out
        with ctx.engine.connect() as conn:
            posted = journals.list_journals(conn, legal_entity_id="US01")
        for j in posted:
            assert len(store.documents(document_reference(j.id))) == 1, j.id
        assert len(store.documents()) == len(posted) == out.journals
