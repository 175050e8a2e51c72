"""The Salesforce platform (Certinia PSA, Kimble, Sales Cloud) as a PSA source and write-back target.

**Change detection** (:meth:`SalesforceSource.sync`), per object stream (Certinia/Kimble: time and expenses, plus
milestones for completion events; CRM: opportunities):

1. **Compound keyset cursor.** ``SELECT ... FROM <obj> WHERE <cond> ORDER BY SystemModstamp, Id LIMIT n``; the
   position after each page is the last row's ``(SystemModstamp, Id)``. A sync that stops early (``max_records``
   reached, API budget used up) continues next time with ``SystemModstamp > X OR (SystemModstamp = X AND Id > 'Y')``
   — many rows sharing one stamp across a page break are neither lost nor read twice.
2. **Overlap.** A normal sync starts ``overlap_seconds`` before the last stamp (whole seconds, so the literal needs
   no milliseconds) with ``>=``: rows committed late with an older stamp, or saved in the same second after the last
   read, are caught. Rows re-read this way are recognised by a fingerprint of the mapped fields (same fingerprint
   -> no version; a save that changes nothing mapped, e.g. a write-back, emits nothing either). An equal stamp is
   not proof of "already seen": stamps have whole seconds, so a second save within the same second is compared
   too; only a stamp older than the one held is skipped unread.
3. **Versions.** A changed row gives a version = its ``SystemModstamp`` in epoch seconds, raised to last + 1 when
   needed. A Certinia timecard header gives one time entry per day with hours (``<header id>:<date>``); only days
   whose content or status changed get a new version; a day emptied, a record deleted, and a record recalled or
   rejected after approval give a ``recalled``/``rejected`` version, which the transactional flow reverses.
4. **Deletes.** ``GET /sobjects/<obj>/deleted/?start&end`` (recycle bin, ~15 days) from the last covered date minus
   the overlap; every known id it names is withdrawn. When the feed no longer reaches back to the last covered
   date (``earliestDateAvailable`` not earlier, and no full read started since), or on ``full=True``, a full read
   runs and known ids it did not list are withdrawn when it completes (reconciliation sweep; records are marked
   with the read's generation, so a full read spread over several syncs sweeps too).

The cursor is JSON (store it with the events in one transaction; ``flows.sources.sync_source`` does). Replaying a
sync from the same cursor against the same org data gives the same versions and idempotency keys.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CursorKind,
    FailureMode,
    IdempotencyMechanism,
    InvoiceStatusUpdate,
    Limits,
    PagingKind,
    SystemKind,
    inbox_record,
)
from ledgerbridge.connectors.base import SourceSyncResult as SyncResult
from ledgerbridge.connectors.salesforce.client import SYSTEM, SalesforceClient
from ledgerbridge.connectors.salesforce.mapping import (
    PROJECT_BASE,
    RESOURCE_BASE,
    Defaults,
    ObjectMap,
    Settings,
    approval_status,
    expense,
    fingerprint,
    object_maps,
    opportunity_project,
    parse_stamp,
    sf_datetime,
    single_time_entry,
    soql_datetime,
    soql_string,
    state_of,
    timecard_days,
    to_milestone,
    to_project,
    to_resource,
    withdrawn,
)
from ledgerbridge.errors import LedgerbridgeError, PermanentError, RateLimitedError, RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus, BillingMilestone, Expense, Project, Resource, TimeEntry
from ledgerbridge.model.events import (
    ExpenseApproved,
    ExpenseEdited,
    ExpenseRecalled,
    ExpenseRejected,
    TimeEntryApproved,
    TimeEntryEdited,
    TimeEntryRecalled,
    TimeEntryRejected,
)

log = logging.getLogger("ledgerbridge.connectors.salesforce")

CURSOR_FORMAT = 2
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.PSA,
    reads=frozenset({"time_entry", "expense", "project", "resource", "billing_milestone"}),
    writes=frozenset({"invoice", "project"}),  # invoice number/status onto billing events; CRM project status
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.UPSERT_EXTERNAL_ID,
    paging=PagingKind.CURSOR,
    limits=Limits(concurrency=5),
    batch_sizes=BatchSizes(read=2000, write=200),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)

#: the object streams each package syncs (transactional first, then event-only streams)
STREAMS: dict[str, tuple[str, ...]] = {"certinia": ("time_entry", "expense", "milestone"),
                                      "kimble": ("time_entry", "expense", "milestone"),
                                      "crm": ("opportunity",)}


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One new version of a canonical time entry or expense found by a sync."""

    kind: Literal["created", "updated", "deleted"]
    entry: TimeEntry | Expense
    system: str
    observed_at: dt.datetime

    @property
    def entity(self) -> str:
        return "time_entry" if isinstance(self.entry, TimeEntry) else "expense"

    @property
    def idempotency_key(self) -> str:
        return f"salesforce:{self.system}:{self.entity}:{self.entry.id}:{self.entry.version}"

    def to_business_event(self) -> Any:
        status = self.entry.approval_status
        if isinstance(self.entry, TimeEntry):
            cls: Any = {ApprovalStatus.APPROVED: TimeEntryApproved, ApprovalStatus.RECALLED: TimeEntryRecalled,
                        ApprovalStatus.REJECTED: TimeEntryRejected}.get(status, TimeEntryEdited)
            return cls(event_id=self.idempotency_key, source_system=self.system,
                       occurred_at=self.entry.updated_at or self.observed_at, entry=self.entry)
        cls = {ApprovalStatus.APPROVED: ExpenseApproved, ApprovalStatus.RECALLED: ExpenseRecalled,
               ApprovalStatus.REJECTED: ExpenseRejected}.get(status, ExpenseEdited)
        return cls(event_id=self.idempotency_key, source_system=self.system,
                   occurred_at=self.entry.updated_at or self.observed_at, expense=self.entry)

    def to_record(self) -> dict[str, Any]:
        return inbox_record(self.entity, self.entry, self.idempotency_key, self.kind)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    overlap_seconds: int = 60
    max_records: int = 100_000  # per stream per sync (LIMIT); the rest follows next sync from the keyset
    full_scan_every: int = 0  # 0: only when the delete feed has a gap
    deleted_days: int = 15  # how far back the first delete window reaches (recycle bin)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyncOptions:
        out = cls(overlap_seconds=int(options.get("overlap_seconds", 60)),
                  max_records=int(options.get("max_records", 100_000)),
                  full_scan_every=int(options.get("full_scan_every", 0)),
                  deleted_days=int(options.get("deleted_days", 15)))
        if out.overlap_seconds < 0 or out.max_records < 1 or out.full_scan_every < 0 or not 0 < out.deleted_days <= 30:
            raise ValueError("salesforce options: overlap_seconds >= 0, max_records >= 1, full_scan_every >= 0 and "
                             f"deleted_days in 1..30 (got {out})")
        return out


def _epoch(stamp: dt.datetime) -> int:
    return int((stamp - EPOCH).total_seconds())


class SalesforceSource:
    """One Salesforce org for system ``system``, mapped as ``package`` (certinia | kimble | crm)."""

    def __init__(self, client: SalesforceClient, *, system: str, package: str,
                 options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        self.client = client
        self.system = system
        self.package = package
        self.maps: dict[str, ObjectMap] = object_maps(package, opts)
        self.settings = Settings.from_options(package, opts)
        self.sync_options = SyncOptions.from_options(opts)
        self.project_defaults = Defaults.from_options(opts.get("projects"), PROJECT_BASE)
        self.resource_defaults = Defaults.from_options(opts.get("resources"), RESOURCE_BASE)
        self.default_currency = str(self.project_defaults.values.get("currency", "USD"))

    @classmethod
    def from_options(cls, system: str, options: Mapping[str, Any], *, private_key: str | None = None,
                     client_secret: str | None = None, **client_kw: Any) -> SalesforceSource:
        package = str(options.get("package", "certinia"))
        client = SalesforceClient(
            login_url=str(options.get("login_url", "")), client_id=str(options.get("client_id", "")),
            auth=str(options.get("auth", "jwt")), username=options.get("username"), private_key=private_key,
            client_secret=client_secret, audience=options.get("audience"),
            api_version=str(options.get("api_version", "60.0")), system=system,
            page_size=int(options.get("page_size", 2000)), budget_share=float(options.get("budget_share", 0.9)),
            limit_wait=float(options.get("limit_wait_seconds", 600)),
            max_wait=float(options.get("max_wait_seconds", 30)), **client_kw)
        return cls(client, system=system, package=package, options=options)

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def close(self) -> None:
        self.client.close()

    def _soql(self, om: ObjectMap, *conditions: str, order: bool = False, limit: int | None = None) -> str:
        conds = [c for c in (om.where, *conditions) if c]
        where = f" WHERE {' AND '.join(f'({c})' for c in conds)}" if conds else ""
        tail = " ORDER BY SystemModstamp, Id" if order else ""
        return f"SELECT {', '.join(om.select())} FROM {om.sobject}{where}{tail}" + (f" LIMIT {limit}" if limit else "")

    def _need(self, role: str) -> ObjectMap:
        om = self.maps.get(role)
        if om is None:
            raise PermanentError(f"{self.system}: package {self.package!r} has no {role} object — use package "
                                 f"certinia or kimble for it", details={"package": self.package, "role": role})
        return om

    # ------------------------------------------------------------------ master data

    def projects(self) -> list[Project]:
        """Certinia/Kimble projects; for the CRM package the won opportunities (the projects they approve)."""
        if self.package == "crm":
            om = self.maps["opportunity"]
            rows = self.client.query_all(self._soql(om, f"{om.sf('stage')} = {soql_string(self.settings.closed_won)}"))
            return [opportunity_project(r, om, self.project_defaults) for r in rows]
        om = self._need("project")
        return [to_project(r, om, self.project_defaults) for r in self.client.query_all(self._soql(om))]

    def resources(self) -> list[Resource]:
        if self.package == "crm":
            return []
        om = self._need("resource")
        return [to_resource(r, om, self.resource_defaults) for r in self.client.query_all(self._soql(om))]

    def milestones(self) -> list[BillingMilestone]:
        om = self._need("milestone")
        return [to_milestone(r, om, self.settings, self.default_currency)
                for r in self.client.query_all(self._soql(om))]

    # ------------------------------------------------------------------ change detection

    def sync(self, cursor: Mapping[str, Any] | None = None, *, full: bool | None = None,
             now: dt.datetime | None = None) -> SyncResult:
        """Every change since ``cursor`` (``None``: first sync, a full read). ``full`` forces (True) or forbids
        (False) a full read; ``now`` ends the delete window (default: the wall clock)."""
        state = _State.load(cursor, self.system, self.package)
        now = now or dt.datetime.now(dt.UTC)
        if full is None:
            full = state.syncs == 0 or (self.sync_options.full_scan_every > 0
                                         and (state.syncs % self.sync_options.full_scan_every) == 0)
        run = _Run(self, state, now)
        requests_before = self.client.requests
        for role in STREAMS[self.package]:
            try:
                run.stream(role, full=bool(full))
            except RateLimitedError as err:
                if not run.rows and not run.events and not run.deleted:
                    raise  # nothing done at all: let the runtime wait and retry the step
                run.stopped = err
                break
        state.syncs += 1
        stats = {"full": bool(full), "package": self.package, "rows": run.rows, "events": len(run.events),
                 "business_events": len(run.business), "errors": len(run.errors), "skipped": run.skipped,
                 "deleted": run.deleted, "full_reads": ",".join(run.full_reads),
                 "query_restarts": run.restarts,
                 "requests": self.client.requests - requests_before,
                 "incomplete": any(s.get("resume") for s in state.streams.values()) or run.stopped is not None,
                 "api_usage": "/".join(map(str, self.client.api_usage)) if self.client.api_usage else ""}
        if run.stopped is not None:
            stats["stopped"] = run.stopped.code
            stats["retry_after"] = run.stopped.retry_after or 0
            log.warning("%s: sync stopped early, continues next run from the saved position: %s", self.system,
                        run.stopped)
        return SyncResult(events=run.events, errors=run.errors, cursor=state.dump(), stats=stats,
                          business_events=run.business)

    # ------------------------------------------------------------------ write-back

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        """ERP invoice number, date and status onto the PSA's invoice object (Certinia ``pse__Billing_Event__c``,
        Kimble ``KimbleOne__Invoice__c``) by the external-id field (``ERP_Invoice_Id__c`` = the engine's invoice
        key), with sObject Collections upserts of 200 (``allOrNone=false``). Records already holding the values
        are not written again (one query first), so a repeat changes nothing and creates nothing. Returns the
        invoices written; raises the first item error after writing the others (the flow dead-letters them)."""
        om = self._need("invoice")
        ext = om.sf("external_id")
        if not ext:
            raise PermanentError(f"{self.system}: field_map.invoice.external_id is empty — create an External ID "
                                 "(unique) field for the ERP invoice key and name it there")
        wanted: dict[str, dict[str, Any]] = {}
        for u in updates:
            rec: dict[str, Any] = {ext: u.key}
            for key, value in (("project", u.project_id), ("number", u.erp_number),
                               ("date", u.invoice_date.isoformat()), ("status", u.status),
                               ("invoiced", u.status in ("posted", "paid", "credited"))):
                name = om.sf(key)
                if name:
                    rec[name] = value
            wanted[u.key] = rec
        held = self._held(om, ext, list(wanted))
        todo = [rec for key, rec in wanted.items()
                if any(held.get(key, {}).get(k) != v for k, v in rec.items() if k != ext)]
        if not todo:
            return 0
        results = self.client.upsert_many(om.sobject, ext, todo)
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise failed[0]
        return len(todo)

    def _held(self, om: ObjectMap, ext: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        fields = [f for f in om.fields.values() if f]
        for start in range(0, len(keys), 200):
            chunk = keys[start:start + 200]
            soql = (f"SELECT Id, {', '.join(fields)} FROM {om.sobject} WHERE {ext} IN "
                    f"({', '.join(soql_string(k) for k in chunk)})")
            for row in self.client.query_all(soql):
                out[str(row[ext])] = {f: _plain(row.get(f)) for f in fields}
        return out

    def invoice_records(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read back the invoice object's write-back fields by engine invoice key."""
        om = self._need("invoice")
        return self._held(om, str(om.sf("external_id")), list(keys))

    def set_project_status(self, project_id: str, status: str, erp_number: str | None = None) -> bool:
        """CRM write-back (the subscription action ``set_crm_status``): the project's status and ERP number onto
        its Opportunity, upserted by the project key field (``field_map.opportunity.project_key``, the Opportunity
        Id by default). Repeating it changes nothing. Returns True when a record was created."""
        om = self._need("opportunity") if self.package == "crm" else None
        if om is None:
            raise PermanentError(f"{self.system}: set_project_status writes to Opportunities — use package crm")
        fields: dict[str, Any] = {}
        if om.sf("project_status"):
            fields[str(om.sf("project_status"))] = status
        if erp_number is not None and om.sf("erp_number"):
            fields[str(om.sf("erp_number"))] = erp_number
        created, _ = self.client.upsert(om.sobject, str(om.sf("project_key") or "Id"), project_id, fields)
        return created


def _plain(value: Any) -> Any:
    """A read value in the form it is written (``2026-11-30`` dates, booleans, text)."""
    return str(value) if value is not None and not isinstance(value, bool | str) else value


# --------------------------------------------------------------------------------------------------- state


#: one known sObject: [SystemModstamp in epoch milliseconds, fingerprint, shared part of its entries (mapping.state_of),
#: {canonical id: [version, status, date, hours or amount]}, generation of the last full read that listed it]
Known = list[Any]


@dataclass(slots=True)
class _State:
    package: str
    streams: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Known]]
    syncs: int = 0

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None, system: str, package: str) -> _State:
        if not cursor:
            return cls(package=package, streams={}, items={})
        if cursor.get("format") != CURSOR_FORMAT or cursor.get("package") != package:
            raise PermanentError(
                f"{system}: the stored Salesforce cursor has format {cursor.get('format')!r} / package "
                f"{cursor.get('package')!r}, expected {CURSOR_FORMAT} / {package!r} — delete the cursor "
                "(ledgerbridge re-reads everything; idempotency keys prevent duplicates)",
                details={"format": cursor.get("format"), "package": cursor.get("package")})
        mine = json.loads(json.dumps(cursor))  # a private copy: the caller's cursor stays as it was (replays)
        return cls(package=package, streams=mine.get("streams", {}), items=mine.get("items", {}),
                   syncs=int(mine.get("syncs", 0)))

    def dump(self) -> dict[str, Any]:
        return {"format": CURSOR_FORMAT, "package": self.package, "streams": self.streams, "items": self.items,
                "syncs": self.syncs}


class _Run:
    """One sync's work: reads each stream, compares with the state, collects events."""

    def __init__(self, source: SalesforceSource, state: _State, now: dt.datetime) -> None:
        self.src, self.state, self.now = source, state, now
        self.events: list[ChangeEvent] = []
        self.business: list[dict[str, Any]] = []
        self.errors: list[LedgerbridgeError] = []
        self.rows = self.skipped = self.deleted = 0
        self.stopped: RateLimitedError | None = None
        self.full_reads: list[str] = []
        self.restarts = 0

    # ---- reading

    def stream(self, role: str, *, full: bool) -> None:
        src, opts = self.src, self.src.sync_options
        om = src.maps[role]
        pos = self.state.streams.setdefault(role, {})
        items = self.state.items.setdefault(role, {})
        pos.setdefault("deleted_to", sf_datetime(self.now))  # deletes after this moment come from the feed
        gap = self._deletes(role, om, pos, items) if pos.get("ts") and not full else False
        full = full or gap or not pos.get("ts")
        if full:
            self.full_reads.append(role)
        if pos.get("resume") and pos.get("ts") and not full:
            cond = _after(pos)
        elif pos.get("ts") and not full:
            since = parse_stamp(pos["ts"]).replace(microsecond=0) - dt.timedelta(seconds=opts.overlap_seconds)
            cond = f"SystemModstamp >= {soql_datetime(since)}"
        else:
            cond = ""
        if full:  # a full read (re)starts: every record it lists is marked with its generation
            pos["full_gen"], pos["in_full"] = int(pos.get("full_gen", 0)) + 1, True
            pos["deleted_to"] = pos["full_at"] = sf_datetime(self.now)  # what goes from now on, the feed says
        gen = int(pos["full_gen"]) if pos.get("in_full") else None
        read = restarts = 0
        while True:
            try:
                for page in src.client.query(src._soql(om, cond, order=True, limit=opts.max_records - read)):
                    for raw in page:
                        self.row(role, om, raw, items)
                        if gen is not None:
                            known = items[str(raw["Id"])]
                            known[4:] = [gen]
                        pos["ts"], pos["id"] = str(raw["SystemModstamp"]), str(raw["Id"])
                        pos["lit"] = _literal(raw["SystemModstamp"])
                    read += len(page)
                    pos["resume"] = True  # until the query is read to its end
                break
            except RateLimitedError:
                self.rows += read
                raise
            except RecordValidationError as err:
                # the query locator expired (idle ~15 min) or was purged: query again after the last row handled
                if "INVALID_QUERY_LOCATOR" not in (err.details.get("vendor_codes") or ()) or restarts >= 3 \
                        or not pos.get("ts") or read >= opts.max_records:
                    raise
                restarts += 1
                cond = _after(pos)
        self.rows += read
        self.restarts += restarts
        pos["resume"] = read >= opts.max_records
        if gen is not None and not pos["resume"]:  # a full read is complete (in this sync or over several)
            for sf_id in sorted(i for i, known in items.items() if known[4:] != [gen]):  # not listed: gone
                self._withdraw(role, sf_id, items, None, "not found in a full read")
            pos["in_full"] = False

    def _deletes(self, role: str, om: ObjectMap, pos: dict[str, Any], items: dict[str, Known]) -> bool:
        """Withdraw what the delete feed names; True when the feed no longer covers our window (a gap)."""
        covered = parse_stamp(pos["deleted_to"])
        start = covered - dt.timedelta(seconds=self.src.sync_options.overlap_seconds)
        floor = self.now - dt.timedelta(days=self.src.sync_options.deleted_days)
        feed = self.src.client.deleted(om.sobject, sf_datetime(max(start, floor)), sf_datetime(self.now))
        # a full read started at ``full_at`` accounts for every delete before it (it sweeps what it does not list)
        full_at = parse_stamp(pos["full_at"]) if pos.get("full_at") else None
        effective = max(covered, full_at) if full_at else covered
        earliest = parse_stamp(feed["earliestDateAvailable"]) if feed.get("earliestDateAvailable") else None
        purged = earliest is not None and earliest >= effective and not (full_at and full_at >= earliest)
        gap = effective < floor or purged
        for rec in feed.get("deletedRecords") or []:
            sf_id = str(rec.get("id"))
            if sf_id in items:
                when = parse_stamp(rec["deletedDate"]) if rec.get("deletedDate") else self.now
                self._withdraw(role, sf_id, items, when, "deleted in Salesforce")
        covered = feed.get("latestDateCovered")
        pos["deleted_to"] = str(covered) if covered else sf_datetime(self.now)
        return gap

    # ---- comparing

    def row(self, role: str, om: ObjectMap, raw: Mapping[str, Any], items: dict[str, Known]) -> None:
        sf_id = str(raw["Id"])
        stamp = parse_stamp(raw["SystemModstamp"])
        stamp_ms = int((stamp - EPOCH).total_seconds() * 1000)  # kept as an integer: a compact cursor
        prev = items.get(sf_id)
        if prev is not None and stamp_ms < int(prev[0]):
            self.skipped += 1  # an older state than the one already handled
            return
        fp = fingerprint(raw, om)
        if prev is not None and prev[1] == fp:  # re-read by the overlap, or saved without a mapped change;
            # an equal stamp is compared too: stamps have whole seconds, a second save within one is a change
            prev[0] = stamp_ms
            self.skipped += 1
            return
        children: dict[str, list[Any]] = dict(prev[3]) if prev is not None else {}
        base: list[Any] | None = prev[2] if prev is not None else None
        if role in ("opportunity", "milestone"):
            self._business(role, om, raw, children)
            items[sf_id] = [stamp_ms, fp, None, children]
            return
        status = approval_status(raw, om, self.src.settings)
        floor = max((int(c[0]) for c in children.values()), default=0)
        version = max(_epoch(stamp), floor + 1)
        try:
            found = self._map(role, om, raw, version, status, children)
        except RecordValidationError as err:
            err.details["raw"] = {k: v for k, v in raw.items() if k != "attributes"}
            err.details["id"] = sf_id
            self.errors.append(err)
            items[sf_id] = [stamp_ms, fp, base, children]
            return
        new_base = base
        for eid, entry in found.items():
            new_base, own = state_of(entry)
            last = children.get(eid)
            row = [entry.version, entry.approval_status.value, *own]
            if last is not None and new_base == base and last[1:] == row[1:]:
                continue  # this day/record did not change
            children[eid] = row
            self.events.append(ChangeEvent("created" if last is None else "updated", entry, self.src.system,
                                           self.now))
        for eid in sorted(set(children) - set(found)):  # a day emptied or moved to another date
            self._emit_withdrawn(eid, base, children, version, "removed from the timecard")
        items[sf_id] = [stamp_ms, fp, new_base, children]

    def _map(self, role: str, om: ObjectMap, raw: Mapping[str, Any], version: int, status: ApprovalStatus,
             children: Mapping[str, list[Any]]) -> dict[str, Any]:
        src = self.src

        def per_entry(eid: str) -> ApprovalStatus:
            last = children.get(eid)
            was_approved = last is not None and last[1] == ApprovalStatus.APPROVED.value
            if was_approved and status in (ApprovalStatus.DRAFT, ApprovalStatus.SUBMITTED):
                return ApprovalStatus.RECALLED  # recalled after it was included in financials
            return status

        if role == "expense":
            out: dict[str, Any] = expense(raw, om, src.settings, system=src.system, version=version, status=status,
                                          default_currency=src.default_currency)
        elif src.package == "certinia":
            out = timecard_days(raw, om, system=src.system, version=version, status=status)
        else:
            out = single_time_entry(raw, om, src.settings, system=src.system, version=version, status=status)
        return {eid: e.model_copy(update={"approval_status": per_entry(eid)}) for eid, e in out.items()}

    def _emit_withdrawn(self, eid: str, base: list[Any] | None, children: dict[str, list[Any]], version: int,
                        why: str) -> None:
        """A version reporting an emitted entry gone: recalled when it was approved (reversed downstream), its
        last status when rejected or recalled, otherwise draft."""
        last = children.pop(eid)
        assert base is not None, "an emitted entry always has its record's shared part"
        was = ApprovalStatus(last[1])
        status = {ApprovalStatus.APPROVED: ApprovalStatus.RECALLED, ApprovalStatus.REJECTED: was,
                  ApprovalStatus.RECALLED: was}.get(was, ApprovalStatus.DRAFT)
        entry = withdrawn(eid, base, last[2:], system=self.src.system, version=max(version, int(last[0]) + 1),
                          status=status, why=why)
        self.events.append(ChangeEvent("deleted", entry, self.src.system, self.now))

    def _withdraw(self, role: str, sf_id: str, items: dict[str, Known], when: dt.datetime | None,
                  why: str) -> None:
        """Withdraw every entry of a record that is gone: version = the deletion time (delete feed) or last + 1
        (full-read sweep) — never the wall clock, so a replayed sync gives the same versions."""
        known = items.pop(sf_id)
        self.deleted += 1
        for eid in sorted(known[3]) if role in ("time_entry", "expense") else ():
            self._emit_withdrawn(eid, known[2], known[3], _epoch(when) if when else 0, why)

    def _business(self, role: str, om: ObjectMap, raw: Mapping[str, Any], children: dict[str, list[Any]]) -> None:
        src = self.src
        sf_id = str(raw["Id"])
        occurred = parse_stamp(raw["SystemModstamp"]).isoformat()
        if role == "opportunity":
            won = om.get(raw, "stage") == src.settings.closed_won
            if won and "won" not in children:
                try:
                    project = opportunity_project(raw, om, src.project_defaults)
                except (RecordValidationError, ValueError) as err:
                    self.errors.append(err if isinstance(err, RecordValidationError) else RecordValidationError(
                        f"salesforce opportunity {sf_id}: {err}", details={"id": sf_id}))
                    return
                self.business.append({"event_type": "project.approved",
                                      "event_id": f"{src.system}:opportunity:{sf_id}:closed_won",
                                      "source_system": src.system, "occurred_at": occurred,
                                      "project": project.model_dump(mode="json")})
            if won:
                children["won"] = [1, "won", []]
            else:
                children.pop("won", None)
            return
        try:
            milestone = to_milestone(raw, om, src.settings, src.default_currency)
        except RecordValidationError as err:
            err.details["id"] = sf_id
            self.errors.append(err)
            return
        done = milestone.status.value == "completed"
        if done and "done" not in children:
            self.business.append({"event_type": "milestone.completed",
                                  "event_id": f"{src.system}:milestone:{sf_id}:completed",
                                  "source_system": src.system, "occurred_at": occurred,
                                  "milestone": milestone.model_dump(mode="json")})
        if done:
            children["done"] = [1, "done", []]


def _after(pos: Mapping[str, Any]) -> str:
    """The keyset predicate: rows after the last one handled, in (SystemModstamp, Id) order."""
    return f"SystemModstamp > {pos['lit']} OR (SystemModstamp = {pos['lit']} AND Id > {soql_string(pos['id'])})"


def _literal(stamp: Any) -> str:
    """The SOQL literal of a row's SystemModstamp, keeping its milliseconds when it has them."""
    when = parse_stamp(stamp)
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{when.microsecond // 1000:03d}Z" if when.microsecond else base + "Z"


__all__ = ["CAPABILITIES", "CURSOR_FORMAT", "STREAMS", "ChangeEvent", "SalesforceSource", "SyncOptions",
           "SyncResult"]
