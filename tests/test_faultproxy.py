"""The fault proxy really fails calls before and after the target applies them: through it, a client using the
shared HTTP layer gets every keyed write applied exactly once, while un-keyed writes are duplicated by the lost
answers (so the proxy can expose a connector that is not idempotent)."""

from __future__ import annotations

import threading

import httpx
from fastapi import FastAPI, Request

from ledgerbridge.connectors.http import send
from ledgerbridge.testing.faultproxy import ALL_KINDS, create_app
from ledgerbridge.testing.sandbox import serve_in_thread


def _target() -> tuple[FastAPI, dict[str, int], list[str]]:
    api = FastAPI()
    keyed: dict[str, int] = {}
    naive: list[str] = []
    lock = threading.Lock()

    @api.put("/items/{key}")
    async def upsert(key: str, request: Request) -> dict[str, str]:
        await request.body()
        with lock:
            keyed[key] = keyed.get(key, 0) + 1
        return {"key": key}

    @api.post("/naive")
    async def create(request: Request) -> dict[str, int]:
        body = await request.json()
        with lock:
            naive.append(body["key"])
        return {"n": len(naive)}

    return api, keyed, naive


def test_keyed_writes_land_once_and_naive_writes_duplicate() -> None:
    target, keyed, naive = _target()
    with serve_in_thread(target) as upstream:
        proxy = create_app(upstream=upstream, share=0.3, seed=11, stall=0.3)
        with serve_in_thread(proxy) as base, httpx.Client(base_url=base, timeout=0.2) as http:
            for i in range(150):
                r = send(http, "PUT", f"/items/k{i}", system="faulty", attempts=12, json={"v": i},
                         sleep=lambda s: None)
                assert r.json() == {"key": f"k{i}"}
            for i in range(60):
                send(http, "POST", "/naive", system="faulty", attempts=12, json={"key": f"n{i}"},
                     sleep=lambda s: None)
        stats = proxy.state.stats.as_dict()
    assert set(keyed) == {f"k{i}" for i in range(150)}  # every keyed write applied...
    applied_more_than_once = sum(1 for n in keyed.values() if n > 1)
    assert applied_more_than_once > 0  # ...some more than once at the target (lost answers), harmlessly
    assert len(naive) > 60 and set(naive) == {f"n{i}" for i in range(60)}  # un-keyed: duplicates
    assert set(stats["faults"]) == set(ALL_KINDS), stats
    assert 0.2 < stats["fault_share"] < 0.4, stats


def test_share_zero_and_exempt_paths_forward_everything() -> None:
    target, keyed, _ = _target()
    with serve_in_thread(target) as upstream:
        proxy = create_app(upstream=upstream, share=1.0, exempt="/items")
        with serve_in_thread(proxy) as base:
            for i in range(5):
                assert httpx.put(f"{base}/items/a{i}", json={}).status_code == 200
    assert proxy.state.stats.as_dict()["faults"] == {} and len(keyed) == 5
