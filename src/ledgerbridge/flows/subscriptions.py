"""Event-driven orchestration: declarative subscriptions (event type -> actions) as durable sagas.

A subscription in config (``subscriptions:``; see docs/sync-events.md)::

    - name: project-onboarding
      event: project.approved          # an event_type of model/events.py AnyEvent
      key: project.id                  # dotted path into the event: events with one key run one at a time, in order
      mode: ordered                    # or parallel (every action at once)
      actions:
        - {name: erp, kind: create_erp_project, compensate: {kind: remove_erp_project}}
        - {name: notify, kind: webhook, options: {url: "https://..."}, retry: {max_attempts: 3}}

How it runs:

- :func:`publish` validates each incoming event against its contract (``AnyEvent``). An event that fails is put in
  the **operational** dead-letter queue with the validation errors (field, rule, message) and goes no further.
- Each valid event starts one durable workflow per matching subscription (``lb.subscription_chain``), enqueued on a
  **partitioned** queue whose partition key is ``<subscription>:<key value>``: each partition runs one chain at a
  time, in arrival order, while other keys interleave. The workflow id is ``sub:<subscription>:<event idempotency
  key>``, so a duplicate delivery of the same fact runs nothing twice.
- Each action is its own durable step with its own retry policy (``runtime.call_with_policy``: every attempt is a
  checkpointed step, waits are durable). Actions must be idempotent per attempt: webhooks carry an
  ``Idempotency-Key`` header, mart rows a primary key, ERP projects are created by lookup-before-create and bound in
  xref.
- On a permanent failure (a permanent/validation/conflict error, retries exhausted, or an unexpected exception) the
  compensations of the completed actions run in reverse order (saga), then the event goes to the operational
  dead-letter queue with the chain's state (each action's outcome, each compensation's outcome) and the trace id.
- The whole chain is one trace: the trace id is derived from the workflow id (stable across crash and resume), the
  chain is a span and every action (and compensation) a child span; the W3C ``traceparent`` travels on webhooks.

Action kinds live in a registry (:func:`register_action`); the built-in ones are ``create_erp_project``,
``remove_erp_project``, ``set_crm_status``, ``webhook``, ``mart``, ``mart_remove`` and ``log``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from ledgerbridge import runtime as rt
from ledgerbridge.config.schema import LedgerbridgeConfig, SubscriptionAction, SubscriptionConfig
from ledgerbridge.errors import LedgerbridgeError, PermanentError, RecordValidationError, classify_http
from ledgerbridge.flows.context import FlowContext, current
from ledgerbridge.model.entities import Project
from ledgerbridge.model.events import AnyEvent
from ledgerbridge.store import dead_letters, xref
from ledgerbridge.store.dead_letters import NewDeadLetter
from ledgerbridge.store.schema import xref as xref_t

try:  # OpenTelemetry is a dependency, but the chain must work without an SDK (spans are then no-ops)
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
except ImportError:  # pragma: no cover - opentelemetry-api is installed with ledgerbridge
    otel_trace = None  # type: ignore[assignment]

log = logging.getLogger("ledgerbridge.subscriptions")

FLOW = "subscriptions"
QUEUE = "lb-subscriptions"
DEFAULT_CONCURRENCY = 8
_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyEvent)
EVENT_TYPES = sorted(
    t.__pydantic_fields__["event_type"].default for t in AnyEvent.__origin__.__args__  # type: ignore[attr-defined]
)


# ---------------------------------------------------------------------------------------------------------------------
# action registry
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionCall:
    """What an action function gets: the flow context, the event (contract JSON), its options and the chain's ids.
    ``forward`` is set for compensations: the result the compensated action returned."""

    ctx: FlowContext
    subscription: str
    action: str
    kind: str
    event: dict[str, Any]
    event_key: str
    key: str
    options: dict[str, Any]
    trace_id: str
    span_id: str
    compensating: bool = False
    forward: dict[str, Any] | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.subscription}:{self.action}:{'undo:' if self.compensating else ''}{self.event_key}"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


ActionFn = Callable[[ActionCall], dict[str, Any]]
_ACTIONS: dict[str, ActionFn] = {}


def register_action(kind: str) -> Callable[[ActionFn], ActionFn]:
    """Register an action kind (``fn(call) -> JSON dict``); it must be idempotent per call (use
    ``call.idempotency_key``) and raise a ``LedgerbridgeError`` with the right kind when it fails."""

    def deco(fn: ActionFn) -> ActionFn:
        _ACTIONS[kind] = fn
        return fn

    return deco


def action_kinds() -> list[str]:
    return sorted(_ACTIONS)


def _project(call: ActionCall) -> Project:
    data = call.event.get("project")
    if not isinstance(data, dict):
        raise RecordValidationError(f"subscription {call.subscription} action {call.action} ({call.kind}): the event "
                                    f"{call.event.get('event_type')} carries no project — subscribe this action to "
                                    "project events only", code="LB-V001")
    return Project.model_validate(data)


def _target_system(call: ActionCall, project: Project, route: str) -> str:
    system = call.options.get("system")
    if system is None:
        targets = call.ctx.config.routing.for_entity(project.legal_entity_id)
        system = getattr(targets, route)
    if system is None or system not in call.ctx.config.systems:
        raise PermanentError(f"subscription {call.subscription} action {call.action}: no system to {route} for legal "
                             f"entity {project.legal_entity_id} (got {system!r}) — set options.system or "
                             f"routing.{route}", code="LB-P001")
    return str(system)


@register_action("create_erp_project")
def _create_erp_project(call: ActionCall) -> dict[str, Any]:
    """Create the project in the ERP (``options.system``, else the entity's routed ledger system) when its connector can
    (``push_projects``, e.g. Tryton: lookup-before-create), and bind it in xref either way. Without such a method
    the binding alone is recorded (external id ``ledgerbridge:<project id>``), to be picked up by master data."""
    project = _project(call)
    system = _target_system(call, project, "ledger")
    connector = call.ctx.connector(system)
    with call.ctx.engine.connect() as conn:
        before = xref.lookup_many(conn, "project", system, [project.id]).get(project.id)
    pushed = hasattr(connector, "push_projects")
    if pushed:
        external = str(connector.push_projects([project])[project.id])
    else:
        external = before.external_id if before is not None else f"ledgerbridge:{project.id}"
    with call.ctx.engine.begin() as conn:
        xref.upsert_many(conn, [xref.XrefEntry("project", project.id, system, external, version_synced=call.event_key)])
    return {"system": system, "project": project.id, "external_id": external, "pushed": pushed,
            "new_binding": before is None}


@register_action("remove_erp_project")
def _remove_erp_project(call: ActionCall) -> dict[str, Any]:
    """Compensation of ``create_erp_project``: drop the binding it created (a binding that existed before the
    chain is left alone). A project pushed into an ERP stays there, unbound, for a person to archive."""
    fwd = call.forward or {}
    if not fwd.get("new_binding"):
        return {"removed": 0, "note": "the binding existed before this chain: kept"}
    with call.ctx.engine.begin() as conn:
        n = conn.execute(sa.delete(xref_t).where(
            xref_t.c.canonical_type == "project", xref_t.c.canonical_id == fwd["project"],
            xref_t.c.system == fwd["system"], xref_t.c.external_id == fwd["external_id"])).rowcount
    note = "archive it in the ERP by hand" if fwd.get("pushed") else "nothing was created in the ERP"
    return {"removed": n, "system": fwd["system"], "external_id": fwd["external_id"], "note": note}


_HTTP_CLIENT: httpx.Client | None = None
_HTTP_CLIENT_LOCK = threading.Lock()


def _http_client() -> httpx.Client:
    """One pooled client for every action call of the process: ``httpx.request`` would build a client, and with
    it a TLS context (loading the CA bundle: several ms of CPU), per call and open a new connection each time —
    the largest cost of a near-real-time chain (bench/bench_latency.py). httpx clients are thread-safe."""
    global _HTTP_CLIENT
    if _HTTP_CLIENT is not None:  # no lock on the hot path (32 chains call at once)
        return _HTTP_CLIENT
    with _HTTP_CLIENT_LOCK:
        if _HTTP_CLIENT is None:
            _HTTP_CLIENT = httpx.Client()
        return _HTTP_CLIENT


def _http(call: ActionCall, method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Idempotency-Key": call.idempotency_key, "traceparent": call.traceparent,
               **{str(k): str(v) for k, v in (call.options.get("headers") or {}).items()}}
    timeout = float(call.options.get("timeout_seconds", 10))
    system = str(call.options.get("system_label", "webhook"))
    from ledgerbridge.service.metrics import record_api_call

    try:
        resp = _http_client().request(method, url, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:  # counted, then classified by the runtime's retry policy (timeouts: transient)
        record_api_call(system, "timeout" if isinstance(exc, httpx.TimeoutException) else "error")
        raise
    record_api_call(system, resp.status_code)
    err = classify_http(resp.status_code, dict(resp.headers), resp.content, system=system)
    if err is not None:
        err.details.setdefault("url", url)
        raise err
    return {"status_code": resp.status_code, "url": url}


def _url(call: ActionCall) -> str:
    url = call.options.get("url")
    if not url:
        raise PermanentError(f"subscription {call.subscription} action {call.action} ({call.kind}): options.url is "
                             "missing — set the endpoint to call", code="LB-P001")
    return str(url)


@register_action("webhook")
def _webhook(call: ActionCall) -> dict[str, Any]:
    """POST (or ``options.method``) the event as JSON to ``options.url`` with ``Idempotency-Key`` and
    ``traceparent`` headers. 2xx = done; 429/5xx/timeouts are transient (retried by the action's policy); other
    4xx are permanent (compensate)."""
    body = {"subscription": call.subscription, "action": call.action, "compensation": call.compensating,
            "event_type": call.event.get("event_type"), "key": call.key, "event": call.event,
            "trace_id": call.trace_id}
    if call.forward is not None:
        body["undo"] = call.forward
    return _http(call, str(call.options.get("method", "POST")).upper(), _url(call), body)


@register_action("set_crm_status")
def _set_crm_status(call: ActionCall) -> dict[str, Any]:
    """Set the project's status in the CRM/PSA: through ``options.system``'s connector when it has
    ``set_project_status(project_id, status)``, else by PATCHing ``{"project_id", "status"}`` to ``options.url``."""
    project = _project(call)
    status = call.options.get("status")
    if not status:
        raise PermanentError(f"subscription {call.subscription} action {call.action}: options.status is missing",
                             code="LB-P001")
    system = call.options.get("system")
    if system is not None:
        connector = call.ctx.connector(str(system))
        if not hasattr(connector, "set_project_status"):
            raise PermanentError(f"subscription {call.subscription} action {call.action}: system {system}'s "
                                 "connector cannot set a project status — use options.url (an HTTP endpoint)",
                                 code="LB-P001")
        connector.set_project_status(project.id, str(status))
        return {"system": system, "project": project.id, "status": status}
    out = _http(call, str(call.options.get("method", "PATCH")).upper(), _url(call),
                {"project_id": project.id, "status": status, "trace_id": call.trace_id})
    return {**out, "project": project.id, "status": status}


_MART_LOCKS: dict[str, threading.Lock] = {}
_MART_LOCKS_GUARD = threading.Lock()


def _mart_path(call: ActionCall) -> Path:
    path = call.options.get("path")
    if not path:
        raise PermanentError(f"subscription {call.subscription} action {call.action}: options.path (a .duckdb or "
                             ".sqlite file) is missing", code="LB-P001")
    return call.ctx.resolve_path(str(path))


def _mart_table(call: ActionCall) -> str:
    table = str(call.options.get("table", "subscription_events"))
    if not table.replace("_", "").isalnum():
        raise PermanentError(f"subscription {call.subscription} action {call.action}: table {table!r} — use "
                             "letters, digits and _ only", code="LB-P001")
    return table


def _mart_exec(path: Path, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
    with _MART_LOCKS_GUARD:
        lock = _MART_LOCKS.setdefault(str(path), threading.Lock())
    path.parent.mkdir(parents=True, exist_ok=True)
    changed = 0
    with lock:
        if path.suffix == ".duckdb":
            import duckdb

            duck = duckdb.connect(str(path))
            try:
                for sql, params in statements:
                    duck.execute(sql, list(params))
                    row = duck.fetchone() if sql.lstrip().upper().startswith(("INSERT", "DELETE")) else None
                    changed += int(row[0]) if row else 0
            finally:
                duck.close()
        else:
            con = sqlite3.connect(path, timeout=30)
            try:
                with con:
                    for sql, params in statements:
                        changed += max(con.execute(sql, list(params)).rowcount, 0)
            finally:
                con.close()
    return changed


def _mart_ddl(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (subscription VARCHAR NOT NULL, event_key VARCHAR NOT NULL, "
            "action VARCHAR NOT NULL, event_type VARCHAR NOT NULL, event_key_value VARCHAR NOT NULL, "
            "occurred_at VARCHAR NOT NULL, trace_id VARCHAR NOT NULL, payload VARCHAR NOT NULL, "
            "recorded_at VARCHAR NOT NULL, PRIMARY KEY (subscription, event_key, action))")


@register_action("mart")
def _mart(call: ActionCall) -> dict[str, Any]:
    """Append the event to a reporting table (``options.path``: ``.duckdb`` file or SQLite; ``options.table``,
    default ``subscription_events``); the row's key is (subscription, event, action), so a retry adds nothing."""
    path, table = _mart_path(call), _mart_table(call)
    row = [call.subscription, call.event_key, call.action, str(call.event.get("event_type")), call.key,
           str(call.event.get("occurred_at")), call.trace_id, json.dumps(call.event, sort_keys=True),
           dt.datetime.now(dt.UTC).isoformat()]
    n = _mart_exec(path, [(_mart_ddl(table), ()),
                          (f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", row)])
    return {"path": str(path), "table": table, "inserted": n}


@register_action("mart_remove")
def _mart_remove(call: ActionCall) -> dict[str, Any]:
    """Compensation of ``mart``: delete the row the forward action appended (same path/table options)."""
    fwd = call.forward or {}
    path = Path(fwd["path"]) if fwd.get("path") else _mart_path(call)
    table = str(fwd.get("table") or _mart_table(call))
    if not path.exists():
        return {"removed": 0}
    n = _mart_exec(path, [(_mart_ddl(table), ()),
                          (f"DELETE FROM {table} WHERE subscription = ? AND event_key = ? AND action = ?",
                           [call.subscription, call.event_key, str(call.options.get("action", call.action))])])
    return {"path": str(path), "table": table, "removed": n}


@register_action("log")
def _log(call: ActionCall) -> dict[str, Any]:
    """Write a log line (``options.message``, a format string over the event's top-level fields and ``key``)."""
    template = str(call.options.get("message", "{event_type} {key}"))
    flat = {k: v for k, v in call.event.items() if not isinstance(v, dict | list)}
    try:
        message = template.format(key=call.key, subscription=call.subscription, **flat)
    except (KeyError, IndexError, ValueError) as exc:
        raise PermanentError(f"subscription {call.subscription} action {call.action}: message template {template!r} "
                             f"names an unknown field ({exc}); known: {sorted(flat)}", code="LB-P001") from exc
    log.info(message, extra={"subscription": call.subscription, "action": call.action, "trace_id": call.trace_id})
    return {"message": message}


# ---------------------------------------------------------------------------------------------------------------------
# config check
# ---------------------------------------------------------------------------------------------------------------------


def check_subscriptions(cfg: LedgerbridgeConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Unknown event types or action kinds, repeated names, key paths the event contract does not have."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, sub in enumerate(cfg.subscriptions):
        base: tuple[str | int, ...] = ("subscriptions", i)
        if sub.name in seen:
            problems.append(((*base, "name"), f"subscription name {sub.name!r} is used twice: names must be unique"))
        seen.add(sub.name)
        if sub.event not in EVENT_TYPES:
            problems.append(((*base, "event"), f"unknown event type {sub.event!r}; use one of: "
                                               f"{', '.join(EVENT_TYPES)}"))
        names: set[str] = set()
        for j, action in enumerate(sub.actions):
            if action.name in names:
                problems.append(((*base, "actions", j, "name"), f"action name {action.name!r} repeated"))
            names.add(action.name)
            if action.kind not in _ACTIONS:
                problems.append(((*base, "actions", j, "kind"), f"unknown action kind {action.kind!r}; use one of: "
                                                                f"{', '.join(action_kinds())}"))
            if action.compensate is not None and action.compensate.kind not in _ACTIONS:
                problems.append(((*base, "actions", j, "compensate", "kind"),
                                 f"unknown action kind {action.compensate.kind!r}; use one of: "
                                 f"{', '.join(action_kinds())}"))
    return problems


def _subscription(ctx: FlowContext, name: str) -> SubscriptionConfig:
    for sub in ctx.config.subscriptions:
        if sub.name == name:
            return sub
    raise PermanentError(f"subscription {name!r} is not in the configuration (known: "
                         f"{[s.name for s in ctx.config.subscriptions]}) — it was removed while events were queued; "
                         "add it back and replay the dead letter", code="LB-P001")


# ---------------------------------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------------------------------


_tracer_provider: Any = None


def set_tracer_provider(provider: Any) -> None:
    """Use this OpenTelemetry tracer provider for chain spans (default: the global one)."""
    global _tracer_provider
    _tracer_provider = provider


def trace_ids(workflow_id: str) -> tuple[str, str]:
    """The chain's trace id (32 hex) and root parent span id (16 hex), derived from its workflow id: the same after
    a crash and resume, so everything the chain does lands in one trace."""
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()
    return digest[:32], digest[32:48]


def _tracer() -> Any:
    if otel_trace is None:  # pragma: no cover
        return None
    provider = _tracer_provider or otel_trace.get_tracer_provider()
    return provider.get_tracer("ledgerbridge.subscriptions")


def _parent_context(trace_id: str, span_id: str) -> Any:
    sc = SpanContext(trace_id=int(trace_id, 16), span_id=int(span_id, 16), is_remote=True,
                     trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return otel_trace.set_span_in_context(NonRecordingSpan(sc))


def _traced(fn: ActionFn, call: ActionCall, span_name: str, attrs: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Run the action inside a span that is a child of the chain (only when the step really runs, not on replay)."""

    def run() -> dict[str, Any]:
        tracer = _tracer()
        if tracer is None:  # pragma: no cover
            return fn(call)
        with tracer.start_as_current_span(span_name, context=_parent_context(call.trace_id, call.span_id),
                                           attributes=attrs, record_exception=True) as span:
            try:
                return fn(call)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                raise

    return run


# ---------------------------------------------------------------------------------------------------------------------
# the durable chain
# ---------------------------------------------------------------------------------------------------------------------


def _error_of(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LedgerbridgeError):
        return exc.to_dict()
    return {"type": type(exc).__name__, "kind": "permanent", "code": "LB-P000", "message": str(exc)}


def _run(action_name: str, kind: str, options: dict[str, Any], retry: SubscriptionAction | None, sub: str,
         event: dict[str, Any], meta: dict[str, Any], *, compensating: bool = False,
         forward: dict[str, Any] | None = None) -> dict[str, Any]:
    """One action (or compensation) under its retry policy, each attempt a durable step; never raises."""
    fn = _ACTIONS.get(kind)
    policy = (retry.retry if retry is not None else SubscriptionAction(name="x", kind=kind).retry).to_runtime()
    call = ActionCall(current(), sub, action_name, kind, event, meta["event_key"], meta["key"], options,
                      meta["trace_id"], meta["span_id"], compensating, forward)
    span = f"{'compensate' if compensating else 'action'} {action_name}"
    attrs = {"lb.subscription": sub, "lb.action": action_name, "lb.kind": kind, "lb.key": meta["key"],
             "lb.event_key": meta["event_key"], "lb.compensation": compensating}
    try:
        if fn is None:
            raise PermanentError(f"action kind {kind!r} is not registered (known: {action_kinds()})", code="LB-P001")
        out = rt.call_with_policy(_traced(fn, call, span, attrs), policy,
                                  name=f"sub.{sub}.{'undo.' if compensating else ''}{action_name}",
                                  system=str(options.get("system", kind)))
        return {"action": action_name, "kind": kind, "ok": True, "result": out}
    except Exception as exc:  # the chain records it and compensates; nothing is lost
        return {"action": action_name, "kind": kind, "ok": False, "error": _error_of(exc)}


def _definition(name: str, meta: dict[str, Any]) -> SubscriptionConfig:
    """The subscription as it was when the event was published (kept in the workflow input, so a chain resumed after
    a crash or a config change runs the definition it started with); the configured one for older inputs."""
    if isinstance(meta.get("definition"), dict):
        return SubscriptionConfig.model_validate(meta["definition"])
    return _subscription(current(), name)


@rt.workflow("lb.subscription_action")
def action_workflow(subscription: str, index: int, event: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """One action of a ``parallel`` subscription as its own child workflow (so actions run at once)."""
    action = _definition(subscription, meta).actions[index]
    return _run(action.name, action.kind, dict(action.options), action, subscription, event, meta)


@rt.step("lb.subscription_dead_letter")
def _dead_letter_step(letter: dict[str, Any]) -> str:
    with current().engine.begin() as conn:
        existing = [lt for lt in dead_letters.list_letters(conn, flow=FLOW, system=letter["system"],
                                                           entity=letter["entity"], limit=10_000)
                    if lt.item_key == letter["item_key"] and lt.payload.get("workflow_id") == letter["payload"][
                        "workflow_id"]]
        if existing:  # the step ran before a crash: the letter is there already
            return existing[0].id
        return dead_letters.add(conn, [NewDeadLetter(**letter)])[0]


@rt.workflow("lb.subscription_chain")
def chain_workflow(subscription: str, event: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Run a subscription's actions for one event; on a permanent failure compensate the completed actions in
    reverse order and dead-letter the event with the chain's state (see the module doc)."""
    sub = _definition(subscription, meta)
    wf_id = rt.current_workflow_id() or f"sub:{subscription}:{meta['event_key']}"
    trace_id, root = trace_ids(wf_id)
    meta = {**meta, "trace_id": trace_id, "span_id": root}
    tracer = _tracer()
    chain_span = None
    if tracer is not None:
        chain_span = tracer.start_span(f"subscription {subscription}", context=_parent_context(trace_id, root),
                                       attributes={"lb.subscription": subscription, "lb.key": meta["key"],
                                                   "lb.event_key": meta["event_key"], "lb.workflow_id": wf_id})
        meta["span_id"] = format(chain_span.get_span_context().span_id, "016x") \
            if chain_span.get_span_context().is_valid else root
    outcomes: list[dict[str, Any]] = []
    if sub.mode == "parallel":
        children = [rt.start(action_workflow, subscription, i, event, meta, workflow_id=f"{wf_id}:action:{a.name}")
                    for i, a in enumerate(sub.actions)]
        outcomes = [rt.result(c) for c in children]
    else:
        for action in sub.actions:
            out = _run(action.name, action.kind, dict(action.options), action, subscription, event, meta)
            outcomes.append(out)
            if not out["ok"]:
                break
    failed = [o for o in outcomes if not o["ok"]]
    state: dict[str, Any] = {"subscription": subscription, "workflow_id": wf_id, "trace_id": trace_id,
                             "key": meta["key"], "event_key": meta["event_key"], "mode": sub.mode,
                             "actions": outcomes, "compensations": []}
    if not failed:
        state["status"] = "completed"
    else:
        by_name = {a.name: a for a in sub.actions}
        done = [o for o in outcomes if o["ok"]]
        for o in reversed(done):
            action = by_name[o["action"]]
            if action.compensate is None:
                state["compensations"].append({"action": action.name, "ok": True, "skipped": "no compensation"})
                continue
            opts = {**dict(action.options), **dict(action.compensate.options)}
            c = _run(action.name, action.compensate.kind, opts, action, subscription, event, meta,
                     compensating=True, forward=o["result"])
            state["compensations"].append(c)
        state["status"] = "compensated" if all(c["ok"] for c in state["compensations"]) else "compensation_failed"
        first = failed[0]
        err = first["error"]
        skipped = [a.name for a in sub.actions if a.name not in {o["action"] for o in outcomes}]
        state["not_run"] = skipped
        undone = [c["action"] for c in state["compensations"] if c.get("ok") and not c.get("skipped")]
        text = (f"subscription {subscription}: action {first['action']} ({first['kind']}) failed for good for "
                f"{meta['key']} — {err.get('message')}. Compensated: {undone or 'nothing'}"
                + (f"; FAILED compensations: {[c['action'] for c in state['compensations'] if not c['ok']]}"
                   if state["status"] == "compensation_failed" else "")
                + f"; not run: {skipped or 'none'}. Fix the cause, then replay (trace {trace_id}).")
        state["dead_letter"] = _dead_letter_step({
            "queue": "operational", "flow": FLOW, "system": str(event.get("source_system", "unknown")),
            "entity": str(event.get("event_type", "unknown")), "item_key": f"{subscription}:{meta['event_key']}",
            "payload": {"event": event, "chain": state, "workflow_id": wf_id, "trace_id": trace_id},
            "error_kind": str(err.get("kind") or "permanent"), "error_code": str(err.get("code") or "LB-P000"),
            "error_text": text})
    if chain_span is not None:
        chain_span.set_attribute("lb.status", state["status"])
        if failed:
            chain_span.set_status(Status(StatusCode.ERROR, state["status"]))
        chain_span.end()
    return state


# ---------------------------------------------------------------------------------------------------------------------
# publishing events
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PublishResult:
    workflow_ids: list[str] = field(default_factory=list)  # every chain for the events (new and existing)
    enqueued: int = 0
    duplicates: int = 0
    dead_lettered: list[str] = field(default_factory=list)  # letter ids (contract failures, missing keys)
    unmatched: int = 0  # valid events no subscription listens to


def key_of(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the event's JSON (``project.id``), or None."""
    cur: Any = event
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def matching(cfg: LedgerbridgeConfig, event_type: str) -> list[SubscriptionConfig]:
    """The configured subscriptions listening to ``event_type`` (webhook ingress starts their chains too)."""
    return [s for s in cfg.subscriptions if s.event == event_type]


def ensure_queue(concurrency: int = DEFAULT_CONCURRENCY) -> None:
    """Register the partitioned subscriptions queue (one chain at a time per key) if this process has not."""
    if QUEUE not in rt.Runtime.current().queues:
        rt.register_queues([rt.QueueSpec(QUEUE, concurrency=concurrency, partitioned=True, partition_concurrency=1)])


def _contract_letter(raw: Any, exc: ValidationError) -> NewDeadLetter:
    raw_map = raw if isinstance(raw, Mapping) else {"value": raw}
    errors = json.loads(exc.json(include_url=False, include_input=False))
    where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:10])
    ident = raw_map.get("event_id") or hashlib.sha256(json.dumps(raw_map, sort_keys=True, default=str)
                                                      .encode()).hexdigest()[:16]
    etype = str(raw_map.get("event_type") or "unknown")
    return NewDeadLetter(
        "operational", FLOW, str(raw_map.get("source_system") or "unknown"), etype, f"event:{ident}",
        {"event": json.loads(json.dumps(raw_map, default=str)), "errors": errors}, "validation", "event.contract",
        f"event {ident} ({etype}) fails its contract: {where} — fix the producer (or the mapping) and send it again")


def publish(ctx: FlowContext, events: Iterable[Any], *, concurrency: int = DEFAULT_CONCURRENCY) -> PublishResult:
    """Validate events (dicts or model instances) and start every matching subscription's chain for each.

    Runs outside workflow code with the runtime launched; returns at once (wait with :func:`wait`). Invalid events
    and events without a value at the subscription's key are dead-lettered (operational) with the reasons."""
    res = PublishResult()
    letters: list[NewDeadLetter] = []
    items: list[tuple[list[Any], str, str]] = []
    for raw in events:
        try:
            ev = raw if hasattr(raw, "idempotency_key") else _EVENTS.validate_python(raw)
        except ValidationError as exc:
            letters.append(_contract_letter(raw, exc))
            continue
        data = ev.model_dump(mode="json")
        subs = matching(ctx.config, data["event_type"])
        if not subs:
            res.unmatched += 1
        for sub in subs:
            value = key_of(data, sub.key)
            if value is None or value == "":
                letters.append(NewDeadLetter(
                    "operational", FLOW, ev.source_system, data["event_type"], f"{sub.name}:{ev.idempotency_key}",
                    {"event": data, "subscription": sub.name}, "validation", "event.key_missing",
                    f"subscription {sub.name}: event {ev.event_id} has no value at key {sub.key!r} — fix the "
                    "subscription's key path or the producer"))
                continue
            meta = {"event_key": ev.idempotency_key, "key": str(value), "definition": sub.model_dump(mode="json")}
            items.append(([sub.name, data, meta], f"sub:{sub.name}:{ev.idempotency_key}", f"{sub.name}:{value}"))
    if letters:
        with ctx.engine.begin() as conn:
            res.dead_lettered = dead_letters.add(conn, letters)
    if items:
        ensure_queue(concurrency)
        seen: set[str] = set()
        unique = [it for it in items if not (it[1] in seen or seen.add(it[1]))]  # type: ignore[func-returns-value]
        inserted = rt.enqueue_many(QUEUE, chain_workflow, unique)
        res.workflow_ids = [it[1] for it in unique]
        res.enqueued = len(inserted)
        res.duplicates = len(items) - len(inserted)
    return res


def wait(workflow_ids: Sequence[str], *, timeout_seconds: float | None = 120) -> list[dict[str, Any]]:
    """The chains' final states (completed / compensated / compensation_failed), in the order given."""
    return [rt.result(w, timeout_seconds=timeout_seconds) for w in workflow_ids]


def project_approved_events(projects: Iterable[Project], source_system: str) -> list[dict[str, Any]]:
    """ProjectApproved events for reference projects (the demo's chain input), deterministic per project."""
    out = []
    for p in projects:
        out.append({"event_type": "project.approved", "event_id": f"{source_system}:project:{p.id}:approved",
                    "source_system": source_system,
                    "occurred_at": dt.datetime.combine(p.start_date, dt.time(9), tzinfo=dt.UTC).isoformat(),
                    "project": p.model_dump(mode="json")})
    return out


def replay(ctx: FlowContext, letters: Sequence[dead_letters.DeadLetter], *, actor: str = "cli") -> dict[str, list[str]]:
    """Re-run the chains of open subscription dead letters with the current configuration, under new workflow ids
    (``...:replay-<n>``); a contract letter is validated again first (it stays open if it still fails). The letters
    are closed as replayed (audited). Runtime launched, ``ctx`` current. Returns letter ids by outcome."""
    from ledgerbridge.store import audit

    out: dict[str, list[str]] = {"replayed": [], "failed": [], "skipped": []}
    items: list[tuple[list[Any], str, str]] = []
    with ctx.engine.connect() as conn:  # re-read: a letter may have been replayed or discarded meanwhile
        fresh = [dead_letters.get(conn, lt.id) or lt for lt in letters]
    for lt in fresh:
        if lt.flow != FLOW or lt.status != "open":
            out["skipped"].append(lt.id)
            continue
        chain = lt.payload.get("chain") if isinstance(lt.payload, dict) else None
        event = lt.payload.get("event") if isinstance(lt.payload, dict) else None
        if chain is None:  # contract or key letter: publish the stored event again (validated again)
            res = publish(ctx, [event])
            (out["failed"] if res.dead_lettered else out["replayed"]).append(lt.id)
            continue
        sub = _subscription(ctx, chain["subscription"])
        value = key_of(event or {}, sub.key)
        items.append(([sub.name, event, {"event_key": chain["event_key"], "key": str(value),
                                         "definition": sub.model_dump(mode="json")}],
                      f"sub:{sub.name}:{chain['event_key']}:replay-{lt.attempts}", f"{sub.name}:{value}"))
        out["replayed"].append(lt.id)
    if items:
        ensure_queue()
        rt.enqueue_many(QUEUE, chain_workflow, items)
    with ctx.engine.begin() as conn:
        dead_letters.mark(conn, out["replayed"], "replayed", resolution="chain re-run with the current configuration")
        for lid in out["replayed"]:
            audit.append(conn, actor, "dlq.replay.replayed", f"dead_letter:{lid}", {"flow": FLOW})
    return out


DEMO_SUBSCRIPTION = "project-onboarding"


def demo_subscription(mart_path: Path) -> SubscriptionConfig:
    """The main job's chain: ProjectApproved -> ERP project binding -> reporting table -> log line."""
    return SubscriptionConfig.model_validate({
        "name": DEMO_SUBSCRIPTION, "event": "project.approved", "key": "project.id", "mode": "ordered",
        "actions": [
            {"name": "erp_project", "kind": "create_erp_project", "compensate": {"kind": "remove_erp_project"}},
            {"name": "mart", "kind": "mart", "options": {"path": str(mart_path), "table": "approved_projects"},
             "compensate": {"kind": "mart_remove"}},
            {"name": "log", "kind": "log", "options": {"message": "project {key} onboarded ({event_id})"}},
        ]})


def demo_chain(ctx: FlowContext, workdir: Path, source_system: str) -> dict[str, Any]:
    """Run the demo chain for every reference project (runtime launched, context current). Uses the configured
    ``project.approved`` subscriptions, or adds :func:`demo_subscription` when there are none. Idempotent: a
    re-run finds the chains already done (same event keys, same workflow ids)."""
    mart = Path(workdir).resolve() / "events.duckdb"  # absolute: actions resolve relative paths elsewhere
    if not any(sub.event == "project.approved" for sub in ctx.config.subscriptions):
        ctx.config = ctx.config.model_copy(update={"subscriptions": [*ctx.config.subscriptions,
                                                                     demo_subscription(mart)]})
    events = project_approved_events(sorted(ctx.reference.projects.values(), key=lambda p: p.id), source_system)
    res = publish(ctx, events)
    states = wait(res.workflow_ids)
    by_status: dict[str, int] = {}
    for st in states:
        by_status[st["status"]] = by_status.get(st["status"], 0) + 1
    rows = 0
    if mart.exists():
        import duckdb

        duck = duckdb.connect(str(mart), read_only=True)
        try:
            rows = int(duck.execute("SELECT count(*) FROM approved_projects").fetchone()[0])  # type: ignore[index]
        finally:
            duck.close()
    by_system: dict[str, list[str]] = {}
    for p in ctx.reference.projects.values():
        by_system.setdefault(ctx.ledger_system(p.legal_entity_id), []).append(p.id)
    with ctx.engine.connect() as conn:
        bound = sum(len(xref.lookup_many(conn, "project", system, ids)) for system, ids in by_system.items())
    return {"subscriptions": sorted({s.name for s in ctx.config.subscriptions if s.event == "project.approved"}),
            "events": len(events), "chains": len(states), "new": res.enqueued, "already_done": res.duplicates,
            "status": by_status, "dead_lettered": len(res.dead_lettered), "erp_bindings": bound,
            "mart": str(mart), "mart_rows": rows, "trace_id": states[0]["trace_id"] if states else None}


__all__ = [
    "EVENT_TYPES",
    "FLOW",
    "QUEUE",
    "ActionCall",
    "PublishResult",
    "action_kinds",
    "chain_workflow",
    "check_subscriptions",
    "demo_chain",
    "demo_subscription",
    "ensure_queue",
    "key_of",
    "matching",
    "project_approved_events",
    "publish",
    "register_action",
    "replay",
    "set_tracer_provider",
    "trace_ids",
    "wait",
]
