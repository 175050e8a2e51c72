"""`ledgerbridge init` and `ledgerbridge config validate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ledgerbridge.config.cli import config_app, init_command
from ledgerbridge.config.loader import starter_text

try:
    from ledgerbridge.cli import app as _cli_app

    CLI: typer.Typer = _cli_app
    INIT, VALIDATE = ["init"], ["config", "validate"]
except ImportError:  # pragma: no cover - another sub-app not written yet
    CLI = typer.Typer()
    CLI.add_typer(config_app, name="config")
    CLI.command("init")(init_command)
    INIT, VALIDATE = ["init"], ["config", "validate"]

runner = CliRunner()


def test_init_writes_the_starter_which_validates(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "ledgerbridge.yaml"
    result = runner.invoke(CLI, [*INIT, "--path", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == starter_text()
    result = runner.invoke(CLI, [*VALIDATE, str(target)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "OK: 2 systems, 8 posting rules"


def test_init_default_path_and_refusal_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(CLI, INIT).exit_code == 0
    target = tmp_path / "ledgerbridge.yaml"
    target.write_text("# my edited config\n")
    result = runner.invoke(CLI, INIT)
    assert result.exit_code == 1
    assert "already exists" in result.output and "--force" in result.output
    assert target.read_text() == "# my edited config\n"  # untouched
    result = runner.invoke(CLI, [*INIT, "--force"])
    assert result.exit_code == 0
    assert target.read_text() == starter_text()


def test_starter_is_commented() -> None:
    text = starter_text()
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert len(comments) > 40
    for key in ("late_item", "fx_rate_date", "retry", "posting_failure_mode", "application_version"):
        assert key in text


def test_validate_prints_each_issue_with_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "systems:\n"
        "  erp_us:\n"
        "    connector: netsuite\n"
        "    role: erp\n"
        "    limits: {concurrency: 0}\n"
        "routing:\n"
        "  default: {ledger: erp_us}\n"
    )
    result = runner.invoke(CLI, [*VALIDATE, str(bad)])
    assert result.exit_code == 1
    assert "systems.erp_us.limits.concurrency (line 5): Input should be greater than or equal to 1" in result.output
    bad.write_text("routing:\n  default: {ledger: erp_us}\n")
    result = runner.invoke(CLI, [*VALIDATE, str(bad)])
    assert result.exit_code == 1
    assert "routing.default.ledger (line 2): unknown system 'erp_us'" in result.output


def test_validate_check_secrets_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LB_TEST_NOT_SET", raising=False)
    conf = tmp_path / "c.yaml"
    conf.write_text("systems:\n  crm:\n    connector: salesforce\n    role: crm\n"
                    "    secrets: {client_secret: '${env:LB_TEST_NOT_SET}'}\n")
    assert runner.invoke(CLI, [*VALIDATE, str(conf)]).exit_code == 0
    result = runner.invoke(CLI, [*VALIDATE, "--check-secrets", str(conf)])
    assert result.exit_code == 1
    expected = "systems.crm.secrets.client_secret (line 5): environment variable LB_TEST_NOT_SET is not set"
    assert expected in result.output


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(CLI, [*VALIDATE, str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "file not found" in result.output
