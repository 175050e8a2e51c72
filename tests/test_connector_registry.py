"""The connector registry builds every configured product from configuration alone (secrets by reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgerbridge.config import load_config_text
from ledgerbridge.connectors.base import Capabilities
from ledgerbridge.connectors.registry import BUILDERS, build_connector
from ledgerbridge.errors import PermanentError
from ledgerbridge.flows.context import FlowContext

CONFIG = """
version: 1
store: {url: "sqlite:///%(wd)s/state.sqlite"}
systems:
  psa_files: {connector: psa_csv, role: psa, options: {directory: "%(wd)s/psa"}}
  ledger: {connector: beancount, role: erp, options: {directory: "%(wd)s/ledger"}}
  erp_files: {connector: file_journal, role: erp, options: {outbox: "%(wd)s/out", inbox: "%(wd)s/in"}}
  erp_us:
    connector: tryton
    role: erp
    options: {url: "http://127.0.0.1:9", database: lb, legal_entity_id: US01, account_map: {"1100": "1.2.1"}}
    secrets: {password: "${env:LB_TEST_TRYTON_PASSWORD}"}
  psa_redmine:
    connector: redmine
    role: psa
    options: {url: "http://127.0.0.1:9"}
    secrets: {api_key: "${env:LB_TEST_REDMINE_KEY}"}
routing:
  default: {ledger: ledger, time: psa_files}
"""


def test_every_connector_is_built_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_TEST_TRYTON_PASSWORD", "s3cret-for-tests")
    monkeypatch.setenv("LB_TEST_REDMINE_KEY", "0123456789abcdef")
    cfg = load_config_text(CONFIG % {"wd": tmp_path})
    ctx = FlowContext(cfg, workdir=tmp_path)
    assert set(BUILDERS) >= {"psa_csv", "beancount", "file_journal", "tryton", "redmine"}
    for name in cfg.systems:
        conn = ctx.connector(name)
        assert isinstance(conn.capabilities(), Capabilities), name
        assert ctx.connector(name) is conn  # built once, reused


def test_unknown_connector_names_the_choices(tmp_path: Path) -> None:
    cfg = load_config_text((CONFIG % {"wd": tmp_path}).replace("connector: psa_csv", "connector: netsuit"))
    with pytest.raises(PermanentError, match=r"netsuit.*unknown.*available"):
        build_connector("psa_files", cfg.systems["psa_files"], FlowContext(cfg, workdir=tmp_path))
