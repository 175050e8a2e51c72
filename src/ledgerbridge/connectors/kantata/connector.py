"""Kantata OX as a PSA source: time entries and expenses (with change detection), workspaces, users, invoices;
ERP invoice numbers written back as external references. See ``docs/connectors/kantata.md``.

Change detection (:meth:`KantataSource.sync`):

1. **Events.** The subscribed-events feed since the stored watermark minus ``event_overlap_seconds`` is read whole
   (it is unordered, so no page can be trusted to be the newest). Events are de-duplicated by event id (ids seen
   in the overlap are kept in the cursor) and reduced to subjects: time entries, expenses, and timesheet
   submissions (whose entries are then re-read, since approval lives on the submission). The feed keeps events
   about 9 days: a watermark older than ``event_retention_days`` minus a day makes the sync re-scan from it.
2. **Re-scan.** Every ``rescan_every`` syncs the trailing ``rescan_window_seconds`` is re-read with
   ``updated_after`` (ascending ``updated_at``), which catches events the feed lost. Paging is keyed on
   ``updated_at`` with the boundary second re-read (ties at a page boundary are never skipped); when a whole page
   shares that second the page number advances instead. A full sync lists everything and sweeps deletions.
3. **Fetch and order.** Subjects not already re-read are fetched by id (``only=``, 200 per call, submission
   side-loaded). All rows are ordered by their own ``updated_at`` (then id); a row older than the version already
   known is a stale read and ignored; a row whose business fingerprint did not change emits nothing (duplicates,
   our own write-back). Otherwise it is a new version (``updated_at`` epoch seconds, above the last one).
4. **Deletions.** A deleted event whose subject is no longer returned, or (full sync) a known id no longer listed
   and confirmed missing by id, emits a final version: ``recalled`` when it was approved, so the transactional
   flow reverses what was posted.

The cursor is a JSON-able dict; replaying a sync from the same cursor against the same data gives the same
records and idempotency keys (``kantata:<system>:<entity>:<id>:<version>``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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
from ledgerbridge.connectors.kantata.client import MAX_PER_PAGE, SYSTEM, Credentials, KantataClient
from ledgerbridge.connectors.kantata.mapping import (
    ENTITIES,
    PROJECT_BASE,
    RESOURCE_BASE,
    RESOURCE_OF,
    SUBJECT_TYPES,
    Defaults,
    FieldMap,
    StateRow,
    approval_status,
    compact,
    custom_values,
    deleted_record,
    fingerprint,
    next_version,
    parse_ts,
    to_project,
    to_record,
    to_resource,
)
from ledgerbridge.errors import LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Expense, Project, Resource, TimeEntry

CURSOR_FORMAT = 1
EVENT_TYPES = ",".join(f"{e}:{a}" for e in ("time_entry", "expense", "timesheet_submission")
                       for a in ("created", "updated", "deleted"))
SUBJECT_ENTITY = {"TimeEntry": "time_entry", "Expense": "expense", "TimesheetSubmission": "timesheet_submission"}

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.PSA,
    reads=frozenset({"time_entry", "expense", "project", "resource", "invoice"}),
    writes=frozenset({"invoice"}),  # the ERP number/status as external references on Kantata records
    change_detection=frozenset({CursorKind.SEQUENCE, CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,  # external references read first, written if different
    paging=PagingKind.PAGE_NUMBER,
    limits=Limits(),  # Kantata does not publish its numbers: options.rate_limit / rate_window_seconds when known
    batch_sizes=BatchSizes(read=MAX_PER_PAGE, write=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    event_overlap_seconds: int = 300
    rescan_every: int = 4
    rescan_window_seconds: int = 6 * 3600
    event_retention_days: float = 9.0
    full_scan_every: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyncOptions:
        out = cls(**{k: type(getattr(cls(), k))(options[k]) for k in cls.__dataclass_fields__ if k in options})
        if min(out.event_overlap_seconds, out.rescan_every, out.rescan_window_seconds, out.full_scan_every) < 0:
            raise ValueError(f"kantata options must be >= 0: {out}")
        return out


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # created | updated | deleted
    entity: str
    item: TimeEntry | Expense
    system: str

    @property
    def idempotency_key(self) -> str:
        return f"kantata:{self.system}:{self.entity}:{self.item.id}:{self.item.version}"

    def to_record(self) -> dict[str, Any]:
        return inbox_record(self.entity, self.item, self.idempotency_key, self.kind)


@dataclass(slots=True)
class _State:
    items: dict[str, StateRow]  # "entity:id" -> [version, fingerprint, updated_at, payload | None]
    watermark: str | None = None  # newest event created_at seen
    seen: dict[str, str] = field(default_factory=dict)  # event id -> created_at, inside the overlap
    syncs: int = 0

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None, system: str) -> _State:
        if not cursor:
            return cls(items={})
        if cursor.get("format") != CURSOR_FORMAT:
            raise ValueError(f"{system}: stored Kantata cursor has format {cursor.get('format')!r}, expected "
                             f"{CURSOR_FORMAT} — delete the cursor (a full re-read; idempotency keys prevent "
                             "duplicates)")
        return cls(items={k: list(v) for k, v in cursor["items"].items()}, watermark=cursor.get("watermark"),
                   seen=dict(cursor.get("seen") or {}), syncs=int(cursor.get("syncs", 0)))

    def dump(self) -> dict[str, Any]:
        return {"format": CURSOR_FORMAT, "items": self.items, "watermark": self.watermark, "seen": self.seen,
                "syncs": self.syncs}


def _stamp(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat()


class KantataSource:
    """Kantata OX as a PSA source for the configured system ``system``."""

    def __init__(self, client: KantataClient, *, system: str, sync_options: SyncOptions | None = None,
                 fields: FieldMap | None = None, project_defaults: Defaults | None = None,
                 resource_defaults: Defaults | None = None, service_name: str = "ledgerbridge",
                 expense_approved_field: str = "approved") -> None:
        self.client = client
        self.system = system
        self.options = sync_options or SyncOptions()
        self.fields = fields or FieldMap()
        self.project_defaults = project_defaults or Defaults(PROJECT_BASE)
        self.resource_defaults = resource_defaults or Defaults(RESOURCE_BASE)
        self.service_name = service_name
        self.expense_approved_field = expense_approved_field
        self.write_failures: list[LedgerbridgeError] = []  # records the last write-back could not mark
        self.filter_ignored = False  # the tenant ignored updated_after (re-scans read newest first)

    @classmethod
    def from_options(cls, system: str, options: Mapping[str, Any], credentials: Credentials,
                     **client_kw: Any) -> KantataSource:
        limit = options.get("rate_limit")
        client = KantataClient(str(options.get("url", "https://api.mavenlink.com/api/v1")), credentials,
                               token_url=options.get("token_url"), system=system,
                               timeout=float(options.get("timeout_seconds", 60)),
                               attempts=int(options.get("max_attempts", 5)),
                               rate_limit_wait=float(options.get("rate_limit_wait_seconds", 1.0)),
                               rate_limit=int(limit) if limit else None,
                               rate_window=float(options.get("rate_window_seconds", 60)),
                               refresh_margin=float(options.get("token_refresh_margin_seconds", 60)), **client_kw)
        return cls(client, system=system, sync_options=SyncOptions.from_options(options),
                   fields=FieldMap.from_options(options),
                   project_defaults=Defaults.from_options(options.get("projects"), PROJECT_BASE),
                   resource_defaults=Defaults.from_options(options.get("resources"), RESOURCE_BASE),
                   service_name=str(options.get("service_name", "ledgerbridge")),
                   expense_approved_field=str(options.get("expense_approved_field", "approved")))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ master data

    def _with_custom_fields(self, resource: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        rows, side = self.client.list_all(resource, {"include": "custom_field_values"})
        cfvs = side.get("custom_field_values", {})
        return [(raw, custom_values(raw, cfvs)) for raw in rows]

    def projects(self) -> list[Project]:
        return [to_project(raw, cf, self.project_defaults, self.fields)
                for raw, cf in self._with_custom_fields("workspaces")]

    def resources(self) -> list[Resource]:
        return [to_resource(raw, cf, self.resource_defaults, self.fields)
                for raw, cf in self._with_custom_fields("users")]

    def invoices(self) -> list[dict[str, Any]]:
        """Kantata invoices: id, number, status, currency, total (Decimal), billed time entries and expenses."""
        rows, _ = self.client.list_all("invoices")
        return [{"id": str(r["id"]), "number": r.get("invoice_number"), "status": r.get("status"),
                 "currency": r.get("currency"), "paid": bool(r.get("paid")),
                 "total": Decimal(str(r.get("total_in_cents") or 0)) / 100,
                 "time_entry_ids": [str(i) for i in r.get("time_entry_ids") or ()],
                 "expense_ids": [str(i) for i in r.get("expense_ids") or ()], "updated_at": r.get("updated_at")}
                for r in rows]

    # ------------------------------------------------------------------ reads

    def _read(self, entity: str, params: Mapping[str, Any], *, ids: Sequence[str] | None = None
              ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Rows of ``entity`` with their timesheet submission joined from the side-loaded map."""
        params = {**params, "include": "timesheet_submission"} if entity == "time_entry" else dict(params)
        if ids is not None:
            rows, side = self.client.by_ids(RESOURCE_OF[entity], ids, params)
        else:
            rows, side = self.client.list_all(RESOURCE_OF[entity], params)
        subs = side.get("timesheet_submissions", {})
        return [(r, subs.get(str(r.get("timesheet_submission_id")))) for r in rows]

    def _rescan(self, entity: str, after: dt.datetime | None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Everything updated after ``after`` (None = all), keyed on ``updated_at`` ascending: each next query
        starts one second before the last row's ``updated_at`` so rows tied on that second are read again, not
        skipped; a page made only of such ties moves to the next page number instead.

        ``updated_after`` is not documented for every resource: when the answer holds a row at or before
        ``after`` the filter was ignored, and the window is read newest first (``order=updated_at:desc``) until a
        page passes ``after`` (rows moving to the front while we page are read twice, never skipped)."""
        if after is None:
            return self._read(entity, {"order": "id:asc"})
        out: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        extra = {"include": "timesheet_submission"} if entity == "time_entry" else {}
        start, page, descending = after, 1, False
        while True:
            params = ({"order": "updated_at:desc"} if descending
                      else {"updated_after": _stamp(start), "order": "updated_at:asc"})
            pg = self.client.page(RESOURCE_OF[entity], {**params, **extra}, page=page)
            stamps = [parse_ts(r["updated_at"]) for r in pg.rows]
            if not descending and stamps and min(stamps) <= start:
                self.filter_ignored = True
                descending, page, out = True, 1, {}
                continue
            subs = pg.side.get("timesheet_submissions", {})
            for r, ts in zip(pg.rows, stamps, strict=True):
                if ts > after:
                    out[str(r["id"])] = (r, subs.get(str(r.get("timesheet_submission_id"))))
            if len(pg.rows) < MAX_PER_PAGE or page >= pg.page_count or (descending and stamps[-1] <= after):
                return list(out.values())
            nxt = stamps[-1] - dt.timedelta(seconds=1)
            if not descending and nxt > start:
                start, page = nxt, 1
            else:
                page += 1

    def _feed(self, state: _State, now: dt.datetime) -> tuple[dict[str, set[str]], set[str], int, bool]:
        """Subjects named by new events ({entity: ids}), deleted subjects ("entity:id"), new event count, and
        whether the feed could have lost events (watermark beyond retention)."""
        opts = self.options
        stale = False
        params: dict[str, Any] = {"event_types": EVENT_TYPES}
        if state.watermark:
            since = parse_ts(state.watermark) - dt.timedelta(seconds=opts.event_overlap_seconds)
            stale = now - since > dt.timedelta(days=max(0.0, opts.event_retention_days - 1))
        else:  # first sync: the full listing covers the past; the feed is read from now (minus the overlap) on
            since = now - dt.timedelta(seconds=opts.event_overlap_seconds)
        params["created_after"] = _stamp(since)
        try:
            events, _ = self.client.list_all("subscribed_events", params)
        except PermanentError as err:
            if err.code not in ("LB-P003", "LB-P004"):
                raise
            # the Subscribed Events add-on is off (403/404): re-scan from the watermark instead, every sync
            return {e: set() for e in (*ENTITIES, "timesheet_submission")}, set(), -1, True
        subjects: dict[str, set[str]] = {e: set() for e in (*ENTITIES, "timesheet_submission")}
        deleted: set[str] = set()
        fresh = 0
        newest = parse_ts(state.watermark) if state.watermark else since  # never moves back
        for ev in events:
            eid = str(ev["id"])
            if eid in state.seen:
                continue
            fresh += 1
            created = parse_ts(ev["created_at"])
            state.seen[eid] = _stamp(created)
            newest = max(newest, created)
            entity = SUBJECT_ENTITY.get(str(ev.get("subject_type")))
            if entity is None:
                continue
            subjects[entity].add(str(ev["subject_id"]))
            if str(ev.get("event_type", "")).endswith(":deleted"):
                deleted.add(f"{entity}:{ev['subject_id']}")
        state.watermark = _stamp(newest)
        floor = newest - dt.timedelta(seconds=opts.event_overlap_seconds)
        state.seen = {k: v for k, v in state.seen.items() if parse_ts(v) >= floor}
        return subjects, deleted, fresh, stale

    # ------------------------------------------------------------------ change detection

    def sync(self, cursor: Mapping[str, Any] | None = None, *, full: bool | None = None,
             now: dt.datetime | None = None) -> SyncResult:
        """Every change since ``cursor`` (``None``: first sync, a full listing)."""
        state = _State.load(cursor, self.system)
        now = now or dt.datetime.now(dt.UTC)
        opts = self.options
        calls_before = self.client.stats.requests
        if full is None:
            full = state.syncs == 0 or (opts.full_scan_every > 0 and (state.syncs % opts.full_scan_every) == 0)
        subjects, deleted, fresh, stale = self._feed(state, now)
        watermark = state.watermark
        if fresh < 0:  # no feed: the re-scan starts at the watermark; the next one starts at this sync's start
            state.watermark = _stamp(now)
        rescan = full or stale or (opts.rescan_every > 0 and (state.syncs + 1) % opts.rescan_every == 0)
        after: dt.datetime | None = None
        if not full:
            after = now - dt.timedelta(seconds=opts.rescan_window_seconds)
            if stale and watermark:
                after = min(after, parse_ts(watermark) - dt.timedelta(seconds=opts.event_overlap_seconds))
        rows: dict[str, tuple[str, dict[str, Any], dict[str, Any] | None]] = {}

        def keep(entity: str, raw: dict[str, Any], sub: dict[str, Any] | None) -> None:
            key = f"{entity}:{raw['id']}"
            if key not in rows or parse_ts(raw["updated_at"]) >= parse_ts(rows[key][1]["updated_at"]):
                rows[key] = (entity, raw, sub)

        if rescan:
            for entity in ENTITIES:
                for raw, sub in self._rescan(entity, after):
                    keep(entity, raw, sub)
        listed = {k for k in rows}
        if subjects["timesheet_submission"]:
            subs, _ = self.client.by_ids("timesheet_submissions", sorted(subjects["timesheet_submission"]))
            subjects["time_entry"] |= {str(t) for s in subs for t in s.get("time_entry_ids") or ()}
        for entity in ENTITIES:
            wanted = sorted(i for i in subjects[entity] if f"{entity}:{i}" not in listed)
            if wanted:
                for raw, sub in self._read(entity, {}, ids=wanted):
                    keep(entity, raw, sub)
        if full:  # sweep: known items not listed any more
            gone = sorted(k for k in state.items if k not in listed)
            for entity in ENTITIES:
                ids = [k.split(":", 1)[1] for k in gone if k.startswith(entity + ":")]
                if ids:
                    for raw, sub in self._read(entity, {}, ids=ids):
                        keep(entity, raw, sub)
            deleted |= {k for k in gone if k not in rows}

        run = _Run(self, state)
        for entity, raw, sub in sorted(rows.values(), key=lambda t: (parse_ts(t[1]["updated_at"]), t[0],
                                                                     int(t[1]["id"]))):
            run.compare(entity, raw, sub)
        for key in sorted(deleted - set(rows)):
            run.delete(key)
        state.syncs += 1
        stats = {"full": full, "rescan": rescan, "events": max(fresh, 0), "rows": len(rows),
                 "changes": len(run.changes),
                 "deleted": run.deleted, "stale_reads": run.stale, "errors": len(run.errors),
                 "requests": self.client.stats.requests - calls_before, "tokens": self.client.stats.tokens,
                 "known": len(state.items), "feed_stale": stale,
                 "rescan_after": _stamp(after) if rescan and after else ("all" if rescan else "none"),
                 "feed_unavailable": fresh < 0, "updated_after_ignored": self.filter_ignored}
        return SyncResult(run.changes, run.errors, state.dump(), stats)

    # ------------------------------------------------------------------ write-back

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        """Record each ERP invoice's number and status as an external reference (``service_name`` =
        ``options.service_name``, ``service_model`` = ``invoice``) on every billed time entry and expense of this
        system and on the Kantata invoices that bill them. Looks the references up first and creates or updates
        only what differs: writing the same updates twice leaves one reference per record. Returns the number of
        updates that changed anything.

        A record that cannot take its reference (deleted in Kantata, refused) does not stop the others; its error is
        kept in ``write_failures``. When no record of an update could be written, its first error is raised (the
        billing flow dead-letters the update); transient errors are raised at once."""
        changed = 0
        self.write_failures = []
        for u in updates:
            subjects: dict[str, list[str]] = {e: [] for e in ENTITIES}
            for system, entity, item_id in u.items:
                if system == self.system and entity in subjects:
                    subjects[entity].append(str(item_id))
            if not any(subjects.values()):
                continue
            ref = u.erp_number or u.key
            fields = {"service_name": self.service_name, "service_model": "invoice", "service_model_ref": ref,
                      "status": "pending" if u.status in ("draft", "submitted") else "success",
                      "external_status": u.status + (f" (credits {u.credits})" if u.credits else "")}
            invoices: set[str] = set()
            failures: list[LedgerbridgeError] = []
            wrote, attempted = False, 0
            for entity, ids in subjects.items():
                if not ids:
                    continue
                rows, side = self.client.by_ids(RESOURCE_OF[entity], ids, {"include": "external_references"})
                found = {str(r["id"]) for r in rows}
                failures += [PermanentError(
                    f"{self.system}: {entity} {i} is not in Kantata (deleted, or not visible to the integration "
                    f"user); invoice {ref} cannot be recorded on it", code="LB-P004",
                    details={"entity": entity, "id": i, "invoice": ref}) for i in ids if i not in found]
                attempted += len(ids)
                invoices |= {str(r["invoice_id"]) for r in rows if r.get("invoice_id")}
                wrote |= self._mark(SUBJECT_TYPES[entity], rows, side, fields, failures)
            if invoices:
                rows, side = self.client.by_ids("invoices", sorted(invoices), {"include": "external_references"})
                attempted += len(rows)
                wrote |= self._mark("Invoice", rows, side, fields, failures)
            self.write_failures += failures
            if failures and len(failures) >= attempted:
                raise failures[0]
            changed += wrote
        return changed

    def _mark(self, subject_type: str, rows: Iterable[Mapping[str, Any]], side: Mapping[str, Mapping[str, Any]],
              fields: Mapping[str, Any], failures: list[LedgerbridgeError]) -> bool:
        refs = side.get("external_references", {})
        wrote = False
        for row in rows:
            mine = [refs[str(i)] for i in row.get("external_reference_ids") or () if str(i) in refs
                    and refs[str(i)].get("service_name") == fields["service_name"]
                    and refs[str(i)].get("service_model") == fields["service_model"]]
            if mine and all(mine[0].get(k) == v for k, v in fields.items()):
                continue
            try:
                if mine:
                    self.client.update_external_reference(str(mine[0]["id"]), fields)
                else:
                    self.client.create_external_reference({**fields, "subject_type": subject_type,
                                                           "subject_id": str(row["id"])})
            except LedgerbridgeError as err:
                if err.retryable:
                    raise
                err.details.update(subject_type=subject_type, subject_id=str(row["id"]))
                failures.append(err)
                continue
            wrote = True
        return wrote

    def external_references(self, entity: str, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Read back the external references of records (``entity``: time_entry, expense or invoice)."""
        resource = RESOURCE_OF.get(entity, "invoices")
        rows, side = self.client.by_ids(resource, ids, {"include": "external_references"})
        refs = side.get("external_references", {})
        return {str(r["id"]): [refs[str(i)] for i in r.get("external_reference_ids") or () if str(i) in refs]
                for r in rows}


class _Run:
    def __init__(self, source: KantataSource, state: _State) -> None:
        self.source, self.state = source, state
        self.changes: list[Change] = []
        self.errors: list[LedgerbridgeError] = []
        self.deleted = self.stale = 0

    def compare(self, entity: str, raw: dict[str, Any], sub: dict[str, Any] | None) -> None:
        key = f"{entity}:{raw['id']}"
        prev = self.state.items.get(key)
        if prev is not None and parse_ts(raw["updated_at"]) < parse_ts(prev[2]):
            self.stale += 1  # an older read than the version already known (out-of-order answer)
            return
        approved_field = self.source.expense_approved_field
        fp = fingerprint(raw, approval_status(entity, raw, sub, approved_field))
        if prev is not None and prev[1] == fp:
            return
        version = next_version(str(raw["updated_at"]), int(prev[0]) if prev else None)
        try:
            item = to_record(entity, raw, sub, system=self.source.system, version=version,
                             expense_approved_field=approved_field)
        except RecordValidationError as err:
            self.errors.append(err)
            self.state.items[key] = [version if prev else 0, fp, raw["updated_at"], prev[3] if prev else None]
            return
        self.state.items[key] = [version, fp, raw["updated_at"], compact(item)]
        first = prev is None or prev[3] is None
        self.changes.append(Change("created" if first else "updated", entity, item, self.source.system))

    def delete(self, key: str) -> None:
        row = self.state.items.pop(key, None)
        if row is None or row[3] is None:
            return  # never known or never emitted: nothing downstream to reverse
        entity, item_id = key.split(":", 1)
        self.deleted += 1
        item = deleted_record(entity, item_id, self.source.system, row)
        self.changes.append(Change("deleted", entity, item, self.source.system))


__all__ = ["CAPABILITIES", "CURSOR_FORMAT", "Change", "KantataSource", "SyncOptions", "SyncResult"]
