"""The flows as durable workflows on the runtime (DBOS behind ``ledgerbridge.runtime``).

Each workflow takes and returns plain JSON data, finds its :class:`~ledgerbridge.flows.context.FlowContext` with
``flows.context.current()`` (set before the runtime launches, so workflows recovered at launch find it too), and
does its work in steps that are each idempotent on their own: a step interrupted by a crash runs again and has no
second effect (inbox keys, staging unique keys, deterministic run and journal ids, target idempotency).

Workflow ids are business keys (``ingest:<system>:<drop>:<until>``, ``post:<entity>:<period>:<target>:<n>``), so
starting the same work twice runs it once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ledgerbridge import runtime as rt
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.context import current
from ledgerbridge.flows.periods import close_period
from ledgerbridge.samplefirm import FileError


@rt.step("lb.land")
def land_step(system: str, until: str | None, batch_size: int) -> dict[str, Any]:
    ctx = current()
    source = ctx.connector(system)
    errors: list[FileError] = []
    cutoff = dt.datetime.fromisoformat(until) if until else None
    drop = source.drop_id()[:12]
    res = transactions.land(ctx, system, source.read_records(errors, until=cutoff), batch_size=batch_size,
                            batch_prefix=f"{drop}:{until or 'all'}:")
    if errors:
        _file_errors_to_dlq(ctx, system, errors)
    return {**dataclasses.asdict(res), "file_errors": len(errors)}


@rt.step("lb.process_batch")
def process_step(batch_size: int) -> dict[str, Any]:
    res = transactions.process_pending(current(), batch_size=batch_size, max_batches=1)
    return {k: v for k, v in dataclasses.asdict(res).items() if k != "batch_ids"} | {"batch_ids": res.batch_ids}


@rt.workflow("lb.ingest")
def ingest_workflow(system: str, until: str | None, batch_size: int = 5000) -> dict[str, Any]:
    """Land a source's records in the inbox, then process every received batch (one step per batch)."""
    landed = land_step(system, until, batch_size)
    totals: dict[str, int] = {}
    batches = 0
    while True:
        r = process_step(batch_size)
        if not r["batches"]:
            break
        batches += 1
        for k, v in r.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return {"landed": landed, "processed": totals, "batches": batches}


@rt.step("lb.prepare_run")
def prepare_step(entity: str, period: str, target: str | None) -> dict[str, Any]:
    return posting.prepare_run(current(), entity, period, target)


@rt.step("lb.execute_run")
def execute_step(run_id: str) -> dict[str, Any]:
    return dataclasses.asdict(posting.execute_run(current(), run_id))


@rt.workflow("lb.post_period")
def posting_workflow(entity: str, period: str, target: str | None = None) -> dict[str, Any]:
    prep = prepare_step(entity, period, target)
    if prep["run_id"] is None:
        return dataclasses.asdict(posting.RunOutcome(
            None, entity, period, target or current().ledger_system(entity), "nothing_to_post",
            swept=prep["swept"], dead_lettered=prep["dead_lettered"]))
    out = execute_step(prep["run_id"])
    out["swept"] = prep["swept"]
    return out


@rt.step("lb.close_period")
def close_step(entity: str, period: str) -> dict[str, Any]:
    return close_period(current(), entity, period)


_FILE_ENTITY = {"time_entries.csv": "time_entry", "expenses.csv": "expense"}


def _file_errors_to_dlq(ctx: Any, system: str, errors: list[FileError]) -> None:
    from ledgerbridge.store import dead_letters
    from ledgerbridge.store.dead_letters import NewDeadLetter

    with ctx.engine.begin() as conn:
        dead_letters.add(conn, [
            NewDeadLetter("financial", "transactions", system, _FILE_ENTITY.get(e.file, e.file),
                          f"{e.file}:{e.line}",
                          {"file": e.file, "line": e.line, "field": e.field, "raw": list(e.raw or ())},
                          "validation", "file.bad_row", str(e))
            for e in errors
        ])
