"""Schemathesis against /openapi.json: generated requests (valid and invalid) on every operation, with an admin
token and a durable runtime running, never get a 5xx, and every answer matches the published schema (status
codes, content types, bodies). Bounded: a few examples per operation (``LBT_SCHEMA_EXAMPLES``, default 6;
``LBT_SCHEMA_COVERAGE=1`` adds schemathesis's coverage phase: boundary and negative cases for every parameter)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledgerbridge.config import default_config
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.runtime.testing import launched_for_test
from ledgerbridge.service import testing as st
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings

EXAMPLES = int(os.environ.get("LBT_SCHEMA_EXAMPLES", "6"))
PHASES = [Phase.generate] + ([Phase.explicit] if os.environ.get("LBT_SCHEMA_COVERAGE") == "1" else [])
def _app() -> tuple[Any, str, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="lb-schemathesis-"))
    cfg = default_config()
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": f"sqlite:///{tmp}/s.sqlite"})})
    ctx = FlowContext(cfg, workdir=tmp)
    ctx.migrate()
    # schemathesis runs the app's lifespan itself and keeps it alive until the process ends: the app runs no
    # worker; the module fixture below launches (and shuts down) a runtime for the workflow routes
    return create_app(ctx, ServiceSettings(worker=False)), st.issue_token(ctx, "admin"), tmp


APP, TOKEN, TMP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def runtime() -> Iterator[None]:
    with launched_for_test(TMP):
        yield
    shutil.rmtree(TMP, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=PHASES)
def test_api_conforms_and_never_5xx(case: schemathesis.Case) -> None:
    if case.path != "/webhooks/{system}":  # webhooks are authenticated by signature: generated ones get 401
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
