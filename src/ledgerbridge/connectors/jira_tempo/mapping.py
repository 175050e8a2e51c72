"""Pure Jira + Tempo <-> canonical mapping (no I/O): worklogs, approvals, projects, users, versions, fingerprints.

- A time entry is a **Jira worklog** (id = Jira worklog id, stable across edits). ``started`` (with the author's
  offset) gives ``work_date`` in the author's local calendar; ``timeSpentSeconds / 3600`` gives ``hours``, rounded
  half-up to ``hours_places`` decimals (default 4; seconds rarely divide into exact hours); the ADF ``comment``
  flattened to text gives ``description``; the issue key is ``task``.
- **Project**: the Jira project of the issue (its id, or its key with ``project_id_style: key``), or the value of an
  issue custom field (``project_from: issue_field`` + ``project_field``), or the Tempo account work attribute
  (``project_from: account``).
- **Billable**: a Tempo work attribute (``billable_attribute`` + ``billable_values``), else Tempo's
  ``billableSeconds > 0``, else ``billable_default`` (no Tempo data).
- **Approval**: the Tempo timesheet approval of (author, period): ``approval_values`` maps ``APPROVED``/
  ``IN_REVIEW``/``OPEN`` to canonical statuses; without Tempo every worklog is ``approval_without_tempo``.
- **Version**: the newest of the worklog's ``updated``, its Tempo ``updatedAt`` and its approval's ``updatedAt``,
  in epoch seconds, raised to ``previous + 1`` when needed (:func:`next_version`) — deterministic from the data.
- **Fingerprint**: a hash of the business content (not ``updated``, not entity properties: our invoice write-back
  lives in a worklog property and must not make a new version).
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
from ledgerbridge.model.entities import ApprovalStatus, ContractType, Project, ProjectStatus, Resource, TimeEntry

DEFAULT_APPROVAL_VALUES: dict[str, ApprovalStatus] = {
    "APPROVED": ApprovalStatus.APPROVED, "IN_REVIEW": ApprovalStatus.SUBMITTED, "OPEN": ApprovalStatus.DRAFT}
PROJECT_FROM = ("jira_project", "issue_field", "account")


def _status(value: Any, where: str) -> ApprovalStatus:
    try:
        return ApprovalStatus(str(value))
    except ValueError:
        raise ValueError(f"jira_tempo option {where}: {value!r} is not an approval status; use one of "
                         f"{[s.value for s in ApprovalStatus]}") from None


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Where project, billable, account and approval come from (connector options of the same names)."""

    project_from: str = "jira_project"
    project_id_style: str = "id"  # id | key
    project_field: str | None = None  # issue custom field id, e.g. customfield_10100
    billable_attribute: str | None = None  # Tempo work attribute key, e.g. _Billable_
    billable_values: frozenset[str] = frozenset({"true", "yes", "1", "billable"})
    billable_default: bool = True
    account_attribute: str | None = "_Account_"
    approval_values: Mapping[str, ApprovalStatus] = field(default_factory=lambda: dict(DEFAULT_APPROVAL_VALUES))
    unapproved_status: ApprovalStatus = ApprovalStatus.DRAFT
    approval_without_tempo: ApprovalStatus = ApprovalStatus.APPROVED
    hours_places: int = 4

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FieldMap:
        approval = options.get("approval_values")
        out = cls(
            project_from=str(options.get("project_from", "jira_project")),
            project_id_style=str(options.get("project_id_style", "id")),
            project_field=options.get("project_field"),
            billable_attribute=options.get("billable_attribute"),
            billable_values=frozenset(str(v).lower() for v in options.get(
                "billable_values", ["true", "yes", "1", "billable"])),
            billable_default=bool(options.get("billable_default", True)),
            account_attribute=options.get("account_attribute", "_Account_"),
            approval_values=({str(k): _status(v, f"approval_values.{k}") for k, v in approval.items()}
                             if isinstance(approval, Mapping) else dict(DEFAULT_APPROVAL_VALUES)),
            unapproved_status=_status(options.get("unapproved_status", "draft"), "unapproved_status"),
            approval_without_tempo=_status(options.get("approval_without_tempo", "approved"),
                                           "approval_without_tempo"),
            hours_places=int(options.get("hours_places", 4)),
        )
        if out.project_from not in PROJECT_FROM:
            raise ValueError(f"jira_tempo option project_from: {out.project_from!r}; use one of {PROJECT_FROM}")
        if out.project_from == "issue_field" and not out.project_field:
            raise ValueError("jira_tempo: project_from: issue_field needs project_field (e.g. customfield_10100)")
        if out.project_from == "account" and not out.account_attribute:
            raise ValueError("jira_tempo: project_from: account needs account_attribute (e.g. _Account_)")
        if out.project_id_style not in ("id", "key"):
            raise ValueError(f"jira_tempo option project_id_style: {out.project_id_style!r}; use id or key")
        return out

    def issue_fields(self) -> list[str]:
        """The issue fields the project mapping reads."""
        return ["project", *([self.project_field] if self.project_from == "issue_field" and self.project_field
                             else [])]


# --------------------------------------------------------------------------------------------------- values


def _invalid(item: str, rule: str, message: str, fix: str, **details: Any) -> RecordValidationError:
    return RecordValidationError(f"{item}: {message} ({rule}) — {fix}",
                                 details={"item": item, "rule": rule, "fix": fix, **details})


def parse_jira_time(value: str) -> dt.datetime:
    """Jira's ``2026-11-02T09:00:00.000+0100`` (offset kept)."""
    return dt.datetime.fromisoformat(value)


def epoch_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def parse_tempo_time(value: str) -> dt.datetime:
    """Tempo's ``2026-11-02T09:00:00Z``."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def next_version(stamp_seconds: int, previous: int | None) -> int:
    """The version of a changed entry: ``stamp_seconds``, but always above ``previous`` (a second can hold two
    changes; an approval may change without the worklog)."""
    return stamp_seconds if previous is None else max(stamp_seconds, previous + 1)


def adf_text(node: Any) -> str:
    """Plain text of an Atlassian Document Format value (paragraphs joined by newlines); a plain string as is."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node
    if not isinstance(node, Mapping):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    parts = [adf_text(child) for child in node.get("content") or ()]
    sep = "\n" if node.get("type") == "doc" else ""
    return sep.join(p for p in parts if p) if sep else "".join(parts)


def attributes(tempo_worklog: Mapping[str, Any] | None) -> dict[str, str]:
    """Tempo work attributes ``{key: value}``."""
    values = ((tempo_worklog or {}).get("attributes") or {}).get("values") or ()
    return {str(a["key"]): str(a.get("value")) for a in values if a.get("value") is not None}


@dataclass(frozen=True, slots=True)
class TempoFacts:
    """What a sync keeps of a Tempo worklog (by Jira worklog id): billable, account, its change time."""

    billable: bool | None
    account: str | None
    updated: int  # epoch seconds

    def dump(self) -> list[Any]:
        return [self.billable, self.account, self.updated]

    @classmethod
    def load(cls, row: list[Any] | None) -> TempoFacts | None:
        return None if row is None else cls(row[0], row[1], int(row[2]))


def tempo_facts(raw: Mapping[str, Any], fields: FieldMap) -> TempoFacts:
    attrs = attributes(raw)
    billable: bool | None = None
    if fields.billable_attribute and fields.billable_attribute in attrs:
        billable = attrs[fields.billable_attribute].lower() in fields.billable_values
    elif raw.get("billableSeconds") is not None:
        billable = int(raw["billableSeconds"]) > 0
    account = attrs.get(fields.account_attribute) if fields.account_attribute else None
    updated = raw.get("updatedAt")
    return TempoFacts(billable, account, int(parse_tempo_time(updated).timestamp()) if updated else 0)


@dataclass(frozen=True, slots=True)
class IssueInfo:
    """The project mapping's view of one issue (cached in the cursor)."""

    key: str
    project_id: str
    project_key: str
    field_value: str | None = None

    def dump(self) -> list[Any]:
        return [self.key, self.project_id, self.project_key, self.field_value]

    @classmethod
    def load(cls, row: list[Any]) -> IssueInfo:
        return cls(str(row[0]), str(row[1]), str(row[2]), row[3])


def issue_info(raw: Mapping[str, Any], fields: FieldMap) -> IssueInfo:
    f = raw.get("fields") or {}
    project = f.get("project") or {}
    value = f.get(fields.project_field) if fields.project_field else None
    if isinstance(value, Mapping):  # select lists answer {"value": ...}
        value = value.get("value")
    return IssueInfo(str(raw.get("key", raw.get("id"))), str(project.get("id", "")), str(project.get("key", "")),
                     None if value in (None, "") else str(value))


@dataclass(frozen=True, slots=True)
class Approval:
    """The approval of one (account id, period)."""

    status: str  # Tempo's key: OPEN, IN_REVIEW, APPROVED
    updated: int  # epoch seconds

    def dump(self) -> list[Any]:
        return [self.status, self.updated]

    @classmethod
    def load(cls, row: list[Any]) -> Approval:
        return cls(str(row[0]), int(row[1]))


def approval_from_tempo(raw: Mapping[str, Any]) -> Approval:
    status = raw.get("status") or {}
    updated = status.get("updatedAt")
    return Approval(str(status.get("key", "OPEN")), int(parse_tempo_time(updated).timestamp()) if updated else 0)


# --------------------------------------------------------------------------------------------------- time entries


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a worklog's canonical entry depends on besides the worklog."""

    issue: IssueInfo | None
    tempo: TempoFacts | None
    approval: Approval | None
    tempo_enabled: bool


def hours_of(seconds: Any, places: int) -> Decimal:
    return (Decimal(int(seconds)) / Decimal(3600)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def work_date(raw: Mapping[str, Any]) -> dt.date:
    return parse_jira_time(str(raw["started"])).date()


def _project_id(ctx: Context, fields: FieldMap) -> str | None:
    if fields.project_from == "account":
        return ctx.tempo.account if ctx.tempo else None
    if ctx.issue is None:
        return None
    if fields.project_from == "issue_field":
        return ctx.issue.field_value
    return ctx.issue.project_key if fields.project_id_style == "key" else ctx.issue.project_id


def _approval(ctx: Context, fields: FieldMap) -> ApprovalStatus:
    if not ctx.tempo_enabled:
        return fields.approval_without_tempo
    if ctx.approval is None:
        return fields.unapproved_status
    return fields.approval_values.get(ctx.approval.status, fields.unapproved_status)


def content(raw: Mapping[str, Any], ctx: Context, fields: FieldMap) -> dict[str, Any]:
    """The business content of a worklog in its context (validated): what the fingerprint hashes and the entry
    carries. Raises :class:`RecordValidationError` naming the worklog, the rule and the fix."""
    item = f"jira worklog {raw.get('id')}"
    account = (raw.get("author") or {}).get("accountId")
    if not account or raw.get("issueId") is None:
        raise _invalid(item, "jira.references", "has no author accountId or issueId", "check the worklog in Jira")
    try:
        day = work_date(raw)
    except (KeyError, ValueError):
        raise _invalid(item, "jira.started", f"started {raw.get('started')!r} is not a date-time",
                       "correct the worklog's start in Jira") from None
    seconds = raw.get("timeSpentSeconds")
    if not isinstance(seconds, int | Decimal) or isinstance(seconds, bool) or int(seconds) != seconds:
        raise _invalid(item, "jira.time_spent", f"timeSpentSeconds {seconds!r} is not whole seconds",
                       "correct the time spent in Jira")
    hours = hours_of(seconds, fields.hours_places)
    if hours < 0 or hours > 24:
        raise _invalid(item, "jira.hours_range", f"{hours} h is outside 0..24 for one day",
                       "split the worklog per day in Jira")
    project = _project_id(ctx, fields)
    if not project:
        where = {"account": f"Tempo work attribute {fields.account_attribute!r}",
                 "issue_field": f"issue field {fields.project_field!r}"}.get(fields.project_from, "issue's project")
        raise _invalid(item, "jira.project", f"no project: the {where} is empty",
                       f"set the {where} on the worklog / issue", issue_id=str(raw.get("issueId")))
    billable = ctx.tempo.billable if ctx.tempo is not None and ctx.tempo.billable is not None \
        else fields.billable_default
    return {"issue_id": str(raw["issueId"]), "task": ctx.issue.key if ctx.issue else str(raw["issueId"]),
            "account_id": str(account), "work_date": day.isoformat(), "hours": str(hours), "billable": billable,
            "project_id": str(project), "status": _approval(ctx, fields).value,
            "description": adf_text(raw.get("comment"))}


def fingerprint(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def stamp_seconds(raw: Mapping[str, Any], ctx: Context) -> int:
    """The newest change time of the worklog and its Tempo data (epoch seconds)."""
    stamps = [int(parse_jira_time(str(raw["updated"])).timestamp()) if raw.get("updated") else 0]
    if ctx.tempo is not None:
        stamps.append(ctx.tempo.updated)
    if ctx.approval is not None:
        stamps.append(ctx.approval.updated)
    return max(stamps) or 1


def to_time_entry(worklog_id: str, body: Mapping[str, Any], *, system: str, version: int,
                  updated: dt.datetime | None) -> TimeEntry:
    return TimeEntry(
        id=worklog_id, source_system=system, version=version, project_id=body["project_id"],
        resource_id=body["account_id"], task=body["task"], work_date=dt.date.fromisoformat(body["work_date"]),
        hours=Decimal(body["hours"]), billable=bool(body["billable"]),
        approval_status=ApprovalStatus(body["status"]), updated_at=updated, description=body["description"])


def deleted_entry(worklog_id: str, version: int, body: Mapping[str, Any], *, system: str,
                  fields: FieldMap) -> TimeEntry:
    """The version reporting that a worklog was deleted: the last content, ``version`` one above the last, status
    ``recalled`` when it was approved (so the approvals rules reverse it) or ``unapproved_status``."""
    was = ApprovalStatus(body["status"])
    status = ApprovalStatus.RECALLED if was is ApprovalStatus.APPROVED else fields.unapproved_status
    entry = to_time_entry(worklog_id, {**body, "status": status.value}, system=system, version=version,
                          updated=None)
    return entry.model_copy(update={"description": "deleted in Jira"})


# --------------------------------------------------------------------------------------------------- master data


@dataclass(frozen=True, slots=True)
class ProjectDefaults:
    """Canonical project fields Jira does not hold: defaults plus overrides by Jira project id or key."""

    customer_id: str = "UNASSIGNED"
    legal_entity_id: str = "DEFAULT"
    contract_type: ContractType = ContractType.TIME_AND_MATERIALS
    currency: str = "USD"
    cost_center: str = "DEFAULT"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProjectDefaults:
        d = dict(options or {})
        return cls(customer_id=str(d.get("customer_id", "UNASSIGNED")),
                   legal_entity_id=str(d.get("legal_entity_id", "DEFAULT")),
                   contract_type=ContractType(d.get("contract_type", "time_and_materials")),
                   currency=str(d.get("currency", "USD")), cost_center=str(d.get("cost_center", "DEFAULT")),
                   overrides={str(k): dict(v) for k, v in (d.get("overrides") or {}).items()})


def to_project(raw: Mapping[str, Any], defaults: ProjectDefaults, fields: FieldMap) -> Project:
    """A Jira project as a canonical project (id: the Jira project id, or key with ``project_id_style: key``)."""
    values: dict[str, Any] = {"customer_id": defaults.customer_id, "legal_entity_id": defaults.legal_entity_id,
                              "contract_type": defaults.contract_type, "currency": defaults.currency,
                              "cost_center": defaults.cost_center}
    values.update(defaults.overrides.get(str(raw.get("key")), {}))
    values.update(defaults.overrides.get(str(raw["id"]), {}))
    pid = str(raw["key"]) if fields.project_id_style == "key" else str(raw["id"])
    archived = bool(raw.get("archived")) or bool(raw.get("deleted"))
    return Project(id=pid, name=str(raw.get("name", "")), start_date=dt.date(1970, 1, 1),
                   status=ProjectStatus.CLOSED if archived else ProjectStatus.ACTIVE, **values)


@dataclass(frozen=True, slots=True)
class ResourceDefaults:
    role: str = "consultant"
    cost_center: str = "DEFAULT"
    home_entity_id: str = "DEFAULT"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by accountId

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ResourceDefaults:
        d = dict(options or {})
        return cls(role=str(d.get("role", "consultant")), cost_center=str(d.get("cost_center", "DEFAULT")),
                   home_entity_id=str(d.get("home_entity_id", "DEFAULT")),
                   overrides={str(k): dict(v) for k, v in (d.get("overrides") or {}).items()})


def is_person(raw: Mapping[str, Any]) -> bool:
    """Human Atlassian accounts (not apps, not customer-portal accounts)."""
    return str(raw.get("accountType", "atlassian")) == "atlassian"


def to_resource(raw: Mapping[str, Any], defaults: ResourceDefaults) -> Resource:
    values: dict[str, Any] = {"role": defaults.role, "cost_center": defaults.cost_center,
                              "home_entity_id": defaults.home_entity_id}
    values.update(defaults.overrides.get(str(raw["accountId"]), {}))
    return Resource(id=str(raw["accountId"]), name=str(raw.get("displayName") or raw["accountId"]),
                    active=bool(raw.get("active", True)), **values)


__all__ = [
    "DEFAULT_APPROVAL_VALUES", "Approval", "Context", "FieldMap", "IssueInfo", "ProjectDefaults",
    "ResourceDefaults", "TempoFacts", "adf_text", "approval_from_tempo", "attributes", "content", "deleted_entry",
    "epoch_ms", "fingerprint", "hours_of", "is_person", "issue_info", "next_version", "parse_jira_time",
    "parse_tempo_time", "stamp_seconds", "tempo_facts", "to_project", "to_resource", "to_time_entry", "work_date",
]
