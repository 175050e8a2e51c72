"""Power BI push datasets (legacy reporting target) against the Power BI sandbox over real HTTP, with every request
and response checked against Microsoft's published Swagger 2.0 document (tests/specs/powerbi/swagger.json):
the curated marts of a real small run are published per period (row counts and money sums in Power BI = the mart),
re-publishing replaces instead of duplicating, the dataset is found by name, the push limits are held (10,000 rows
per POST, POSTs per window per dataset; a 429 pauses the client instead of starting a storm), tokens are renewed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerbridge.config.schema import SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.powerbi import PowerBiClient, PowerBiTarget
from ledgerbridge.connectors.powerbi.connector import MartTable
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.marts import build_marts, open_mart
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.powerbi import SwaggerContract, create_app

from flows_support import make_ctx, records, tiny_firm

SWAGGER = Path(__file__).parent / "specs" / "powerbi" / "swagger.json"
GROUP = "f089354e-8366-4e18-aea3-4cb4a3a50b48"
TABLES = ("invoice_status", "revenue_by_method", "gl_balances", "project_margin", "utilization", "mart_info")


@pytest.fixture(scope="module")
def contract() -> SwaggerContract:
    return SwaggerContract(SWAGGER)


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny firm run through the real flows (ingest, post, bill, post) and its mart."""
    root = tmp_path_factory.mktemp("powerbi")
    ctx = make_ctx(root / "wd", export_from=tiny_firm(root))
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    for _ in range(2):
        for period in ("2026-09", "2026-10"):
            for entity in sorted(ctx.reference.entities):
                assert posting.post_period(ctx, entity, period).status in ("posted", "nothing_to_post")
        if _ == 0:
            billing.run_billing(ctx, "2026-09")
            billing.run_billing(ctx, "2026-10")
    report = build_marts(ctx, root / "mart.duckdb", as_of=dt.date(2026, 11, 30))
    return ctx, report.path


def checked(client: PowerBiClient, contract: SwaggerContract, problems: list[str]) -> PowerBiClient:
    """Check every request/response of ``client`` against the swagger (httpx event hook)."""
    def on_response(response: httpx.Response) -> None:
        response.read()
        req = response.request
        body = json.loads(req.content, parse_float=Decimal) if req.content and req.method != "GET" and \
            req.headers.get("content-type", "").startswith("application/json") else None
        answer = json.loads(response.content) if response.content and \
            response.headers.get("content-type", "").startswith("application/json") else None
        problems.extend(contract.check(req.method, req.url.path, dict(req.url.params), body,
                                       response.status_code, answer))

    client.http.event_hooks["response"].append(on_response)
    return client


@pytest.fixture
def sandbox() -> Iterator[tuple[Any, str]]:
    app = create_app()
    with serve_in_thread(app) as base:
        yield app, base


def target_for(base: str, contract: SwaggerContract, problems: list[str], **client_kw: Any) -> PowerBiTarget:
    client = PowerBiClient("lb-tenant", "lb-app", "lb-secret", api_url=base, authority=base, **client_kw)
    return PowerBiTarget(checked(client, contract, problems), group_id=GROUP, tables=TABLES)


def mart_rows(path: Path, table: str, period: str | None) -> list[dict[str, Any]]:
    con = open_mart(path)
    try:
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    return [r for r in rows if period is None or r.get("period", period) == period]


def assert_equal_to_mart(app: Any, dataset_id: str, path: Path, period: str | None) -> None:
    for table in TABLES:
        want = mart_rows(path, table, period)
        got = app.state.store.rows(dataset_id, table)
        assert len(got) == len(want), table
        money = [k for k, v in (want[0].items() if want else ()) if isinstance(v, Decimal)]
        for col in money:
            assert sum(Decimal(str(r[col] or 0)) for r in got) == sum((r[col] or Decimal(0)) for r in want), \
                (table, col)
        keys = [k for k in ("invoice_id", "account", "project_id", "resource_id") if want and k in want[0]]
        for k in keys:
            assert sorted(str(r[k]) for r in got) == sorted(str(r[k]) for r in want), (table, k)


def test_marts_published_per_period_equal_the_mart_and_republish_replaces(
        firm: Any, sandbox: Any, contract: SwaggerContract) -> None:
    _, mart = firm
    app, base = sandbox
    problems: list[str] = []
    target = target_for(base, contract, problems)
    assert target.check_access()["id"] == GROUP
    first = target.publish_marts(mart, "2026-09")
    assert first.dataset_created and first.rows["invoice_status"] > 0 and first.rows["gl_balances"] > 0
    assert_equal_to_mart(app, first.dataset_id, mart, "2026-09")
    again = target.publish_marts(mart, "2026-09")  # same period again: replaced, not appended
    assert not again.dataset_created and again.dataset_id == first.dataset_id
    assert_equal_to_mart(app, first.dataset_id, mart, "2026-09")
    october = target.publish_marts(mart, "2026-10")  # the table holds one load: October replaces September
    assert_equal_to_mart(app, first.dataset_id, mart, "2026-10")
    assert october.rows["gl_balances"] != 0
    target.publish_marts(mart, None)  # every period at once
    assert_equal_to_mart(app, first.dataset_id, mart, None)
    assert len(app.state.store.by_name(GROUP, "ledgerbridge marts")) == 1
    assert problems == []
    assert {"Groups_GetGroups", "Datasets_GetDatasetsInGroup", "Datasets_PostDatasetInGroup",
            "Datasets_GetTablesInGroup", "Datasets_DeleteRowsInGroup", "Datasets_PostRowsInGroup"} <= set(
        contract.checked)
    assert app.state.calls.count(status=429) == 0


def test_configured_system_publishes_from_a_flow_context(firm: Any, sandbox: Any, contract: SwaggerContract,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, mart = firm
    app, base = sandbox
    monkeypatch.setenv("LB_POWERBI_SECRET", "lb-secret")
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "bi": SystemConfig(
        connector="powerbi", role="reporting", secrets={"client_secret": SecretRef("${env:LB_POWERBI_SECRET}")},
        options={"tenant_id": "lb-tenant", "client_id": "lb-app", "group_id": GROUP, "api_url": base,
                 "authority": base, "tables": ["revenue_by_method", "invoice_status"],
                 "dataset_name": "finance"})}})
    ctx.reset_connectors()
    target = ctx.connector("bi")
    problems: list[str] = []
    checked(target.client, contract, problems)
    report = target.publish_marts(ctx, "2026-10")  # the mart is built from the store on the fly
    assert report.rows["revenue_by_method"] == len(mart_rows(mart, "revenue_by_method", "2026-10")) > 0
    rows = app.state.store.rows(report.dataset_id, "revenue_by_method")
    assert sum(Decimal(str(r["amount"])) for r in rows) == sum(
        r["amount"] for r in mart_rows(mart, "revenue_by_method", "2026-10"))
    assert problems == []


def test_limits_held_rows_per_post_and_posts_per_window(contract: SwaggerContract) -> None:
    app = create_app(post_limit=4, post_window=0.5)
    rows = tuple((f"P-{i:05d}", Decimal(i) / 100) for i in range(20_001))
    big = {"facts": MartTable("facts", (("project_id", "VARCHAR"), ("amount", "DECIMAL(38,10)")), rows)}
    with serve_in_thread(app) as base:
        problems: list[str] = []
        target = target_for(base, contract, problems, posts_per_window=3, window=0.5, headroom=1.0)
        report = target.publish_marts(big, tables=["facts"])
        assert report.posts["facts"] == 3  # 10,000 + 10,000 + 1
        held = app.state.store.rows(report.dataset_id, "facts")
        assert len(held) == 20_001 and sum(Decimal(str(r["amount"])) for r in held) == sum(a for _, a in rows)
        small = {"facts": MartTable("facts", big["facts"].columns, rows[:800])}
        target.client.rows_per_post = 100
        report = target.publish_marts(small, tables=["facts"])  # 8 POSTs paced at 3 per 0.5 s
        assert report.posts["facts"] == 8 and len(app.state.store.rows(report.dataset_id, "facts")) == 800
        assert app.state.calls.count(status=429) == 0  # paced below the limit: never refused
        # a client configured above the limit: each 429 pauses it for Retry-After; no storm, nothing doubled
        eager = target_for(base, contract, problems, posts_per_window=1000, window=0.5, rows_per_post=100)
        six = {"facts": MartTable("facts", big["facts"].columns, rows[:600])}
        report = eager.publish_marts(six, tables=["facts"])
        refused = app.state.calls.count(method="POST", status=429)
        assert 1 <= refused <= 2, refused  # one 429 per window overrun, then the client waits as told
        assert len(app.state.store.rows(report.dataset_id, "facts")) == 600
        assert problems == []


def test_a_wrong_body_is_caught_by_the_swagger(contract: SwaggerContract) -> None:
    path = f"/v1.0/myorg/groups/{GROUP}/datasets"
    good = {"name": "x", "defaultMode": "Push", "tables": [{"name": "t", "columns": [
        {"name": "a", "dataType": "Int64"}]}]}
    assert contract.check("POST", path, {"defaultRetentionPolicy": "basicFIFO"}, good, 201,
                          {"id": "1", "name": "x"}) == []
    no_name = {k: v for k, v in good.items() if k != "name"}
    assert any("'name' is a required property" in p for p in contract.check("POST", path, {}, no_name, 201, {}))
    bad_mode = {**good, "defaultMode": "Pushed"}
    assert any("Pushed" in p for p in contract.check("POST", path, {}, bad_mode, 201, {}))
    no_columns = {**good, "tables": [{"name": "t"}]}
    assert any("columns" in p for p in contract.check("POST", path, {}, no_columns, 201, {}))
    assert any("retention" in p.lower() for p in contract.check("POST", path, {"defaultRetentionPolicy": "FIFO"},
                                                                 good, 201, {}))
    rows = f"{path}/abc/tables/t/rows"
    assert any("rows" in p for p in contract.check("POST", rows, {}, {"rows": "not a list"}, 200, None))
    assert any("value" in p for p in contract.check("GET", path, {}, None, 200, {"value": {"id": 1}}))
    assert contract.check("PATCH", rows, {}, None, 200, None) == [f"PATCH {rows}: no such operation in the swagger"]


def test_dataset_found_by_name_schema_drift_updated_and_duplicates_refused(
        sandbox: Any, contract: SwaggerContract) -> None:
    app, base = sandbox
    problems: list[str] = []
    target = target_for(base, contract, problems)
    one = {"facts": MartTable("facts", (("project_id", "VARCHAR"),), (("P-1",),))}
    first = target.publish_marts(one, tables=["facts"])
    wider = {"facts": MartTable("facts", (("project_id", "VARCHAR"), ("hours", "DECIMAL(38,10)")),
                                (("P-1", Decimal("7.5")),))}
    second = target.publish_marts(wider, tables=["facts"])
    assert second.dataset_id == first.dataset_id and second.schema_updates == ["facts"]
    assert app.state.store.rows(first.dataset_id, "facts") == [{"project_id": "P-1", "hours": Decimal("7.5")}]
    # someone created a second dataset with the same name in the workspace (Power BI allows it): refuse to guess
    target.client.create_dataset(GROUP, {"name": "ledgerbridge marts", "defaultMode": "Push", "tables": [
        {"name": "facts", "columns": [{"name": "project_id", "dataType": "String"}]}]})
    with pytest.raises(ConflictError, match="2 datasets named"):
        target.publish_marts(wider, tables=["facts"])
    assert problems == []


def test_workspace_access_checked(sandbox: Any, contract: SwaggerContract) -> None:
    app, base = sandbox
    problems: list[str] = []
    app.state.store.groups[GROUP] = {"someone-else"}
    with pytest.raises(PermanentError, match="not a member of workspace") as err:
        target_for(base, contract, problems).check_access()
    assert err.value.code == "LB-P003" and problems == []


def test_token_renewed_after_expiry_and_revocation(contract: SwaggerContract) -> None:
    now = [1000.0]
    app = create_app(token_lifetime=120)
    app.state.store.clock = lambda: now[0]
    with serve_in_thread(app) as base:
        problems: list[str] = []
        target = target_for(base, contract, problems, clock=lambda: now[0])
        one = {"facts": MartTable("facts", (("project_id", "VARCHAR"),), (("P-1",),))}
        target.publish_marts(one, tables=["facts"])
        assert target.client.token_fetches == 1
        now[0] += 100  # past the client's renewal point (lifetime - 60 s)
        target.publish_marts(one, tables=["facts"])
        assert target.client.token_fetches == 2
        app.state.store.tokens.clear()  # revoked server-side: a 401, one renewal, the call goes through
        target.publish_marts(one, tables=["facts"])
        assert target.client.token_fetches == 3
        assert app.state.calls.count(status=401) == 1
        assert problems == []
        wrong = PowerBiClient("lb-tenant", "lb-app", "not-the-secret", api_url=base, authority=base)
        with pytest.raises(PermanentError) as err:  # invalid_client: not retried, named as an auth failure
            wrong.datasets(GROUP)
        assert err.value.code == "LB-P002" and "AADSTS7000215" in err.value.message


def test_sandbox_refuses_rows_of_the_wrong_type_and_oversized_posts(sandbox: Any, contract: SwaggerContract
                                                                     ) -> None:
    _, base = sandbox
    problems: list[str] = []
    client = checked(PowerBiClient("lb-tenant", "lb-app", "lb-secret", api_url=base, authority=base), contract,
                     problems)
    ds = client.create_dataset(GROUP, {"name": "t", "defaultMode": "Push", "tables": [
        {"name": "facts", "columns": [{"name": "n", "dataType": "Int64"}]}]})
    with pytest.raises(RecordValidationError, match="not a valid Int64"):
        client.request("POST", f"/v1.0/myorg/groups/{GROUP}/datasets/{ds['id']}/tables/facts/rows",
                       json={"rows": [{"n": "seven"}]})
    with pytest.raises(RecordValidationError, match="limit is 10000"):
        client.request("POST", f"/v1.0/myorg/groups/{GROUP}/datasets/{ds['id']}/tables/facts/rows",
                       json={"rows": [{"n": 1}] * 10_001})
    assert problems == []
