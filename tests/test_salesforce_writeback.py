"""Salesforce writes against the sandbox: ERP invoice numbers onto Certinia billing events and Kimble invoices by
external id (twice -> one record, the repeat writes nothing), collections of 200 with a refused item failing alone,
and the CRM chain — an Opportunity moved to Closed Won becomes a ``project.approved`` event whose subscription
writes the project status back onto the Opportunity through the connector (real runtime)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from ledgerbridge.config.schema import SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.salesforce import SalesforceSource
from ledgerbridge.errors import ConflictError, RecordValidationError
from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.flows.context import set_current
from ledgerbridge.model.events import AnyEvent
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.salesforce import connector_options, create_app
from subscriptions_support import context_with

BE = "pse__Billing_Event__c"


def update(key: str, number: str | None, status: str = "posted", project: str = "a0P000000000001AAA") -> Any:
    return InvoiceStatusUpdate(key=key, project_id=project, legal_entity_id="US01", invoice_date=dt.date(2026, 9, 30),
                               currency="USD", total=Decimal("1000.00"), erp_system="erp", erp_number=number,
                               status=status)


def patches(app: Any) -> int:
    return app.state.calls.count(method="PATCH")


def test_invoice_write_back_is_idempotent_by_external_id_and_refused_items_fail_alone() -> None:
    app = create_app(seed=False)
    with serve_in_thread(app) as base:
        st = app.state.store
        src = SalesforceSource.from_options("sf", connector_options(app, base, "certinia"),
                                            private_key=app.state.private_key_pem)
        assert src.write_invoice_status([update("INV-US01-000001", "SI-100")]) == 1
        assert src.write_invoice_status([update("INV-US01-000001", "SI-100")]) == 0  # read first: nothing to write
        [event] = st.objects[BE].values()
        assert (event["ERP_Invoice_Id__c"], event["pse__Invoice_Number__c"], event["pse__Invoiced__c"],
                event["ERP_Invoice_Status__c"]) == ("INV-US01-000001", "SI-100", True, "posted")
        assert patches(app) == 1
        assert src.write_invoice_status([update("INV-US01-000001", "SI-100", status="paid")]) == 1
        assert st.count(BE) == 1 and next(iter(st.objects[BE].values()))["ERP_Invoice_Status__c"] == "paid"

        # 201 invoices: two collection calls (200 + 1); one billing event is locked by an approval process
        locked = next(iter(st.objects[BE]))
        st.locked.add(locked)
        batch = [update(f"INV-US01-{n:06d}", f"SI-{n}") for n in range(1, 202)]
        calls_before = patches(app)
        with pytest.raises(RecordValidationError) as exc:
            src.write_invoice_status(batch)
        assert exc.value.details["errors"][0]["statusCode"] == "ENTITY_IS_LOCKED"
        assert patches(app) - calls_before == 2
        assert st.count(BE) == 201  # the 200 others were written; the locked one kept its values
        st.locked.clear()
        assert src.write_invoice_status(batch) == 1  # the retry writes only what still differs
        assert st.count(BE) == 201

        app.state.faults["lock_rows"] = 1  # every item of the next call hit a trigger's row lock: retried whole
        calls_before = patches(app)
        assert src.write_invoice_status([update("INV-US01-000999", "SI-999")]) == 1
        assert patches(app) - calls_before == 2 and st.count(BE) == 202

        st.insert(BE, {"ERP_Invoice_Id__c": "INV-DUP"})
        st.insert(BE, {"ERP_Invoice_Id__c": "INV-DUP"})
        with pytest.raises(ConflictError):  # 300 Multiple Choices on the single-record upsert
            src.client.upsert(BE, "ERP_Invoice_Id__c", "INV-DUP", {"pse__Invoice_Number__c": "X"})

        kimble = SalesforceSource.from_options("sf", connector_options(app, base, "kimble"),
                                               private_key=app.state.private_key_pem)
        assert kimble.write_invoice_status([update("INV-K-1", "SI-9", project="a1D000000000001AAA")]) == 1
        [inv] = app.state.store.objects["KimbleOne__Invoice__c"].values()
        assert (inv["KimbleOne__InvoiceReference__c"], inv["KimbleOne__DeliveryGroup__c"]) == ("SI-9",
                                                                                             "a1D000000000001AAA")
        assert kimble.invoice_records(["INV-K-1"])["INV-K-1"]["ERP_Invoice_Status__c"] == "posted"


CHILD = """
import datetime as dt, json, os, sys
from decimal import Decimal
from ledgerbridge.connectors.base import InvoiceStatusUpdate
from ledgerbridge.connectors.salesforce import SalesforceSource
src = SalesforceSource.from_options("sf", json.loads(sys.argv[1]), private_key=os.environ["LB_TEST_SF_KEY"])
src.write_invoice_status([InvoiceStatusUpdate(
    key=f"INV-K-{n:05d}", project_id="a0P000000000001AAA", legal_entity_id="US01", invoice_date=dt.date(2026, 9, 30),
    currency="USD", total=Decimal("10.00"), erp_system="erp", erp_number=f"SI-{n}", status="posted")
    for n in range(int(sys.argv[2]))])
"""


def test_write_back_killed_mid_run_and_rerun_leaves_each_invoice_once(monkeypatch: Any) -> None:
    app = create_app(seed=False)
    app.state.faults["collection_delay"] = 0.3
    with serve_in_thread(app) as base:
        options = connector_options(app, base, "certinia")
        env = {**os.environ, "LB_TEST_SF_KEY": app.state.private_key_pem}
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(options), "600"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 45
        while patches(app) < 1 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        time.sleep(0.4)  # a collection call already sent when the client died still completes on the server
        held = app.state.store.count(BE)
        assert 200 <= held < 600  # killed part-way through the three collection calls
        app.state.faults["collection_delay"] = 0
        src = SalesforceSource.from_options("sf", options, private_key=app.state.private_key_pem)
        ups = [update(f"INV-K-{n:05d}", f"SI-{n}") for n in range(600)]
        assert src.write_invoice_status(ups) == 600 - held  # the rerun writes only what the killed run had not
        keys = Counter(r["ERP_Invoice_Id__c"] for r in app.state.store.objects[BE].values())
        assert len(keys) == 600 and set(keys.values()) == {1}


def test_closed_won_opportunity_runs_the_project_chain_and_status_is_written_back(tmp_path: Path,
                                                                                   monkeypatch: Any) -> None:
    app = create_app(seed=False)
    st = app.state.store
    acct = st.insert("Account", {"Name": "Acme"})
    opp = st.insert("Opportunity", {"Name": "Acme phase 2", "AccountId": acct, "StageName": "Negotiation",
                                    "Amount": Decimal("50000"), "CurrencyIsoCode": "USD", "CloseDate": "2026-09-01"})
    with serve_in_thread(app) as base:
        monkeypatch.setenv("LB_TEST_SF_KEY", app.state.private_key_pem)
        options = connector_options(app, base, "crm", projects={"legal_entity_id": "US01", "cost_center": "CC-1"})
        src = SalesforceSource.from_options("crm_sf", options, private_key=app.state.private_key_pem)
        first = src.sync(None)
        assert first.business_events == []  # not won yet
        st.update("Opportunity", opp, {"StageName": "Closed Won"})
        won = src.sync(first.cursor)
        [event] = won.business_events
        parsed = TypeAdapter(AnyEvent).validate_python(event)
        assert (parsed.event_type, parsed.project.id, parsed.project.contract_value,
                parsed.project.customer_id) == ("project.approved", opp, Decimal("50000"), acct)
        assert src.sync(won.cursor).business_events == []  # reported once

        sub = {"name": "won", "event": "project.approved", "key": "project.id", "actions": [
            {"name": "crm", "kind": "set_crm_status", "options": {"system": "crm_sf", "status": "In delivery"}}]}
        ctx = context_with(tmp_path / "wd", [sub])
        system = SystemConfig(connector="salesforce", role="psa", options=options,
                              secrets={"private_key": SecretRef("${env:LB_TEST_SF_KEY}")})
        ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "crm_sf": system}})
        ctx.reset_connectors()
        set_current(ctx)
        try:
            with launched_for_test(tmp_path):
                res = subs.publish(ctx, won.business_events)
                states = subs.wait(res.workflow_ids, timeout_seconds=60)
                again = subs.publish(ctx, won.business_events)  # a re-delivered event runs nothing twice
        finally:
            set_current(None)
        assert [s["status"] for s in states] == ["completed"]
        assert (again.enqueued, again.duplicates) == (0, 1)
        assert st.get("Opportunity", opp)["Project_Status__c"] == "In delivery"

        count = st.count("Opportunity")
        src.set_project_status(opp, "In delivery", erp_number="PRJ-7")
        src.set_project_status(opp, "In delivery", erp_number="PRJ-7")
        assert st.count("Opportunity") == count and st.get("Opportunity", opp)["ERP_Project_Number__c"] == "PRJ-7"
        assert src.sync(won.cursor).business_events == []  # our own write-back is no new approval
