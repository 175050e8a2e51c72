"""A fault-injecting HTTP proxy: put it between a connector and its target (a sandbox, or a real test tenant) and
a chosen share of calls fail the way networks and SaaS APIs fail.

    app = create_app(upstream="http://127.0.0.1:8901", share=0.3, seed=7)
    ledgerbridge sandbox faultproxy -o upstream=http://127.0.0.1:8901 -o share=0.3 --port 8902

Fault kinds (``kinds=`` picks some; default all), each chosen with equal weight among the faulty calls:

- ``before`` — the request never reaches the target: ``503`` (with ``Retry-After: 0``), ``500``, ``429`` (with
  ``Retry-After`` 0–1 s), ``reset`` (headers sent, body cut: the client sees a broken connection), ``stall`` (no
  answer for ``stall`` seconds: the client times out), ``fault200`` (a 2xx whose body reports a system fault, as
  QuickBooks does: ``{"Fault": {"type": "SystemFault"}}``);
- ``after`` — the request **was applied** by the target but the answer is lost: ``503_after``, ``reset_after``,
  ``stall_after``. These are the ones that test exactly-once: the client must retry without creating twice.

Counters per kind and per outcome are on ``app.state.stats`` (:class:`FaultStats`); ``app.state.enabled`` can be
switched off by a test (e.g. for the final read-back). Deterministic for a seed and a call order.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

DESCRIPTION = "fault-injecting proxy in front of any sandbox or test tenant (5xx, 429, resets, stalls, lost answers)"

BEFORE = ("503", "500", "429", "reset", "stall", "fault200")
AFTER = ("503_after", "reset_after", "stall_after")
ALL_KINDS = BEFORE + AFTER
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}


@dataclass
class FaultStats:
    calls: int = 0
    forwarded: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            total = sum(self.faults.values())
            return {"calls": self.calls, "forwarded": self.forwarded, "faults": dict(self.faults),
                    "fault_share": (total / self.calls) if self.calls else 0.0}


def create_app(upstream: str = "", share: float = 0.3, seed: int = 0, kinds: str = "", stall: float = 2.0,
               exempt: str = "") -> FastAPI:
    """``upstream``: base URL of the target. ``share``: fraction of calls that fail (0..1). ``kinds``:
    comma-separated subset of :data:`ALL_KINDS`. ``stall``: seconds a stalled call hangs. ``exempt``: comma-separated
    path prefixes never faulted (e.g. a token endpoint when a test wants only data calls faulted)."""
    if not upstream:
        raise ValueError("faultproxy needs upstream=<base URL of the target>")
    if not 0 <= share <= 1:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) or ALL_KINDS
    unknown = sorted(set(chosen) - set(ALL_KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {list(ALL_KINDS)}")
    exempt_prefixes = tuple(p.strip() for p in exempt.split(",") if p.strip())
    rng = random.Random(seed)
    rng_lock = threading.Lock()
    stats = FaultStats()
    app = FastAPI(title="ledgerbridge fault proxy", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.stats = stats
    app.state.enabled = True
    app.state.banner = f"forwarding to {upstream}; {share:.0%} of calls fail with one of {', '.join(chosen)}"
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=60.0)

    def pick(path: str) -> str | None:
        with rng_lock:
            stats.calls += 1
            if not app.state.enabled or path.startswith(exempt_prefixes):
                return None
            if rng.random() >= share:
                return None
            kind = rng.choice(chosen)
            stats.faults[kind] += 1
            return kind

    async def forward(request: Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.body()
        resp = await client.request(request.method, request.url.path, params=request.query_params.multi_items(),
                                    headers=headers, content=body)
        with rng_lock:
            stats.forwarded += 1
        return resp

    def broken(status: int = 200) -> StreamingResponse:
        async def cut() -> Any:
            yield b'{"partial": '
            raise ConnectionResetError("fault proxy: connection reset mid-answer")

        return StreamingResponse(cut(), status_code=status, headers={"content-length": "4096"},
                                 media_type="application/json")

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def proxy(request: Request, path: str) -> Response:
        kind = pick(request.url.path)
        if kind in ("503", "500"):
            return JSONResponse({"error": f"fault proxy: injected {kind}"}, status_code=int(kind),
                                headers={"Retry-After": "0"} if kind == "503" else None)
        if kind == "429":
            return JSONResponse({"error": "fault proxy: injected rate limit"}, status_code=429,
                                headers={"Retry-After": str(rng.choice((0, 1)))})
        if kind == "reset":
            return broken()
        if kind == "stall":
            await asyncio.sleep(stall)
            return JSONResponse({"error": "fault proxy: stalled"}, status_code=504)
        if kind == "fault200":
            return JSONResponse({"Fault": {"type": "SystemFault", "Error": [{"Message": "fault proxy: injected"}]}},
                                status_code=200)
        resp = await forward(request)
        if kind == "503_after":
            return JSONResponse({"error": "fault proxy: answer lost after the target applied the call"},
                                status_code=503, headers={"Retry-After": "0"})
        if kind == "reset_after":
            return broken(resp.status_code)
        if kind == "stall_after":
            await asyncio.sleep(stall)
            return JSONResponse({"error": "fault proxy: stalled after the target applied the call"}, status_code=504)
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        return Response(resp.content, status_code=resp.status_code, headers=headers)

    return app
