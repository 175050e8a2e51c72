"""SAP S/4HANA Cloud as a master-data propagation target (config only): the master-data flow pushes the firm's
projects as enterprise projects, each in the company code of its legal entity, through CSRF-protected creates;
a second sync sends nothing; projects of an entity without a company code wait in the operational queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge.config.schema import LedgerbridgeConfig
from ledgerbridge.flows import masterdata
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.flows.reference import load_reference
from ledgerbridge.store import dead_letters, xref
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes.sap_s4 import DEMO_ACCOUNT_MAP, create_app

from flows_support import tiny_firm


def context(tmp: Path, url: str, company_codes: dict[str, str]) -> FlowContext:
    tiny_firm(tmp)
    data = demo_config(tmp).model_dump(mode="json", exclude_none=True)
    data["systems"]["sap"] = {
        "connector": "sap_s4", "role": "erp", "secrets": {"password": "${env:LB_TEST_SAP_PASSWORD}"},
        "options": {"url": url, "legal_entity_id": "US01", "company_code": "1710", "user": "COMM_USER_LB",
                    "account_map": dict(DEMO_ACCOUNT_MAP), "company_codes": company_codes}}
    data["master_data"] = {"entities": {"project": {"propagate_to": ["sap"]}}}
    ctx = FlowContext(LedgerbridgeConfig.model_validate(data, context={"base_dir": str(tmp)}), workdir=tmp)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    return ctx


@pytest.fixture
def sap(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    monkeypatch.setenv("LB_TEST_SAP_PASSWORD", "Welcome1!")
    app = create_app(csrf_rotate_after=3)
    with serve_in_thread(app) as url:
        yield app, url


def test_projects_pushed_once_in_their_company_codes(tmp_path: Path, sap: tuple[Any, str]) -> None:
    app, url = sap
    ctx = context(tmp_path, url, {"UK01": "1510", "DE01": "1010"})
    projs = list(ctx.reference.projects.values())
    res = masterdata.sync_master(ctx, SOURCE, projs)
    assert res.pushed == {"sap": len(projs)} and res.push_failed == 0
    held = {p["Project"]: p for p in app.state.store.projects}
    assert set(held) == {p.id for p in projs}
    want = {"US01": "1710", "UK01": "1510", "DE01": "1010"}
    assert all(held[p.id]["CompanyCode"] == want[p.legal_entity_id] for p in projs)
    with ctx.engine.connect() as conn:
        bound = xref.lookup_many(conn, "project", "sap", [p.id for p in projs])
    assert {k: b.external_id for k, b in bound.items()} == {k: v["ProjectUUID"] for k, v in held.items()}
    assert ctx.connector("sap").client.csrf_fetches > 1  # sessions ended every 3 writes: fetched again
    posts = app.state.calls.count(method="POST", status=201)
    assert masterdata.sync_master(ctx, SOURCE, projs).pushed == {}
    assert app.state.calls.count(method="POST", status=201) == posts
    ctx.engine.dispose()


def test_projects_of_an_unmapped_entity_wait_in_the_operational_queue(tmp_path: Path, sap: tuple[Any, str]) -> None:
    app, url = sap
    ctx = context(tmp_path, url, {})
    projs = list(ctx.reference.projects.values())
    res = masterdata.sync_master(ctx, SOURCE, projs)
    assert res.push_failed == len(projs) and not app.state.store.projects  # refused before any write
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn)
    assert letters and all("company_codes" in lt.error_text for lt in letters)
    ctx.engine.dispose()
