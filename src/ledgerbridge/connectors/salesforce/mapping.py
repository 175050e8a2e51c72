"""Pure Salesforce <-> canonical mapping (no I/O) for the three products on the platform.

One connector package serves the Salesforce platform; ``options.package`` picks the object mapping:

- ``certinia`` (Certinia PSA, namespace ``pse__``): projects ``pse__Proj__c``, resources ``Contact`` with
  ``pse__Is_Resource__c = true``, weekly timecards ``pse__Timecard_Header__c`` (one canonical time entry per day
  with hours), expenses ``pse__Expense__c``, milestones ``pse__Milestone__c``, ERP invoice write-back onto
  ``pse__Billing_Event__c``.
- ``kimble`` (KimbleOne): delivery groups ``KimbleOne__DeliveryGroup__c`` (projects), ``KimbleOne__Resource__c``,
  ``KimbleOne__TimeEntry__c`` (one per day), ``KimbleOne__ExpenseItem__c``, ``KimbleOne__Milestone__c``, invoice
  write-back onto ``KimbleOne__Invoice__c``. Kimble field names beyond the object names are defaults to check
  against the org's describe (``options.field_map``).
- ``crm`` (Sales Cloud): ``Opportunity``; ``StageName = Closed Won`` is a project approval; project status and ERP
  project number are written back onto the Opportunity.

Every object is an :class:`ObjectMap` (sObject name + canonical key -> field API name); ``options.objects`` renames
an sObject and ``options.field_map`` overrides single fields (``{time_entry: {billable: My_Billable__c}}``; an empty
value switches a field off). Dotted paths (``pse__Project__r.Name``) read relationship fields.

Money and hours are :class:`~decimal.Decimal` (the client decodes JSON numbers with ``parse_float=Decimal``; a float
reaching this module goes through ``str()``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ledgerbridge.errors import RecordValidationError
from ledgerbridge.model.entities import (
    ApprovalStatus,
    BillingMilestone,
    ContractType,
    Expense,
    MilestoneStatus,
    Project,
    ProjectStatus,
    Resource,
    TimeEntry,
)

PACKAGES = ("certinia", "kimble", "crm")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class ObjectMap:
    """One sObject as the connector reads or writes it: ``fields`` maps canonical keys to field API names;
    ``where`` is an extra SOQL condition (e.g. only resources)."""

    role: str
    sobject: str
    fields: Mapping[str, str]
    where: str = ""

    def sf(self, key: str) -> str | None:
        name = self.fields.get(key)
        return name or None

    def select(self) -> list[str]:
        out = ["Id", "SystemModstamp"]
        for name in self.fields.values():
            if name and name not in out:
                out.append(name)
        return out

    def get(self, raw: Mapping[str, Any], key: str) -> Any:
        name = self.sf(key)
        if name is None:
            return None
        cur: Any = raw
        for part in name.split("."):
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(part)
        return cur


_CERTINIA: dict[str, ObjectMap] = {
    "project": ObjectMap("project", "pse__Proj__c", {
        "name": "Name", "account": "pse__Account__c", "currency": "CurrencyIsoCode", "active": "pse__Is_Active__c",
        "billing_type": "pse__Billing_Type__c", "start_date": "pse__Start_Date__c", "end_date": "pse__End_Date__c",
        "stage": "pse__Stage__c", "cost_center": "", "legal_entity": ""}),
    "resource": ObjectMap("resource", "Contact", {
        "name": "Name", "active": "pse__Is_Resource_Active__c", "role": "pse__Resource_Role__c",
        "cost_center": "", "home_entity": ""}, where="pse__Is_Resource__c = true"),
    "time_entry": ObjectMap("time_entry", "pse__Timecard_Header__c", {
        "project": "pse__Project__c", "resource": "pse__Resource__c", "start_date": "pse__Start_Date__c",
        **{f"{d}_hours": f"pse__{d.capitalize()}_Hours__c" for d in WEEKDAYS},
        "status": "pse__Status__c", "approved": "pse__Approved__c", "financials": "pse__Include_In_Financials__c",
        "billable": "pse__Billable__c", "description": "pse__Timecard_Notes__c"}),
    "expense": ObjectMap("expense", "pse__Expense__c", {
        "project": "pse__Project__c", "resource": "pse__Resource__c", "date": "pse__Expense_Date__c",
        "amount": "pse__Amount__c", "currency": "CurrencyIsoCode", "category": "pse__Type__c",
        "status": "pse__Status__c", "approved": "pse__Approved__c", "financials": "pse__Include_In_Financials__c",
        "billable": "pse__Billable__c", "description": "pse__Description__c"}),
    "milestone": ObjectMap("milestone", "pse__Milestone__c", {
        "project": "pse__Project__c", "name": "Name", "amount": "pse__Milestone_Amount__c",
        "currency": "CurrencyIsoCode", "due_date": "pse__Target_Date__c", "status": "pse__Status__c",
        "approved": "pse__Approved__c", "completed_on": "pse__Actual_Date__c"}),
    "invoice": ObjectMap("invoice", "pse__Billing_Event__c", {
        "external_id": "ERP_Invoice_Id__c", "project": "pse__Project__c", "number": "pse__Invoice_Number__c",
        "date": "pse__Invoice_Date__c", "invoiced": "pse__Invoiced__c", "status": "ERP_Invoice_Status__c"}),
}

_KIMBLE: dict[str, ObjectMap] = {
    "project": ObjectMap("project", "KimbleOne__DeliveryGroup__c", {
        "name": "Name", "account": "KimbleOne__Account__c", "currency": "CurrencyIsoCode",
        "active": "KimbleOne__IsActive__c", "billing_type": "KimbleOne__ContractType__c",
        "start_date": "KimbleOne__StartDate__c", "end_date": "KimbleOne__EndDate__c", "stage": "",
        "cost_center": "", "legal_entity": ""}),
    "resource": ObjectMap("resource", "KimbleOne__Resource__c", {
        "name": "Name", "active": "KimbleOne__IsActive__c", "role": "KimbleOne__Grade__c", "cost_center": "",
        "home_entity": ""}),
    "time_entry": ObjectMap("time_entry", "KimbleOne__TimeEntry__c", {
        "project": "KimbleOne__DeliveryGroup__c", "resource": "KimbleOne__Resource__c",
        "date": "KimbleOne__EntryDate__c", "units": "KimbleOne__EntryUnits__c", "status": "KimbleOne__Status__c",
        "billable": "KimbleOne__IsChargeable__c", "description": "KimbleOne__Notes__c"}),
    "expense": ObjectMap("expense", "KimbleOne__ExpenseItem__c", {
        "project": "KimbleOne__DeliveryGroup__c", "resource": "KimbleOne__Resource__c",
        "date": "KimbleOne__ExpenseDate__c", "amount": "KimbleOne__IncurredAmount__c",
        "currency": "CurrencyIsoCode", "category": "KimbleOne__ExpenseCategory__c", "status": "KimbleOne__Status__c",
        "billable": "KimbleOne__IsChargeable__c", "description": "KimbleOne__Description__c"}),
    "milestone": ObjectMap("milestone", "KimbleOne__Milestone__c", {
        "project": "KimbleOne__DeliveryGroup__c", "name": "Name", "amount": "KimbleOne__Amount__c",
        "currency": "CurrencyIsoCode", "due_date": "KimbleOne__MilestoneDate__c", "status": "KimbleOne__Status__c",
        "completed_on": "KimbleOne__CompletedDate__c"}),
    "invoice": ObjectMap("invoice", "KimbleOne__Invoice__c", {
        "external_id": "ERP_Invoice_Id__c", "project": "KimbleOne__DeliveryGroup__c",
        "number": "KimbleOne__InvoiceReference__c", "date": "KimbleOne__InvoiceDate__c", "invoiced": "",
        "status": "ERP_Invoice_Status__c"}),
}

_CRM: dict[str, ObjectMap] = {
    "opportunity": ObjectMap("opportunity", "Opportunity", {
        "name": "Name", "account": "AccountId", "stage": "StageName", "amount": "Amount",
        "currency": "CurrencyIsoCode", "close_date": "CloseDate", "project_key": "Id",
        "project_status": "Project_Status__c", "erp_number": "ERP_Project_Number__c"}),
}

_DEFAULTS: dict[str, dict[str, ObjectMap]] = {"certinia": _CERTINIA, "kimble": _KIMBLE, "crm": _CRM}

#: status picklist values per product (overridable: options.statuses)
_STATUSES: dict[str, dict[str, str]] = {
    "certinia": {"Saved": "draft", "Draft": "draft", "Submitted": "submitted", "Approved": "approved",
                 "Rejected": "rejected"},
    "kimble": {"Draft": "draft", "Submitted": "submitted", "Approved": "approved", "Rejected": "rejected",
               "Recalled": "recalled"},
    "crm": {},
}

_CONTRACT_TYPES = {"Time and Materials": "time_and_materials", "T&M": "time_and_materials",
                   "Fixed Price": "fixed_fee", "Fixed Fee": "fixed_fee", "Milestone": "milestone"}


def object_maps(package: str, options: Mapping[str, Any]) -> dict[str, ObjectMap]:
    """The package's object maps with ``options.objects`` (sObject renames) and ``options.field_map`` (per field)
    applied. Unknown roles or keys are refused with the valid ones named."""
    if package not in _DEFAULTS:
        raise ValueError(f"salesforce option package: {package!r} is not one of {list(PACKAGES)}")
    base = _DEFAULTS[package]
    objects = dict(options.get("objects") or {})
    fmap = dict(options.get("field_map") or {})
    for role in (*objects, *fmap):
        if role not in base:
            raise ValueError(f"salesforce ({package}): unknown object role {role!r} in options.objects/field_map; "
                             f"use one of {sorted(base)}")
    out: dict[str, ObjectMap] = {}
    for role, om in base.items():
        fields = dict(om.fields)
        for key, name in (fmap.get(role) or {}).items():
            if key not in fields:
                raise ValueError(f"salesforce ({package}): field_map.{role}.{key} is not a canonical key of "
                                 f"{role}; use one of {sorted(fields)}")
            fields[key] = str(name or "")
        out[role] = ObjectMap(role, str(objects.get(role, om.sobject)), fields,
                              str((options.get("where") or {}).get(role, om.where)))
    return out


@dataclass(frozen=True, slots=True)
class Settings:
    """Value meanings: status picklist -> approval status, what counts as financially approved, Kimble units."""

    package: str
    statuses: Mapping[str, ApprovalStatus]
    require_financials: bool = True  # Certinia: post only Approved AND Include In Financials
    hours_per_unit: Decimal = Decimal(1)  # Kimble entry units -> hours (8 when the org books in days)
    billable_default: bool = True
    closed_won: str = "Closed Won"
    milestone_done: frozenset[str] = frozenset({"Approved", "Complete", "Completed", "Closed"})

    @classmethod
    def from_options(cls, package: str, options: Mapping[str, Any]) -> Settings:
        statuses = {**_STATUSES.get(package, {}), **{str(k): str(v) for k, v in
                                                     (options.get("statuses") or {}).items()}}
        try:
            parsed = {k: ApprovalStatus(v) for k, v in statuses.items()}
        except ValueError as exc:
            raise ValueError(f"salesforce option statuses: {exc}; values must be one of "
                             f"{[s.value for s in ApprovalStatus]}") from None
        return cls(package=package, statuses=parsed,
                   require_financials=bool(options.get("require_financials", package == "certinia")),
                   hours_per_unit=Decimal(str(options.get("hours_per_unit", 1))),
                   billable_default=bool(options.get("billable_default", True)),
                   closed_won=str(options.get("closed_won_stage", "Closed Won")),
                   milestone_done=frozenset(options.get("milestone_done_statuses",
                                                        ["Approved", "Complete", "Completed", "Closed"])))


# --------------------------------------------------------------------------------------------------- values


def parse_stamp(value: Any) -> dt.datetime:
    """Salesforce datetimes: ``2026-11-30T10:00:00.000+0000`` / ``...Z`` -> aware UTC datetime."""
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def sf_datetime(when: dt.datetime) -> str:
    """An aware datetime as the API writes it (milliseconds, ``+0000``)."""
    u = when.astimezone(dt.UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}+0000"


def soql_datetime(when: dt.datetime) -> str:
    """A SOQL datetime literal (``2026-11-30T10:00:00Z``; SOQL literals carry whole seconds)."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def decimal_of(value: Any, *, item: str, what: str) -> Decimal:
    d: Decimal | None = None
    if value is not None and not isinstance(value, bool):
        try:
            d = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            d = None
    if d is None or not d.is_finite():
        raise invalid(item, f"salesforce.{what}", f"{what} {value!r} is not a finite number",
                      f"enter the {what} in Salesforce")
    return d


def date_of(value: Any, *, item: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise invalid(item, f"salesforce.{what}", f"{what} {value!r} is not a date",
                      f"set the {what} in Salesforce") from None


def invalid(item: str, rule: str, message: str, fix: str) -> RecordValidationError:
    return RecordValidationError(f"{item}: {message} ({rule}) — {fix}",
                                 details={"item": item, "rule": rule, "fix": fix})


def fingerprint(raw: Mapping[str, Any], om: ObjectMap, *, skip: Iterable[str] = ()) -> str:
    """Hash of a record's mapped business fields (not ``SystemModstamp``, not write-back fields): a save that
    changes nothing the connector maps gives the same fingerprint and no new version."""
    skipped = set(skip)
    content = [[k, om.get(raw, k)] for k in sorted(om.fields) if k not in skipped]
    text = json.dumps(content, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _bool(value: Any, default: bool) -> bool:
    return default if value is None else value is True or str(value).lower() == "true"


def approval_status(raw: Mapping[str, Any], om: ObjectMap, settings: Settings) -> ApprovalStatus:
    """The record's approval status: the status picklist mapped by ``settings.statuses``; an Approved record that
    is not yet *Include In Financials* (Certinia, when required) counts as submitted — it is not postable."""
    text = om.get(raw, "status")
    status = settings.statuses.get(str(text), ApprovalStatus.DRAFT) if text is not None else ApprovalStatus.DRAFT
    if (status is ApprovalStatus.APPROVED and settings.require_financials and om.sf("financials")
            and not _bool(om.get(raw, "financials"), False)):
        return ApprovalStatus.SUBMITTED
    return status


def ref_id(raw: Mapping[str, Any], om: ObjectMap, key: str, item: str) -> str:
    value = om.get(raw, key)
    if not value:
        raise invalid(item, f"salesforce.{key}", f"has no {key} ({om.sf(key)})", f"set the {key} in Salesforce")
    return str(value)


# --------------------------------------------------------------------------------------------------- time, expenses


def timecard_days(raw: Mapping[str, Any], om: ObjectMap, *, system: str, version: int,
                  status: ApprovalStatus) -> dict[str, TimeEntry]:
    """A Certinia weekly timecard header as canonical time entries, one per day with hours (id
    ``<header id>:<date>``). The header's start date opens the week; each weekday field lands on the date of that
    weekday within the seven days from the start (so orgs whose week starts on Sunday or Saturday work too)."""
    item = f"salesforce timecard {raw.get('Id')}"
    project, resource = ref_id(raw, om, "project", item), ref_id(raw, om, "resource", item)
    start = date_of(om.get(raw, "start_date"), item=item, what="start_date")
    billable = _bool(om.get(raw, "billable"), True)
    stamp = parse_stamp(raw["SystemModstamp"])
    out: dict[str, TimeEntry] = {}
    for offset in range(7):
        day = start + dt.timedelta(days=offset)
        value = om.get(raw, f"{WEEKDAYS[day.weekday()]}_hours")
        if value is None:
            continue
        hours = decimal_of(value, item=item, what="hours")
        if hours == 0:
            continue
        if hours < 0 or hours > 24:
            raise invalid(item, "salesforce.hours_range", f"{day} has {hours} hours (outside 0..24)",
                          "correct the timecard in Certinia")
        eid = f"{raw['Id']}:{day.isoformat()}"
        out[eid] = TimeEntry(id=eid, source_system=system, version=version, project_id=project,
                             resource_id=resource, task=str(raw["Id"]), work_date=day, hours=hours,
                             billable=billable, approval_status=status, updated_at=stamp,
                             description=str(om.get(raw, "description") or ""))
    return out


def single_time_entry(raw: Mapping[str, Any], om: ObjectMap, settings: Settings, *, system: str, version: int,
                      status: ApprovalStatus) -> dict[str, TimeEntry]:
    """A Kimble time entry (one day): units times ``hours_per_unit``."""
    item = f"salesforce time entry {raw.get('Id')}"
    hours = decimal_of(om.get(raw, "units"), item=item, what="units") * settings.hours_per_unit
    if hours < 0 or hours > 24:
        raise invalid(item, "salesforce.hours_range", f"{hours} hours is outside 0..24 for one day",
                      "correct the entry (or options.hours_per_unit)")
    eid = str(raw["Id"])
    return {eid: TimeEntry(
        id=eid, source_system=system, version=version, project_id=ref_id(raw, om, "project", item),
        resource_id=ref_id(raw, om, "resource", item), work_date=date_of(om.get(raw, "date"), item=item,
                                                                          what="date"),
        hours=hours, billable=_bool(om.get(raw, "billable"), settings.billable_default), approval_status=status,
        updated_at=parse_stamp(raw["SystemModstamp"]), description=str(om.get(raw, "description") or ""))}


def expense(raw: Mapping[str, Any], om: ObjectMap, settings: Settings, *, system: str, version: int,
            status: ApprovalStatus, default_currency: str) -> dict[str, Expense]:
    item = f"salesforce expense {raw.get('Id')}"
    eid = str(raw["Id"])
    return {eid: Expense(
        id=eid, source_system=system, version=version, project_id=ref_id(raw, om, "project", item),
        resource_id=ref_id(raw, om, "resource", item),
        expense_date=date_of(om.get(raw, "date"), item=item, what="date"),
        amount=decimal_of(om.get(raw, "amount"), item=item, what="amount"),
        currency=str(om.get(raw, "currency") or default_currency), category=str(om.get(raw, "category") or "other"),
        billable=_bool(om.get(raw, "billable"), settings.billable_default), approval_status=status,
        updated_at=parse_stamp(raw["SystemModstamp"]), description=str(om.get(raw, "description") or ""))}


def state_of(entry: TimeEntry | Expense) -> tuple[list[Any], list[Any]]:
    """What the cursor keeps of an emitted entry to report its withdrawal later, compactly: the part shared by all
    entries of one record (project, resource, ...) and the entry's own ``[date, hours or amount]``."""
    if isinstance(entry, TimeEntry):
        return (["t", entry.project_id, entry.resource_id, int(entry.billable), entry.task],
                [entry.work_date.isoformat(), str(entry.hours)])
    return (["x", entry.project_id, entry.resource_id, entry.currency, entry.category, int(entry.billable)],
            [entry.expense_date.isoformat(), str(entry.amount)])


def withdrawn(eid: str, base: list[Any], own: list[Any], *, system: str, version: int, status: ApprovalStatus,
              why: str) -> TimeEntry | Expense:
    """The version reporting that an emitted entry is gone (deleted record, day emptied): its last content
    (:func:`state_of`) with ``status`` (recalled after an approval), so the approvals rules reverse what was posted."""
    day = dt.date.fromisoformat(own[0])
    if base[0] == "t":
        return TimeEntry(id=eid, source_system=system, version=version, project_id=base[1], resource_id=base[2],
                         task=base[4], work_date=day, hours=Decimal(own[1]), billable=bool(base[3]),
                         approval_status=status, description=why)
    return Expense(id=eid, source_system=system, version=version, project_id=base[1], resource_id=base[2],
                   expense_date=day, amount=Decimal(own[1]), currency=base[3], category=base[4],
                   billable=bool(base[5]), approval_status=status, description=why)


# --------------------------------------------------------------------------------------------------- master data


@dataclass(frozen=True, slots=True)
class Defaults:
    """Canonical fields Salesforce does not hold (or holds in org-specific fields): defaults plus per-record
    overrides by Salesforce Id (``overrides: {a0X...: {legal_entity_id: UK01}}``)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, base: Mapping[str, Any]) -> Defaults:
        d = dict(options or {})
        overrides = {str(k): dict(v) for k, v in (d.pop("overrides", None) or {}).items()}
        return cls(values={**base, **d}, overrides=overrides)

    def merged(self, record_id: str, found: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.values, **{k: v for k, v in found.items() if v not in (None, "")},
                **self.overrides.get(record_id, {})}


PROJECT_BASE = {"customer_id": "UNASSIGNED", "legal_entity_id": "DEFAULT", "contract_type": "time_and_materials",
                "currency": "USD", "cost_center": "DEFAULT"}
RESOURCE_BASE = {"role": "consultant", "cost_center": "DEFAULT", "home_entity_id": "DEFAULT"}


def to_project(raw: Mapping[str, Any], om: ObjectMap, defaults: Defaults) -> Project:
    rid = str(raw["Id"])
    btype = om.get(raw, "billing_type")
    found = {"customer_id": om.get(raw, "account"), "currency": om.get(raw, "currency"),
             "cost_center": om.get(raw, "cost_center"), "legal_entity_id": om.get(raw, "legal_entity"),
             "contract_type": _CONTRACT_TYPES.get(str(btype)) if btype else None}
    values = defaults.merged(rid, found)
    active = _bool(om.get(raw, "active"), True)
    start = om.get(raw, "start_date")
    end = om.get(raw, "end_date")
    return Project(id=rid, name=str(om.get(raw, "name") or rid),
                   status=ProjectStatus.ACTIVE if active else ProjectStatus.CLOSED,
                   start_date=dt.date.fromisoformat(str(start)[:10]) if start else dt.date(1970, 1, 1),
                   end_date=dt.date.fromisoformat(str(end)[:10]) if end else None,
                   customer_id=str(values["customer_id"]), legal_entity_id=str(values["legal_entity_id"]),
                   contract_type=ContractType(values["contract_type"]), currency=str(values["currency"]),
                   cost_center=str(values["cost_center"]))


def to_resource(raw: Mapping[str, Any], om: ObjectMap, defaults: Defaults) -> Resource:
    rid = str(raw["Id"])
    values = defaults.merged(rid, {"role": om.get(raw, "role"), "cost_center": om.get(raw, "cost_center"),
                                   "home_entity_id": om.get(raw, "home_entity")})
    return Resource(id=rid, name=str(om.get(raw, "name") or rid), role=str(values["role"]),
                    cost_center=str(values["cost_center"]), home_entity_id=str(values["home_entity_id"]),
                    active=_bool(om.get(raw, "active"), True))


def to_milestone(raw: Mapping[str, Any], om: ObjectMap, settings: Settings, default_currency: str) -> BillingMilestone:
    item = f"salesforce milestone {raw.get('Id')}"
    status_text = str(om.get(raw, "status") or "")
    done = status_text in settings.milestone_done or _bool(om.get(raw, "approved"), False)
    completed = om.get(raw, "completed_on")
    return BillingMilestone(
        id=str(raw["Id"]), project_id=ref_id(raw, om, "project", item), name=str(om.get(raw, "name") or raw["Id"]),
        amount=decimal_of(om.get(raw, "amount"), item=item, what="amount"),
        currency=str(om.get(raw, "currency") or default_currency),
        due_date=date_of(om.get(raw, "due_date"), item=item, what="due_date"),
        status=MilestoneStatus.COMPLETED if done else MilestoneStatus.PLANNED,
        completed_on=date_of(completed, item=item, what="completed_on") if done and completed else None)


def opportunity_project(raw: Mapping[str, Any], om: ObjectMap, defaults: Defaults) -> Project:
    """A won Opportunity as the canonical project it approves (id = the Opportunity's project key field, the
    Opportunity Id by default; contract value = Amount)."""
    item = f"salesforce opportunity {raw.get('Id')}"
    key = str(om.get(raw, "project_key") or raw["Id"])
    values = defaults.merged(key, {"customer_id": om.get(raw, "account"), "currency": om.get(raw, "currency")})
    amount = om.get(raw, "amount")
    close = om.get(raw, "close_date")
    return Project(id=key, name=str(om.get(raw, "name") or key), status=ProjectStatus.APPROVED,
                   start_date=date_of(close, item=item, what="close_date") if close else dt.date(1970, 1, 1),
                   customer_id=str(values["customer_id"]), legal_entity_id=str(values["legal_entity_id"]),
                   contract_type=ContractType(values["contract_type"]), currency=str(values["currency"]),
                   cost_center=str(values["cost_center"]),
                   contract_value=decimal_of(amount, item=item, what="amount") if amount is not None else None)


__all__ = [
    "PACKAGES", "PROJECT_BASE", "RESOURCE_BASE", "Defaults", "ObjectMap", "Settings", "approval_status",
    "date_of", "decimal_of", "expense", "fingerprint", "invalid", "object_maps", "opportunity_project",
    "parse_stamp", "sf_datetime", "single_time_entry", "soql_datetime", "soql_string", "state_of",
    "timecard_days", "to_milestone", "to_project", "to_resource", "withdrawn",
]
