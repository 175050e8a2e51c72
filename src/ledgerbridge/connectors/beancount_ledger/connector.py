"""The Beancount ledger target: the embedded ledger of the demo, and a reference :class:`LedgerTarget`.

``post_journals`` appends a posting run to the entity's period file (``ledger/US01/2026-01.beancount``, included
via ``ledger/US01.beancount`` from ``main.beancount``), validated with beancount's loader (zero errors) before
release; a journal id the ledger already holds is not appended again (same content -> ``posted``; different content
-> ``ConflictError``). ``read_back`` answers from the loaded ledger. Periods can be closed in the ledger with a
``custom "ledgerbridge-period"`` directive (:meth:`set_period_status`); journals for a non-open period are refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from beancount.core import data

from ledgerbridge.connectors.base import (
    Capabilities,
    FailureMode,
    IdempotencyMechanism,
    InvoiceResult,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
    atomic_write_bytes,
    file_lock,
)
from ledgerbridge.connectors.beancount_ledger.client import MAIN_NAME, SYSTEM, BeancountLedgerClient, EntityFiles
from ledgerbridge.connectors.beancount_ledger.mapping import (
    Chart,
    LedgerState,
    RenderedJournal,
    entity_component,
    journal_problems,
    quote,
    read_invoices,
    render_invoice,
    render_journal,
    render_opens,
    render_period_status,
)
from ledgerbridge.errors import ConflictError, LedgerbridgeError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Account, Invoice, LegalEntity

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.LEDGER,
    writes=frozenset({"journal_entry", "invoice"}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)


class BeancountLedgerConnector:
    """A :class:`~ledgerbridge.connectors.base.LedgerTarget` keeping one Beancount ledger per legal entity under
    ``root`` (layout: :mod:`ledgerbridge.connectors.beancount_ledger.client`), all included from ``main.beancount``.

    ``accounts``: the chart (shared accounts have ``legal_entity_id`` None). ``entities``: the legal entities this
    ledger keeps. ``currencies``: extra currencies allowed per entity besides its functional currency (they go into
    each account's ``open`` directive). ``open_date``: the date of the generated ``open`` directives.
    """

    def __init__(
        self,
        root: Path | str,
        accounts: Iterable[Account],
        entities: Iterable[LegalEntity],
        *,
        currencies: Mapping[str, Iterable[str]] | None = None,
        open_date: dt.date = dt.date(2000, 1, 1),
        title: str = "ledgerbridge ledger",
    ) -> None:
        self.client = BeancountLedgerClient(root)
        self.chart = Chart(accounts)
        self.entities = {e.id: e for e in entities}
        extra = currencies or {}
        self.currencies = {
            e.id: frozenset({e.functional_currency, *(c.upper() for c in extra.get(e.id, ()))})
            for e in self.entities.values()
        }
        comps = [entity_component(eid) for eid in self.entities]
        if len(set(comps)) != len(comps):
            raise ValueError(f"legal entity ids {sorted(self.entities)} collide as ledger file names {comps}")
        self.open_date = open_date
        self.title = title
        self._invoice_cache: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, object]]]] = {}

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ helpers

    def _files(self, entity: str) -> EntityFiles:
        if entity not in self.entities:
            raise PermanentError(
                f"{SYSTEM}: no ledger is configured for legal entity {entity!r} (configured: "
                f"{sorted(self.entities)}) — add the entity to the Beancount target's configuration",
                details={"entity": entity},
            )
        return self.client.files(entity_component(entity))

    def _headers(self, entity: str) -> Callable[[str], str]:
        e = self.entities[entity]

        def header(kind: str) -> str:
            what = {"entity": "ledger (includes only; generated)", "accounts": "accounts and period statuses",
                    "invoices": "invoice register (numbers and statuses; no amounts move)"}.get(
                kind, f"transactions of period {kind}")
            return (f"; ledgerbridge: {e.id} ({e.name}, functional currency {e.functional_currency}) — {what}.\n"
                    "; Appended by ledgerbridge posting runs and validated with beancount's loader before each "
                    "release.\n; Posted transactions are never edited: corrections are reversing entries.\n\n")

        return header

    def main_text(self) -> str:
        """``main.beancount``: options plus one ``include`` per entity ledger that exists."""
        lines = ["; ledgerbridge main ledger: one included file per legal entity. Generated; do not edit.",
                 f"option \"title\" {quote(self.title)}"]
        lines += [f'option "operating_currency" {quote(c)}'
                  for c in sorted({e.functional_currency for e in self.entities.values()})]
        for eid in sorted(self.entities):
            path = self.client.files(entity_component(eid)).entity_file
            if path.exists():
                lines.append(f"include {quote(self.client.rel(path))}")
        return "\n".join(lines) + "\n"

    def _write_main(self) -> None:
        with file_lock(self.client.root / f".{MAIN_NAME}.lock"):
            self.client.write_if_changed(self.client.main_path, self.main_text())

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        """Append the run's new journals to the entity's period file in one validated release.

        Per journal: already held with the same content -> ``posted`` (not appended again); held with different
        content -> ``rejected`` with :class:`ConflictError`; period not open in the ledger, unknown or inactive
        account, currency not allowed, bad dimension name -> ``rejected`` with :class:`RecordValidationError`.
        The rest are appended together; if beancount's loader reports any error the whole append is refused
        (:class:`RecordValidationError` raised, ledger untouched)."""
        entity = run.legal_entity_id
        ef = self._files(entity)
        with self.client.entity_lock(ef):
            results = self._post_locked(run, ef)
        self._write_main()
        return [results[j.id] for j in run.journals]

    def _post_locked(self, run: PostingBatch, ef: EntityFiles) -> dict[str, PostResult]:
        entity = run.legal_entity_id
        state = self.client.state(ef, None)  # accounts and period statuses only: small
        held_all: dict[str, tuple[str, str]] = {}  # journal id -> (content hash, target ref), in any period file
        for f in ef.period_files():
            held_all.update(self.client.scan(f))
        results: dict[str, PostResult] = {}
        todo: list[RenderedJournal] = []
        period_state = state.periods.get(run.period)
        for j in run.journals:
            held = held_all.get(j.id)
            problems = journal_problems(j, self.chart, self.currencies[entity], state.opened, self.open_date)
            rendered = None if problems else render_journal(j, self.chart, run.run_id)
            if held is not None:
                held_hash, ref = held
                if rendered is None:  # held already: compare content even if e.g. its account was since deactivated
                    with contextlib.suppress(ValueError):
                        rendered = render_journal(j, self.chart, run.run_id)
                if rendered is not None and rendered.content_hash == held_hash:
                    results[j.id] = PostResult(j.id, PostStatus.POSTED, ref)
                else:
                    results[j.id] = PostResult(j.id, PostStatus.REJECTED, ref, ConflictError(
                        f"{SYSTEM}: journal {j.id} is already posted at {ref} with different content; posted "
                        "journals are never edited — post a reversal and a new journal with a new id",
                        details={"journal_id": j.id, "run_id": run.run_id, "target_ref": ref},
                    ))
            elif period_state not in (None, "open"):
                results[j.id] = PostResult(j.id, PostStatus.REJECTED, None, RecordValidationError(
                    f"{SYSTEM}: period {run.period} of {entity} is {period_state} in the ledger; journal {j.id} "
                    "cannot be posted into it — redate it to the next open period or reopen the period",
                    details={"journal_id": j.id, "run_id": run.run_id, "rule": "beancount.period_not_open",
                             "period_status": period_state},
                ))
            elif rendered is None:
                results[j.id] = PostResult(j.id, PostStatus.REJECTED, None, RecordValidationError(
                    f"{SYSTEM}: journal {j.id} cannot go into the {entity} ledger: {'; '.join(problems)}",
                    details={"journal_id": j.id, "run_id": run.run_id, "rule": "beancount.journal_refused",
                             "problems": problems},
                ))
            else:
                todo.append(rendered)
        if todo:
            new_state = self._append(run, ef, todo, state)
            for r in todo:
                results[r.journal_id] = PostResult(r.journal_id, PostStatus.POSTED,
                                                   new_state.journals[r.journal_id].readback.target_ref)
        return results

    def _append(self, run: PostingBatch, ef: EntityFiles, todo: list[RenderedJournal],
                state: LedgerState) -> LedgerState:
        entity = run.legal_entity_id
        pf = ef.period_file(run.period)
        self.client.ensure_layout(ef, run.period, self._headers(entity))
        new_accounts = set().union(*(r.accounts for r in todo)) - set(state.opened)
        appends = {pf: f"; ---- posting run {run.run_id}: {len(todo)} journal(s)\n\n" + "".join(r.text for r in todo)}
        if new_accounts:
            appends[ef.accounts] = (f"; ---- accounts first used by posting run {run.run_id}\n"
                                    + render_opens(new_accounts, self.currencies[entity], self.open_date))
        expected = {r.journal_id: r.content_hash for r in todo}
        by_id = {j.id: j for j in run.journals}

        def check(new: LedgerState) -> list[str]:
            problems = [f"journal {jid} appears more than once in the ledger" for jid in sorted(set(new.duplicates))]
            for jid, digest in expected.items():
                held = new.journals.get(jid)
                if held is None or held.content_hash != digest:
                    problems.append(f"journal {jid}: not found in the loaded ledger as rendered")
                    continue
                # beancount balances within a tolerance; the ledger must hold the journal's amounts exactly
                problems += [f"journal {jid}: {m}" for m in held.readback.mismatches(by_id[jid])]
            return problems

        return self.client.append_validated(ef, appends, check, view=[ef.accounts, pf])

    # ------------------------------------------------------------------ reading

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Totals per currency and line count of each journal id the ledger holds (from beancount's loaded
        entries); ids not held are absent. Only period files whose text names a wanted id are loaded."""
        wanted = set(journal_ids)
        out: dict[str, ReadBack] = {}
        for eid in sorted(self.entities):
            ef = self._files(eid)
            for pf in ef.period_files():
                hits = wanted & self.client.journal_ids_in(pf)
                if hits:
                    held = self.client.state(ef, pf).journals
                    out.update({jid: held[jid].readback for jid in hits if jid in held})
        return out

    def account_totals(self, entity: str) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
        """What ``entity``'s ledger holds, read back from beancount's loaded entries (not from our store):
        ``(period, account_code, currency) -> (debit, credit)`` over every transaction in the entity's ledger.

        The period is the transaction's ``period`` metadata (written by :func:`render_journal`; a transaction
        someone added by hand without it counts in the month of its date). Debits are the positive posting amounts,
        credits the negated negative ones, in the posting currency. The account code is the chart account the
        Beancount account name belongs to (``Expenses:US01:5000-ProjectLaborCost`` -> ``5000``); an account
        outside the chart is reported under its name's code part. A ledger that does not load cleanly is refused
        (:class:`RecordValidationError` with beancount's messages)."""
        ef = self._files(entity)
        files = [f for f in [ef.accounts, *ef.period_files()] if f.exists()]
        if not files:
            return {}
        entries, errors = self.client.load_files(files)
        if errors:
            problems = self.client.describe_errors(errors)
            raise RecordValidationError(
                f"{SYSTEM}: the {entity} ledger does not load cleanly ({len(problems)} error(s): "
                f"{'; '.join(problems[:5])}) — fix the ledger files (bean-check main.beancount) and read again",
                details={"entity": entity, "errors": problems[:50]})
        codes: dict[str, str] = {}

        def code_of(account: str) -> str:
            hit = codes.get(account)
            if hit is None:
                parts = account.split(":")
                comp = parts[2] if len(parts) > 2 else account
                hit = comp.split("-", 1)[0]
                for cand in (hit, comp, *(comp[:i] for i, ch in enumerate(comp) if ch == "-")):
                    acct = self.chart.resolve(entity, cand)
                    if acct is not None and self.chart.name(entity, acct) == account:
                        hit = acct.code
                        break
                codes[account] = hit
            return hit

        debit: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        credit: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for entry in entries:
            if not isinstance(entry, data.Transaction):
                continue
            period = entry.meta.get("period")
            if not isinstance(period, str):
                period = f"{entry.date.year:04d}-{entry.date.month:02d}"
            for p in entry.postings:
                units = p.units
                if units is None or not isinstance(units.number, Decimal) or not units.currency:
                    continue
                key = (period, code_of(p.account), units.currency)
                if units.number >= 0:
                    debit[key] += units.number
                else:
                    credit[key] -= units.number
        return {k: (debit.get(k, Decimal(0)), credit.get(k, Decimal(0))) for k in sorted(set(debit) | set(credit))}

    def period_status(self, entity: str, period: str) -> str | None:
        """The latest ``ledgerbridge-period`` status declared in the entity's ledger, or None when none was."""
        if entity not in self.entities:
            return None
        return self.client.state(self._files(entity), None).periods.get(period)

    def set_period_status(self, entity: str, period: str, status: str, on: dt.date) -> None:
        """Declare ``period`` of ``entity`` open/closing/closed/locked in the ledger as of ``on`` (validated
        append to the accounts file). Journals for a period whose latest status is not ``open`` are refused by
        :meth:`post_journals`. Idempotent: when the ledger's latest status of the period already is ``status``
        nothing is written (a close step re-run after a crash must not add a second directive)."""
        ef = self._files(entity)
        text = render_period_status(entity, period, status, on)
        with self.client.entity_lock(ef):
            self.client.ensure_layout(ef, None, self._headers(entity))
            if self.client.state(ef, None).periods.get(period) == status:
                return
            self.client.append_validated(ef, {ef.accounts: text}, lambda _state: [], view=[ef.accounts])
        self._write_main()

    # ------------------------------------------------------------------ invoices (InvoiceTarget)

    def create_invoice(self, inv: Invoice) -> InvoiceResult:
        """Register one invoice (see :meth:`create_invoices`); its error is raised."""
        got = self.create_invoices([inv])[inv.id]
        if isinstance(got, LedgerbridgeError):
            raise got
        return got

    def create_invoices(self, invoices: Sequence[Invoice]) -> dict[str, InvoiceResult | LedgerbridgeError]:
        """Register invoices in their entity's invoice register ``ledger/<ENTITY>/invoices.beancount`` (included
        from the entity ledger): a ``custom "ledgerbridge-invoice" NUMBER KEY STATUS`` directive per invoice with
        customer, project, currency, net, tax, total, due date (and ``credits`` for a credit note) as metadata,
        status ``posted``. Per entity: one lock, one read of the register (lookup-before-create by key), one
        validated append. Numbers are assigned in order per entity and kind: ``INV-{entity}-{seq:06d}``, credit
        notes ``CRN-{entity}-{seq:06d}``.

        The directive moves no money: the receivable entry is the ``invoice`` journal the posting run books from
        the staged invoice postings (``books_ledger=False``), so the ledger, the store and reconciliation agree.
        A key already held with other totals -> that invoice's ConflictError; an unknown entity -> PermanentError."""
        out: dict[str, InvoiceResult | LedgerbridgeError] = {}
        by_entity: dict[str, list[Invoice]] = defaultdict(list)
        for inv in invoices:
            by_entity[inv.legal_entity_id].append(inv)
        for entity, invs in sorted(by_entity.items()):
            try:
                ef = self._files(entity)
            except PermanentError as err:
                out.update({inv.id: err for inv in invs})
                continue
            with self.client.entity_lock(ef):
                if not ef.invoices.exists():
                    ef.directory.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(ef.invoices, self._headers(entity)("invoices").encode("utf-8"))
                self.client.ensure_layout(ef, None, self._headers(entity))
                held = self._held_invoices(ef)
                counts: dict[str, int] = defaultdict(int)
                for h in held.values():
                    counts[str(h["number"]).rsplit("-", 1)[0]] += 1
                texts: list[str] = []
                seen: set[str] = set()
                for inv in invs:
                    got = held.get(inv.id)
                    if got is not None:
                        if (got["net"], got["tax"], got["currency"]) != (inv.net_total, inv.tax_total, inv.currency):
                            out[inv.id] = ConflictError(
                                f"{SYSTEM}: invoice {inv.id} is already registered as {got['number']} with net "
                                f"{got['net']} tax {got['tax']} {got['currency']}, not net {inv.net_total} tax "
                                f"{inv.tax_total} {inv.currency} — issue a credit note and a new invoice instead",
                                details={"invoice_id": inv.id, "number": got["number"]})
                        continue
                    if inv.id in seen:
                        continue
                    seen.add(inv.id)
                    credit = inv.id.startswith("CN-")
                    prefix = f"{'CRN' if credit else 'INV'}-{entity_component(entity)}"
                    counts[prefix] += 1
                    credits = inv.id[3:].rsplit("-", 1)[0] if credit else ""
                    texts.append(render_invoice(inv, f"{prefix}-{counts[prefix]:06d}", "posted", credits))
                if texts:
                    self.client.append_validated(ef, {ef.invoices: "".join(texts)}, lambda _state: [],
                                                 view=[ef.invoices])
                    held = self._held_invoices(ef)
            for inv in invs:
                if inv.id not in out:
                    out[inv.id] = self._invoice_result(held[inv.id], held)
        self._write_main()
        return out

    def invoice_status(self, keys: Sequence[str]) -> dict[str, InvoiceResult]:
        """Number and status of each key the ledger holds (``credited`` once a credit note names it)."""
        wanted = set(keys)
        out: dict[str, InvoiceResult] = {}
        for eid in sorted(self.entities):
            ef = self._files(eid)
            held = self._held_invoices(ef)
            out.update({k: self._invoice_result(held[k], held) for k in wanted & set(held)})
        return out

    def _held_invoices(self, ef: EntityFiles) -> dict[str, dict[str, object]]:
        """The invoice register of an entity, loaded with beancount (cached while the file is unchanged)."""
        path = ef.invoices
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._invoice_cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        entries, errors = self.client.load_files([path])
        if errors:
            raise RecordValidationError(
                f"{SYSTEM}: {self.client.rel(path)} does not load cleanly: "
                + "; ".join(self.client.describe_errors(errors)[:5]) + " — fix it (bean-check) and retry",
                details={"rule": "beancount.released_ledger_invalid"})
        held = read_invoices(entries)
        self._invoice_cache[path] = (stamp, held)
        return held

    @staticmethod
    def _invoice_result(got: dict[str, object], held: dict[str, dict[str, object]]) -> InvoiceResult:
        key = str(got["key"])
        credited = any(h.get("credits") == key for h in held.values())
        status = "credited" if credited and got["status"] == "posted" else str(got["status"])
        return InvoiceResult(key, str(got["number"]), status, target_ref=str(got["ref"]), books_ledger=False)

    def check(self) -> list[str]:
        """``bean-check`` of the whole ledger (main file and every entity file): beancount's error messages."""
        return self.client.check_main()
