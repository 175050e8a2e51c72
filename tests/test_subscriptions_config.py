"""Subscriptions and schedules in the configuration file: a good file validates; unknown event types, action kinds,
bad crons, time zones and systems are refused naming the key, the rule and the fix; the CLI drives schedules and a
backfill on a real runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgerbridge.cli import app
from ledgerbridge.config import default_config
from ledgerbridge.config.loader import ConfigError, load_config_text, starter_text

from flows_support import tiny_firm

GOOD = """
subscriptions:
  - name: onboard
    event: project.approved
    key: project.id
    mode: parallel
    actions:
      - {name: erp, kind: create_erp_project, compensate: {kind: remove_erp_project}}
      - {name: hook, kind: webhook, options: {url: "http://127.0.0.1:9/x"}, retry: {max_attempts: 2}}
schedules:
  - {name: nightly, flow: ingest, cron: "0 2 * * *", overlap: queue, options: {system: psa_files}}
"""


def _text(extra: str) -> str:
    return starter_text() + extra


def test_a_good_file_validates() -> None:
    cfg = load_config_text(_text(GOOD))
    assert cfg.subscriptions[0].mode == "parallel" and cfg.subscriptions[0].actions[1].retry.max_attempts == 2
    assert cfg.schedules[0].overlap == "queue"
    assert default_config().subscriptions == [] and default_config().schedules == []


@pytest.mark.parametrize(("bad", "expected"), [
    (GOOD.replace("project.approved", "project.exploded"), "subscriptions[0].event: unknown event type"),
    (GOOD.replace("kind: webhook", "kind: carrier_pigeon"), "subscriptions[0].actions[1].kind: unknown action kind"),
    (GOOD.replace("kind: remove_erp_project", "kind: undo_all"),
     "subscriptions[0].actions[0].compensate.kind: unknown action kind"),
    (GOOD.replace("name: hook", "name: erp"), "action name 'erp' repeated"),
    (GOOD.replace("0 2 * * *", "every night"), "schedules[0].cron: 'every night' is not a cron expression"),
    (GOOD.replace("system: psa_files", "system: nowhere"), "schedules[0].options.system: unknown system 'nowhere'"),
    (GOOD.replace("overlap: queue", "overlap: sometimes"), "schedules[0].overlap: Input should be 'skip' or 'queue'"),
    (GOOD.replace("flow: ingest", "flow: everything"), "schedules[0].flow: Input should be"),
    (GOOD.replace("mode: parallel", "mode: whenever"),
     "subscriptions[0].mode: Input should be 'ordered' or 'parallel'"),
])
def test_bad_entries_are_refused_naming_the_key(bad: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(_text(bad))
    text = "\n".join(f"{i.path}: {i.message}" for i in err.value.issues)
    assert expected in text, text


def test_schedules_and_backfill_cli_on_a_real_runtime(tmp_path: Path) -> None:
    cfg_path = tmp_path / "ledgerbridge.yaml"
    text = _text(GOOD.replace('"0 2 * * *"', '"0 3 1 * *"').replace("flow: ingest", "flow: post")
                 .replace("options: {system: psa_files}", "options: {entities: []}"))
    text = text.replace("sqlite:///.ledgerbridge/", f"sqlite:///{tmp_path}/")
    export = tiny_firm(tmp_path / "firm", employees=2, months=1)
    text = text.replace("directory: .ledgerbridge/psa-export", f"directory: {export}")
    cfg_path.write_text(text)
    runner = CliRunner()

    def run(*args: str) -> dict:  # type: ignore[type-arg]
        res = runner.invoke(app, [*args, "--config", str(cfg_path), "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    applied = run("schedules", "apply")
    assert [r["name"] for r in applied] == ["nightly"] and applied[0]["status"] == "ACTIVE"
    assert run("schedules", "pause", "nightly")["status"] == "PAUSED"
    assert run("schedules", "list")[0]["status"] == "PAUSED"
    tick = run("schedules", "trigger", "nightly")["tick"]
    assert tick["enqueued"].startswith("window:nightly:")
    first = run("backfill", "--flow", "post", "--from", "2026-09-01", "--to", "2026-10-01", "--schedule", "nightly")
    assert (first["started"], first["already_done"], first["succeeded"]) == (1, 0, 1)
    again = run("backfill", "--flow", "post", "--from", "2026-09-01", "--to", "2026-10-01", "--schedule", "nightly")
    assert (again["started"], again["already_done"], again["live_cursors_moved"]) == (0, 1, False)
    res = runner.invoke(app, ["schedules", "pause", "nope", "--config", str(cfg_path)])
    assert res.exit_code != 0 and "no schedule named 'nope'" in res.output
