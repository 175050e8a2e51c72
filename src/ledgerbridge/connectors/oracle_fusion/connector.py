"""Oracle Fusion Cloud ERP as a target ledger (:class:`~ledgerbridge.connectors.base.LedgerTarget`) through FBDI.

Posting (``post_journals``), per run:

1. check every journal before sending (accounts in ``account_map``) — one journal = one journal batch whose name
   (``REFERENCE1``), journal name and journal reference are our journal id;
2. finish what an interrupted earlier run left in flight (its ESS request ids are kept in ``inflight.json`` under
   ``state_dir``), then look the batch names up with REST ``journalBatches`` (one call per 20 journals): a posted
   batch with the same lines -> ``posted`` again; other lines or two batches -> ``ConflictError``;
3. write the rest as ``GlInterface.csv`` rows (the FBDI template's column order) in a zip, start
   ``importBulkData`` (load + Journal Import) through ``erpintegrations``, poll the ESS job
   (``ESSJobStatusRF``) and download its execution report (``downloadESSJobExecutionDetails``);
4. decide per journal from the report **and** a fresh lookup: an ESS job that SUCCEEDED while rows stayed in
   ``GL_INTERFACE`` (unbalanced, invalid account combination, period not open) is *not* success — each such journal
   is rejected with the interface error code and text, the others are posted;
5. ``read_back`` reads the batches by name: entered totals per currency and line count.

``period_status`` reads ``ledgerPeriods``; ``account_totals`` / ``trial_balance`` read posted journal lines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CursorKind,
    FailureMode,
    IdempotencyMechanism,
    Limits,
    PagingKind,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
    atomic_write_bytes,
    file_lock,
    rejected,
    require_run_entity,
)
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.connectors.oracle_fusion.client import SYSTEM, OracleFusionClient
from ledgerbridge.connectors.oracle_fusion.mapping import (
    ChartSpec,
    InterfaceError,
    fbdi_zip,
    journal_problems,
    journal_rows,
    journal_signature,
    line_signature,
    parse_report,
    readback_totals,
    to_decimal,
    unzip,
)
from ledgerbridge.errors import ConflictError, LedgerbridgeError, PermanentError
from ledgerbridge.model.entities import JournalEntry

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    reads=frozenset({"journal_entry"}),
    writes=frozenset({"journal_entry"}),
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    paging=PagingKind.OFFSET,
    batch_sizes=BatchSizes(read=500, write=500),
    limits=Limits(concurrency=1),  # one import at a time per ledger: lookup-before-import is not atomic
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)
JOB_NAME = "/oracle/apps/ess/financials/generalLedger/programs/common,JournalImportLauncher"
TERMINAL = frozenset({"SUCCEEDED", "WARNING", "ERROR", "CANCELLED", "EXPIRED"})
PERIOD_STATES = {"open": "open", "close pending": "closing", "closed": "closed", "permanently closed": "locked",
                 "future enterable": "closed", "never opened": "closed"}
LOOKUP_CHUNK = 20


def _children(value: Any) -> list[dict[str, Any]]:
    """An expanded child collection: a list, or ``{"items": [...]}``."""
    if isinstance(value, Mapping):
        value = value.get("items", [])
    return list(value or [])


@dataclass(slots=True)
class _Batch:
    batch_id: str
    name: str
    status: str
    lines: list[dict[str, Any]]


class OracleFusionLedger:
    """FBDI journal import into one Oracle ledger (= one legal entity)."""

    def __init__(self, client: OracleFusionClient, *, legal_entity_id: str, ledger_id: str, chart: ChartSpec,
                 data_access_set: str, source: str = "Ledgerbridge", category: str = "Adjustment",
                 categories: Mapping[str, str] | None = None, separator: str = "-",
                 period_name_format: str = "%b-%y", state_dir: Path | None = None, batch_size: int = 500,
                 poll_interval: float = 5.0, job_wait: float = 900.0, uncertain_wait: float = 600.0) -> None:
        self.client = client
        self.legal_entity_id = legal_entity_id
        self.ledger_id = ledger_id
        self.chart = chart
        self.data_access_set = data_access_set
        self.source = source
        self.category = category
        self.categories = dict(categories or {})
        self.separator = separator
        self.period_name_format = period_name_format
        self.state_dir = state_dir
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.job_wait = job_wait
        self.uncertain_wait = uncertain_wait
        self._memory: dict[str, dict[str, Any]] = {}  # in-flight imports when no state_dir is given
        self.last_report: dict[str, Any] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, secret: Any, system: str = SYSTEM,
                     state_dir: Path | None = None) -> OracleFusionLedger:
        """Build from a system's ``options`` (docs/connectors/oracle-fusion.md); every problem reported at once."""
        problems = [f"options.{k} is required (text)" for k in ("url", "legal_entity_id", "ledger_id",
                                                                 "data_access_set", "company_segment")
                    if not isinstance(options.get(k), str | int) or options.get(k) in ("", None)]
        amap = options.get("account_map")
        if not isinstance(amap, Mapping) or not amap:
            problems.append("options.account_map is required: our account code -> natural account segment value")
        segs = options.get("segments", ["{company}", "{account}"])
        if not isinstance(segs, list) or "{account}" not in segs:
            problems.append("options.segments must be a list of segment templates holding {account}")
        creds: dict[str, Any] = {}
        try:
            if options.get("auth", "basic") == "oauth":
                creds = {"client_id": options.get("client_id"), "client_secret": secret("client_secret"),
                         "token_url": options.get("token_url"),
                         "scope": str(options.get("scope", "urn:opc:resource:consumer::all"))}
                if not creds["client_id"] or not creds["token_url"]:
                    problems.append("options.client_id and options.token_url are required with auth: oauth")
            else:
                creds = {"user": options.get("user"), "password": secret("password")}
                if not creds["user"]:
                    problems.append("options.user (the integration user) is required with auth: basic")
        except KeyError as exc:
            problems.append(f"secrets: {exc.args[0]}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        rate = options.get("rate_limit")
        pacer = Pacer(int(rate), float(options.get("rate_window", 1.0)), concurrency=options.get("concurrency"),
                      headroom=float(options.get("headroom", 0.8))) if rate else None
        client = OracleFusionClient(str(options["url"]), pacer=pacer, timeout=float(options.get("timeout", 120)),
                                    system=system, **creds)
        chart = ChartSpec(str(options["company_segment"]), {str(k): str(v) for k, v in dict(amap).items()},  # type: ignore[arg-type]
                          tuple(segs))
        return cls(client, legal_entity_id=str(options["legal_entity_id"]), ledger_id=str(options["ledger_id"]),
                   chart=chart, data_access_set=str(options["data_access_set"]),
                   source=str(options.get("journal_source", "Ledgerbridge")),
                   category=str(options.get("journal_category", "Adjustment")),
                   categories=options.get("categories"), separator=str(options.get("separator", "-")),
                   period_name_format=str(options.get("period_name_format", "%b-%y")), state_dir=state_dir,
                   batch_size=int(options.get("batch_size", 500)),
                   poll_interval=float(options.get("poll_interval", 5.0)),
                   job_wait=float(options.get("job_wait", 900.0)),
                   uncertain_wait=float(options.get("uncertain_wait", 600.0)))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def period_name(self, period: str) -> str:
        return dt.date.fromisoformat(f"{period}-01").strftime(self.period_name_format)

    # ------------------------------------------------------------------ in-flight imports (crash recovery)

    def _inflight(self, update: Any = None) -> dict[str, dict[str, Any]]:
        """Read (and with ``update(state)`` change, atomically) the imports started but not yet decided."""
        if self.state_dir is None:
            if update is not None:
                update(self._memory)
            return self._memory
        path = self.state_dir / "inflight.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / "inflight.lock"):
            state = json.loads(path.read_text()) if path.exists() else {}
            if update is not None:
                update(state)
                atomic_write_bytes(path, json.dumps(state, sort_keys=True, indent=1).encode())
            return state

    def _settle_inflight(self, journal_ids: set[str]) -> None:
        """Wait for imports an interrupted run started for any of these journals; their result is then found
        by the batch lookup like any other. A run killed *while* sending ``importBulkData`` left no request id:
        Oracle may or may not have the import, so its batches are awaited for up to ``uncertain_wait`` seconds
        before the journals are imported again."""
        for group, rec in self._inflight().items():
            if not journal_ids & set(rec["journals"]):
                continue
            if rec.get("request_id"):
                try:
                    self._wait(str(rec["request_id"]))
                except PermanentError as exc:
                    if exc.code != "LB-P004":
                        raise
            else:
                deadline = time.monotonic() + self.uncertain_wait
                while len(self._batches(rec["journals"])) < len(rec["journals"]) and time.monotonic() < deadline:
                    time.sleep(self.poll_interval)
            self._inflight(lambda s, g=group: s.pop(g, None))

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        require_run_entity(run, self.legal_entity_id, SYSTEM, f" (ledger {self.ledger_id})")
        results: dict[str, PostResult] = {}
        ok: list[JournalEntry] = []
        for j in run.journals:
            problems = journal_problems(j, self.chart)
            if problems:
                results[j.id] = self._reject(j.id, run.run_id, "refused before sending: " + "; ".join(problems),
                                             "oracle.journal_invalid", {"problems": problems})
            else:
                ok.append(j)
        self._settle_inflight({j.id for j in ok})
        held = self._batches([j.id for j in ok])
        todo = []
        for j in ok:
            if j.id in held:
                results[j.id] = self._held_result(j, held[j.id], run.run_id)
            else:
                todo.append(j)
        for start in range(0, len(todo), self.batch_size):
            results.update(self._import(todo[start:start + self.batch_size], run))
        return [results[j.id] for j in run.journals]

    def _reject(self, journal_id: str, run_id: str, msg: str, rule: str, extra: Mapping[str, Any] | None = None
                ) -> PostResult:
        return rejected(SYSTEM, journal_id, run_id, msg, rule, extra)

    def _held_result(self, j: JournalEntry, batches: list[_Batch], run_id: str) -> PostResult:
        ref = ",".join(f"batch {b.batch_id}" for b in batches)
        if len(batches) > 1:
            return PostResult(j.id, PostStatus.REJECTED, ref, ConflictError(
                f"{SYSTEM}: journal {j.id}: Oracle holds {len(batches)} journal batches named {j.id} ({ref}) — "
                "reverse all but one", code="LB-C001", details={"journal_id": j.id, "run_id": run_id}))
        (b,) = batches
        if line_signature(b.lines) != journal_signature(j, self.chart, self.separator):
            return PostResult(j.id, PostStatus.REJECTED, ref, ConflictError(
                f"{SYSTEM}: journal {j.id} is already in Oracle ({ref}) with other lines; posted journals are never "
                "edited — post a reversal and a new journal with a new id", code="LB-C001",
                details={"journal_id": j.id, "run_id": run_id, "batch_id": b.batch_id}))
        if b.status != "P":
            return PostResult(j.id, PostStatus.PENDING, ref)  # imported, not posted yet (AutoPost not run)
        return PostResult(j.id, PostStatus.POSTED, ref)

    def _import(self, journals: Sequence[JournalEntry], run: PostingBatch) -> dict[str, PostResult]:
        digest = hashlib.sha256("|".join([run.run_id, *(j.id for j in journals)]).encode()).hexdigest()
        group = str(int(digest[:12], 16) % 10**9)  # GROUP_ID: a number, the same for the same chunk of a run
        created = (run.created_at or dt.datetime.now(dt.UTC)).date()
        rows = [row for j in journals for row in journal_rows(
            j, self.chart, ledger_id=self.ledger_id, source=self.source,
            category=self.categories.get(j.journal_type.value, self.category), created=created, group_id=group,
            period_name=self.period_name(j.period))]
        ids = [j.id for j in journals]
        self._inflight(lambda s: s.__setitem__(group, {"run_id": run.run_id, "journals": ids, "request_id": None}))
        try:
            request_id = self.client.import_bulk_data(
                fbdi_zip(rows), file_name=f"LB_{group}.zip", job_name=JOB_NAME,
                parameters=f"{self.data_access_set},{self.source},{self.ledger_id},{group},N,N,N")
        except LedgerbridgeError as exc:
            status = exc.details.get("status")
            if exc.details.get("exception") in ("ConnectError", "ConnectTimeout") or (
                    isinstance(status, int) and 400 <= status < 500):
                self._inflight(lambda s: s.pop(group, None))  # never reached Oracle, or Oracle refused it
            raise  # otherwise it may have started: the re-run settles it (uncertain_wait)
        self._inflight(lambda s: s[group].__setitem__("request_id", request_id))
        status = self._wait(request_id)
        if status not in TERMINAL:
            return {j: PostResult(j, PostStatus.PENDING, f"ESS {request_id}") for j in ids}
        errors, summary = parse_report(unzip(self.client.job_files(request_id)))
        self.last_report = {"request_id": request_id, "status": status, "errors": errors, "summary": summary}
        by_journal: dict[str, list[InterfaceError]] = defaultdict(list)
        for e in errors:
            by_journal[e.journal].append(e)
        held = self._batches(ids)
        out: dict[str, PostResult] = {}
        for j in journals:
            if by_journal.get(j.id):
                errs = by_journal[j.id]
                text = "; ".join(f"row {e.row}: {e.code} {e.message}" for e in errs)
                rule = "oracle.period_closed" if any(e.code == "EP01" for e in errs) else "oracle.interface_error"
                out[j.id] = self._reject(j.id, run.run_id, f"ESS job {request_id} {status} but Journal Import left "
                                         f"its rows in GL_INTERFACE: {text}", rule,
                                         {"request_id": request_id, "job_status": status,
                                          "interface_errors": [{"row": e.row, "code": e.code, "message": e.message}
                                                               for e in errs]})
            elif j.id in held:
                out[j.id] = self._held_result(j, held[j.id], run.run_id)
            else:
                out[j.id] = PostResult(j.id, PostStatus.REJECTED, f"ESS {request_id}", PermanentError(
                    f"{SYSTEM}: journal {j.id}: ESS job {request_id} ended {status} but no journal batch {j.id} "
                    f"exists and the report names no error for it ({'; '.join(summary) or 'no summary'}) — check "
                    "GL_INTERFACE and the Journal Import output", code="LB-P006",
                    details={"journal_id": j.id, "run_id": run.run_id, "request_id": request_id,
                             "rule": "oracle.not_imported", "job_status": status}))
        self._inflight(lambda s: s.pop(group, None))
        return out

    def _wait(self, request_id: str) -> str:
        deadline = time.monotonic() + self.job_wait
        while True:
            status = self.client.job_status(request_id)
            if status in TERMINAL or time.monotonic() >= deadline:
                return status
            time.sleep(self.poll_interval)

    # ------------------------------------------------------------------ reading

    def _batch_rows(self, q: str) -> list[_Batch]:
        out = []
        for b in self.client.rows("journalBatches", q=q, expand="journalHeaders.journalLines"):
            lines = [{**ln, "PeriodName": h.get("PeriodName")} for h in _children(b.get("journalHeaders"))
                     if str(h.get("LedgerId")) == self.ledger_id for ln in _children(h.get("journalLines"))]
            out.append(_Batch(str(b.get("JournalBatchId")), str(b.get("BatchName")), str(b.get("Status")), lines))
        return out

    def _batches(self, names: Sequence[str]) -> dict[str, list[_Batch]]:
        out: dict[str, list[_Batch]] = defaultdict(list)
        wanted = sorted(set(names))
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start:start + LOOKUP_CHUNK]
            for b in self._batch_rows(" or ".join(f"BatchName = '{n}'" for n in chunk)):
                if b.name in chunk and b.lines:
                    out[b.name].append(b)
        return dict(out)

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Posted batches named after these journals: entered totals per currency and line count (several
        batches with one name all count, so a duplicate shows as a mismatch)."""
        out = {}
        for name, batches in self._batches(list(journal_ids)).items():
            posted = [b for b in batches if b.status == "P"]
            if posted:
                lines = [ln for b in posted for ln in b.lines]
                out[name] = ReadBack(",".join(f"batch {b.batch_id}" for b in posted), readback_totals(lines),
                                     len(lines))
        return out

    def period_status(self, entity: str, period: str) -> str | None:
        """The ledger's period status from ``ledgerPeriods`` (Open, Close Pending, Closed, Permanently Closed,
        Future Enterable, Never Opened), or None for another entity or an unknown period."""
        if entity != self.legal_entity_id:
            return None
        rows = list(self.client.rows("ledgerPeriods", q=f"LedgerId = {self.ledger_id} and PeriodName = "
                                                        f"'{self.period_name(period)}'", limit=1))
        if not rows:
            return None
        status = str(rows[0].get("ClosingStatus", "")).lower()
        return PERIOD_STATES.get(status, status)

    def journal_batches(self, since: dt.datetime | None = None) -> list[_Batch]:
        """Posted journal batches (changed since ``since``: ``q=LastUpdateDate > '...'``) with this ledger's
        lines."""
        q = "Status = 'P'"
        if since is not None:
            q += f" and LastUpdateDate > '{since.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"
        return [b for b in self._batch_rows(q) if b.lines]

    def _our_period(self, oracle_period: str) -> str:
        return dt.datetime.strptime(oracle_period, self.period_name_format).strftime("%Y-%m")

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """What Oracle holds for the ledger: ``(period, our account code, entered currency) -> (debit, credit)``
        over every posted batch (manual journals included); an account outside the map keeps its combination."""
        if entity != self.legal_entity_id:
            return {}
        sums: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for b in self.journal_batches():
            for ln in b.lines:
                key = (self._our_period(str(ln["PeriodName"])),
                       self.chart.code_of(str(ln["AccountCombination"]), self.separator), str(ln["CurrencyCode"]))
                sums[key][0] += to_decimal(ln.get("EnteredDebitAmount"))
                sums[key][1] += to_decimal(ln.get("EnteredCreditAmount"))
        return {k: (v[0], v[1]) for k, v in sorted(sums.items())}

    def trial_balance(self, from_period: str, to_period: str) -> dict[str, tuple[Decimal, Decimal]]:
        """Posted debit and credit in ledger currency (accounted amounts) per our account code, periods
        ``from_period``..``to_period`` ("YYYY-MM"), for every mapped code."""
        per: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for b in self.journal_batches():
            for ln in b.lines:
                if from_period <= self._our_period(str(ln["PeriodName"])) <= to_period:
                    code = self.chart.code_of(str(ln["AccountCombination"]), self.separator)
                    per[code][0] += to_decimal(ln.get("AccountedDebit"))
                    per[code][1] += to_decimal(ln.get("AccountedCredit"))
        return {code: (per[code][0], per[code][1]) for code in sorted(self.chart.account_map)}
