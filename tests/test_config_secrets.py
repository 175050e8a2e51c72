"""Secret references: never a clear value in the file, in repr/str/dumps/logs; resolved only by ``reveal()``."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from ledgerbridge.config import (
    LedgerbridgeConfig,
    SecretRef,
    SecretResolutionError,
    load_config,
    validate_file,
    validate_text,
)

CLEAR = "s3cr3t-Value-42"  # the clear value; must never show up anywhere but reveal()

CONFIG = """\
store:
  url: postgresql+psycopg://app:${env:LB_TEST_PGPASSWORD}@127.0.0.1/ledger
systems:
  erp_us:
    connector: netsuite
    role: erp
    options: {account_id: "1234567", token_url: https://example.invalid/token}
    secrets:
      consumer_key: ${env:LB_TEST_CONSUMER_KEY}
      token_secret: ${file:secrets/token_secret}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token_secret").write_text(CLEAR + "-file\n")
    monkeypatch.setenv("LB_TEST_CONSUMER_KEY", CLEAR + "-env")
    monkeypatch.setenv("LB_TEST_PGPASSWORD", CLEAR + "-pg")
    path = tmp_path / "ledgerbridge.yaml"
    path.write_text(CONFIG)
    return path


def test_env_and_file_references_resolve(config_file: Path) -> None:
    cfg = load_config(config_file)
    erp = cfg.systems["erp_us"]
    assert erp.secret("consumer_key") == CLEAR + "-env"
    # relative to the config file's directory, one trailing newline dropped
    assert erp.secrets["token_secret"].reveal() == CLEAR + "-file"
    assert cfg.store.reveal_url() == f"postgresql+psycopg://app:{CLEAR}-pg@127.0.0.1/ledger"
    assert validate_file(config_file, check_secrets=True) == []


def test_secrets_never_appear_in_repr_str_dumps_or_logs(
    config_file: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(config_file)
    erp = cfg.systems["erp_us"]
    erp.secret("consumer_key")  # revealing once caches nothing on the object
    cfg.store.reveal_url()
    shown = [
        repr(cfg), str(cfg), repr(erp.secrets), str(erp.secrets["consumer_key"]), cfg.model_dump_json(),
        str(cfg.model_dump()), str(cfg.model_dump(mode="json")), repr(cfg.store), f"{erp.secrets['token_secret']}",
    ]
    logging.getLogger("ledgerbridge.test").warning("config loaded: %r %s", cfg, erp.secrets)
    structlog.get_logger("ledgerbridge.test").info("config", config=cfg, secrets=erp.secrets)
    shown += [caplog.text, capsys.readouterr().out]
    for text in shown:
        assert CLEAR not in text
    dumped = cfg.model_dump(mode="json")
    assert dumped["systems"]["erp_us"]["secrets"] == {
        "consumer_key": "${env:LB_TEST_CONSUMER_KEY}", "token_secret": "${file:secrets/token_secret}",
    }
    assert "${env:LB_TEST_PGPASSWORD}" in dumped["store"]["url"]
    assert repr(erp.secrets["consumer_key"]) == "SecretRef('${env:LB_TEST_CONSUMER_KEY}')"


def test_dump_round_trips_as_references(config_file: Path) -> None:
    cfg = load_config(config_file)
    again = LedgerbridgeConfig.model_validate_json(cfg.model_dump_json())
    assert again.systems["erp_us"].secrets == cfg.systems["erp_us"].secrets


@pytest.mark.parametrize(
    ("secrets_yaml", "needle"),
    [
        (f"consumer_key: {CLEAR}", "plain secret values are refused"),
        (f"consumer_key: prefix-${{env:X}}-{CLEAR}", "exactly one reference"),
        ("consumer_key: ${vault:kv/erp}", "unknown secret source 'vault'"),
        ("consumer_key: ${env:1BAD}", "environment variable names"),
        ("consumer_key: 12345", "must be a reference string"),
    ],
)
def test_literal_or_malformed_secret_is_refused_without_echoing_it(secrets_yaml: str, needle: str) -> None:
    text = textwrap.dedent(f"""\
    systems:
      erp_us:
        connector: netsuite
        role: erp
        secrets:
          {secrets_yaml}
    """)
    (issue,) = validate_text(text)
    assert issue.path == "systems.erp_us.secrets.consumer_key" and issue.line == 6
    assert needle in issue.message
    assert CLEAR not in issue.message
    with pytest.raises(ValidationError) as info:
        LedgerbridgeConfig.model_validate(
            {"systems": {"erp_us": {"connector": "netsuite", "role": "erp",
                                    "secrets": {"consumer_key": secrets_yaml.split(": ", 1)[1]}}}}
        )
    assert CLEAR not in str(info.value)


def test_plain_password_in_url_and_credential_like_option_are_refused() -> None:
    text = textwrap.dedent(f"""\
    store:
      url: postgresql://app:{CLEAR}@db/ledger
    """)
    (issue,) = validate_text(text)
    assert issue.path == "store.url" and issue.line == 2 and CLEAR not in issue.message
    assert "${env:PGPASSWORD}" in issue.message
    text = textwrap.dedent(f"""\
    systems:
      erp_us:
        connector: netsuite
        role: erp
        options:
          token_url: https://example.invalid/token
          api_key: {CLEAR}
    """)
    (issue,) = validate_text(text)
    assert issue.path == "systems.erp_us.options.api_key" and issue.line == 7
    assert "move it under systems.erp_us.secrets" in issue.message and CLEAR not in issue.message


def test_unresolvable_references_name_the_key_path(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LB_TEST_CONSUMER_KEY")
    (config_file.parent / "secrets" / "token_secret").unlink()
    cfg = load_config(config_file)  # loading never resolves
    with pytest.raises(SecretResolutionError, match=r"^systems\.erp_us\.secrets\.consumer_key: environment variable "
                                                    r"LB_TEST_CONSUMER_KEY is not set"):
        cfg.systems["erp_us"].secret("consumer_key")
    with pytest.raises(SecretResolutionError, match=r"^systems\.erp_us\.secrets\.token_secret: secret file .* does "
                                                    r"not exist"):
        cfg.systems["erp_us"].secrets["token_secret"].reveal()
    issues = {i.path: i for i in validate_file(config_file, check_secrets=True)}
    assert set(issues) == {"systems.erp_us.secrets.consumer_key", "systems.erp_us.secrets.token_secret"}
    assert issues["systems.erp_us.secrets.consumer_key"].line == 9
    assert validate_file(config_file) == []  # without --check-secrets the file itself is fine


def test_empty_secret_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_TEST_EMPTY", "")
    with pytest.raises(SecretResolutionError, match="is empty"):
        SecretRef("${env:LB_TEST_EMPTY}").reveal()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretResolutionError, match="is empty"):
        SecretRef(f"${{file:{tmp_path / 'empty'}}}").reveal()
