"""Master data sync with per-field source of truth and stewardship (see docs/sync-master-data.md).

``sync_master(ctx, source_system, records)`` compares what ``source_system`` reports now with what it reported last
time, field by field, and decides per changed field (rules: :mod:`ledgerbridge.domain.masterdata`, configured under
``master_data``):

- the source is authoritative for the field: the value **propagates** — it becomes the canonical value (the
  engine's reference data is updated) and is pushed to the configured targets whose connector declares it writes
  the entity type. With no such target the propagation is recorded for the canonical side only.
- the source is not authoritative and disagrees with the canonical value: a **stewardship item** opens with both
  values, who changed it and when; nothing is overwritten. (A field the canonical record has no value for yet is
  adopted provisionally: there is nothing to overwrite, and the authoritative side replaces it when it reports.)
- a record that would become invalid (required field empty, dimension value unknown, inactive or not allowed for
  its legal entity, a value the canonical contract refuses) is **dead-lettered** to the operational queue with the
  record and every reason; nothing of it is applied, and the next sync tries it again.
- ``full_read=True``: the active canonical records the (authoritative) source no longer returns become
  **deactivation proposals** in stewardship — never a silent delete.

Each batch is one transaction (state, stewardship items, dead letters, xref bindings and an audit entry together),
so a crash repeats at most the batch it interrupted, and repeating it decides the same. Pushes to targets run after
the commit and are idempotent: a target binding (xref) carries the hash of the canonical record it holds, and
:func:`push_pending` sends only records whose hash differs — call it again to finish an interrupted push.

Last-synced state lives in the ``master_records`` table: one row per record and system with the values that system
last reported; the canonical (agreed) values are the rows of the system ``_canonical``. A batch reads and writes
only its own records' rows. Run one sync per system and entity type at a time (as with a cursor).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from pydantic import ValidationError

from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.masterdata import (
    ACTIVE_FIELD,
    DeactivationProposal,
    Ignore,
    MasterRules,
    Propagate,
    ReferenceValue,
    Steward,
    canonical_id_of,
    deactivation_proposals,
    decide,
    diff,
    merge,
    validate_record,
)
from ledgerbridge.errors import ErrorKind
from ledgerbridge.flows.context import FlowContext, Reference
from ledgerbridge.model import Account, Contract, Customer, DimensionValue, LegalEntity, Project, Resource, TaxCode
from ledgerbridge.store import audit, dead_letters, stewardship, xref
from ledgerbridge.store._sql import chunked, insert_for
from ledgerbridge.store.dead_letters import NewDeadLetter
from ledgerbridge.store.schema import master_records
from ledgerbridge.store.stewardship import NewStewardshipItem, StewardshipItem
from ledgerbridge.store.types import utcnow
from ledgerbridge.store.xref import XrefEntry

log = structlog.get_logger(__name__)

CANONICAL = "_canonical"  # never a configured system name (those start with a letter)
FLOW = "masterdata"

MODELS: dict[str, type[Contract]] = {
    "legal_entity": LegalEntity, "customer": Customer, "project": Project, "resource": Resource,
    "account": Account, "tax_code": TaxCode, "dimension_value": DimensionValue,
}
#: The field whose value deactivates a record, and the deactivated value.
DEACTIVATION: dict[str, tuple[str, Any]] = {
    "customer": (ACTIVE_FIELD, False), "resource": (ACTIVE_FIELD, False), "account": (ACTIVE_FIELD, False),
    "tax_code": (ACTIVE_FIELD, False), "dimension_value": (ACTIVE_FIELD, False), "project": ("status", "closed"),
}
_UNSET: Any = object()


@dataclass
class SyncResult:
    received: int = 0
    unchanged: int = 0
    propagated: int = 0  # field values that became canonical
    provisional: int = 0  # of which adopted from a non-authoritative side (the canonical had no value)
    stewardship: int = 0  # stewardship items opened or refreshed
    ignored: int = 0
    dead_lettered: int = 0
    deactivation_proposals: int = 0
    pushed: dict[str, int] = field(default_factory=dict)  # target system -> records pushed
    push_failed: int = 0
    push_retry_later: int = 0  # records whose push failed transiently: not dead-lettered, the next push retries
    batches: int = 0
    changed_ids: dict[str, list[str]] = field(default_factory=dict)  # entity type -> canonical ids changed


# --------------------------------------------------------------------------------------------------- state


def rules_of(ctx: FlowContext) -> MasterRules:
    rules: MasterRules = ctx.config.master_data.rules({n: sc.role for n, sc in ctx.config.systems.items()})
    return rules


def load_state(conn: sa.Connection, system: str, entity_type: str, ids: Iterable[str] | None = None
               ) -> dict[str, dict[str, Any]]:
    """What ``system`` last reported for the records of ``entity_type`` (all, or those in ``ids``); the system
    ``_canonical`` holds the agreed records."""
    t = master_records
    q = sa.select(t.c.canonical_id, t.c["values"]).where(t.c.system == system, t.c.canonical_type == entity_type)
    if ids is None:
        return {cid: dict(v) for cid, v in conn.execute(q)}
    out: dict[str, dict[str, Any]] = {}
    for part in chunked(list(dict.fromkeys(ids))):
        out.update({cid: dict(v) for cid, v in conn.execute(q.where(t.c.canonical_id.in_(part)))})
    return out


def _save_state(conn: sa.Connection, system: str, entity_type: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Upsert the given records' values (one multi-row statement)."""
    if not rows:
        return
    now = utcnow()
    stmt = insert_for(conn, master_records)
    stmt = stmt.on_conflict_do_update(
        index_elements=["canonical_type", "canonical_id", "system"],
        set_={"values": stmt.excluded["values"], "updated_at": stmt.excluded.updated_at},
    )
    conn.execute(stmt, [{"canonical_type": entity_type, "canonical_id": cid, "system": system, "values": dict(v),
                         "updated_at": now} for cid, v in rows.items()])


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _plain(rec: Contract | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(rec, Contract):
        return rec.model_dump(mode="json")
    out: dict[str, Any] = json.loads(json.dumps(dict(rec), default=str))
    return out


def _type_of(rec: Contract | Mapping[str, Any], entity_type: str | None) -> str:
    if entity_type is not None:
        return entity_type
    name = getattr(rec, "contract_name", None)
    if name is None:
        raise ValueError("a plain record needs entity_type=...: pass the master entity type of the records")
    return str(name)


def reference_values(ref: Reference) -> list[ReferenceValue]:
    """Dimension values and tax codes a master record may point at (for :func:`validate_record`)."""
    out = [ReferenceValue(d.dimension, d.code, d.active, tuple(d.legal_entity_ids)) for d in ref.dimensions]
    out += [ReferenceValue("tax_code", t.code, t.active) for t in ref.tax_codes.values()]
    return out


def _normalise(entity_type: str, cid: str, record: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Violation]]:
    """The record as the canonical contract has it (types coerced), or the contract's objections."""
    try:
        return MODELS[entity_type].model_validate(dict(record)).model_dump(mode="json"), []
    except ValidationError as exc:
        return None, [Violation(f"{entity_type} {cid}", "master.contract",
                                f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}",
                                "correct the value in the system that owns the field and sync again")
                      for e in exc.errors()]


def _is_active(entity_type: str, record: Mapping[str, Any]) -> bool:
    fld, off = DEACTIVATION.get(entity_type, (None, None))
    return fld is None or record.get(fld, True) != off


# --------------------------------------------------------------------------------------------------- sync


def sync_master(ctx: FlowContext, source_system: str, records: Iterable[Contract | Mapping[str, Any]], *,
                entity_type: str | None = None, full_read: bool = False, batch_size: int = 1000,
                push: bool = True) -> SyncResult:
    """Sync master records reported by ``source_system`` (canonical models, or plain dicts with ``entity_type``).

    ``full_read``: the records are everything the source holds for their entity types (or for ``entity_type``),
    so active canonical records missing from them become deactivation proposals."""
    if source_system not in ctx.config.systems:
        raise ValueError(f"unknown system {source_system!r}; configured: {', '.join(sorted(ctx.config.systems))}")
    rules = rules_of(ctx)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        etype = _type_of(rec, entity_type)
        if etype not in MODELS:
            raise ValueError(f"{etype!r} is not a master data entity type; use one of {', '.join(MODELS)}")
        by_type[etype].append(_plain(rec))
    if entity_type is not None:
        by_type.setdefault(entity_type, [])
    result = SyncResult()
    for etype, recs in by_type.items():
        seen: list[str] = []
        for start in range(0, max(len(recs), 1), batch_size):
            chunk = recs[start:start + batch_size]
            if chunk:
                seen += _sync_batch(ctx, rules, source_system, etype, chunk, result)
        if full_read:
            _propose_deactivations(ctx, rules, source_system, etype, seen, result)
        if push and result.changed_ids.get(etype):
            pushed = push_pending(ctx, etype, result.changed_ids[etype], rules=rules)
            for target, n in pushed.pushed.items():
                result.pushed[target] = result.pushed.get(target, 0) + n
            result.push_failed += pushed.push_failed
            result.push_retry_later += pushed.push_retry_later
    return result


def _sync_batch(ctx: FlowContext, rules: MasterRules, source: str, etype: str, recs: Sequence[dict[str, Any]],
                result: SyncResult) -> list[str]:
    """One transaction: decide every record of the batch and store the outcome. Returns the ids seen."""
    values = reference_values(ctx.reference)
    seen: list[str] = []
    items: list[NewStewardshipItem] = []
    letters: list[NewDeadLetter] = []
    bindings: list[XrefEntry] = []
    changes_log: list[dict[str, Any]] = []
    changed: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = defaultdict(int)
    reported: dict[str, dict[str, Any]] = {}
    keyed: list[tuple[str, dict[str, Any]]] = []
    for rec in recs:
        result.received += 1
        try:
            keyed.append((canonical_id_of(etype, rec, rules), rec))
        except DomainError as exc:
            letters.append(_letter(source, etype, f"(no key) {record_hash(rec)[:12]}", rec, [exc.to_violation()]))
    with ctx.engine.begin() as conn:
        src_state = load_state(conn, source, etype, [cid for cid, _ in keyed])
        canon = load_state(conn, CANONICAL, etype, [cid for cid, _ in keyed])
        for cid, rec in keyed:
            seen.append(cid)
            changes = diff(src_state.get(cid), rec)
            if not changes:
                counts["unchanged"] += 1
                continue
            cur = canon.get(cid)
            decisions = [decide(etype, ch, source, rules, canonical=(cur or {}).get(ch.field)) for ch in changes]
            candidate = merge(cur, decisions)
            new_canon = cur
            if candidate != cur:
                new_canon, problems = _normalise(etype, cid, candidate)
                if new_canon is not None:
                    problems = validate_record(etype, cid, new_canon, rules, values)
                if problems:
                    letters.append(_letter(source, etype, cid, rec, problems))
                    continue
            assert new_canon is not None
            for d in decisions:
                if isinstance(d, Propagate):
                    counts["propagated"] += 1
                    counts["provisional"] += d.provisional
                    changes_log.append({"id": cid, "field": d.field, "from": d.previous, "to": d.value})
                elif isinstance(d, Steward):
                    counts["stewardship"] += 1
                    items.append(NewStewardshipItem(etype, cid, d.field, dict(d.values), changed_by=source))
                elif isinstance(d, Ignore):
                    counts["ignored"] += 1
            src_state[cid] = reported[cid] = rec
            if new_canon != cur:
                canon[cid] = new_canon
                changed[cid] = new_canon
            bindings.append(XrefEntry(etype, cid, source, cid, version_synced=record_hash(rec)[:16]))
        _save_state(conn, source, etype, reported)
        _save_state(conn, CANONICAL, etype, changed)
        stewardship.add(conn, items)
        dead_letters.add(conn, letters)
        xref.upsert_many(conn, bindings)
        audit.append(conn, source, "master.synced", f"{etype}:{source}", {
            "records": len(recs), "changed_records": len(changed), "stewardship": len(items),
            "dead_lettered": len(letters), **{k: v for k, v in counts.items() if k != "unchanged"},
            "changes": changes_log[:200], "changes_truncated": max(0, len(changes_log) - 200),
        })
    result.batches += 1
    result.unchanged += counts["unchanged"]
    result.propagated += counts["propagated"]
    result.provisional += counts["provisional"]
    result.stewardship += counts["stewardship"]
    result.ignored += counts["ignored"]
    result.dead_lettered += len(letters)
    for lt in letters:
        log.warning("master record dead-lettered", system=source, entity=etype, item=lt.item_key, error=lt.error_text)
    if changed:
        apply_to_reference(ctx, etype, changed)
        result.changed_ids.setdefault(etype, []).extend(changed)
    return seen


def _letter(system: str, etype: str, item_key: str, rec: Mapping[str, Any], problems: Sequence[Violation]
            ) -> NewDeadLetter:
    return NewDeadLetter(
        queue="operational", flow=FLOW, system=system, entity=etype, item_key=item_key,
        payload={"record": dict(rec), "violations": [{"item": v.item, "rule": v.rule, "message": v.message,
                                                       "fix": v.fix} for v in problems]},
        error_kind="validation", error_code=problems[0].rule, error_text="; ".join(str(v) for v in problems),
    )


def _propose_deactivations(ctx: FlowContext, rules: MasterRules, source: str, etype: str, seen: Sequence[str],
                           result: SyncResult) -> list[DeactivationProposal]:
    if etype not in DEACTIVATION:
        return []
    fld, off = DEACTIVATION[etype]
    with ctx.engine.begin() as conn:
        canon = load_state(conn, CANONICAL, etype)
        active = [cid for cid, rec in canon.items() if _is_active(etype, rec)]
        proposals = deactivation_proposals(etype, active, seen, source, rules)
        if proposals:
            stewardship.add(conn, [NewStewardshipItem(etype, p.canonical_id, fld,
                                                      {source: off, "canonical": canon[p.canonical_id].get(fld)},
                                                      changed_by=source) for p in proposals])
            audit.append(conn, source, "master.deactivation_proposed", f"{etype}:{source}",
                         {"ids": [p.canonical_id for p in proposals][:500], "count": len(proposals),
                          "reason": "missing from a full read of the authoritative system"})
    result.deactivation_proposals += len(proposals)
    return proposals


# --------------------------------------------------------------------------------------------------- reference


_REF_DICTS = {"legal_entity": "entities", "customer": "customers", "project": "projects", "resource": "resources",
              "tax_code": "tax_codes"}


def apply_to_reference(ctx: FlowContext, etype: str, changed: Mapping[str, Mapping[str, Any]]) -> None:
    """Put changed canonical records into the engine's reference data (the rules see them at once)."""
    model = MODELS[etype]
    objs = {cid: model.model_validate(dict(rec)) for cid, rec in changed.items()}
    ref = ctx.reference
    if etype in _REF_DICTS:
        getattr(ref, _REF_DICTS[etype]).update(objs)
    elif etype == "account":
        keep = [a for a in ref.accounts if f"{a.code}:{a.legal_entity_id or '*'}" not in objs]
        ref.accounts = keep + list(objs.values())  # type: ignore[arg-type]
    elif etype == "dimension_value":
        keep_d = [d for d in ref.dimensions if f"{d.dimension}:{d.code}" not in objs]
        ref.dimensions = keep_d + list(objs.values())  # type: ignore[arg-type]
    ctx.reset_connectors()


# --------------------------------------------------------------------------------------------------- push


def push_pending(ctx: FlowContext, etype: str, ids: Sequence[str] | None = None, *,
                 rules: MasterRules | None = None) -> SyncResult:
    """Send canonical records to the propagation targets of ``etype`` whose connector writes it, skipping those a
    target already holds at the same content (xref ``version_synced`` = record hash). A refused push becomes an
    operational dead letter per record; a transient failure leaves the records pending (``push_retry_later``):
    calling again retries what is still pending."""
    rules = rules or rules_of(ctx)
    out = SyncResult()
    with ctx.engine.connect() as conn:
        canon = load_state(conn, CANONICAL, etype, ids)
    wanted = [i for i in (ids if ids is not None else list(canon)) if i in canon]
    for target in rules.for_type(etype).propagate_to:
        connector = ctx.connector(target)
        if not connector.capabilities().can_write(etype):
            continue
        hashes = {cid: record_hash(canon[cid])[:16] for cid in wanted}
        with ctx.engine.connect() as conn:
            bound = xref.lookup_many(conn, etype, target, wanted)
        todo = [cid for cid in wanted if cid not in bound or bound[cid].version_synced != hashes[cid]]
        waiting = _waiting_on_parents(ctx, rules, etype, target, {cid: canon[cid] for cid in todo})
        if waiting:  # e.g. a project whose customer is not in the target yet: it waits, it is not refused
            out.push_retry_later += len(waiting)
            todo = [cid for cid in todo if cid not in waiting]
        if not todo:
            continue
        models = [MODELS[etype].model_validate(canon[cid]) for cid in todo]
        try:
            ext = _push(connector, etype, models)
        except Exception as exc:  # the target refused or failed: each record waits in the operational queue
            if getattr(exc, "kind", None) in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED):
                # not a dead letter: the xref keeps the old version hash, so the next push sends these again
                out.push_retry_later += len(todo)
                continue
            with ctx.engine.begin() as conn:
                dead_letters.add(conn, [NewDeadLetter(
                    queue="operational", flow=f"{FLOW}.push", system=target, entity=etype, item_key=cid,
                    payload={"record": canon[cid]}, error_kind=str(getattr(exc, "kind", "permanent")),
                    error_code=str(getattr(exc, "code", "master.push_failed")),
                    error_text=f"push of {etype} {cid} to {target} failed: {exc}") for cid in todo])
            out.push_failed += len(todo)
            continue
        with ctx.engine.begin() as conn:
            xref.upsert_many(conn, [XrefEntry(etype, cid, target, str(ext.get(cid, cid)), version_synced=hashes[cid])
                                    for cid in todo])
            # an earlier refusal of these records is settled by this push: close its dead letters
            pushed_ids = set(todo)
            settled = [lt.id for lt in dead_letters.list_letters(conn, flow=f"{FLOW}.push", system=target,
                                                                 entity=etype, limit=100_000)
                       if lt.item_key in pushed_ids]
            if settled:
                dead_letters.mark(conn, settled, "replayed", resolution=f"pushed to {target} by a later push")
            audit.append(conn, "ledgerbridge", "master.pushed", f"{etype}:{target}", {"ids": todo[:500],
                                                                                      "count": len(todo)})
        out.pushed[target] = len(todo)
    return out


#: master-data references a target must hold before a record can be pushed: type -> [(field, parent type)]
PARENTS: dict[str, tuple[tuple[str, str], ...]] = {"project": (("customer_id", "customer"),)}


def _waiting_on_parents(ctx: FlowContext, rules: MasterRules, etype: str, target: str,
                        records: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Ids of ``records`` whose parent (a project's customer) also propagates to ``target`` but is not bound there
    yet (its own push is pending or failed): pushing them now would only earn a refusal."""
    waiting: set[str] = set()
    for field_name, parent in PARENTS.get(etype, ()):
        if target not in rules.for_type(parent).propagate_to:
            continue
        refs = {cid: str(rec.get(field_name)) for cid, rec in records.items() if rec.get(field_name)}
        if not refs:
            continue
        with ctx.engine.connect() as conn:
            canon = load_state(conn, CANONICAL, parent, set(refs.values()))
            bound = xref.lookup_many(conn, parent, target, sorted(set(refs.values())))
        waiting |= {cid for cid, pid in refs.items() if pid in canon and pid not in bound}
    return waiting


def _push(connector: Any, etype: str, models: Sequence[Contract]) -> Mapping[str, Any]:
    """A connector's push: ``push_master(entity_type, records)``, else ``push_<type>s(records)``; both return
    canonical id -> the target's id."""
    fn = getattr(connector, "push_master", None)
    if fn is not None:
        return dict(fn(etype, list(models)))
    fn = getattr(connector, f"push_{etype}s", None)
    if fn is None:
        raise NotImplementedError(f"the connector declares it writes {etype} but offers neither push_master nor "
                                  f"push_{etype}s")
    return dict(fn(list(models)))


# --------------------------------------------------------------------------------------------------- stewardship


def resolve(ctx: FlowContext, item_id: str, *, pick: str | None = None, value: Any = _UNSET, actor: str = "cli",
            reason: str = "") -> StewardshipItem:
    """Close a stewardship item by picking a side (a system name, a role such as ``psa``/``erp``, or
    ``canonical`` to keep the current value) or entering a value. The value is validated like a propagation,
    becomes canonical, is pushed to the targets, and the decision is audited. Raises ``DomainError`` when the
    chosen value would make the record invalid (the item stays open)."""
    if (pick is None) == (value is _UNSET):
        raise ValueError("resolve needs exactly one of pick (a side) or value")
    rules = rules_of(ctx)
    with ctx.engine.begin() as conn:
        item = stewardship.get(conn, item_id)
        if item is None:
            raise LookupError(f"stewardship item {item_id!r} does not exist; list them with "
                              "`ledgerbridge stewardship list`")
        if item.status != "open":
            raise ValueError(f"stewardship item {item_id} is already {item.status}")
        etype, cid = item.canonical_type, item.canonical_id
        cur = dict(load_state(conn, CANONICAL, etype, [cid]).get(cid) or {})
        if pick == "canonical" and "canonical" not in (item.values or {}):
            chosen = cur.get(item.field)  # keep the canonical value as it is
        else:
            chosen = value if pick is None else _pick(item, pick, rules)
        cur[item.field] = chosen
        new, problems = _normalise(etype, cid, cur)
        if new is not None:
            problems = validate_record(etype, cid, new, rules, reference_values(ctx.reference))
        if problems:
            v = problems[0]
            raise DomainError(v.item, v.rule, f"resolving {item.field} to {chosen!r}: {v.message}", v.fix)
        assert new is not None
        _save_state(conn, CANONICAL, etype, {cid: new})
        decided = stewardship.resolve(conn, item_id, {"value": new.get(item.field), "picked": pick or "value",
                                                      "decided_by": actor, "reason": reason})
        audit.append(conn, actor, "stewardship.resolved", f"{etype}:{cid}", {
            "item": item_id, "field": item.field, "values": item.values, "changed_by": item.changed_by,
            "picked": pick or "value", "value": new.get(item.field), "reason": reason})
    apply_to_reference(ctx, etype, {cid: new})
    push_pending(ctx, etype, [cid], rules=rules)
    return decided


def _pick(item: StewardshipItem, pick: str, rules: MasterRules) -> Any:
    values: Mapping[str, Any] = item.values or {}
    if pick in values:
        return values[pick]
    matches = [k for k in values if rules.system_roles.get(k) == pick]
    if len(matches) == 1:
        return values[matches[0]]
    raise ValueError(f"stewardship item {item.id}: no single side {pick!r}; pick one of {', '.join(values)} "
                     "(or a role one of them plays), or enter a value")


def replay_letters(ctx: FlowContext, letters: Sequence[dead_letters.DeadLetter], *, actor: str = "cli"
                   ) -> SyncResult:
    """Re-sync dead-lettered master records with the current rules and reference data; letters whose record now
    passes are closed as replayed (one that fails again stays open with its attempts bumped)."""
    total = SyncResult()
    for lt in letters:
        if lt.flow != FLOW or lt.status != "open":
            continue
        res = sync_master(ctx, lt.system, [lt.payload["record"]], entity_type=lt.entity)
        if not res.dead_lettered:
            with ctx.engine.begin() as conn:
                dead_letters.mark(conn, [lt.id], "replayed", resolution=f"re-synced by {actor}")
        for k in ("received", "propagated", "stewardship", "dead_lettered"):
            setattr(total, k, getattr(total, k) + getattr(res, k))
    return total


def overlay_canonical(ctx: FlowContext) -> int:
    """Put every canonical master record the store holds into ``ctx.reference`` (after a reference load from the
    PSA files, so ERP-owned fields and resolved decisions are what the rules see). Returns records applied."""
    n = 0
    with ctx.engine.connect() as conn:
        states = {etype: load_state(conn, CANONICAL, etype) for etype in MODELS}
    for etype, canon in states.items():
        if canon:
            apply_to_reference(ctx, etype, canon)
            n += len(canon)
    return n


def sync_from_reference(ctx: FlowContext, source_system: str, *, full_read: bool = True) -> SyncResult:
    """The main job's step after :func:`~ledgerbridge.flows.reference.load_reference`: sync every master record the
    reference load just read from ``source_system`` (legal entities, customers, projects, resources, tax codes,
    accounts, dimension values) and put the canonical records back over the reference, so fields another system
    owns, and decisions already taken in stewardship, are what the rules use — not the source file's values."""
    ref = ctx.reference
    records: list[Contract] = [*ref.entities.values(), *ref.customers.values(), *ref.projects.values(),
                               *ref.resources.values(), *ref.tax_codes.values(), *ref.accounts, *ref.dimensions]
    res = sync_master(ctx, source_system, records, full_read=full_read)
    overlay_canonical(ctx)
    return res
