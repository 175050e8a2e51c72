"""Webhook ingress under a bounded load on loopback.

    .venv/bin/python bench/bench_webhooks.py [--rate 1000] [--seconds 60] [--concurrency 32] [--workdir DIR]

1. Generates a small sample firm (master data) in the work directory and starts ``uvicorn`` in a subprocess with
   the service app (API + background worker, embedded SQLite store and DBOS system database).
2. An asyncio httpx client sends signed ``time_entry.approved`` webhooks (distinct items, real projects and
   resources) at the target rate (open loop: each request starts at its scheduled time; at most ``--concurrency``
   in flight), for ``--seconds``.
3. Waits until the worker has processed every accepted record, reading the store.

Prints: achieved send and accept rates, p50/p99/max accept latency, status counts, accepted vs processed (must be
equal) and the time processing needed after the last accept, with the process CPU of server and client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SECRET_ENV = "LB_BENCH_WEBHOOK_SECRET"
SECRET = "bench-webhook-secret-0f1e2d3c"
SOURCE = "psa_files"


def _serve(workdir: Path, port: int, process_batch: int) -> None:
    """The server side (run in the subprocess)."""
    import dataclasses

    import uvicorn

    from ledgerbridge.flows.context import FlowContext
    from ledgerbridge.flows.main_job import demo_config
    from ledgerbridge.flows.reference import load_reference
    from ledgerbridge.service import logs
    from ledgerbridge.service import testing as st
    from ledgerbridge.service.app import create_app
    from ledgerbridge.service.settings import ServiceSettings

    logs.configure(level=30)  # warnings only: one JSON line per request would measure the terminal
    cfg = demo_config(workdir)
    ctx = FlowContext(cfg, workdir=workdir)
    ctx.migrate()
    load_reference(ctx, SOURCE)
    st.with_secret(ctx, SOURCE, "webhook", "${env:" + SECRET_ENV + "}")
    runtime = dataclasses.replace(cfg.runtime.to_runtime(), queue_polling_interval_sec=0.2, log_level="WARNING")
    app = create_app(ctx, ServiceSettings(port=port, process_window_seconds=0.5,
                                                process_batch_size=process_batch), runtime_settings=runtime)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entries(workdir: Path, n: int) -> list[dict[str, Any]]:
    from ledgerbridge.flows.context import FlowContext
    from ledgerbridge.flows.main_job import demo_config

    ctx = FlowContext(demo_config(workdir), workdir=workdir)
    errors: list[Any] = []
    base = [r["payload"] for r in ctx.connector(SOURCE).read_records(errors)
            if r["entity"] == "time_entry" and r["payload"]["approval_status"] == "approved"]
    run = f"{int(time.time()) % 100000:05d}"
    return [{**base[i % len(base)], "id": f"WH-{run}-{i:07d}", "version": 1} for i in range(n)]


async def _load(port: int, entries: list[dict[str, Any]], rate: float, concurrency: int) -> dict[str, Any]:
    import httpx

    from ledgerbridge.service.webhooks import signed_headers

    url = f"http://127.0.0.1:{port}/webhooks/{SOURCE}"
    lat: list[float] = []
    status: dict[str, int] = {}
    new = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(entry: dict[str, Any]) -> None:
            nonlocal new
            body = json.dumps({"event_type": "time_entry.approved", "event_id": f"evt-{entry['id']}",
                               "source_system": SOURCE, "occurred_at": "2026-11-30T00:00:00Z",
                               "entry": entry}, separators=(",", ":")).encode()
            t = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers=signed_headers(SECRET, body))
                code = str(r.status_code)
                if r.status_code == 202 and not r.json()["duplicate"]:
                    new += 1
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            finally:
                sem.release()
            if code == "202":
                lat.append(time.perf_counter() - t)
            status[code] = status.get(code, 0) + 1

        start = time.perf_counter()
        tasks = []
        for i, entry in enumerate(entries):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            tasks.append(asyncio.create_task(one(entry)))
        sent_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        done_s = time.perf_counter() - start
    return {"latencies": lat, "status": status, "new": new, "send_seconds": sent_s, "done_seconds": done_s}


def _processed(store: Path, prefix: str) -> int:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM inbox WHERE status = 'processed' AND external_id LIKE ?",
                              (prefix + "%",)).fetchone()[0])


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="webhooks per second to send (default 1000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to send (default 60)")
    ap.add_argument("--concurrency", type=int, default=32,
                    help="max requests in flight (default 32; httpx costs more CPU per request with many connections)")
    ap.add_argument("--workdir", type=Path, default=Path("out/bench-webhooks"))
    ap.add_argument("--process-timeout", type=float, default=600.0)
    ap.add_argument("--process-batch", type=int, default=250,
                    help="inbox rows per processing transaction (smaller = shorter store locks; default 250)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve(args.workdir.resolve(), args.port, args.process_batch)
        return

    from ledgerbridge.samplefirm import generate_firm

    wd = args.workdir.resolve()
    if wd.exists():
        import shutil

        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    generate_firm(wd / "psa-export", seed=11, employees=6, months=1, start="2026-09")
    total = int(args.rate * args.seconds)
    entries = _entries(wd, total)
    prefix = entries[0]["id"].rsplit("-", 1)[0]
    port = _free_port()
    env = {**os.environ, SECRET_ENV: SECRET}
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--workdir", str(wd), "--port", str(port),
                               "--process-batch", str(args.process_batch)],
                              env=env)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        cpu0 = _cpu(server.pid)
        client0 = resource.getrusage(resource.RUSAGE_SELF)
        print(f"sending {total:,} signed webhooks at {args.rate:,.0f}/s for {args.seconds:g} s "
              f"(max {args.concurrency} in flight) to 127.0.0.1:{port}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs", flush=True)
        res = asyncio.run(_load(port, entries, args.rate, args.concurrency))
        last_accept = time.monotonic()
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        lat = res["latencies"]
        accepted = res["status"].get("202", 0)
        print(f"sent in {res['send_seconds']:.1f} s (offered {total / res['send_seconds']:,.0f}/s); all answered "
              f"in {res['done_seconds']:.1f} s; accepted {accepted:,} ({accepted / res['done_seconds']:,.0f}/s "
              f"achieved), new {res['new']:,}; statuses {dict(sorted(res['status'].items()))}")
        print(f"accept latency: p50 {_pct(lat, 50) * 1000:.1f} ms, p99 {_pct(lat, 99) * 1000:.1f} ms, "
              f"max {max(lat, default=float('nan')) * 1000:.1f} ms, mean {statistics.fmean(lat) * 1000:.1f} ms"
              if lat else "accept latency: no request accepted")
        store = wd / "state.sqlite"
        processed = 0
        while time.monotonic() - last_accept < args.process_timeout:
            processed = _processed(store, prefix)
            if processed >= res["new"]:
                break
            time.sleep(0.5)
        drain = time.monotonic() - last_accept
        cpu1 = _cpu(server.pid)
        print(f"accepted (new) {res['new']:,} = processed {processed:,}: "
              f"{'EQUAL' if processed == res['new'] else 'NOT EQUAL'}; processing finished {drain:.1f} s after the "
              f"last answer")
        print(f"CPU: server {cpu1 - cpu0:.1f} s, client "
              f"{(client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime):.1f} s; "
              f"load average now {os.getloadavg()[0]:.1f}")
        if processed != res["new"]:
            raise SystemExit(1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
