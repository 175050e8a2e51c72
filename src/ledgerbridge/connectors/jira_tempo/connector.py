"""Jira Cloud + Tempo as a PSA source: worklogs as time entries, Tempo approvals as their approval state,
Jira projects and users as master data, and the ERP invoice number written back into a worklog property.

:meth:`JiraTempoSource.sync` (see ``docs/connectors/jira-tempo.md``):

1. **Jira change feeds.** ``/worklog/updated`` and ``/worklog/deleted`` from the stored ``since`` (epoch ms), every
   page. The feeds leave out the last minute and may surface a change late, so the next ``since`` is
   ``min(until, now - lag) - overlap`` (never moving back): a change hidden in the gap, or surfacing late, is read
   by a later sync; what is read twice is recognised by its ``updatedTime`` (no list call) or its fingerprint (no
   new version). Items sharing the page-boundary millisecond arrive on both pages and are de-duplicated by id.
2. **Tempo worklogs** (when Tempo is configured) updated since the stored ``updatedFrom`` (same overlap): billable
   flag and account per worklog, joined to Jira's worklog id via ``/4/worklogs/tempo-to-jira`` (cached).
3. **Full worklogs** of every changed id via ``POST /worklog/list`` (1,000 per call); the issue of each (project
   mapping) read once and cached.
4. **Approvals**: the Tempo timesheet approval of every (author, period) holding a changed worklog or a known one
   dated within ``approval_lookback_days``; a changed approval (approved, reopened, rejected) re-reads that
   user's worklogs of the period, so each gets a new version — a reopened period after posting reverses.
5. **Versions**: a worklog whose business fingerprint changed gets a version (the newest change time in epoch
   seconds, above the last); a known worklog in the deleted feed gets a ``recalled`` (was approved) or
   unapproved version one above the last.

The cursor is a JSON-able dict stored with the events in one transaction (``flows.sources.sync_source``).
"""

from __future__ import annotations

import bisect
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

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
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.connectors.jira_tempo.client import (
    ATLASSIAN_API_URL,
    ATLASSIAN_TOKEN_URL,
    LIST_LIMIT,
    TEMPO_URL,
    Auth,
    JiraClient,
    OAuthAuth,
    StaticAuth,
    TempoClient,
)
from ledgerbridge.connectors.jira_tempo.mapping import (
    Approval,
    Context,
    FieldMap,
    IssueInfo,
    ProjectDefaults,
    ResourceDefaults,
    TempoFacts,
    approval_from_tempo,
    content,
    deleted_entry,
    fingerprint,
    is_person,
    issue_info,
    next_version,
    parse_jira_time,
    stamp_seconds,
    tempo_facts,
    to_project,
    to_resource,
    to_time_entry,
    work_date,
)
from ledgerbridge.errors import LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Project, Resource, TimeEntry

CURSOR_FORMAT = 1
CONNECTOR = "jira_tempo"

CAPABILITIES = Capabilities(
    connector=CONNECTOR,
    system_kind=SystemKind.PSA,
    reads=frozenset({"time_entry", "project", "resource"}),
    writes=frozenset({"time_entry"}),  # only the invoice worklog property (write-back)
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,  # the property is read first, written only if different
    paging=PagingKind.CURSOR,
    limits=Limits(),  # Atlassian: react to 429/Retry-After, not to fixed numbers (options.rate_limit to pace)
    batch_sizes=BatchSizes(read=LIST_LIMIT, write=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)

ChangeKind = Literal["created", "updated", "deleted"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    kind: ChangeKind
    entry: TimeEntry
    system: str
    observed_at: dt.datetime

    @property
    def idempotency_key(self) -> str:
        return f"{CONNECTOR}:{self.system}:time_entry:{self.entry.id}:{self.entry.version}"

    def to_record(self) -> dict[str, Any]:
        return inbox_record("time_entry", self.entry, self.idempotency_key, self.kind)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Change-detection options (connector options of the same names; seconds)."""

    lag_seconds: int = 60  # the feeds leave out the last minute: the cursor stays at least this far behind now
    overlap_seconds: int = 300  # re-read window behind the cursor (late-surfacing changes)
    approval_lookback_days: int = 62  # known worklogs dated within this many days have their approval re-checked
    initial_since: int = 0  # epoch ms of the first sync's start (0 = everything)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyncOptions:
        out = cls(lag_seconds=int(options.get("lag_seconds", 60)),
                  overlap_seconds=int(options.get("overlap_seconds", 300)),
                  approval_lookback_days=int(options.get("approval_lookback_days", 62)),
                  initial_since=int(options.get("initial_since", 0)))
        if out.lag_seconds < 60:
            raise ValueError("jira_tempo option lag_seconds must be >= 60: Jira's feeds leave out the last minute")
        if out.overlap_seconds < 0 or out.approval_lookback_days < 0:
            raise ValueError("jira_tempo options overlap_seconds and approval_lookback_days must be >= 0")
        return out


# --------------------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _State:
    updated_since: int
    deleted_since: int
    tempo_from: int  # epoch seconds
    entries: dict[str, list[Any]]  # worklog id -> [version, fingerprint, updatedTime ms, body without description]
    issues: dict[str, list[Any]]
    tempo: dict[str, list[Any]]  # jira worklog id -> TempoFacts.dump()
    tempo_ids: dict[str, str]  # tempo worklog id -> jira worklog id
    approvals: dict[str, list[Any]]  # "account|from|to" -> Approval.dump()
    syncs: int = 0

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None, system: str, initial: int) -> _State:
        if not cursor:
            return cls(initial, initial, initial // 1000, {}, {}, {}, {}, {})
        if cursor.get("format") != CURSOR_FORMAT:
            raise PermanentError(
                f"{system}: the stored Jira/Tempo cursor has format {cursor.get('format')!r}, expected "
                f"{CURSOR_FORMAT} — delete the cursor (everything is read again; idempotency keys prevent "
                "duplicates)", details={"format": cursor.get("format")})
        return cls(int(cursor["updated_since"]), int(cursor["deleted_since"]), int(cursor["tempo_from"]),
                   {str(k): list(v) for k, v in cursor["entries"].items()},
                   {str(k): list(v) for k, v in cursor["issues"].items()},
                   {str(k): list(v) for k, v in cursor["tempo"].items()},
                   {str(k): str(v) for k, v in cursor["tempo_ids"].items()},
                   {str(k): list(v) for k, v in cursor["approvals"].items()}, int(cursor.get("syncs", 0)))

    def dump(self) -> dict[str, Any]:
        return {"format": CURSOR_FORMAT, "updated_since": self.updated_since, "deleted_since": self.deleted_since,
                "tempo_from": self.tempo_from, "entries": self.entries, "issues": self.issues, "tempo": self.tempo,
                "tempo_ids": self.tempo_ids, "approvals": self.approvals, "syncs": self.syncs}


def _advance(prev: int, frontier: int | None, now: int, lag: int, overlap: int) -> int:
    """The next feed position: behind both the youngest item read and now - lag, minus the overlap; never back."""
    if frontier is None:
        return prev
    return max(prev, min(frontier, now - lag) - overlap)


class _Periods:
    """Timesheet periods (sorted, inclusive ISO dates) -> the period of a day."""

    def __init__(self, periods: Iterable[tuple[str, str]]) -> None:
        self.periods = sorted(set(periods))
        self._starts = [p[0] for p in self.periods]

    def of(self, day: str) -> tuple[str, str] | None:
        i = bisect.bisect_right(self._starts, day) - 1
        return self.periods[i] if i >= 0 and self.periods[i][1] >= day else None


# --------------------------------------------------------------------------------------------------- the source


class JiraTempoSource:
    """Jira Cloud (+ Tempo, optional) as a PSA source for the configured system ``system``."""

    def __init__(self, jira: JiraClient, tempo: TempoClient | None = None, *, system: str,
                 fields: FieldMap | None = None, sync_options: SyncOptions | None = None,
                 project_defaults: ProjectDefaults | None = None,
                 resource_defaults: ResourceDefaults | None = None, invoice_property: str = "ledgerbridge.invoice",
                 clock: Callable[[], float] = time.time) -> None:
        self.jira, self.tempo, self.system = jira, tempo, system
        self.fields = fields or FieldMap()
        self.sync_options = sync_options or SyncOptions()
        self.project_defaults = project_defaults or ProjectDefaults()
        self.resource_defaults = resource_defaults or ResourceDefaults()
        self.invoice_property = invoice_property
        self.clock = clock

    @classmethod
    def from_options(cls, system: str, options: Mapping[str, Any], secret: Callable[[str], str | None], *,
                     transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.time) -> JiraTempoSource:
        """Build from a configured system: ``options`` = ``systems.<name>.options``; ``secret(name)`` gives a
        configured secret or ``None``. Keys: ``docs/connectors/jira-tempo.md``."""
        timeout = float(options.get("timeout_seconds", 30))
        http = httpx.Client(timeout=timeout, transport=transport)
        rate = options.get("rate_limit")
        window = float(options.get("rate_window_seconds", 1.0))

        def pacer() -> Pacer:
            return Pacer(int(rate) if rate else None, window, concurrency=int(options.get("concurrency", 4)),
                         headroom=float(options.get("headroom", 1.0)), sleep=sleep)

        jira_auth: Auth
        if str(options.get("auth", "basic")) == "oauth":
            jira_auth = OAuthAuth(str(options.get("token_url", ATLASSIAN_TOKEN_URL)),
                                  str(options.get("client_id", "")), secret("client_secret") or "",
                                  secret("refresh_token") or "", system=f"{system}.jira", http=http, clock=clock)
            api = str(options.get("api_url", ATLASSIAN_API_URL)).rstrip("/")
            cloud = options.get("cloud_id")
            base = f"{api}/ex/jira/{cloud}" if cloud else ""
        else:
            email, token = str(options.get("email", "")), secret("api_token") or ""
            if not options.get("url") or not email or not token:
                raise ValueError(f"{system}: basic auth needs options.url (https://<site>.atlassian.net), "
                                 "options.email and secrets.api_token (id.atlassian.com -> Security -> API tokens)")
            jira_auth = StaticAuth.basic(email, token)
            base = str(options["url"])
        jira = JiraClient(base, jira_auth, system=system, http=http, pacer=pacer(), sleep=sleep)
        if not base:  # OAuth without a configured cloud id: the first site the token can reach
            sites = jira.accessible_resources(api)
            if not sites:
                raise PermanentError(f"{system}: the OAuth token reaches no Jira site; set options.cloud_id",
                                     code="LB-P003")
            jira.base_url = f"{api}/ex/jira/{sites[0]['id']}"
        tempo: TempoClient | None = None
        tempo_opts = dict(options.get("tempo") or {})
        if tempo_opts.get("enabled", bool(tempo_opts)):
            tempo_url = str(tempo_opts.get("url", TEMPO_URL))
            tempo_auth: Auth
            if str(tempo_opts.get("auth", "token")) == "oauth":
                tempo_auth = OAuthAuth(str(tempo_opts.get("token_url", tempo_url.rstrip("/") + "/oauth/token/")),
                                       str(tempo_opts.get("client_id", "")), secret("tempo_client_secret") or "",
                                       secret("tempo_refresh_token") or "", system=f"{system}.tempo", http=http,
                                       clock=clock, extra={"redirect_uri": str(tempo_opts.get("redirect_uri", ""))},
                                       form=True)
            else:
                token = secret("tempo_token")
                if not token:
                    raise ValueError(f"{system}: Tempo needs secrets.tempo_token (Tempo -> Settings -> API "
                                     "integration -> New token) or tempo.auth: oauth")
                tempo_auth = StaticAuth.bearer(token)
            tempo = TempoClient(tempo_url, tempo_auth, system=f"{system}.tempo", http=http, pacer=pacer(),
                                sleep=sleep)
        return cls(jira, tempo, system=system, fields=FieldMap.from_options(options),
                   sync_options=SyncOptions.from_options(options),
                   project_defaults=ProjectDefaults.from_options(options.get("projects") or {}),
                   resource_defaults=ResourceDefaults.from_options(options.get("resources") or {}),
                   invoice_property=str(options.get("invoice_property", "ledgerbridge.invoice")), clock=clock)

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def close(self) -> None:
        self.jira.http.close()

    @property
    def requests(self) -> int:
        return self.jira.requests + (self.tempo.requests if self.tempo else 0)

    # ------------------------------------------------------------------ master data

    def projects(self) -> list[Project]:
        return [to_project(raw, self.project_defaults, self.fields) for raw in self.jira.projects()]

    def resources(self) -> list[Resource]:
        return [to_resource(raw, self.resource_defaults) for raw in self.jira.users() if is_person(raw)]

    # ------------------------------------------------------------------ change detection

    def sync(self, cursor: Mapping[str, Any] | None = None, *, full: bool | None = None,
             now: float | None = None) -> SyncResult:
        """Every change since ``cursor`` (``None``: the first sync reads everything from ``initial_since``).
        ``full=True`` re-reads the updated feed from the start (a reconciliation sweep; unchanged worklogs emit
        nothing). ``now`` (epoch seconds) positions the cursor behind the feeds' gap."""
        opts = self.sync_options
        state = _State.load(cursor, self.system, opts.initial_since)
        now_s = self.clock() if now is None else now
        now_ms, lag, overlap = int(now_s * 1000), opts.lag_seconds * 1000, opts.overlap_seconds * 1000
        requests_before = self.requests
        self._stuck: list[dict[str, Any]] = []
        run = _Run(self, state, dt.datetime.fromtimestamp(now_s, dt.UTC))

        if full:
            state.issues.clear()  # a sweep also re-reads the issues' projects (an issue may have moved)
        updated, frontier = self._feed("updated", opts.initial_since if full else state.updated_since)
        deleted, del_frontier = self._feed("deleted", state.deleted_since)
        wanted = {wid for wid, t in updated.items()
                  if full or wid not in state.entries or int(state.entries[wid][2]) != t}
        wanted |= self._read_tempo(state, now_s, full=bool(full))
        wanted -= set(deleted)
        fetched = {str(w["id"]): w for w in self.jira.worklogs([int(w) for w in wanted])} if wanted else {}
        self._resolve_issues(state, fetched.values())

        changed_periods = self._read_approvals(state, fetched.values(), now_s)
        if changed_periods:
            more = [wid for wid, row in state.entries.items() if wid not in fetched and wid not in deleted
                    and _key(row[3]["account_id"], row[3]["work_date"], changed_periods) is not None]
            if more:
                fetched.update({str(w["id"]): w for w in self.jira.worklogs([int(w) for w in more])})
                self._resolve_issues(state, fetched.values())

        for wid in sorted(fetched, key=int):
            run.compare(fetched[wid])
            if wid in updated and wid in state.entries:
                state.entries[wid][2] = updated[wid]  # the feed's own time: an overlap re-read then skips it
        for wid in sorted(deleted, key=int):
            run.delete(wid)
        if deleted:
            state.tempo_ids = {t: j for t, j in state.tempo_ids.items() if j not in deleted}

        state.updated_since = _advance(state.updated_since, frontier, now_ms, lag, overlap)
        state.deleted_since = _advance(state.deleted_since, del_frontier, now_ms, lag, overlap)
        state.syncs += 1
        stats = {"full": bool(full), "feed_updated": len(updated), "feed_deleted": len(deleted),
                 "fetched": len(fetched), "approval_changes": len(changed_periods), "events": len(run.events),
                 "errors": len(run.errors), "requests": self.requests - requests_before,
                 "known": len(state.entries), "updated_since": state.updated_since, "tie_overflow": self._stuck}
        return SyncResult(events=run.events, errors=run.errors, cursor=state.dump(), stats=stats)

    def _feed(self, kind: str, since: int) -> tuple[dict[str, int], int | None]:
        """``{worklog id: newest updatedTime}`` of a feed from ``since``, and the youngest time read."""
        out: dict[str, int] = {}
        frontier: int | None = None
        for page in self.jira.feed(kind, since):
            for wid, t in page.values:
                out[str(wid)] = max(t, out.get(str(wid), t))
            if page.until is not None:
                frontier = max(frontier or page.until, page.until)
            if page.stuck:  # more changes in one millisecond than a page holds: the rest cannot be read
                self._stuck.append({"feed": kind, "ms": page.until})
        return out, frontier

    def _read_tempo(self, state: _State, now_s: float, *, full: bool) -> set[str]:
        """Read Tempo worklogs updated since the stored position; returns the Jira ids whose facts changed."""
        if self.tempo is None:
            return set()
        opts = self.sync_options
        since = self.sync_options.initial_since // 1000 if full else state.tempo_from
        # updatedFrom carries no zone (Tempo may read it in the tenant's zone): ask from the day before, by date
        day = (dt.datetime.fromtimestamp(since, dt.UTC) - dt.timedelta(days=1)).date()
        rows = self.tempo.worklogs(max(day, dt.date(1970, 1, 2)).isoformat())
        unknown = [int(r["tempoWorklogId"]) for r in rows if str(r["tempoWorklogId"]) not in state.tempo_ids]
        if unknown:
            state.tempo_ids.update({str(t): str(j) for t, j in self.tempo.tempo_to_jira(unknown).items()})
        changed: set[str] = set()
        newest: int | None = None
        for raw in rows:
            jid = state.tempo_ids.get(str(raw["tempoWorklogId"]))
            facts = tempo_facts(raw, self.fields)
            newest = max(newest or facts.updated, facts.updated)
            if jid is None:
                continue
            if state.tempo.get(jid) != facts.dump():
                state.tempo[jid] = facts.dump()
                if jid in state.entries:
                    changed.add(jid)
        state.tempo_from = _advance(state.tempo_from, newest, int(now_s), opts.lag_seconds, opts.overlap_seconds)
        return changed

    def _resolve_issues(self, state: _State, worklogs: Iterable[Mapping[str, Any]]) -> None:
        if self.fields.project_from == "account":
            return
        for issue_id in sorted({str(w["issueId"]) for w in worklogs if str(w.get("issueId")) not in state.issues}):
            try:
                raw = self.jira.issue(issue_id, self.fields.issue_fields())
            except LedgerbridgeError as err:
                if err.details.get("status") in (403, 404):  # hidden by issue security, or gone: the worklog
                    continue  # is reported unmappable (jira.project) instead of failing the whole sync
                raise
            state.issues[issue_id] = issue_info(raw, self.fields).dump()

    def _read_approvals(self, state: _State, worklogs: Iterable[Mapping[str, Any]], now_s: float) -> set[str]:
        """Read the approval of every (author, period) of interest; return the keys whose approval changed."""
        if self.tempo is None:
            return set()
        floor = (dt.datetime.fromtimestamp(now_s, dt.UTC).date()
                 - dt.timedelta(days=self.sync_options.approval_lookback_days)).isoformat()
        pairs: set[tuple[str, str]] = set()
        for w in worklogs:
            account = (w.get("author") or {}).get("accountId")
            if not account:
                continue
            try:
                pairs.add((str(account), work_date(w).isoformat()))
            except (KeyError, ValueError):
                continue  # no author or start: reported by the mapping
        pairs |= {(row[3]["account_id"], row[3]["work_date"]) for row in state.entries.values()
                  if row[3]["work_date"] >= floor}
        if not pairs:
            return set()
        days = sorted(d for _, d in pairs)
        periods = _Periods(self.tempo.periods(days[0], days[-1]))
        keys = set()
        for account, day in pairs:
            period = periods.of(day)
            if period is not None:
                keys.add(f"{account}|{period[0]}|{period[1]}")
        changed: set[str] = set()
        for key in sorted(keys):
            account, start, end = key.split("|")
            approval = approval_from_tempo(self.tempo.approval(account, start, end)).dump()
            if state.approvals.get(key) != approval:
                if key in state.approvals:
                    changed.add(key)
                state.approvals[key] = approval
        return changed

    # ------------------------------------------------------------------ write-back

    def write_invoice_status(self, updates: Sequence[InvoiceStatusUpdate]) -> int:
        """The billing flow's write-back: every worklog billed on an invoice gets the worklog property
        ``invoice_property`` = ``{"invoice": <ERP number>, "status": <status>}`` (Tempo has no invoice field; a
        Jira worklog property is invisible to users, survives edits and is in Jira's API). Reads the current values
        first (``worklog/list?expand=properties``, 1,000 per call) and writes only what differs (idempotent);
        setting a property creates no new version. Returns the invoices with a change."""
        wanted: dict[str, dict[str, Any]] = {}
        per_invoice: dict[str, set[str]] = {}
        for u in updates:
            ids = {item_id for system, entity, item_id in u.items if system == self.system and entity == "time_entry"}
            for wid in ids:
                wanted[wid] = {"invoice": u.erp_number or u.key, "status": u.status}
            if ids:
                per_invoice[u.key] = ids
        if not wanted:
            return 0
        held = {str(w["id"]): w for w in self.jira.worklogs([int(w) for w in wanted], properties=True)}
        written: set[str] = set()
        for wid, value in wanted.items():
            if wid not in held:
                raise PermanentError(f"{self.system}: worklog {wid} was deleted; cannot write invoice "
                                     f"{value['invoice']!r}", code="LB-P004", details={"entry": wid})
            if _property(held[wid], self.invoice_property) != value:
                self.jira.set_worklog_property(str(held[wid]["issueId"]), wid, self.invoice_property, value)
                written.add(wid)
        return sum(1 for ids in per_invoice.values() if ids & written)

    def invoice_refs(self, worklog_ids: Iterable[str], *, one_by_one: bool = False) -> dict[str, Any]:
        """The write-back property of each worklog (``None`` when unset; deleted worklogs left out): from the
        worklog list with ``expand=properties``, or (``one_by_one``) the property resource of each worklog."""
        rows = self.jira.worklogs([int(w) for w in worklog_ids], properties=not one_by_one)
        if one_by_one:
            return {str(w["id"]): self.jira.worklog_property(str(w["issueId"]), str(w["id"]), self.invoice_property)
                    for w in rows}
        return {str(w["id"]): _property(w, self.invoice_property) for w in rows}


def _property(worklog: Mapping[str, Any], key: str) -> Any:
    """The value of entity property ``key`` of a worklog read with ``expand=properties`` (``None`` when unset)."""
    return next((p.get("value") for p in worklog.get("properties") or () if p.get("key") == key), None)


def _key(account: str, day: str, keys: Iterable[str]) -> str | None:
    """The ``account|from|to`` key among ``keys`` whose period holds ``day``."""
    for key in keys:
        acc, start, end = key.split("|")
        if acc == account and start <= day <= end:
            return key
    return None


class _Run:
    """The events of one sync as they are found (mutates the state)."""

    def __init__(self, source: JiraTempoSource, state: _State, now: dt.datetime) -> None:
        self.source, self.state, self.now = source, state, now
        self.events: list[ChangeEvent] = []
        self.errors: list[LedgerbridgeError] = []
        self._by_account: dict[str, list[str]] | None = None

    def approval_of(self, account: str, day: str) -> Approval | None:
        if self._by_account is None:  # built once the approvals are read
            self._by_account = {}
            for key in self.state.approvals:
                self._by_account.setdefault(key.split("|")[0], []).append(key)
        key = _key(account, day, self._by_account.get(account, ()))
        return Approval.load(self.state.approvals[key]) if key else None

    def _context(self, raw: Mapping[str, Any]) -> Context:
        src, st, wid = self.source, self.state, str(raw["id"])
        issue = st.issues.get(str(raw.get("issueId")))
        account = str((raw.get("author") or {}).get("accountId", ""))
        approval = None
        if src.tempo is not None:
            try:
                approval = self.approval_of(account, work_date(raw).isoformat())
            except (KeyError, ValueError):
                approval = None  # a bad start: the mapping reports it
        return Context(IssueInfo.load(issue) if issue else None, TempoFacts.load(st.tempo.get(wid)), approval,
                       src.tempo is not None)

    def compare(self, raw: Mapping[str, Any]) -> None:
        src, wid = self.source, str(raw["id"])
        prev = self.state.entries.get(wid)
        updated_ms = int(parse_jira_time(str(raw["updated"])).timestamp() * 1000) if raw.get("updated") else 0
        ctx = self._context(raw)
        try:
            body = content(raw, ctx, src.fields)
        except RecordValidationError as err:
            fp = f"invalid:{updated_ms}"
            if prev is None or prev[1] != fp:
                err.details.update({"entry_id": wid, "raw": dict(raw)})
                self.errors.append(err)
            version = int(prev[0]) if prev else 0
            self.state.entries[wid] = [version, fp, updated_ms, prev[3] if prev else _placeholder(raw)]
            return
        fp = fingerprint(body)
        if prev is not None and prev[1] == fp:
            prev[2] = updated_ms
            return
        version = next_version(stamp_seconds(raw, ctx), int(prev[0]) if prev and int(prev[0]) else None)
        updated = parse_jira_time(str(raw["updated"])).astimezone(dt.UTC) if raw.get("updated") else None
        entry = to_time_entry(wid, body, system=src.system, version=version, updated=updated)
        self.state.entries[wid] = [version, fp, updated_ms, {k: v for k, v in body.items() if k != "description"}]
        first = prev is None or int(prev[0]) == 0
        self.events.append(ChangeEvent("created" if first else "updated", entry, src.system, self.now))

    def delete(self, wid: str) -> None:
        row = self.state.entries.pop(wid, None)
        self.state.tempo.pop(wid, None)
        if row is None or int(row[0]) == 0:
            return  # never seen, or never valid: nothing downstream to reverse
        entry = deleted_entry(wid, int(row[0]) + 1, {**row[3], "description": ""}, system=self.source.system,
                              fields=self.source.fields)
        self.events.append(ChangeEvent("deleted", entry, self.source.system, self.now))


def _placeholder(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The state body of a worklog never valid (only its author and date matter: approval re-checks)."""
    started = str(raw.get("started") or "")
    return {"account_id": str((raw.get("author") or {}).get("accountId", "")), "work_date": started[:10]}


__all__ = ["CAPABILITIES", "CURSOR_FORMAT", "ChangeEvent", "JiraTempoSource", "SyncOptions", "SyncResult"]
