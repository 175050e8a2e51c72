"""Create or update the ingest stream and its durable pull consumer (``ledgerbridge bus setup``); idempotent."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ledgerbridge.config.schema import BusConfig


def stream_config(cfg: BusConfig) -> StreamConfig:
    return StreamConfig(
        name=cfg.stream, subjects=[f"{cfg.subject_prefix}.>"], duplicate_window=float(cfg.duplicate_window_seconds),
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        max_bytes=cfg.max_bytes if cfg.max_bytes is not None else -1,
    )


def consumer_config(cfg: BusConfig) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=cfg.consumer, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        max_deliver=cfg.max_deliver, ack_wait=float(cfg.ack_wait_seconds), filter_subject=f"{cfg.subject_prefix}.>",
        max_ack_pending=max(1000, cfg.fetch_batch * 4),
    )


async def ensure(js: Any, cfg: BusConfig) -> dict[str, Any]:
    """The stream and consumer exist with this configuration afterwards; says what it did."""
    sc = stream_config(cfg)
    try:
        await js.stream_info(cfg.stream)
        await js.update_stream(sc)
        stream_action = "updated"
    except NotFoundError:
        await js.add_stream(sc)
        stream_action = "created"
    cc = consumer_config(cfg)
    try:
        await js.consumer_info(cfg.stream, cfg.consumer)
        consumer_action = "exists"
    except NotFoundError:
        consumer_action = "created"
    # add_consumer with the same durable name updates the mutable fields (max_deliver, ack_wait...) on 2.9+
    await js.add_consumer(cfg.stream, cc)
    if consumer_action == "exists":
        consumer_action = "updated"
    info = await js.stream_info(cfg.stream)
    return {"stream": cfg.stream, "stream_action": stream_action, "subjects": list(info.config.subjects or []),
            "duplicate_window_seconds": info.config.duplicate_window, "messages": info.state.messages,
            "consumer": cfg.consumer, "consumer_action": consumer_action, "max_deliver": cfg.max_deliver,
            "ack_wait_seconds": cfg.ack_wait_seconds}


async def teardown(js: Any, cfg: BusConfig) -> None:
    """Delete the stream (and with it its consumers). For tests and decommissioning."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(cfg.stream)
