"""Master data rules: per-field source of truth, diffing, decisions, validation and deactivation proposals.

Pure: no I/O. Records are plain JSON-like mappings (``field -> value``) in the canonical shape of an entity type
(``Customer.model_dump(mode="json")`` and so on); the flow (:mod:`ledgerbridge.flows.masterdata`) loads and stores
them.

- :class:`MasterRules` holds, per entity type, which system (or role: ``psa``, ``erp`` ...) is authoritative for
  each field, the required fields, the fields that name a dimension value (validated for the record's legal
  entity), and the systems that receive propagation. Build it with :meth:`MasterRules.from_config`.
- :func:`diff` lists the fields whose value changed between what a system reported last time and now.
- :func:`decide` turns one change into :class:`Propagate` (the change comes from the authoritative side),
  :class:`Steward` (it comes from another side and disagrees with the canonical value: a person decides; nothing is
  overwritten) or :class:`Ignore` (nothing to do, with the reason).
- :func:`validate_record` checks a record before it is propagated: required fields present, dimension values
  known, active and allowed for the record's legal entity. Each problem is a
  :class:`~ledgerbridge.domain.errors.Violation` naming the item, the rule and the fix.
- :func:`deactivation_proposals` handles records missing from an authoritative full read: never a silent delete,
  always an explicit proposal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledgerbridge.domain.errors import DomainError, Violation

__all__ = [
    "ACTIVE_FIELD",
    "DEFAULT_KEY_FIELDS",
    "MASTER_ENTITY_TYPES",
    "OPTIONAL_KEY_FIELDS",
    "DeactivationProposal",
    "Decision",
    "EntityRules",
    "FieldAuthority",
    "FieldChange",
    "Ignore",
    "MasterRules",
    "Propagate",
    "ReferenceValue",
    "Steward",
    "canonical_id_of",
    "deactivation_proposals",
    "decide",
    "diff",
    "merge",
    "validate_record",
]

#: Entity types (canonical ``contract_name``) that master data sync handles.
MASTER_ENTITY_TYPES = ("legal_entity", "customer", "project", "resource", "account", "tax_code", "dimension_value")

#: Fields that identify a record of each type (joined with ``:`` into the canonical id); ``id`` otherwise.
DEFAULT_KEY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "account": ("code", "legal_entity_id"),  # an account shared by every entity has the key ``<code>:*``
    "tax_code": ("code",),
    "dimension_value": ("dimension", "code"),
}

#: Key fields that may be empty (rendered ``*``): an account without a legal entity is shared by all of them.
OPTIONAL_KEY_FIELDS = frozenset({"legal_entity_id"})

#: The field that carries a record's active/inactive state (entities without it are deactivated by status).
ACTIVE_FIELD = "active"

_MISSING: Any = object()


# --------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class FieldAuthority:
    """One field's source of truth: ``authority`` is a configured system name or a system role."""

    entity_type: str
    field: str
    authority: str

    def held_by(self, system: str, system_roles: Mapping[str, str]) -> bool:
        """True when ``system`` is the authority itself or plays the authority role."""
        return system == self.authority or system_roles.get(system) == self.authority


@dataclass(frozen=True, slots=True)
class EntityRules:
    """The rules of one entity type (see the module doc)."""

    entity_type: str
    authority: str = "psa"  # default for every field not listed in ``fields``
    fields: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    dimensions: Mapping[str, str] = field(default_factory=dict)  # field -> dimension name
    legal_entity_field: str | None = None
    propagate_to: tuple[str, ...] = ()
    key_fields: tuple[str, ...] = ("id",)

    def authority_of(self, field_name: str) -> FieldAuthority:
        return FieldAuthority(self.entity_type, field_name, self.fields.get(field_name, self.authority))


@dataclass(frozen=True, slots=True)
class MasterRules:
    """Per-entity-type rules plus the role each configured system plays (``system -> role``)."""

    entities: Mapping[str, EntityRules]
    system_roles: Mapping[str, str]

    @classmethod
    def from_config(cls, entities: Mapping[str, Mapping[str, Any]], system_roles: Mapping[str, str]) -> MasterRules:
        """Build from plain data in the shape of the ``master_data.entities`` config section.

        Raises :class:`DomainError` naming the config key when an entity type is unknown or an authority / target
        names neither a configured system nor a role one of them plays."""
        roles = dict(system_roles)
        known = set(roles) | set(roles.values())
        out: dict[str, EntityRules] = {}
        for etype, data in entities.items():
            item = f"master_data.entities.{etype}"
            if etype not in MASTER_ENTITY_TYPES:
                raise DomainError(item, "master.unknown_entity_type", f"{etype!r} is not a master data entity type",
                                  f"use one of: {', '.join(MASTER_ENTITY_TYPES)}")
            authority = str(data.get("authority", "psa"))
            fields = {str(k): str(v) for k, v in dict(data.get("fields") or {}).items()}
            for key, who in (("authority", authority), *((f"fields.{k}", v) for k, v in fields.items())):
                if who not in known:
                    raise DomainError(f"{item}.{key}", "master.unknown_authority",
                                      f"{who!r} is neither a configured system nor a role a system plays",
                                      f"name one of: {', '.join(sorted(known)) or 'no system configured'}")
            targets = tuple(str(t) for t in data.get("propagate_to") or ())
            for t in targets:
                if t not in roles:
                    raise DomainError(f"{item}.propagate_to", "master.unknown_target", f"unknown system {t!r}",
                                      f"name a configured system: {', '.join(sorted(roles)) or 'none configured'}")
            out[etype] = EntityRules(
                entity_type=etype, authority=authority, fields=fields,
                required=tuple(str(f) for f in data.get("required") or ()),
                dimensions={str(k): str(v) for k, v in dict(data.get("dimensions") or {}).items()},
                legal_entity_field=data.get("legal_entity_field"),
                propagate_to=targets,
                key_fields=tuple(data.get("key_fields") or DEFAULT_KEY_FIELDS.get(etype, ("id",))),
            )
        return cls(out, roles)

    def for_type(self, entity_type: str) -> EntityRules:
        """The rules of ``entity_type``; an unconfigured type gets the defaults (every field from the PSA)."""
        got = self.entities.get(entity_type)
        if got is not None:
            return got
        return EntityRules(entity_type, key_fields=tuple(DEFAULT_KEY_FIELDS.get(entity_type, ("id",))))

    def is_authoritative(self, entity_type: str, field_name: str, system: str) -> bool:
        return self.for_type(entity_type).authority_of(field_name).held_by(system, self.system_roles)

    def systems_of(self, name_or_role: str) -> list[str]:
        """The systems a name or role designates (a system name designates itself)."""
        if name_or_role in self.system_roles:
            return [name_or_role]
        return sorted(s for s, r in self.system_roles.items() if r == name_or_role)


# --------------------------------------------------------------------------------------------------- diff / decide


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field whose value changed on one system (``old`` is None for a field seen for the first time)."""

    field: str
    old: Any
    new: Any


def diff(previous: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> list[FieldChange]:
    """Fields of ``incoming`` whose value differs from ``previous`` (sorted by field name).

    A field absent from ``incoming`` is not a change (the system does not hold it); an explicit ``None`` is.
    With no ``previous`` (first read of the record) every field of ``incoming`` is a change from ``None``."""
    prev = previous or {}
    return [FieldChange(k, prev.get(k), incoming[k]) for k in sorted(incoming)
            if k not in prev or prev[k] != incoming[k]]


@dataclass(frozen=True, slots=True)
class Propagate:
    """Take ``value`` as the canonical value and send it to the propagation targets. ``provisional``: the value
    comes from a non-authoritative side and fills a field the canonical record had no value for."""

    field: str
    value: Any
    previous: Any
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class Steward:
    """A person decides: ``values`` holds each side's value (system -> value), ``changed_by`` who changed it."""

    field: str
    values: Mapping[str, Any]
    changed_by: str
    authority: str


@dataclass(frozen=True, slots=True)
class Ignore:
    field: str
    reason: str


Decision = Propagate | Steward | Ignore


def decide(entity_type: str, change: FieldChange, source_system: str, rules: MasterRules, *,
           canonical: Any = _MISSING) -> Decision:
    """What to do with one field change reported by ``source_system``.

    ``canonical`` is the current canonical value of the field (omit it, or pass None, when the record has no
    canonical value for that field yet). A change from the authoritative side propagates (unless the canonical
    value already equals it). A change from any other side that disagrees with the canonical value becomes a
    stewardship question with both values; one that agrees is ignored. Nothing from a non-authoritative side ever
    overwrites: where the canonical record has no value yet, the value is adopted *provisionally*
    (``Propagate(provisional=True)``) and the authoritative side replaces it when it reports."""
    auth = rules.for_type(entity_type).authority_of(change.field)
    has_canonical = canonical is not _MISSING and canonical is not None
    if has_canonical and canonical == change.new:
        return Ignore(change.field, "already the canonical value")
    if not has_canonical and change.new is None:
        return Ignore(change.field, "no value on either side")
    if auth.held_by(source_system, rules.system_roles):
        return Propagate(change.field, change.new, canonical if has_canonical else None)
    if not has_canonical:
        # nothing to overwrite: adopted provisionally until the authoritative side reports its value
        return Propagate(change.field, change.new, None, provisional=True)
    holder = _holder_name(auth.authority, rules)
    return Steward(change.field, {source_system: change.new, holder: canonical},
                   changed_by=source_system, authority=auth.authority)


def _holder_name(authority: str, rules: MasterRules) -> str:
    """The key under which the authoritative side's value is shown: the system when the role names exactly one."""
    systems = rules.systems_of(authority)
    return systems[0] if len(systems) == 1 else authority


def merge(canonical: Mapping[str, Any] | None, decisions: Iterable[Decision]) -> dict[str, Any]:
    """The canonical record after applying the :class:`Propagate` decisions."""
    out = dict(canonical or {})
    for d in decisions:
        if isinstance(d, Propagate):
            out[d.field] = d.value
    return out


def canonical_id_of(entity_type: str, record: Mapping[str, Any], rules: MasterRules) -> str:
    """The canonical id of a record: its key fields joined with ``:``. Raises when a key field is empty."""
    keys = rules.for_type(entity_type).key_fields
    parts = [record.get(k) if record.get(k) not in (None, "") or k not in OPTIONAL_KEY_FIELDS else "*" for k in keys]
    if any(p is None or p == "" for p in parts):
        raise DomainError(f"{entity_type} record", "master.missing_key",
                          f"the record has no value for its key field(s) {', '.join(keys)}",
                          "send the record with its identifier; it cannot be matched otherwise")
    return ":".join(str(p) for p in parts)


# --------------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A value a master record may point at (a dimension value, a tax code): active, and for which legal entities
    it is allowed (empty = every entity)."""

    dimension: str
    code: str
    active: bool = True
    legal_entity_ids: tuple[str, ...] = ()


def validate_record(entity_type: str, record_id: str, record: Mapping[str, Any], rules: MasterRules,
                    values: Sequence[ReferenceValue]) -> list[Violation]:
    """Problems that stop a record from being propagated (empty list = fine). See the module doc."""
    er = rules.for_type(entity_type)
    item = f"{entity_type} {record_id}"
    out: list[Violation] = []
    for f in er.required:
        v = record.get(f)
        if v is None or (isinstance(v, str) and not v.strip()):
            out.append(Violation(item, "master.required_field", f"required field {f!r} is empty",
                                 f"fill {f} in the system that owns it ({er.authority_of(f).authority}) "
                                 "and sync again"))
    index: dict[tuple[str, str], ReferenceValue] = {(v.dimension, v.code): v for v in values}
    managed = {v.dimension for v in values}
    entity = record.get(er.legal_entity_field) if er.legal_entity_field else None
    for f, dim in sorted(er.dimensions.items()):
        code = record.get(f)
        if code is None or code == "":
            continue
        if dim not in managed:
            continue  # nobody manages this dimension's values here: not checkable
        rv = index.get((dim, str(code)))
        owner = er.authority_of(f).authority
        if rv is None:
            out.append(Violation(item, "master.unknown_dimension_value",
                                 f"{f} = {code!r} is not a known {dim} value",
                                 f"create {dim} {code!r} in the system that owns it, or correct {f} in {owner}"))
        elif not rv.active:
            out.append(Violation(item, "master.inactive_dimension_value",
                                 f"{f} = {code!r} is an inactive {dim} value",
                                 f"pick an active {dim} in {owner}, or reactivate {code!r} in the system that "
                                 "owns it"))
        elif entity and rv.legal_entity_ids and str(entity) not in rv.legal_entity_ids:
            out.append(Violation(item, "master.dimension_not_allowed",
                                 f"{f} = {code!r} is not allowed for legal entity {entity} "
                                 f"(allowed: {', '.join(rv.legal_entity_ids)})",
                                 f"pick a {dim} allowed for {entity} in {owner}, or allow {code!r} for {entity} "
                                 "where the dimension is maintained"))
    return out


# --------------------------------------------------------------------------------------------------- deactivation


@dataclass(frozen=True, slots=True)
class DeactivationProposal:
    """A record the authoritative system no longer returns in a full read: propose deactivating it."""

    entity_type: str
    canonical_id: str
    source_system: str
    reason: str


def deactivation_proposals(entity_type: str, known_active: Iterable[str], seen: Iterable[str], source_system: str,
                           rules: MasterRules) -> list[DeactivationProposal]:
    """Proposals for the active canonical records missing from a *full* read by ``source_system``.

    Only a system authoritative for the ``active`` field (or the entity's default authority) can propose; a
    missing record is never deleted, and never deactivated without a decision."""
    if not rules.is_authoritative(entity_type, ACTIVE_FIELD, source_system):
        return []
    present = set(seen)
    return [DeactivationProposal(entity_type, cid, source_system,
                                 f"{entity_type} {cid} is missing from the full read of {source_system}")
            for cid in sorted(set(known_active) - present)]
