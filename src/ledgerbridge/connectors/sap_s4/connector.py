"""SAP S/4HANA Cloud as a target ledger (:class:`~ledgerbridge.connectors.base.LedgerTarget`), plus enterprise
projects and timesheets.

Posting (``post_journals``), per run:

1. check every journal before sending (accounts in ``account_map``, one transaction currency per document) and map
   it to a journal entry whose ``DocumentReferenceID`` is :func:`~.mapping.document_reference` of the journal id;
2. look the references up with OData (``API_JOURNALENTRYITEMBASIC_SRV``, one call per 40 journals): a document with
   the same items -> ``posted`` again (never created twice); other items or two documents -> ``ConflictError``;
3. create the rest through SOAP ``JournalEntryCreateRequestConfirmation_In`` (``batch_size`` journals per message)
   and read each journal's confirmation: ``AccountingDocument`` and the ``Log`` — an HTTP 200 whose log carries an
   error (closed period, unknown account, unbalanced) is a rejected journal, alone;
   with ``mode: async`` the same message goes to ``JournalEntryBulkCreationRequest_In`` (HTTP 202, nothing known
   yet) and the confirmation is read from the confirmation inbox later (``PENDING`` until it is there);
4. ``read_back`` reads the items by reference again: totals per transaction currency and line count.

SAP has no public API for posting periods (vendor facts), so ``period_status`` answers ``None`` and a closed period
shows as a rejected journal with SAP's own message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    FailureMode,
    IdempotencyMechanism,
    Limits,
    PagingKind,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
    rejected,
    require_run_entity,
)
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.connectors.sap_s4.client import (
    JOURNAL_ITEMS,
    PROJECT_SRV,
    SOAP_ASYNC,
    SOAP_SYNC,
    SYSTEM,
    TIMESHEET_SRV,
    SapS4Client,
)
from ledgerbridge.connectors.sap_s4.mapping import (
    Confirmation,
    JournalPlan,
    bulk_request,
    document_reference,
    item_signature,
    journal_problems,
    journal_to_plan,
    odata_date,
    odata_decimal,
    parse_confirmation,
    project_payload,
    readback_totals,
    timesheet_key,
    timesheet_payload,
)
from ledgerbridge.errors import ConflictError, LedgerbridgeError, PermanentError, RecordValidationError, TransientError
from ledgerbridge.model.entities import Project, TimeEntry

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    writes=frozenset({"journal_entry", "project", "time_entry"}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    paging=PagingKind.OFFSET,
    batch_sizes=BatchSizes(read=1000, write=50),
    # lookup-before-create is not atomic: one writer per company code
    limits=Limits(concurrency=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)
ACTION = "http://sap.com/xi/SAPSCORE/SFIN/JournalEntryCreateRequestConfirmation_In/" \
         "JournalEntryCreateRequestConfirmation_InRequest"
ASYNC_ACTION = "http://sap.com/xi/SAPSCORE/SFIN/JournalEntryBulkCreationRequest_In/" \
               "JournalEntryBulkCreationRequest_InRequest"
LOOKUP_CHUNK = 40
ITEM_FIELDS = ("CompanyCode,FiscalYear,AccountingDocument,LedgerGLLineItem,GLAccount,DocumentReferenceID,PostingDate,"
               "AmountInTransactionCurrency,TransactionCurrency,AmountInCompanyCodeCurrency,CompanyCodeCurrency")


@dataclass(slots=True)
class _Held:
    documents: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (doc, year) -> items

    def ref(self, company: str) -> str:
        return ",".join(f"{company}/{d}/{y}" for d, y in sorted(self.documents))

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for rows in self.documents.values() for r in rows]


@dataclass(frozen=True, slots=True)
class TimesheetPush:
    """Per time entry: the SAP ``TimeSheetRecord`` it is held under, or the error."""

    records: dict[str, str]
    errors: dict[str, LedgerbridgeError]


class SapS4Ledger:
    """Posting, projects and timesheets for one company code (= one legal entity)."""

    def __init__(self, client: SapS4Client, *, legal_entity_id: str, company_code: str,
                 account_map: Mapping[str, str], dimension_map: Mapping[str, str] | None = None,
                 batch_size: int = 50, mode: str = "sync", created_by: str = "",
                 project_profile: str = "YP02", profit_center: str | None = None,
                 persons: Mapping[str, str] | None = None, activity_type: str = "T001",
                 controlling_area: str = "A000", confirmation_wait: float = 10.0, poll_interval: float = 0.2,
                 company_codes: Mapping[str, str] | None = None) -> None:
        if mode not in ("sync", "async"):
            raise PermanentError(f"{SYSTEM}: mode must be sync or async, not {mode!r}", code="LB-P001")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.legal_entity_id = legal_entity_id
        self.company_code = company_code
        self.account_map = {str(k): str(v) for k, v in account_map.items()}
        self.dimension_map = dict(dimension_map if dimension_map is not None else {"cost_center": "CostCenter"})
        self.batch_size = batch_size
        self.mode = mode
        self.created_by = created_by
        self.project_profile = project_profile
        self.profit_center = profit_center
        self.persons = dict(persons or {})
        self.activity_type = activity_type
        self.controlling_area = controlling_area
        self.confirmation_wait = confirmation_wait
        self.poll_interval = poll_interval
        self.company_codes = {str(k): str(v) for k, v in (company_codes or {}).items()}
        self._codes = {v: k for k, v in sorted(self.account_map.items(), reverse=True)}  # GL -> first of our codes

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, secret: Any, system: str = SYSTEM) -> SapS4Ledger:
        """Build from a system's ``options`` (docs/connectors/sap-s4hana.md); ``secret(name)`` resolves
        ``password`` (basic auth) or ``client_secret`` (OAuth). Every problem is reported at once."""
        problems = [f"options.{k} is required (text)" for k in ("url", "legal_entity_id", "company_code")
                    if not isinstance(options.get(k), str) or not options.get(k)]
        amap = options.get("account_map")
        if not isinstance(amap, Mapping) or not amap:
            problems.append("options.account_map is required: our account code -> SAP G/L account")
        if options.get("mode", "sync") not in ("sync", "async"):
            problems.append("options.mode must be sync or async")
        auth = options.get("auth", "basic")
        creds: dict[str, Any] = {}
        try:
            if auth == "oauth":
                creds = {"client_id": options.get("client_id"), "client_secret": secret("client_secret"),
                         "token_url": options.get("token_url")}
                if not creds["client_id"]:
                    problems.append("options.client_id is required with auth: oauth")
            elif auth == "basic":
                creds = {"user": options.get("user"), "password": secret("password")}
                if not creds["user"]:
                    problems.append("options.user (the communication user) is required with auth: basic")
            else:
                problems.append("options.auth must be basic or oauth")
        except KeyError as exc:
            problems.append(f"secrets: {exc.args[0]}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        rate = options.get("rate_limit")
        pacer = Pacer(int(rate), float(options.get("rate_window", 1.0)), concurrency=options.get("concurrency"),
                      headroom=float(options.get("headroom", 0.8))) if rate else None
        client = SapS4Client(str(options["url"]), pacer=pacer, timeout=float(options.get("timeout", 60)),
                             confirmation_url=options.get("confirmation_url"), system=system, **creds)
        ts = options.get("timesheet") or {}
        return cls(client, legal_entity_id=str(options["legal_entity_id"]), company_code=str(options["company_code"]),
                   account_map={str(k): str(v) for k, v in dict(amap).items()},  # type: ignore[arg-type]
                   dimension_map=options.get("dimension_map"), batch_size=int(options.get("batch_size", 50)),
                   mode=str(options.get("mode", "sync")), created_by=str(options.get("created_by", "")),
                   project_profile=str(options.get("project_profile", "YP02")),
                   profit_center=options.get("profit_center"), persons=ts.get("persons"),
                   activity_type=str(ts.get("activity_type", "T001")),
                   controlling_area=str(ts.get("controlling_area", "A000")),
                   confirmation_wait=float(options.get("confirmation_wait", 10.0)),
                   company_codes=options.get("company_codes"))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        require_run_entity(run, self.legal_entity_id, SYSTEM, f" (company code {self.company_code})")
        results: dict[str, PostResult] = {}
        plans: list[JournalPlan] = []
        for j in run.journals:
            problems = journal_problems(j, self.account_map)
            if problems:
                results[j.id] = self._reject(j.id, run.run_id, "refused before sending: " + "; ".join(problems),
                                             "sap.journal_invalid", {"problems": problems})
            else:
                plans.append(journal_to_plan(j, company_code=self.company_code, account_map=self.account_map,
                                             dimension_map=self.dimension_map))
        held = self._held([p.reference for p in plans])
        todo = []
        for plan in plans:
            h = held.get(plan.reference)
            if h is None:
                todo.append(plan)
            else:
                results[plan.journal_id] = self._already_held(plan, h, run.run_id)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            results.update(self._create(chunk, run.run_id))
        return [results[j.id] for j in run.journals]

    def _reject(self, journal_id: str, run_id: str, msg: str, rule: str, extra: Mapping[str, Any] | None = None
                ) -> PostResult:
        return rejected(SYSTEM, journal_id, run_id, msg, rule, extra)

    def _already_held(self, plan: JournalPlan, h: _Held, run_id: str) -> PostResult:
        ref = h.ref(self.company_code)
        if len(h.documents) > 1:
            return PostResult(plan.journal_id, PostStatus.REJECTED, ref, ConflictError(
                f"{SYSTEM}: journal {plan.journal_id}: SAP holds {len(h.documents)} documents with reference "
                f"{plan.reference} ({ref}) — reverse all but one in SAP", code="LB-C001",
                details={"journal_id": plan.journal_id, "run_id": run_id, "documents": ref}))
        if item_signature(h.rows) != plan.signature():
            return PostResult(plan.journal_id, PostStatus.REJECTED, ref, ConflictError(
                f"{SYSTEM}: journal {plan.journal_id} is already in SAP ({ref}, reference {plan.reference}) with "
                "other items; posted entries are never edited — post a reversal and a new journal with a new id",
                code="LB-C001", details={"journal_id": plan.journal_id, "run_id": run_id, "documents": ref}))
        return PostResult(plan.journal_id, PostStatus.POSTED, ref)

    @staticmethod
    def message_id(run_id: str, plans: Sequence[JournalPlan]) -> str:
        """Deterministic ``MessageHeader/ID`` (35 characters at most): the same chunk of a run always sends the
        same id, so SAP's duplicate-message detection drops a repeated asynchronous message."""
        return hashlib.sha256("|".join([run_id, *(p.reference for p in plans)]).encode()).hexdigest()[:32].upper()

    def _create(self, plans: Sequence[JournalPlan], run_id: str) -> dict[str, PostResult]:
        mid = self.message_id(run_id, plans)
        envelope = bulk_request(plans, message_id=mid, created=dt.datetime.now(dt.UTC), created_by=self.created_by)
        if self.mode == "async":
            self.client.soap(SOAP_ASYNC, envelope, ASYNC_ACTION)
            answer = self._await_confirmation(mid)
            if answer is None:
                return {p.journal_id: PostResult(p.journal_id, PostStatus.PENDING, f"message {mid}") for p in plans}
        else:
            answer = self.client.soap(SOAP_SYNC, envelope, ACTION).content
        try:
            confirmations, bulk_notes = parse_confirmation(answer)
        except (ValueError, SyntaxError) as exc:  # lxml's XMLSyntaxError is a SyntaxError
            raise TransientError(f"{SYSTEM}: the journal entry confirmation for message {mid} cannot be read "
                                 f"({exc}); the run is retried and finds what SAP created by reference",
                                 code="LB-T001", details={"message_id": mid}) from exc
        by_msg = {c.message_id: c for c in confirmations}
        out: dict[str, PostResult] = {}
        for n, plan in enumerate(plans, 1):
            conf = by_msg.get(f"{mid}-{n}")
            if conf is None and len(confirmations) == len(plans):
                conf = confirmations[n - 1]
            out[plan.journal_id] = self._confirmed(plan, conf, bulk_notes, run_id)
        return out

    def _await_confirmation(self, message_id: str) -> bytes | None:
        deadline = time.monotonic() + self.confirmation_wait
        while True:
            got = self.client.confirmation(message_id)
            if got is not None or time.monotonic() >= deadline:
                return got
            time.sleep(self.poll_interval)

    def _confirmed(self, plan: JournalPlan, conf: Confirmation | None, bulk_notes: list[tuple[str, int, str]],
                   run_id: str) -> PostResult:
        if conf is None:
            notes = "; ".join(f"{t}: {n}" for t, _, n in bulk_notes) or "no confirmation for this journal"
            return self._reject(plan.journal_id, run_id, f"SAP did not confirm it: {notes}", "sap.not_confirmed")
        if not conf.ok:
            text = conf.error_text()
            rule = "sap.period_closed" if "not open" in text.lower() else "sap.journal_refused"
            return self._reject(plan.journal_id, run_id, f"SAP refused it (HTTP 200, log severity "
                                f"{conf.max_severity}): {text}", rule,
                                {"log": [{"type": t, "severity": s, "note": n} for t, s, n in conf.notes],
                                 "reference": plan.reference})
        return PostResult(plan.journal_id, PostStatus.POSTED,
                          f"{conf.company_code}/{conf.accounting_document}/{conf.fiscal_year}")

    def _held(self, references: Sequence[str]) -> dict[str, _Held]:
        out: dict[str, _Held] = {}
        refs = sorted(set(references))
        for start in range(0, len(refs), LOOKUP_CHUNK):
            chunk = refs[start:start + LOOKUP_CHUNK]
            flt = f"CompanyCode eq '{self.company_code}' and (" + " or ".join(
                f"DocumentReferenceID eq '{r}'" for r in chunk) + ")"
            for row in self.client.odata_rows(JOURNAL_ITEMS, {"$filter": flt, "$select": ITEM_FIELDS}):
                h = out.setdefault(str(row["DocumentReferenceID"]), _Held())
                h.documents.setdefault((str(row["AccountingDocument"]), str(row["FiscalYear"])), []).append(row)
        return out

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Documents SAP holds for these journals (by ``DocumentReferenceID``): totals per transaction currency and
        item count. Two documents with one reference both count, so a duplicate shows as a mismatch."""
        refs = {document_reference(j): j for j in journal_ids}
        held = self._held(list(refs))
        return {refs[ref]: ReadBack(h.ref(self.company_code), readback_totals(h.rows), len(h.rows))
                for ref, h in held.items() if ref in refs}

    def period_status(self, entity: str, period: str) -> str | None:
        """None: S/4HANA Cloud offers no public API for posting periods ("Manage Posting Periods" is an app
        only). A posting into a closed period comes back as a rejected journal with SAP's message."""
        return None

    # ------------------------------------------------------------------ reconciliation

    def _items(self, date_from: dt.date | None = None, date_to: dt.date | None = None) -> Iterable[dict[str, Any]]:
        flt = f"CompanyCode eq '{self.company_code}'"
        if date_from:
            flt += f" and PostingDate ge datetime'{date_from.isoformat()}T00:00:00'"
        if date_to:
            flt += f" and PostingDate le datetime'{date_to.isoformat()}T00:00:00'"
        return self.client.odata_rows(JOURNAL_ITEMS, {"$filter": flt, "$select": ITEM_FIELDS})

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """What SAP holds for ``entity``'s company code: ``(period, our account code, transaction currency) ->
        (debit, credit)``. A G/L account outside the account map is reported under its SAP number."""
        if entity != self.legal_entity_id:
            return {}
        sums: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for r in self._items():
            amt = odata_decimal(r["AmountInTransactionCurrency"])
            key = (odata_date(r["PostingDate"]).strftime("%Y-%m"), self._codes.get(str(r["GLAccount"]),
                                                                                  str(r["GLAccount"])),
                   str(r["TransactionCurrency"]))
            sums[key][0 if amt >= 0 else 1] += abs(amt)
        return {k: (v[0], v[1]) for k, v in sorted(sums.items())}

    def trial_balance(self, from_date: dt.date, to_date: dt.date) -> dict[str, tuple[Decimal, Decimal]]:
        """SAP's debit and credit totals in company-code currency between two posting dates, per our account code
        (every mapped code; several codes on one G/L account each show that account's totals)."""
        per_gl: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for r in self._items(from_date, to_date):
            amt = odata_decimal(r["AmountInCompanyCodeCurrency"])
            per_gl[str(r["GLAccount"])][0 if amt >= 0 else 1] += abs(amt)
        zero = [Decimal(0), Decimal(0)]
        return {code: (per_gl.get(gl, zero)[0], per_gl.get(gl, zero)[1])
                for code, gl in sorted(self.account_map.items())}

    # ------------------------------------------------------------------ projects

    def push_projects(self, projects: Iterable[Project]) -> dict[str, str]:
        """One enterprise project per project (``Project`` = our project id, looked up before create), in the
        company code of its legal entity (``company_codes``; this target's own for its entity). Returns project id
        -> SAP ``ProjectUUID``."""
        projs = list(projects)
        codes = {p.id: self.company_codes.get(p.legal_entity_id) or (
            self.company_code if p.legal_entity_id == self.legal_entity_id else None) for p in projs}
        if foreign := sorted(pid for pid, cc in codes.items() if cc is None):
            raise RecordValidationError(f"{SYSTEM}: projects {foreign[:10]} belong to legal entities without a "
                                        "company code — add them to options.company_codes", code="LB-V001",
                                        details={"rule": "sap.company_code_unmapped", "projects": foreign})
        out: dict[str, str] = {}
        for start in range(0, len(projs), LOOKUP_CHUNK):
            out.update(self._project_uuids([p.id for p in projs[start:start + LOOKUP_CHUNK]]))
        for p in projs:
            if p.id in out:
                continue
            try:
                created = self.client.write("POST", PROJECT_SRV, "A_EnterpriseProject", project_payload(
                    p, company_code=str(codes[p.id]), profile=self.project_profile,
                    profit_center=self.profit_center))
            except LedgerbridgeError:
                # the answer to our create was lost and the retried POST was refused ("already exists"): the
                # project the lookup above did not find is now there — ours; bind it instead of failing
                if (found := self._project_uuids([p.id])).get(p.id) is None:
                    raise
                out[p.id] = found[p.id]
                continue
            if not isinstance(created, Mapping) or not created.get("ProjectUUID"):
                raise PermanentError(f"{SYSTEM}: creating project {p.id} answered without a ProjectUUID",
                                     code="LB-P006", details={"project": p.id})
            out[p.id] = str(created["ProjectUUID"])
        return out

    def _project_uuids(self, ids: Sequence[str]) -> dict[str, str]:
        flt = " or ".join(f"Project eq '{pid}'" for pid in ids)
        return {str(r["Project"]): str(r["ProjectUUID"]) for r in self.client.odata_rows(
            PROJECT_SRV + "A_EnterpriseProject", {"$filter": flt, "$select": "Project,ProjectUUID"})}

    # ------------------------------------------------------------------ timesheets

    def _timesheets(self, person: str, day: dt.date) -> list[dict[str, Any]]:
        # gt/lt on TimeSheetDate are unreliable (KBA 3744148): read one person and one day with eq
        flt = (f"PersonWorkAgreement eq '{person}' and CompanyCode eq '{self.company_code}' and "
               f"TimeSheetDate eq datetime'{day.isoformat()}T00:00:00'")
        return list(self.client.odata_rows(TIMESHEET_SRV + "TimeSheetEntryCollection", {"$filter": flt}))

    def push_time_entries(self, entries: Iterable[TimeEntry], *, wbs: Mapping[str, str] | None = None,
                          cost_centers: Mapping[str, str] | None = None) -> TimesheetPush:
        """Create one released timesheet record per time entry version (``TimeSheetNote`` = ``lb:<id>@<version>``,
        looked up first) and verify every create by reading it back: SAP answers 201 even when it saved nothing
        (a POST without ``TimeSheetOperation``), so a 201 alone is never taken as done."""
        records: dict[str, str] = {}
        errors: dict[str, LedgerbridgeError] = {}
        for e in entries:
            person = self.persons.get(e.resource_id)
            if person is None:
                errors[e.id] = RecordValidationError(
                    f"{SYSTEM}: time entry {e.id}: resource {e.resource_id} has no person work agreement in "
                    "options.timesheet.persons", code="LB-V001", details={"rule": "sap.person_unmapped"})
                continue
            key = timesheet_key(e)
            found = {str((r.get("TimeSheetDataFields") or {}).get("TimeSheetNote")): r
                     for r in self._timesheets(person, e.work_date)}
            if key not in found:
                answer = self.client.write("POST", TIMESHEET_SRV, "TimeSheetEntryCollection", timesheet_payload(
                    e, company_code=self.company_code, person=person, activity_type=self.activity_type,
                    controlling_area=self.controlling_area, cost_center=(cost_centers or {}).get(e.project_id),
                    wbs=(wbs or {}).get(e.project_id)))
                found = {str((r.get("TimeSheetDataFields") or {}).get("TimeSheetNote")): r
                         for r in self._timesheets(person, e.work_date)}
                if key not in found:
                    record = (answer or {}).get("TimeSheetRecord") if isinstance(answer, Mapping) else None
                    errors[e.id] = PermanentError(
                        f"{SYSTEM}: time entry {e.id}: SAP answered 201 (TimeSheetRecord {record!r}) but holds no "
                        f"timesheet record {key} for person {person} on {e.work_date} — the create was a no-op "
                        "(check TimeSheetOperation and the arrangement's field mapping)", code="LB-P006",
                        details={"rule": "sap.timesheet_noop", "entry": e.id})
                    continue
            held = found[key]
            hours = odata_decimal((held.get("TimeSheetDataFields") or {}).get("RecordedQuantity"))
            if hours != e.hours:
                errors[e.id] = ConflictError(f"{SYSTEM}: time entry {e.id}: SAP holds {hours} h, ours {e.hours} h",
                                             code="LB-C001", details={"entry": e.id})
                continue
            records[e.id] = str(held.get("TimeSheetRecord"))
        return TimesheetPush(records, errors)
