"""Dynamics 365 Finance (+ Project Operations on Dataverse) as a real ERP: posting, billing and master-data target,
and Project Operations actuals as a read source. One connector keeps every legal entity mapped in ``companies``
(``dataAreaId`` per entity) of one F&O environment.

Posting (``post_journals``), per run:

1. map every journal to a ``LedgerJournalHeaders`` row (``Description`` = ``lb:<journal id>``) and its
   ``LedgerJournalLines`` (``AccountDisplayValue`` in the integration format) and check it before sending
   (dimension segments, delimiter, exchange rate reproducing our functional amounts, reference length);
2. read the company's fiscal periods and refuse a journal whose period is not ``Open`` (F&O would refuse the
   posting; we refuse before sending and say so — the flow's late-item policy decides what happens next);
3. **look up** the headers by ``Description`` (``or`` chains, ``cross-company=true``): a posted journal with the same
   lines -> ``posted`` again; an unposted one (created but never posted) -> posted now; other lines -> conflict;
4. create the rest in ``$batch`` requests of ``batch_journals`` changesets, one changeset per journal (header +
   ``$1/JournalLines`` + ``$1/...Post``), so a refused journal fails alone and never leaves half a journal behind;
5. ``read_back`` reads posted headers and lines back: totals per currency and line count.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
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
    InvoiceResult,
    Limits,
    PagingKind,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
    rejected,
)
from ledgerbridge.connectors.dynamics365.client import (
    SYSTEM,
    ChangesetResult,
    D365Client,
    Op,
    any_of,
    changeset_error,
    chunks,
    quote_literal,
)
from ledgerbridge.connectors.dynamics365.mapping import (
    CLASS_TIME,
    PERIOD_STATUS,
    PERIOD_STATUS_TO_FO,
    TYPE_COST,
    D365Mapping,
    Plan,
    actual_to_time_entry,
    invoice_plan,
    invoice_state,
    journal_id_of,
    journal_plan,
    journal_reference,
    line_signature,
    period_of,
    readback_totals,
)
from ledgerbridge.connectors.http import Pacer
from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    TransientError,
)
from ledgerbridge.model.entities import Customer, Invoice, Project

POST_ACTION = "Microsoft.Dynamics.DataEntities.Post"
LINE_FIELDS = ["dataAreaId", "JournalBatchNumber", "LineNumber", "AccountDisplayValue", "DebitAmount",
               "CreditAmount", "CurrencyCode"]
ACTUAL_FIELDS = ["msdyn_actualid", "_msdyn_project_value", "_msdyn_bookableresource_value", "msdyn_documentdate",
                 "msdyn_quantity", "msdyn_transactionclassification", "msdyn_transactiontypecode",
                 "msdyn_billingtype", "msdyn_description", "modifiedon", "versionnumber"]
PROJECT_GROUPS = {"time_and_materials": "TM", "fixed_fee": "FixedPrice", "milestone": "FixedPrice"}


@dataclass(slots=True)
class ActualsRead:
    """One change-tracked read of Project Operations actuals (the PSA source contract of ``flows/sources.py``)."""

    entries: list[Any]
    errors: list[LedgerbridgeError]
    cursor: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return [{"entity": "time_entry", "external_id": e.id, "version": e.version, "updated_at": e.updated_at,
                 "payload": e.model_dump(mode="json"), "idempotency_key": f"{e.source_system}:{e.id}:v{e.version}"}
                for e in self.entries]


def _opt_int(options: Mapping[str, Any], key: str, default: int | None, problems: list[str]) -> int | None:
    v = options.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        problems.append(f"options.{key} must be a positive integer")
        return default
    return v


class D365Connector:
    """Posting, billing and master-data target for the legal entities of one F&O environment."""

    def __init__(self, client: D365Client, mapping: D365Mapping, *, system: str = SYSTEM, batch_journals: int = 25,
                 lookup_chunk: int = 20, page_size: int | None = None, project_target: str = "fo",
                 project_key: str = "msdyn_externalid", resource_key: str = "msdyn_externalid",
                 customer_group: str = "30", limits: Limits | None = None) -> None:
        if project_target not in ("fo", "dataverse"):
            raise PermanentError(f"{system}: options.project_target must be fo or dataverse", code="LB-P001")
        self.client, self.mapping, self.system = client, mapping, system
        self.batch_journals, self.lookup_chunk, self.page_size = batch_journals, lookup_chunk, page_size
        self.project_target, self.project_key, self.resource_key = project_target, project_key, resource_key
        self.customer_group = customer_group
        self._caps = Capabilities(
            connector=SYSTEM, system_kind=SystemKind.ERP,
            reads=frozenset({"time_entry"}) if client.dataverse_url else frozenset(),
            writes=frozenset({"journal_entry", "invoice", "customer", "project"}),
            change_detection=frozenset({CursorKind.SEQUENCE}) if client.dataverse_url else frozenset(),
            idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE, paging=PagingKind.CURSOR,
            limits=limits or Limits(), batch_sizes=BatchSizes(read=page_size or 10000, write=batch_journals),
            supports_read_back=True, failure_mode=FailureMode.LINE_LEVEL)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], *, client_secret: str = "",
                     certificate_key: str = "") -> D365Connector:
        """Build from a system's ``options`` (docs/connectors/dynamics365.md) and the ``client_secret`` secret or
        the ``certificate_key`` secret (PEM private key; ``options.certificate_thumbprint`` names the certificate).
        Every missing or malformed option is reported at once, by key."""
        problems: list[str] = []
        for key in ("fo_url", "tenant_id", "client_id"):
            if not isinstance(options.get(key), str) or not options.get(key):
                problems.append(f"options.{key} is required (text)")
        companies = options.get("companies")
        if not isinstance(companies, Mapping) or not companies:
            problems.append("options.companies is required: legal entity -> dataAreaId (e.g. {US01: usmf})")
            companies = {}
        for key in ("account_map", "tax_groups"):
            if not isinstance(options.get(key) or {}, Mapping):
                problems.append(f"options.{key} must be a mapping")
        for key in ("dimensions", "ignore_dimensions"):
            if not isinstance(options.get(key) or [], list):
                problems.append(f"options.{key} must be a list of our dimension names")
        batch = _opt_int(options, "batch_journals", 25, problems)
        chunk = _opt_int(options, "lookup_chunk", 20, problems)
        page = _opt_int(options, "page_size", None, problems)
        rate = _opt_int(options, "rate_limit", 6000, problems)
        conc = _opt_int(options, "concurrency", 52, problems)
        window = float(options.get("rate_window", 300))
        if not client_secret and not (certificate_key and options.get("certificate_thumbprint")):
            problems.append("secrets.client_secret is empty (or give secrets.certificate_key with "
                            "options.certificate_thumbprint) — reference it with ${env:...} or ${file:...}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {name!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": name, "problems": problems})
        headroom = float(options.get("headroom", 0.8))
        client = D365Client(
            fo_url=str(options["fo_url"]), tenant_id=str(options["tenant_id"]), client_id=str(options["client_id"]),
            client_secret=client_secret, certificate_key=certificate_key,
            certificate_thumbprint=str(options.get("certificate_thumbprint", "")),
            authority=str(options.get("authority", "https://login.microsoftonline.com")),
            dataverse_url=options.get("dataverse_url"), system=name,
            pacer=Pacer(rate, window, concurrency=conc, headroom=headroom),
            dv_pacer=Pacer(rate, window, concurrency=conc, headroom=headroom),
            timeout=float(options.get("timeout", 60)), refresh_skew=float(options.get("refresh_skew", 60)),
            max_wait=float(options.get("max_wait", 60)))
        mapping = D365Mapping(
            companies={str(k): str(v).lower() for k, v in dict(companies).items()},
            account_map={str(k): str(v) for k, v in dict(options.get("account_map") or {}).items()},
            dimensions=tuple(str(d) for d in options.get("dimensions") or ()),
            ignore_dimensions=frozenset(str(d) for d in options.get("ignore_dimensions") or ()),
            delimiter=str(options.get("delimiter", "-")), journal_name=str(options.get("journal_name", "GenJrn")),
            tax_groups={str(k): str(v) for k, v in dict(options.get("tax_groups") or {}).items()})
        return cls(client, mapping, system=name, batch_journals=batch or 25, lookup_chunk=chunk or 20,
                   page_size=page, project_target=str(options.get("project_target", "fo")),
                   project_key=str(options.get("project_key", "msdyn_externalid")),
                   resource_key=str(options.get("resource_key", "msdyn_externalid")),
                   customer_group=str(options.get("customer_group", "30")),
                   # lookup-before-create is not atomic: one writer per F&O environment (the client's own
                   # threads are capped by options.concurrency, F&O's 52 concurrent requests)
                   limits=Limits(requests_per_second=(rate or 6000) / window, concurrency=1))

    def capabilities(self) -> Capabilities:
        return self._caps

    def _company(self, entity: str) -> str:
        co = self.mapping.company(entity)
        if co is None:
            raise PermanentError(f"{self.system}: legal entity {entity} has no company in options.companies "
                                 f"({dict(self.mapping.companies)})", code="LB-P001", details={"entity": entity})
        return co

    def _get(self, entity: str, filter: str, select: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return self.client.fo_get(entity, filter=filter, select=select, page_size=self.page_size)

    def _by_keys(self, entity: str, company: str | None, field: str, keys: Sequence[str],
                 select: Sequence[str] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in chunks(sorted(set(keys)), self.lookup_chunk):
            where = any_of(field, chunk)
            rows += self._get(entity, f"dataAreaId eq {quote_literal(company)} and {where}" if company else where,
                              select)
        return rows

    # ------------------------------------------------------------------ periods

    def _periods(self, company: str) -> list[dict[str, Any]]:
        return self._get("LedgerFiscalPeriods", f"dataAreaId eq {quote_literal(company)}")

    @staticmethod
    def _period_at(periods: Sequence[Mapping[str, Any]], day: dt.date) -> Mapping[str, Any] | None:
        text = day.isoformat()
        return next((p for p in periods if str(p["StartDate"])[:10] <= text <= str(p["EndDate"])[:10]), None)

    def period_status(self, entity: str, period: str) -> str | None:
        """Status of the F&O fiscal period starting on the first day of ``period`` for ``entity``'s company:
        ``Open`` -> open, ``OnHold`` -> closed, ``Closed`` -> locked; None when unmapped or unknown."""
        co = self.mapping.company(entity)
        if co is None:
            return None
        p = self._period_at(self._periods(co), dt.date.fromisoformat(f"{period}-01"))
        return PERIOD_STATUS.get(str(p["PeriodStatus"]), str(p["PeriodStatus"])) if p else None

    def set_period_status(self, entity: str, period: str, status: str, on: dt.date | None = None) -> None:
        """Mirror our period state into F&O (the period-close flow calls this): closed -> OnHold, locked -> Closed,
        open/closing -> Open. F&O refuses to reopen a Closed period (``RecordValidationError``)."""
        co = self.mapping.company(entity)
        if co is None:
            return
        p = self._period_at(self._periods(co), dt.date.fromisoformat(f"{period}-01"))
        if p is None:
            raise RecordValidationError(f"{self.system}: F&O has no fiscal period {period} for company {co}",
                                        details={"rule": "d365.period_missing", "period": period})
        want = PERIOD_STATUS_TO_FO[status]
        if p["PeriodStatus"] == want:
            return
        if p["PeriodStatus"] == "Closed":
            raise RecordValidationError(f"{self.system}: period {period} of {co} is permanently Closed in F&O",
                                        details={"rule": "d365.period_locked", "period": period})
        self.client.fo_patch(f"LedgerFiscalPeriods(dataAreaId={quote_literal(co)},"
                             f"PeriodName={quote_literal(str(p['PeriodName']))})", {"PeriodStatus": want})

    # ------------------------------------------------------------------ posting

    def _held(self, company: str | None, references: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for h in self._by_keys("LedgerJournalHeaders", company, "Description", references):
            out[str(h["Description"])].append(h)
        return out

    def _lines(self, company: str, batches: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self._by_keys("LedgerJournalLines", company, "JournalBatchNumber", batches, LINE_FIELDS):
            out[str(r["JournalBatchNumber"])].append(r)
        return out

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        company = self._company(run.legal_entity_id)
        plans = [journal_plan(j, self.mapping) for j in run.journals]
        results: dict[str, PostResult] = {}
        periods = self._periods(company)
        held = self._held(company, [p.reference for p in plans])
        lines = self._lines(company, [str(h["JournalBatchNumber"]) for hs in held.values() for h in hs])
        todo: list[Plan] = []

        def reject(plan: Plan, msg: str, rule: str, **extra: Any) -> None:
            results[plan.key] = rejected(self.system, plan.key, run.run_id, msg, rule, extra)

        for plan in plans:
            day = dt.date.fromisoformat(str(plan.lines[0]["TransDate"])[:10])
            period = self._period_at(periods, day)
            if plan.reference in held:
                results[plan.key] = self._already_held(plan, held[plan.reference], lines, run.run_id)
            elif plan.problems:
                reject(plan, "refused before sending: " + "; ".join(plan.problems), "d365.journal_invalid",
                       problems=plan.problems)
            elif period is None:
                reject(plan, f"F&O has no fiscal period for {day} in company {company} — create the fiscal "
                       "calendar periods in F&O", "d365.period_missing")
            elif period["PeriodStatus"] != "Open":
                reject(plan, f"F&O period {period['PeriodName']} is {period['PeriodStatus']} for company {company}; "
                       "refused before sending — post into the next open period (late-item policy) or have the "
                       "accountant reopen it", "d365.period_closed", period_status=str(period["PeriodStatus"]))
            else:
                todo.append(plan)
        for chunk in chunks(todo, self.batch_journals):
            self._create_journals(company, list(chunk), results, run.run_id)
        return [results[p.key] for p in plans]

    def _already_held(self, plan: Plan, headers: list[dict[str, Any]], lines: Mapping[str, list[dict[str, Any]]],
                      run_id: str) -> PostResult:
        numbers = [str(h["JournalBatchNumber"]) for h in headers]
        if len(headers) > 1:
            return PostResult(plan.key, PostStatus.REJECTED, ",".join(numbers), ConflictError(
                f"{self.system}: journal {plan.key}: F&O holds {len(headers)} journals described {plan.reference} "
                f"({numbers}) — keep one, delete the others in F&O", code="LB-C001",
                details={"journal_id": plan.key, "run_id": run_id, "journals": numbers}))
        h = headers[0]
        number = str(h["JournalBatchNumber"])
        if line_signature(lines.get(number, [])) != line_signature(plan.lines):
            return PostResult(plan.key, PostStatus.REJECTED, number, ConflictError(
                f"{self.system}: journal {plan.key} is already in F&O (journal {number}) with different lines; "
                "posted journals are never edited — post a reversal and a new journal with a new id",
                code="LB-C001", details={"journal_id": plan.key, "run_id": run_id, "journal": number}))
        if str(h.get("IsPosted")) != "Yes":  # created by a run that stopped before posting: post it now
            try:
                self.client.fo_action(f"LedgerJournalHeaders(dataAreaId={quote_literal(plan.company)},"
                                      f"JournalBatchNumber={quote_literal(number)})/{POST_ACTION}")
            except RecordValidationError as exc:
                return PostResult(plan.key, PostStatus.REJECTED, number, exc)
        return PostResult(plan.key, PostStatus.POSTED, number)

    def _create_journals(self, company: str, chunk: list[Plan], results: dict[str, PostResult], run_id: str) -> None:
        sets = [[Op("POST", "LedgerJournalHeaders", p.header),
                 *(Op("POST", "$1/JournalLines", ln) for ln in p.lines), Op("POST", f"$1/{POST_ACTION}", {})]
                for p in chunk]
        try:
            answers = self.client.fo_batch(sets)
        except (TransientError, RateLimitedError):
            # the $batch may have been applied: what F&O holds now decides; the rest is raised for a retry
            held = self._held(company, [p.reference for p in chunk])
            lines = self._lines(company, [str(h["JournalBatchNumber"]) for hs in held.values() for h in hs])
            missing = [p for p in chunk if p.reference not in held]
            for p in chunk:
                if p.reference in held:
                    results[p.key] = self._already_held(p, held[p.reference], lines, run_id)
            if missing:
                raise
            return
        for plan, res in zip(chunk, answers, strict=True):
            results[plan.key] = self._journal_result(plan, res, run_id)

    def _journal_result(self, plan: Plan, res: ChangesetResult, run_id: str) -> PostResult:
        if res.ok:
            return PostResult(plan.key, PostStatus.POSTED, str(res.answers[0][1]["JournalBatchNumber"]))
        err = changeset_error(res, f"journal {plan.key}", self.system)
        err.details.update({"journal_id": plan.key, "run_id": run_id, "rule": "d365.refused"})
        return PostResult(plan.key, PostStatus.REJECTED, None, err)

    # ------------------------------------------------------------------ reading back

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Posted journals held for these ids (any mapped company): totals per currency and line count. Several
        journals carrying one reference all count, so a duplicate shows as a mismatch instead of hiding."""
        held = self._held(None, [journal_reference(j) for j in journal_ids])
        posted = {ref: [h for h in hs if str(h.get("IsPosted")) == "Yes"] for ref, hs in held.items()}
        by_company: dict[str, list[str]] = defaultdict(list)
        for hs in posted.values():
            for h in hs:
                by_company[str(h["dataAreaId"])].append(str(h["JournalBatchNumber"]))
        lines = {(co, n): rows for co, numbers in by_company.items()
                 for n, rows in self._lines(co, numbers).items()}
        out: dict[str, ReadBack] = {}
        for ref, hs in posted.items():
            jid = journal_id_of(ref)
            if not hs or jid is None:
                continue
            rows = [r for h in hs for r in lines.get((str(h["dataAreaId"]), str(h["JournalBatchNumber"])), [])]
            out[jid] = ReadBack(",".join(str(h["JournalBatchNumber"]) for h in hs), readback_totals(rows), len(rows))
        return out

    def _gl(self, entity: str, extra: str = "") -> list[dict[str, Any]]:
        co = self._company(entity)
        return self._get("GeneralJournalAccountEntries", f"dataAreaId eq {quote_literal(co)}{extra}",
                         ["AccountingDate", "MainAccount", "TransactionCurrencyCode", "TransactionCurrencyAmount",
                          "AccountingCurrencyAmount"])

    def _our_code(self, main: str) -> str:
        return next((k for k, v in self.mapping.account_map.items() if v == main), main)

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """What F&O's general ledger holds for ``entity`` (posted GL entries, journals and invoices):
        ``(period, our account code, transaction currency) -> (debit, credit)``."""
        out: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for r in self._gl(entity):
            amount = Decimal(str(r["TransactionCurrencyAmount"]))
            cell = out[(period_of(r["AccountingDate"]), self._our_code(str(r["MainAccount"])),
                        str(r["TransactionCurrencyCode"]))]
            cell[0 if amount > 0 else 1] += abs(amount)
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def trial_balance(self, entity: str, from_date: dt.date, to_date: dt.date
                      ) -> dict[str, tuple[Decimal, Decimal]]:
        """F&O's debit and credit totals in the company's accounting currency between two dates, per our code."""
        out: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        dates = f" and AccountingDate ge {from_date}T00:00:00Z and AccountingDate le {to_date}T23:59:59Z"
        for r in self._gl(entity, dates):
            amount = Decimal(str(r["AccountingCurrencyAmount"]))
            out[self._our_code(str(r["MainAccount"]))][0 if amount > 0 else 1] += abs(amount)
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    # ------------------------------------------------------------------ invoices

    def _invoice_headers(self, company: str | None, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {str(h["CustomerReference"]): h for h in self._by_keys("FreeTextInvoiceHeaders", company,
                                                                       "CustomerReference", keys)}

    def _invoice_result(self, h: Mapping[str, Any]) -> InvoiceResult:
        return InvoiceResult(key=str(h["CustomerReference"]), number=str(h.get("InvoiceNumber") or "") or None,
                             status=invoice_state(h), books_ledger=True,
                             target_ref=f"FreeTextInvoiceHeaders({h['dataAreaId']},{h['InvoiceIdentifier']})")

    def create_invoices(self, invoices: Sequence[Invoice]) -> dict[str, InvoiceResult | LedgerbridgeError]:
        """Create and post free-text invoices, idempotent on the invoice id (``CustomerReference`` looked up first);
        number, status and totals read back. A held invoice with other totals is a conflict."""
        out: dict[str, InvoiceResult | LedgerbridgeError] = {}
        by_company: dict[str, list[Invoice]] = defaultdict(list)
        for inv in invoices:
            co = self.mapping.company(inv.legal_entity_id)
            if co is None:
                out[inv.id] = PermanentError(f"{self.system}: legal entity {inv.legal_entity_id} has no company "
                                             "in options.companies", code="LB-P001")
            else:
                by_company[co].append(inv)
        for co, invs in by_company.items():
            held = self._invoice_headers(co, [i.id for i in invs])
            for key, h in held.items():
                if str(h.get("IsPosted")) != "Yes":  # created by a run that stopped before posting it
                    try:
                        self.client.fo_action(f"FreeTextInvoiceHeaders(dataAreaId={quote_literal(co)},"
                                              f"InvoiceIdentifier={quote_literal(str(h['InvoiceIdentifier']))})/"
                                              f"{POST_ACTION}")
                    except (RecordValidationError, ConflictError) as exc:
                        out[key] = exc
            plans = [invoice_plan(i, self.mapping) for i in invs if i.id not in held]
            ready = []
            for p in plans:
                if p.problems:
                    out[p.key] = RecordValidationError(f"{self.system}: invoice {p.key} refused before sending: "
                                                       + "; ".join(p.problems), details={"invoice_id": p.key})
                else:
                    ready.append(p)
            for chunk in chunks(ready, self.batch_journals):
                sets = [[Op("POST", "FreeTextInvoiceHeaders", p.header),
                         *(Op("POST", "$1/InvoiceLines", ln) for ln in p.lines), Op("POST", f"$1/{POST_ACTION}", {})]
                        for p in chunk]
                for p, res in zip(chunk, self.client.fo_batch(sets), strict=True):
                    if not res.ok:
                        out[p.key] = changeset_error(res, f"invoice {p.key}", self.system)
            now = self._invoice_headers(co, [i.id for i in invs if i.id not in out])
            for inv in invs:
                if inv.id in out:
                    continue
                h = now.get(inv.id)
                if h is None:
                    out[inv.id] = TransientError(f"{self.system}: invoice {inv.id} not found after creating it",
                                                 details={"invoice_id": inv.id})
                    continue
                diffs = [f"{name}: ours {want}, F&O {h.get(key)}" for name, key, want in (
                    ("net", "TotalLineAmount", inv.net_total), ("tax", "TotalTaxAmount", inv.tax_total),
                    ("total", "TotalInvoiceAmount", inv.total)) if Decimal(str(h.get(key) or 0)) != want]
                out[inv.id] = ConflictError(
                    f"{self.system}: invoice {inv.id} ({h.get('InvoiceNumber')}) differs from ours: "
                    f"{'; '.join(diffs)} — credit it in F&O and re-bill", details={"invoice_id": inv.id}) \
                    if diffs else self._invoice_result(h)
        return out

    def create_invoice(self, inv: Invoice) -> InvoiceResult:
        res = self.create_invoices([inv])[inv.id]
        if isinstance(res, LedgerbridgeError):
            raise res
        return res

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]:
        return {k: self._invoice_result(h) for k, h in self._invoice_headers(None, keys).items()}

    # ------------------------------------------------------------------ master data (lookup before create)

    def _create_each(self, entity: str, bodies: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, str]:
        """One changeset per record in ``$batch``es; returns key -> error text for the refused ones."""
        failed: dict[str, str] = {}
        for chunk in chunks(list(bodies), self.batch_journals):
            answers = self.client.fo_batch([[Op("POST", entity, body)] for _, body in chunk])
            failed.update({key: res.error_text for (key, _), res in zip(chunk, answers, strict=True) if not res.ok})
        return failed

    def push_customers(self, customers: Iterable[Customer]) -> dict[str, str]:
        """``CustomersV3`` keyed by ``CustomerAccount`` = our customer id in the entity's company (manual numbers
        on the customer number sequence); name and currency updated when they changed."""
        custs = list(customers)
        out: dict[str, str] = {}
        failed: dict[str, str] = {}
        by_company: dict[str, list[Customer]] = defaultdict(list)
        for c in custs:
            by_company[self._company(c.legal_entity_id)].append(c)
        for co, group in by_company.items():
            held = {str(r["CustomerAccount"]): r for r in self._by_keys("CustomersV3", co, "CustomerAccount",
                                                                        [c.id for c in group])}
            new = []
            for c in group:
                body = {"dataAreaId": co, "CustomerAccount": c.id, "OrganizationName": c.name,
                        "SalesCurrencyCode": c.currency, "CustomerGroupId": self.customer_group}
                h = held.get(c.id)
                if h is None:
                    new.append((c.id, body))
                elif (h.get("OrganizationName"), h.get("SalesCurrencyCode")) != (c.name, c.currency):
                    self.client.fo_patch(f"CustomersV3(dataAreaId={quote_literal(co)},"
                                         f"CustomerAccount={quote_literal(c.id)})",
                                         {"OrganizationName": c.name, "SalesCurrencyCode": c.currency})
            failed.update(self._create_each("CustomersV3", new))
            out.update({c.id: c.id for c in group if c.id not in failed})
        self._raise_failed("customer", failed)
        return out

    def push_projects(self, projects: Iterable[Project]) -> dict[str, str]:
        """Projects into F&O ``ProjectsV2`` (lookup by ``ProjectID``) or — ``project_target: dataverse`` — into
        Project Operations ``msdyn_projects`` by alternate-key upsert (dual-write carries them to F&O)."""
        projs = list(projects)
        if self.project_target == "dataverse":
            out: dict[str, str] = {}
            for p in projs:
                ref = self.client.dv_upsert("msdyn_projects", self.project_key, p.id, {
                    "msdyn_subject": p.name, "msdyn_description": f"{p.customer_id} / {p.contract_type.value}"})
                out[p.id] = ref or p.id
            return out
        out = {}
        failed: dict[str, str] = {}
        by_company: dict[str, list[Project]] = defaultdict(list)
        for p in projs:
            by_company[self._company(p.legal_entity_id)].append(p)
        for co, group in by_company.items():
            held = {str(r["ProjectID"]) for r in self._by_keys("ProjectsV2", co, "ProjectID", [p.id for p in group],
                                                               ["ProjectID"])}
            new = [(p.id, {"dataAreaId": co, "ProjectID": p.id, "ProjectName": p.name, "CustomerAccount":
                           p.customer_id, "ProjectGroup": PROJECT_GROUPS.get(p.contract_type.value, "TM")})
                   for p in group if p.id not in held]
            failed.update(self._create_each("ProjectsV2", new))
            out.update({p.id: p.id for p in group if p.id not in failed})
        self._raise_failed("project", failed)
        return out

    def _raise_failed(self, what: str, failed: Mapping[str, str]) -> None:
        if failed:
            raise RecordValidationError(f"{self.system}: F&O refused {len(failed)} {what}(s): " + "; ".join(
                f"{k}: {v}" for k, v in sorted(failed.items())), details={"refused": dict(failed)})

    # ------------------------------------------------------------------ Project Operations actuals (read source)

    def _external_ids(self, entity_set: str, key: str) -> dict[str, str]:
        idf = f"{entity_set[:-1]}id"
        rows = self.client.dv_get(entity_set, select=[idf, key])
        return {str(r[idf]): str(r[key]) for r in rows if r.get(key)}

    def sync(self, cursor: Mapping[str, Any] | None, *, full: bool | None = None) -> ActualsRead:
        """Approved time from Project Operations cost actuals, change-tracked: the first read (or ``full``) reads
        everything and stores the ``@odata.deltaLink``; later reads return only what changed since. Deleted
        actuals are reported (``deleted``) — Project Operations corrects posted time with reversing actuals."""
        link = None if full or not cursor else cursor.get("delta_link")
        rows, deleted, new_link = self.client.dv_changes("msdyn_actuals", select=ACTUAL_FIELDS, delta_link=link,
                                                         page_size=self.page_size or 5000)
        projects = self._external_ids("msdyn_projects", self.project_key)
        resources = self._external_ids("bookableresources", self.resource_key)
        entries, errors, skipped = [], [], 0
        for r in rows:
            if (r.get("msdyn_transactionclassification"), r.get("msdyn_transactiontypecode")) != (CLASS_TIME,
                                                                                                   TYPE_COST):
                skipped += 1
                continue
            try:
                entries.append(actual_to_time_entry(r, system=self.system, projects=projects, resources=resources))
            except ValueError as exc:
                errors.append(RecordValidationError(
                    f"{self.system}: actual {r.get('msdyn_actualid')} cannot be read as a time entry: {exc}",
                    details={"rule": "d365.actual_invalid", "actual": r.get("msdyn_actualid"),
                             "id": f"d365-actual-{r.get('msdyn_actualid')}", "row": dict(r)}))
        return ActualsRead(entries, errors, {"delta_link": new_link},
                           {"rows": len(rows), "skipped": skipped, "deleted": len(deleted), "full": link is None},
                           deleted)
