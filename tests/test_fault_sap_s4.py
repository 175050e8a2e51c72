"""Regression (issue 14, found by the fault-injection harness): SAP creates an enterprise project but its answer
is lost (HTTP 503 after the create was applied); the client retries the POST and SAP refuses it with HTTP 400
"Project ... already exists". That refusal must not fail the push (the master-data flow would dead-letter a project
SAP holds): the connector finds the project it just created and binds to it — one project in SAP, no error."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.sap_s4 import SapS4Ledger
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.sap_s4 import DEMO_ACCOUNT_MAP, create_app

from flows_support import make_ctx, tiny_firm

PROJECTS = "/sap/opu/odata/sap/API_ENTERPRISE_PROJECT_SRV;v=0002/A_EnterpriseProject"


def answer_lost_after_first_create(app: Any) -> tuple[Any, list[int]]:
    """``app`` behind a network that loses the answer of the first project create (SAP applied it)."""
    posts: list[int] = []

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PROJECTS:
            posts.append(1)
            if len(posts) == 1:
                async def drop(message: Any) -> None:
                    return None

                await app(scope, receive, drop)  # SAP creates the project; its answer never arrives
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"0")]})
                await send({"type": "http.response.body", "body": b"upstream connect error"})
                return
        await app(scope, receive, send)

    return asgi, posts


def test_project_created_but_answer_lost_is_bound_not_refused(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path / "w", export_from=tiny_firm(tmp_path / "firm", employees=4, months=1, seed=1))
    projects = [p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01"]
    app = create_app()
    wrapped, posts = answer_lost_after_first_create(app)
    with serve_in_thread(wrapped) as url:
        target = SapS4Ledger.from_options(
            {"url": url, "legal_entity_id": "US01", "company_code": "1710", "user": "COMM_USER_LB",
             "account_map": dict(DEMO_ACCOUNT_MAP), "timeout": 5},
            secret={"password": "Welcome1!"}.__getitem__)
        bound = target.push_projects(projects)
    held = app.state.store.projects
    assert len(posts) == len(projects) + 1  # the first create was sent again after its answer was lost
    assert sorted(p["Project"] for p in held) == sorted(p.id for p in projects)  # each project once
    assert bound == {p["Project"]: p["ProjectUUID"] for p in held}
    ctx.engine.dispose()
