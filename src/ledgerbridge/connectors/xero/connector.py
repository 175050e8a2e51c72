"""Xero as an ERP target: manual journals (LedgerTarget), ACCREC invoices (InvoiceTarget), contacts and tracking
options (master data), lock dates (period status), GL journal sums (reconciliation).

Posting (``post_journals``), per run:

1. resolve the organisation once (base currency, lock dates, accounts, tracking categories, tax rates) and map
   every journal to a ManualJournal; **check it before sending**: accounts mapped, known and active, cents only,
   balanced in the base currency, at most two tracking categories, a foreign-currency line has a base amount;
2. refuse a journal dated on or before a lock date (Xero would refuse it; the late-item policy redates lines of a
   period closed in ledgerbridge before they get here);
3. look up the journal id in the narration tag ``[lb:<id>]`` of the ManualJournals Xero holds, read incrementally
   with ``If-Modified-Since`` and ``page`` (a full read once per connector, then only what changed): same lines ->
   ``posted`` again; other lines -> :class:`ConflictError`;
4. ``PUT /ManualJournals?summarizeErrors=false`` in batches of 50 with a deterministic ``Idempotency-Key`` (hash of
   the batch's journal ids and bodies): Xero answers each element OK or with its ``ValidationErrors``, so a bad
   journal is rejected alone; a crashed run re-sends the same key and gets the original answer, no second copy;
5. ``read_back`` reads the held journals again: totals per currency and line count.

Invoices: ``PUT /Invoices?summarizeErrors=false`` (ACCREC, AUTHORISED, ``Reference`` = our key) after a lookup by
``Reference``; Xero's ``InvoiceNumber`` and ``Status`` are read back. Master data: contacts keyed by
``AccountNumber``, projects and dimension values as tracking options.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from ledgerbridge.connectors.xero.client import API_URL, CONNECTIONS_URL, IDENTITY_URL, SYSTEM, XeroClient
from ledgerbridge.connectors.xero.mapping import (
    INVOICE_STATUS,
    ManualJournalPlan,
    XeroChart,
    contact_body,
    dumps,
    element_errors,
    held_signature,
    idempotency_key,
    invoice_body,
    invoice_differences,
    invoice_problems,
    journal_id_of,
    journal_to_manual,
    lock_date,
    money,
    parse_xero_date,
    period_state,
    readback_totals,
)
from ledgerbridge.errors import ConflictError, LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Customer, DimensionValue, Invoice, Project

WRITE_BATCH = 50  # Xero's advice for batch PUT/POST
CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    reads=frozenset({"invoice"}),
    writes=frozenset({"journal_entry", "invoice", "customer", "project", "dimension_value"}),
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.IDEMPOTENCY_KEY,
    paging=PagingKind.PAGE_NUMBER,
    limits=Limits(requests_per_second=1.0, concurrency=5),
    batch_sizes=BatchSizes(read=100, write=WRITE_BATCH),
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)
GONE = frozenset({"DELETED", "VOIDED"})


class _Index:
    """Records of one Xero resource held by our key, kept current with ``If-Modified-Since`` reads."""

    def __init__(self, client: XeroClient, resource: str, key_of: Callable[[Mapping[str, Any]], str | None],
                 params: Mapping[str, Any] | None = None, since: dt.datetime | None = None) -> None:
        self.client, self.resource, self.key_of, self.params = client, resource, key_of, dict(params or {})
        self.rows: dict[str, dict[str, Any]] = {}  # Xero id -> row
        self.by_key: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # our key -> Xero id -> row
        self.since: dt.datetime | None = since  # lookup_since: history before it is never read
        self.id_field = f"{resource[:-1]}ID"

    def refresh(self) -> None:
        since = self.since - dt.timedelta(seconds=1) if self.since else None  # overlap: same-second changes
        for row in self.client.get_pages(self.resource, self.resource, params=self.params, modified_since=since):
            self.add(row)

    def add(self, row: Mapping[str, Any]) -> None:
        rid = str(row[self.id_field])
        self.rows[rid] = dict(row)
        key = self.key_of(row)
        if key is not None:
            self.by_key[key][rid] = self.rows[rid]
        stamp = XeroClient.updated(row)
        if stamp is not None and (self.since is None or stamp > self.since):
            self.since = stamp

    def live(self, key: str) -> list[dict[str, Any]]:
        return [r for r in self.by_key.get(key, {}).values() if str(r.get("Status")) not in GONE]


class XeroLedger:
    """Posting, billing and master-data target for one Xero organisation (= one legal entity).

    ``account_map``: our chart code -> Xero ``AccountCode`` (default: the same code). ``tracking_map``: our
    dimension -> Xero tracking category name (at most two; other dimensions are not sent). ``tax_map``: our tax
    code -> Xero ``TaxType``. ``revenue_account``: our code for invoice lines without their own.
    """

    def __init__(self, client: XeroClient, *, legal_entity_id: str, account_map: Mapping[str, str] | None = None,
                 tracking_map: Mapping[str, str] | None = None, tax_map: Mapping[str, str] | None = None,
                 revenue_account: str = "4000", batch_size: int = WRITE_BATCH,
                 lookup_since: dt.date | None = None) -> None:
        if not 1 <= batch_size <= WRITE_BATCH:
            raise ValueError(f"batch_size must be 1..{WRITE_BATCH}")
        if tracking_map and len(tracking_map) > 2:
            raise PermanentError(f"{SYSTEM}: Xero has at most 2 active tracking categories; tracking_map names "
                                 f"{len(tracking_map)}", code="LB-P001")
        self.client = client
        self.legal_entity_id = legal_entity_id
        self.account_map = dict(account_map or {})
        self.tracking_map = dict(tracking_map if tracking_map is not None else {"project": "Project"})
        self.tax_map = dict(tax_map or {})
        self.revenue_account = revenue_account
        self.batch_size = batch_size
        self._chart: XeroChart | None = None
        since = dt.datetime.combine(lookup_since, dt.time(), dt.UTC) if lookup_since else None
        self.journals = _Index(client, "ManualJournals", lambda r: journal_id_of(r.get("Narration")), since=since)
        self.invoices = _Index(client, "Invoices", lambda r: str(r["Reference"])
                               if r.get("Type") == "ACCREC" and r.get("Reference") else None, since=since)
        self._gl: list[dict[str, Any]] = []  # Xero's GL journal feed read so far (append-only, by JournalNumber)
        self.contacts = _Index(client, "Contacts", lambda r: str(r["AccountNumber"]) if r.get("AccountNumber")
                               else None)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, client_secret: str, refresh_token: str | None = None,
                     system: str = SYSTEM, **client_kw: Any) -> XeroLedger:
        """Build from a system's ``options`` (docs/connectors/xero.md) and its secrets; every bad option is
        reported at once, by key."""
        problems: list[str] = []
        for key in ("client_id", "legal_entity_id"):
            if not isinstance(options.get(key), str) or not options.get(key):
                problems.append(f"options.{key} is required (text)")
        for key in ("account_map", "tracking_map", "tax_map"):
            val = options.get(key)
            if val is not None and (not isinstance(val, Mapping) or not all(isinstance(v, str) for v in val.values())):
                problems.append(f"options.{key} must map text to text")
        ints = {k: options.get(k) for k in ("calls_per_minute", "concurrency", "batch_size", "day_reserve")
                if options.get(k) is not None}
        problems += [f"options.{k} must be a non-negative integer" for k, v in ints.items()
                     if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if not client_secret:
            problems.append("secrets.client_secret is empty — reference it with ${env:...} or ${file:...}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        client = XeroClient(
            str(options["client_id"]), client_secret, tenant_id=options.get("tenant_id"),
            refresh_token=refresh_token, api_url=str(options.get("api_url", API_URL)),
            token_url=str(options.get("token_url", IDENTITY_URL)),
            connections_url=str(options.get("connections_url", CONNECTIONS_URL)), system=system,
            calls_per_minute=int(ints.get("calls_per_minute") or 60), window=float(options.get("window_seconds", 60)),
            concurrency=int(ints.get("concurrency") or 5), headroom=float(options.get("headroom", 0.9)),
            day_reserve=int(ints.get("day_reserve") or 0), timeout=float(options.get("timeout", 60)), **client_kw)
        if options.get("scopes"):
            client.scopes = str(options["scopes"])
        since = options.get("lookup_since")
        return cls(client, legal_entity_id=str(options["legal_entity_id"]),
                   account_map=options.get("account_map"), tracking_map=options.get("tracking_map"),
                   tax_map=options.get("tax_map"), revenue_account=str(options.get("revenue_account", "4000")),
                   batch_size=int(ints.get("batch_size") or WRITE_BATCH),
                   lookup_since=dt.date.fromisoformat(str(since)) if since else None)

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ organisation

    def organisation(self) -> dict[str, Any]:
        (org,) = self.client.get("Organisation")["Organisations"]
        return dict(org)

    def chart(self, *, refresh: bool = False) -> XeroChart:
        if self._chart is None or refresh:
            org = self.organisation()
            accounts = {str(a["Code"]): a for a in self.client.get("Accounts")["Accounts"] if a.get("Code")}
            amap = self.account_map or {code: code for code in accounts}
            rates = {str(r["TaxType"]): r for r in self.client.get("TaxRates")["TaxRates"]}
            self._chart = XeroChart(base_currency=str(org["BaseCurrency"]), account_map=dict(amap),
                                    accounts=accounts, tracking_map=self.tracking_map, tax_map=self.tax_map,
                                    tax_rates=rates)
            self._load_tracking()
        return self._chart

    def _load_tracking(self) -> dict[str, dict[str, Any]]:
        cats = {str(c["Name"]): c for c in self.client.get("TrackingCategories")["TrackingCategories"]}
        if self._chart is not None:
            self._chart.tracking = {n: {str(o["Name"]): str(o["TrackingOptionID"]) for o in c.get("Options") or []
                                        if o.get("Status", "ACTIVE") == "ACTIVE"} for n, c in cats.items()}
        return cats

    def ensure_tracking(self, category: str, options: Iterable[str]) -> dict[str, str]:
        """The tracking category ``category`` (created when missing) with an ACTIVE option per name (created when
        missing, one PUT per option as the API has it). Returns option name -> TrackingOptionID. Costs no call
        when every option is already known."""
        chart = self.chart()
        wanted = sorted(set(options))
        if category not in chart.tracking or any(n not in chart.tracking[category] for n in wanted):
            cats = self._load_tracking()  # read again: another run or a person may have added them meanwhile
            if category not in cats:
                body = self.client.write("PUT", "TrackingCategories", {"Name": category},
                                         key=idempotency_key("tc", category))
                cats[category] = body["TrackingCategories"][0]
                chart.tracking[category] = {}
            cat_id = str(cats[category]["TrackingCategoryID"])
            for name in wanted:
                if name not in chart.tracking[category]:
                    body = self.client.write("PUT", f"TrackingCategories/{cat_id}/Options", {"Name": name},
                                             key=idempotency_key("to", category, name))
                    chart.tracking[category][name] = str(body["Options"][0]["TrackingOptionID"])
        return {n: chart.tracking[category][n] for n in wanted}

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        require_run_entity(run, self.legal_entity_id, SYSTEM)
        chart = self.chart()
        period_lock, year_lock = lock_date(self.organisation())
        locked_until = max((d for d in (period_lock, year_lock) if d is not None), default=None)
        plans = [journal_to_manual(j, chart) for j in run.journals]
        self.journals.refresh()
        results: dict[str, PostResult] = {}
        ready: list[ManualJournalPlan] = []
        for plan in plans:
            held = self.journals.live(plan.journal_id)
            gone = self.journals.by_key.get(plan.journal_id, {})
            if held:
                results[plan.journal_id] = self._already_held(plan, held, run.run_id)
            elif gone:  # every copy voided/deleted in Xero: someone took it out on purpose — never re-create silently
                ids = sorted(gone)
                results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.REJECTED, ",".join(ids),
                                                      ConflictError(
                    f"{SYSTEM}: journal {plan.journal_id} was posted to Xero and then voided/deleted there ({ids}) — "
                    "decide in stewardship: post it under a new journal id, or leave it out", code="LB-C001",
                    details={"journal_id": plan.journal_id, "run_id": run.run_id, "manual_journal_ids": ids}))
            elif plan.problems:
                results[plan.journal_id] = self._reject(plan, run.run_id, "refused before sending: "
                                                        + "; ".join(plan.problems), "xero.journal_invalid",
                                                        problems=list(plan.problems))
            elif locked_until is not None and plan.date <= locked_until:
                results[plan.journal_id] = self._reject(
                    plan, run.run_id, f"dated {plan.date}, on or before Xero's lock date {locked_until}; refused "
                    "before sending — close the period in ledgerbridge so the late-item policy redates its lines, or "
                    "have the adviser move the lock date", "xero.period_locked", lock_date=str(locked_until))
            else:
                ready.append(plan)
        needed: dict[str, set[str]] = defaultdict(set)
        for plan in ready:
            for ln in plan.body["JournalLines"]:
                for t in ln.get("Tracking") or []:
                    needed[t["Name"]].add(t["Option"])
        for cat, names in needed.items():
            self.ensure_tracking(cat, names)
        for i in range(0, len(ready), self.batch_size):
            self._create(ready[i:i + self.batch_size], results, run.run_id)
        return [results[p.journal_id] for p in plans]

    @staticmethod
    def _reject(plan: ManualJournalPlan, run_id: str, msg: str, rule: str, **extra: Any) -> PostResult:
        return rejected(SYSTEM, plan.journal_id, run_id, msg, rule, extra)

    def _already_held(self, plan: ManualJournalPlan, held: list[dict[str, Any]], run_id: str) -> PostResult:
        ids = [str(h["ManualJournalID"]) for h in held]
        if len(held) > 1:
            return PostResult(plan.journal_id, PostStatus.REJECTED, ",".join(ids), ConflictError(
                f"{SYSTEM}: journal {plan.journal_id}: Xero holds {len(held)} manual journals tagged with it ({ids}) "
                "— void all but one in Xero", code="LB-C001", details={"journal_id": plan.journal_id,
                                                                       "run_id": run_id, "manual_journal_ids": ids}))
        if held_signature(held[0]) != plan.signature:
            return PostResult(plan.journal_id, PostStatus.REJECTED, ids[0], ConflictError(
                f"{SYSTEM}: journal {plan.journal_id} is already in Xero (manual journal {ids[0]}) with other lines; "
                "posted entries are never edited — post a reversal and a new journal with a new id",
                code="LB-C001", details={"journal_id": plan.journal_id, "run_id": run_id}))
        if str(held[0].get("Status")) == "POSTED":
            return PostResult(plan.journal_id, PostStatus.POSTED, ids[0])
        return PostResult(plan.journal_id, PostStatus.PENDING, ids[0])  # a DRAFT someone else made

    def _create(self, chunk: list[ManualJournalPlan], results: dict[str, PostResult], run_id: str) -> None:
        key = idempotency_key("mj", self.legal_entity_id,
                              *(f"{p.journal_id}:{hashlib.sha256(dumps(p.body)).hexdigest()}" for p in chunk))
        try:
            body = self.client.write("PUT", "ManualJournals", {"ManualJournals": [p.body for p in chunk]}, key=key,
                                     summarize_errors=False)
        except RecordValidationError as exc:
            if len(chunk) == 1:  # the whole request refused: this one journal is the reason
                exc.details.update({"journal_id": chunk[0].journal_id, "run_id": run_id})
                results[chunk[0].journal_id] = PostResult(chunk[0].journal_id, PostStatus.REJECTED, None, exc)
                return
            for plan in chunk:
                self._create([plan], results, run_id)
            return
        elements = body.get("ManualJournals") or []
        if len(elements) != len(chunk):
            raise PermanentError(f"{SYSTEM}: sent {len(chunk)} manual journals, Xero answered {len(elements)}",
                                 code="LB-P006", details={"run_id": run_id})
        for plan, el in zip(chunk, elements, strict=True):
            msgs = element_errors(el)
            if msgs:
                results[plan.journal_id] = self._reject(plan, run_id, "Xero refused it: " + "; ".join(msgs),
                                                        "xero.validation", validation_errors=msgs)
            else:
                self.journals.add(el)
                results[plan.journal_id] = PostResult(plan.journal_id, PostStatus.POSTED, str(el["ManualJournalID"]))

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Posted manual journals held for these ids: totals per currency and line count (every POSTED copy
        counts, so a duplicate shows up as a mismatch)."""
        chart = self.chart()
        self.journals.refresh()
        out: dict[str, ReadBack] = {}
        for jid in journal_ids:
            held = [h for h in self.journals.live(jid) if h.get("Status") == "POSTED"]
            if held:
                lines = [ln for h in held for ln in h.get("JournalLines") or []]
                out[jid] = ReadBack(target_ref=",".join(str(h["ManualJournalID"]) for h in held),
                                    totals=readback_totals(lines, chart.base_currency), line_count=len(lines))
        return out

    def period_status(self, entity: str, period: str) -> str | None:
        """From the organisation's lock dates (read now): locked / closed / closing / open."""
        if entity != self.legal_entity_id:
            return None
        return period_state(period, *lock_date(self.organisation()))

    # ------------------------------------------------------------------ reconciliation

    def gl_journals(self) -> list[dict[str, Any]]:
        """Xero's general-ledger journal feed (``GET /Journals?offset=<JournalNumber>``, 100 per call). The feed
        is append-only (a voided document adds reversing journals), so only what was added since the last read is
        fetched."""
        offset = max((int(r["JournalNumber"]) for r in self._gl), default=0)
        while True:
            rows = self.client.get("Journals", params={"offset": offset}).get("Journals") or []
            self._gl += rows
            if len(rows) < 100:
                return list(self._gl)
            offset = max(int(r["JournalNumber"]) for r in rows)

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """``{(period, our account code, base currency): (debit, credit)}`` summed from Xero's GL journals (every
        source: manual journals and invoices). Xero accounts outside the account map keep their Xero code."""
        if entity != self.legal_entity_id:
            return {}
        chart = self.chart()
        sums: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for j in self.gl_journals():
            period = parse_xero_date(str(j["JournalDate"])).strftime("%Y-%m")
            for ln in j.get("JournalLines") or []:
                code = str(ln.get("AccountCode"))
                amount = money(ln.get("NetAmount"))
                cell = sums[(period, chart.our_code(code) or code, chart.base_currency)]
                cell[0 if amount > 0 else 1] += abs(amount)
        return {k: (v[0], v[1]) for k, v in sorted(sums.items())}

    def trial_balance(self, from_date: dt.date, to_date: dt.date) -> dict[str, tuple[Decimal, Decimal]]:
        """Debit and credit per our account code between two dates (base currency), from the GL journals."""
        chart = self.chart()
        out: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for j in self.gl_journals():
            if from_date <= parse_xero_date(str(j["JournalDate"])) <= to_date:
                for ln in j.get("JournalLines") or []:
                    amount = money(ln.get("NetAmount"))
                    code = str(ln.get("AccountCode"))
                    out[chart.our_code(code) or code][0 if amount > 0 else 1] += abs(amount)
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def report_trial_balance(self, date: dt.date) -> dict[str, tuple[Decimal, Decimal]]:
        """Xero's own Trial Balance report as at ``date`` (``GET /Reports/TrialBalance``): the year-to-date balance
        per Xero account code as ``(debit, credit)`` — the report shows each account's net on one side (the
        account rows' last two cells; account title ``Name (Code)``)."""
        body = self.client.get("Reports/TrialBalance", params={"date": date.isoformat()})
        out: dict[str, tuple[Decimal, Decimal]] = {}
        for section in body["Reports"][0].get("Rows") or []:
            for row in section.get("Rows") or []:
                cells = row.get("Cells") or []
                if row.get("RowType") != "Row" or len(cells) < 5:
                    continue
                title = str(cells[0].get("Value", ""))
                code = title.rsplit("(", 1)[-1].rstrip(")") if title.endswith(")") else title
                out[code] = (money(cells[3].get("Value") or 0), money(cells[4].get("Value") or 0))
        return out

    # ------------------------------------------------------------------ master data

    def push_customers(self, customers: Iterable[Customer]) -> dict[str, str]:
        """Contacts keyed by ``AccountNumber`` = customer id: created when missing, renamed / (un)archived when
        changed (``summarizeErrors=false``: a refused contact is named, the others are kept). Returns customer id
        -> ContactID."""
        custs = list(customers)
        self.contacts.refresh()
        out: dict[str, str] = {}
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for c in custs:
            body = contact_body(c)
            held = next(iter(self.contacts.by_key.get(c.id, {}).values()), None)
            if held is None:
                new.append(body)
            else:
                out[c.id] = str(held["ContactID"])
                if (held.get("Name"), held.get("ContactStatus")) != (body["Name"], body["ContactStatus"]):
                    changed.append({**body, "ContactID": out[c.id]})
        failed: list[str] = []
        for method, todo in (("PUT", new), ("POST", changed)):
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                key = idempotency_key("ct", method, *(hashlib.sha256(dumps(b)).hexdigest() for b in chunk))
                resp = self.client.write(method, "Contacts", {"Contacts": chunk}, key=key, summarize_errors=False)
                for sent, el in zip(chunk, resp.get("Contacts") or [], strict=True):
                    msgs = element_errors(el)
                    if msgs:
                        failed.append(f"{sent['AccountNumber']}: {'; '.join(msgs)}")
                    else:
                        self.contacts.add(el)
                        out[str(sent["AccountNumber"])] = str(el["ContactID"])
        if failed:
            raise RecordValidationError(f"{SYSTEM}: Xero refused {len(failed)} contact(s): {'; '.join(failed)}",
                                        code="LB-V001", details={"refused": failed, "pushed": out})
        return out

    def push_projects(self, projects: Iterable[Project]) -> dict[str, str]:
        """One option per project (name = project id) in the tracking category mapped from dimension
        ``project``. Returns project id -> TrackingOptionID."""
        category = self.tracking_map.get("project")
        if category is None:
            raise PermanentError(f"{SYSTEM}: tracking_map has no 'project' category — projects cannot be pushed",
                                 code="LB-P001")
        return self.ensure_tracking(category, (p.id for p in projects))

    def push_dimension_values(self, values: Iterable[DimensionValue]) -> dict[str, str]:
        """Options in the tracking categories of mapped dimensions; values of unmapped dimensions are skipped.
        Returns ``dimension:code`` -> TrackingOptionID."""
        by_dim: dict[str, list[str]] = defaultdict(list)
        for v in values:
            if v.dimension in self.tracking_map:
                by_dim[v.dimension].append(v.code)
        out: dict[str, str] = {}
        for dim, codes in by_dim.items():
            out.update({f"{dim}:{k}": i for k, i in self.ensure_tracking(self.tracking_map[dim], codes).items()})
        return out

    # ------------------------------------------------------------------ invoices

    def create_invoices(self, invoices: Sequence[Invoice]) -> dict[str, InvoiceResult | LedgerbridgeError]:
        """Create ACCREC invoices, idempotent on ``inv.id`` (= ``Reference``): held ones are returned as held
        (other amounts -> ConflictError); the rest go out in batches of 50 with ``summarizeErrors=false`` and an
        ``Idempotency-Key`` per batch. Returns invoice id -> InvoiceResult or the error of that invoice."""
        chart = self.chart()
        self.invoices.refresh()
        missing = {i.customer_id for i in invoices} - set(self.contacts.by_key)
        if missing:
            self.contacts.refresh()
        contacts = {k: str(next(iter(v.values()))["ContactID"]) for k, v in self.contacts.by_key.items() if v}
        out: dict[str, InvoiceResult | LedgerbridgeError] = {}
        todo: list[Invoice] = []
        for inv in invoices:
            held = self.invoices.live(inv.id)
            if held:
                out[inv.id] = self._held_invoice(inv, held[0])
                continue
            problems = invoice_problems(inv, chart, contacts, self.revenue_account)
            if problems:
                out[inv.id] = RecordValidationError(
                    f"{SYSTEM}: invoice {inv.id} refused before sending: {'; '.join(problems)}", code="LB-V001",
                    details={"invoice_id": inv.id, "rule": "xero.invoice_invalid", "problems": problems})
            else:
                todo.append(inv)
        for cat in {self.tracking_map.get("project")} - {None}:
            if todo:
                self.ensure_tracking(str(cat), {i.project_id for i in todo})
        for i in range(0, len(todo), self.batch_size):
            self._put_invoices(todo[i:i + self.batch_size], chart, contacts, out)
        return {inv.id: out[inv.id] for inv in invoices}

    def _put_invoices(self, chunk: list[Invoice], chart: XeroChart, contacts: Mapping[str, str],
                      out: dict[str, InvoiceResult | LedgerbridgeError]) -> None:
        bodies = [invoice_body(inv, chart, contacts[inv.customer_id], self.revenue_account) for inv in chunk]
        key = idempotency_key("inv", self.legal_entity_id, *(
            f"{inv.id}:{hashlib.sha256(dumps(b)).hexdigest()}" for inv, b in zip(chunk, bodies, strict=True)))
        try:
            resp = self.client.write("PUT", "Invoices", {"Invoices": bodies}, key=key, summarize_errors=False)
        except RecordValidationError as exc:  # the whole request refused: isolate the cause invoice by invoice
            if len(chunk) == 1:
                exc.details["invoice_id"] = chunk[0].id
                out[chunk[0].id] = exc
            else:
                for inv in chunk:
                    self._put_invoices([inv], chart, contacts, out)
            return
        for inv, el in zip(chunk, resp.get("Invoices") or [], strict=True):
            msgs = element_errors(el)
            if msgs:
                out[inv.id] = RecordValidationError(f"{SYSTEM}: Xero refused invoice {inv.id}: {'; '.join(msgs)}",
                                                    code="LB-V001", details={"invoice_id": inv.id,
                                                                             "rule": "xero.validation",
                                                                             "validation_errors": msgs})
            else:
                self.invoices.add(el)
                out[inv.id] = self._held_invoice(inv, el)

    def create_invoice(self, inv: Invoice) -> InvoiceResult:
        res = self.create_invoices([inv])[inv.id]
        if isinstance(res, LedgerbridgeError):
            raise res
        return res

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]:
        """Number and status of every invoice Xero holds under these keys (read incrementally)."""
        self.invoices.refresh()
        return {k: self._result(k, held[0]) for k in keys if (held := self.invoices.live(k))}

    def _held_invoice(self, inv: Invoice, held: Mapping[str, Any]) -> InvoiceResult | LedgerbridgeError:
        diffs = invoice_differences(inv, held)
        if diffs:
            return ConflictError(f"{SYSTEM}: invoice {inv.id} ({held.get('InvoiceNumber')}) differs from ours: "
                                 f"{'; '.join(diffs)} — credit it in Xero and re-bill", code="LB-C001",
                                 details={"invoice_id": inv.id})
        return self._result(inv.id, held)

    @staticmethod
    def _result(key: str, held: Mapping[str, Any]) -> InvoiceResult:
        status = str(held.get("Status"))
        return InvoiceResult(key=key, number=held.get("InvoiceNumber"), status=INVOICE_STATUS.get(status, status),
                             target_ref=str(held.get("InvoiceID")), books_ledger=status in ("AUTHORISED", "PAID"))
