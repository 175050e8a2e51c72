"""Oracle Fusion Cloud ERP as a configured target of the posting flow (config only, sandbox over HTTP): a month of
US01 goes in through FBDI, Oracle's posted lines equal what the engine recorded to the cent per account, the
reconciliation reads Oracle's account totals and explains every cell; a journal Journal Import leaves in
GL_INTERFACE while the ESS job says SUCCEEDED is dead-lettered line by line; a posting run SIGKILLed while its import
is running is re-run without importing anything twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.reconcile import reconcile
from ledgerbridge.store import journals
from ledgerbridge.store.schema import dead_letters
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.oracle_fusion import DEMO_ACCOUNT_MAP, create_app
from sap_oracle_flow_support import erp_ctx, posted_totals, posting_child

from flows_support import records

SECRETS = {"password": "LB_ORACLE_PASSWORD"}


def options(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "legal_entity_id": "US01", "ledger_id": "300000001", "data_access_set": "300000100",
            "company_segment": "101", "user": "LB_INTEGRATION", "account_map": dict(DEMO_ACCOUNT_MAP),
            "poll_interval": 0.05, **extra}


def test_month_imported_reconciled_and_interface_errors_dead_lettered(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_ORACLE_PASSWORD", "Welcome1!")
    app = create_app()
    store = app.state.store
    with serve_in_thread(app) as url:
        ctx = erp_ctx(tmp_path, "ora_us", "oracle_fusion", options(url), SECRETS)
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        sep = posting.post_period(ctx, "US01", "2026-09")
        assert sep.status == "posted" and sep.target == "ora_us" and sep.journals > 0 and not sep.dead_lettered, sep
        assert len(store.jobs) == 1 and sorted(store.batch_names()) == sorted(
            j.id for j in _posted(ctx))
        target = ctx.connector("ora_us")
        tb = target.trial_balance("2026-09", "2026-09")
        want = posted_totals(ctx, "US01")
        for code, pair in want.items():
            assert tb[code] == pair, f"account {code}: Oracle {tb[code]} vs engine {pair}"
        assert {c for c, (d, cr) in tb.items() if d or cr} == {c for c, (d, cr) in want.items() if d or cr}

        # October: the revenue account's combination is disabled in Oracle — Journal Import leaves that journal in
        # GL_INTERFACE, the job still SUCCEEDS, the engine dead-letters that journal's lines and posts the rest
        store.combinations.discard("101-" + DEMO_ACCOUNT_MAP["4000"])
        octo = posting.post_period(ctx, "US01", "2026-10")
        assert octo.status == "posted" and octo.dead_lettered > 0 and octo.journals > 0, octo
        assert target.last_report["status"] == "SUCCEEDED"
        letters = _letters(ctx)
        assert letters and all("EF04" in t and "GL_INTERFACE" in t for t in letters)
        assert {r["STATUS"] for r in store.interface} == {"EF04"}

        recon = reconcile(ctx, ctx.workdir / "psa-export")
        cells = [c for c in recon.cells if c.legal_entity_id == "US01" and c.measure != "hours"]
        assert cells and all(c.unexplained == 0 for c in cells), [c.to_json(items=False) for c in cells]
        oct_rev = [c for c in cells if c.period == "2026-10" and c.measure == "revenue"]
        assert oct_rev and any(e.kind == "dead_letter" for c in oct_rev for e in c.explanations)


def _letters(ctx: Any) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(dead_letters.c.error_text).where(
            dead_letters.c.flow == "posting")).scalars())


def _posted(ctx: object) -> list[journals.PostedJournal]:
    with ctx.engine.connect() as conn:  # type: ignore[attr-defined]
        return journals.list_journals(conn, legal_entity_id="US01")


def test_sigkilled_run_during_import_is_rerun_without_duplicates(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_ORACLE_PASSWORD", "Welcome1!")
    app = create_app(polls_to_finish=10**6, job_seconds=1.0)  # the import runs ~1 s whatever the polling
    store = app.state.store
    with serve_in_thread(app) as url:
        opts = options(url, uncertain_wait=10.0)
        ctx = erp_ctx(tmp_path, "ora_us", "oracle_fusion", opts, SECRETS)
        transactions.land(ctx, SOURCE, records(ctx))
        transactions.process_pending(ctx)
        child = posting_child(ctx, "ora_us", "oracle_fusion", opts, SECRETS, "2026-09")
        deadline = time.monotonic() + 45
        while not store.jobs and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert len(store.jobs) == 1 and not store.batches  # submitted, not finished, outcome never seen

        out = posting.post_period(ctx, "US01", "2026-09")
        assert out.status == "posted" and out.journals > 0, (out, _letters(ctx)[:3])
        assert len(store.jobs) == 1  # the rerun finished the killed run's import instead of importing again
        names = store.batch_names()
        assert len(names) == len(set(names)) == out.journals
        assert sorted(names) == sorted(j.id for j in _posted(ctx))
