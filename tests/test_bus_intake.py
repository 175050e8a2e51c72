"""JetStream ingest against the real NATS server: ``bus setup`` is idempotent; the same event published three
times is one stored message, one inbox row and one effect (also when it comes back after the duplicate window);
an unparseable message and a record that can never be landed become operational dead letters and stop looping,
while the good records of the same batch land."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa

from distributed_support import NATS_HOST, NATS_PORT, fresh_database
from ledgerbridge.bus import setup as bus_setup
from ledgerbridge.bus.consumer import InboxConsumer
from ledgerbridge.bus.messages import encode_record
from ledgerbridge.bus.publisher import BusPublisher
from ledgerbridge.config.schema import BusConfig
from ledgerbridge.flows import intake, transactions
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.store import dead_letters, inbox
from ledgerbridge.store.schema import staging_lines

from conftest import requires_service
from flows_support import make_ctx, records, tiny_firm


def _js(cfg: BusConfig, fn: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        nc = await nats.connect(cfg.url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.drain()

    return asyncio.run(go())


@pytest.fixture
def bus_cfg() -> Iterator[BusConfig]:
    """A stream and consumer of their own for this test (deleted afterwards)."""
    requires_service(NATS_HOST, NATS_PORT, "NATS (JetStream)")
    tag = uuid.uuid4().hex[:8]
    cfg = BusConfig(url=f"nats://{NATS_HOST}:{NATS_PORT}", stream=f"LB_TEST_{tag}", subject_prefix=f"lbt{tag}.in",
                    consumer=f"c{tag}", duplicate_window_seconds=1, max_deliver=2, ack_wait_seconds=2,
                    storage="memory", fetch_batch=100)
    _js(cfg, lambda js: bus_setup.ensure(js, cfg))
    yield cfg
    _js(cfg, lambda js: bus_setup.teardown(js, cfg))


def _drain(consumer: InboxConsumer, messages: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while consumer.totals.messages < messages:
        assert time.monotonic() < deadline, f"consumer saw {consumer.totals} (wanted {messages} messages); " \
                                            f"error: {consumer.error}"
        time.sleep(0.05)


def test_setup_is_idempotent_and_applies_the_configuration(bus_cfg: BusConfig) -> None:
    again = _js(bus_cfg, lambda js: bus_setup.ensure(js, bus_cfg))
    assert again["stream_action"] == "updated" and again["consumer_action"] == "updated"
    assert again["subjects"] == [f"{bus_cfg.subject_prefix}.>"]
    assert again["duplicate_window_seconds"] == 1
    info = _js(bus_cfg, lambda js: js.consumer_info(bus_cfg.stream, bus_cfg.consumer))
    assert info.config.max_deliver == 2 and info.config.ack_wait == 2 and info.config.durable_name == bus_cfg.consumer


def test_same_event_three_times_is_one_inbox_row_and_one_effect(tmp_path: Path, bus_cfg: BusConfig) -> None:
    export = tiny_firm(tmp_path / "firm")
    ctx = make_ctx(tmp_path / "wd", export_from=export)
    ctx.config = ctx.config.model_copy(update={"bus": bus_cfg})
    rec = next(r for r in records(ctx) if r["entity"] == "time_entry" and r["payload"]["approval_status"] == "approved")
    key = intake.record_key(SOURCE, rec)

    results = [intake.accept(ctx, SOURCE, [rec]) for _ in range(3)]
    assert [(r.channel, r.new, r.duplicates) for r in results] == [("jetstream", 1, 0)] + [("jetstream", 0, 1)] * 2
    info = _js(bus_cfg, lambda js: js.stream_info(bus_cfg.stream))
    assert info.state.messages == 1, "JetStream's duplicate window should have kept one message"

    consumer = InboxConsumer(ctx, bus_cfg, fetch_timeout=0.2)
    consumer.start()
    try:
        _drain(consumer, 1)
        first = transactions.process_pending(ctx)
        # past the duplicate window JetStream stores the event again; the inbox key still drops it
        time.sleep(1.2)
        assert intake.accept(ctx, SOURCE, [rec]).new == 1
        _drain(consumer, 2)
    finally:
        consumer.stop()
    second = transactions.process_pending(ctx)
    assert consumer.error is None
    assert (consumer.totals.new, consumer.totals.duplicates) == (1, 1)
    with ctx.engine.connect() as conn:
        rows = inbox.get_many(conn, [key])
        assert list(rows) == [key]
        staged = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.source_id == rec["external_id"])).scalar_one()
    assert first.posted == 1 and staged > 0, "the event should have had its effect once"
    assert second.rows == 0 and second.posted == 0, "the repeat must have no second effect"
    info = _js(bus_cfg, lambda js: js.consumer_info(bus_cfg.stream, bus_cfg.consumer))
    assert info.num_ack_pending == 0 and info.num_pending == 0


def test_bad_and_unlandable_messages_become_dead_letters_and_stop(tmp_path: Path, bus_cfg: BusConfig) -> None:
    """On PostgreSQL a payload holding a NUL character cannot be stored (JSONB refuses it): that record can never
    land. It is retried until max_deliver, then dead-lettered; the good record of the same batch lands at once."""
    tiny_firm(tmp_path)
    with fresh_database("lb_bus") as url:
        cfg = demo_config(tmp_path)
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": url}), "bus": bus_cfg})
        ctx = FlowContext(cfg, workdir=tmp_path)
        ctx.migrate()
        good = {"entity": "time_entry", "external_id": "T-good", "version": 1, "payload": {"note": "ok"}}
        poison = {"entity": "time_entry", "external_id": "T-nul", "version": 1, "payload": {"note": "a\x00b"}}

        async def publish(js: Any) -> None:
            await js.publish(f"{bus_cfg.subject_prefix}.{SOURCE}.time_entry", b"{not json", stream=bus_cfg.stream)
            for rec in (poison, good):
                subject, data, headers = encode_record(bus_cfg.subject_prefix, SOURCE, rec)
                await js.publish(subject, data, headers=headers, stream=bus_cfg.stream)

        _js(bus_cfg, publish)
        consumer = InboxConsumer(ctx, bus_cfg, fetch_timeout=0.2)
        consumer.start()
        try:
            _drain(consumer, 4)  # bad once, poison twice (max_deliver=2), good once
            time.sleep(bus_cfg.ack_wait_seconds + 1)  # nothing may come back after the ack wait
        finally:
            consumer.stop()
        assert consumer.totals.messages == 4, consumer.totals
        with ctx.engine.connect() as conn:
            letters = {dl.error_code: dl for dl in dead_letters.list_letters(conn)}
            assert set(inbox.get_many(conn, [f"{SOURCE}:time_entry:T-good:1"])) == {f"{SOURCE}:time_entry:T-good:1"}
            assert not inbox.get_many(conn, [f"{SOURCE}:time_entry:T-nul:1"])
        assert set(letters) == {"bus.bad_message", "bus.max_deliver"}
        assert all(dl.queue == "operational" for dl in letters.values())
        assert "not JSON" in letters["bus.bad_message"].error_text
        nul = letters["bus.max_deliver"]
        assert nul.item_key == f"{SOURCE}:time_entry:T-nul:1" and nul.payload["deliveries"] == 2
        assert "\\u0000" in nul.payload["body"]
        info = _js(bus_cfg, lambda js: js.consumer_info(bus_cfg.stream, bus_cfg.consumer))
        assert info.num_ack_pending == 0 and info.num_pending == 0


def test_publisher_refuses_a_record_without_identity(bus_cfg: BusConfig) -> None:
    with BusPublisher(bus_cfg) as pub, pytest.raises(ValueError, match=r"missing \['version'\]"):
        pub.publish(SOURCE, [{"entity": "time_entry", "external_id": "X", "payload": {}}])


def test_bus_cli_setup_and_status(tmp_path: Path, bus_cfg: BusConfig) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from ledgerbridge.cli import app

    tiny_firm(tmp_path)
    data = demo_config(tmp_path).model_dump(mode="json", exclude_none=True)
    data["bus"] = bus_cfg.model_dump(mode="json", exclude_none=True)
    path = tmp_path / "ledgerbridge.yaml"
    path.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    res = runner.invoke(app, ["bus", "setup", "--config", str(path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["stream"], out["stream_action"], out["consumer"]) == (bus_cfg.stream, "updated", bus_cfg.consumer)
    res = runner.invoke(app, ["bus", "status", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["messages"] == 0
    del data["bus"]
    path.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["bus", "setup", "--config", str(path)])
    assert res.exit_code == 2 and "no `bus` section" in res.output
