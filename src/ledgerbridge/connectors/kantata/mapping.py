"""Pure Kantata OX <-> canonical mapping (no I/O): time entries, expenses, workspaces, users, versions.

- Time entry: ``date_performed`` -> ``work_date``; ``time_in_minutes`` / 60 -> ``hours`` (exact when the minutes
  divide, else rounded half-up to 6 places); ``workspace_id`` -> ``project_id``; ``user_id`` -> ``resource_id``;
  ``story_id`` -> ``task``; ``notes`` -> ``description``; ``billable`` as sent.
- Approval comes from the entry's timesheet submission (side-loaded with ``include=timesheet_submission``):
  ``approved: true`` -> approved; submission ``pending`` -> submitted, ``rejected`` -> rejected, ``canceled`` ->
  recalled (the un-approval of an approved timesheet); no submission -> draft.
- Expense: ``date`` -> ``expense_date``; ``amount_in_cents`` in the currency's minor unit -> ``amount`` (Decimal);
  ``approved`` -> approved, else draft.
- **Version**: ``updated_at`` in epoch seconds, raised above the previous version when needed (second resolution;
  an approval that does not move ``updated_at`` still gets a new version). **Fingerprint**: hash of the business
  content — ``updated_at``, ``locked``, ``invoice_id``, ``is_invoiced`` and external references are not business
  changes, so our own write-back never produces a version.
- Workspaces / users -> Project / Resource with configured defaults, per-record overrides and custom field values
  (``field_map``: ``"project.customer_id": <custom_field_id>`` ...).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import (
    ApprovalStatus,
    ContractType,
    Expense,
    Project,
    ProjectStatus,
    Resource,
    TimeEntry,
)
from ledgerbridge.model.money import minor_unit

ENTITIES = ("time_entry", "expense")
SUBJECT_TYPES = {"time_entry": "TimeEntry", "expense": "Expense", "invoice": "Invoice", "workspace": "Workspace"}
RESOURCE_OF = {"time_entry": "time_entries", "expense": "expenses"}
#: fields that change without a business change (write-back, locking, invoicing marks)
NOT_BUSINESS = frozenset({"id", "created_at", "updated_at", "locked", "invoice_id", "is_invoiced",
                          "external_reference_ids", "custom_field_value_ids", "permissions"})
SUBMISSION_STATUS = {"pending": ApprovalStatus.SUBMITTED, "submitted": ApprovalStatus.SUBMITTED,
                     "rejected": ApprovalStatus.REJECTED, "canceled": ApprovalStatus.RECALLED,
                     "cancelled": ApprovalStatus.RECALLED, "approved": ApprovalStatus.APPROVED}

CustomFields = Mapping[str, Any]  # custom_field_id -> value, for one record


def parse_ts(value: Any) -> dt.datetime:
    """Kantata's ISO 8601 time (any offset) as an aware UTC datetime."""
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC)


def next_version(updated_at: str, previous: int | None) -> int:
    stamp = int(parse_ts(updated_at).timestamp())
    return stamp if previous is None else max(stamp, previous + 1)


def _invalid(item: str, rule: str, message: str, fix: str, raw: Mapping[str, Any]) -> RecordValidationError:
    return RecordValidationError(f"{item}: {message} ({rule}) — {fix}",
                                 details={"item": item, "id": str(raw.get("id")), "rule": rule, "fix": fix,
                                          "raw": dict(raw)})


def submission_status(raw: Mapping[str, Any], submission: Mapping[str, Any] | None) -> ApprovalStatus:
    if raw.get("approved") is True:
        return ApprovalStatus.APPROVED
    if submission is None:
        return ApprovalStatus.DRAFT
    status = SUBMISSION_STATUS.get(str(submission.get("status", "")).lower(), ApprovalStatus.DRAFT)
    return ApprovalStatus.SUBMITTED if status is ApprovalStatus.APPROVED else status  # approved but not flagged yet


def approval_status(entity: str, raw: Mapping[str, Any], submission: Mapping[str, Any] | None,
                    expense_approved_field: str = "approved") -> ApprovalStatus:
    """Time entries: from the timesheet submission. Expenses: the boolean ``expense_approved_field`` (the state
    of the expense report submission; which field carries it is configurable, see docs)."""
    if entity == "time_entry":
        return submission_status(raw, submission)
    return ApprovalStatus.APPROVED if raw.get(expense_approved_field) is True else ApprovalStatus.DRAFT


def fingerprint(raw: Mapping[str, Any], status: ApprovalStatus) -> str:
    content = {k: v for k, v in raw.items() if k not in NOT_BUSINESS}
    content["_status"] = status.value
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def minutes_to_hours(minutes: Any, item: str, raw: Mapping[str, Any]) -> Decimal:
    if isinstance(minutes, bool) or not isinstance(minutes, int | Decimal | str):
        raise _invalid(item, "kantata.time_in_minutes", f"time_in_minutes {minutes!r} is not a whole number",
                       "enter the time in Kantata", raw)
    try:
        m = Decimal(str(minutes))
    except ArithmeticError:
        m = Decimal("NaN")
    if not m.is_finite() or m != m.to_integral_value() or m < 0 or m > 24 * 60:
        raise _invalid(item, "kantata.time_in_minutes", f"time_in_minutes {minutes!r} is not 0..1440 minutes",
                       "split the entry per day or correct the time in Kantata", raw)
    hours = m / 60
    exact = hours.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    return (hours if hours == exact else exact).normalize() if hours else Decimal(0)


def cents(value: Any, currency: str, item: str, raw: Mapping[str, Any]) -> Decimal:
    try:
        amount = Decimal(str(value))
        if amount != amount.to_integral_value():
            raise ArithmeticError
        return amount.scaleb(-minor_unit(currency))
    except (ArithmeticError, ValueError, KeyError):
        raise _invalid(item, "kantata.amount", f"amount_in_cents {value!r} / currency {currency!r} is not an "
                       "amount in a known currency", "correct the expense in Kantata", raw) from None


def _date(value: Any, item: str, rule: str, raw: Mapping[str, Any]) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise _invalid(item, rule, f"{value!r} is not a date", "correct the date in Kantata", raw) from None


def to_record(entity: str, raw: Mapping[str, Any], submission: Mapping[str, Any] | None, *, system: str,
              version: int, expense_approved_field: str = "approved") -> TimeEntry | Expense:
    """One Kantata time entry or expense as its canonical model; :class:`RecordValidationError` when it cannot be
    mapped (names the record, the rule and the fix; raw record in details)."""
    item = f"kantata {entity} {raw.get('id')}"
    if not raw.get("workspace_id") or not raw.get("user_id"):
        raise _invalid(item, "kantata.references", "has no workspace_id or user_id", "check it in Kantata", raw)
    status = approval_status(entity, raw, submission, expense_approved_field)
    updated = parse_ts(raw["updated_at"]) if raw.get("updated_at") else None
    approved_at = None
    if status is ApprovalStatus.APPROVED and submission and submission.get("approved_at"):
        approved_at = parse_ts(submission["approved_at"])
    common: dict[str, Any] = {
        "id": str(raw["id"]), "source_system": system, "version": version, "project_id": str(raw["workspace_id"]),
        "resource_id": str(raw["user_id"]), "billable": bool(raw.get("billable", True)), "approval_status": status,
        "approved_at": approved_at, "updated_at": updated, "description": str(raw.get("notes") or "")}
    if entity == "time_entry":
        story = raw.get("story_id")
        return TimeEntry(**common, task=str(story) if story else None,
                         work_date=_date(raw.get("date_performed"), item, "kantata.date_performed", raw),
                         hours=minutes_to_hours(raw.get("time_in_minutes"), item, raw))
    currency = str(raw.get("currency") or "").upper()
    return Expense(**common, expense_date=_date(raw.get("date"), item, "kantata.expense_date", raw),
                   amount=cents(raw.get("amount_in_cents"), currency, item, raw), currency=currency,
                   category=str(raw.get("category") or "uncategorised"))


#: A known item in the cursor: [version, fingerprint, updated_at, last content (compact) | None]
StateRow = list[Any]
_NOT_KEPT = ("id", "source_system", "version", "description", "updated_at", "approved_at", "task")


def compact(item: TimeEntry | Expense) -> dict[str, Any]:
    """What the cursor keeps of the last emitted version: enough to report its deletion (about 150 bytes)."""
    return {k: v for k, v in item.model_dump(mode="json").items() if k not in _NOT_KEPT}


def deleted_record(entity: str, item_id: str, system: str, row: StateRow) -> TimeEntry | Expense:
    """The version reporting a deletion: the last content, ``version + 1``, status ``recalled`` when it was
    approved or submitted (so the transactional flow reverses what was posted) else ``draft``."""
    last = dict(row[3])
    was = ApprovalStatus(last["approval_status"])
    last.update(id=item_id, source_system=system, version=int(row[0]) + 1, description="deleted in Kantata",
                approval_status=ApprovalStatus.RECALLED if was in (ApprovalStatus.APPROVED, ApprovalStatus.SUBMITTED)
                else ApprovalStatus.DRAFT)
    model = TimeEntry if entity == "time_entry" else Expense
    return model.model_validate(last)


# --------------------------------------------------------------------------------------------------- master data


@dataclass(frozen=True, slots=True)
class FieldMap:
    """``options.field_map``: canonical ``<entity>.<field>`` -> Kantata custom field id (e.g.
    ``{"project.customer_id": "7001", "project.legal_entity_id": "7002", "resource.cost_center": "7010"}``)."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FieldMap:
        raw = options.get("field_map") or {}
        out: dict[str, str] = {}
        for key, value in dict(raw).items():
            if "." not in str(key) or str(key).split(".")[0] not in ("project", "resource"):
                raise ValueError(f"kantata option field_map: key {key!r} must be project.<field> or "
                                 "resource.<field>")
            cf = value.get("custom_field_id") if isinstance(value, Mapping) else value
            out[str(key)] = str(cf)
        return cls(out)

    def for_entity(self, entity: str) -> dict[str, str]:
        return {k.split(".", 1)[1]: v for k, v in self.fields.items() if k.startswith(entity + ".")}


@dataclass(frozen=True, slots=True)
class Defaults:
    """Canonical fields Kantata does not hold: defaults and per-record overrides (by Kantata id)."""

    values: Mapping[str, Any]
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, base: Mapping[str, Any]) -> Defaults:
        d = dict(options or {})
        overrides = {str(k): dict(v) for k, v in (d.pop("overrides", None) or {}).items()}
        return cls({**base, **d}, overrides)


PROJECT_BASE = {"customer_id": "UNASSIGNED", "legal_entity_id": "DEFAULT",
                "contract_type": ContractType.TIME_AND_MATERIALS.value, "currency": "USD", "cost_center": "DEFAULT"}
RESOURCE_BASE = {"role": "consultant", "cost_center": "DEFAULT", "home_entity_id": "DEFAULT"}


def custom_values(raw: Mapping[str, Any], cfvs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A record's custom field values, joined from the side-loaded ``custom_field_values`` map."""
    out: dict[str, Any] = {}
    for cid in raw.get("custom_field_value_ids") or ():
        cfv = cfvs.get(str(cid))
        if cfv is not None and cfv.get("value") not in (None, ""):
            out[str(cfv["custom_field_id"])] = cfv["value"]
    return out


def _values(raw: Mapping[str, Any], cf: CustomFields, defaults: Defaults, fields: Mapping[str, str]) -> dict[str, Any]:
    values = dict(defaults.values)
    values.pop("fields", None)
    for name, cid in fields.items():
        if cid in cf:
            values[name] = str(cf[cid])
    values.update(defaults.overrides.get(str(raw["id"]), {}))
    return values


_WS_STATUS = {"active": ProjectStatus.ACTIVE, "in progress": ProjectStatus.ACTIVE, "on hold": ProjectStatus.ON_HOLD,
              "completed": ProjectStatus.CLOSED, "cancelled": ProjectStatus.CLOSED, "archived": ProjectStatus.CLOSED}


def to_project(raw: Mapping[str, Any], cf: CustomFields, defaults: Defaults, fields: FieldMap) -> Project:
    """A Kantata workspace as a canonical Project (id = workspace id; currency from the workspace)."""
    values = _values(raw, cf, defaults, fields.for_entity("project"))
    if raw.get("currency") and "currency" not in defaults.overrides.get(str(raw["id"]), {}):
        values["currency"] = str(raw["currency"])
    status_text = str((raw.get("status") or {}).get("message", "active")).lower()
    status = ProjectStatus.CLOSED if raw.get("archived") else _WS_STATUS.get(status_text, ProjectStatus.ACTIVE)
    start = dt.date.fromisoformat(str(raw["start_date"])) if raw.get("start_date") else dt.date(1970, 1, 1)
    end = dt.date.fromisoformat(str(raw["due_date"])) if raw.get("due_date") else None
    return Project(id=str(raw["id"]), name=str(raw.get("title", "")), status=status, start_date=start,
                   end_date=end, **values)


def to_resource(raw: Mapping[str, Any], cf: CustomFields, defaults: Defaults, fields: FieldMap) -> Resource:
    values = _values(raw, cf, defaults, fields.for_entity("resource"))
    return Resource(id=str(raw["id"]), name=str(raw.get("full_name") or raw.get("email_address") or raw["id"]),
                    active=not raw.get("disabled", False), **values)


__all__ = ["ENTITIES", "PROJECT_BASE", "RESOURCE_BASE", "RESOURCE_OF", "SUBJECT_TYPES", "Defaults", "FieldMap",
           "StateRow", "approval_status", "compact", "custom_values", "deleted_record", "fingerprint",
           "minutes_to_hours", "next_version", "parse_ts", "to_project", "to_record", "to_resource"]
