"""Workday Financial Management as an ERP target: journals, customer invoices, projects, trial balance.

Posting (``post_journals``), per run:

1. refuse before sending what Workday would refuse: another legal entity's run, an account without a Workday
   ledger account, a period the tenant's period-status report shows closed or locked;
2. look every journal up by its reference ID (``Get_Journals`` with ``Accounting_Journal_ID`` references, one call
   per ``page_size`` journals, ``Skip_Non_Existing_Instances``): held with the same lines -> ``posted`` again;
   held with other lines -> :class:`ConflictError`; held but not posted (business process in progress) ->
   ``pending``;
3. ``Submit_Accounting_Journal`` (auto-complete) for the rest, one call per journal: a ``Validation_Fault``
   rejects that journal alone (line-level failure); a reference ID already in use (a concurrent run) is looked up
   again instead of failing;
4. read numbers and totals back with ``Get_Journals`` (``read_back`` answers from Workday, never from our call).

Reconciliation reads a RaaS trial-balance report (``account_totals`` / ``trial_balance``); ``period_status`` a
period-status report. See docs/connectors/workday.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CursorKind,
    FailureMode,
    IdempotencyMechanism,
    InvoiceResult,
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
from ledgerbridge.connectors.workday.client import DEFAULT_VERSION, SYSTEM, WorkdayClient, utc_now
from ledgerbridge.connectors.workday.mapping import (
    NS,
    PERIOD_STATES,
    HeldInvoice,
    HeldJournal,
    ImportProcess,
    JournalOptions,
    get_invoices_request,
    get_journals_request,
    get_projects_request,
    held_invoices,
    held_journals,
    import_journals_request,
    import_messages_request,
    import_processes,
    invoice_request,
    journal_problems,
    journal_signature,
    project_from_xml,
    put_customer_request,
    ref_id,
    submit_journal_request,
)
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, Invoice, Project

DEFAULT_PAGE = 100
DEFAULT_WORKTAGS = {"cost_center": "Cost_Center_Reference_ID", "project": "Project_ID"}

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    reads=frozenset({"project"}),
    writes=frozenset({"journal_entry", "invoice", "customer"}),
    change_detection=frozenset({CursorKind.UPDATED_AT}),  # Transaction_Log_Criteria_Data (Updated_From/Through)
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,  # reference IDs looked up before Submit_*
    paging=PagingKind.PAGE_NUMBER,
    # Workday publishes no rate limit; lookup-before-submit is not atomic: a few calls at a time, one writer
    limits=Limits(concurrency=2),
    batch_sizes=BatchSizes(read=DEFAULT_PAGE, write=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True, slots=True)
class ProjectRead:
    """One incremental read of projects: the projects, the cursor to store (``{"updated_through": iso}``)."""

    projects: list[Project]
    cursor: dict[str, str]
    pages: int


def _report(value: Any, key: str, problems: list[str]) -> tuple[str, str] | None:
    if value is None:
        return None
    owner, sep, name = str(value).partition("/")
    if not sep or not owner or not name:
        problems.append(f"options.reports.{key} must be '<report owner>/<report name>', got {value!r}")
        return None
    return owner, name


class WorkdayLedger:
    """Posting, billing and project-reading target for one Workday company (= one legal entity).

    ``books_ledger``: Workday accounts for an approved customer invoice through its own posting rules (revenue
    category -> ledger account), so the billing flow sends invoice work lines on the clearing account and stages only
    the relief; map that account to its revenue category in ``revenue_categories``."""

    books_ledger = True

    def __init__(self, client: WorkdayClient, *, legal_entity_id: str, company_id: str,
                 account_map: Mapping[str, str], worktag_types: Mapping[str, str] | None = None,
                 ledger_type: str = "Actuals", journal_source: str = "Integration", page_size: int = DEFAULT_PAGE,
                 trial_balance_report: tuple[str, str] | None = None,
                 period_status_report: tuple[str, str] | None = None,
                 revenue_categories: Mapping[str, str] | None = None, default_revenue_category: str = "Services",
                 default_cost_center: str = "", bulk_threshold: int | None = None, import_batch: int = 100,
                 import_wait: float = 120.0, import_poll: float = 0.5) -> None:
        if not 1 <= page_size <= 999:
            raise ValueError("page_size must be 1..999 (Workday Response_Filter Count)")
        self.client = client
        self.legal_entity_id = legal_entity_id
        self.company_id = company_id
        self.opts = JournalOptions(company_id, dict(account_map), dict(worktag_types or DEFAULT_WORKTAGS),
                                   ledger_type, journal_source)
        self.page_size = page_size
        self.trial_balance_report = trial_balance_report
        self.period_status_report = period_status_report
        self.revenue_categories = dict(revenue_categories or {})
        self.default_revenue_category = default_revenue_category
        self.default_cost_center = default_cost_center
        self.bulk_threshold = bulk_threshold  # runs with this many journals to submit go through the import
        self.import_batch = import_batch
        self.import_wait = import_wait
        self.import_poll = import_poll
        reverse: dict[str, list[str]] = defaultdict(list)
        for ours, theirs in self.opts.account_map.items():
            reverse[theirs].append(ours)
        #: Workday ledger account -> our code (only where one of our codes maps to it)
        self.our_account = {theirs: ours[0] for theirs, ours in reverse.items() if len(ours) == 1}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, password: str, system: str = SYSTEM) -> WorkdayLedger:
        """Build from a system's ``options`` (docs/connectors/workday.md) and the resolved ``password``; every
        missing or malformed key is reported at once."""
        problems: list[str] = []
        for key in ("url", "tenant", "username", "legal_entity_id", "company_id"):
            if not isinstance(options.get(key), str) or not options.get(key):
                problems.append(f"options.{key} is required (text)")
        amap: Any = options.get("account_map")
        if not isinstance(amap, Mapping) or not amap:
            problems.append("options.account_map is required: our account code -> Workday Ledger_Account_ID")
        reports = options.get("reports") or {}
        if not isinstance(reports, Mapping):
            problems.append("options.reports must map trial_balance / period_status to '<owner>/<report>'")
            reports = {}
        tb = _report(reports.get("trial_balance"), "trial_balance", problems)
        ps = _report(reports.get("period_status"), "period_status", problems)
        page = options.get("page_size", DEFAULT_PAGE)
        if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= 999:
            problems.append("options.page_size must be an integer 1..999 (Workday's Count maximum)")
        bulk = options.get("bulk_threshold")
        if bulk is not None and (not isinstance(bulk, int) or isinstance(bulk, bool) or bulk < 1):
            problems.append("options.bulk_threshold must be a positive integer (journals per run from which "
                            "Import_Accounting_Journal is used) or absent")
        if not password:
            problems.append("secrets.password is empty — reference it with ${env:...} or ${file:...}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        client = WorkdayClient(str(options["url"]), str(options["tenant"]), str(options["username"]), password,
                               version=str(options.get("version", DEFAULT_VERSION)),
                               timeout=float(options.get("timeout", 120)),
                               concurrency=int(options.get("concurrency", 2)),
                               requests_per_second=options.get("requests_per_second"), system=system)
        return cls(client, legal_entity_id=str(options["legal_entity_id"]), company_id=str(options["company_id"]),
                   account_map={str(k): str(v) for k, v in dict(amap).items()},
                   worktag_types=options.get("worktag_types"), ledger_type=str(options.get("ledger_type", "Actuals")),
                   journal_source=str(options.get("journal_source", "Integration")), page_size=int(page),
                   trial_balance_report=tb, period_status_report=ps,
                   revenue_categories=options.get("revenue_categories"),
                   default_revenue_category=str(options.get("default_revenue_category", "Services")),
                   default_cost_center=str(options.get("default_cost_center", "")),
                   bulk_threshold=options.get("bulk_threshold"), import_batch=int(options.get("import_batch", 100)),
                   import_wait=float(options.get("import_wait", 120)),
                   import_poll=float(options.get("import_poll", 0.5)))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def version(self) -> str:
        return self.client.version

    # ------------------------------------------------------------------ journals

    def held(self, journal_ids: Sequence[str]) -> dict[str, HeldJournal]:
        """Journals Workday holds under these reference IDs (one ``Get_Journals`` per ``page_size`` ids)."""
        return {h.journal_id: h for h in self._by_reference(
            "Financial_Management", get_journals_request, held_journals, journal_ids)}

    def _by_reference(self, service: str, request: Any, parse: Any, keys: Sequence[str]) -> list[Any]:
        """Objects held under these reference IDs: ``request(ids, version, page, count)`` per chunk of
        ``page_size`` ids, every page parsed with ``parse``."""
        out: list[Any] = []
        for chunk in chunks(list(keys), self.page_size):
            def build(page: int, count: int, ids: Sequence[str] = chunk) -> Any:
                return request(ids, self.version, page, count)

            for response in self.client.pages(service, build, count=self.page_size):
                out += parse(response)
        return out

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        require_run_entity(run, self.legal_entity_id, SYSTEM, f" (company {self.company_id})")
        results: dict[str, PostResult] = {}

        def reject(jid: str, message: str, rule: str, **extra: Any) -> None:
            results[jid] = rejected(SYSTEM, jid, run.run_id, message, rule, extra)

        status = self.period_status(run.legal_entity_id, run.period) if self.period_status_report else None
        held = self.held([j.id for j in run.journals])
        todo = []
        for j in run.journals:
            h = held.get(j.id)
            problems = journal_problems(j, self.opts)
            if h is not None:
                results[j.id] = self._already_held(j, h, run.run_id)
            elif problems:
                reject(j.id, "refused before sending: " + "; ".join(problems), "workday.journal_invalid",
                       problems=problems)
            elif status in ("closed", "locked"):
                reject(j.id, f"Workday period {run.period} is {status} for company {self.company_id}; refused "
                       "before sending — post into the next open period (late-item policy) or reopen it",
                       "workday.period_closed", period=run.period, period_state=status)
            else:
                todo.append(j)

        def submit(j: Any) -> PostResult | None:
            try:
                self.client.call("Financial_Management", submit_journal_request(j, self.opts, self.version))
            except RecordValidationError as exc:
                exc.details.update({"journal_id": j.id, "run_id": run.run_id})
                return PostResult(j.id, PostStatus.REJECTED, None, exc)
            except ConflictError:  # the reference ID is in use: another run submitted it meanwhile
                pass
            return None

        if self.bulk_threshold is not None and len(todo) >= self.bulk_threshold:
            outcomes = self._import(todo, run.run_id)
        else:  # one Submit per journal, up to the client's concurrency in flight (its pacer caps it too)
            with ThreadPoolExecutor(max_workers=max(1, self.client.pacer.concurrency or 1)) as pool:
                outcomes = list(pool.map(submit, todo))
        submitted = [j.id for j, o in zip(todo, outcomes, strict=True) if o is None]
        results.update({o.journal_id: o for o in outcomes if o is not None})
        if submitted:
            now_held = self.held(submitted)
            by_id = {j.id: j for j in run.journals}
            for jid in submitted:
                h = now_held.get(jid)
                if h is None:  # an import still running, or an ISU that cannot view journals: not confirmed
                    results[jid] = PostResult(jid, PostStatus.PENDING, None)
                else:
                    results[jid] = self._already_held(by_id[jid], h, run.run_id)
        return [results[j.id] for j in run.journals]

    def _import(self, todo: Sequence[Any], run_id: str) -> list[PostResult | None]:
        """``Import_Accounting_Journal`` in calls of ``import_batch`` journals, then poll the background processes
        (``Get_Import_Process_Messages``) until done or ``import_wait`` seconds passed. A journal the process
        refused is rejected with its message; the others are looked up by reference by the caller (still running
        -> not found -> ``pending``: the next run finds them)."""
        processes: list[str] = []
        for chunk in chunks(list(todo), self.import_batch):
            answer = self.client.call("Financial_Management", import_journals_request(chunk, self.opts, self.version))
            wid = ref_id(answer.find("wd:Import_Process_Reference", NS), "WID")
            if wid is None:
                raise PermanentError(f"{SYSTEM}: Import_Accounting_Journal answered without an import process "
                                     "reference", code="LB-P006")
            processes.append(wid)
        deadline = time.monotonic() + self.import_wait
        state: dict[str, ImportProcess] = {}
        while True:
            pending = [w for w in processes if w not in state or not state[w].done]
            if not pending:
                break
            for p in import_processes(self.client.call("Integrations", import_messages_request(pending,
                                                                                                self.version))):
                state[p.wid] = p
            if all(state.get(w) is not None and state[w].done for w in processes) or time.monotonic() > deadline:
                break
            time.sleep(self.import_poll)
        refused = {key: (msg, xpath) for p in state.values() for key, msg, xpath in p.refused}
        out: list[PostResult | None] = []
        for j in todo:
            if j.id not in refused:
                out.append(None)
                continue
            msg, xpath = refused[j.id]
            rule = {"rule": "workday.period_closed"} if "closed period" in msg.lower() else {}
            out.append(PostResult(j.id, PostStatus.REJECTED, None, RecordValidationError(
                f"{SYSTEM}: journal {j.id} refused by the import process: {msg} ({xpath}) — fix and replay",
                code="LB-V001", details={"journal_id": j.id, "run_id": run_id, "xpath": xpath, **rule})))
        return out

    def _already_held(self, journal: Any, h: HeldJournal, run_id: str) -> PostResult:
        if h.status == "Canceled" or h.signature() != journal_signature(journal, self.opts):
            return PostResult(journal.id, PostStatus.REJECTED, h.target_ref, ConflictError(
                f"{SYSTEM}: journal {journal.id} is already in Workday ({h.target_ref}, {h.status}) with different "
                "lines or canceled; posted journals are never edited — post a reversal and a new journal with a new "
                "id", code="LB-C001", details={"journal_id": journal.id, "run_id": run_id, "wid": h.wid}))
        if h.status == "Posted":
            return PostResult(journal.id, PostStatus.POSTED, h.target_ref)
        return PostResult(journal.id, PostStatus.PENDING, h.target_ref)  # business process not complete yet

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Posted journals Workday holds for these ids: totals per line currency and line count (lines keyed by
        Workday account; not-yet-posted journals are left out)."""
        return {jid: h.read_back() for jid, h in self.held(journal_ids).items() if h.status == "Posted"}

    # ------------------------------------------------------------------ periods and trial balance (RaaS)

    def period_status(self, entity: str, period: str) -> str | None:
        """The period's status from the period-status report (``None``: other entity, no report configured, or
        the period is not in the report)."""
        if entity != self.legal_entity_id or self.period_status_report is None:
            return None
        owner, name = self.period_status_report
        for row in self.client.report(owner, name, Company=self.company_id):
            if str(row.get("Period")) == period and str(row.get("Company", self.company_id)) == self.company_id:
                status = str(row.get("Status") or "")
                return PERIOD_STATES.get(status, status.lower() or None)
        return None

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """``{(period, our account code, currency): (debit, credit)}`` from the trial-balance report (the
        reconciliation's ledger side). A Workday account several of our codes map to keeps its Workday id."""
        if entity != self.legal_entity_id:
            return {}
        if self.trial_balance_report is None:
            raise PermanentError(f"{SYSTEM}: no trial-balance report configured (options.reports.trial_balance) — "
                                 "the ledger side cannot be read", code="LB-P001")
        owner, name = self.trial_balance_report
        out: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}
        for row in self.client.report(owner, name, Company=self.company_id):
            account = str(row["Ledger_Account"])
            key = (str(row["Period"]), self.our_account.get(account, account), str(row["Currency"]))
            d, c = out.get(key, (Decimal(0), Decimal(0)))
            out[key] = (d + Decimal(str(row["Debit"])), c + Decimal(str(row["Credit"])))
        return out

    def trial_balance(self, periods: Iterable[str] | None = None) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
        """``{(our account code, currency): (debit, credit)}`` over ``periods`` (all when ``None``)."""
        wanted = set(periods) if periods is not None else None
        out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for (period, account, cur), (d, c) in self.account_totals(self.legal_entity_id).items():
            if wanted is None or period in wanted:
                od, oc = out.get((account, cur), (Decimal(0), Decimal(0)))
                out[(account, cur)] = (od + d, oc + c)
        return out

    # ------------------------------------------------------------------ invoices

    def _held_invoices(self, keys: Sequence[str]) -> dict[str, HeldInvoice]:
        return {h.key: h for h in self._by_reference("Revenue_Management", get_invoices_request, held_invoices,
                                                     keys)}

    def create_invoice(self, inv: Invoice) -> InvoiceResult:
        """``Submit_Customer_Invoice`` once per ``inv.id`` (looked up by ``Customer_Invoice_ID`` first); held with
        other amounts -> ``ConflictError``. ``books_ledger`` is True: Workday accounts for an approved invoice
        through its own posting rules."""
        held = self._held_invoices([inv.id]).get(inv.id)
        if held is None:
            with contextlib.suppress(ConflictError):  # submitted meanwhile by another run: read it below
                self.client.call("Revenue_Management", invoice_request(
                    inv, company_id=self.company_id, version=self.version,
                    revenue_categories=self.revenue_categories,
                    default_revenue_category=self.default_revenue_category))
            held = self._held_invoices([inv.id]).get(inv.id)
            if held is None:  # pragma: no cover - acknowledged but not shown
                raise PermanentError(f"{SYSTEM}: invoice {inv.id} was accepted but Get_Customer_Invoices does not "
                                     "show it — check the ISU's view permissions", code="LB-P006")
        diffs = [f"{n}: ours {w}, Workday {g}" for n, w, g in (("net", inv.net_total, held.net),
                                                             ("tax", inv.tax_total, held.tax),
                                                             ("total", inv.total, held.total)) if w != g]
        if diffs:
            raise ConflictError(f"{SYSTEM}: invoice {inv.id} ({held.number}) differs from ours: {'; '.join(diffs)} "
                                "— cancel or adjust it in Workday and re-bill", code="LB-C001",
                                details={"invoice_id": inv.id, "wid": held.wid})
        return self._result(held)

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]:
        return {k: self._result(h) for k, h in self._held_invoices(keys).items()}

    @staticmethod
    def _result(h: HeldInvoice) -> InvoiceResult:
        return InvoiceResult(key=h.key, number=h.number, status=h.status, target_ref=f"WID:{h.wid}",
                             books_ledger=True)

    # ------------------------------------------------------------------ master data

    def push_customers(self, customers: Iterable[Customer]) -> dict[str, str]:
        """``Put_Customer`` per customer: an upsert on ``Customer_Reference_ID`` = our id, so a repeat changes
        nothing new. Returns our id -> Workday reference ID (the same id)."""
        out: dict[str, str] = {}
        for c in customers:
            answer = self.client.call("Revenue_Management", put_customer_request(c, self.version))
            out[c.id] = ref_id(answer.find("wd:Customer_Reference", NS), "Customer_Reference_ID") or c.id
        return out

    # ------------------------------------------------------------------ projects (incremental)

    def read_projects(self, cursor: Mapping[str, str] | None = None, *,
                      overlap: dt.timedelta = dt.timedelta(minutes=5), now: dt.datetime | None = None
                      ) -> ProjectRead:
        """Projects changed since ``cursor`` (``Transaction_Log_Criteria_Data`` from the cursor minus ``overlap``
        through now; all projects when ``cursor`` is None), paged with ``Response_Filter`` and pinned with
        ``As_Of_Entry_DateTime`` so pages form one snapshot."""
        through = now or utc_now()
        since = dt.datetime.fromisoformat(cursor["updated_through"]) - overlap if cursor else None
        out: list[Project] = []
        pages = 0

        def build(page: int, count: int) -> Any:
            return get_projects_request(self.version, page, count, updated_from=since, updated_through=through,
                                        as_of=through)

        for response in self.client.pages("Resource_Management", build, count=self.page_size):
            pages += 1
            out += [project_from_xml(el, legal_entity_of={self.company_id: self.legal_entity_id},
                                     default_cost_center=self.default_cost_center)
                    for el in response.iterfind("wd:Response_Data/wd:Project", NS)]
        return ProjectRead(out, {"updated_through": through.isoformat()}, pages)

    def projects(self) -> list[Project]:
        return self.read_projects(None).projects
