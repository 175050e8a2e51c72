"""NetSuite (SuiteTalk REST) as an ERP target: journals, invoices, master data, period status, account totals.

Posting (``post_journals``), per run:

1. resolve once: subsidiaries (legal entity -> subsidiary and its base currency), currencies, the chart (our code
   -> NetSuite account by number or ``account_map``); per run: the dimension records (department, class,
   location, job, customer) by external id, and the accounting periods;
2. map every journal to NetSuite journal entries (:func:`~.mapping.journal_documents`: one per currency) and
   **check before sending** what NetSuite would refuse — unmapped/inactive accounts, accounts and dimension values
   not available to the journal's subsidiary, A/R lines without a name, decimals — plus the period: missing,
   closed, or locked for all transactions -> rejected alone with a :class:`RecordValidationError`;
3. look the documents up by external id (SuiteQL, one query per 200 journals): held with the same lines ->
   ``posted`` again; held with other lines -> :class:`ConflictError` (posted entries are never edited);
4. ``PUT /record/v1/journalentry/eid:<journal id>`` the rest, ``concurrency`` at a time: an upsert, so a retry
   after a crash or a timeout replaces the same record instead of creating a second one;
5. read NetSuite's document numbers (``tranid``) back; ``read_back`` re-reads lines and totals per currency.

Billing: ``create_invoice(s)`` upserts ``invoice/eid:<invoice id>`` and reads ``tranid``, status and total back;
``invoice_status`` / ``changed_invoices`` follow them. Master data: ``push_customers`` / ``push_projects`` (job) /
``push_resources`` (employee) upsert by external id = our id. See docs/connectors/netsuite.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import (
    BatchSizes,
    Capabilities,
    CurrencyTotals,
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
)
from ledgerbridge.connectors.netsuite.client import (
    SYSTEM,
    TOKEN_PATH,
    ClientCredentialsAuth,
    NetSuiteClient,
    TokenBasedAuth,
    default_base_url,
    sql_in,
    sql_text,
)
from ledgerbridge.connectors.netsuite.mapping import (
    INVOICE_STATUS,
    SPLIT,
    DimensionRule,
    InvoiceSetup,
    JournalDoc,
    Period,
    Ref,
    Setup,
    id_set,
    invoice_body,
    journal_documents,
    journal_id_of,
    period_for,
    signature,
    truthy,
)
from ledgerbridge.errors import (
    ConflictError,
    ErrorKind,
    LedgerbridgeError,
    PermanentError,
    RecordValidationError,
)
from ledgerbridge.model.entities import Customer, Invoice, Project, ProjectStatus, Resource

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.ERP,
    reads=frozenset({"invoice"}),
    writes=frozenset({"journal_entry", "invoice", "customer", "project", "resource"}),
    change_detection=frozenset({CursorKind.UPDATED_AT}),
    idempotency=IdempotencyMechanism.UPSERT_EXTERNAL_ID,
    paging=PagingKind.OFFSET,
    limits=Limits(concurrency=5),
    batch_sizes=BatchSizes(read=1000, write=1),  # no bulk write endpoint in REST: one record per call
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)
DEFAULT_DIMENSIONS: dict[str, Any] = {"cost_center": "department", "project": "job"}
CHUNK = 200  # external ids per SuiteQL lookup
_PERIODS_Q = ("SELECT id, periodname, TO_CHAR(startdate, 'YYYY-MM-DD') AS startdate, "
              "TO_CHAR(enddate, 'YYYY-MM-DD') AS enddate, closed, alllocked, arlocked, aplocked FROM accountingperiod "
              "WHERE isposting = 'T' AND isquarter = 'F' AND isyear = 'F' AND isadjust = 'F' ORDER BY startdate, id")


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """One NetSuite transaction found by external id, with its lines (account, debit, credit; foreign amounts)."""

    internal_id: str
    external_id: str
    tranid: str
    currency: str
    lines: tuple[tuple[str, Decimal, Decimal], ...]

    def signature(self) -> tuple[Any, ...]:
        return signature(self.currency, self.lines)


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeCursor:
    """Position after an incremental read: the newest ``lastmodifieddate`` seen (account time zone, as text)."""

    modified: str


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class NetSuiteLedger:
    """Posting, billing and master-data target for one NetSuite account (all mapped subsidiaries).

    ``subsidiaries``: our legal entity -> NetSuite subsidiary internal id (OneWorld). ``account_map``: our account
    code -> NetSuite account number (text) or internal id (int); codes not in it match the NetSuite account
    whose number is the code. ``dimensions``: our dimension -> NetSuite record (:class:`~.mapping.DimensionRule`).
    ``item_map``: our revenue account -> NetSuite item (number/name or id) for invoice lines, ``invoice_item`` the
    default; ``tax_map``: our tax code -> NetSuite tax code id.
    """

    uses_reference = False  # holds no reference data of ours: survives a reference reload
    #: an invoice created in NetSuite books its receivable there: the billing flow sends work lines on the invoice
    #: clearing account and stages only the relief journal (docs/sync-billing.md)
    books_ledger = True

    def __init__(self, client: NetSuiteClient, *, subsidiaries: Mapping[str, str | int],
                 account_map: Mapping[str, str | int] | None = None,
                 dimensions: Mapping[str, Any] | None = None, item_map: Mapping[str, str | int] | None = None,
                 invoice_item: str | int | None = None, tax_map: Mapping[str, str | int] | None = None,
                 system: str = SYSTEM) -> None:
        self.client = client
        self.system = system
        self.subsidiaries = {str(k): str(v) for k, v in subsidiaries.items()}
        self.account_map = dict(account_map or {})
        self.rules = [DimensionRule.parse(k, v) for k, v in (DEFAULT_DIMENSIONS if dimensions is None
                                                             else dimensions).items()]
        self.item_map = {str(k): v for k, v in (item_map or {}).items()}
        if invoice_item is not None:
            self.item_map.setdefault("*", invoice_item)
        self.tax_map = {str(k): str(v) for k, v in (tax_map or {}).items()}
        self._lock = threading.Lock()
        self._setup: Setup | None = None
        self._accounts_by_id: dict[str, str] = {}
        self._currency_symbols: dict[str, str] = {}
        self._items: dict[str, str] | None = None

    @classmethod
    def from_options(cls, system: str, options: Mapping[str, Any], secret: Callable[[str], str]
                     ) -> NetSuiteLedger:
        """Build from ``systems.<name>.options`` and its secrets (see docs/connectors/netsuite.md); every
        missing or malformed key is reported at once."""
        problems: list[str] = []
        account = options.get("account_id")
        if not isinstance(account, str) or not account:
            problems.append("options.account_id is required (e.g. 1234567 or 1234567_SB1)")
        subs = options.get("subsidiaries")
        if not isinstance(subs, Mapping) or not subs:
            problems.append("options.subsidiaries is required: our legal entity -> NetSuite subsidiary id")
        for key in ("account_map", "item_map", "tax_map", "dimensions"):
            if options.get(key) is not None and not isinstance(options.get(key), Mapping):
                problems.append(f"options.{key} must be a mapping")
        mode = str(options.get("auth", "oauth2"))

        def need(name: str) -> str:
            try:
                value = secret(name)
            except KeyError:
                value = ""
            if not value:
                problems.append(f"secrets.{name} is required for auth {mode} — reference it with ${{env:...}} or "
                                "${file:...}")
            return value

        auth: ClientCredentialsAuth | TokenBasedAuth | None = None
        base = str(options.get("base_url") or (default_base_url(str(account)) if account else ""))
        try:
            if mode == "oauth2":
                key = need("private_key")
                for name in ("client_id", "certificate_id"):
                    if not options.get(name):
                        problems.append(f"options.{name} is required for auth oauth2")
                if not problems:
                    auth = ClientCredentialsAuth(
                        token_url=base + TOKEN_PATH, client_id=str(options["client_id"]),
                        certificate_id=str(options["certificate_id"]), private_key=key,
                        algorithm=str(options.get("algorithm", "PS256")),
                        scopes=tuple(options.get("scopes") or ("rest_webservices",)),
                        skew=float(options.get("token_skew_seconds", 60)), system=system)
            elif mode == "tba":
                vals = {n: need(n) for n in ("consumer_key", "consumer_secret", "token_id", "token_secret")}
                if not problems:
                    auth = TokenBasedAuth(account_id=str(account), system=system, consumer_key=vals["consumer_key"],
                                          consumer_secret=vals["consumer_secret"], token_id=vals["token_id"],
                                          token_secret=vals["token_secret"])
            else:
                problems.append(f"options.auth must be oauth2 or tba, not {mode!r}")
        except LedgerbridgeError as exc:
            problems.append(exc.message)
        rules: Any = options.get("dimensions")
        if isinstance(rules, Mapping):
            for k, v in rules.items():
                try:
                    DimensionRule.parse(str(k), v)
                except ValueError as exc:
                    problems.append(f"options.{exc}")
        if problems or auth is None:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        client = NetSuiteClient(base, auth, system=system, concurrency=int(options.get("concurrency", 5)),
                                timeout=float(options.get("timeout", 60)),
                                limit_wait=float(options.get("limit_wait_seconds", 1.0)),
                                page_size=int(options.get("page_size", 1000)),
                                suiteql_cap=int(options.get("suiteql_cap", 100_000)))
        return cls(client, subsidiaries=dict(subs or {}), account_map=options.get("account_map"),
                   dimensions=rules if isinstance(rules, Mapping) else None, item_map=options.get("item_map"),
                   invoice_item=options.get("invoice_item"), tax_map=options.get("tax_map"), system=system)

    def capabilities(self) -> Capabilities:
        return dataclasses.replace(CAPABILITIES, limits=Limits(concurrency=self.client.concurrency))

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ setup

    def setup(self) -> Setup:
        with self._lock:
            if self._setup is None:
                self._setup = self._resolve()
            return self._setup

    def _resolve(self) -> Setup:
        c = self.client
        cur = {str(r["id"]): str(r["symbol"]) for r in c.suiteql("SELECT id, symbol FROM currency ORDER BY id")}
        self._currency_symbols = cur
        subs = {str(r["id"]): r for r in c.suiteql("SELECT id, name, currency FROM subsidiary ORDER BY id")}
        missing = {e: s for e, s in self.subsidiaries.items() if s not in subs}
        if missing:
            raise PermanentError(f"{self.system}: subsidiaries names ids NetSuite does not have: {missing} (have "
                                 f"{sorted(subs)}) — fix options.subsidiaries", code="LB-P004")
        rows = c.suiteql("SELECT id, acctnumber, acctname, accttype, isinactive, subsidiary FROM account ORDER BY id")
        by_number = {str(r.get("acctnumber") or ""): r for r in rows}
        by_id = {str(r["id"]): r for r in rows}
        accounts: dict[str, Ref] = {}
        unknown: dict[str, Any] = {}
        for code, row in by_number.items():
            if code and code not in self.account_map:
                accounts[code] = self._account_ref(row)
        for code, target in self.account_map.items():
            r: dict[str, Any] | None = by_id.get(str(target)) if isinstance(target, int) else by_number.get(str(target))
            if r is None:
                unknown[str(code)] = target
            else:
                accounts[str(code)] = self._account_ref(r)
        if unknown:
            raise PermanentError(f"{self.system}: account_map names NetSuite accounts that do not exist: {unknown}",
                                 code="LB-P004", details={"missing": {k: str(v) for k, v in unknown.items()}})
        self._accounts_by_id = {}
        for code, ref in sorted(accounts.items(), key=lambda kv: (kv[0] not in self.account_map, kv[0])):
            self._accounts_by_id.setdefault(ref.id, code)
        return Setup(subsidiaries=self.subsidiaries,
                     base_currency={s: cur.get(str(subs[s].get("currency")), "") for s in self.subsidiaries.values()},
                     accounts=accounts, currencies={v: k for k, v in cur.items()}, rules=self.rules)

    @staticmethod
    def _account_ref(r: Mapping[str, Any]) -> Ref:
        return Ref(str(r["id"]), f"{r.get('acctnumber') or ''} {r.get('acctname') or ''}".strip(),
                   truthy(r.get("isinactive")), id_set(r.get("subsidiary")), str(r.get("accttype") or ""))

    def _dimension_values(self, codes: Mapping[str, set[str]]) -> dict[tuple[str, str], Ref]:
        """(table, our code) -> record, for the codes used, read by external id (or the explicit values)."""
        out: dict[tuple[str, str], Ref] = {}
        for rule in self.rules:
            wanted = sorted(codes.get(rule.dimension, set()))
            if not wanted:
                continue
            name = "companyname" if rule.record in ("job", "customer") else "name"
            by_id = {rule.values[w]: w for w in wanted if w in rule.values}
            by_ext = [w for w in wanted if w not in rule.values]
            for part in _chunks(by_ext, CHUNK):
                for r in self.client.suiteql(f"SELECT id, externalid, {name} AS name, isinactive, subsidiary FROM "
                                             f"{rule.record} WHERE externalid IN {sql_in(part)} ORDER BY id"):
                    out[(rule.record, str(r["externalid"]))] = self._ref(r)
            for part in _chunks(sorted(by_id), CHUNK):
                for r in self.client.suiteql(f"SELECT id, {name} AS name, isinactive, subsidiary FROM {rule.record} "
                                             f"WHERE id IN ({', '.join(str(int(i)) for i in part)}) ORDER BY id"):
                    out[(rule.record, by_id[str(r["id"])])] = self._ref(r)
        return out

    @staticmethod
    def _ref(r: Mapping[str, Any]) -> Ref:
        return Ref(str(r["id"]), str(r.get("name") or ""), truthy(r.get("isinactive")), id_set(r.get("subsidiary")))

    def periods(self) -> list[Period]:
        return [Period.from_row(r) for r in self.client.suiteql(_PERIODS_Q)]

    def _subsidiary(self, entity: str, what: str) -> str:
        sub = self.subsidiaries.get(entity)
        if sub is None:
            raise PermanentError(f"{self.system}: legal entity {entity} has no NetSuite subsidiary in "
                                 f"options.subsidiaries ({what}) — add it or route the entity elsewhere",
                                 code="LB-P001", details={"entity": entity})
        return sub

    def _parallel(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items``, ``concurrency`` at a time; each result or the LedgerbridgeError it raised."""
        def one(item: Any) -> Any:
            try:
                return fn(item)
            except LedgerbridgeError as exc:
                return exc
        if len(items) <= 1:
            return [one(i) for i in items]
        with ThreadPoolExecutor(max_workers=self.client.concurrency, thread_name_prefix="netsuite") as pool:
            return list(pool.map(one, items))

    @staticmethod
    def _raise_retryable(results: Iterable[Any]) -> None:
        """A transient or rate-limit failure that outlived the retries fails the call as a whole: the caller's
        retry finds what was written by external id and writes the rest."""
        for r in results:
            if isinstance(r, LedgerbridgeError) and r.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED):
                raise r

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        self._subsidiary(run.legal_entity_id, f"run {run.run_id}")
        setup = self.setup()
        codes: dict[str, set[str]] = defaultdict(set)
        for j in run.journals:
            for ln in j.lines:
                for k, v in ln.dimensions.items():
                    codes[k].add(v)
        setup = dataclasses.replace(setup, values=self._dimension_values(codes))
        periods = self.periods()
        docs = {j.id: journal_documents(j, setup) for j in run.journals}
        held = self._held("journalentry", [d.external_id for ds in docs.values() for d in ds])
        results: dict[str, PostResult] = {}
        to_write: list[tuple[JournalDoc, str, str]] = []  # doc, currency id, period id

        def reject(jid: str, text: str, rule: str, extra: Mapping[str, Any] | None = None) -> None:
            results[jid] = PostResult(jid, PostStatus.REJECTED, None, RecordValidationError(
                f"{self.system}: journal {jid} {text}", code="LB-V001",
                details={"journal_id": jid, "run_id": run.run_id, "rule": rule, **(extra or {})}))

        for j in run.journals:
            jdocs = docs[j.id]
            mine = [held[d.external_id] for d in jdocs if d.external_id in held]
            differ = [h for d in jdocs if (h := held.get(d.external_id)) and h.signature() != d.signature()]
            problems = [p for d in jdocs for p in d.problems]
            period = period_for(periods, j.entry_date)
            if differ:
                h = differ[0]
                results[j.id] = PostResult(j.id, PostStatus.REJECTED, h.tranid, ConflictError(
                    f"{self.system}: journal {j.id} is already in NetSuite ({h.tranid}, external id {h.external_id})"
                    " with different lines; posted entries are never edited — post a reversal and a new journal "
                    "with a new id", code="LB-C001",
                    details={"journal_id": j.id, "run_id": run.run_id, "internal_id": h.internal_id}))
            elif len(mine) == len(jdocs):
                results[j.id] = PostResult(j.id, PostStatus.POSTED, ",".join(h.tranid for h in mine))
            elif problems:
                reject(j.id, "refused before sending: " + "; ".join(problems), "netsuite.journal_invalid",
                       {"problems": problems})
            elif period is None:
                reject(j.id, f"has no NetSuite posting period for {j.entry_date} — create the period in NetSuite "
                       "(Setup > Accounting > Manage Accounting Periods)", "netsuite.period_missing")
            elif (why := period.refuses("journal")) is not None:
                reject(j.id, f"refused before sending: {why} — post into the next open period (late-item policy) "
                       "or have the accountant reopen it", "netsuite.period_closed",
                       {"period": period.name, "period_state": period.state()})
            elif period.start.strftime("%Y-%m") != j.period:
                reject(j.id, f"entry date {j.entry_date} is in NetSuite period {period.name}, not the journal's "
                       f"period {j.period} — fix the entry date", "netsuite.period_mismatch")
            else:
                to_write += [(d, setup.currencies[d.currency], period.id) for d in jdocs
                             if d.external_id not in held]
        written = self._parallel(
            lambda w: self.client.upsert("journalentry", w[0].external_id,
                                         w[0].body(currency_id=w[1], period_id=w[2])), to_write)
        self._raise_retryable(written)
        failed: dict[str, LedgerbridgeError] = {}
        for (doc, _, _), res in zip(to_write, written, strict=True):
            if isinstance(res, LedgerbridgeError):
                failed.setdefault(doc.journal_id, res)
        self._undo_partial(docs, to_write, written, failed)
        now = self._held("journalentry", [d.external_id for d, _, _ in to_write])
        for jid in dict.fromkeys(d.journal_id for d, _, _ in to_write):
            if jid in failed:
                err = failed[jid]
                err.details.update({"journal_id": jid, "run_id": run.run_id})
                results[jid] = PostResult(jid, PostStatus.REJECTED, None, err)
                continue
            got = [now.get(d.external_id) or held.get(d.external_id) for d in docs[jid]]  # + held before
            if all(got):
                results[jid] = PostResult(jid, PostStatus.POSTED, ",".join(h.tranid for h in got if h))
            else:  # written but not visible yet: the flow's read-back decides
                results[jid] = PostResult(jid, PostStatus.POSTED, None)
        return [results[j.id] for j in run.journals]

    def _undo_partial(self, docs: Mapping[str, list[JournalDoc]], to_write: Sequence[tuple[JournalDoc, str, str]],
                      written: Sequence[Any], failed: Mapping[str, LedgerbridgeError]) -> None:
        """A multi-currency journal whose other document was refused: delete the documents written for it, so a
        refused journal leaves nothing half-posted (best effort; the next run finds any leftover by external id
        and reports a conflict rather than posting twice)."""
        for (doc, _, _), res in zip(to_write, written, strict=True):
            if doc.journal_id in failed and not isinstance(res, LedgerbridgeError) and len(docs[doc.journal_id]) > 1:
                try:
                    self.client.request("DELETE", f"/services/rest/record/v1/journalentry/{res}")
                    failed[doc.journal_id].details.setdefault("deleted_siblings", []).append(doc.external_id)
                except LedgerbridgeError as exc:
                    failed[doc.journal_id].details["delete_failed"] = str(exc)

    def _held(self, record_type: str, external_ids: Sequence[str], *, prefixes: bool = False) -> dict[str, Held]:
        """NetSuite transactions of ``record_type`` by external id, with their posting lines (foreign amounts).
        ``prefixes``: also match ``<id>~<currency>`` documents of split journals."""
        out: dict[str, dict[str, Any]] = {}
        ids = sorted(set(external_ids))
        for part in _chunks(ids, CHUNK):
            cond = f"t.externalid IN {sql_in(part)}"
            if prefixes:
                cond = "(" + cond + "".join(f" OR t.externalid LIKE {sql_text(e + SPLIT + '%')}" for e in part) + ")"
            rows = self.client.suiteql(
                "SELECT t.id AS id, t.externalid AS externalid, t.tranid AS tranid, cur.symbol AS currency, "
                "tal.account AS account, tl.debitforeignamount AS debit, tl.creditforeignamount AS credit "
                "FROM transaction t JOIN currency cur ON cur.id = t.currency "
                "JOIN transactionline tl ON tl.transaction = t.id "
                "JOIN transactionaccountingline tal "
                "ON tal.transaction = tl.transaction AND tal.transactionline = tl.id "
                f"WHERE t.recordtype = {sql_text(record_type)} AND tal.posting = 'T' AND {cond} "
                "ORDER BY t.id, tl.id")
            for r in rows:
                ext = str(r["externalid"])
                if prefixes and journal_id_of(ext) not in part:
                    continue  # LIKE's "_" matched another id
                h = out.setdefault(ext, {"id": str(r["id"]), "tranid": str(r.get("tranid") or ""),
                                         "currency": str(r["currency"]), "lines": []})
                h["lines"].append((str(r["account"]), _dec(r.get("debit")), _dec(r.get("credit"))))
        return {e: Held(h["id"], e, h["tranid"], h["currency"], tuple(h["lines"])) for e, h in out.items()}

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """What NetSuite holds per journal id: totals per currency (foreign amounts), line count, document
        numbers. Ids NetSuite does not hold are absent."""
        held = self._held("journalentry", list(journal_ids), prefixes=True)
        grouped: dict[str, list[Held]] = defaultdict(list)
        for h in held.values():
            grouped[journal_id_of(h.external_id)].append(h)
        out: dict[str, ReadBack] = {}
        for jid, hs in grouped.items():
            deb: dict[str, Decimal] = defaultdict(Decimal)
            cre: dict[str, Decimal] = defaultdict(Decimal)
            for h in hs:
                for _, d, c in h.lines:
                    deb[h.currency] += d
                    cre[h.currency] += c
            out[jid] = ReadBack(",".join(sorted(h.tranid for h in hs)),
                                {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(deb)},
                                sum(len(h.lines) for h in hs))
        return out

    def period_status(self, entity: str, period: str) -> str | None:
        """The NetSuite accounting period starting on ``period``'s first day: ``open`` / ``closing`` (A/R or A/P
        locked) / ``locked`` (all locked) / ``closed``; None for an entity this target does not keep or a period
        NetSuite does not have."""
        if entity not in self.subsidiaries:
            return None
        start = dt.date.fromisoformat(f"{period}-01")
        hit = next((p for p in self.periods() if p.start == start), None)
        return hit.state() if hit else None

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """What NetSuite's GL holds for ``entity``'s subsidiary: ``(period "YYYY-MM", our account code, currency)
        -> (debit, credit)`` in the transaction currency, summed by SuiteQL over posting lines of every
        transaction (journals and invoices). Accounts outside the map are reported under their number."""
        sub = self._subsidiary(entity, "account totals")
        self.setup()
        rows = self.client.suiteql(
            "SELECT TO_CHAR(ap.startdate, 'YYYY-MM') AS period, tal.account AS account, cur.symbol AS currency, "
            "SUM(tl.debitforeignamount) AS debit, SUM(tl.creditforeignamount) AS credit "
            "FROM transactionaccountingline tal "
            "JOIN transactionline tl ON tl.transaction = tal.transaction AND tl.id = tal.transactionline "
            "JOIN transaction t ON t.id = tal.transaction JOIN accountingperiod ap ON ap.id = t.postingperiod "
            "JOIN currency cur ON cur.id = t.currency "
            f"WHERE tal.posting = 'T' AND tl.subsidiary = {int(sub)} "
            "GROUP BY TO_CHAR(ap.startdate, 'YYYY-MM'), tal.account, cur.symbol ORDER BY 1, 2, 3")
        out: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}
        for r in rows:
            code = self._accounts_by_id.get(str(r["account"]), f"netsuite:{r['account']}")
            key = (str(r["period"]), code, str(r["currency"]))
            d, c = out.get(key, (Decimal(0), Decimal(0)))
            out[key] = (d + _dec(r.get("debit")), c + _dec(r.get("credit")))
        return out

    def trial_balance(self, entity: str, from_period: str | None = None, to_period: str | None = None
                      ) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
        """NetSuite's debit and credit per (our account code, currency) over the periods from..to (inclusive)."""
        out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for (period, code, ccy), (d, c) in self.account_totals(entity).items():
            if (from_period and period < from_period) or (to_period and period > to_period):
                continue
            od, oc = out.get((code, ccy), (Decimal(0), Decimal(0)))
            out[(code, ccy)] = (od + d, oc + c)
        return out

    # ------------------------------------------------------------------ master data (upsert by external id)

    def _ids_by_external(self, record: str, external_ids: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(sorted(set(external_ids)), CHUNK):
            for r in self.client.suiteql(f"SELECT id, externalid FROM {record} WHERE externalid IN {sql_in(part)} "
                                         "ORDER BY id"):
                out[str(r["externalid"])] = str(r["id"])
        return out

    def _push(self, record: str, items: Sequence[tuple[str, dict[str, Any] | str]]) -> dict[str, str]:
        """Upsert ``(external id, body)``s; an item whose body is a text is a refusal found before sending. All
        valid ones are written; then the refused ones are raised together (the flow dead-letters and retries)."""
        good = [(k, b) for k, b in items if isinstance(b, dict)]
        res = self._parallel(lambda kb: self.client.upsert(record, kb[0], kb[1]), good)
        self._raise_retryable(res)
        out = {k: r for (k, _), r in zip(good, res, strict=True) if not isinstance(r, LedgerbridgeError)}
        bad = [f"{k}: {b}" for k, b in items if isinstance(b, str)]
        bad += [f"{k}: {r.message}" for (k, _), r in zip(good, res, strict=True) if isinstance(r, LedgerbridgeError)]
        if bad:
            raise RecordValidationError(f"{self.system}: {len(bad)} {record} record(s) refused: " + "; ".join(bad[:20]),
                                        code="LB-V001", details={"record": record, "refused": bad[:200],
                                                                 "pushed": sorted(out)})
        return out

    def push_customers(self, customers: Iterable[Customer]) -> dict[str, str]:
        """``customer/eid:<customer id>`` per customer (company name, subsidiary, currency, active flag).
        Returns customer id -> NetSuite internal id."""
        setup = self.setup()
        items: list[tuple[str, dict[str, Any] | str]] = []
        for c in customers:
            sub = self.subsidiaries.get(c.legal_entity_id)
            cur = setup.currencies.get(c.currency)
            if sub is None or cur is None:
                items.append((c.id, f"legal entity {c.legal_entity_id} has no subsidiary" if sub is None
                              else f"currency {c.currency} is not enabled in NetSuite"))
                continue
            items.append((c.id, {"companyName": c.name[:83], "subsidiary": {"id": sub}, "currency": {"id": cur},
                                 "isInactive": not c.active, "isPerson": False}))
        return self._push("customer", items)

    def push_projects(self, projects: Iterable[Project]) -> dict[str, str]:
        """``job/eid:<project id>`` per project, under its customer (which must have been pushed). Returns
        project id -> NetSuite internal id."""
        projs = list(projects)
        customers = self._ids_by_external("customer", [p.customer_id for p in projs])
        items: list[tuple[str, dict[str, Any] | str]] = []
        for p in projs:
            sub = self.subsidiaries.get(p.legal_entity_id)
            if p.customer_id not in customers or sub is None:
                items.append((p.id, f"customer {p.customer_id} is not in NetSuite — push the customers first"
                              if sub is not None else f"legal entity {p.legal_entity_id} has no subsidiary"))
                continue
            body: dict[str, Any] = {"companyName": p.name[:83], "parent": {"id": customers[p.customer_id]},
                                    "subsidiary": {"id": sub}, "startDate": p.start_date.isoformat(),
                                    "isInactive": p.status is ProjectStatus.CLOSED}
            if p.end_date is not None:
                body["projectedEndDate"] = p.end_date.isoformat()
            items.append((p.id, body))
        return self._push("job", items)

    def push_resources(self, resources: Iterable[Resource]) -> dict[str, str]:
        """``employee/eid:<resource id>`` per resource (name, title, subsidiary, department from the
        cost_center mapping when the department is available to the subsidiary). Returns resource id ->
        NetSuite internal id."""
        res = list(resources)
        dept_rule = next((r for r in self.rules if r.record == "department" and r.dimension == "cost_center"), None)
        depts = self._dimension_values({"cost_center": {r.cost_center for r in res}}) if dept_rule else {}
        items: list[tuple[str, dict[str, Any] | str]] = []
        for r in res:
            sub = self.subsidiaries.get(r.home_entity_id)
            if sub is None:
                items.append((r.id, f"legal entity {r.home_entity_id} has no subsidiary"))
                continue
            first, _, last = r.name.partition(" ")
            body: dict[str, Any] = {"firstName": first[:32], "lastName": (last or first)[:32], "title": r.role[:99],
                                    "subsidiary": {"id": sub}, "isInactive": not r.active}
            dept = depts.get(("department", r.cost_center))
            if dept is not None and dept.allowed_for(sub) and not dept.inactive:
                body["department"] = {"id": dept.id}
            items.append((r.id, body))
        return self._push("employee", items)

    # ------------------------------------------------------------------ pre-flight

    def check(self, account_codes: Iterable[str] = (), periods: Iterable[str] = ()) -> list[str]:
        """What would stop a run, found before one starts (empty = ready): authentication, the subsidiaries, our
        ``account_codes`` (the chart we post to) against NetSuite's accounts per subsidiary, the invoice items
        and tax codes of the maps, and a posting period for each ``periods`` month ("YYYY-MM") — one line each,
        naming the fix. Reads only (a handful of SuiteQL queries)."""
        try:
            setup = self.setup()
        except LedgerbridgeError as exc:
            return [str(exc)]
        out: list[str] = []
        for code in sorted(set(account_codes)):
            acct = setup.accounts.get(code)
            if acct is None:
                out.append(f"account {code}: not in NetSuite — create it or map it (options.account_map)")
                continue
            if acct.inactive:
                out.append(f"account {code}: NetSuite account {acct.name} is inactive")
            closed = sorted(e for e, s in self.subsidiaries.items() if not acct.allowed_for(s))
            if closed:
                out.append(f"account {code}: NetSuite account {acct.name} is not available to {', '.join(closed)}")
        try:
            self._item_ids()
        except LedgerbridgeError as exc:
            out.append(exc.message)
        numeric = sorted({v for v in self.tax_map.values() if v.isdigit()}, key=int)
        found: set[str] = set()
        if numeric:
            found = {str(r["id"]) for r in self.client.suiteql(
                f"SELECT id FROM salestaxitem WHERE id IN ({', '.join(numeric)}) AND isinactive = 'F' ORDER BY id")}
        out += [f"tax code {k}: NetSuite tax code {v} not found or inactive (options.tax_map takes internal ids)"
                for k, v in sorted(self.tax_map.items()) if v not in found]
        known = {p.start.strftime("%Y-%m"): p for p in self.periods()}
        for month in sorted(set(periods)):
            p = known.get(month)
            if p is None:
                out.append(f"period {month}: NetSuite has no posting period — create it")
            elif p.state() in ("closed", "locked"):
                out.append(f"period {month}: {p.refuses('journal')}")
        return out

    # ------------------------------------------------------------------ invoices

    def _item_ids(self) -> dict[str, str]:
        if self._items is None:
            wanted = {str(v) for v in self.item_map.values() if not isinstance(v, int)}
            found: dict[str, str] = {}
            if wanted:
                for r in self.client.suiteql(f"SELECT id, itemid FROM item WHERE itemid IN {sql_in(sorted(wanted))} "
                                             "ORDER BY id"):
                    found[str(r["itemid"])] = str(r["id"])
            missing = sorted(wanted - set(found))
            if missing:
                raise PermanentError(f"{self.system}: item_map/invoice_item name items NetSuite does not have: "
                                     f"{missing}", code="LB-P004")
            self._items = {k: str(v) if isinstance(v, int) else found[str(v)] for k, v in self.item_map.items()}
        return self._items

    def create_invoices(self, invoices: Sequence[Invoice]) -> dict[str, InvoiceResult | LedgerbridgeError]:
        """Create (upsert by external id = invoice id) the invoices NetSuite does not hold yet, ``concurrency``
        at a time, and read number, status and total back. Per invoice: its result, or the error that refused it
        (:class:`RecordValidationError` before sending or from NetSuite; :class:`ConflictError` when NetSuite holds
        it — or computed it — with another total)."""
        invs = list(invoices)
        setup = self.setup()
        items = self._item_ids()
        customers = self._ids_by_external("customer", [i.customer_id for i in invs])
        periods = self.periods()
        held = self._invoices([i.id for i in invs])
        out: dict[str, InvoiceResult | LedgerbridgeError] = {}
        todo: list[tuple[Invoice, dict[str, Any]]] = []
        for inv in invs:
            if inv.id in held:
                out[inv.id] = self._checked(inv, held[inv.id])
                continue
            try:
                sub = self._subsidiary(inv.legal_entity_id, f"invoice {inv.id}")
            except PermanentError as exc:
                out[inv.id] = exc
                continue
            body, problems = invoice_body(inv, InvoiceSetup(customers.get(inv.customer_id), sub,
                                                            setup.currencies.get(inv.currency), items, self.tax_map))
            period = period_for(periods, inv.invoice_date)
            why = "no NetSuite posting period" if period is None else period.refuses("invoice")
            if why:
                problems.append(f"{why} for {inv.invoice_date}")
            if problems:
                out[inv.id] = RecordValidationError(
                    f"{self.system}: invoice {inv.id} refused before sending: {'; '.join(problems)}", code="LB-V001",
                    details={"invoice_id": inv.id, "rule": "netsuite.invoice_invalid", "problems": problems})
                continue
            todo.append((inv, body))
        written = self._parallel(lambda ib: self.client.upsert("invoice", ib[0].id, ib[1]), todo)
        self._raise_retryable(written)
        now = self._invoices([inv.id for inv, _ in todo])
        for (inv, _), res in zip(todo, written, strict=True):
            if isinstance(res, LedgerbridgeError):
                res.details["invoice_id"] = inv.id
                out[inv.id] = res
            elif inv.id in now:
                out[inv.id] = self._checked(inv, now[inv.id])
            else:
                out[inv.id] = InvoiceResult(inv.id, None, "submitted", f"invoice/{res}", books_ledger=True)
        return {i.id: out[i.id] for i in invs}

    def create_invoice(self, inv: Invoice) -> InvoiceResult:
        """One invoice (the :class:`~ledgerbridge.connectors.base.InvoiceTarget` contract); a refusal raises."""
        res = self.create_invoices([inv])[inv.id]
        if isinstance(res, LedgerbridgeError):
            raise res
        return res

    def _checked(self, inv: Invoice, h: Mapping[str, Any]) -> InvoiceResult | LedgerbridgeError:
        if h["total"] != inv.total:
            return ConflictError(f"{self.system}: invoice {inv.id} ({h['tranid']}) totals {h['total']} in NetSuite, "
                                 f"ours {inv.total} (tax codes or rounding differ) — credit it in NetSuite and "
                                 "re-bill", code="LB-C001", details={"invoice_id": inv.id, "tranid": h["tranid"]})
        return self._result(inv.id, h)

    @staticmethod
    def _result(key: str, h: Mapping[str, Any]) -> InvoiceResult:
        return InvoiceResult(key, h["tranid"] or None, INVOICE_STATUS.get(str(h["status"]), "submitted"),
                             f"invoice/{h['id']}", books_ledger=True)

    def _invoices(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for part in _chunks(sorted(set(keys)), CHUNK):
            for r in self.client.suiteql(
                    "SELECT id, externalid, tranid, status, foreigntotal, foreignamountremaining FROM transaction "
                    f"WHERE recordtype = 'invoice' AND externalid IN {sql_in(part)} ORDER BY id"):
                out[str(r["externalid"])] = {"id": str(r["id"]), "tranid": str(r.get("tranid") or ""),
                                             "status": str(r.get("status") or ""), "total": _dec(r.get("foreigntotal")),
                                             "remaining": _dec(r.get("foreignamountremaining"))}
        return out

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]:
        """Number and canonical status per invoice key NetSuite holds (keys it does not hold are absent)."""
        return {k: self._result(k, h) for k, h in self._invoices(keys).items()}

    def changed_invoices(self, cursor: ChangeCursor | None, *, overlap: dt.timedelta = dt.timedelta(minutes=5)
                         ) -> tuple[dict[str, InvoiceResult], ChangeCursor | None]:
        """Invoices (ours: with an external id) modified since ``cursor`` minus ``overlap`` — NetSuite's
        ``lastmodifieddate`` is in the account time zone, so the watermark stays in that zone and the overlap
        absorbs commit lag; repeats are harmless (statuses are idempotent). Scanned by id in keyset order, so a
        result larger than SuiteQL's row cap is read in several queries."""
        cond = "recordtype = 'invoice' AND externalid IS NOT NULL"
        if cursor is not None:
            since = dt.datetime.fromisoformat(cursor.modified) - overlap
            cond += f" AND lastmodifieddate >= TO_TIMESTAMP({sql_text(since.strftime('%Y-%m-%d %H:%M:%S'))}, " \
                    "'YYYY-MM-DD HH24:MI:SS')"
        out: dict[str, InvoiceResult] = {}
        newest = cursor.modified if cursor else None
        for r in self.client.suiteql_by_id(
                "id, externalid, tranid, status, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified",
                f"transaction WHERE {cond}"):
            out[str(r["externalid"])] = self._result(str(r["externalid"]), {
                "id": r["id"], "tranid": str(r.get("tranid") or ""), "status": r.get("status")})
            if newest is None or str(r["modified"]) > newest:
                newest = str(r["modified"])
        return out, ChangeCursor(newest) if newest else None


__all__ = ["CAPABILITIES", "ChangeCursor", "Held", "NetSuiteLedger"]
