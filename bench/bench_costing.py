"""Benchmark: costing 1M synthetic time entries in memory (rate resolution + cost/billable valuation).

    .venv/bin/python bench/bench_costing.py [--entries 1000000] [--seed 7]

Builds a realistic rate card (2000 resources, 5 roles, 300 projects in USD/GBP/EUR: per-resource cost rates with a
mid-year raise, role cost fallbacks, role+project bill rates, resource+project overrides, project-wide bill
fallbacks) and prints RateBook build time, costing entries/s (wall and process CPU), and the violation count.
On a shared machine the CPU figure is the steadier one. ``--gc-freeze`` moves the input out of the cyclic
garbage collector's reach first (about 15-30% less CPU on a 1M batch).

``make_synthetic(n)`` is reusable: other benches (summarization, posting) take its costed output as input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import sys
import time
from dataclasses import dataclass
from decimal import Decimal

from ledgerbridge.domain.costing import RateBook, cost_many
from ledgerbridge.model.entities import (
    ApprovalStatus,
    ContractType,
    Project,
    RateCardLine,
    RateKind,
    Resource,
    TimeEntry,
)

ROLES = ("Analyst", "Consultant", "Senior Consultant", "Manager", "Partner")
ENTITIES = (("US01", "USD", "CC-DEL-US"), ("UK01", "GBP", "CC-DEL-UK"), ("DE01", "EUR", "CC-DEL-DE"))
YEAR_START = dt.date(2026, 1, 1)
RAISE_ON = dt.date(2026, 7, 1)


@dataclass
class Synthetic:
    """An in-memory firm: master data, a rate card, its RateBook and ``n`` approved time-entry versions."""

    projects: dict[str, Project]
    resources: dict[str, Resource]
    rate_lines: list[RateCardLine]
    book: RateBook
    entries: list[TimeEntry]
    book_build_seconds: float


def _line(
    i: int, kind: RateKind, rate: int, currency: str, start: dt.date, end: dt.date | None, **scope: str
) -> RateCardLine:
    return RateCardLine.model_construct(
        id=f"RL-{i}",
        kind=kind,
        rate=Decimal(rate),
        currency=currency,
        effective_from=start,
        effective_to=end,
        resource_id=scope.get("resource_id"),
        role=scope.get("role"),
        project_id=scope.get("project_id"),
    )


def make_synthetic(n: int, *, resources: int = 2000, projects: int = 300, seed: int = 7, days: int = 365) -> Synthetic:
    """Build the firm and ``n`` time entries (``model_construct``: the data is valid by construction, so the
    benchmark measures costing, not pydantic validation)."""
    rnd = random.Random(seed)
    projs: dict[str, Project] = {}
    for p in range(projects):
        le, cur, cc = ENTITIES[p % 3]
        pid = f"P{p:04d}"
        projs[pid] = Project.model_construct(
            id=pid,
            name=pid,
            customer_id=f"C{p % 120:03d}",
            legal_entity_id=le,
            contract_type=ContractType.TIME_AND_MATERIALS,
            currency=cur,
            cost_center=cc,
            start_date=YEAR_START,
        )
    res: dict[str, Resource] = {}
    for r in range(resources):
        le, _, cc = ENTITIES[r % 3]
        rid = f"R{r:05d}"
        res[rid] = Resource.model_construct(
            id=rid, name=rid, role=ROLES[r % len(ROLES)], cost_center=cc, home_entity_id=le, active=True
        )
    lines: list[RateCardLine] = []
    k = 0
    home_cur = {le: cur for le, cur, _ in ENTITIES}
    for rid, r_ in res.items():  # per-resource cost rate, with a raise on 1 July (old line left open-ended)
        base = rnd.randrange(40, 120)
        cur = home_cur[r_.home_entity_id]
        lines.append(_line(k, RateKind.COST, base, cur, YEAR_START, None, resource_id=rid))
        lines.append(_line(k + 1, RateKind.COST, base + 5, cur, RAISE_ON, None, resource_id=rid))
        k += 2
    for i, role in enumerate(ROLES):  # role cost fallback
        lines.append(_line(k, RateKind.COST, 50 + 20 * i, "USD", YEAR_START, None, role=role))
        k += 1
    for pid, p_ in projs.items():
        lines.append(_line(k, RateKind.BILL, 120, p_.currency, YEAR_START, None, project_id=pid))
        k += 1
        for i, role in enumerate(ROLES):  # role+project bill rates, renegotiated mid-year (closed old line)
            rate = 100 + 40 * i
            lines.append(
                _line(
                    k,
                    RateKind.BILL,
                    rate,
                    p_.currency,
                    YEAR_START,
                    RAISE_ON - dt.timedelta(days=1),
                    role=role,
                    project_id=pid,
                )
            )
            lines.append(_line(k + 1, RateKind.BILL, rate + 10, p_.currency, RAISE_ON, None, role=role, project_id=pid))
            k += 2
    rids = list(res)
    pids = list(projs)
    for _ in range(1000):  # resource+project bill overrides
        pid = rnd.choice(pids)
        lines.append(
            _line(
                k,
                RateKind.BILL,
                99,
                projs[pid].currency,
                YEAR_START,
                None,
                resource_id=rnd.choice(rids),
                project_id=pid,
            )
        )
        k += 1
    t0 = time.perf_counter()
    book = RateBook.from_lines(lines)
    build = time.perf_counter() - t0
    # each resource works on a handful of projects, as staffing does
    staffing = {rid: rnd.sample(pids, 4) for rid in rids}
    hours = [Decimal(h) for h in ("1", "2", "4", "6.5", "7.5", "8", "0.25", "3.75")]
    entries: list[TimeEntry] = []
    for i in range(n):
        rid = rids[i % resources]
        entries.append(
            TimeEntry.model_construct(
                id=f"TE-{i}",
                source_system="psa_bench",
                version=1 + (i % 3 == 0),
                project_id=rnd.choice(staffing[rid]),
                resource_id=rid,
                task=None,
                work_date=YEAR_START + dt.timedelta(days=rnd.randrange(days)),
                hours=rnd.choice(hours),
                billable=rnd.random() < 0.85,
                approval_status=ApprovalStatus.APPROVED,
                approved_at=None,
                updated_at=None,
                description="",
            )
        )
    return Synthetic(projs, res, lines, book, entries, build)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() the input first (what a flow can do for big batches)"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    s = make_synthetic(args.entries, seed=args.seed)
    print(
        f"synthetic firm: {len(s.resources)} resources, {len(ROLES)} roles, {len(s.projects)} projects, "
        f"{len(s.rate_lines)} rate lines, {len(s.entries):,} entries ({time.perf_counter() - t0:.1f}s to build)"
    )
    print(f"RateBook.from_lines: {s.book_build_seconds * 1000:.0f} ms")

    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    t0, c0 = time.perf_counter(), time.process_time()
    costed, violations = cost_many(s.entries, s.projects, s.resources, s.book)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(s.entries)
    print(
        f"cost_many: {n:,} entries in {wall:.2f}s wall / {cpu:.2f}s cpu -> {n / wall:,.0f} entries/s wall, "
        f"{n / cpu:,.0f} entries/s cpu; costed {len(costed):,}, violations {len(violations)}"
    )
    total: dict[str, Decimal] = {}
    for c in costed:
        total[c.cost_currency] = total.get(c.cost_currency, Decimal(0)) + c.cost_amount
    print("labor cost by currency: " + ", ".join(f"{v:,} {k}" for k, v in sorted(total.items())))
    return 0 if not violations else 1


if __name__ == "__main__":
    sys.exit(main())
