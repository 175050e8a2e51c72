"""Signed webhook ingress: ``POST /webhooks/{system}``.

A delivery carries two headers::

    X-Ledgerbridge-Timestamp: 1796035200                  (Unix seconds when the sender signed)
    X-Ledgerbridge-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + raw body)>

The secret is the system's ``secrets.webhook`` reference in the configuration (``${env:..}`` / ``${file:..}``);
``secrets.webhook_previous``, when set, is accepted too (rotation). The body is one business event
(:data:`ledgerbridge.model.events.AnyEvent`, discriminated by ``event_type``): a time-entry or expense event (it
lands in the inbox), or any event type a configured subscription listens to (``project.approved``...).

Subscriptions: an accepted event that matches configured subscriptions (``subscriptions:``, docs/sync-events.md)
starts their chains through :func:`ledgerbridge.flows.subscriptions.publish` after the inbox commit (workflow id
``sub:<subscription>:<event idempotency key>``: a duplicate delivery starts nothing twice); the answer lists the
chains' workflow ids in ``chains``. Chains need the durable runtime in this process: without it (``--api-only``)
such an event is refused with ``503`` before anything is stored.

Answers:

- ``202`` ``{"event_id", "idempotency_key", "duplicate", "chains", "trace_id"}`` — the record is in the inbox
  (committed) and the matching chains are enqueued before the answer; a delivery of a version already received
  answers ``duplicate: true`` and has no effect;
- ``401`` missing/bad signature or a timestamp outside the tolerance (stale); ``409`` the *identical* signed
  request was already accepted within the tolerance (a replay: nothing to do, it was stored the first time);
- ``403`` the system has no webhook secret configured; ``404`` no such system; ``413`` body too large;
- ``422`` the body is not a valid event: ``errors`` lists each field (``loc``) with the rule broken; nothing is
  stored and no chain starts; ``503`` the event has subscriptions but the runtime does not run in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from ledgerbridge import runtime as rt
from ledgerbridge.flows import subscriptions as subs
from ledgerbridge.model.entities import ApprovalStatus
from ledgerbridge.model.events import (
    AnyEvent,
    ExpenseApproved,
    ExpenseEdited,
    ExpenseRecalled,
    ExpenseRejected,
    TimeEntryApproved,
    TimeEntryEdited,
    TimeEntryRecalled,
    TimeEntryRejected,
)
from ledgerbridge.service.logs import get_logger
from ledgerbridge.service.tracing import trace_id_hex

TIMESTAMP_HEADER = "X-Ledgerbridge-Timestamp"
SIGNATURE_HEADER = "X-Ledgerbridge-Signature"
SECRET_KEYS = ("webhook", "webhook_previous")

_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyEvent)
#: event type -> the approval status its entry must carry (None: any)
_STATUS_OF: dict[type, ApprovalStatus | None] = {
    TimeEntryApproved: ApprovalStatus.APPROVED, TimeEntryRecalled: ApprovalStatus.RECALLED,
    TimeEntryRejected: ApprovalStatus.REJECTED, TimeEntryEdited: None,
    ExpenseApproved: ApprovalStatus.APPROVED, ExpenseRecalled: ApprovalStatus.RECALLED,
    ExpenseRejected: ApprovalStatus.REJECTED, ExpenseEdited: None,
}

log = get_logger()


#: A JSON escape of a UTF-16 surrogate (``\ud800``-``\udfff``): fine in pairs, not alone (then not storable text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The signature header value for ``body`` signed at ``timestamp``: ``sha256=<hex>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def signed_headers(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Both headers for a delivery of ``body`` (senders, tests and the benchmark use this)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body),
            "Content-Type": "application/json"}


class ReplayGuard:
    """Signatures accepted within the tolerance (per process): the same signed request again is a replay."""

    def __init__(self, tolerance_seconds: int) -> None:
        self.tolerance = tolerance_seconds
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, signature: str) -> bool:
        with self._lock:
            exp = self._seen.get(signature)
            return exp is not None and exp > time.time()

    def remember(self, signature: str, timestamp: int) -> None:
        now = time.time()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            self._seen[signature] = timestamp + self.tolerance + 1


class WebhookAccepted(BaseModel):
    event_id: str
    idempotency_key: str
    duplicate: bool
    held: bool = False  # the intake's drift gate parked it in the operational dead-letter queue
    chains: list[str] = []  # workflow ids of the subscription chains for this event (new or already there)
    trace_id: str | None


def event_to_record(event: Any) -> dict[str, Any]:
    """The intake record of a time-entry or expense event: ``entity, external_id, version, payload``."""
    if hasattr(event, "entry"):
        return {"entity": "time_entry", "external_id": event.entry.id, "version": event.entry.version,
                "payload": event.entry.model_dump(mode="json")}
    return {"entity": "expense", "external_id": event.expense.id, "version": event.expense.version,
            "payload": event.expense.model_dump(mode="json")}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=status)


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    return _error(422, f"invalid event: {where}: {first['msg']}"
                       + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""), errors=errors)


def _check_event(system: str, event: Any, subscribed: bool) -> list[dict[str, Any]]:
    """Business checks beyond the contract: the event must feed the transactional flow or a subscription, and agree
    with itself."""
    want = _STATUS_OF.get(type(event))
    if type(event) not in _STATUS_OF:
        if subscribed:
            return [] if event.source_system == system else [{
                "loc": ["body", "source_system"], "type": "system_mismatch",
                "msg": f"source_system {event.source_system!r} differs from the URL's system {system!r}"}]
        return [{"loc": ["body", "event_type"], "type": "not_accepted",
                 "msg": f"event type {event.event_type!r} is not taken by webhook ingress: it accepts time_entry.* "
                        "and expense.* events (they feed the transactional flow) and the event types a configured "
                        "subscription listens to"}]
    errs = []
    field = "entry" if hasattr(event, "entry") else "expense"
    item = getattr(event, field)
    if event.source_system != system:
        errs.append({"loc": ["body", "source_system"], "type": "system_mismatch",
                     "msg": f"source_system {event.source_system!r} differs from the URL's system {system!r}: "
                            f"post to /webhooks/{event.source_system} or fix the event"})
    if item.source_system != system:
        errs.append({"loc": ["body", field, "source_system"], "type": "system_mismatch",
                     "msg": f"{field}.source_system {item.source_system!r} differs from the URL's system {system!r}"})
    if want is not None and item.approval_status is not want:
        errs.append({"loc": ["body", field, "approval_status"], "type": "status_mismatch",
                     "msg": f"a {event.event_type} event must carry approval_status {want.value!r}, got "
                            f"{item.approval_status.value!r}"})
    return errs


def make_router() -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/{system}", status_code=202, response_model=WebhookAccepted,
        summary="Receive one signed business event (time entry or expense) from a source system",
        responses={401: {"description": "missing, bad or stale signature"},
                   403: {"description": "no webhook secret configured for the system"},
                   404: {"description": "unknown system"}, 409: {"description": "replayed delivery"},
                   413: {"description": "body too large"},
                   422: {"description": "not a valid event (errors list each field)"}},
        openapi_extra={"x-auth": "HMAC signature (X-Ledgerbridge-Timestamp, X-Ledgerbridge-Signature)",
                       "requestBody": {"required": True, "content": {"application/json": {
                           "schema": {"type": "object", "description": "one business event (AnyEvent)"}}}}},
    )
    async def receive_webhook(system: str, request: Request) -> Any:
        state = request.app.state
        started = time.perf_counter()
        metrics = state.metrics
        body = await request.body()

        def refuse(status: int, outcome: str, message: str, **extra: Any) -> JSONResponse:
            metrics.webhooks.labels(system=system if system in state.ctx.config.systems else "_unknown",
                                    outcome=outcome).inc()
            log.info("webhook.refused", system=system, outcome=outcome, status=status)
            return _error(status, message, **extra)

        sc = state.ctx.config.systems.get(system)
        if sc is None:
            return refuse(404, "unknown_system", f"no system named {system!r} is configured "
                                                 f"(configured: {', '.join(sorted(state.ctx.config.systems))})")
        secrets_ = [k for k in SECRET_KEYS if k in sc.secrets]
        if not secrets_:
            return refuse(403, "not_configured", f"system {system!r} takes no webhooks: it has no secrets.webhook "
                                                 "in the configuration (add e.g. webhook: ${env:PSA_WEBHOOK_SECRET})")
        if len(body) > state.settings.max_body_bytes:
            return refuse(413, "too_large", f"body of {len(body)} bytes exceeds {state.settings.max_body_bytes}")
        ts_raw = request.headers.get(TIMESTAMP_HEADER)
        sig = request.headers.get(SIGNATURE_HEADER, "")
        if not ts_raw or not sig:
            return refuse(401, "bad_signature", f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header: sign "
                                                "timestamp + '.' + body with HMAC-SHA256 (see docs/service.md)")
        try:
            ts = int(ts_raw)
        except ValueError:
            return refuse(401, "bad_signature", f"{TIMESTAMP_HEADER} must be Unix seconds, got {ts_raw[:20]!r}")
        skew = time.time() - ts
        tolerance = state.settings.webhook_tolerance_seconds
        if abs(skew) > tolerance:
            return refuse(401, "stale", f"stale delivery: timestamp is {int(skew)} s from now, tolerance is "
                                        f"{tolerance} s (re-sign with the current time; check the sender's clock)")
        try:
            values = [sc.secret(k) for k in secrets_]
        except Exception:
            return refuse(403, "not_configured", f"the webhook secret of system {system!r} cannot be resolved "
                                                 "(environment variable or file missing): fix the configuration")
        if not any(hmac.compare_digest(sig, sign(v, ts, body)) for v in values):
            return refuse(401, "bad_signature", "signature does not match: HMAC-SHA256 over timestamp + '.' + "
                                                "raw body with the system's webhook secret, sent as sha256=<hex>")
        guard: ReplayGuard = state.replay_guard
        if guard.seen(sig):
            return refuse(409, "replayed", "replayed delivery: this exact signed request was already accepted "
                                           "(it is stored; nothing to do)")
        try:
            data = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):  # valid JSON, but a lone \ud800-style escape is not Unicode text
                json.dumps(data, ensure_ascii=False).encode("utf-8")
        except ValueError as exc:  # UnicodeEncodeError is a ValueError
            return refuse(422, "invalid", f"body is not valid JSON text: {exc}",
                          errors=[{"loc": ["body"], "msg": f"not JSON text: {exc}", "type": "json_invalid"}])
        try:
            event = _EVENTS.validate_python(data)
        except ValidationError as exc:
            tag = data.get("event_type") if isinstance(data, dict) else None
            errors = [{"loc": ["body", *(e["loc"][1:] if e["loc"] and e["loc"][0] == tag else e["loc"])],
                       "msg": e["msg"], "type": e["type"]}
                      for e in exc.errors(include_url=False, include_input=False)]
            metrics.webhooks.labels(system=system, outcome="invalid").inc()
            return _invalid(errors)
        subscribed = bool(subs.matching(state.ctx.config, event.event_type))
        errs = _check_event(system, event, subscribed)
        if errs:
            metrics.webhooks.labels(system=system, outcome="invalid").inc()
            return _invalid(errs)
        if subscribed and not rt.Runtime.is_launched():
            return refuse(503, "no_runtime", f"subscriptions listen to {event.event_type} but the durable runtime "
                                             "does not run in this process (--api-only): send it to a process "
                                             "running the worker; nothing was stored")
        trace_id = trace_id_hex()
        with state.tracer.start_as_current_span("intake.accept") as span:
            span.set_attribute("ledgerbridge.system", system)
            span.set_attribute("ledgerbridge.event_id", event.event_id)
            if type(event) in _STATUS_OF:
                out = await asyncio.wrap_future(state.committer.submit(system, event_to_record(event)))
                key, new, held, batch = out.key, out.new, out.held, out.batch_id
                span.set_attribute("ledgerbridge.inbox_batch", batch)
            else:  # subscription-only event: the chains are the whole effect
                key, new, held, batch = event.idempotency_key, False, False, ""
            chains: list[str] = []
            if subscribed:  # also after an inbox duplicate: a start lost to a crash is made up (idempotent)
                published = await anyio.to_thread.run_sync(subs.publish, state.ctx, [event])
                chains = published.workflow_ids
                new = new or published.enqueued > 0
                span.set_attribute("ledgerbridge.chains_started", published.enqueued)
            span.set_attribute("ledgerbridge.duplicate", not new)
        guard.remember(sig, ts)
        duplicate = not new and not held
        outcome = "held" if held else "duplicate" if duplicate else "accepted"
        metrics.webhooks.labels(system=system, outcome=outcome).inc()
        metrics.accept_seconds.labels(system=system).observe(time.perf_counter() - started)
        log.info("webhook.accepted", system=system, event_id=event.event_id, idempotency_key=key,
                 duplicate=duplicate, held=held, inbox_batch=batch, chains=chains)
        return JSONResponse(WebhookAccepted(event_id=event.event_id, idempotency_key=key, duplicate=duplicate,
                                            held=held, chains=chains, trace_id=trace_id).model_dump(),
                            status_code=202)

    return router

