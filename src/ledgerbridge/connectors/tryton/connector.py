"""Tryton as a real ERP: a :class:`~ledgerbridge.connectors.base.LedgerTarget` plus billing and master data.

Posting (``post_journals``), per run:

1. map every journal to an ``account.move`` plan (accounts through the account map, parties for receivable lines,
   second currency for foreign lines) and **check it before sending**: balance on the exact values sent (Tryton on
   SQLite posts an unbalanced move silently), one side per line, currency precision, known accounts/parties;
2. look the period up by date in Tryton and refuse a journal whose Tryton period is missing or not open (Tryton
   would refuse it at create time; we refuse before sending and say so);
3. look up ``account.move`` by the deterministic reference ``lb:<journal id>`` in ``description`` (one call per
   150 journals): a posted move with the same lines -> ``posted`` again; a *draft* one (a crash between create and
   post) -> posted now; different lines -> :class:`ConflictError`;
4. create the rest in calls of ``batch_size`` moves, then ``post`` them (one call per 1,000); a refused call is
   retried one move at a time so a bad journal is rejected alone (line-level failure mode);
5. read the numbers back. ``read_back`` reads posted moves by reference: totals per currency and line count.

Billing: :meth:`TrytonLedger.post_invoices` creates customer invoices (lookup by ``reference`` first), posts them
(skipping Tryton's payment-date UserWarning) and reads number, state and totals back. Master data
(``push_*``) is search-before-create by a stable key (party ``code``, product ``code``, analytic ``code``,
project ``comment``). :meth:`TrytonLedger.read_time_entries` reads ``timesheet.line`` incrementally with a
``(last_modified_at, id)`` cursor and an overlap window.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
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
    rejected,
    require_run_entity,
)
from ledgerbridge.connectors.tryton.client import DEFAULT_BATCH, SYSTEM, TrytonClient, chunks
from ledgerbridge.connectors.tryton.mapping import (
    InvoiceContext,
    MovePlan,
    TrytonChart,
    invoice_problems,
    invoice_to_values,
    journal_id_of,
    journal_to_move,
    move_problems,
    move_reference,
    move_signature,
    plan_signature,
    readback_totals,
    timesheet_to_time_entry,
)
from ledgerbridge.errors import ConflictError, LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, DimensionValue, Invoice, Project, Resource, TimeEntry

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    reads=frozenset({"time_entry"}),
    writes=frozenset({"journal_entry", "invoice", "customer", "resource", "project", "dimension_value"}),
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    paging=PagingKind.CURSOR,
    batch_sizes=BatchSizes(read=500, write=DEFAULT_BATCH),
    # lookup-before-create is not atomic: one writer per Tryton company, or two runs of one batch could both create
    limits=Limits(concurrency=1),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)

PERIOD_STATES = {"open": "open", "closed": "closed", "locked": "locked"}
#: Tryton account.invoice state -> canonical InvoiceStatus value
INVOICE_STATES = {"draft": "draft", "validated": "submitted", "posted": "posted", "paid": "paid", "cancelled": "void"}
PROJECT_KEY = "ledgerbridge:"  # project.work.comment = "ledgerbridge:<project id>"


@dataclass(frozen=True, slots=True)
class InvoicePostResult:
    invoice_id: str
    status: PostStatus
    number: str | None = None
    state: str | None = None
    tryton_id: int | None = None
    error: LedgerbridgeError | None = None


@dataclass(frozen=True, slots=True)
class TimesheetCursor:
    """Position after the last timesheet line read: its ``last_modified_at`` (server-local, naive) and id."""

    modified_at: dt.datetime
    line_id: int


@dataclass(frozen=True, slots=True)
class TimesheetRead:
    """One incremental read: entries in cursor order, the cursor to store, lines refused with their reason."""

    entries: list[TimeEntry]
    cursor: TimesheetCursor | None
    rejected: list[RecordValidationError] = field(default_factory=list)


@dataclass(slots=True)
class _Period:
    id: int
    name: str
    start: dt.date
    end: dt.date
    state: str


@dataclass(slots=True)
class _Held:
    move_id: int
    state: str
    number: str | None
    line_ids: list[int] = field(default_factory=list)
    duplicates: list[_Held] = field(default_factory=list)  # other moves carrying the same reference

    @property
    def move_ids(self) -> list[int]:
        return [self.move_id, *(d.move_id for d in self.duplicates)]


class TrytonLedger:
    """Posting, billing and master-data target for one Tryton company (= one legal entity).

    ``account_map``: our chart code -> Tryton account (an ``account.account`` id, or its Tryton ``code`` as text,
    resolved once). ``journal_code``: the Tryton journal for moves (``MISC``); ``invoice_journal_code``: for
    customer invoices (``REV``). ``legal_entity_id``: the entity this company keeps; ``period_status`` answers
    ``None`` for other entities and ``post_journals`` refuses their runs.

    ``books_ledger``: posting a customer invoice books it in Tryton's own ledger, so the billing flow sends the
    invoice's work lines on the invoice clearing account and stages only the ``invoice_relief`` journal.
    """

    books_ledger = True

    def __init__(self, client: TrytonClient, *, legal_entity_id: str, account_map: Mapping[str, int | str],
                 journal_code: str = "MISC", invoice_journal_code: str = "REV", batch_size: int = DEFAULT_BATCH,
                 tax_map: Mapping[str, int] | None = None, payment_term: str | None = "Net 30 days",
                 post_batch_size: int | None = None) -> None:
        if batch_size < 1 or (post_batch_size is not None and post_batch_size < 1):
            raise ValueError("batch_size and post_batch_size must be at least 1")
        self.post_batch_size = post_batch_size or batch_size
        self.client = client
        self.legal_entity_id = legal_entity_id
        self.account_map = dict(account_map)
        self.journal_code = journal_code
        self.invoice_journal_code = invoice_journal_code
        self.batch_size = batch_size
        self.tax_map = dict(tax_map or {})
        self.payment_term_name = payment_term
        self._chart: TrytonChart | None = None
        self._company: int | None = None
        self._currency_codes: dict[int, str] = {}
        self._journals: dict[str, int] = {}
        self._payment_term: int | None = None
        self._receivable: int | None = None
        self.parties: dict[str, int] = {}  # customer / resource id -> party id (filled by push_* and lookups)
        self.project_parties: dict[str, int] = {}
        self.analytic: dict[tuple[str, str], int] = {}
        self.works: dict[str, int] = {}  # project id -> timesheet.work id
        self.employees: dict[str, int] = {}  # resource id -> company.employee id

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, password: str, system: str = "tryton") -> TrytonLedger:
        """Build from a system's configuration ``options`` (see docs/connectors/tryton.md) and the resolved
        ``password`` secret. Every missing or malformed option is reported at once, by key."""
        problems: list[str] = []
        for key in ("url", "database", "legal_entity_id"):
            if not isinstance(options.get(key), str) or not options.get(key):
                problems.append(f"options.{key} is required (text)")
        amap: Any = options.get("account_map")
        if not isinstance(amap, Mapping) or not amap:
            problems.append("options.account_map is required: our account code -> Tryton account code or id")
        elif bad := sorted(str(k) for k, v in amap.items() if not isinstance(v, str | int) or isinstance(v, bool)):
            problems.append(f"options.account_map values must be Tryton account codes (text) or ids: {bad}")
        tax_map = options.get("tax_map") or {}
        if not isinstance(tax_map, Mapping):
            problems.append("options.tax_map must map our tax code -> Tryton account.tax id")
        sizes = {k: options.get(k) for k in ("batch_size", "post_batch_size") if options.get(k) is not None}
        problems += [f"options.{k} must be a positive integer" for k, v in sizes.items()
                     if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if not password:
            problems.append("secrets.password is empty — reference it with ${env:...} or ${file:...}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        client = TrytonClient(str(options["url"]), str(options["database"]), str(options.get("user") or "admin"),
                              password, timeout=float(options.get("timeout", 120)))
        return cls(client, legal_entity_id=str(options["legal_entity_id"]),
                   account_map={str(k): v for k, v in dict(amap).items()},
                   journal_code=str(options.get("journal_code", "MISC")),
                   invoice_journal_code=str(options.get("invoice_journal_code", "REV")),
                   batch_size=int(sizes.get("batch_size") or DEFAULT_BATCH),
                   post_batch_size=sizes.get("post_batch_size"),
                   tax_map={str(k): int(v) for k, v in dict(tax_map).items()},
                   payment_term=options.get("payment_term", "Net 30 days"))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ setup (resolved once)

    @property
    def company(self) -> int:
        if self._company is None:
            company = self.client.context.get("company")
            if not company:
                raise PermanentError(f"{SYSTEM}: the Tryton user {self.client.user!r} has no current company — "
                                     "bootstrap the database (scripts/tryton create-db)", code="LB-P001")
            self._company = int(company)
        return self._company

    def chart(self) -> TrytonChart:
        if self._chart is None:
            c = self.client
            comp = c.read("company.company", [self.company], ["currency"])[0]
            cur = c.search_read("currency.currency", [], ["code"])
            self._currency_codes = {int(r["id"]): str(r["code"]) for r in cur}
            company_currency = self._currency_codes[int(comp["currency"])]
            self._journals = {str(r["code"]): int(r["id"]) for r in c.search_read("account.journal", [], ["code"])
                              if r.get("code")}
            for code in (self.journal_code, self.invoice_journal_code):
                if code not in self._journals:
                    raise PermanentError(f"{SYSTEM}: journal {code!r} does not exist (have {sorted(self._journals)})"
                                         " — fix journal_code in the target options", code="LB-P004")
            by_code = {str(k): v for k, v in self.account_map.items() if isinstance(v, str)}
            ids = {str(k): int(v) for k, v in self.account_map.items() if not isinstance(v, str)}
            if by_code:
                rows = c.search_read("account.account", [("company", "=", self.company),
                                                         ("code", "in", sorted(set(by_code.values())))],
                                     ["code", "party_required"])
                found = {str(r["code"]): int(r["id"]) for r in rows}
                missing = {k: v for k, v in by_code.items() if v not in found}
                if missing:
                    raise PermanentError(f"{SYSTEM}: account_map names Tryton account codes that do not exist: "
                                         f"{missing} — fix the account map", code="LB-P004",
                                         details={"missing": missing})
                ids.update({k: found[v] for k, v in by_code.items()})
            rows = c.read("account.account", sorted(set(ids.values())), ["party_required", "type"])
            if len(rows) != len(set(ids.values())):
                raise PermanentError(f"{SYSTEM}: account_map names account ids that do not exist", code="LB-P004")
            party_required = frozenset(int(r["id"]) for r in rows if r.get("party_required"))
            self._chart = TrytonChart(
                company_currency=company_currency, journal_id=self._journals[self.journal_code], accounts=ids,
                currencies={v: k for k, v in self._currency_codes.items()}, party_required=party_required,
                parties=self.parties, project_parties=self.project_parties, analytic=self.analytic)
        return self._chart

    def _periods(self) -> list[_Period]:
        rows = self.client.search_read("account.period", [("company", "=", self.company), ("type", "=", "standard")],
                                       ["name", "start_date", "end_date", "state"])
        return [_Period(int(r["id"]), str(r["name"]), r["start_date"], r["end_date"], str(r["state"])) for r in rows]

    @staticmethod
    def _period_for(periods: Sequence[_Period], day: dt.date) -> _Period | None:
        for p in periods:
            if p.start <= day <= p.end:
                return p
        return None

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        require_run_entity(run, self.legal_entity_id, SYSTEM)
        chart = self.chart()
        plans = [journal_to_move(j, chart) for j in run.journals]
        return self.post_moves(plans, run_id=run.run_id)

    def post_moves(self, plans: Sequence[MovePlan], *, run_id: str = "") -> list[PostResult]:
        """Check, look up, create and post already-mapped moves (what :meth:`post_journals` does after mapping;
        public so a hand-built plan can be checked — see the SQLite unbalanced-move test)."""
        chart = self.chart()
        results: dict[str, PostResult] = {}
        periods = self._periods()
        ready: list[tuple[MovePlan, int]] = []
        held = self._held([p.reference for p in plans])
        held_lines = self._lines([i for h in held.values() for i in h.line_ids])  # one read for all held moves
        for plan in plans:
            def reject(msg: str, rule: str, extra: Mapping[str, Any] | None = None, *, _p: MovePlan = plan,
                       code: str = "LB-V001") -> None:
                results[_p.journal_id] = rejected(SYSTEM, _p.journal_id, run_id, msg, rule, extra, code=code)

            problems = move_problems(plan)
            period = self._period_for(periods, plan.date)
            h = held.get(plan.reference)
            if h is not None and h.state == "draft" and problems and not h.duplicates:
                # a draft left by a crashed run of a journal that fails our checks: never post it (on SQLite
                # Tryton would post it unbalanced); delete it so nothing half-done stays behind
                self.client.model("account.move", "delete", [h.move_id])
                reject("refused before posting the draft left by an earlier run (deleted): " + "; ".join(problems),
                       "tryton.move_invalid", {"problems": problems, "draft_deleted": h.move_id})
            elif h is not None:
                results[plan.journal_id] = self._already_held(plan, h, [held_lines[i] for i in h.line_ids], run_id)
            elif problems:
                reject("refused before sending: " + "; ".join(problems), "tryton.move_invalid",
                       {"problems": problems})
            elif period is None:
                reject(f"Tryton has no open period for {plan.date} — create the fiscal year/periods in Tryton",
                       "tryton.period_missing")
            elif period.state != "open":
                reject(f"Tryton period {period.name} is {period.state}; refused before sending — post into the next "
                       "open period (late-item policy) or have the accountant reopen it", "tryton.period_closed",
                       {"period": period.name, "period_state": period.state}, code="LB-V006")
            elif period.name != plan.period and plan.period:
                reject(f"entry date {plan.date} is in Tryton period {period.name}, not the journal's period "
                       f"{plan.period} — fix the entry date", "tryton.period_mismatch")
            else:
                ready.append((plan, period.id))
        # drafts found by reference (crash between create and post) are posted with the new ones
        drafts = [(held[p.reference].move_id, p) for p in plans
                  if p.reference in held and held[p.reference].state == "draft"
                  and results[p.journal_id].status is PostStatus.PENDING]
        created = self._create(ready, chart, results, run_id)
        self._post([*drafts, *created], results, run_id)
        return [results[p.journal_id] for p in plans]

    def _held(self, references: Sequence[str]) -> dict[str, _Held]:
        out: dict[str, _Held] = {}
        for chunk in chunks(list(references), 500):
            rows = self.client.search_read("account.move", [("company", "=", self.company),
                                                            ("description", "in", chunk)],
                                           ["description", "state", "number", "lines"])
            for r in rows:
                ref = str(r["description"])
                held = _Held(int(r["id"]), str(r["state"]), r.get("number"), [int(i) for i in r["lines"]])
                if ref in out:  # two moves with one reference: only a human could have made the second
                    out[ref].duplicates.append(held)
                else:
                    out[ref] = held
        return out

    def _lines(self, line_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        rows = self.client.read("account.move.line", list(line_ids),
                                ["move", "account", "debit", "credit", "second_currency", "amount_second_currency"])
        return {int(r["id"]): r for r in rows}

    def _already_held(self, plan: MovePlan, h: _Held, lines: Sequence[Mapping[str, Any]], run_id: str
                      ) -> PostResult:
        if h.duplicates:
            return PostResult(plan.journal_id, PostStatus.REJECTED, h.number or f"move#{h.move_id}", ConflictError(
                f"{SYSTEM}: journal {plan.journal_id}: Tryton holds {1 + len(h.duplicates)} moves with reference "
                f"{plan.reference} (ids {h.move_ids}) — keep one, cancel the others in Tryton",
                code="LB-C001", details={"journal_id": plan.journal_id, "run_id": run_id, "move_ids": h.move_ids}))
        held_sig = move_signature([(int(r["account"]), r["debit"], r["credit"],
                                    r["amount_second_currency"] if r.get("second_currency") else None)
                                   for r in lines])
        if held_sig != plan_signature(plan):
            return PostResult(plan.journal_id, PostStatus.REJECTED, h.number or f"move#{h.move_id}", ConflictError(
                f"{SYSTEM}: journal {plan.journal_id} is already in Tryton (move {h.number or h.move_id}, "
                f"{h.state}) with different lines; posted entries are never edited — post a reversal and a new "
                "journal with a new id", code="LB-C001",
                details={"journal_id": plan.journal_id, "run_id": run_id, "move_id": h.move_id}))
        if h.state == "posted":
            return PostResult(plan.journal_id, PostStatus.POSTED, h.number)
        return PostResult(plan.journal_id, PostStatus.PENDING, f"move#{h.move_id}")  # draft: posted below

    def _create(self, ready: list[tuple[MovePlan, int]], chart: TrytonChart, results: dict[str, PostResult],
                run_id: str) -> list[tuple[int, MovePlan]]:
        created: list[tuple[int, MovePlan]] = []
        for chunk in chunks(ready, self.batch_size):
            values = [p.values(company=self.company, journal=chart.journal_id, period_id=pid) for p, pid in chunk]
            try:
                ids = self.client.create("account.move", values, batch=self.batch_size)
            except RecordValidationError as exc:
                if len(chunk) == 1:
                    plan = chunk[0][0]
                    exc.details.update({"journal_id": plan.journal_id, "run_id": run_id})
                    results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.REJECTED, None, exc)
                else:  # a call is all-or-nothing: isolate the bad move with one call per move of this chunk
                    for single in chunk:
                        created += self._create([single], chart, results, run_id)
                continue
            created += list(zip(ids, (p for p, _ in chunk), strict=True))
        return created

    def _post(self, moves: list[tuple[int, MovePlan]], results: dict[str, PostResult], run_id: str) -> None:
        if not moves:
            return
        for chunk in chunks(moves, self.post_batch_size):
            try:
                self.client.button("account.move", "post", [mid for mid, _ in chunk])
            except RecordValidationError as exc:
                if len(chunk) == 1:
                    mid, plan = chunk[0]
                    exc.details.update({"journal_id": plan.journal_id, "run_id": run_id, "move_id": mid})
                    # leave nothing half-done: the refused draft is deleted (drafts may be); if that fails too,
                    # the next run finds it by reference and tries again
                    with contextlib.suppress(LedgerbridgeError):
                        self.client.model("account.move", "delete", [mid])
                        exc.details["draft_deleted"] = True
                    results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.REJECTED, None, exc)
                    continue
                for single in chunk:
                    self._post([single], results, run_id)
                continue
        posted = [mid for mid, p in moves if p.journal_id not in results
                  or results[p.journal_id].status is not PostStatus.REJECTED]
        numbers = {int(r["id"]): r for r in self.client.read("account.move", posted, ["number", "state"])}
        for mid, plan in moves:
            row = numbers.get(mid)
            if row is None:
                continue
            if row["state"] == "posted":
                results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.POSTED, row["number"])
            else:  # pragma: no cover - post returned without error but left the move draft
                results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.PENDING, f"move#{mid}")

    # ------------------------------------------------------------------ reading

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Posted moves held for these journal ids: totals per currency (second currency where set) and line
        count. Draft moves are not confirmed and are left out."""
        chart = self.chart()
        held = self._held([move_reference(j) for j in journal_ids])
        # every posted move carrying the reference counts: a duplicate shows up as a mismatch, never hides
        posted = {ref: ms for ref, h in held.items() if (ms := [m for m in (h, *h.duplicates) if m.state == "posted"])}
        lines = self._lines([i for ms in posted.values() for m in ms for i in m.line_ids])
        out: dict[str, ReadBack] = {}
        for ref, moves in posted.items():
            jid = journal_id_of(ref)
            if jid is None:  # pragma: no cover - references are built by move_reference
                continue
            rows = [lines[i] for m in moves for i in m.line_ids]
            out[jid] = ReadBack(target_ref=",".join(m.number or f"move#{m.move_id}" for m in moves),
                                totals=readback_totals(rows, chart.company_currency, self._currency_codes),
                                line_count=len(rows))
        return out

    def trial_balance(self, from_date: dt.date, to_date: dt.date, *, posted_only: bool = True
                      ) -> dict[str, tuple[Decimal, Decimal]]:
        """Tryton's own debit and credit totals (company currency) between two dates for every account in the
        account map, keyed by our chart code (one ``account.account.read`` with a date context). Several of our
        codes mapped to one Tryton account each show that account's totals."""
        chart = self.chart()
        ids = sorted(set(chart.accounts.values()))
        rows = self.client.model("account.account", "read", ids, ["debit", "credit"],
                                 context={"from_date": from_date, "to_date": to_date, "posted": posted_only})
        by_id = {int(r["id"]): (Decimal(r["debit"]), Decimal(r["credit"])) for r in rows}
        return {code: by_id[tid] for code, tid in sorted(chart.accounts.items())}

    def period_status(self, entity: str, period: str) -> str | None:
        """State of the Tryton period starting on the first day of ``period`` ("YYYY-MM"), or None when this
        target does not keep ``entity`` or Tryton has no such period."""
        if entity != self.legal_entity_id:
            return None
        start = dt.date.fromisoformat(f"{period}-01")
        rows = self.client.search_read("account.period", [("company", "=", self.company), ("type", "=", "standard"),
                                                          ("start_date", "=", start)], ["state"], limit=1)
        return PERIOD_STATES.get(str(rows[0]["state"]), str(rows[0]["state"])) if rows else None

    def set_period_status(self, entity: str, period: str, status: str, on: dt.date | None = None) -> None:
        """Mirror our period state into Tryton (the period-close flow calls this hook): ``closed`` -> ``close``,
        ``locked`` -> ``close`` then ``lock_``, ``open`` -> ``reopen``; ``closing`` leaves Tryton open (it has no
        such state). Tryton refuses to close a period holding draft moves (``RecordValidationError`` naming them);
        a locked period cannot be reopened."""
        if entity != self.legal_entity_id:
            return
        start = dt.date.fromisoformat(f"{period}-01")
        rows = self.client.search_read("account.period", [("company", "=", self.company), ("type", "=", "standard"),
                                                          ("start_date", "=", start)], ["state"], limit=1)
        if not rows:
            raise RecordValidationError(f"{SYSTEM}: Tryton has no period {period} for {entity} — create the fiscal "
                                        "year and its periods in Tryton", code="LB-V001",
                                        details={"rule": "tryton.period_missing", "period": period})
        pid, state = int(rows[0]["id"]), str(rows[0]["state"])
        steps: list[str] = []
        if status in ("closed", "locked") and state == "open":
            steps.append("close")
        if status == "locked" and state != "locked":
            steps.append("lock_")
        if status in ("open", "closing") and state == "closed":
            steps.append("reopen")
        if status in ("open", "closing") and state == "locked":
            raise RecordValidationError(f"{SYSTEM}: period {period} is locked in Tryton and cannot be reopened",
                                        code="LB-V001", details={"rule": "tryton.period_locked", "period": period})
        for step in steps:
            self.client.button("account.period", step, [pid])

    # ------------------------------------------------------------------ master data (search-before-create)

    def push_customers(self, customers: Iterable[Customer]) -> dict[str, int]:
        """One ``party.party`` per customer, keyed by party ``code`` = customer id, with an invoice address.
        Returns customer id -> party id (also remembered for journal lines and invoices)."""
        custs = list(customers)
        ids = self._ensure_parties([(c.id, c.name) for c in custs])
        self.parties.update(ids)
        return ids

    def _ensure_parties(self, keyed: Sequence[tuple[str, str]]) -> dict[str, int]:
        c = self.client
        codes = [k for k, _ in keyed]
        found: dict[str, int] = {}
        for chunk in chunks(codes, 500):
            found.update({str(r["code"]): int(r["id"])
                          for r in c.search_read("party.party", [("code", "in", chunk)], ["code"])})
        new = [(k, n) for k, n in keyed if k not in found]
        if new:
            ids = c.create("party.party", [{"code": k, "name": n, "addresses": [["create", [{}]]]}
                                           for k, n in new], batch=self.batch_size)
            found.update({k: i for (k, _), i in zip(new, ids, strict=True)})
        return {k: found[k] for k in codes}

    def push_projects(self, projects: Iterable[Project], *, customers: Mapping[str, int] | None = None
                      ) -> dict[str, int]:
        """One ``project.work`` (type project, timesheets on, invoiced on timesheets) per project, keyed by
        ``comment`` = ``ledgerbridge:<project id>``. Returns project id -> ``timesheet.work`` id."""
        c = self.client
        projs = list(projects)
        parties = dict(self.parties)
        parties.update(customers or {})
        missing = sorted({p.customer_id for p in projs if p.customer_id not in parties})
        if missing:
            parties.update(self._lookup_parties(missing))
        still = sorted({p.customer_id for p in projs if p.customer_id not in parties})
        if still:
            raise RecordValidationError(f"{SYSTEM}: projects name customers not in Tryton: {still} — push the "
                                        "customers first", code="LB-V001", details={"customers": still})
        keys = [PROJECT_KEY + p.id for p in projs]
        found = {str(r["comment"]): int(r["id"]) for r in c.search_read(
            "project.work", [("comment", "in", keys), ("type", "=", "project")], ["comment"])}
        new = [p for p in projs if PROJECT_KEY + p.id not in found]
        if new:
            ids = c.create("project.work", [{
                "name": p.name, "type": "project", "company": self.company, "party": parties[p.customer_id],
                "timesheet_available": True, "project_invoice_method": "timesheet", "comment": PROJECT_KEY + p.id,
            } for p in new], batch=self.batch_size)
            found.update({PROJECT_KEY + p.id: i for p, i in zip(new, ids, strict=True)})
        rows = c.read("project.work", [found[k] for k in keys], ["comment", "timesheet_works"])
        out: dict[str, int] = {}
        for r in rows:
            pid = str(r["comment"])[len(PROJECT_KEY):]
            if not r["timesheet_works"]:  # pragma: no cover - timesheet_available=True creates one
                raise PermanentError(f"{SYSTEM}: project {pid} has no timesheet work", code="LB-P001")
            out[pid] = int(r["timesheet_works"][0])
        for p in projs:
            self.project_parties[p.id] = parties[p.customer_id]
        self.works.update(out)
        return out

    def _lookup_parties(self, codes: Sequence[str]) -> dict[str, int]:
        rows = self.client.search_read("party.party", [("code", "in", list(codes))], ["code"])
        found = {str(r["code"]): int(r["id"]) for r in rows}
        self.parties.update(found)
        return found

    def push_employees(self, resources: Iterable[Resource], cost_prices: Mapping[str, Decimal],
                       *, cost_date: dt.date = dt.date(2026, 1, 1)) -> dict[str, int]:
        """One ``company.employee`` per resource (party code = resource id) with its hourly cost price from
        ``cost_date``. Returns resource id -> employee id."""
        c = self.client
        res = list(resources)
        parties = self._ensure_parties([(r.id, r.name) for r in res])
        rows = c.search_read("company.employee", [("party", "in", list(parties.values())),
                                                  ("company", "=", self.company)], ["party"])
        by_party = {int(r["party"]): int(r["id"]) for r in rows}
        new = [r for r in res if parties[r.id] not in by_party]
        if new:
            for r in new:
                if r.id not in cost_prices:
                    raise RecordValidationError(f"{SYSTEM}: resource {r.id} has no cost price — give one",
                                                code="LB-V001", details={"resource": r.id})
            ids = c.create("company.employee", [{
                "party": parties[r.id], "company": self.company,
                "cost_prices": [["create", [{"date": cost_date, "cost_price": cost_prices[r.id]}]]],
            } for r in new], batch=self.batch_size)
            by_party.update({parties[r.id]: i for r, i in zip(new, ids, strict=True)})
        out = {r.id: by_party[parties[r.id]] for r in res}
        self.employees.update(out)
        return out

    def push_service_product(self, code: str, name: str, list_price: Decimal) -> int:
        """A service ``product.product`` sold per hour, keyed by its ``code``."""
        c = self.client
        found = c.search("product.product", [("code", "=", code)], limit=1)
        if found:
            return found[0]
        hour = c.search("product.uom", [("symbol", "=", "h")], limit=1) or c.search(
            "product.uom", [("name", "=", "Hour")], limit=1)
        if not hour:
            raise PermanentError(f"{SYSTEM}: unit of measure 'Hour' not found", code="LB-P004")
        tpl = c.create("product.template", [{
            "name": name, "code": code, "type": "service", "default_uom": hour[0], "list_price": list_price,
            "products": [["create", [{}]]]}])[0]
        return int(c.read("product.template", [tpl], ["products"])[0]["products"][0])

    def push_analytic_accounts(self, dimension: str, values: Iterable[DimensionValue]) -> dict[str, int]:
        """A root analytic account per dimension and one opened analytic account per value (keyed by code).
        Journal lines carrying that dimension get analytic lines on these accounts."""
        c = self.client
        vals = list(values)
        root_ids = c.search("analytic_account.account", [("code", "=", dimension), ("type", "=", "root"),
                                                         ("company", "=", self.company)], limit=1)
        root = root_ids[0] if root_ids else c.create("analytic_account.account", [{
            "name": dimension, "code": dimension, "type": "root", "state": "opened", "company": self.company}])[0]
        found = {str(r["code"]): int(r["id"]) for r in c.search_read(
            "analytic_account.account", [("root", "=", root), ("code", "in", [v.code for v in vals])], ["code"])}
        new = [v for v in vals if v.code not in found]
        if new:
            ids = c.create("analytic_account.account", [{
                "name": v.name, "code": v.code, "type": "normal", "state": "opened", "root": root, "parent": root,
                "company": self.company} for v in new], batch=self.batch_size)
            found.update({v.code: i for v, i in zip(new, ids, strict=True)})
        out = {v.code: found[v.code] for v in vals}
        self.analytic.update({(dimension, k): v for k, v in out.items()})
        return out

    # ------------------------------------------------------------------ invoices

    def _invoice_context(self, invoices: Sequence[Invoice]) -> InvoiceContext:
        chart = self.chart()
        c = self.client
        missing = sorted({i.customer_id for i in invoices} - set(self.parties))
        if missing:
            self._lookup_parties(missing)
        party_ids = sorted({self.parties[i.customer_id] for i in invoices if i.customer_id in self.parties})
        addresses: dict[int, int] = {}
        for r in c.search_read("party.address", [("party", "in", party_ids)], ["party"], order=[("id", "ASC")]):
            addresses.setdefault(int(r["party"]), int(r["id"]))
        if self._receivable is None:
            cfg = c.model("account.configuration", "search", [], 0, 1, None)
            rec = c.read("account.configuration", cfg, ["default_account_receivable"]) if cfg else []
            self._receivable = int(rec[0]["default_account_receivable"]) if rec and rec[0].get(
                "default_account_receivable") else chart.accounts.get("1100")
            if self._receivable is None:
                raise PermanentError(f"{SYSTEM}: no receivable account: map 1100 in account_map or set the default "
                                     "receivable in Tryton's account configuration", code="LB-P004")
            if self.payment_term_name:
                term = c.search("account.invoice.payment_term", [("name", "=", self.payment_term_name)], limit=1)
                self._payment_term = term[0] if term else None
        return InvoiceContext(company=self.company, journal=self._journals[self.invoice_journal_code],
                              receivable_account=chart.accounts.get("1100", self._receivable),
                              currencies=chart.currencies, parties=self.parties, addresses=addresses,
                              revenue_accounts=chart.accounts, payment_term=self._payment_term, taxes=self.tax_map)

    def post_invoices(self, invoices: Sequence[Invoice]) -> list[InvoicePostResult]:
        """Create (lookup by ``reference`` = invoice id first) and post customer invoices; read back number and
        state. A posted invoice whose untaxed/tax/total amounts differ from ours is reported as a conflict."""
        c = self.client
        invs = list(invoices)
        ctx = self._invoice_context(invs)
        results: dict[str, InvoicePostResult] = {}
        existing = self._invoices_by_reference([i.id for i in invs])
        todo: list[Invoice] = []
        for inv in invs:
            if inv.id in existing:
                continue
            problems = invoice_problems(inv, ctx)
            if problems:
                results[inv.id] = InvoicePostResult(inv.id, PostStatus.REJECTED, error=RecordValidationError(
                    f"{SYSTEM}: invoice {inv.id} refused before sending: {'; '.join(problems)}", code="LB-V001",
                    details={"invoice_id": inv.id, "rule": "tryton.invoice_invalid", "problems": problems}))
            else:
                todo.append(inv)
        for chunk in chunks(todo, self.batch_size):
            try:
                ids = c.create("account.invoice", [invoice_to_values(i, ctx) for i in chunk])
                existing.update({i.id: {"id": t, "state": "draft"} for i, t in zip(chunk, ids, strict=True)})
            except RecordValidationError:
                for inv in chunk:
                    try:
                        t = c.create("account.invoice", [invoice_to_values(inv, ctx)])[0]
                        existing[inv.id] = {"id": t, "state": "draft"}
                    except RecordValidationError as exc:
                        exc.details["invoice_id"] = inv.id
                        results[inv.id] = InvoicePostResult(inv.id, PostStatus.REJECTED, error=exc)
        # Tryton numbers invoices in date order per sequence and refuses an invoice dated before one already
        # numbered: post oldest first
        to_post = [int(existing[i.id]["id"]) for i in sorted(invs, key=lambda i: (i.invoice_date, i.id))
                   if i.id in existing and existing[i.id]["state"] in ("draft", "validated")]
        if to_post:
            try:
                c.skipping_warnings(partial(c.button, "account.invoice", "post", to_post))
            except RecordValidationError:
                for tid in to_post:
                    try:
                        c.skipping_warnings(partial(c.button, "account.invoice", "post", [tid]))
                    except RecordValidationError as exc:
                        inv_id = next(k for k, v in existing.items() if int(v["id"]) == tid)
                        exc.details["invoice_id"] = inv_id
                        results[inv_id] = InvoicePostResult(inv_id, PostStatus.REJECTED, tryton_id=tid, error=exc)
        held = self.read_invoices([i.id for i in invs if i.id not in results])
        for inv in invs:
            if inv.id in results:
                continue
            h = held.get(inv.id)
            if h is None:  # pragma: no cover - created above
                continue
            diffs = [f"{name}: ours {want}, Tryton {h[key]}" for name, key, want in (
                ("net", "untaxed_amount", inv.net_total), ("tax", "tax_amount", inv.tax_total),
                ("total", "total_amount", inv.total)) if h[key] != want]
            if diffs:
                results[inv.id] = InvoicePostResult(inv.id, PostStatus.REJECTED, h["number"], h["state"], h["id"],
                                                ConflictError(f"{SYSTEM}: invoice {inv.id} ({h['number']}) differs "
                                                              f"from ours: {'; '.join(diffs)} — credit it in Tryton "
                                                              "and re-bill", code="LB-C001",
                                                              details={"invoice_id": inv.id}))
            elif h["state"] in ("posted", "paid"):
                results[inv.id] = InvoicePostResult(inv.id, PostStatus.POSTED, h["number"], h["state"], h["id"])
            else:
                results[inv.id] = InvoicePostResult(inv.id, PostStatus.PENDING, h["number"], h["state"], h["id"])
        return [results[i.id] for i in invs]

    # the InvoiceTarget contract of the billing flow (ledgerbridge.connectors.base.InvoiceTarget)

    def create_invoice(self, inv: Invoice) -> Any:
        """Create and post one invoice, idempotent on ``inv.id``; returns ``base.InvoiceResult`` with Tryton's
        number and the canonical status. ``books_ledger`` is True: posting the invoice books its receivable move in
        Tryton's own ledger. A refusal raises its error (``RecordValidationError``, ``ConflictError``...)."""
        (res,) = self.post_invoices([inv])
        if res.error is not None:
            raise res.error
        return self._invoice_result(inv.id, res.number, res.state, res.tryton_id)

    def invoice_status(self, keys: Sequence[str]) -> dict[str, Any]:
        """``base.InvoiceResult`` per invoice key Tryton holds (keys it does not hold are absent)."""
        return {k: self._invoice_result(k, r.get("number"), r.get("state"), int(r["id"]))
                for k, r in self.read_invoices(keys).items()}

    @staticmethod
    def _invoice_result(key: str, number: str | None, state: str | None, tryton_id: int | None) -> Any:
        from ledgerbridge.connectors.base import InvoiceResult  # the billing contract (added with the billing flow)

        return InvoiceResult(key=key, number=number, status=INVOICE_STATES.get(str(state), str(state)),
                             target_ref=f"account.invoice,{tryton_id}" if tryton_id else None, books_ledger=True)

    def _invoices_by_reference(self, refs: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(refs), 500):
            for r in self.client.search_read("account.invoice", [("reference", "in", chunk), ("type", "=", "out"),
                                                                 ("company", "=", self.company),
                                                                 ("state", "!=", "cancelled")],
                                             ["reference", "state"]):
                out[str(r["reference"])] = r
        return out

    def read_invoices(self, invoice_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """invoice id -> ``{id, number, state, untaxed_amount, tax_amount, total_amount, move}`` from Tryton."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(invoice_ids), 500):
            for r in self.client.search_read(
                    "account.invoice", [("reference", "in", chunk), ("type", "=", "out"),
                                        ("company", "=", self.company), ("state", "!=", "cancelled")],
                    ["reference", "number", "state", "untaxed_amount", "tax_amount", "total_amount", "move"]):
                out[str(r["reference"])] = r
        return out

    # ------------------------------------------------------------------ timesheets

    def read_time_entries(self, cursor: TimesheetCursor | None, *, overlap: dt.timedelta = dt.timedelta(seconds=2),
                          page_size: int = 500, max_pages: int | None = None) -> TimesheetRead:
        """Timesheet lines changed since ``cursor`` (minus ``overlap``: lines committed late with an earlier
        timestamp are caught again; the inbox drops repeats by (id, version)), ordered by
        ``(last_modified_at, id)`` and paged with a keyset cursor. A line our model refuses (e.g. more than 24 h)
        is returned in ``rejected`` with the reason, never dropped; the cursor moves past it."""
        c = self.client
        projects = {w: p for p, w in self.works.items()}
        resources = {e: r for r, e in self.employees.items()}
        domain: list[Any] = [("company", "=", self.company)]
        if cursor is not None:
            domain.append(("last_modified_at", ">=", cursor.modified_at - overlap))
        fields = ["work", "employee", "date", "duration", "description", "last_modified_at"]
        out: list[TimeEntry] = []
        rejected: list[RecordValidationError] = []
        last = cursor
        page_key: tuple[dt.datetime, int] | None = None
        pages = 0
        while max_pages is None or pages < max_pages:
            dom = list(domain)
            if page_key is not None:
                dom.append(["OR", [("last_modified_at", ">", page_key[0])],
                            [("last_modified_at", "=", page_key[0]), ("id", ">", page_key[1])]])
            rows = c.search_read("timesheet.line", dom, fields, limit=page_size,
                                 order=[("last_modified_at", "ASC"), ("id", "ASC")])
            pages += 1
            if not rows:
                break
            unknown_works = {int(r["work"]) for r in rows} - set(projects)
            if unknown_works:
                projects.update(self._work_projects(sorted(unknown_works)))
            unknown_emps = {int(r["employee"]) for r in rows} - set(resources)
            if unknown_emps:
                resources.update(self._employee_resources(sorted(unknown_emps)))
            for r in rows:
                try:
                    out.append(timesheet_to_time_entry(r, projects=projects, resources=resources))
                except ValueError as exc:  # pydantic ValidationError is a ValueError
                    errors = exc.errors() if hasattr(exc, "errors") else []
                    why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) or str(exc)
                    rejected.append(RecordValidationError(
                        f"{SYSTEM}: timesheet line {r['id']} (employee {r['employee']}, {r['date']}, duration "
                        f"{r.get('duration')}) cannot be read as a time entry: {why} "
                        "— correct the line in Tryton; it is read again when changed", code="LB-V001",
                        details={"rule": "tryton.timesheet_invalid", "line_id": int(r["id"])}))
            tail = rows[-1]
            page_key = (tail["last_modified_at"], int(tail["id"]))
            if last is None or page_key > (last.modified_at, last.line_id):
                last = TimesheetCursor(*page_key)
            if len(rows) < page_size:
                break
        return TimesheetRead(out, last, rejected)

    def _work_projects(self, work_ids: Sequence[int]) -> dict[int, str]:
        rows = self.client.read("timesheet.work", list(work_ids), ["origin"])
        origins = {int(r["id"]): r.get("origin") for r in rows}
        pw = {int(str(o).split(",")[1]): w for w, o in origins.items() if o and str(o).startswith("project.work,")}
        out: dict[int, str] = {}
        if pw:
            for r in self.client.read("project.work", sorted(pw), ["comment"]):
                comment = str(r.get("comment") or "")
                if comment.startswith(PROJECT_KEY):
                    out[pw[int(r["id"])]] = comment[len(PROJECT_KEY):]
        return out

    def _employee_resources(self, employee_ids: Sequence[int]) -> dict[int, str]:
        rows = self.client.read("company.employee", list(employee_ids), ["party.code"])
        return {int(r["id"]): str(r["party."]["code"]) for r in rows if r.get("party.") and r["party."].get("code")}
