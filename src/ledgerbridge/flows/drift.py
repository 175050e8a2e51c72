"""Vendor payload drift: check every inbound payload against a recorded snapshot of the vendor's shape.

Vendors add fields, drop them, rename them and change their types without notice. ``ledgerbridge drift snapshot
SYSTEM`` records the shape of each stream (entity) of a system from a sample of its inbound payloads: every field
path (nested objects as ``a.b``), the JSON types seen, and how many samples held it. From then on every record that
enters through :func:`ledgerbridge.flows.intake.accept` for that system and entity is compared with the snapshot
(streams without a snapshot are not checked):

- a **new field** the snapshot does not know is logged once (and listed by ``drift show``); the record goes on;
- a field **the mapping uses** that is **missing** (it was in every sample), **retyped** (a JSON type never seen),
  or **renamed** (missing, and a new field of the same type appeared) **pauses the stream**: a plain-words alert
  names the field and what changed, the record and every later record of that stream wait in the operational
  dead-letter queue (flow ``drift``) instead of being guessed at, until an operator resumes the stream
  (``ledgerbridge drift resume SYSTEM ENTITY``, after fixing the mapping or taking a new snapshot), which replays
  the held records through intake again.

The fields a mapping uses are what the connector declares (a ``used_fields(entity)`` method), else the fields of
the canonical contract of that entity (the PSA exports carry canonical payloads). Snapshots, pause flags and the
new fields seen live in the cursors table (streams ``drift:shape:<entity>``, ``drift:paused:<entity>``,
``drift:new:<entity>``), next to the cursor of the stream they guard.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.model import CONTRACTS
from ledgerbridge.store import audit, cursors, dead_letters
from ledgerbridge.store.dead_letters import DeadLetter, NewDeadLetter
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.types import utcnow

log = structlog.get_logger(__name__)

FLOW = "drift"
SHAPE, PAUSED, NEW = "drift:shape:", "drift:paused:", "drift:new:"
_NESTING = 3  # object levels flattened into dotted paths


# --------------------------------------------------------------------------------------------------- shapes


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def shape_of(payload: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, str]:
    """Field path -> JSON type of one payload (objects flattened to ``a.b`` up to a few levels)."""
    out: dict[str, str] = {}
    for k, v in payload.items():
        path = f"{prefix}{k}"
        out[path] = json_type(v)
        if isinstance(v, Mapping) and depth + 1 < _NESTING:
            out.update(shape_of(v, f"{path}.", depth + 1))
    return out


def build_snapshot(payloads: Iterable[Mapping[str, Any]], *, at: dt.datetime | None = None) -> dict[str, Any]:
    """The recorded shape of a sample: per field the JSON types seen and in how many samples it appeared."""
    fields: dict[str, dict[str, Any]] = {}
    n = 0
    for p in payloads:
        n += 1
        for path, t in shape_of(p).items():
            f = fields.setdefault(path, {"types": [], "seen": 0})
            f["seen"] += 1
            if t not in f["types"]:
                f["types"].append(t)
    for f in fields.values():
        f["types"].sort()
    return {"fields": dict(sorted(fields.items())), "samples": n, "taken_at": (at or utcnow()).isoformat()}


def _compatible(t: str, seen: Sequence[str]) -> bool:
    return t in seen or (t == "integer" and "number" in seen)


@dataclass
class DriftResult:
    """How one payload differs from its stream's snapshot. ``blocking`` lists plain-words problems with fields
    the mapping uses: any of them pauses the stream."""

    system: str
    entity: str
    checked: bool = True  # False: no snapshot for this stream
    new_fields: dict[str, str] = field(default_factory=dict)  # path -> type
    missing: list[str] = field(default_factory=list)
    retyped: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # path -> (types before, type now)
    renamed: dict[str, str] = field(default_factory=dict)  # old path -> the new path it looks renamed to
    blocking: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    paused: bool = False

    @property
    def ok(self) -> bool:
        return not self.blocking and not self.paused

    @property
    def code(self) -> str:
        """Stable code of the first blocking problem (``drift.field_missing`` / ``_renamed`` / ``_retyped``)."""
        return self.codes[0] if self.codes else "drift.stream_paused"

    @property
    def message(self) -> str:
        return "; ".join(self.blocking)


def compare(system: str, entity: str, snapshot: Mapping[str, Any], payload: Mapping[str, Any],
            used: Iterable[str]) -> DriftResult:
    """Compare one payload with the snapshot of its stream (pure). ``used``: top-level fields the mapping reads."""
    res = DriftResult(system, entity)
    known: Mapping[str, Any] = snapshot["fields"]
    samples = int(snapshot["samples"])
    used_top = set(used)
    got = shape_of(payload)

    def is_used(path: str) -> bool:
        return path.split(".", 1)[0] in used_top

    res.new_fields = {p: t for p, t in got.items() if p not in known}
    for path, info in known.items():
        if path in got:
            if not _compatible(got[path], info["types"]):
                res.retyped[path] = (list(info["types"]), got[path])
        elif info["seen"] >= samples and ("." not in path or got.get(path.rsplit(".", 1)[0]) == "object"):
            res.missing.append(path)
    for path in res.missing:
        candidates = [p for p, t in res.new_fields.items()
                      if _compatible(t, known[path]["types"]) and p.count(".") == path.count(".")]
        if len(candidates) == 1:
            res.renamed[path] = candidates[0]
    where = f"{system} {entity}"
    for path in res.missing:
        if not is_used(path):
            continue
        res.codes.append("drift.field_renamed" if path in res.renamed else "drift.field_missing")
        if path in res.renamed:
            res.blocking.append(f"{where}: field '{path}' used by the mapping is gone and a new field "
                                f"'{res.renamed[path]}' of the same type appeared — it looks renamed; map the new "
                                "name (or ask the vendor), take a new snapshot, then resume the stream")
        else:
            res.blocking.append(f"{where}: field '{path}' used by the mapping is missing from the payload (it was in "
                                f"every one of {samples} sampled payloads); find out from the vendor where it went, "
                                "fix the mapping, take a new snapshot, then resume the stream")
    for path, (before, now) in res.retyped.items():
        if is_used(path):
            res.codes.append("drift.field_retyped")
            res.blocking.append(f"{where}: field '{path}' used by the mapping changed type from "
                                f"{' or '.join(before)} to {now}; the value cannot be read safely — fix the mapping "
                                "(or have the vendor restore the type), take a new snapshot, then resume the stream")
    return res


# --------------------------------------------------------------------------------------------------- store


def load_snapshots(conn: sa.Connection, system: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(entity -> snapshot, entity -> pause record of paused streams, entity -> new fields seen) of a system."""
    shapes: dict[str, Any] = {}
    paused: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for (_sys, stream), (value, _at) in cursors.list_cursors(conn, system).items():
        if stream.startswith(SHAPE):
            shapes[stream[len(SHAPE):]] = value
        elif stream.startswith(PAUSED) and value.get("paused"):
            paused[stream[len(PAUSED):]] = value
        elif stream.startswith(NEW):
            new[stream[len(NEW):]] = value
    return shapes, paused, new


def used_fields(ctx: FlowContext, system: str, entity: str) -> frozenset[str]:
    """The top-level payload fields the mapping of ``system``'s ``entity`` stream reads (see the module doc)."""
    try:
        connector = ctx.connector(system)
    except Exception:  # a system without a buildable connector here: fall back to the contract
        connector = None
    fn = getattr(connector, "used_fields", None)
    if fn is not None:
        return frozenset(fn(entity))
    for cls in CONTRACTS:
        if cls.contract_name == entity:
            return frozenset(cls.model_fields)
    return frozenset()


def take_snapshot(ctx: FlowContext, system: str, *, sample: int = 200,
                  payloads: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> dict[str, dict[str, Any]]:
    """Record the shape of each stream of ``system`` from a sample of its inbound payloads: the given ``payloads``
    (entity -> payloads), else the newest ``sample`` payloads per entity in the inbox, else a sample read from the
    connector (``read_records``). Returns entity -> snapshot."""
    if system not in ctx.config.systems:
        raise ValueError(f"unknown system {system!r}; configured: {', '.join(sorted(ctx.config.systems))}")
    by_entity: dict[str, list[Mapping[str, Any]]] = {k: list(v)[:sample] for k, v in (payloads or {}).items()}
    if not by_entity:
        with ctx.engine.connect() as conn:
            entities = [r[0] for r in conn.execute(
                sa.select(inbox_t.c.entity).where(inbox_t.c.system == system).distinct())]
            for e in entities:
                q = (sa.select(inbox_t.c.payload).where(inbox_t.c.system == system, inbox_t.c.entity == e)
                     .order_by(inbox_t.c.id.desc()).limit(sample))
                by_entity[e] = [r[0] for r in conn.execute(q)]
    if not by_entity:
        reader = getattr(ctx.connector(system), "read_records", None)
        if reader is None:
            raise ValueError(f"{system}: nothing received yet and the connector cannot be read here; ingest first "
                             "or pass sample payloads")
        errors: list[Any] = []
        for rec in reader(errors):
            got = by_entity.setdefault(rec["entity"], [])
            if len(got) < sample:
                got.append(rec["payload"])
    if not any(by_entity.values()):
        raise ValueError(f"{system}: no payloads to take a snapshot from")
    now = utcnow()
    out = {e: build_snapshot(ps, at=now) for e, ps in by_entity.items() if ps}
    with ctx.engine.begin() as conn:
        for e, snap in out.items():
            cursors.set_cursor(conn, system, SHAPE + e, snap, at=now)
            cursors.set_cursor(conn, system, NEW + e, {}, at=now)  # the new shape knows them now
        audit.append(conn, "ledgerbridge", "drift.snapshot", f"system:{system}",
                     {e: {"fields": len(s["fields"]), "samples": s["samples"]} for e, s in out.items()})
    return out


# --------------------------------------------------------------------------------------------------- intake gate


def _jsonable(rec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(dict(rec), default=str))
    return out


def item_key(rec: Mapping[str, Any]) -> str:
    return f"{rec['external_id']}@{rec['version']}"


def check(ctx: FlowContext, system: str, entity: str, payload: Mapping[str, Any]) -> DriftResult:
    """Check one payload (for a connector or flow that receives items one by one). A new field is logged; a
    blocking difference pauses the stream (alert logged and audited). Holding the item is the caller's part:
    :func:`gate` does it for batches."""
    with ctx.engine.connect() as conn:
        shapes, paused, new_seen = load_snapshots(conn, system)
    if entity not in shapes:
        return DriftResult(system, entity, checked=False)
    res = compare(system, entity, shapes[entity], payload, used_fields(ctx, system, entity))
    res.paused = entity in paused
    _record(ctx, system, {entity: res.new_fields}, new_seen, {entity: res} if res.blocking and not res.paused else {})
    if res.blocking:
        res.paused = True
    return res


def gate(ctx: FlowContext, system: str, records: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The records of a batch that may enter; the others wait in the operational dead-letter queue. Streams of
    ``system`` without a snapshot pass untouched (``records`` is returned as it is when the system has none)."""
    with ctx.engine.connect() as conn:
        shapes, paused, new_seen = load_snapshots(conn, system)
    if not shapes:
        return records
    used = {e: used_fields(ctx, system, e) for e in shapes}
    passed: list[dict[str, Any]] = []
    letters: list[NewDeadLetter] = []
    new_fields: dict[str, dict[str, str]] = {}
    pauses: dict[str, DriftResult] = {}
    for rec in records:
        e = rec["entity"]
        if e not in shapes:
            passed.append(rec)
            continue
        if e in paused or e in pauses:
            reason = paused[e]["reason"] if e in paused else pauses[e].message
            letters.append(_held(system, rec, "drift.stream_paused",
                                 f"{system} {e} stream is paused (drift): {reason}", {}))
            continue
        res = compare(system, e, shapes[e], rec["payload"], used[e])
        if res.new_fields:
            new_fields.setdefault(e, {}).update(res.new_fields)
        if res.blocking:
            pauses[e] = res
            letters.append(_held(system, rec, res.code, res.message, {
                "missing": res.missing, "retyped": {k: list(v) for k, v in res.retyped.items()},
                "renamed": res.renamed}))
            continue
        passed.append(rec)
    _record(ctx, system, new_fields, new_seen, pauses, letters)
    return passed


def _held(system: str, rec: Mapping[str, Any], code: str, text: str, detail: Mapping[str, Any]) -> NewDeadLetter:
    return NewDeadLetter(queue="operational", flow=FLOW, system=system, entity=str(rec["entity"]),
                         item_key=item_key(rec), payload={"record": _jsonable(rec), "drift": dict(detail)},
                         error_kind="validation", error_code=code, error_text=text)


def _record(ctx: FlowContext, system: str, new_fields: Mapping[str, Mapping[str, str]],
            new_seen: Mapping[str, Any], pauses: Mapping[str, DriftResult],
            letters: Sequence[NewDeadLetter] = ()) -> None:
    """Persist what a check found: new fields (logged once), pauses (alert + audit), held items."""
    fresh = {e: {p: t for p, t in fs.items() if p not in (new_seen.get(e) or {})} for e, fs in new_fields.items()}
    fresh = {e: fs for e, fs in fresh.items() if fs}
    if not (fresh or pauses or letters):
        return
    now = utcnow()
    with ctx.engine.begin() as conn:
        for e, fs in fresh.items():
            for p, t in sorted(fs.items()):
                log.info("vendor payload has a new field", system=system, entity=e, field=p, type=t)
            seen = dict(new_seen.get(e) or {})
            seen.update({p: {"type": t, "first_seen": now.isoformat()} for p, t in fs.items()})
            cursors.set_cursor(conn, system, NEW + e, seen, at=now)
        for e, res in pauses.items():
            log.error("stream paused: vendor payload drift", system=system, entity=e, alert=res.message)
            cursors.set_cursor(conn, system, PAUSED + e, {"paused": True, "at": now.isoformat(),
                                                          "reason": res.message, "code": res.code}, at=now)
            audit.append(conn, "ledgerbridge", "drift.paused", f"stream:{system}:{e}",
                         {"reason": res.message, "code": res.code})
        dead_letters.add(conn, letters, seen_at=now)


# --------------------------------------------------------------------------------------------------- operator


@dataclass
class ResumeResult:
    replayed: int = 0
    held_again: int = 0


def resume(ctx: FlowContext, system: str, entity: str, *, replay: bool = True, actor: str = "cli") -> ResumeResult:
    """Unpause a stream and (``replay``) send its held records through intake again, oldest first. Records that
    still drift are held again (the stream pauses again); the others enter and their letters close."""
    from ledgerbridge.flows.intake import accept  # intake calls gate(): import here, not at module load

    with ctx.engine.begin() as conn:
        cursors.set_cursor(conn, system, PAUSED + entity, {"paused": False, "resumed_by": actor,
                                                           "at": utcnow().isoformat()})
        audit.append(conn, actor, "drift.resumed", f"stream:{system}:{entity}", {"replay": replay})
    out = ResumeResult()
    if not replay:
        return out
    with ctx.engine.connect() as conn:
        held = dead_letters.list_letters(conn, queue="operational", flow=FLOW, system=system, entity=entity,
                                         limit=1_000_000)
    if not held:
        return out
    before = {lt.id: lt.attempts for lt in held}
    accept(ctx, system, [dict(lt.payload["record"]) for lt in held])
    closed: list[str] = []
    with ctx.engine.begin() as conn:
        for lt in held:
            now = dead_letters.get(conn, lt.id)
            if now is not None and now.attempts > before[lt.id]:
                out.held_again += 1
            else:
                closed.append(lt.id)
        dead_letters.mark(conn, closed, "replayed", resolution=f"stream resumed by {actor}; entered intake again")
    out.replayed = len(closed)
    return out


@dataclass
class StreamView:
    system: str
    entity: str
    fields: int
    samples: int
    taken_at: str
    paused: bool
    reason: str | None
    new_fields: list[str]
    held: int


def show(ctx: FlowContext, system: str | None = None) -> list[StreamView]:
    """Every stream with a snapshot: shape size, pause state and reason, new fields seen, items held."""
    systems = [system] if system is not None else sorted(ctx.config.systems)
    out: list[StreamView] = []
    with ctx.engine.connect() as conn:
        held: dict[tuple[str, str], int] = {}
        for lt in dead_letters.list_letters(conn, queue="operational", flow=FLOW, limit=1_000_000):
            held[(lt.system, lt.entity)] = held.get((lt.system, lt.entity), 0) + 1
        for s in systems:
            shapes, paused, new = load_snapshots(conn, s)
            for e, snap in sorted(shapes.items()):
                out.append(StreamView(s, e, len(snap["fields"]), int(snap["samples"]), str(snap["taken_at"]),
                                      e in paused, paused.get(e, {}).get("reason"), sorted(new.get(e) or {}),
                                      held.get((s, e), 0)))
    return out


def held_letters(ctx: FlowContext, system: str, entity: str) -> list[DeadLetter]:
    with ctx.engine.connect() as conn:
        return dead_letters.list_letters(conn, queue="operational", flow=FLOW, system=system, entity=entity)
