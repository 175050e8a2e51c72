"""Near-real-time latency: signed webhook -> subscription chain -> write in a target system, end to end.

    .venv/bin/python bench/bench_latency.py [--rate 200] [--seconds 20] [--target-ms 20] [--postgres]
    .venv/bin/python bench/bench_latency.py --rate 50,100,200 --seconds 15     # a table: the sustainable rate

Three processes on loopback:

1. the **service** (``uvicorn`` + ``create_app``, worker on: the durable runtime, DBOS on the embedded SQLite
   system database, or ``--postgres``: a fresh database on 127.0.0.1:5432) configured with one subscription
   ``project.approved -> webhook`` pointing at the target;
2. the **target** (a threading HTTP server) that records the receive time and the ``Idempotency-Key`` of every
   write and answers each after ``--target-ms`` (default 20 ms);
3. the **sender** (this process): an open-loop schedule of signed ``project.approved`` deliveries (one new project
   each) at ``--rate`` per second for ``--seconds``. Each delivery's time is fixed by the schedule, never by the
   previous answer, and every latency is measured from the *scheduled* send time (no coordinated omission: a late
   sender or a full connection pool counts against the system). A small raw HTTP/1.1 keep-alive client keeps the
   sender's own CPU low (httpx costs ~5 ms of CPU per request, a large share of a 2-core box).

Prints per rate: offered and achieved accept rate, end-to-end latency (scheduled send -> target received)
p50/p90/p99/max, accept latency (scheduled send -> 202) p50/p99, where the time goes (per-stage p50/p99 from the
chain workflows' timestamps: created = enqueued in the request, dequeued = started by the queue runner, completed),
events lost and duplicate writes at the target, server CPU per event and peak RSS.

``LB_BENCH_PROFILE=<file>`` makes the service write a sampling profile (busy stacks of its threads) to ``file``.
``--batch-dequeue`` is an experiment (registers the subscriptions queue without its queue-wide limit).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SECRET_ENV = "LB_BENCH_LATENCY_SECRET"
SECRET = "bench-latency-secret-5a4b3c2d"
SOURCE = "psa_files"
SUBSCRIPTION = "erp-near-real-time"
ACTION = "erp_write"
CHAIN = "lb.subscription_chain"


# ---------------------------------------------------------------------------------------------------------------------
# the target system (its own process)
# ---------------------------------------------------------------------------------------------------------------------


def _target(port: int, delay: float) -> None:
    records: list[tuple[float, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _answer(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            received = time.time()
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                records.append((received, self.headers.get("Idempotency-Key", "")))
            time.sleep(delay)
            self._answer(b'{"ok":true}')

        def do_GET(self) -> None:
            with lock:
                data = json.dumps(records).encode()
            self._answer(data)

    try:
        ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    except KeyboardInterrupt:
        return


# ---------------------------------------------------------------------------------------------------------------------
# the service (its own process)
# ---------------------------------------------------------------------------------------------------------------------


def _serve(workdir: Path, port: int, target_url: str, sysdb: str | None, poll: float, concurrency: int,
           batch_dequeue: bool) -> None:
    import uvicorn

    from ledgerbridge import runtime as rt
    from ledgerbridge.config.schema import SubscriptionConfig
    from ledgerbridge.flows import subscriptions as subs
    from ledgerbridge.flows.context import FlowContext, set_current
    from ledgerbridge.flows.main_job import demo_config
    from ledgerbridge.service import logs
    from ledgerbridge.service import testing as st
    from ledgerbridge.service.app import create_app
    from ledgerbridge.service.settings import ServiceSettings

    logs.configure(level=30)  # warnings only: a JSON line per request would measure the terminal
    cfg = demo_config(workdir)
    sub = SubscriptionConfig.model_validate({
        "name": SUBSCRIPTION, "event": "project.approved", "key": "project.id",
        "actions": [{"name": ACTION, "kind": "webhook",
                     "options": {"url": f"{target_url}/projects", "system_label": "erp_target"}}]})
    ctx = FlowContext(cfg.model_copy(update={"subscriptions": [sub]}), workdir=workdir)
    ctx.migrate()
    st.with_secret(ctx, SOURCE, "webhook", "${env:" + SECRET_ENV + "}")
    runtime = dataclasses.replace(cfg.runtime.to_runtime(), queue_polling_interval_sec=poll, log_level="WARNING",
                                  **({"system_database_url": sysdb} if sysdb else {}))
    # launched here (the app's lifespan then finds it running) so the subscriptions queue gets --concurrency
    set_current(ctx)
    rt.Runtime.launch(runtime)
    subs.ensure_queue(concurrency)
    if batch_dequeue:  # experiment: without a queue-wide (global) limit DBOS claims all partitions in one query
        from dbos import DBOS

        DBOS.register_queue(subs.QUEUE, worker_concurrency=concurrency, partition_concurrency=1,
                            polling_interval_sec=poll, on_conflict="always_update")
    app = create_app(ctx, ServiceSettings(port=port), runtime_settings=runtime)
    if os.environ.get("LB_BENCH_PROFILE"):
        threading.Thread(target=_sample, args=(Path(os.environ["LB_BENCH_PROFILE"]),), daemon=True).start()
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)
    finally:
        rt.Runtime.shutdown()


def _sample(out: Path, every: float = 0.005) -> None:
    """A tiny sampling profiler (LB_BENCH_PROFILE=file): which code the service's threads are in, every 5 ms."""
    import collections
    import traceback

    me = threading.get_ident()
    counts: collections.Counter[str] = collections.Counter()
    idle = ("wait", "select", "poll", "_recv", "accept", "sleep", "get", "read", "_worker", "run_forever")
    n = 0
    while True:
        time.sleep(every)
        n += 1
        for tid, frame in sys._current_frames().items():
            if tid == me:
                continue
            stack = traceback.extract_stack(frame)[-12:]
            if stack and stack[-1].name in idle:
                continue
            counts[" <- ".join(f"{Path(f.filename).name}:{f.name}" for f in reversed(stack))] += 1
        if n % 400 == 0:
            out.write_text("\n".join(f"{c} {k}" for k, c in counts.most_common(60)))


# ---------------------------------------------------------------------------------------------------------------------
# the sender (this process): open loop, raw HTTP/1.1 on keep-alive connections
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sent:
    due: float  # wall-clock time the schedule sent it at
    lag: float = 0.0  # how late the sender actually wrote it
    answered: float | None = None
    status: str = ""
    duplicate: bool | None = None


class _Pool:
    """Idle keep-alive connections; a new one is opened when all are busy (open loop: never wait for a free one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        reused = bool(self.idle)
        if reused:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.opened += 1
        writer.write(raw)
        status_line = await reader.readline()
        if not status_line:  # the server closed an idle keep-alive connection: nothing was read, send again
            writer.close()
            if reused:
                return await self.request(raw)
            raise ConnectionResetError("connection closed before an answer")
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return int(status_line.split()[1]), body


def _requests(port: int, run: str, n: int) -> list[bytes]:
    """Signed deliveries, one new project each (signing is the sender's work, done before the clock starts)."""
    from ledgerbridge.service.webhooks import signed_headers

    out = []
    for i in range(n):
        pid = f"P-{run}-{i:06d}"
        body = json.dumps({"event_type": "project.approved", "event_id": f"lat-{run}-{i}", "source_system": SOURCE,
                           "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                           "project": {"id": pid, "name": f"Project {pid}", "customer_id": "C-1",
                                       "legal_entity_id": "US01", "contract_type": "time_and_materials",
                                       "currency": "USD", "cost_center": "CC-100", "start_date": "2026-09-01"}},
                          separators=(",", ":")).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body).items())
        out.append(f"POST /webhooks/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def _offer(port: int, raws: list[bytes], rate: float) -> tuple[list[Sent], int]:
    pool = _Pool(port)
    sent = [Sent(0.0) for _ in raws]
    loop = asyncio.get_running_loop()

    async def one(i: int, due_mono: float) -> None:
        s = sent[i]
        s.lag = loop.time() - due_mono
        try:
            code, body = await pool.request(raws[i])
            s.status = str(code)
            if code == 202:
                s.duplicate = bool(json.loads(body)["duplicate"])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            s.status = type(exc).__name__
        s.answered = time.time()

    start_mono = loop.time() + 0.1
    start_wall = time.time() + (start_mono - loop.time())
    tasks = []
    for i in range(len(raws)):
        due = start_mono + i / rate
        sent[i].due = start_wall + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return sent, pool.opened


# ---------------------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------------------


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _fmt(seconds: float) -> str:
    return "not written" if seconds == float("inf") else f"{seconds * 1000:,.0f} ms"


def _ms(xs: list[float], *ps: float) -> str:
    """Percentiles; an event never written counts as infinitely late (no survivorship bias)."""
    return " / ".join(_fmt(_pct(xs, p)) for p in ps)


def _proc(pid: int) -> tuple[float, int]:
    """CPU seconds and peak RSS (kB) of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
        return cpu, hwm
    except (OSError, StopIteration):
        return float("nan"), 0


def _target_records(url: str) -> list[tuple[float, str]]:
    import httpx

    return [(float(t), str(k)) for t, k in httpx.get(url, timeout=30).json()]


def _epoch(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def _measure(args: argparse.Namespace, port: int, target_url: str, runtime: Any, server_pid: int, rate: float,
             run: str) -> dict[str, Any]:
    n = int(rate * args.seconds)
    raws = _requests(port, run, n)
    cpu0, _ = _proc(server_pid)
    sent, connections = asyncio.run(_offer(port, raws, rate))
    send_end = time.time()
    keys = {f"{SUBSCRIPTION}:{ACTION}:{SOURCE}:project:P-{run}-{i:06d}:approved": i for i in range(n)}
    accepted = {keys_i for keys_i, i in keys.items() if sent[i].status == "202"}
    deadline = time.monotonic() + args.drain_timeout
    while True:
        got = [(t, k) for t, k in _target_records(target_url) if k in keys]
        if {k for _t, k in got} >= accepted or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    cpu1, _ = _proc(server_pid)
    first: dict[str, float] = {}
    for t, k in sorted(got):
        first.setdefault(k, t)
    dupes = len(got) - len(first)
    e2e = [first[k] - sent[i].due if k in first else float("inf") for k, i in keys.items() if k in accepted]
    accept = [s.answered - s.due for s in sent if s.status == "202" and s.answered is not None]
    statuses: dict[str, int] = {}
    for s in sent:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    flows = {w["workflow_id"]: w for w in runtime.list_workflows(name=CHAIN, limit=None)
             if w["workflow_id"].startswith(f"sub:{SUBSCRIPTION}:{SOURCE}:project:P-{run}-")}
    unwritten = [f"sub:{SUBSCRIPTION}:{k.split(':', 2)[2]}" for k in accepted - set(first)]
    backlog = sum(1 for w in unwritten if w in flows and flows[w]["status"] in ("ENQUEUED", "PENDING", "DELAYED"))
    stages: dict[str, list[float]] = {"sent -> enqueued (HTTP, checks, publish)": [],
                                      "enqueued -> dequeued (queue wait)": [],
                                      "dequeued -> target received (chain start, step, HTTP)": [],
                                      "target received -> chain completed": []}
    names = list(stages)
    for k, i in keys.items():
        w = flows.get(f"sub:{SUBSCRIPTION}:{k.split(':', 2)[2]}")
        if w is None or k not in first:
            continue
        created, dequeued, completed = (_epoch(w[c]) for c in ("created_at", "dequeued_at", "completed_at"))
        if created is None or dequeued is None or completed is None:
            continue
        for name, value in zip(names, (created - sent[i].due, dequeued - created, first[k] - dequeued,
                                       completed - first[k]), strict=True):
            stages[name].append(value)
    last = max(first.values(), default=send_end)
    return {"rate": rate, "n": n, "sent": sent, "statuses": statuses, "accepted": len(accepted),
            "new": sum(1 for s in sent if s.duplicate is False), "delivered": len(first),
            "lost": len(unwritten) - backlog, "backlog": backlog, "dupes": dupes, "e2e": e2e, "accept": accept,
            "stages": stages,
            "lag": [s.lag for s in sent], "connections": connections,
            "send_seconds": sent[-1].due - sent[0].due + 1 / rate, "deliver_seconds": last - sent[0].due,
            "drain_seconds": max(0.0, last - send_end), "drain_timeout": args.drain_timeout, "server_cpu": cpu1 - cpu0}


def _report(m: dict[str, Any]) -> bool:
    offered = m["n"] / m["send_seconds"]
    answered = max(s.answered or 0 for s in m["sent"]) - m["sent"][0].due
    delivered_rate = m["delivered"] / m["deliver_seconds"] if m["deliver_seconds"] > 0 else float("nan")
    m["accept_rate"], m["write_rate"] = m["accepted"] / answered, delivered_rate
    sustained = (m["lost"] == 0 and m["backlog"] == 0 and m["accepted"] == m["n"]
                 and m["accept_rate"] >= 0.95 * offered and delivered_rate >= 0.95 * offered)
    print(f"\n== {m['rate']:g} events/s: offered {offered:,.1f}/s ({m['n']:,} deliveries, open loop, "
          f"{m['connections']} connections opened; sender late p99 {_pct(m['lag'], 99) * 1000:.1f} ms)")
    print(f"accepted {m['accepted']:,} (new {m['new']:,}) = {m['accepted'] / answered:,.1f}/s achieved; statuses "
          f"{dict(sorted(m['statuses'].items()))}")
    print(f"delivered to the target {m['delivered']:,} = {delivered_rate:,.1f}/s; last write "
          f"{m['drain_seconds']:.1f} s after the last scheduled send")
    print(f"end-to-end (scheduled send -> target received) p50 / p90 / p99 / max: {_ms(m['e2e'], 50, 90, 99, 100)}")
    print(f"accept (scheduled send -> 202) p50 / p99: {_ms(m['accept'], 50, 99)}")
    for name, xs in m["stages"].items():
        print(f"  {name:<55} p50 / p99: {_ms(xs, 50, 99)}")
    print(f"lost (accepted; no chain, or a finished chain without a write): {m['lost']}; still queued after the "
          f"{m['drain_timeout']:g} s drain: {m['backlog']:,}; duplicate writes at the target: {m['dupes']}")
    print(f"service CPU {m['server_cpu']:.1f} s = {m['server_cpu'] / max(m['delivered'], 1) * 1000:.1f} ms per "
          "written event (all accepts, plus the chains that ran)")
    print(f"sustained: {'YES' if sustained else 'NO'}")
    return sustained


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {what} did not start")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="200", help="events per second; a comma list (50,100,200) runs each in turn")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to send at each rate (default 20)")
    ap.add_argument("--target-ms", type=float, default=20.0, help="the target's answer time per write (default 20)")
    ap.add_argument("--queue-poll", type=float, default=0.02,
                    help="runtime queue polling interval in seconds (runtime default 1.0; default here 0.02)")
    ap.add_argument("--concurrency", type=int, default=8, help="chains running at once (subscriptions default 8)")
    ap.add_argument("--postgres", action="store_true", help="system database on a fresh PostgreSQL database "
                                                            "at 127.0.0.1:5432 (LEDGERBRIDGE_TEST_PG_URL)")
    ap.add_argument("--drain-timeout", type=float, default=15.0,
                    help="seconds to wait after the last answer for the writes (default 15)")
    ap.add_argument("--batch-dequeue", action="store_true",
                    help="experiment: register the subscriptions queue without its queue-wide limit, so DBOS claims "
                         "every partition in one query instead of one transaction per partition")
    ap.add_argument("--workdir", type=Path, default=Path("out/bench-latency"))
    for hidden in ("--serve", "--target"):
        ap.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--target-url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--sysdb", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.target:
        _target(args.port, args.target_ms / 1000)
        return
    if args.serve:
        _serve(args.workdir.resolve(), args.port, args.target_url, args.sysdb or None, args.queue_poll,
               args.concurrency, args.batch_dequeue)
        return

    import shutil

    rates = [float(r) for r in args.rate.split(",")]
    wd = args.workdir.resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    with ExitStack() as stack:
        tport = _free_port()
        target_url = f"http://127.0.0.1:{tport}"
        target = subprocess.Popen([sys.executable, __file__, "--target", "--port", str(tport), "--target-ms",
                                   str(args.target_ms)])
        stack.callback(_stop, target)
        _wait_up(target_url, target, "target")
        print(f"target answers each write after {args.target_ms:g} ms; queue poll {args.queue_poll:g} s, "
              f"{args.concurrency} chains at once{', batch dequeue' if args.batch_dequeue else ''}; system database "
              f"{'PostgreSQL 127.0.0.1:5432' if args.postgres else 'SQLite'}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs", flush=True)
        table = [_one_rate(args, wd / f"rate-{k}", target_url, rate, f"{int(time.time()) % 100000:05d}{k}")
                 for k, rate in enumerate(rates)]
        print(f"\npeak RSS: target {_proc(target.pid)[1] / 1024:,.0f} MiB, sender "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; load average now "
              f"{os.getloadavg()[0]:.1f}")
        if len(table) > 1:
            print("\n| offered/s | accepted/s | written/s | e2e p50 | e2e p99 | lost | queued at the end | dupes "
                  "| sustained |")
            print("|---|---|---|---|---|---|---|---|---|")
            for m, ok in table:
                print(f"| {m['rate']:g} | {m['accept_rate']:,.0f} | {m['write_rate']:,.0f} | "
                      f"{_fmt(_pct(m['e2e'], 50))} | {_fmt(_pct(m['e2e'], 99))} | {m['lost']} | "
                      f"{m['backlog']:,} | {m['dupes']} | {'yes' if ok else 'no'} |")


def _one_rate(args: argparse.Namespace, wd: Path, target_url: str, rate: float, run: str) -> tuple[dict[str, Any],
                                                                                                   bool]:
    """A fresh service (own work directory and system database) for one rate."""
    from ledgerbridge.runtime.client import RuntimeClient
    from ledgerbridge.runtime.settings import RuntimeSettings
    from ledgerbridge.runtime.testing import fresh_postgres_database

    wd.mkdir(parents=True)
    with ExitStack() as stack:
        sysdb = stack.enter_context(fresh_postgres_database()) if args.postgres else f"sqlite:///{wd / 'dbos.sqlite'}"
        sport = _free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", "--workdir", str(wd), "--port", str(sport),
                                   "--target-url", target_url, "--sysdb", sysdb, "--queue-poll", str(args.queue_poll),
                                   "--concurrency", str(args.concurrency),
                                   *(["--batch-dequeue"] if args.batch_dequeue else [])],
                                  env={**os.environ, SECRET_ENV: SECRET})
        stack.callback(_stop, server)
        _wait_up(f"http://127.0.0.1:{sport}/healthz", server, "service")
        runtime = stack.enter_context(RuntimeClient(RuntimeSettings(system_database_url=sysdb)))
        m = _measure(args, sport, target_url, runtime, server.pid, rate, run)
        ok = _report(m)
        print(f"service peak RSS {_proc(server.pid)[1] / 1024:,.0f} MiB", flush=True)
    return m, ok


if __name__ == "__main__":
    main()
