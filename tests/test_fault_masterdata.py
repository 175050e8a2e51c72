"""Master data under a transient outage (issue 14, found by the fault-injection harness): when the push of the
customers fails *transiently* (they stay pending, ``push_retry_later``), the projects of those customers wait for
them instead of being pushed and refused for good (the customer does not exist in the ERP yet) — no dead letter;
the next pushes land customers, then projects. (And a later successful push closes any earlier refusal of the same
record.) Dynamics 365 sandbox; its customer endpoint answers 503 while the network is "down"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynamics365_support import SYSTEM, d365_ctx, seeded_app
from ledgerbridge.config.schema import MasterDataConfig, MasterEntityRules
from ledgerbridge.flows import masterdata
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters
from ledgerbridge.testing.sandbox import serve_in_thread

from flows_support import tiny_firm


def customers_unreachable(app: Any, down: dict[str, bool]) -> Any:
    """``app`` whose every call touching ``CustomersV3`` (URL or ``$batch`` body) answers 503 while ``down``."""
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not down["customers"]:
            return await app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if b"CustomersV3" in scope["path"].encode() + scope.get("query_string", b"") + body:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"0")]})
            await send({"type": "http.response.body", "body": b"service unavailable"})
            return None

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return asgi


def test_projects_wait_for_customers_whose_push_failed_transiently(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    app, down = seeded_app(), {"customers": True}
    with serve_in_thread(customers_unreachable(app, down)) as base:
        ctx = d365_ctx(tmp_path / "w", tiny_firm(tmp_path / "firm", employees=4, months=1, seed=2), base,
                       monkeypatch)
        ctx.config = ctx.config.model_copy(update={"master_data": MasterDataConfig(entities={
            e: MasterEntityRules(propagate_to=[SYSTEM]) for e in ("customer", "project")})})
        ctx.reset_connectors()
        custs = [c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01"]
        projs = [p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01"]
        masterdata.sync_master(ctx, SOURCE, [*custs, *projs])
        held = {r["CustomerAccount"] for r in app.state.store.rows("CustomersV3")}
        assert not {c.id for c in custs} & held  # the customers did not get through (pending: transient failure)
        down["customers"] = False
        for etype in ("customer", "project"):  # the next pushes land everything
            again = masterdata.push_pending(ctx, etype)
            assert again.push_failed == 0 and again.push_retry_later == 0, again
        assert {r["ProjectID"] for r in app.state.store.rows("ProjectsV2")} >= {p.id for p in projs}
        with ctx.engine.connect() as conn:
            letters = [(lt.item_key, lt.error_text[-120:]) for lt in dead_letters.list_letters(conn)]
        ctx.engine.dispose()
    assert letters == []  # the projects waited for their customers: nothing was refused
