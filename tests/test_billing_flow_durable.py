"""The billing run as a DBOS workflow: JSON in/out, each stage a checkpointed step, a deterministic workflow id
(the same state runs once; new approvals or recalls give a new id), and the status workflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ledgerbridge import runtime as rt
from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.context import set_current
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.runtime.testing import launched_for_test

from flows_support import make_ctx, records, tiny_firm


def test_billing_workflow_runs_once_per_state(tmp_path: Path) -> None:
    firm = tiny_firm(tmp_path / "firm")
    shutil.copytree(firm, tmp_path / "wd" / "psa-export")
    ctx = make_ctx(tmp_path / "wd")
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    for entity in sorted(ctx.reference.entities):
        posting.post_period(ctx, entity, "2026-09")
    set_current(ctx)
    try:
        with launched_for_test(tmp_path):
            wf_id = billing.workflow_id(ctx, "2026-09", None, billing.DEFAULT_KINDS)
            assert wf_id == billing.workflow_id(ctx, "2026-09", None, list(reversed(billing.DEFAULT_KINDS)))
            first = billing.billing_run_durable(ctx, "2026-09")
            json.dumps(first)  # plain JSON out
            assert first["create"]["created"] and first["written_back"] == len(first["create"]["created"])
            steps = [s["name"] for s in rt.workflow_steps(wf_id)]
            assert steps == ["lb.billing.draft", "lb.billing.create", "lb.billing.status", "lb.billing.write_back"]

            # the run changed the state (invoices recorded, postings staged): a new run has a new id, bills nothing
            second_id = billing.workflow_id(ctx, "2026-09", None, billing.DEFAULT_KINDS)
            assert second_id != wf_id
            second = billing.billing_run_durable(ctx, "2026-09")
            assert second["draft"]["drafted"] == [] and second["create"]["created"] == []
            # starting the same id again returns the recorded result without running anything
            again = rt.result(rt.start(billing.billing_workflow, "2026-09", None, list(billing.DEFAULT_KINDS), None,
                                       workflow_id=wf_id))
            assert again == first
            status = rt.result(rt.start(billing.status_workflow, None, workflow_id="billing-status:test"))
            assert status == {"status_changes": {}, "written_back": 0}
    finally:
        set_current(None)
