"""Shared by the SAP S/4HANA and Oracle Fusion flow tests: wire a sandboxed ERP into a flow context by
configuration only (``SystemConfig`` + routing of one legal entity), the engine's own posted totals per account, and
a posting run in a child process that a test can SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store import journals

from flows_support import make_ctx, tiny_firm

TESTS = Path(__file__).resolve().parent


def wire(ctx: FlowContext, name: str, connector: str, options: dict[str, Any], secrets: dict[str, str],
         entity: str = "US01") -> None:
    """Add system ``name`` (``connector``) with ``options`` and env-referenced ``secrets``; route ``entity``'s
    ledger to it."""
    cfg = SystemConfig(connector=connector, role="erp", options=options,
                       secrets={k: SecretRef(f"${{env:{v}}}") for k, v in secrets.items()})
    routing = ctx.config.routing.model_copy(update={"by_entity": {entity: RouteTargets(ledger=name)}})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, name: cfg}, "routing": routing})
    ctx.reset_connectors()


def erp_ctx(tmp: Path, name: str, connector: str, options: dict[str, Any], secrets: dict[str, str],
            entity: str = "US01") -> FlowContext:
    export = tiny_firm(tmp / "firm", employees=6, months=2, seed=7)
    ctx = make_ctx(tmp / "w", export_from=export, failure_mode="line_level")
    wire(ctx, name, connector, options, secrets, entity)
    return ctx


def posted_totals(ctx: FlowContext, entity: str) -> dict[str, tuple[Decimal, Decimal]]:
    """What the engine recorded as posted for ``entity``: functional debit and credit per account."""
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id=entity)
    want: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            want[ln.account][0] += (ln.functional_debit if ln.functional_currency else ln.debit) or Decimal(0)
            want[ln.account][1] += (ln.functional_credit if ln.functional_currency else ln.credit) or Decimal(0)
    return {k: (v[0], v[1]) for k, v in want.items()}


CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, spec["tests"])
    from sap_oracle_flow_support import wire
    from ledgerbridge.flows import posting
    from ledgerbridge.flows.context import FlowContext
    from ledgerbridge.flows.main_job import demo_config
    from ledgerbridge.flows.reference import load_reference
    from ledgerbridge.flows.main_job import SOURCE
    workdir = Path(spec["workdir"])
    ctx = FlowContext(demo_config(workdir), workdir=workdir)
    pol = ctx.config.policies
    pol = pol.model_copy(update={"posting_failure_mode": pol.posting_failure_mode.model_copy(
        update={"default": "line_level", "by_system": {}})})
    ctx.config = ctx.config.model_copy(update={"policies": pol})
    load_reference(ctx, SOURCE)
    wire(ctx, spec["name"], spec["connector"], spec["options"], spec["secrets"], spec["entity"])
    print(posting.post_period(ctx, spec["entity"], spec["period"]))
""")


def posting_child(ctx: FlowContext, name: str, connector: str, options: dict[str, Any], secrets: dict[str, str],
                  period: str, entity: str = "US01") -> subprocess.Popen[bytes]:
    """Start ``post_period`` in a child process on the same store and configuration (SIGKILL it at will)."""
    spec = {"tests": str(TESTS), "workdir": str(ctx.workdir), "name": name, "connector": connector,
            "options": options, "secrets": secrets, "entity": entity, "period": period}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
