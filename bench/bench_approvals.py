"""Benchmark: approval decisions over 1M items (``decide_many``).

    .venv/bin/python bench/bench_approvals.py [--items 1000000] [--seed 3]

Each synthetic item has 1-4 versions with a realistic mix (most approved once; some edited and re-approved, some
recalled or rejected after approval, some still submitted; 10% arrive out of order). Run 1 sees only the first two
versions of each item (empty ledger: posts); run 2 sees the full histories against run 1's state (reversals and
re-posts); run 3 replays run 2 (the steady state: nothing moves). Prints items/s (wall and process CPU) and the
delta counts.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from ledgerbridge.domain.approvals import decide_many
from ledgerbridge.model.entities import ApprovalStatus as S

PATTERNS: list[tuple[float, list[S]]] = [
    (0.80, [S.SUBMITTED, S.APPROVED]),
    (0.07, [S.SUBMITTED, S.APPROVED, S.APPROVED]),  # edited, auto-approved
    (0.05, [S.SUBMITTED, S.APPROVED, S.RECALLED]),  # recalled after approval
    (0.03, [S.SUBMITTED, S.APPROVED, S.REJECTED]),
    (0.03, [S.SUBMITTED, S.APPROVED, S.SUBMITTED, S.APPROVED]),  # edited and re-approved
    (0.02, [S.SUBMITTED]),
]


def make_histories(n: int, seed: int = 3) -> dict[str, list[tuple[int, S]]]:
    rnd = random.Random(seed)
    weights = [w for w, _ in PATTERNS]
    shapes = [p for _, p in PATTERNS]
    out: dict[str, list[tuple[int, S]]] = {}
    for i, shape in enumerate(rnd.choices(shapes, weights, k=n)):
        history = [(v, st) for v, st in enumerate(shape, start=1)]
        if len(history) > 1 and rnd.random() < 0.1:
            history.reverse()  # out-of-order arrival
        out[f"TE-{i}"] = history
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    histories = make_histories(args.items, args.seed)
    n = len(histories)
    first_two = {k: sorted(h)[:2] for k, h in histories.items()}
    state: dict[str, int | None] = {}
    runs = [
        ("run 1 (first two versions)", first_two),
        ("run 2 (full histories)", histories),
        ("run 3 (replay)", histories),
    ]
    for label, hs in runs:
        t0, c0 = time.perf_counter(), time.process_time()
        out = decide_many(hs, state, entity="time_entry")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        kinds = Counter(d.action.value for d in out.deltas)
        print(
            f"decide_many {label}: {n:,} items in {wall:.2f}s wall / {cpu:.2f}s cpu -> {n / wall:,.0f} items/s wall, "
            f"{n / cpu:,.0f} items/s cpu; deltas {dict(kinds)}, violations {len(out.violations)}"
        )
        state = out.posted
    return 0


if __name__ == "__main__":
    sys.exit(main())
