"""Fault injection (proof suite): a fault proxy fails 30% of the calls between the engine and its target ERP —
5xx, 429, connection resets, stalls past the client timeout, 2xx answers reporting a fault, and the same *after*
the target applied the call (the answer is lost). Through it, the posting and billing flows still post every
journal and invoice exactly once, and nothing lands in a dead-letter queue (every injected fault is transient).

Bounded in ``make test`` (one month of a tiny firm, seed fixed); ``make fault`` runs it with several seeds
(``LB_FAULT_SEEDS``) and a bigger firm (``LB_FAULT_EMPLOYEES``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.flows import billing, masterdata, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters, journals
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.testing.faultproxy import create_app as fault_proxy
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import workday as workday_sandbox
from ledgerbridge.testing.sandboxes import xero as xero_sandbox

from flows_support import make_ctx, records, tiny_firm

SEEDS = [int(s) for s in os.environ.get("LB_FAULT_SEEDS", "7").split(",")]
EMPLOYEES = int(os.environ.get("LB_FAULT_EMPLOYEES", "4"))
SHARE = float(os.environ.get("LB_FAULT_SHARE", "0.3"))
PERIOD = "2026-09"
CUTOFF = dt.datetime(2026, 10, 5, 23, 59, 59, tzinfo=dt.UTC)
ATTEMPTS = 12  # whole-run attempts: a run that gives up on a transient failure is simply run again


def _workday(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_WORKDAY_PASSWORD"] = "lb-workday-demo"
    accounts = sorted({a.code for a in ctx.reference.accounts})
    app.state.store.accounts = {f"WD-{a}" for a in accounts}
    system = SystemConfig(
        connector="workday", role="erp", secrets={"password": SecretRef("${env:LB_WORKDAY_PASSWORD}")},
        options={"url": url, "tenant": "acme", "username": "ISU_ledgerbridge", "legal_entity_id": "US01",
                 "company_id": "C-US01", "version": "v43.0", "account_map": {a: f"WD-{a}" for a in accounts},
                 "timeout": 0.5, "reports": {"trial_balance": "ISU_ledgerbridge/LB_Trial_Balance"}})

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:
        return (Counter(j["key"] for j in store.journals.values()),
                Counter(i.get("key") or i.get("Customer_Invoice_ID") for i in store.invoices.values()))

    return system, held, None


XERO_TYPES = {"asset": "CURRENT", "liability": "CURRLIAB", "equity": "EQUITY", "revenue": "REVENUE",
              "expense": "EXPENSE"}
_LB_TAG = re.compile(r"\[lb:([^\]]+)\]")


def _xero(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_XERO_CLIENT_SECRET"] = xero_sandbox.CLIENT_SECRET
    store = app.state.store
    for a in ctx.reference.accounts:
        if a.code not in store.accounts:
            store.add_account(a.code, a.name, XERO_TYPES.get(str(getattr(a.type, "value", a.type)), "EXPENSE"))
    system = SystemConfig(
        connector="xero", role="erp", secrets={"client_secret": SecretRef("${env:LB_XERO_CLIENT_SECRET}")},
        options={"client_id": xero_sandbox.CLIENT_ID, "legal_entity_id": "US01", "tenant_id": None,
                 "api_url": f"{url}/api.xro/2.0", "token_url": f"{url}/connect/token",
                 "connections_url": f"{url}/connections", "tax_map": {"US-EXEMPT": "NONE"},
                 "tracking_map": {"project": "Project", "cost_center": "Cost centre"}, "timeout": 0.5})

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:
        tags = [m.group(1) for j in store.manual_journals.values()
                for m in [_LB_TAG.search(str(j.get("Narration") or ""))] if m]
        return Counter(tags), Counter(i["Reference"] for i in store.invoices.values())

    def prepare(ctx: Any) -> None:  # customers and projects reach Xero through the master-data flow, faults on
        data = ctx.config.model_dump(mode="json", exclude_none=True).get("master_data") or {}
        ents = dict(data.get("entities") or {})
        for etype in ("customer", "project"):
            ents[etype] = {**ents.get(etype, {}), "propagate_to": ["erp"]}
        ctx.config = ctx.config.model_copy(update={
            "master_data": type(ctx.config.master_data).model_validate({**data, "entities": ents})})
        ctx.reset_connectors()
        wanted = [*(c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01"),
                  *(p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01")]
        masterdata.sync_master(ctx, SOURCE, wanted)
        for etype in ("customer", "project"):  # a transient push failure is retried by the next push
            _until_done(lambda e=etype: masterdata.push_pending(ctx, e),
                        lambda r: r.push_failed == 0 and r.push_retry_later == 0)

    return system, held, prepare


TARGETS = {"workday": (workday_sandbox.create_app, _workday),
           "xero": (lambda: xero_sandbox.create_app(window=1.0, calls_per_minute=600), _xero)}


def _until_done(step: Any, done: Any) -> list[Any]:
    """Run ``step`` until ``done(result)``; every attempt's result (or error) is kept for the report."""
    seen: list[Any] = []
    for _ in range(ATTEMPTS):
        try:
            res = step()
        except Exception as exc:  # a transient failure that outlived the retries: run the whole step again
            assert getattr(exc, "kind", None) is not None and exc.kind.value in ("transient", "rate_limited"), exc
            seen.append(exc)
            continue
        seen.append(res)
        if done(res):
            return seen
    raise AssertionError(f"not done after {ATTEMPTS} attempts: {seen}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_everything_posted_exactly_once_through_faults(tmp_path: Path, target: str, seed: int) -> None:
    make_sandbox, wire = TARGETS[target]
    sandbox = make_sandbox()
    export = tiny_firm(tmp_path / "firm", employees=EMPLOYEES, months=1, seed=seed)
    with serve_in_thread(sandbox) as upstream:
        proxy = fault_proxy(upstream=upstream, share=SHARE, seed=seed, stall=0.8)
        with serve_in_thread(proxy) as url:
            ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
            system, held, prepare = wire(ctx, sandbox, url)
            routing = ctx.config.routing.model_copy(update={"by_entity": {
                "US01": RouteTargets(ledger="erp", invoices="erp")}})
            ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp": system},
                                                       "routing": routing})
            ctx.reset_connectors()
            if prepare is not None:
                prepare(ctx)
            transactions.land(ctx, SOURCE, records(ctx, until=CUTOFF))
            transactions.process_pending(ctx)

            def post() -> Any:
                ctx.reset_connectors()
                return posting.post_period(ctx, "US01", PERIOD)

            runs = _until_done(post, lambda r: r.status in ("posted", "nothing_to_post", "already_posted"))
            bills = _until_done(lambda: billing.run_billing(ctx, PERIOD, "US01"),
                                lambda r: not r["create"]["retry_later"] and not r["create"]["failed"])
            _until_done(post, lambda r: r.status in ("nothing_to_post", "already_posted")
                        or (r.status == "posted" and post().status in ("nothing_to_post", "already_posted")))
            stats = proxy.state.stats.as_dict()
        proxy_faults = stats["faults"]

        with ctx.engine.connect() as conn:
            recorded = journals.list_journals(conn, legal_entity_id="US01")
            letters = dead_letters.list_letters(conn)  # open ones
            invs = [r for r in invoices_repo.list_invoices(conn, legal_entity_id="US01")]
        jcount, icount = held(sandbox.state.store)
        # exactly once: every recorded journal is held once, nothing else is held
        assert set(jcount.values()) == {1}, [k for k, n in jcount.items() if n > 1]
        assert len(jcount) == len(recorded) > 0
        assert set(icount.values()) <= {1} and len(icount) == len([r for r in invs if r.status != "failed"]) > 0
        assert all(r.status in ("posted", "submitted", "paid") and r.erp_number for r in invs), invs
        # nothing dead-lettered: every injected fault was transient
        assert [(lt.queue, lt.error_code, lt.error_text) for lt in letters] == []
        # the faults really happened, including answers lost after the target applied the call
        assert sum(proxy_faults.values()) >= 5 and any(k.endswith("_after") for k in proxy_faults), proxy_faults
        print(f"\n{target} seed {seed}: {stats['calls']} calls through the proxy, {sum(proxy_faults.values())} "
              f"faults {dict(sorted(proxy_faults.items()))}; {len(recorded)} journals and {len(icount)} invoices "
              f"held once; posting attempts {len(runs)}, billing attempts {len(bills)}")
