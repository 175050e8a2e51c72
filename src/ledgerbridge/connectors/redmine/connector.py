"""Redmine as a PSA source: time entries (with change detection), projects, users; invoice-ref write-back.

Redmine 5.0 cannot filter or sort time entries by ``updated_on`` and leaves no trace of a deletion, so
:meth:`RedmineSource.sync` detects changes by **windowed snapshot diffs** (see ``docs/connectors/redmine.md``):

1. **Scan.** A full sync lists every entry. An incremental sync lists the recent range (``spent_on`` from the first
   day of the month ``lookback_days`` ago, open-ended so future-dated entries are included; every sync re-scans it,
   which is the overlap) plus ``rotate_windows`` older calendar months in rotation, so the whole history is
   re-checked every few syncs. Every ``full_scan_every`` syncs a full scan runs.
2. **Compare.** Each listed entry's business fingerprint is compared with the cursor's; a new id or a changed
   fingerprint is a new version (``updated_on`` epoch seconds, bumped above the last version when needed). A save
   that changes only ``updated_on`` or the write-back field emits nothing.
3. **Deletions.** A known id whose last ``spent_on`` lies in a scanned range but which was not listed is a
   candidate. If its project is no longer listed, the project is probed: archived (403) -> the entries are hidden,
   not deleted; deleted (404) -> the entries are deleted. Otherwise the entry itself is fetched: 200 -> it moved
   (its ``spent_on`` was edited into a window not scanned) and is compared like a listed entry; 404 -> deleted
   (one deletion event: status ``recalled`` so downstream reverses); 403 -> hidden.

The cursor is a JSON-able dict (store it in the store's ``cursors`` table, stream ``time_entries``, in the same
transaction as the events). Replaying a sync from the same cursor against the same server data yields the same
events with the same idempotency keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
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
from ledgerbridge.connectors.redmine.client import SYSTEM, RedmineClient
from ledgerbridge.connectors.redmine.mapping import (
    FieldMap,
    ProjectDefaults,
    ResourceDefaults,
    StateRow,
    custom_field_id,
    custom_value,
    deleted_entry,
    fingerprint,
    next_version,
    state_row,
    to_project,
    to_resource,
    to_time_entry,
)
from ledgerbridge.errors import LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import ApprovalStatus, Project, Resource, TimeEntry
from ledgerbridge.model.events import TimeEntryApproved, TimeEntryEdited, TimeEntryRecalled, TimeEntryRejected

CURSOR_FORMAT = 1

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.PSA,
    reads=frozenset({"time_entry", "project", "resource"}),
    writes=frozenset({"time_entry"}),  # only the invoice-ref custom field (write-back)
    change_detection=frozenset({CursorKind.SNAPSHOT_DIFF}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,  # the ref is read first and written only if different
    paging=PagingKind.OFFSET,
    limits=Limits(concurrency=1),  # one SQLite/WEBrick Redmine serializes requests anyway
    batch_sizes=BatchSizes(read=100, write=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)

ChangeKind = Literal["created", "updated", "deleted"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change found by a sync: a new version of an entry, or its deletion (a ``recalled``/unapproved version
    one above the last, so the approvals rules reverse whatever was posted)."""

    kind: ChangeKind
    entry: TimeEntry
    system: str
    observed_at: dt.datetime

    @property
    def idempotency_key(self) -> str:
        return f"redmine:{self.system}:time_entry:{self.entry.id}:{self.entry.version}"

    def to_business_event(self) -> TimeEntryApproved | TimeEntryEdited | TimeEntryRecalled | TimeEntryRejected:
        """The canonical event: approved -> ``time_entry.approved``; recalled (deletion, un-approval after
        approval) -> ``time_entry.recalled``; rejected -> ``time_entry.rejected``; anything else ->
        ``time_entry.edited``."""
        status = self.entry.approval_status
        classes: dict[ApprovalStatus, type[TimeEntryApproved | TimeEntryEdited | TimeEntryRecalled |
                                           TimeEntryRejected]] = {
            ApprovalStatus.APPROVED: TimeEntryApproved,
            ApprovalStatus.RECALLED: TimeEntryRecalled,
            ApprovalStatus.REJECTED: TimeEntryRejected,
        }
        cls = classes.get(status, TimeEntryEdited)
        return cls(event_id=self.idempotency_key, source_system=self.system,
                   occurred_at=self.entry.updated_at or self.observed_at, entry=self.entry)

    def to_record(self) -> dict[str, Any]:
        """The inbox record of this version (the shape ``flows.transactions.land`` takes, as the CSV source
        yields it), plus ``idempotency_key`` and ``kind``."""
        return inbox_record("time_entry", self.entry, self.idempotency_key, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "idempotency_key": self.idempotency_key, "system": self.system,
                "observed_at": self.observed_at.isoformat(), "entry": self.entry.model_dump(mode="json")}


@dataclass(frozen=True, slots=True)
class WriteBackResult:
    entry_id: str
    status: Literal["written", "unchanged", "failed"]
    error: LedgerbridgeError | None = None


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Change-detection options (connector options keys of the same names)."""

    lookback_days: int = 45
    rotate_windows: int = 3
    full_scan_every: int = 48
    scan_floor: dt.date | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyncOptions:
        floor = options.get("scan_floor")
        out = cls(
            lookback_days=int(options.get("lookback_days", 45)),
            rotate_windows=int(options.get("rotate_windows", 3)),
            full_scan_every=int(options.get("full_scan_every", 48)),
            scan_floor=dt.date.fromisoformat(str(floor)) if floor else None,
        )
        if out.lookback_days < 0 or out.rotate_windows < 0 or out.full_scan_every < 0:
            raise ValueError(f"redmine options: lookback_days, rotate_windows and full_scan_every must be >= 0 "
                             f"(got {out.lookback_days}, {out.rotate_windows}, {out.full_scan_every})")
        return out


# --------------------------------------------------------------------------------------------------- windows


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_end(day: dt.date) -> dt.date:
    nxt = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return nxt - dt.timedelta(days=1)


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """First days of the calendar months from ``first``'s to ``last``'s, inclusive (empty when first > last)."""
    out: list[dt.date] = []
    cur = month_start(first)
    while cur <= last:
        out.append(cur)
        cur = month_end(cur) + dt.timedelta(days=1)
    return out


Range = tuple[str | None, str | None]  # spent_on from/to (ISO dates, inclusive; None = open)


def _in_range(day: str, rng: Range) -> bool:
    return (rng[0] is None or day >= rng[0]) and (rng[1] is None or day <= rng[1])


# --------------------------------------------------------------------------------------------------- the source


class RedmineSource:
    """Redmine as a PSA source for system ``system`` (the configured system name; part of idempotency keys)."""

    def __init__(
        self,
        client: RedmineClient,
        *,
        system: str,
        fields: FieldMap | None = None,
        sync_options: SyncOptions | None = None,
        project_defaults: ProjectDefaults | None = None,
        resource_defaults: ResourceDefaults | None = None,
    ) -> None:
        self.client = client
        self.system = system
        self.fields = fields or FieldMap()
        self.sync_options = sync_options or SyncOptions()
        self.project_defaults = project_defaults or ProjectDefaults()
        self.resource_defaults = resource_defaults or ResourceDefaults()

    @classmethod
    def from_options(cls, system: str, options: Mapping[str, Any], api_key: str, **client_kw: Any) -> RedmineSource:
        """Build from a configured system: ``options`` = ``systems.<name>.options``, ``api_key`` =
        ``systems.<name>.secret("api_key")``. Keys: see ``docs/connectors/redmine.md``."""
        client = RedmineClient(str(options.get("url", "")), api_key, system=system,
                               timeout=float(options.get("timeout_seconds", 30)),
                               max_attempts=int(options.get("max_attempts", 4)), **client_kw)
        return cls(
            client, system=system, fields=FieldMap.from_options(options),
            sync_options=SyncOptions.from_options(options),
            project_defaults=ProjectDefaults.from_options(options.get("projects") or {}),
            resource_defaults=ResourceDefaults.from_options(options.get("resources") or {}),
        )

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ master data

    def projects(self) -> list[Project]:
        """Active and closed projects as canonical projects (archived ones are invisible over REST)."""
        return [to_project(raw, self.project_defaults) for raw in self.client.projects()]

    def resources(self) -> list[Resource]:
        """Every user (locked ones inactive) as canonical resources."""
        return [to_resource(raw, self.resource_defaults) for raw in self.client.users()]

    # ------------------------------------------------------------------ change detection

    def sync(
        self, cursor: Mapping[str, Any] | None = None, *, full: bool | None = None, today: dt.date | None = None,
        now: dt.datetime | None = None,
    ) -> SyncResult:
        """Find every change since ``cursor`` (``None`` = first sync: a full scan that reports every entry).

        ``full``: force (True) or forbid (False) a full scan; default: first sync and every ``full_scan_every``-th.
        ``today`` (UTC date) positions the recent range; ``now`` stamps deletion events."""
        state = _State.load(cursor, self.system)
        now = now or dt.datetime.now(dt.UTC)
        today = today or now.date()
        opts = self.sync_options
        requests_before = self.client.requests
        if full is None:
            full = (not state.entries and state.syncs == 0) or (
                opts.full_scan_every > 0 and state.since_full + 1 >= opts.full_scan_every)
        scans = [(None, None)] if full else self._plan(state, today)

        visible = {int(p["id"]) for p in self.client.projects()}
        seen: dict[str, dict[str, Any]] = {}
        for a, b in scans:
            for raw in self.client.time_entries(a, b):
                seen[str(raw["id"])] = raw

        run = _Run(self, state, now)
        for entry_id in sorted(seen, key=int):
            run.compare(seen[entry_id])
        for hidden_pid in list(state.hidden):
            if int(hidden_pid) in visible:
                del state.hidden[hidden_pid]  # un-archived: its entries are listed again

        candidates = [eid for eid, row in state.entries.items()
                      if eid not in seen and any(_in_range(row[2], rng) for rng in scans)]
        probes: dict[int, int] = {}
        for eid in sorted(candidates, key=int):
            row = state.entries[eid]
            pid = int(row[3])
            if pid not in visible:
                if pid not in probes:
                    probes[pid] = self.client.project_status(pid)
                if probes[pid] == 404:
                    run.delete(eid)
                    continue
                if probes[pid] == 403:
                    state.hidden[str(pid)] = "archived"
                    run.hidden += 1
                    continue
            status, found = self.client.time_entry(eid)
            if status == 200 and found is not None:
                run.compare(found)
                run.moved += 1
            elif status == 404:
                run.delete(eid)
            else:
                run.hidden += 1

        state.syncs += 1
        state.since_full = 0 if full else state.since_full + 1
        stats = {"full": full, "scans": [list(s) for s in scans], "listed": len(seen), "candidates": len(candidates),
                 "moved": run.moved, "hidden": run.hidden, "events": len(run.events), "errors": len(run.errors),
                 "requests": self.client.requests - requests_before, "known": len(state.entries)}
        return SyncResult(events=run.events, errors=run.errors, cursor=state.dump(), stats=stats)

    def _plan(self, state: _State, today: dt.date) -> list[Range]:
        opts = self.sync_options
        recent = month_start(today - dt.timedelta(days=opts.lookback_days))
        scans: list[Range] = [(recent.isoformat(), None)]
        floor = opts.scan_floor or state.floor()
        if floor is None or opts.rotate_windows == 0:
            return scans
        older = months_between(floor, recent - dt.timedelta(days=1))
        if not older:
            return scans
        start = state.rotation % len(older)
        picked = [older[(start + i) % len(older)] for i in range(min(opts.rotate_windows, len(older)))]
        state.rotation = (start + len(picked)) % len(older)
        scans += [(m.isoformat(), month_end(m).isoformat()) for m in sorted(picked)]
        return scans

    # ------------------------------------------------------------------ write-back

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        """The billing flow's write-back (``InvoiceStatusSink``): each time entry billed on an invoice gets the
        ERP invoice number and status in its invoice-ref field (``INV-US01-000012 posted``; a credited invoice says
        so). Idempotent (``mark_invoiced`` writes only what differs). Returns the invoices whose entries changed;
        raises the first entry's error when an invoice could not be written at all (the flow dead-letters it)."""
        changed = 0
        for u in updates:
            ref = f"{u.erp_number or u.key} {u.status}"
            ids = {item_id: ref for system, entity, item_id in u.items
                   if system == self.system and entity == "time_entry"}
            if not ids:
                continue
            results = self.mark_invoiced(ids)
            failed = [r for r in results if r.status == "failed"]
            if failed and len(failed) == len(results) and failed[0].error is not None:
                raise failed[0].error
            changed += any(r.status == "written" for r in results)
        return changed

    def mark_invoiced(self, refs: Mapping[str, str]) -> list[WriteBackResult]:
        """Write an invoice / posting reference into each entry's write-back custom field (``{entry id: ref}``).

        Looks the current value up first and writes only when it differs, so a repeated call is harmless. One
        result per entry: ``written``, ``unchanged`` or ``failed`` (deleted entry, closed or archived project -> a
        :class:`PermanentError`; refused value -> :class:`RecordValidationError`). Never raises for one entry; a
        transport failure after retries raises. The write changes Redmine's ``updated_on`` but not the entry's
        fingerprint, so the next sync emits no new version for it."""
        out: list[WriteBackResult] = []
        for entry_id, ref in refs.items():
            try:
                out.append(self._write_ref(str(entry_id), ref))
            except LedgerbridgeError as err:
                if err.retryable:
                    raise
                out.append(WriteBackResult(str(entry_id), "failed", err))
        return out

    def _write_ref(self, entry_id: str, ref: str) -> WriteBackResult:
        status, raw = self.client.time_entry(entry_id)
        if status != 200 or raw is None:
            what = "was deleted" if status == 404 else "is not visible (archived project or missing permission)"
            raise PermanentError(f"{self.system}: time entry {entry_id} {what}; cannot write invoice ref {ref!r}",
                                 code="LB-P004" if status == 404 else "LB-P003", details={"entry": entry_id})
        if custom_value(raw, self.fields.invoice_ref) == (ref or None):
            return WriteBackResult(entry_id, "unchanged")
        fid = custom_field_id(raw, self.fields.invoice_ref)
        if fid is None:
            raise PermanentError(
                f"{self.system}: time entry {entry_id} has no custom field {self.fields.invoice_ref!r} — create a "
                "time-entry custom field for the invoice reference (scripts/redmine bootstrap creates 'Invoice ref') "
                "or set options.invoice_ref_field", details={"entry": entry_id})
        self.client.update_time_entry(entry_id, {"custom_fields": [{"id": fid, "value": ref}]})
        return WriteBackResult(entry_id, "written")

    def invoice_refs(self, entry_ids: Iterable[str]) -> dict[str, str | None]:
        """Read back the write-back field of each entry (``None``: empty; entries not found are left out)."""
        out: dict[str, str | None] = {}
        for eid in entry_ids:
            status, raw = self.client.time_entry(eid)
            if status == 200 and raw is not None:
                out[str(eid)] = custom_value(raw, self.fields.invoice_ref)
        return out


# --------------------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _State:
    entries: dict[str, StateRow]
    hidden: dict[str, str]
    rotation: int = 0
    syncs: int = 0
    since_full: int = 0

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None, system: str) -> _State:
        if not cursor:
            return cls(entries={}, hidden={})
        if cursor.get("format") != CURSOR_FORMAT or not isinstance(cursor.get("entries"), Mapping):
            raise PermanentError(
                f"{system}: the stored Redmine cursor has format {cursor.get('format')!r}, expected {CURSOR_FORMAT} "
                "— delete the cursor (ledgerbridge re-reads everything; idempotency keys prevent duplicates)",
                details={"format": cursor.get("format")})
        return cls(entries={str(k): list(v) for k, v in cursor["entries"].items()},
                   hidden={str(k): str(v) for k, v in (cursor.get("hidden_projects") or {}).items()},
                   rotation=int(cursor.get("rotation", 0)), syncs=int(cursor.get("syncs", 0)),
                   since_full=int(cursor.get("since_full", 0)))

    def dump(self) -> dict[str, Any]:
        return {"format": CURSOR_FORMAT, "entries": self.entries, "hidden_projects": self.hidden,
                "rotation": self.rotation, "syncs": self.syncs, "since_full": self.since_full}

    def floor(self) -> dt.date | None:
        days = [row[2] for row in self.entries.values()]
        return dt.date.fromisoformat(min(days)) if days else None


class _Run:
    """The events of one sync as they are found (mutates the state)."""

    def __init__(self, source: RedmineSource, state: _State, now: dt.datetime) -> None:
        self.source, self.state, self.now = source, state, now
        self.events: list[ChangeEvent] = []
        self.errors: list[LedgerbridgeError] = []
        self.moved = 0
        self.hidden = 0

    def compare(self, raw: Mapping[str, Any]) -> None:
        src, eid = self.source, str(raw["id"])
        prev = self.state.entries.get(eid)
        try:
            fp = fingerprint(raw, src.fields)
        except RecordValidationError as err:
            fp = "invalid:" + str(raw.get("updated_on"))
            if prev is not None and prev[1] == fp:
                return
            self._refuse(raw, prev, fp, err)
            return
        if prev is not None and prev[1] == fp:
            return
        version = next_version(str(raw["updated_on"]), int(prev[0]) if prev else None)
        try:
            entry = to_time_entry(raw, system=src.system, version=version, fields=src.fields)
        except RecordValidationError as err:
            self._refuse(raw, prev, fp, err, version)
            return
        self.state.entries[eid] = state_row(entry, fp)
        first = prev is None or int(prev[0]) == 0  # 0: seen before, but never valid (never emitted)
        self.events.append(ChangeEvent("created" if first else "updated", entry, src.system, self.now))

    def _refuse(self, raw: Mapping[str, Any], prev: StateRow | None, fp: str, err: RecordValidationError,
                version: int | None = None) -> None:
        err.details["raw"] = dict(raw)
        self.errors.append(err)
        if prev is None or int(prev[0]) == 0:
            # never emitted: remembered with version 0 (so it is reported once, and its deletion emits nothing)
            self.state.entries[str(raw["id"])] = [
                0, fp, str(raw.get("spent_on")), int((raw.get("project") or {}).get("id", 0)),
                int((raw.get("user") or {}).get("id", 0)), "0", 0, self.source.fields.unapproved_status.value]
            return
        # a later version that cannot be mapped: it takes a version number so the fixed one comes after it
        version = version or next_version(str(raw["updated_on"]), int(prev[0]))
        self.state.entries[str(raw["id"])] = [version, fp, *prev[2:]]

    def delete(self, eid: str) -> None:
        row = self.state.entries.pop(eid)
        if int(row[0]) == 0:
            return  # never valid, never emitted: nothing downstream to reverse
        entry = deleted_entry(eid, row, system=self.source.system, fields=self.source.fields)
        self.events.append(ChangeEvent("deleted", entry, self.source.system, self.now))


def keys(events: Sequence[ChangeEvent]) -> list[str]:
    """The idempotency keys of ``events`` (convenience for flows and tests)."""
    return [e.idempotency_key for e in events]


__all__ = ["CAPABILITIES", "CURSOR_FORMAT", "ChangeEvent", "RedmineSource", "SyncOptions", "SyncResult",
           "WriteBackResult", "keys", "month_end", "month_start", "months_between"]
