"""Fault injection (proof suite): a fault proxy fails 30% of the calls between the engine and its target ERP —
5xx, 429, connection resets, stalls past the client timeout, 2xx answers reporting a fault, and the same *after*
the target applied the call (the answer is lost). Through it, the posting and billing flows still post every
journal and invoice exactly once, and nothing lands in a dead-letter queue (every injected fault is transient).

Targets: Workday, Xero, NetSuite, Dynamics 365 (posting, master data and billing) and SAP S/4HANA, Oracle Fusion
(posting only: they are not invoice targets, billing is skipped for them). Bounded in ``make test``: one month of a
tiny firm, seed fixed, two targets (``LB_FAULT_TARGETS``, default ``workday,xero``); ``make fault`` runs every target
with several seeds (``LB_FAULT_SEEDS``) and a bigger firm (``LB_FAULT_EMPLOYEES``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dynamics365_support
import netsuite_support
from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.base import InvoiceTarget
from ledgerbridge.connectors.netsuite.mapping import SPLIT as NETSUITE_SPLIT
from ledgerbridge.flows import billing, masterdata, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters, journals
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.testing.faultproxy import AFTER, BEFORE
from ledgerbridge.testing.faultproxy import create_app as fault_proxy
from ledgerbridge.testing.sandbox import free_port, serve_in_thread
from ledgerbridge.testing.sandboxes import netsuite as netsuite_sandbox
from ledgerbridge.testing.sandboxes import oracle_fusion as oracle_sandbox
from ledgerbridge.testing.sandboxes import sap_s4 as sap_sandbox
from ledgerbridge.testing.sandboxes import workday as workday_sandbox
from ledgerbridge.testing.sandboxes import xero as xero_sandbox

from flows_support import make_ctx, records, tiny_firm

SEEDS = [int(s) for s in os.environ.get("LB_FAULT_SEEDS", "7").split(",")]
EMPLOYEES = int(os.environ.get("LB_FAULT_EMPLOYEES", "4"))
SHARE = float(os.environ.get("LB_FAULT_SHARE", "0.3"))
PERIOD = "2026-09"
CUTOFF = dt.datetime(2026, 10, 5, 23, 59, 59, tzinfo=dt.UTC)
TIMEOUT = 0.5  # client timeout: the proxy's stalls (0.8 s) time out
ATTEMPTS = 12  # whole-run attempts: a run that gives up on a transient failure is simply run again


def _workday(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_WORKDAY_PASSWORD"] = "lb-workday-demo"
    accounts = sorted({a.code for a in ctx.reference.accounts})
    app.state.store.accounts = {f"WD-{a}" for a in accounts}
    system = SystemConfig(
        connector="workday", role="erp", secrets={"password": SecretRef("${env:LB_WORKDAY_PASSWORD}")},
        options={"url": url, "tenant": "acme", "username": "ISU_ledgerbridge", "legal_entity_id": "US01",
                 "company_id": "C-US01", "version": "v43.0", "account_map": {a: f"WD-{a}" for a in accounts},
                 "timeout": TIMEOUT, "reports": {"trial_balance": "ISU_ledgerbridge/LB_Trial_Balance"}})

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
                 "tracking_map": {"project": "Project", "cost_center": "Cost centre"}, "timeout": TIMEOUT,
                 "calls_per_minute": 600, "window_seconds": 1.0})  # the sandbox's limit (below): no minute waits

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:
        tags = [m.group(1) for j in store.manual_journals.values()
                for m in [_LB_TAG.search(str(j.get("Narration") or ""))] if m]
        return Counter(tags), Counter(i["Reference"] for i in store.invoices.values())

    def prepare(ctx: Any) -> None:
        _propagate(ctx, ("customer", "project"))

    return system, held, prepare


def _propagate(ctx: Any, etypes: tuple[str, ...]) -> None:
    """Master data of US01 reaches the ERP through the master-data flow, faults on; a transient push failure is
    retried by the next push (never dead-lettered)."""
    data = ctx.config.model_dump(mode="json", exclude_none=True).get("master_data") or {}
    ents = dict(data.get("entities") or {})
    for etype in etypes:
        ents[etype] = {**ents.get(etype, {}), "propagate_to": ["erp"]}
    ctx.config = ctx.config.model_copy(update={
        "master_data": type(ctx.config.master_data).model_validate({**data, "entities": ents})})
    ctx.reset_connectors()
    ref = ctx.reference
    by_type = {"customer": ref.customers, "project": ref.projects}
    # one sync of all types: projects whose customers' push failed transiently wait for them (no dead letter)
    masterdata.sync_master(ctx, SOURCE, [r for e in etypes for r in by_type[e].values() if r.legal_entity_id == "US01"])
    for etype in etypes:
        _until_done(lambda e=etype: masterdata.push_pending(ctx, e),
                    lambda r: r.push_failed == 0 and r.push_retry_later == 0)


def _netsuite(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ[netsuite_support.KEY_ENV] = app.state.demo_private_key
    system = SystemConfig(connector="netsuite", role="erp",
                          secrets={"private_key": SecretRef(f"${{env:{netsuite_support.KEY_ENV}}}")},
                          options=netsuite_support.options(url, timeout=TIMEOUT))

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:
        return Counter(store.external_ids("journalentry")), Counter(store.external_ids("invoice"))

    return system, held, lambda ctx: _propagate(ctx, ("customer", "project"))


def _dynamics365(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_TEST_D365_SECRET"] = dynamics365_support.SECRET
    held_accounts = {r["MainAccountId"] for r in app.state.store.rows("MainAccounts")}
    app.state.store.seed_main_accounts((a.code, a.name) for a in ctx.reference.accounts  # the firm's whole chart
                                       if a.code not in held_accounts)  # (billing's relief account 4900 too)
    system = SystemConfig(connector="dynamics365", role="erp",
                          secrets={"client_secret": SecretRef("${env:LB_TEST_D365_SECRET}")},
                          options=dynamics365_support.connector_options(url, timeout=TIMEOUT))

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:  # every header, posted or not: both would count
        return (Counter(str(h["Description"]) for h in store.journals()),
                Counter(str(h["CustomerReference"]) for h in store.rows("FreeTextInvoiceHeaders")))

    return system, held, lambda ctx: _propagate(ctx, ("customer", "project"))


def _sap_s4(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_SAP_PASSWORD"] = "Welcome1!"
    system = SystemConfig(connector="sap_s4", role="erp", secrets={"password": SecretRef("${env:LB_SAP_PASSWORD}")},
                          options={"url": url, "legal_entity_id": "US01", "company_code": "1710",
                                   "user": "COMM_USER_LB", "account_map": dict(sap_sandbox.DEMO_ACCOUNT_MAP),
                                   "batch_size": 1, "timeout": TIMEOUT})

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:  # one count per SAP document, by its reference
        docs = {(r["CompanyCode"], r["AccountingDocument"], r["FiscalYear"], r["DocumentReferenceID"])
                for r in store.items}
        return Counter(d[3] for d in docs), Counter()

    return system, held, lambda ctx: _propagate(ctx, ("project",))


def _oracle_fusion(ctx: Any, app: Any, url: str) -> tuple[SystemConfig, Any, Any]:
    os.environ["LB_ORACLE_PASSWORD"] = "Welcome1!"
    system = SystemConfig(connector="oracle_fusion", role="erp",
                          secrets={"password": SecretRef("${env:LB_ORACLE_PASSWORD}")},
                          options={"url": url, "legal_entity_id": "US01", "ledger_id": "300000001",
                                   "data_access_set": "300000100", "company_segment": "101",
                                   "user": "LB_INTEGRATION", "account_map": dict(oracle_sandbox.DEMO_ACCOUNT_MAP),
                                   "poll_interval": 0.05, "uncertain_wait": 5.0, "timeout": TIMEOUT,
                                   "batch_size": 1})  # one import per journal: more writes to fail

    def held(store: Any) -> tuple[Counter[str], Counter[str]]:  # journal batches by name (= our journal id)
        return Counter(store.batch_names()), Counter()

    return system, held, None


TARGETS = {"workday": (workday_sandbox.create_app, _workday),
           "xero": (lambda: xero_sandbox.create_app(window=1.0, calls_per_minute=600), _xero),
           "netsuite": (lambda: netsuite_sandbox.create_app(limit_style="429"), _netsuite),
           "dynamics365": (dynamics365_support.seeded_app, _dynamics365),
           "sap_s4": (sap_sandbox.create_app, _sap_s4),
           # an import whose answer was lost finishes on its own after job_seconds (nobody polls it)
           "oracle_fusion": (lambda: oracle_sandbox.create_app(job_seconds=0.5), _oracle_fusion)}
CHOSEN = [t.strip() for t in os.environ.get("LB_FAULT_TARGETS", "workday,xero").split(",") if t.strip()]
if set(CHOSEN) - set(TARGETS):
    raise ValueError(f"LB_FAULT_TARGETS: unknown {sorted(set(CHOSEN) - set(TARGETS))}; choose from {sorted(TARGETS)}")


def _seen_at(app: Any, port: int) -> Any:
    """``app`` as it is behind a reverse proxy that keeps the ``Host`` the client used (the fault proxy drops it):
    URLs the target derives from its own address (NetSuite's JWT audience = its token URL) stay the client's."""
    host = f"127.0.0.1:{port}".encode()

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [*(h for h in scope["headers"] if h[0] != b"host"), (b"host", host)]}
        await app(scope, receive, send)

    return asgi


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


@dataclass
class Outcome:
    recorded: list[Any]
    letters: list[tuple[str, str, str, str]]  # open dead letters: (queue, flow, item, error code)
    texts: list[str]
    journals: Counter[str]  # documents the target holds per our key
    invoices: Counter[str]
    invs: list[Any]
    bills_too: bool
    stats: dict[str, Any]
    attempts: dict[str, int]


def _run(tmp: Path, target: str, seed: int, share: float) -> Outcome:
    """The month of the seed's firm through the flows, ``share`` of the target's calls failing; each step is run
    again until done (as the scheduler would)."""
    make_sandbox, wire = TARGETS[target]
    sandbox = make_sandbox()
    export = tiny_firm(tmp / "firm", employees=EMPLOYEES, months=1, seed=seed)
    port = free_port("127.0.0.1")
    with serve_in_thread(_seen_at(sandbox, port)) as upstream:
        proxy = fault_proxy(upstream=upstream, share=share, seed=seed, stall=0.8)
        with serve_in_thread(proxy, port=port) as url:
            ctx = make_ctx(tmp / "w", export_from=export, failure_mode="line_level")
            system, held, prepare = wire(ctx, sandbox, url)
            ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp": system}})
            ctx.reset_connectors()
            bills_too = isinstance(ctx.connector("erp"), InvoiceTarget)  # SAP, Oracle: posting targets only
            routing = ctx.config.routing.model_copy(update={"by_entity": {
                "US01": RouteTargets(ledger="erp", invoices="erp" if bills_too else None)}})
            ctx.config = ctx.config.model_copy(update={"routing": routing})
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
                                lambda r: not r["create"]["retry_later"] and not r["create"]["failed"]
                                ) if bills_too else []
            _until_done(post, lambda r: r.status in ("nothing_to_post", "already_posted")
                        or (r.status == "posted" and post().status in ("nothing_to_post", "already_posted")))
            stats = proxy.state.stats.as_dict()
    with ctx.engine.connect() as conn:
        recorded = journals.list_journals(conn, legal_entity_id="US01")
        letters = dead_letters.list_letters(conn)  # open ones
        invs = list(invoices_repo.list_invoices(conn, legal_entity_id="US01"))
    ctx.engine.dispose()
    jcount, icount = held(sandbox.state.store)
    return Outcome(recorded, sorted({(lt.queue, lt.flow, lt.item_key, lt.error_code) for lt in letters}),
                   [lt.error_text for lt in letters], jcount, icount, invs, bills_too, stats,
                   {"posting": len(runs), "billing": len(bills)})


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", CHOSEN)
def test_everything_posted_exactly_once_through_faults(tmp_path: Path, target: str, seed: int) -> None:
    out = _run(tmp_path / "faults", target, seed, SHARE)
    jcount, icount, faults = out.journals, out.invoices, out.stats["faults"]
    # exactly once: every document is held once, and they are the recorded journals, nothing else (NetSuite keeps
    # a journal of several currencies as one document per currency, external id <journal>~<currency>)
    assert set(jcount.values()) == {1}, [k for k, n in jcount.items() if n > 1]
    assert len({k.split(NETSUITE_SPLIT)[0] for k in jcount}) == len(out.recorded) > 0
    if out.bills_too:
        assert set(icount.values()) <= {1} and len(icount) == len([r for r in out.invs if r.status != "failed"]) > 0
        assert all(r.status in ("posted", "submitted", "paid") and r.erp_number for r in out.invs), out.invs
    else:  # not an invoice target: billing skipped, nothing sent
        assert not icount
    baseline = "none"
    if out.letters:  # nothing dead-lettered by a fault: only what the same month refuses without any fault
        # (SAP refuses a journal with several transaction currencies before sending, by design)
        clean = _run(tmp_path / "clean", target, seed, 0.0)
        assert out.letters == clean.letters, out.texts[:5]
        assert sorted(jcount) == sorted(clean.journals) and sorted(icount) == sorted(clean.invoices)
        baseline = f"{len(clean.letters)} refused without faults too"
    # the faults really happened (at least half the expected share), before and after the target applied the call
    assert sum(faults.values()) >= max(3, SHARE * out.stats["calls"] / 2), out.stats
    assert any(k in BEFORE for k in faults) and any(k in AFTER for k in faults), faults
    print(f"\n{target} seed {seed}: {out.stats['calls']} calls through the proxy, {sum(faults.values())} "
          f"faults {dict(sorted(faults.items()))}; {len(out.recorded)} journals and {len(icount)} invoices "
          f"held once; dead letters {len(out.letters)} ({baseline}); posting attempts {out.attempts['posting']}, "
          f"billing attempts {out.attempts['billing'] if out.bills_too else 'skipped'}")
