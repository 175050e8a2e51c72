"""Dead letters: replay and discard, for both queues and every stage.

Replay re-runs the failed work with the *current* configuration and reference data (a fixed rate card, a new
account mapping, a reopened period), after first checking the work is still relevant (a job re-checks relevance
when it starts):

- **transactions** letters (an item version that could not be decided or costed): the item's inbox rows go back
  to ``received`` and the transactional flow decides the item again from its full version history — so a replay of
  an item that has since been edited or recalled does exactly what the latest history says, and nothing twice.
- **posting** letters (a staged line whose journal was refused): the line goes back to ``staged`` for the next
  posting run of its entity, unless the item version it carries is no longer the one on the ledger (then the
  replay is skipped as no longer relevant, the letter closed with that reason).
- **file** letters (a bad row in a source file) cannot be replayed: the source must send the row again; discard
  them with a reason once it has.
- **billing**, **masterdata**, **drift** and **subscriptions** letters are replayed by their own flow (each re-checks
  relevance: an invoice already in the target is skipped, a drifted stream is resumed and its held items re-enter
  intake, a chain re-runs with the current configuration); the outcome is read back from the letter.

Replay is idempotent: a replayed letter is closed; replaying it again does nothing; the flows' own keys stop any
second effect. Discarding needs a reason and is audited.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.transactions import process_pending
from ledgerbridge.store import audit, dead_letters, item_state
from ledgerbridge.store.dead_letters import DeadLetter
from ledgerbridge.store.schema import dead_letters as dl_t
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import staging_lines as staging_t


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    details: list[dict[str, str]] = field(default_factory=list)


def replay(ctx: FlowContext, letters: list[DeadLetter], *, actor: str = "cli", mapping: str = "current",
           on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay letters (see the module doc). Transactions letters are replayed together: their items' inbox rows
    go back to ``received`` in one transaction and one pass of the transactional flow decides them all.

    ``mapping``: ``current`` (default) applies today's configuration; ``original`` posts posting-stage letters
    with the posting rules and account roles recorded in the letter when it failed (in a dedicated posting run).
    A transactions letter is always decided from the source version exactly as received (the inbox keeps it)."""
    if mapping not in ("current", "original"):
        raise ValueError(f"mapping {mapping!r}: choose 'current' or 'original'")
    res = ReplayResult()
    with ctx.engine.connect() as conn:  # re-read: a letter may have been replayed or discarded meanwhile
        fresh = [dead_letters.get(conn, lt.id) or lt for lt in letters]
    outcomes: dict[str, tuple[str, str]] = {}
    tx = [lt for lt in fresh if lt.status == "open" and lt.flow == "transactions" and lt.error_code != "file.bad_row"]
    if tx:
        outcomes.update(_replay_transactions(ctx, tx))
    if mapping == "original":
        outcomes.update(_replay_posting_original(ctx, [lt for lt in fresh if lt.status == "open"
                                                       and lt.flow == "posting" and lt.error_kind != "conflict"]))
    outcomes.update(_replay_other_flows(ctx, [lt for lt in fresh if lt.status == "open"
                                              and lt.flow in OTHER_FLOWS]))
    for done, letter in enumerate(fresh, start=1):
        outcome, note = outcomes.get(letter.id) or _replay_one(ctx, letter)
        setattr(res, outcome, getattr(res, outcome) + 1)
        res.details.append({"id": letter.id, "item": letter.item_key, "outcome": outcome, "note": note})
        with ctx.engine.begin() as conn:
            if outcome in ("replayed", "skipped") and letter.status == "open":
                dead_letters.mark(conn, [letter.id], "replayed", resolution=note)
            audit.append(conn, actor, f"dlq.replay.{outcome}", f"dead_letter:{letter.id}",
                         {"item_key": letter.item_key, "flow": letter.flow, "note": note})
        if on_progress is not None:
            on_progress(done)
    return res


def _replay_transactions(ctx: FlowContext, letters: list[DeadLetter]) -> dict[str, tuple[str, str]]:
    before = {lt.id: lt.attempts for lt in letters}
    reset: dict[str, int] = {}
    with ctx.engine.begin() as conn:
        for lt in letters:
            item_id = str(lt.payload.get("item_id") or lt.item_key.split("@")[0])
            reset[lt.id] = conn.execute(sa.update(inbox_t).where(
                inbox_t.c.system == lt.system, inbox_t.c.entity == lt.entity, inbox_t.c.external_id == item_id,
                inbox_t.c.status == "processed",
            ).values(status="received", processed_at=None)).rowcount
    process_pending(ctx)
    out: dict[str, tuple[str, str]] = {}
    with ctx.engine.connect() as conn:
        for lt in letters:
            now = dead_letters.get(conn, lt.id)
            if not reset[lt.id]:
                out[lt.id] = ("failed", f"no processed inbox rows for {lt.system}:{lt.entity}:{lt.item_key}")
            elif now is not None and now.attempts > before[lt.id]:
                out[lt.id] = ("failed", f"failed again: {now.error_text}")
            else:
                out[lt.id] = ("replayed", f"decided again from the item's full history ({reset[lt.id]} inbox row(s))")
    return out


#: flows whose own module knows how to replay their letters (each re-checks relevance first)
OTHER_FLOWS = ("billing", "masterdata", "drift", "subscriptions")


def _replay_other_flows(ctx: FlowContext, letters: list[DeadLetter]) -> dict[str, tuple[str, str]]:
    """Delegate to the flow that filed the letter; the outcome is read back from the letter's state."""
    if not letters:
        return {}
    out: dict[str, tuple[str, str]] = {}
    by_flow: dict[str, list[DeadLetter]] = {}
    for lt in letters:
        by_flow.setdefault(lt.flow, []).append(lt)
    if "billing" in by_flow:
        from ledgerbridge.flows import billing

        out.update(billing.replay_outcomes(ctx, by_flow["billing"]))
    if "masterdata" in by_flow:
        from ledgerbridge.flows import masterdata

        masterdata.replay_letters(ctx, by_flow["masterdata"])
    if "drift" in by_flow:
        from ledgerbridge.flows import drift

        for system, entity in sorted({(lt.system, lt.entity) for lt in by_flow["drift"]}):
            drift.resume(ctx, system, entity)
    if "subscriptions" in by_flow:
        from ledgerbridge.flows import subscriptions

        with _runtime(ctx):
            subscriptions.replay(ctx, by_flow["subscriptions"])
    with ctx.engine.connect() as conn:
        for lt in letters:
            if lt.id in out:
                continue
            now = dead_letters.get(conn, lt.id)
            if now is not None and now.status != "open":
                out[lt.id] = ("replayed", f"re-run by the {lt.flow} flow ({now.resolution or now.status})")
            elif now is not None and now.attempts > lt.attempts:
                out[lt.id] = ("failed", f"failed again: {now.error_text}")
            else:
                out[lt.id] = ("failed", f"the {lt.flow} flow left it open: {now.error_text if now else ''}")
    return out


@contextlib.contextmanager
def _runtime(ctx: FlowContext) -> Iterator[None]:
    """The durable runtime for a replay that runs workflows (launched here when the CLI has none)."""
    from ledgerbridge import runtime as rt
    from ledgerbridge.flows.context import set_current

    if rt.Runtime.is_launched():
        yield
        return
    set_current(ctx)
    rt.Runtime.launch(ctx.config.runtime.to_runtime(), queues=list(ctx.config.queue_specs().values()))
    try:
        yield
    finally:
        rt.Runtime.shutdown()
        set_current(None)


def _replay_posting_original(ctx: FlowContext, letters: list[DeadLetter]) -> dict[str, tuple[str, str]]:
    """Posting letters re-posted with the mapping they recorded, grouped by that mapping."""
    from ledgerbridge.flows.posting import post_lines

    out: dict[str, tuple[str, str]] = {}
    groups: dict[str, tuple[dict[str, Any], list[DeadLetter]]] = {}
    for lt in letters:
        snap = lt.payload.get("mapping")
        if not snap or lt.payload.get("staging_line_id") is None:
            out[lt.id] = ("failed", "the letter recorded no mapping/staging line: replay with the current mapping")
            continue
        irrelevant = _not_relevant(ctx, int(lt.payload["staging_line_id"]))
        if irrelevant:
            out[lt.id] = ("skipped", irrelevant)
            continue
        key = json.dumps(snap, sort_keys=True)
        groups.setdefault(key, (snap, []))[1].append(lt)
    for snap, group in groups.values():
        ids = [int(lt.payload["staging_line_id"]) for lt in group]
        runs = post_lines(ctx, ids, snap)
        with ctx.engine.connect() as conn:
            still_dead = {r.id for r in conn.execute(sa.select(staging_t.c.id).where(
                staging_t.c.id.in_(ids), staging_t.c.status == "dead"))}
        names = ", ".join(r.run_id or "-" for r in runs)
        for lt in group:
            line_id = int(lt.payload["staging_line_id"])
            out[lt.id] = (("failed", f"refused again with the original mapping (run {names})") if line_id in still_dead
                          else ("replayed", f"posted with the original mapping in run {names}"))
    return out


def _not_relevant(ctx: FlowContext, line_id: int) -> str | None:
    with ctx.engine.connect() as conn:
        line = conn.execute(sa.select(staging_t).where(staging_t.c.id == line_id)).first()
        if line is None:
            return f"staging line {line_id} does not exist"
        if line.status != "dead":
            return f"staging line {line_id} is {line.status}: nothing to replay"
        state = item_state.get_many(conn, line.source_system, line.source_entity, [line.source_id])
    posted = state.get(line.source_id)
    if line.sign == 1 and (posted is None or posted.posted_version != line.source_version):
        return (f"no longer relevant: {line.source_id} v{line.source_version} is not the version on the ledger "
                "any more (it was changed or recalled since)")
    return None


def _replay_one(ctx: FlowContext, letter: DeadLetter) -> tuple[str, str]:
    if letter.status != "open":
        return "skipped", f"letter is already {letter.status}"
    if letter.flow == "transactions" and letter.error_code == "file.bad_row":
        return "failed", "a bad source row cannot be replayed: have the source send it again, then discard this"
    if letter.flow == "posting":
        if letter.error_kind == "conflict":
            return "failed", ("the target acknowledged or holds journal "
                              f"{letter.payload.get('journal_id')} with other content: re-posting could double it. "
                              "Investigate in the target, correct there with a reversal, then discard this letter")
        line_id = letter.payload.get("staging_line_id")
        if line_id is None:
            return "failed", "the letter names no staging line (a run-level failure: re-run the posting run)"
        irrelevant = _not_relevant(ctx, int(line_id))
        if irrelevant:
            return ("failed" if "does not exist" in irrelevant else "skipped"), irrelevant
        with ctx.engine.begin() as conn:
            conn.execute(sa.update(staging_t).where(staging_t.c.id == int(line_id), staging_t.c.status == "dead")
                         .values(status="staged", posting_run_id=None))
        return "replayed", f"staging line {line_id} is staged again for the next posting run"
    return "failed", f"no replay handler for flow {letter.flow!r}"


def discard(ctx: FlowContext, letters: list[DeadLetter], reason: str, *, actor: str = "cli") -> int:
    if not reason.strip():
        raise ValueError("discarding a dead letter needs a reason (it is kept in the audit log)")
    ids = [lt.id for lt in letters if lt.status == "open"]
    with ctx.engine.begin() as conn:
        n = dead_letters.mark(conn, ids, "discarded", resolution=reason)
        for lt in letters:
            if lt.id in ids:
                audit.append(conn, actor, "dlq.discarded", f"dead_letter:{lt.id}",
                             {"item_key": lt.item_key, "flow": lt.flow, "queue": lt.queue, "reason": reason,
                              "error_code": lt.error_code})
    return n


def counts(ctx: FlowContext) -> dict[str, int]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(dl_t.c.queue, sa.func.count()).where(dl_t.c.status == "open")
                            .group_by(dl_t.c.queue)).all()
    return {q: int(n) for q, n in rows}
