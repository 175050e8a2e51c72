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

Replay is idempotent: a replayed letter is closed; replaying it again does nothing; the flows' own keys stop any
second effect. Discarding needs a reason and is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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


def replay(ctx: FlowContext, letters: list[DeadLetter], *, actor: str = "cli",
           on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    res = ReplayResult()
    for n, letter in enumerate(letters, start=1):
        outcome, note = _replay_one(ctx, letter)
        setattr(res, outcome, getattr(res, outcome) + 1)
        res.details.append({"id": letter.id, "item": letter.item_key, "outcome": outcome, "note": note})
        with ctx.engine.begin() as conn:
            if outcome in ("replayed", "skipped"):
                dead_letters.mark(conn, [letter.id], "replayed", resolution=note)
            audit.append(conn, actor, f"dlq.replay.{outcome}", f"dead_letter:{letter.id}",
                         {"item_key": letter.item_key, "flow": letter.flow, "note": note})
        if on_progress is not None:
            on_progress(n)
    return res


def _attempts(ctx: FlowContext, letter_id: str) -> int:
    with ctx.engine.connect() as conn:
        got = dead_letters.get(conn, letter_id)
    return got.attempts if got is not None else 0


def _replay_one(ctx: FlowContext, letter: DeadLetter) -> tuple[str, str]:
    if letter.status != "open":
        return "skipped", f"letter is already {letter.status}"
    if letter.flow == "transactions" and letter.error_code == "file.bad_row":
        return "failed", "a bad source row cannot be replayed: have the source send it again, then discard this"
    if letter.flow == "transactions":
        item_id = str(letter.payload.get("item_id") or letter.item_key.split("@")[0])
        before = _attempts(ctx, letter.id)
        with ctx.engine.begin() as conn:
            n = conn.execute(sa.update(inbox_t).where(
                inbox_t.c.system == letter.system, inbox_t.c.entity == letter.entity,
                inbox_t.c.external_id == item_id, inbox_t.c.status == "processed",
            ).values(status="received", processed_at=None)).rowcount
        if not n:
            return "failed", f"no inbox rows for {letter.system}:{letter.entity}:{item_id}"
        process_pending(ctx)
        if _attempts(ctx, letter.id) > before:
            with ctx.engine.connect() as conn:
                got = dead_letters.get(conn, letter.id)
            return "failed", f"failed again: {got.error_text if got else ''}"
        return "replayed", f"item {item_id} decided again from its full history ({n} inbox row(s))"
    if letter.flow == "posting":
        line_id = letter.payload.get("staging_line_id")
        if line_id is None:
            return "failed", "the letter names no staging line (a run-level failure: re-run the posting run)"
        with ctx.engine.begin() as conn:
            line = conn.execute(sa.select(staging_t).where(staging_t.c.id == int(line_id))).first()
            if line is None:
                return "failed", f"staging line {line_id} does not exist"
            if line.status != "dead":
                return "skipped", f"staging line {line_id} is {line.status}: nothing to replay"
            state = item_state.get_many(conn, line.source_system, line.source_entity, [line.source_id])
            posted = state.get(line.source_id)
            if line.sign == 1 and (posted is None or posted.posted_version != line.source_version):
                return "skipped", (f"no longer relevant: {line.source_id} v{line.source_version} is not the version "
                                   "on the ledger any more (it was changed or recalled since)")
            conn.execute(sa.update(staging_t).where(staging_t.c.id == line.id).values(
                status="staged", posting_run_id=None))
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
