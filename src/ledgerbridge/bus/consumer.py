"""The durable pull consumer that feeds the inbox: fetch a batch, land it in ONE transaction, ack after commit.

Per batch:

1. every message is decoded; one that cannot be (not JSON, wrong shape, subject and body disagree) becomes an
   *operational* dead letter with its raw body and is terminated (``term``: never redelivered);
2. the decoded records go into the inbox in one transaction (``ON CONFLICT (idempotency_key) DO NOTHING``: a
   version delivered twice — redelivery after a crash before the ack, or published again outside JetStream's
   duplicate window — is one inbox row), together with the dead letters of step 1;
3. only after that commit are the messages acked. A crash before the ack means redelivery, which step 2 absorbs.

If the batch transaction fails, its records are retried one by one so one bad record cannot hold the others back;
a record that still fails is nak'ed (redelivered later) until its delivery count reaches ``max_deliver``, then it
becomes an operational dead letter and is terminated. Dead letters are keyed by the idempotency key, so filing
the same one twice (the server may redeliver a terminated message) keeps one open letter.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeoutError

from ledgerbridge.bus.messages import BusMessageError, Decoded, decode_record
from ledgerbridge.config.schema import BusConfig
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store import dead_letters, inbox
from ledgerbridge.store.dead_letters import NewDeadLetter

log = logging.getLogger("ledgerbridge.bus")
FLOW = "bus_intake"


@dataclass
class LandReport:
    messages: int = 0
    new: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0
    last_seq: int = 0


def _letter(msg: Any, code: str, text: str, kind: str, key: str | None = None) -> NewDeadLetter:
    parts = msg.subject.split(".")
    system, entity = (parts[-2], parts[-1]) if len(parts) >= 2 else ("?", "?")
    seq = msg.metadata.sequence.stream
    # NUL cannot be stored in PostgreSQL JSONB: keep it visible as the text \u0000
    raw = msg.data.decode("utf-8", errors="replace").replace("\x00", "\\u0000")
    headers = {k: v.replace("\x00", "") for k, v in (msg.headers or {}).items()}
    return NewDeadLetter("operational", FLOW, system, entity, key or f"bus:{msg.subject}:{seq}",
                         {"subject": msg.subject, "stream_seq": seq, "deliveries": msg.metadata.num_delivered,
                          "headers": headers, "body": raw[:100_000]},
                         kind, code, text)


async def land_batch(ctx: FlowContext, cfg: BusConfig, msgs: Sequence[Any]) -> LandReport:
    """Land one fetched batch in the inbox (see the module doc) and ack/term/nak every message."""
    rep = LandReport(messages=len(msgs))
    if not msgs:
        return rep
    rep.last_seq = max(m.metadata.sequence.stream for m in msgs)
    good: list[tuple[Any, Decoded]] = []
    bad: list[tuple[Any, NewDeadLetter]] = []
    for m in msgs:
        try:
            good.append((m, decode_record(m.subject, m.data, cfg.subject_prefix)))
        except BusMessageError as err:
            bad.append((m, _letter(m, "bus.bad_message", str(err), "validation",
                                   key=(m.headers or {}).get("Nats-Msg-Id"))))
    first = min(m.metadata.sequence.stream for m in msgs)
    try:
        with ctx.engine.begin() as conn:
            new, dup = inbox.add_batch(conn, [d.item for _, d in good],
                                       batch_id=f"bus:{cfg.stream}:{first}-{rep.last_seq}") if good else (0, 0)
            if bad:
                dead_letters.add(conn, [lt for _, lt in bad])
    except Exception as err:
        log.warning("bus batch %s-%s failed to land (%s); retrying one by one", first, rep.last_seq, err)
        return await _land_one_by_one(ctx, cfg, good, bad, rep)
    rep.new, rep.duplicates, rep.dead_lettered = new, dup, len(bad)
    for m, _ in good:
        await m.ack()
    for m, _ in bad:
        await m.term()
    return rep


async def _land_one_by_one(ctx: FlowContext, cfg: BusConfig, good: list[tuple[Any, Decoded]],
                           bad: list[tuple[Any, NewDeadLetter]], rep: LandReport) -> LandReport:
    for m, d in good:
        try:
            with ctx.engine.begin() as conn:
                new, dup = inbox.add_batch(conn, [d.item], batch_id=f"bus:{cfg.stream}:{m.metadata.sequence.stream}")
        except Exception as err:
            if m.metadata.num_delivered >= cfg.max_deliver:
                bad.append((m, _letter(m, "bus.max_deliver", f"{d.key}: could not be landed in the inbox after "
                                       f"{m.metadata.num_delivered} deliveries (last error: {err}) — fix the cause "
                                       "and replay the dead letter", "permanent", key=d.key)))
            else:
                rep.retried += 1
                await m.nak(delay=min(30.0, 0.5 * 2 ** m.metadata.num_delivered))
            continue
        rep.new += new
        rep.duplicates += dup
        await m.ack()
    if bad:
        with ctx.engine.begin() as conn:
            dead_letters.add(conn, [lt for _, lt in bad])
        for m, _ in bad:
            await m.term()
        rep.dead_lettered = len(bad)
    return rep


class InboxConsumer:
    """Runs the fetch → land → ack loop on its own thread until :meth:`stop`. ``on_landed(last_seq, new)`` is
    called after each batch that added inbox rows (the worker enqueues the processing workflow there)."""

    def __init__(self, ctx: FlowContext, cfg: BusConfig, *, on_landed: Callable[[int, int], None] | None = None,
                 fetch_timeout: float = 1.0) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.on_landed = on_landed
        self.fetch_timeout = fetch_timeout
        self.totals = LandReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="ledgerbridge-bus-consumer",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self) -> None:
        """Consume until stopped; a lost connection or a missing stream is logged and retried every few seconds."""
        while not self._stop.is_set():
            try:
                await self._consume()
            except Exception as err:
                self.error = err
                log.error("bus consumer %s/%s paused: %s — retrying in 2 s (is `ledgerbridge bus setup` done?)",
                          self.cfg.stream, self.cfg.consumer, err)
                await asyncio.sleep(2)

    async def _consume(self) -> None:
        nc = await nats.connect(self.cfg.url, connect_timeout=5, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe_bind(durable=self.cfg.consumer, stream=self.cfg.stream)
            while not self._stop.is_set():
                try:
                    msgs = await sub.fetch(self.cfg.fetch_batch, timeout=self.fetch_timeout)
                except (TimeoutError, NatsTimeoutError):
                    continue
                rep = await land_batch(self.ctx, self.cfg, msgs)
                self._add(rep)
                if self.on_landed is not None and rep.new:
                    await asyncio.to_thread(self.on_landed, rep.last_seq, rep.new)
        finally:
            await nc.drain()

    def _add(self, rep: LandReport) -> None:
        t = self.totals
        t.messages += rep.messages
        t.new += rep.new
        t.duplicates += rep.duplicates
        t.dead_lettered += rep.dead_lettered
        t.retried += rep.retried
        t.last_seq = max(t.last_seq, rep.last_seq)
