"""Distributed mode throughput: 1 vs 2 worker processes, and events/s through JetStream into the inbox.

    .venv/bin/python bench/bench_distributed.py [--calls 400] [--latency-ms 20] [--concurrency 8]
                                                [--poll 0.1] [--events 20000]

Prints:
1. the same run of ``--calls`` calls to a simulated target (a queued workflow whose step waits ``--latency-ms``,
   as a remote API call would) on one queue of concurrency ``--concurrency``, drained by 1 and then by 2
   ``ledgerbridge worker`` processes on one fresh PostgreSQL database each: calls/s and the ratio 2 / 1. All calls
   are enqueued first with a delay that makes them eligible at the same moment, and the rate is taken from DBOS's
   own timestamps (first dequeue to last completion), so it measures the workers, not the enqueueing;
2. ``--events`` source records published to JetStream (``Nats-Msg-Id`` = inbox key, async with bounded in-flight)
   and landed in the inbox on PostgreSQL by the consumer (fetch batches of ``bus.fetch_batch``, one transaction per
   batch, ack after commit): publish events/s and landed events/s.

Needs PostgreSQL at 127.0.0.1:5432 and NATS with JetStream at 127.0.0.1:4222. The machine's load is printed with
the figures (a shared 2-core machine: compare figures of the same run only).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from ledgerbridge.bus import setup as bus_setup
from ledgerbridge.bus.consumer import InboxConsumer
from ledgerbridge.bus.publisher import BusPublisher
from ledgerbridge.config import load_config
from ledgerbridge.config.schema import BusConfig
from ledgerbridge.flows import worker as W
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE, demo_config
from ledgerbridge.runtime.testing import fresh_postgres_database, postgres_reachable
from ledgerbridge.samplefirm import generate_firm


def write_config(root: Path, url: str, concurrency: int) -> Path:
    data = demo_config(root).model_dump(mode="json", exclude_none=True)
    data["store"]["url"] = url
    data["runtime"]["system_database_url"] = url
    data["runtime"]["log_level"] = "WARNING"
    data["systems"][SOURCE]["limits"] = {"concurrency": concurrency}
    path = root / "ledgerbridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_worker(executor_id: str, config: Path, poll: float, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ledgerbridge.cli", "worker", "--executor-id", executor_id, "--config", str(config),
         "--poll-interval", str(poll), "--no-bus", "--grace", "5"],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True)


def wait_ready(p: subprocess.Popen[str], log: Path) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if "ready" not in line:
        raise SystemExit(f"worker did not start: {line!r} {log.read_text()[-2000:]}")


def run_calls(root: Path, workers: int, calls: int, latency_ms: int, concurrency: int, poll: float) -> float:
    """Calls/s of one run of ``calls`` simulated-target calls drained by ``workers`` processes."""
    with fresh_postgres_database(prefix="lb_bench_dist_") as url:
        config = write_config(root, url, concurrency)
        cfg = load_config(config)
        procs = [start_worker(f"bench-w{i + 1}", config, poll, root / f"w{i + 1}.log") for i in range(workers)]
        try:
            for i, p in enumerate(procs):
                wait_ready(p, root / f"w{i + 1}.log")
            coord = W.Coordinator(cfg, poll_interval=0.05)
            try:
                tag = uuid.uuid4().hex[:8]
                # every call becomes eligible at the same moment, after all are enqueued: the figure is the
                # workers' drain rate, not the coordinator's enqueue rate
                t0 = time.perf_counter()
                go = time.time() + 3 + calls * 0.06
                ids = [coord.enqueue(SOURCE, "lb.probe", latency_ms, workflow_id=f"bench:{tag}:{i}",
                                     delay_seconds=max(0.001, go - time.time())) for i in range(calls)]
                enqueued = time.perf_counter() - t0
                if time.time() > go:
                    raise SystemExit("enqueueing took longer than the head start: raise it")
                results = [coord.result(i) for i in ids]
                rows = coord.workflows(ids=ids)
            finally:
                coord.close()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    per = {r["executor_id"] for r in results}
    assert len(per) == workers, f"expected {workers} workers to take calls, saw {per}"
    first = min(dt.datetime.fromisoformat(r["dequeued_at"]) for r in rows)
    elapsed = (max(dt.datetime.fromisoformat(r["completed_at"]) for r in rows) - first).total_seconds()
    print(f"   {workers} worker(s): enqueued at {calls / enqueued:6.1f}/s; first start -> last completion "
          f"{elapsed:.2f} s; calls per worker {sorted(sum(1 for r in results if r['executor_id'] == e) for e in per)}")
    return calls / elapsed


def bench_bus(root: Path, events: int) -> tuple[float, float]:
    tag = uuid.uuid4().hex[:8]
    cfg = BusConfig(stream=f"LB_BENCH_{tag}", subject_prefix=f"lbb{tag}.in", consumer=f"c{tag}", fetch_batch=1000)

    async def js_do(fn: Any) -> Any:
        import nats

        nc = await nats.connect(cfg.url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.drain()

    asyncio.run(js_do(lambda js: bus_setup.ensure(js, cfg)))
    try:
        recs = [{"entity": "time_entry", "external_id": f"T{i:07d}", "version": 1,
                 "payload": {"id": f"T{i:07d}", "hours": "7.50", "date": "2026-09-14", "project_id": "P001",
                             "resource_id": "R001", "approval_status": "approved"}} for i in range(events)]
        with BusPublisher(cfg) as pub:
            t0 = time.perf_counter()
            res = pub.publish(SOURCE, recs, timeout=600)
            pub_rate = events / (time.perf_counter() - t0)
        assert res.new == events, res
        with fresh_postgres_database(prefix="lb_bench_bus_") as url:
            base = demo_config(root)
            c = base.model_copy(update={"store": base.store.model_copy(update={"url": url})})
            ctx = FlowContext(c, workdir=root)
            ctx.migrate()
            consumer = InboxConsumer(ctx, cfg, fetch_timeout=0.5)
            t0 = time.perf_counter()
            consumer.start()
            while consumer.totals.messages < events:
                if consumer.error is not None and time.perf_counter() - t0 > 60:
                    raise SystemExit(f"consumer failed: {consumer.error}")
                time.sleep(0.01)
            land_rate = events / (time.perf_counter() - t0)
            consumer.stop()
            assert consumer.totals.new == events, consumer.totals
            ctx.engine.dispose()
    finally:
        asyncio.run(js_do(lambda js: bus_setup.teardown(js, cfg)))
    return pub_rate, land_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--poll", type=float, default=0.1, help="workers' queue polling interval, seconds")
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    reason = postgres_reachable()
    if reason:
        raise SystemExit(reason)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_firm(root / "psa-export", seed=7, employees=6, months=2, start="2026-09")
        print(f"1. {args.calls} calls to a simulated target ({args.latency_ms} ms per call), queue concurrency "
              f"{args.concurrency}, worker polling {args.poll} s")
        one = run_calls(root, 1, args.calls, args.latency_ms, args.concurrency, args.poll)
        print(f"   1 worker : {one:7.1f} calls/s")
        two = run_calls(root, 2, args.calls, args.latency_ms, args.concurrency, args.poll)
        print(f"   2 workers: {two:7.1f} calls/s")
        print(f"   ratio 2 / 1 workers: {two / one:.2f}")
        pub, land = bench_bus(root, args.events)
        print(f"2. JetStream: {args.events} events published at {pub:,.0f} events/s; landed in the PostgreSQL inbox "
              f"at {land:,.0f} events/s (batch transaction + ack after commit)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
