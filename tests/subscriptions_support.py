"""Helpers for the subscription tests: a loopback HTTP server that records calls, and a flow context whose
configuration carries test subscriptions (on the embedded store and the Beancount ledger)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ledgerbridge.config.schema import SubscriptionConfig
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import demo_config


@dataclass
class Recorder:
    """What the loopback server saw. Paths: ``/ok`` 200; ``/fail`` 400 (permanent); ``/flaky/<n>`` 503 for the
    first n calls of an idempotency key, then 200; ``/slow`` 200 after ``delay`` seconds."""

    delay: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    max_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"].startswith(prefix)]


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def _serve(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            key = str(body.get("key", ""))
            with rec.lock:
                rec.in_flight[key] = rec.in_flight.get(key, 0) + 1
                rec.max_in_flight[key] = max(rec.max_in_flight.get(key, 0), rec.in_flight[key])
                rec.max_total = max(rec.max_total, sum(rec.in_flight.values()))
                attempt = sum(1 for c in rec.calls if c["idempotency_key"] == self.headers.get("Idempotency-Key")
                              and c["path"] == self.path) + 1
                rec.calls.append({"path": self.path, "method": self.command, "body": body, "attempt": attempt,
                                  "idempotency_key": self.headers.get("Idempotency-Key"),
                                  "traceparent": self.headers.get("traceparent"), "at": time.monotonic()})
            try:
                if self.path.startswith("/slow") and rec.delay:
                    time.sleep(rec.delay)
                if self.path.startswith("/fail"):
                    status, answer = 400, {"error": "project code refused by the CRM"}
                elif self.path.startswith("/flaky/") and attempt <= int(self.path.rsplit("/", 1)[1]):
                    status, answer = 503, {"error": "busy"}
                else:
                    status, answer = 200, {"ok": True}
            finally:
                with rec.lock:
                    rec.in_flight[key] -= 1
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = _serve
        do_PATCH = _serve

    return Handler


@contextmanager
def loopback_server(delay: float = 0.0) -> Iterator[tuple[str, Recorder]]:
    rec = Recorder(delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


def context_with(workdir: Path, subscriptions: list[dict[str, Any]]) -> FlowContext:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(workdir)
    cfg = cfg.model_copy(update={"subscriptions": [SubscriptionConfig.model_validate(s) for s in subscriptions]})
    ctx = FlowContext(cfg, workdir=workdir)
    ctx.migrate()
    return ctx


def project(pid: str, *, entity: str = "US01", customer: str = "C-1") -> dict[str, Any]:
    return {"id": pid, "name": f"Project {pid}", "customer_id": customer, "legal_entity_id": entity,
            "contract_type": "time_and_materials", "currency": "USD", "cost_center": "CC-100",
            "start_date": "2026-09-01"}


def approved(pid: str, **kw: Any) -> dict[str, Any]:
    return {"event_type": "project.approved", "event_id": f"ev-{pid}", "source_system": "crm",
            "occurred_at": "2026-09-01T09:00:00+00:00", "project": project(pid, **kw)}


def time_approved(project_id: str, seq: int) -> dict[str, Any]:
    return {"event_type": "time_entry.approved", "event_id": f"te-{project_id}-{seq}", "source_system": "psa",
            "occurred_at": f"2026-09-01T09:{seq:02d}:00+00:00",
            "entry": {"id": f"TE-{project_id}-{seq}", "source_system": "psa", "version": 1, "project_id": project_id,
                      "resource_id": "R-1", "work_date": "2026-09-01", "hours": "1.5", "billable": True,
                      "approval_status": "approved", "description": str(seq)}}
