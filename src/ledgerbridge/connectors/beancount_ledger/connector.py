"""The Beancount ledger target: the embedded ledger of the demo, and a reference :class:`LedgerTarget`.

``post_journals`` appends a posting run to the entity's ledger file, validated with beancount's loader (zero errors)
before release; a journal id the ledger already holds is not appended again (same content -> ``posted``; different
content -> ``ConflictError``). ``read_back`` answers from the loaded ledger. Periods can be closed in the ledger with
a ``custom "ledgerbridge-period"`` directive (:meth:`set_period_status`); journals for a non-open period are refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ledgerbridge.connectors.base import (
    Capabilities,
    FailureMode,
    IdempotencyMechanism,
    PostingBatch,
    PostResult,
    PostStatus,
    ReadBack,
    SystemKind,
)
from ledgerbridge.connectors.beancount_ledger.client import SYSTEM, BeancountLedgerClient
from ledgerbridge.connectors.beancount_ledger.mapping import (
    Chart,
    LedgerState,
    RenderedJournal,
    entity_component,
    journal_problems,
    quote,
    render_journal,
    render_opens,
    render_period_status,
)
from ledgerbridge.errors import ConflictError, PermanentError, RecordValidationError
from ledgerbridge.model.entities import Account, LegalEntity

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.LEDGER,
    writes=frozenset({"journal_entry"}),
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    supports_read_back=True,
    failure_mode=FailureMode.LINE_LEVEL,
)


class BeancountLedgerConnector:
    """A :class:`~ledgerbridge.connectors.base.LedgerTarget` writing ``<root>/ledger/<ENTITY>.beancount`` files,
    included from ``<root>/main.beancount``.

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

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # ------------------------------------------------------------------ helpers

    def _path(self, entity: str) -> Path:
        if entity not in self.entities:
            raise PermanentError(
                f"{SYSTEM}: no ledger is configured for legal entity {entity!r} (configured: "
                f"{sorted(self.entities)}) — add the entity to the Beancount target's configuration",
                details={"entity": entity},
            )
        return self.client.entity_path(entity_component(entity))

    def _header(self, entity: str) -> str:
        e = self.entities[entity]
        return (f"; ledgerbridge ledger of legal entity {e.id} ({e.name}, functional currency "
                f"{e.functional_currency}).\n; Appended by ledgerbridge posting runs and validated with beancount's "
                "loader before each release.\n; Posted transactions are never edited: corrections are reversing "
                "entries.\n\n")

    def main_text(self) -> str:
        """``main.beancount``: options plus one ``include`` per entity ledger that exists."""
        lines = ["; ledgerbridge main ledger: one included file per legal entity. Generated; do not edit.",
                 f"option \"title\" {quote(self.title)}"]
        lines += [f'option "operating_currency" {quote(c)}'
                  for c in sorted({e.functional_currency for e in self.entities.values()})]
        for eid in sorted(self.entities):
            path = self.client.entity_path(entity_component(eid))
            if path.exists():
                lines.append(f"include {quote(self.client.rel(path))}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ posting

    def post_journals(self, run: PostingBatch) -> list[PostResult]:
        """Append the run's new journals to the entity ledger in one validated release.

        Per journal: already held with the same content -> ``posted`` (not appended again); held with different
        content -> ``rejected`` with :class:`ConflictError`; period not open in the ledger, unknown or inactive
        account, currency not allowed, bad dimension name -> ``rejected`` with :class:`RecordValidationError`.
        The rest are appended together; if beancount's loader reports any error the whole append is refused
        (:class:`RecordValidationError` raised, ledger untouched)."""
        entity = run.legal_entity_id
        path = self._path(entity)
        state = self.client.state(path)
        results: dict[str, PostResult] = {}
        todo: list[RenderedJournal] = []
        period_state = state.periods.get(run.period)
        for j in run.journals:
            held = state.journals.get(j.id)
            problems = journal_problems(j, self.chart, self.currencies[entity], state.opened)
            rendered = None if problems else render_journal(j, self.chart, run.run_id)
            if held is not None:
                if rendered is not None and rendered.content_hash == held.content_hash:
                    results[j.id] = PostResult(j.id, PostStatus.POSTED, held.readback.target_ref)
                else:
                    results[j.id] = PostResult(j.id, PostStatus.REJECTED, held.readback.target_ref, ConflictError(
                        f"{SYSTEM}: journal {j.id} is already posted at {held.readback.target_ref} with different "
                        "content; posted journals are never edited — post a reversal and a new journal with a new id",
                        details={"journal_id": j.id, "run_id": run.run_id, "target_ref": held.readback.target_ref},
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
            new_state = self._append(run, path, todo, state)
            for r in todo:
                results[r.journal_id] = PostResult(r.journal_id, PostStatus.POSTED,
                                                   new_state.journals[r.journal_id].readback.target_ref)
        if path.exists():
            self.client.ensure_main(self.main_text())
        return [results[j.id] for j in run.journals]

    def _append(self, run: PostingBatch, path: Path, todo: list[RenderedJournal], state: LedgerState) -> LedgerState:
        entity = run.legal_entity_id
        new_accounts = set().union(*(r.accounts for r in todo)) - set(state.opened)
        text = (f"; ---- posting run {run.run_id}: {len(todo)} journal(s), {entity} {run.period}\n\n"
                + render_opens(new_accounts, self.currencies[entity], self.open_date)
                + "".join(r.text for r in todo))
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

        return self.client.append_validated(path, text, self._header(entity), check)

    # ------------------------------------------------------------------ reading

    def read_back(self, journal_ids: Sequence[str]) -> dict[str, ReadBack]:
        """Totals per currency and line count of each journal id the ledger holds (from beancount's loaded
        entries); ids not held are absent."""
        wanted = set(journal_ids)
        out: dict[str, ReadBack] = {}
        for eid in sorted(self.entities):
            path = self._path(eid)
            if not wanted & self.client.journal_ids_in(path):
                continue
            held = self.client.state(path).journals
            out.update({jid: held[jid].readback for jid in wanted if jid in held})
        return out

    def period_status(self, entity: str, period: str) -> str | None:
        """The latest ``ledgerbridge-period`` status declared in the entity's ledger, or None when none was."""
        if entity not in self.entities:
            return None
        return self.client.state(self._path(entity)).periods.get(period)

    def set_period_status(self, entity: str, period: str, status: str, on: dt.date) -> None:
        """Declare ``period`` of ``entity`` open/closing/closed/locked in the ledger as of ``on`` (validated
        append). Journals for a period whose latest status is not ``open`` are refused by :meth:`post_journals`."""
        path = self._path(entity)
        self.client.append_validated(path, render_period_status(entity, period, status, on), self._header(entity),
                                     lambda _state: [])
        self.client.ensure_main(self.main_text())

    def check(self) -> list[str]:
        """``bean-check`` of the whole ledger (main file and every entity file): beancount's error messages."""
        return self.client.check_main()
