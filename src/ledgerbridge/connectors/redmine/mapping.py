"""Pure Redmine <-> canonical mapping (no I/O): time entries, projects, users, versions and fingerprints.

- Hours: the JSON number as Redmine sent it (the client decodes with ``parse_float=Decimal``); a float that reaches
  this module is converted through ``str()``, never by float arithmetic.
- ``spent_on`` -> ``work_date``; ``project.id`` -> ``project_id``; ``user.id`` -> ``resource_id``; ``issue.id`` ->
  ``task``; ``comments`` -> ``description``.
- Custom fields -> ``billable`` and ``approval_status``; which field (id or name) and which values mean what is
  configured in :class:`FieldMap`.
- **Version**: ``updated_on`` as epoch seconds, raised to ``previous version + 1`` when an edit lands within the same
  second as the previous version (see :func:`next_version`). Deterministic from the server's data and the cursor.
- **Fingerprint**: a hash of the business content (ids, hours, date, comments, custom field values except the
  write-back field). A save that changes nothing but ``updated_on`` (e.g. our own invoice-ref write-back) keeps the
  fingerprint and produces no new version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus, ContractType, Project, ProjectStatus, Resource, TimeEntry

FieldRef = int | str  # a custom field id, or its name

DEFAULT_APPROVAL_VALUES: dict[str, ApprovalStatus] = {"1": ApprovalStatus.APPROVED, "0": ApprovalStatus.DRAFT}


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Which Redmine custom fields carry billable, approval and the write-back reference, and what values mean.

    ``approval_values`` maps a field value to a status (default: boolean ``"1"`` approved, ``"0"`` draft); any other
    value (empty, missing field) gives ``unapproved_status``. A list field such as ``Submitted``/``Approved``/
    ``Rejected`` works the same way. ``billable_values``: values meaning billable; a missing or empty field gives
    ``billable_default``. ``ignore_fields``: custom fields whose changes are not business changes (the write-back
    field is always ignored)."""

    billable: FieldRef | None = "Billable"
    approved: FieldRef | None = "Approved"
    invoice_ref: FieldRef | None = "Invoice ref"
    approval_values: Mapping[str, ApprovalStatus] = field(default_factory=lambda: dict(DEFAULT_APPROVAL_VALUES))
    unapproved_status: ApprovalStatus = ApprovalStatus.DRAFT
    billable_values: frozenset[str] = frozenset({"1"})
    billable_default: bool = True
    ignore_fields: frozenset[FieldRef] = frozenset()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FieldMap:
        """From connector options: ``billable_field``, ``approved_field``, ``invoice_ref_field`` (id or name),
        ``approval_values`` ({value: status}), ``unapproved_status``, ``billable_values``, ``billable_default``,
        ``ignore_fields``."""
        def ref(key: str, default: FieldRef | None) -> FieldRef | None:
            value = options.get(key, default)
            if value is None or isinstance(value, int):
                return value
            text = str(value).strip()
            return int(text) if text.isdigit() else text

        approval = options.get("approval_values")
        values = (
            {str(k): _status(v, f"approval_values.{k}") for k, v in approval.items()}
            if isinstance(approval, Mapping) else dict(DEFAULT_APPROVAL_VALUES)
        )
        return cls(
            billable=ref("billable_field", "Billable"),
            approved=ref("approved_field", "Approved"),
            invoice_ref=ref("invoice_ref_field", "Invoice ref"),
            approval_values=values,
            unapproved_status=_status(options.get("unapproved_status", "draft"), "unapproved_status"),
            billable_values=frozenset(str(v) for v in options.get("billable_values", ["1"])),
            billable_default=bool(options.get("billable_default", True)),
            ignore_fields=frozenset(options.get("ignore_fields", ())),
        )

    def ignored(self, cf: Mapping[str, Any]) -> bool:
        return any(_matches(cf, ref) for ref in (self.invoice_ref, *self.ignore_fields) if ref is not None)


def _status(value: Any, where: str) -> ApprovalStatus:
    try:
        return ApprovalStatus(str(value))
    except ValueError:
        raise ValueError(f"redmine option {where}: {value!r} is not an approval status; use one of "
                         f"{[s.value for s in ApprovalStatus]}") from None


def _matches(cf: Mapping[str, Any], ref: FieldRef) -> bool:
    return cf.get("id") == ref if isinstance(ref, int) else cf.get("name") == ref


def custom_value(raw: Mapping[str, Any], ref: FieldRef | None) -> str | None:
    """The value of custom field ``ref`` (id or name) on a Redmine record, ``None`` when absent or empty."""
    if ref is None:
        return None
    for cf in raw.get("custom_fields") or ():
        if _matches(cf, ref):
            value = cf.get("value")
            if isinstance(value, list):  # multiple-value fields
                return ",".join(str(v) for v in value) or None
            return None if value in (None, "") else str(value)
    return None


def custom_field_id(raw: Mapping[str, Any], ref: FieldRef | None) -> int | None:
    """The numeric id of custom field ``ref`` as carried on a Redmine record (resolves a name)."""
    if ref is None:
        return None
    if isinstance(ref, int):
        return ref
    for cf in raw.get("custom_fields") or ():
        if cf.get("name") == ref:
            return int(cf["id"])
    return None


# --------------------------------------------------------------------------------------------------- values


def hours_decimal(value: Any, *, item: str = "time entry") -> Decimal:
    """Hours as an exact Decimal: Decimal/int/str kept as given; a float through ``str()`` (shortest repr)."""
    d: Decimal | None = None
    if not isinstance(value, bool) and value is not None:
        try:
            d = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            d = None
    if d is None or not d.is_finite():
        raise _invalid(item, "redmine.hours", f"hours {value!r} is not a finite number", "enter the hours in Redmine")
    return d


def parse_timestamp(value: str) -> dt.datetime:
    """Redmine's ``2024-01-06T10:00:00Z`` (UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def epoch_seconds(value: str) -> int:
    return int(parse_timestamp(value).timestamp())


def next_version(updated_on: str, previous: int | None) -> int:
    """The version number of a changed entry: ``updated_on`` in epoch seconds, but always above ``previous``
    (Redmine's ``updated_on`` has one-second resolution: two edits within a second must still be two versions)."""
    stamp = epoch_seconds(updated_on)
    return stamp if previous is None else max(stamp, previous + 1)


def _ref_id(raw: Mapping[str, Any], key: str) -> int | None:
    ref = raw.get(key)
    return int(ref["id"]) if isinstance(ref, Mapping) and ref.get("id") is not None else None


def fingerprint(raw: Mapping[str, Any], fields: FieldMap) -> str:
    """Hash of an entry's business content (not ``updated_on``/``created_on``, not names of referenced records,
    not the write-back or ignored custom fields). Equal fingerprints = no business change."""
    cfs = sorted(
        (int(cf["id"]), cf.get("value")) for cf in raw.get("custom_fields") or () if not fields.ignored(cf)
    )
    content = [
        _ref_id(raw, "project"), _ref_id(raw, "user"), _ref_id(raw, "activity"), _ref_id(raw, "issue"),
        str(hours_decimal(raw.get("hours"), item=f"time entry {raw.get('id')}").normalize()),
        raw.get("spent_on"), raw.get("comments") or "", cfs,
    ]
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def approval_status(raw: Mapping[str, Any], fields: FieldMap) -> ApprovalStatus:
    value = custom_value(raw, fields.approved)
    if value is None:
        return fields.unapproved_status
    return fields.approval_values.get(value, fields.unapproved_status)


def billable(raw: Mapping[str, Any], fields: FieldMap) -> bool:
    value = custom_value(raw, fields.billable)
    return fields.billable_default if value is None else value in fields.billable_values


def _invalid(item: str, rule: str, message: str, fix: str) -> RecordValidationError:
    return RecordValidationError(f"{item}: {message} ({rule}) — {fix}", details={"item": item, "rule": rule,
                                                                              "fix": fix})


def to_time_entry(raw: Mapping[str, Any], *, system: str, version: int, fields: FieldMap) -> TimeEntry:
    """One Redmine time entry (as ``GET /time_entries.json`` returns it) as a canonical :class:`TimeEntry`.

    Raises :class:`RecordValidationError` naming the entry, the rule and the fix when it cannot be mapped."""
    item = f"redmine time entry {raw.get('id')}"
    project_id, user_id = _ref_id(raw, "project"), _ref_id(raw, "user")
    if project_id is None or user_id is None:
        raise _invalid(item, "redmine.references", "has no project or user", "check the entry in Redmine")
    hours = hours_decimal(raw.get("hours"), item=item)
    if hours < 0 or hours > 24:
        raise _invalid(item, "redmine.hours_range", f"hours {hours} is outside 0..24 for one day",
                       "split the entry per day or correct the hours in Redmine")
    try:
        work_date = dt.date.fromisoformat(str(raw.get("spent_on")))
    except ValueError:
        raise _invalid(item, "redmine.spent_on", f"spent_on {raw.get('spent_on')!r} is not a date",
                       "correct the date in Redmine") from None
    issue = _ref_id(raw, "issue")
    updated = raw.get("updated_on")
    return TimeEntry(
        id=str(raw["id"]),
        source_system=system,
        version=version,
        project_id=str(project_id),
        resource_id=str(user_id),
        task=str(issue) if issue is not None else None,
        work_date=work_date,
        hours=hours,
        billable=billable(raw, fields),
        approval_status=approval_status(raw, fields),
        updated_at=parse_timestamp(updated) if isinstance(updated, str) else None,
        description=str(raw.get("comments") or ""),
    )


# --------------------------------------------------------------------------------------------------- state records


#: A known entry in the cursor: [version, fingerprint, spent_on, project id, user id, hours, billable 0/1, status].
StateRow = list[Any]


def state_row(entry: TimeEntry, fp: str) -> StateRow:
    return [entry.version, fp, entry.work_date.isoformat(), int(entry.project_id), int(entry.resource_id),
            str(entry.hours), int(entry.billable), entry.approval_status.value]


def deleted_entry(entry_id: str, row: StateRow, *, system: str, fields: FieldMap) -> TimeEntry:
    """The canonical version reporting that entry ``entry_id`` was deleted in Redmine: the last known content with
    ``version = last + 1`` and status ``recalled`` (when the last version was approved) or ``unapproved_status``,
    so the approvals rules reverse whatever was posted and never post it again."""
    last = ApprovalStatus(row[7])
    status = ApprovalStatus.RECALLED if last is ApprovalStatus.APPROVED else fields.unapproved_status
    return TimeEntry(
        id=entry_id, source_system=system, version=int(row[0]) + 1, project_id=str(row[3]), resource_id=str(row[4]),
        work_date=dt.date.fromisoformat(row[2]), hours=Decimal(row[5]), billable=bool(row[6]),
        approval_status=status, description="deleted in Redmine",
    )


# --------------------------------------------------------------------------------------------------- master data


@dataclass(frozen=True, slots=True)
class ProjectDefaults:
    """Canonical project fields Redmine does not hold: defaults, per-project overrides (by Redmine project id or
    identifier), or read from project custom fields (``fields``: canonical name -> custom field id or name)."""

    customer_id: str = "UNASSIGNED"
    legal_entity_id: str = "DEFAULT"
    contract_type: ContractType = ContractType.TIME_AND_MATERIALS
    currency: str = "USD"
    cost_center: str = "DEFAULT"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fields: Mapping[str, FieldRef] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProjectDefaults:
        d = dict(options or {})
        return cls(
            customer_id=str(d.get("customer_id", "UNASSIGNED")),
            legal_entity_id=str(d.get("legal_entity_id", "DEFAULT")),
            contract_type=ContractType(d.get("contract_type", "time_and_materials")),
            currency=str(d.get("currency", "USD")),
            cost_center=str(d.get("cost_center", "DEFAULT")),
            overrides={str(k): dict(v) for k, v in (d.get("overrides") or {}).items()},
            fields=dict(d.get("fields") or {}),
        )


_PROJECT_STATUS = {1: ProjectStatus.ACTIVE, 5: ProjectStatus.CLOSED, 9: ProjectStatus.CLOSED,
                   10: ProjectStatus.CLOSED}


def to_project(raw: Mapping[str, Any], defaults: ProjectDefaults) -> Project:
    """A Redmine project as a canonical :class:`Project` (id = Redmine's numeric project id)."""
    values: dict[str, Any] = {
        "customer_id": defaults.customer_id, "legal_entity_id": defaults.legal_entity_id,
        "contract_type": defaults.contract_type, "currency": defaults.currency, "cost_center": defaults.cost_center,
    }
    for name, ref in defaults.fields.items():
        value = custom_value(raw, ref)
        if value is not None:
            values[name] = value
    values.update(defaults.overrides.get(str(raw.get("identifier")), {}))
    values.update(defaults.overrides.get(str(raw["id"]), {}))
    status = _PROJECT_STATUS.get(int(raw.get("status", 1)), ProjectStatus.ACTIVE)
    created = raw.get("created_on")
    start = parse_timestamp(created).date() if isinstance(created, str) else dt.date(1970, 1, 1)
    return Project(id=str(raw["id"]), name=str(raw.get("name", "")), status=status, start_date=start, **values)


@dataclass(frozen=True, slots=True)
class ResourceDefaults:
    role: str = "consultant"
    cost_center: str = "DEFAULT"
    home_entity_id: str = "DEFAULT"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by user id or login

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ResourceDefaults:
        d = dict(options or {})
        return cls(role=str(d.get("role", "consultant")), cost_center=str(d.get("cost_center", "DEFAULT")),
                   home_entity_id=str(d.get("home_entity_id", "DEFAULT")),
                   overrides={str(k): dict(v) for k, v in (d.get("overrides") or {}).items()})


def to_resource(raw: Mapping[str, Any], defaults: ResourceDefaults) -> Resource:
    """A Redmine user as a canonical :class:`Resource` (id = Redmine's numeric user id; locked users inactive)."""
    values: dict[str, Any] = {"role": defaults.role, "cost_center": defaults.cost_center,
                              "home_entity_id": defaults.home_entity_id}
    values.update(defaults.overrides.get(str(raw.get("login")), {}))
    values.update(defaults.overrides.get(str(raw["id"]), {}))
    name = " ".join(str(p) for p in (raw.get("firstname"), raw.get("lastname")) if p) or str(raw.get("login", ""))
    return Resource(id=str(raw["id"]), name=name, active=int(raw.get("status", 1)) == 1, **values)


__all__ = [
    "FieldMap", "ProjectDefaults", "ResourceDefaults", "StateRow", "approval_status", "billable", "custom_field_id",
    "custom_value", "deleted_entry", "epoch_seconds", "fingerprint", "hours_decimal", "next_version",
    "parse_timestamp", "state_row", "to_project", "to_resource", "to_time_entry",
]
