"""The config feeds the durable runtime: RuntimeSettings, one QueueSpec per system, RetryPolicy per type."""

from __future__ import annotations

import textwrap

import pytest

from ledgerbridge.config import default_config, load_config_text

runtime_settings = pytest.importorskip("ledgerbridge.runtime.settings")


def test_runtime_settings_from_starter_use_the_runtime_pinned_version() -> None:
    settings = default_config().runtime.to_runtime()
    assert isinstance(settings, runtime_settings.RuntimeSettings)
    assert settings.system_database_url == "sqlite:///.ledgerbridge/dbos.sqlite"
    assert settings.application_version == runtime_settings.DEFAULT_APPLICATION_VERSION
    assert settings.executor_id == "local"
    assert settings.queue_polling_interval_sec == 1.0


def test_queue_polling_interval_is_configurable() -> None:
    cfg = load_config_text("version: 1\nruntime: {queue_polling_interval_seconds: 0.05}\n")
    assert cfg.runtime.to_runtime().queue_polling_interval_sec == 0.05
    with pytest.raises(Exception, match="queue_polling_interval_seconds"):
        load_config_text("version: 1\nruntime: {queue_polling_interval_seconds: 0}\n")


def test_pinned_version_secret_url_queues_and_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_TEST_DBOS_PW", "pw-123")
    cfg = load_config_text(textwrap.dedent("""\
    runtime:
      system_database_url: postgresql://dbos:${env:LB_TEST_DBOS_PW}@127.0.0.1:5432/dbos
      application_version: "2026.11-a"
      executor_id: worker-2
      log_level: debug
    systems:
      erp_us:
        connector: netsuite
        role: erp
        limits: {concurrency: 4, rate: {limit: 10, period_seconds: 1, headroom: 0.9}}
    policies:
      retry:
        default: {max_attempts: 3, interval_seconds: 0.5, backoff_rate: 3, max_interval_seconds: 20}
    """))
    settings = cfg.runtime.to_runtime()
    assert settings.system_database_url == "postgresql://dbos:pw-123@127.0.0.1:5432/dbos"
    assert "pw-123" not in repr(cfg)
    assert (settings.application_version, settings.executor_id, settings.log_level) == ("2026.11-a", "worker-2",
                                                                                          "DEBUG")
    spec = cfg.queue_specs()["erp_us"]
    assert (spec.name, spec.concurrency, spec.rate_limit, spec.period_seconds) == ("erp_us", 4, 10, 1.0)
    assert spec.effective_rate_limit == 9 == cfg.systems["erp_us"].limits.rate.effective_limit  # type: ignore[union-attr]
    retry = cfg.policies.retry.for_type("invoice").to_runtime()
    assert [retry.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]
    assert retry.backoff(5) == 20.0
