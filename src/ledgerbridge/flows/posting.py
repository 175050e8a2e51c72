"""The posting flow (controlled batch): one posting run per legal entity, period and target ledger.

``prepare_run`` (one transaction): lines still staged for an earlier period that has closed since they were
staged are moved per the entity's late-item policy (redated to the next open period, recorded; or dead-lettered
under ``reject``); then the run is created under a deterministic id — or the unfinished run of this entity,
period and target is picked up again — and claims every staged line of the period.

``execute_run``: summarize the claimed lines (balanced by construction, lineage kept) -> validate every journal
(accounts, dimensions per entity, period open, currencies, functional amounts) -> write through the target
connector (its own idempotency: a journal id it already holds is not written twice) -> read back what the target
holds and compare (never trust a bare 2xx) -> record journals, target refs, xref, control totals and an audit
entry, and mark the lines posted, in one transaction.

Every part is idempotent: a run re-executed after a crash at any point rebuilds the same journals from the same
claimed lines, the target answers "already held" for what it got, and the store records each journal once.
Line-level failures go to the financial dead-letter queue and the rest proceeds, or — with the target system's
``posting_failure_mode: all_or_nothing`` — nothing is posted and the lines go back to staging.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import PeriodBook, Placement
from ledgerbridge.domain.posting import PostingRules, Summary, converter_from_table, summarize
from ledgerbridge.domain.validation import ValidationContext, validate_journals
from ledgerbridge.errors import ConflictError, LedgerbridgeError
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.model.entities import JournalEntry, PeriodStatus
from ledgerbridge.runtime.retry import call_with_policy
from ledgerbridge.store import audit, dead_letters, journals, staging, xref
from ledgerbridge.store.dead_letters import NewDeadLetter
from ledgerbridge.store.schema import staging_lines as staging_t
from ledgerbridge.store.staging import StagedLine
from ledgerbridge.store.xref import XrefEntry

FLOW = "posting"


@dataclass
class RunOutcome:
    run_id: str | None
    legal_entity_id: str
    period: str
    target: str
    status: str  # posted | failed | nothing_to_post | awaiting_ack | already_posted
    journals: int = 0
    journal_lines: int = 0
    staged_lines: int = 0
    dead_lettered: int = 0
    redated_lines: int = 0
    swept: int = 0
    control_totals: dict[str, Any] = field(default_factory=dict)
    message: str = ""


# --------------------------------------------------------------------------------------------------- prepare


def run_id_for(entity: str, period: str, target: str, seq: int) -> str:
    return f"{entity}-{period}-{target}-r{seq:02d}"


def prepare_run(ctx: FlowContext, entity: str, period: str, target: str | None = None) -> dict[str, Any]:
    """Sweep late lines, then create (or pick up) the run and claim the period's staged lines. JSON-able result."""
    target = target or ctx.ledger_system(entity)
    with ctx.engine.begin() as conn:
        book = ctx.period_book(conn)
        book.assert_postable(entity, period)
        swept, letters = _sweep(ctx, conn, book, entity, period)
        runs = journals.list_runs(conn, legal_entity_id=entity, period=period)
        open_run = next((r for r in runs if r.status == "started" and r.target_system == target), None)
        if open_run is not None:
            run_id = open_run.id
        else:
            pending = conn.execute(sa.select(sa.func.count()).select_from(staging_t).where(
                staging_t.c.status == "staged", staging_t.c.legal_entity_id == entity,
                staging_t.c.period == period)).scalar_one()
            if not pending:
                return {"run_id": None, "swept": swept, "dead_lettered": letters, "claimed": 0}
            seq = 1 + sum(1 for r in runs if r.target_system == target)
            run_id = run_id_for(entity, period, target, seq)
            journals.start_run(conn, run_id, legal_entity_id=entity, period=period, target_system=target)
        claimed = staging.claim_for_run(conn, run_id)
    return {"run_id": run_id, "swept": swept, "dead_lettered": letters, "claimed": len(claimed)}


def _sweep(ctx: FlowContext, conn: sa.Connection, book: PeriodBook, entity: str, period: str) -> tuple[int, int]:
    """Lines staged for an earlier period that is no longer open: apply the late-item policy now."""
    stale_periods = [p.period for p in book.periods(entity)
                     if p.period < period and p.status is not PeriodStatus.OPEN]
    if not stale_periods:
        return 0, 0
    rows = conn.execute(sa.select(staging_t).where(
        staging_t.c.status == "staged", staging_t.c.legal_entity_id == entity,
        staging_t.c.period.in_(stale_periods))).all()
    policy = ctx.late_policy(entity)
    moved = 0
    letters: list[NewDeadLetter] = []
    dead_ids: list[int] = []
    for r in rows:
        line = staging._line(r)
        try:
            placed = book.place(entity, line.posting.date, policy)
        except DomainError as err:
            letters.append(_letter_for_line(line, err.rule, str(err), "validation",
                                            mapping=ctx.config.posting_config()))
            dead_ids.append(line.id)
            continue
        conn.execute(sa.update(staging_t).where(staging_t.c.id == line.id).values(
            period=placed.period, redated_from=placed.redated_from or line.period))
        moved += 1
    if dead_ids:
        conn.execute(sa.update(staging_t).where(staging_t.c.id.in_(dead_ids)).values(status="dead"))
        dead_letters.add(conn, letters)
    if moved or dead_ids:
        audit.append(conn, "ledgerbridge", "posting.late_lines_swept", f"{entity}/{period}",
                     {"redated": moved, "dead_lettered": len(dead_ids), "policy": policy.value})
    return moved, len(dead_ids)


# --------------------------------------------------------------------------------------------------- execute


def execute_run(ctx: FlowContext, run_id: str, *, rules: PostingRules | None = None,
                rules_snapshot: dict[str, Any] | None = None) -> RunOutcome:
    """Summarize, validate, write, confirm and record one run (idempotent; see the module doc). ``rules``: the
    posting rules to apply (default: the configured ones; a replay with the original mapping passes the rules built
    from ``rules_snapshot``, the mapping recorded in the dead letter)."""
    with ctx.engine.connect() as conn:
        run = journals.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"posting run {run_id!r} does not exist")
        lines = staging.list_lines(conn, status="in_run", posting_run_id=run_id)
        book = ctx.period_book(conn)
    entity, period, target = run.legal_entity_id, run.period, run.target_system
    out = RunOutcome(run_id, entity, period, target, run.status, staged_lines=len(lines))
    if run.status != "started":
        out.status = "already_posted" if run.status == "posted" else run.status
        out.control_totals = dict(run.control_totals or {})
        return out
    summary = _summarize(ctx, lines, book, entity, period, run_id, rules or ctx.rules)
    out.redated_lines = sum(1 for ln in lines if ln.redated_from is not None)
    letters: list[NewDeadLetter] = []
    dead_line_ids: set[int] = set()
    by_ref = _lines_by_ref(lines)
    mapping = ctx.config.posting_config() if rules is None else rules_snapshot  # what the replay may restore

    def kill(journal: JournalEntry | None, refs: Iterable[Any], txn: str | None, code: str, text: str,
             kind: str) -> None:
        for ref in refs:
            for ln in by_ref.get((ref.key, txn), []) if txn else [ln for (k, _), v in by_ref.items()
                                                                  if k == ref.key for ln in v]:
                if ln.id not in dead_line_ids:
                    dead_line_ids.add(ln.id)
                    letters.append(_letter_for_line(ln, code, text, kind, journal_id=journal.id if journal else None,
                                                    mapping=mapping))

    for rp in summary.rejected_postings:
        kill(None, [rp.posting.source], rp.posting.txn_type, rp.error.rule, str(rp.error), "validation")
    for rj in summary.rejected_journals:
        kill(None, rj.lineage, None, rj.error.rule, str(rj.error), "validation")

    ok_journals = list(summary.journals)
    vctx = ValidationContext.build(
        accounts=ctx.reference.accounts, dimension_values=ctx.reference.dimensions, periods=book,
        currencies={e: ctx.reference.currencies for e in ctx.reference.entities},
        functional_currencies=ctx.reference.functional_currencies)
    violations = validate_journals(ok_journals, vctx)
    bad: dict[str, list[str]] = defaultdict(list)
    for v in violations:
        bad[v.item.split(" ")[1]].append(str(v))
    mode = ctx.failure_mode(target)
    if bad and mode == "all_or_nothing":
        return _fail_run(ctx, out, lines, [
            NewDeadLetter("financial", FLOW, target, "journal_entry", jid, {"run_id": run_id, "journal_id": jid},
                          "validation", "posting.journal_invalid", "; ".join(msgs)) for jid, msgs in bad.items()])
    for jid in bad:
        j = next(j for j in ok_journals if j.id == jid)
        kill(j, _journal_refs(summary, j), j.journal_type.value, "posting.journal_invalid", "; ".join(bad[jid]),
             "validation")
    ok_journals = [j for j in ok_journals if j.id not in bad]

    connector = ctx.connector(target)
    policy = ctx.config.policies.retry.for_type("posting").to_runtime()

    def call(fn: Any, *args: Any) -> Any:  # transient errors retried with backoff, rate limits waited out
        return call_with_policy(fn, policy, *args, system=target)

    posted_ids: list[str] = []
    refs: dict[str, str] = {}
    if ok_journals:
        if hasattr(connector, "ingest_ack"):
            acked = call(connector.ingest_ack, run_id)
            results = acked if acked is not None else call(connector.post_journals, PostingBatch(
                run_id, entity, period, ok_journals, created_at=run.started_at))
        else:
            results = call(connector.post_journals, PostingBatch(
                run_id, entity, period, ok_journals, created_at=run.started_at))
        if any(r.status is PostStatus.PENDING for r in results):
            out.status = "awaiting_ack"
            out.message = f"{sum(r.status is PostStatus.PENDING for r in results)} journal(s) await the target's ack"
            return out
        rejected = {r.journal_id: r for r in results if r.status is PostStatus.REJECTED}
        if rejected and mode == "all_or_nothing" and not any(r.status is PostStatus.POSTED for r in results):
            # nothing reached the ledger: refuse the whole run. Once the target holds some journals they are
            # recorded (never orphaned) and the refused ones are dead-lettered line by line.
            return _fail_run(ctx, out, lines, [_target_letter(target, run_id, r.journal_id, r.error)
                                                for r in rejected.values()])
        posted = [r for r in results if r.status is PostStatus.POSTED]
        held = call(connector.read_back, [r.journal_id for r in posted])
        by_id = {j.id: j for j in ok_journals}
        for r in posted:
            rb = held.get(r.journal_id)
            problems = ["not found in the target on read-back"] if rb is None else rb.mismatches(by_id[r.journal_id])
            if problems:
                rejected[r.journal_id] = type(r)(r.journal_id, PostStatus.REJECTED, r.target_ref, ConflictError(
                    f"{target}: journal {r.journal_id} was acknowledged but the target holds something else: "
                    + "; ".join(problems), details={"journal_id": r.journal_id}))
            else:
                posted_ids.append(r.journal_id)
                refs[r.journal_id] = rb.target_ref if rb is not None else (r.target_ref or "")
        for jid, r in rejected.items():
            j = by_id[jid]
            err = r.error
            kill(j, _journal_refs(summary, j), j.journal_type.value, err.code if err else "posting.rejected",
                 str(err), err.kind.value if err else "permanent")
    confirmed = [j for j in ok_journals if j.id in set(posted_ids)]
    totals = control_totals(confirmed, lines, dead_line_ids)
    with ctx.engine.begin() as conn:
        journals.record_journals(conn, confirmed, target_system=target, posting_run_id=run_id, target_refs=refs)
        xref.upsert_many(conn, [XrefEntry("journal_entry", j.id, target, refs[j.id]) for j in confirmed])
        if dead_line_ids:
            staging.mark_dead(conn, run_id, sorted(dead_line_ids))
            dead_letters.add(conn, letters)
        staging.mark_posted(conn, run_id)
        journals.finish_run(conn, run_id, "posted", control_totals=totals)
        audit.append(conn, "ledgerbridge", "posting.run_posted", run_id, {
            "target": target, "journals": {j.id: journals.content_hash(j) for j in confirmed},
            "control_totals": totals})
    out.status = "posted"
    out.journals = len(confirmed)
    out.journal_lines = sum(len(j.lines) for j in confirmed)
    out.dead_lettered = len(dead_line_ids)
    out.control_totals = totals
    return out


def post_period(ctx: FlowContext, entity: str, period: str, target: str | None = None) -> RunOutcome:
    """Prepare and execute the posting run of ``entity``/``period`` (outside a durable workflow)."""
    prep = prepare_run(ctx, entity, period, target)
    if prep["run_id"] is None:
        return RunOutcome(None, entity, period, target or ctx.ledger_system(entity), "nothing_to_post",
                          swept=prep["swept"], dead_lettered=prep["dead_lettered"])
    out = execute_run(ctx, prep["run_id"])
    out.swept = prep["swept"]
    return out


def post_lines(ctx: FlowContext, line_ids: list[int], mapping: dict[str, Any]) -> list[RunOutcome]:
    """Post dead-lettered staging lines again with the posting rules recorded when they failed (``mapping`` =
    ``account_roles`` + ``posting_rules`` as the letter kept them): one dedicated run per entity and period, the
    late-item policy applied to lines whose period has closed since."""
    snapshot = PostingRules.from_config(mapping["account_roles"], mapping["posting_rules"])
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    with ctx.engine.begin() as conn:
        book = ctx.period_book(conn)
        rows = conn.execute(sa.select(staging_t).where(staging_t.c.id.in_(line_ids),
                                                       staging_t.c.status == "dead")).all()
        for r in rows:
            line = staging._line(r)
            placed = book.place(line.posting.legal_entity_id, line.posting.date,
                                ctx.late_policy(line.posting.legal_entity_id))
            if placed.period != line.period:
                conn.execute(sa.update(staging_t).where(staging_t.c.id == line.id).values(
                    period=placed.period, redated_from=placed.redated_from or line.period))
            entity = line.posting.legal_entity_id
            groups[(entity, placed.period, ctx.ledger_system(entity))].append(line.id)
        run_ids = []
        for (entity, period, target), ids in sorted(groups.items()):
            runs = journals.list_runs(conn, legal_entity_id=entity, period=period)
            run_id = run_id_for(entity, period, target, 1 + sum(1 for r in runs if r.target_system == target))
            journals.start_run(conn, run_id, legal_entity_id=entity, period=period, target_system=target,
                               control_totals={"replay_with_original_mapping": True})
            conn.execute(sa.update(staging_t).where(staging_t.c.id.in_(ids), staging_t.c.status == "dead").values(
                status="in_run", posting_run_id=run_id))
            run_ids.append(run_id)
    return [execute_run(ctx, rid, rules=snapshot, rules_snapshot=mapping) for rid in run_ids]


# --------------------------------------------------------------------------------------------------- helpers


def _summarize(ctx: FlowContext, lines: list[StagedLine], book: PeriodBook, entity: str, period: str,
               run_id: str, rules: PostingRules) -> Summary:
    start = book.require(entity, period).start_date

    def resolve(legal_entity_id: str, d: dt.date) -> Placement:
        own = book.containing(legal_entity_id, d)
        if own is not None and own.period == period:
            return Placement(period, d, None)
        return Placement(period, start, own.period if own is not None else d.strftime("%Y-%m"))

    seq = run_id.rsplit("-r", 1)[-1]
    return summarize(
        (ln.posting for ln in lines), rules, resolve, batch=f"r{seq}",
        functional_currencies=ctx.reference.functional_currencies,
        converter=converter_from_table(ctx.reference.fx, ctx.rate_date_policy()),
    )


def _lines_by_ref(lines: list[StagedLine]) -> dict[tuple[str, str], list[StagedLine]]:
    out: dict[tuple[str, str], list[StagedLine]] = defaultdict(list)
    for ln in lines:
        out[(ln.posting.source.key, ln.posting.txn_type)].append(ln)
    return out


def _journal_refs(summary: Summary, j: JournalEntry) -> list[Any]:
    refs: dict[str, Any] = {}
    for ln in j.lines:
        for r in summary.lineage.refs_for(j.id, ln.line_no):
            refs[r.key] = r
    return list(refs.values())


def _letter_for_line(line: StagedLine, code: str, text: str, kind: str, *,
                     journal_id: str | None = None, mapping: dict[str, Any] | None = None) -> NewDeadLetter:
    p = line.posting
    return NewDeadLetter(
        "financial", FLOW, p.source.system, p.source.entity, f"{p.source.id}@{p.source.version}:{p.txn_type}",
        {"staging_line_id": line.id, "txn_type": p.txn_type, "legal_entity_id": p.legal_entity_id,
         "period": line.period, "date": p.date.isoformat(), "currency": p.currency, "sign": p.sign,
         "amounts": {k: str(v) for k, v in p.amounts}, "dimensions": dict(p.dimensions),
         "source": p.source.key, "journal_id": journal_id, "mapping": mapping},
        kind, code, text)


def _target_letter(target: str, run_id: str, journal_id: str, err: LedgerbridgeError | None) -> NewDeadLetter:
    return NewDeadLetter("financial", FLOW, target, "journal_entry", journal_id,
                         {"run_id": run_id, "journal_id": journal_id},
                         err.kind.value if err else "permanent", err.code if err else "posting.rejected",
                         str(err) if err else "rejected by the target")


def _fail_run(ctx: FlowContext, out: RunOutcome, lines: list[StagedLine],
              letters: list[NewDeadLetter]) -> RunOutcome:
    """All-or-nothing: nothing is posted, the lines go back to staging, the reasons are dead-lettered."""
    with ctx.engine.begin() as conn:
        staging.release(conn, out.run_id or "")
        dead_letters.add(conn, letters)
        journals.finish_run(conn, out.run_id or "", "failed")
        audit.append(conn, "ledgerbridge", "posting.run_failed", out.run_id or "",
                     {"reasons": [lt.error_text for lt in letters][:50], "lines_released": len(lines)})
    out.status = "failed"
    out.dead_lettered = len(letters)
    out.message = f"all-or-nothing: {len(letters)} problem(s); nothing posted, {len(lines)} line(s) back in staging"
    return out


def control_totals(confirmed: list[JournalEntry], lines: list[StagedLine], dead: set[int]) -> dict[str, Any]:
    debit: dict[str, Decimal] = defaultdict(Decimal)
    credit: dict[str, Decimal] = defaultdict(Decimal)
    for j in confirmed:
        for ln in j.lines:
            debit[ln.currency] += ln.debit
            credit[ln.currency] += ln.credit
    live = [ln for ln in lines if ln.id not in dead]
    return {
        "journals": len(confirmed),
        "journal_lines": sum(len(j.lines) for j in confirmed),
        "staged_lines": len(live),
        "source_versions": len({ln.posting.source.key for ln in live}),
        "dead_lettered_lines": len(dead),
        "debit": {c: str(v) for c, v in sorted(debit.items())},
        "credit": {c: str(v) for c, v in sorted(credit.items())},
    }
