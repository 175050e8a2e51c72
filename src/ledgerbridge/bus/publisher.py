"""Publishing source records to JetStream with ``Nats-Msg-Id`` = the inbox idempotency key."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nats

from ledgerbridge.bus.loop import LoopThread
from ledgerbridge.bus.messages import encode_record
from ledgerbridge.config.schema import BusConfig


@dataclass
class PublishResult:
    received: int = 0
    new: int = 0
    duplicates: int = 0  # dropped by JetStream's duplicate window (same Nats-Msg-Id)


async def publish_records(js: Any, cfg: BusConfig, system: str, records: Iterable[dict[str, Any]], *,
                          in_flight: int = 1000, timeout: float = 30.0) -> PublishResult:
    """Publish every record (asynchronously, at most ``in_flight`` unacknowledged) and wait for all acks.

    Returns only once JetStream has stored (or de-duplicated) every record: a record counted here is durable."""
    res = PublishResult()
    pending: list[asyncio.Future[Any]] = []

    async def settle(futs: list[asyncio.Future[Any]]) -> None:
        for ack in await asyncio.wait_for(asyncio.gather(*futs), timeout):
            if ack.duplicate:
                res.duplicates += 1
            else:
                res.new += 1

    for rec in records:
        subject, data, headers = encode_record(cfg.subject_prefix, system, rec)
        pending.append(await js.publish_async(subject, data, headers=headers, stream=cfg.stream))
        res.received += 1
        if len(pending) >= in_flight:
            await settle(pending)
            pending = []
    if pending:
        await settle(pending)
    return res


class BusPublisher:
    """A synchronous publisher holding one NATS connection (on its own loop thread). Thread-safe."""

    def __init__(self, cfg: BusConfig, *, connect_timeout: float = 5.0) -> None:
        self.cfg = cfg
        self._loop = LoopThread("ledgerbridge-bus-publisher")
        try:
            self._nc = self._loop.run(nats.connect(cfg.url, connect_timeout=connect_timeout, max_reconnect_attempts=3,
                                                   allow_reconnect=True), timeout=connect_timeout + 5)
        except Exception as err:
            self._loop.stop()
            raise ConnectionError(f"bus.url {cfg.url}: cannot connect to NATS ({err}) — check that nats-server runs "
                                  "with JetStream (-js) and the URL") from err
        self._js = self._nc.jetstream()

    def publish(self, system: str, records: Iterable[dict[str, Any]], *, timeout: float = 60.0) -> PublishResult:
        return self._loop.run(publish_records(self._js, self.cfg, system, records), timeout=timeout)

    def close(self) -> None:
        try:
            self._loop.run(self._nc.drain(), timeout=10)
        finally:
            self._loop.stop()

    def __enter__(self) -> BusPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[tuple[str, str], BusPublisher] = {}
_shared_lock = threading.Lock()


def shared_publisher(cfg: BusConfig) -> BusPublisher:
    """One long-lived publisher per (url, stream) in this process (what :func:`flows.intake.accept` uses)."""
    key = (cfg.url, cfg.stream)
    with _shared_lock:
        pub = _shared.get(key)
        if pub is None or pub._nc.is_closed:
            pub = _shared[key] = BusPublisher(cfg)
        return pub
