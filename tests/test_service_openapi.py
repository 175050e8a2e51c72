"""Schemathesis against /openapi.json: generated requests (valid and invalid) on every operation, with an admin
token and the worker running, never get a 5xx, and every answer matches the published schema (status codes,
content types, bodies). Bounded: a few examples per operation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledgerbridge.config import default_config
from ledgerbridge.flows.context import FlowContext, set_current
from ledgerbridge.runtime.testing import settings_for_test
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings

EXAMPLES = int(os.environ.get("LBT_SCHEMA_EXAMPLES", "6"))  # per operation; raise it for a deeper run
#: generate = random valid and invalid cases; explicit = schemathesis's coverage phase (boundary and negative
#: cases for every parameter: thorough, ~4x slower) — LBT_SCHEMA_COVERAGE=1 adds it
PHASES = [Phase.generate] + ([Phase.explicit] if os.environ.get("LBT_SCHEMA_COVERAGE") == "1" else [])


def _app(tmp: Path) -> tuple[object, str]:
    cfg = default_config()
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": f"sqlite:///{tmp}/s.sqlite"})})
    ctx = FlowContext(cfg, workdir=tmp)
    ctx.migrate()
    app = create_app(ctx, ServiceSettings(worker=True),
                     runtime_settings=settings_for_test(f"sqlite:///{tmp}/dbos.sqlite"))
    return app, st.issue_token(ctx, "admin")


_TMP = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"lb-schemathesis-{os.getpid()}"
_TMP.mkdir(parents=True, exist_ok=True)
APP, TOKEN = _app(_TMP)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def running() -> object:
    with TestClient(APP) as client:  # type: ignore[arg-type]  # lifespan: runtime, queue, schedule
        yield client
    set_current(None)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=PHASES)
def test_api_conforms_and_never_5xx(case: schemathesis.Case) -> None:
    if case.path != "/webhooks/{system}":  # webhooks are authenticated by signature: generated ones get 401
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
