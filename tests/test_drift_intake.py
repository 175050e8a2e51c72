"""Vendor payload drift at intake, on a generated firm and a real embedded store: snapshot round trip, a new field
logged, a retyped / missing / renamed used field pausing the stream with its items held in the operational
dead-letter queue, resume replaying them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from ledgerbridge.cli import app
from ledgerbridge.flows import drift
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.intake import accept
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import audit, cursors, dead_letters
from ledgerbridge.store.schema import inbox

from flows_support import make_ctx, records, tiny_firm


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"))


@pytest.fixture
def ctx(tmp_path: Path, export: Path) -> FlowContext:
    return make_ctx(tmp_path / "w", export_from=export)


@pytest.fixture
def recs(ctx: FlowContext) -> list[dict[str, Any]]:
    out = [r for r in records(ctx) if r["entity"] == "time_entry"]
    assert len(out) > 60
    return out


def _inbox_ids(ctx: FlowContext) -> set[str]:
    """Item versions in the inbox, as ``id@version``."""
    with ctx.engine.connect() as conn:
        return {f"{i}@{v}" for i, v in conn.execute(sa.select(inbox.c.external_id, inbox.c.version))}


def _key(r: dict[str, Any]) -> str:
    return f"{r['external_id']}@{r['version']}"


def _held(ctx: FlowContext) -> list[dead_letters.DeadLetter]:
    with ctx.engine.connect() as conn:
        return dead_letters.list_letters(conn, flow="drift")


def _snapshotted(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    accept(ctx, SOURCE, recs[:40])
    snaps = drift.take_snapshot(ctx, SOURCE)
    assert set(snaps) == {"time_entry"} and snaps["time_entry"]["samples"] == 40


def test_snapshot_round_trip(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    _snapshotted(ctx, recs)
    with ctx.engine.connect() as conn:
        shapes, paused, _new = drift.load_snapshots(conn, SOURCE)
    snap = shapes["time_entry"]
    assert snap == drift.build_snapshot([r["payload"] for r in reversed(recs[:40])], at=None) | {
        "taken_at": snap["taken_at"]}
    assert snap["fields"]["hours"] == {"types": ["string"], "seen": 40}  # Decimal travels as text
    assert snap["fields"]["version"]["types"] == ["integer"] and not paused
    # a payload of the same shape passes untouched, and a stream without a snapshot is not checked at all
    res = drift.check(ctx, SOURCE, "time_entry", recs[50]["payload"])
    assert res.checked and res.ok and not res.new_fields
    assert not drift.check(ctx, SOURCE, "expense", {"anything": 1}).checked
    [view] = drift.show(ctx)
    assert (view.entity, view.fields, view.samples, view.paused) == ("time_entry", len(snap["fields"]), 40, False)


def test_new_unknown_field_is_logged_and_the_record_enters(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    _snapshotted(ctx, recs)
    rec = copy.deepcopy(recs[45])
    rec["payload"]["billing_code"] = "X1"
    res = accept(ctx, SOURCE, [rec])
    assert res.new == 1 and _key(rec) in _inbox_ids(ctx)
    with ctx.engine.connect() as conn:
        assert set(cursors.get_cursor(conn, SOURCE, "drift:new:time_entry")) == {"billing_code"}
    [view] = drift.show(ctx)
    assert view.new_fields == ["billing_code"] and not view.paused and not _held(ctx)


def test_retyped_used_field_pauses_the_stream_and_holds_its_items(ctx: FlowContext,
                                                                  recs: list[dict[str, Any]]) -> None:
    _snapshotted(ctx, recs)
    batch = [copy.deepcopy(r) for r in recs[40:50]]
    batch[3]["payload"]["hours"] = 7.5  # the vendor now sends a JSON number where text was
    before = _inbox_ids(ctx)
    accept(ctx, SOURCE, batch)
    entered = _inbox_ids(ctx) - before
    assert entered == {_key(r) for r in batch[:3]}  # items before the drift went on
    held = _held(ctx)
    assert {lt.item_key for lt in held} == {_key(r) for r in batch[3:]}
    assert all(lt.queue == "operational" for lt in held)
    first = next(lt for lt in held if lt.item_key == _key(batch[3]))
    assert first.error_code == "drift.field_retyped"
    assert "field 'hours'" in first.error_text and "from string to number" in first.error_text
    assert first.payload["record"]["payload"]["hours"] == 7.5  # kept as received, not guessed at
    assert {lt.error_code for lt in held if lt is not first} == {"drift.stream_paused"}
    # later records of the paused stream wait too, even with the right shape
    accept(ctx, SOURCE, [recs[55]])
    assert _key(recs[55]) not in _inbox_ids(ctx)
    [view] = drift.show(ctx)
    assert view.paused and "field 'hours'" in (view.reason or "") and view.held == len(batch) - 3 + 1
    with ctx.engine.connect() as conn:
        assert [e.action for e in audit.entries(conn) if e.action.startswith("drift.")] == [
            "drift.snapshot", "drift.paused"]


def test_missing_and_renamed_used_fields_pause(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    _snapshotted(ctx, recs)
    gone = copy.deepcopy(recs[41])
    del gone["payload"]["project_id"]
    res = drift.compare(SOURCE, "time_entry", _shape(ctx), gone["payload"], drift.used_fields(ctx, SOURCE,
                                                                                               "time_entry"))
    assert res.missing == ["project_id"] and res.code == "drift.field_missing" and "'project_id'" in res.message
    renamed = copy.deepcopy(recs[42])
    renamed["payload"]["projectId"] = renamed["payload"].pop("project_id")
    res = drift.compare(SOURCE, "time_entry", _shape(ctx), renamed["payload"], {"project_id"})
    assert res.renamed == {"project_id": "projectId"} and res.code == "drift.field_renamed"
    assert "looks renamed" in res.message
    accept(ctx, SOURCE, [renamed])
    [letter] = _held(ctx)
    assert letter.error_code == "drift.field_renamed" and letter.payload["drift"]["renamed"] == {
        "project_id": "projectId"}


def test_unused_field_missing_does_not_pause(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    sample = [dict(r["payload"], vendor_note="n") for r in recs[:20]]
    drift.take_snapshot(ctx, SOURCE, payloads={"time_entry": sample})
    accept(ctx, SOURCE, recs[20:25])  # vendor_note is gone, but no mapping reads it
    assert not _held(ctx) and {_key(r) for r in recs[20:25]} <= _inbox_ids(ctx)


def test_resume_after_a_new_snapshot_replays_the_held_items(ctx: FlowContext, recs: list[dict[str, Any]]) -> None:
    _snapshotted(ctx, recs)
    batch = [copy.deepcopy(r) for r in recs[40:46]]
    for r in batch:
        r["payload"]["hours"] = float(r["payload"]["hours"])
    accept(ctx, SOURCE, batch)
    assert len(_held(ctx)) == len(batch)
    res = drift.resume(ctx, SOURCE, "time_entry")  # nothing fixed: they are held again
    assert res.replayed == 0 and res.held_again == len(batch) and drift.show(ctx)[0].paused
    # the operator accepts the new shape (number where text was), then resumes
    drift.take_snapshot(ctx, SOURCE, payloads={"time_entry": [r["payload"] for r in batch]})
    res = drift.resume(ctx, SOURCE, "time_entry", actor="ops")
    assert res.replayed == len(batch) and res.held_again == 0
    assert {_key(r) for r in batch} <= _inbox_ids(ctx) and not _held(ctx)
    assert not drift.show(ctx)[0].paused


def test_drift_cli_snapshot_and_show(ctx: FlowContext, recs: list[dict[str, Any]], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    accept(ctx, SOURCE, recs[:30])
    cfg_path = tmp_path / "w" / "ledgerbridge.yaml"
    cfg_path.write_text(yaml.safe_dump(ctx.config.model_dump(mode="json", exclude_none=True)))
    monkeypatch.chdir(tmp_path / "w")
    runner = CliRunner()
    out = runner.invoke(app, ["drift", "snapshot", SOURCE, "--sample", "25", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    assert "time_entry" in out.output and "25 payload(s)" in out.output
    out = runner.invoke(app, ["drift", "show", "--json", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert row["entity"] == "time_entry" and row["samples"] == 25 and row["paused"] is False


def _shape(ctx: FlowContext) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        return drift.load_snapshots(conn, SOURCE)[0]["time_entry"]
