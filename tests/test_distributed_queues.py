"""Queues across worker processes on the real PostgreSQL: a target's rate limit of R/s holds across two workers
(measured from DBOS's own dequeue timestamps), and events published to JetStream are landed and processed by the
workers exactly as the embedded path lands and processes the same records."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from distributed_support import NATS_HOST, NATS_PORT, WorkerProc, dist_config, fresh_database, workers
from ledgerbridge.bus import setup as bus_setup
from ledgerbridge.bus.loop import LoopThread
from ledgerbridge.flows import intake, transactions
from ledgerbridge.flows import worker as W
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import create_store_engine
from ledgerbridge.store.schema import inbox, staging_lines

from conftest import requires_service
from flows_support import make_ctx, records, tiny_firm

R = 5  # starts per second allowed on the target's queue
N = 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[W.Coordinator, dict[str, WorkerProc]]]:
    """Two workers on a fresh database whose source system's queue allows R starts per second."""
    root = tmp_path_factory.mktemp("limited")
    tiny_firm(root)
    limits = {"limits": {"concurrency": 4, "rate": {"limit": R, "period_seconds": 1, "headroom": 1}}}
    with fresh_database() as url:
        cfg, path = dist_config(root, url, systems={SOURCE: limits})
        with workers(path) as procs:
            coord = W.Coordinator(cfg, poll_interval=0.05)
            try:
                yield coord, procs
            finally:
                coord.close()


def test_rate_limit_holds_across_two_workers(limited: tuple[W.Coordinator, dict[str, WorkerProc]]) -> None:
    """The queue's rate limit holds while two workers take its calls. Which worker dequeues is up to them: on a
    loaded machine one may take a whole round while the other is still polling, so rounds repeat (each checked
    for the limit) until both have taken calls, at most three."""
    coord, _ = limited
    by_worker = {"w1": 0, "w2": 0}
    for _round in range(3):
        tag = uuid.uuid4().hex[:8]
        ids = [coord.enqueue(SOURCE, "lb.probe", 50, workflow_id=f"probe:{tag}:{i}") for i in range(N)]
        results = [coord.result(i) for i in ids]
        rows = coord.workflows(ids=ids)
        starts = sorted(dt.datetime.fromisoformat(r["dequeued_at"]).timestamp() for r in rows if r["dequeued_at"])
        assert len(starts) == N
        worst = max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts)
        span = starts[-1] - starts[0]
        for r in results:
            by_worker[r["executor_id"]] += 1
        print(f"{N} calls at {R}/s over two workers {by_worker}: busiest 1 s window {worst} starts, span {span:.2f} s")
        assert worst <= R, f"{worst} starts in one second: the limit of {R}/s did not hold across workers ({starts})"
        assert span >= (N / R - 1) - 0.1, f"{N} starts took only {span:.2f} s: the limit was not applied"
        if all(by_worker.values()):
            break
    assert all(by_worker.values()), f"both workers should take calls: {by_worker}"


def test_sigterm_lets_the_running_workflow_finish(limited: tuple[W.Coordinator, dict[str, WorkerProc]]) -> None:
    """SIGTERM while a worker runs a 2 s call: the call completes in that worker, which then exits 0."""
    coord, procs = limited
    wf = coord.enqueue(W.CONTROL_QUEUE, "lb.probe", 2000, workflow_id=f"probe:term:{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + 30
    while True:
        row = coord.workflows(ids=[wf])[0]
        if row["status"] == "PENDING" and row["executor_id"] in procs:
            break
        assert time.monotonic() < deadline, f"the probe never started: {row['status']}"
        time.sleep(0.02)
    code = procs[row["executor_id"]].terminate()
    after = coord.workflows(ids=[wf])[0]
    assert code == 0
    assert after["status"] == "SUCCESS" and after["executor_id"] == row["executor_id"], after


def test_events_through_jetstream_are_processed_by_the_workers_as_embedded(tmp_path: Path) -> None:
    """Every record of the firm is published twice (webhook + poller, say) through ``intake.accept``; the workers'
    consumers land them and the ``lb.inbox`` queue processes them: the staged lines equal the embedded path's."""
    requires_service(NATS_HOST, NATS_PORT, "NATS (JetStream)")
    export = tiny_firm(tmp_path / "firm")
    embedded = make_ctx(tmp_path / "embedded", export_from=export)
    recs = records(embedded)
    transactions.land(embedded, SOURCE, recs)
    transactions.process_pending(embedded)
    tag = uuid.uuid4().hex[:8]
    bus = {"url": f"nats://{NATS_HOST}:{NATS_PORT}", "stream": f"LB_TEST_{tag}", "subject_prefix": f"lbt{tag}.in",
           "consumer": f"c{tag}", "storage": "memory", "fetch_batch": 200}
    root = tmp_path / "dist"
    (root).mkdir()
    (root / "psa-export").symlink_to(export.resolve(), target_is_directory=True)
    with fresh_database() as url:
        cfg, path = dist_config(root, url, bus=bus)
        assert cfg.bus is not None
        loop = LoopThread()

        async def setup() -> None:
            import nats

            nc = await nats.connect(cfg.bus.url)  # type: ignore[union-attr]
            await bus_setup.ensure(nc.jetstream(), cfg.bus)  # type: ignore[arg-type]
            await nc.drain()

        loop.run(setup(), timeout=30)
        try:
            ctx = FlowContext(cfg, workdir=root)
            W.prepare(ctx)
            with workers(path, bus=True) as procs:
                first = intake.accept(ctx, SOURCE, recs)
                again = intake.accept(ctx, SOURCE, recs)
                engine = create_store_engine(url)
                deadline = time.monotonic() + 90
                while True:
                    with engine.connect() as conn:
                        rows = dict(conn.execute(sa.select(inbox.c.status, sa.func.count())
                                                 .group_by(inbox.c.status)).all())
                    if sum(rows.values()) == len(recs) and not rows.get("received"):
                        break
                    assert time.monotonic() < deadline, f"inbox after 90 s: {rows}"
                    time.sleep(0.2)
                got = _staged(engine)
                engine.dispose()
                codes = [p.terminate() for p in procs.values()]
        finally:
            async def teardown() -> None:
                import nats

                nc = await nats.connect(cfg.bus.url)  # type: ignore[union-attr]
                await bus_setup.teardown(nc.jetstream(), cfg.bus)  # type: ignore[arg-type]
                await nc.drain()

            loop.run(teardown(), timeout=30)
            loop.stop()
    assert (first.channel, first.received, first.new) == ("jetstream", len(recs), len(recs))
    assert again.duplicates == len(recs), "JetStream's duplicate window should drop the second publication"
    assert codes == [0, 0]
    assert got == _staged(embedded.engine)


def _staged(engine: sa.Engine) -> dict[tuple[object, ...], object]:
    """The net effect of everything staged: per (txn type, entity, period, date, currency, dimensions, source item)
    the signed sum of each amount, zero nets left out. How versions were batched may differ between the embedded
    run and the workers (one batch sees v1 and v2 together, another stages v1, then reverses it and stages v2); the
    ledger they lead to must not."""
    from collections import defaultdict
    from decimal import Decimal

    net: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    with engine.connect() as conn:
        for r in conn.execute(sa.select(staging_lines)):
            dims = tuple(tuple(d) for d in r.dimensions) if r.dimensions else ()
            for name, amount in r.amounts:
                key = (r.txn_type, r.legal_entity_id, r.period, str(r.entry_date), r.currency, dims,
                       r.source_system, r.source_entity, r.source_id, name)
                net[key] += Decimal(str(amount)) * r.sign
    return {k: v for k, v in net.items() if v}
