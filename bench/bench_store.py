"""State-store throughput: inbox add_batch and staging stage_many, 100k rows, SQLite and PostgreSQL.

Prints rows/s for each path next to raw ``sqlite3.executemany`` of the same rows into the same table (the
floor a hand-written loader would reach: values pre-serialized, same SQL, same indexes), and the ratio.

    .venv/bin/python bench/bench_store.py [--rows 100000] [--batch 10000] [--repeat 2]
        [--pg postgresql://postgres@127.0.0.1/postgres]     # admin URL: a scratch database is created and dropped
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.store import create_store_engine, inbox, migrate, staging
from ledgerbridge.store.engine import json_dumps
from ledgerbridge.store.inbox import InboxItem

NOW = dt.datetime(2026, 3, 31, 18, 0, tzinfo=dt.UTC)


def inbox_items(n: int, offset: int = 0) -> list[InboxItem]:
    return [
        InboxItem(
            "psa_emea", "time_entry", f"TE-{i}", 1,
            {"id": f"TE-{i}", "hours": "7.50", "project": f"P-{i % 97}", "resource": f"R-{i % 400}",
             "work_date": "2026-03-15", "approval_status": "approved", "notes": "client workshop"},
        )
        for i in range(offset, offset + n)
    ]  # fmt: skip


def postings(n: int) -> list[Posting]:
    return [
        Posting(
            txn_type="labor_cost", legal_entity_id="US01", date=dt.date(2026, 3, 1 + i % 28), currency="USD",
            amounts=(("cost", Decimal(412) + Decimal(i % 100) / 100), ("hours", Decimal("7.5"))),
            dimensions=(("project", f"P-{i % 97}"), ("cost_center", "CC-DEL-US")),
            source=SourceRef(system="psa_emea", entity="time_entry", id=f"TE-{i}", version=1),
        )
        for i in range(n)
    ]  # fmt: skip


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def in_batches(engine: Engine, rows: list[Any], batch: int, op: Callable[[Any, list[Any]], Any]) -> list[Any]:
    results = []
    for i in range(0, len(rows), batch):
        with engine.begin() as conn:
            results.append(op(conn, rows[i : i + batch]))
    return results


# --------------------------------------------------------------------------- raw sqlite3 floors


def _raw_load(path: Path, sql: str, data: list[Any], to_rows: Callable[[list[Any]], list[tuple[Any, ...]]],
              batch: int) -> float:  # fmt: skip
    """Seconds for a hand-written loader: convert each batch to tuples, executemany, commit."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    t = time.perf_counter()
    for i in range(0, len(data), batch):
        rows = to_rows(data[i : i + batch])
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t
    db.close()
    return elapsed


TS = NOW.replace(tzinfo=None).isoformat(sep=" ")

RAW_INBOX_SQL = (
    "INSERT INTO inbox (idempotency_key, system, entity, external_id, version, payload, received_at, status) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'received') ON CONFLICT (idempotency_key) DO NOTHING"
)

RAW_STAGING_SQL = (
    "INSERT INTO staging_lines (txn_type, legal_entity_id, period, entry_date, currency, amounts, dimensions, "
    "source_system, source_entity, source_id, source_version, sign, status, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'staged', ?) "
    "ON CONFLICT (source_system, source_entity, source_id, source_version, txn_type, sign) DO NOTHING"
)


def raw_inbox(path: Path, items: list[InboxItem], batch: int) -> float:
    def rows(part: list[InboxItem]) -> list[tuple[Any, ...]]:
        return [(it.key, it.system, it.entity, it.external_id, str(it.version), json_dumps(it.payload), TS)
                for it in part]  # fmt: skip

    return _raw_load(path, RAW_INBOX_SQL, items, rows, batch)


def raw_staging(path: Path, ps: list[Posting], batch: int) -> float:
    def rows(part: list[Posting]) -> list[tuple[Any, ...]]:
        return [
            (p.txn_type, p.legal_entity_id, p.date.strftime("%Y-%m"), p.date.isoformat(), p.currency,
             json_dumps([[k, format(v, "f")] for k, v in p.amounts]), json_dumps([list(d) for d in p.dimensions]),
             p.source.system, p.source.entity, p.source.id, p.source.version, p.sign, TS)
            for p in part
        ]  # fmt: skip

    return _raw_load(path, RAW_STAGING_SQL, ps, rows, batch)


# --------------------------------------------------------------------------- runs


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} rows/s  ({seconds:6.2f} s)"


def bench_sqlite(n: int, batch: int, items: list[InboxItem], ps: list[Posting], repeat: int) -> None:
    """Raw and store runs alternate on fresh files, best of ``repeat`` each (the machine may be shared)."""
    best: dict[str, float] = {}

    def keep(key: str, seconds: float) -> None:
        best[key] = min(seconds, best.get(key, seconds))

    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            paths = {k: Path(tmp) / f"{k}.sqlite" for k in ("store", "raw")}
            for p in paths.values():
                migrate(f"sqlite:///{p}")
            engine = create_store_engine(f"sqlite:///{paths['store']}")
            keep("raw_inbox", raw_inbox(paths["raw"], items, batch))
            t, res = timed(lambda: in_batches(engine, items, batch, inbox.add_batch))  # noqa: B023
            assert sum(r[0] for r in res) == n
            keep("inbox", t)
            t, res = timed(lambda: in_batches(engine, items, batch, inbox.add_batch))  # noqa: B023
            assert sum(r[1] for r in res) == n
            keep("dup", t)
            keep("raw_stage", raw_staging(paths["raw"], ps, batch))
            t, res = timed(lambda: in_batches(engine, ps, batch, staging.stage_many))  # noqa: B023
            assert sum(res) == n
            keep("stage", t)
            engine.dispose()
    print(f"SQLite (WAL, synchronous=NORMAL), {n:,} rows in batches of {batch:,}, one transaction per batch, "
          f"best of {repeat}")  # fmt: skip
    print(f"  inbox.add_batch (new)          {rate(n, best['inbox'])}")
    print(f"  inbox.add_batch (all dupes)    {rate(n, best['dup'])}")
    print(f"  raw sqlite3.executemany inbox  {rate(n, best['raw_inbox'])}   "
          f"store speed / raw = {best['raw_inbox'] / best['inbox']:.2f}")  # fmt: skip
    print(f"  staging.stage_many             {rate(n, best['stage'])}")
    print(f"  raw sqlite3.executemany stage  {rate(n, best['raw_stage'])}   "
          f"store speed / raw = {best['raw_stage'] / best['stage']:.2f}")  # fmt: skip


def bench_postgres(admin_url: str, n: int, batch: int, items: list[InboxItem], ps: list[Posting]) -> None:
    u = make_url(admin_url)
    try:
        socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=2).close()
    except OSError as exc:
        print(f"PostgreSQL: skipped, not reachable at {u.host}:{u.port or 5432} ({exc})")
        return
    import psycopg

    name = f"lb_bench_{uuid.uuid4().hex[:8]}"
    conninfo = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_store_engine(u.set(database=name))
        migrate(engine)
        lines = []
        for label, threshold in (("COPY", 1), ("INSERT .. RETURNING", 10**9)):
            with engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM inbox")
                conn.exec_driver_sql("DELETE FROM staging_lines")

            def add(conn: Any, rows: list[Any], th: int = threshold) -> Any:
                return inbox.add_batch(conn, rows, copy_threshold=th)

            def stage(conn: Any, rows: list[Any], th: int = threshold) -> Any:
                return staging.stage_many(conn, rows, copy_threshold=th)

            t_inbox, res = timed(lambda: in_batches(engine, items, batch, add))
            assert sum(r[0] for r in res) == n
            t_dup, res = timed(lambda: in_batches(engine, items, batch, add))
            assert sum(r[1] for r in res) == n
            t_stage, res = timed(lambda: in_batches(engine, ps, batch, stage))
            assert sum(res) == n
            lines += [
                f"  inbox.add_batch  {label:<20} (new)       {rate(n, t_inbox)}",
                f"  inbox.add_batch  {label:<20} (all dupes) {rate(n, t_dup)}",
                f"  staging.stage_many {label:<18} (new)       {rate(n, t_stage)}",
            ]
        engine.dispose()
    finally:
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"PostgreSQL ({u.host}), {n:,} rows in batches of {batch:,}, one transaction per batch")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2, help="SQLite runs (best is kept)")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    items, ps = inbox_items(args.rows), postings(args.rows)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures drop under load)")
    bench_sqlite(args.rows, args.batch, items, ps, args.repeat)
    bench_postgres(args.pg, args.rows, args.batch, items, ps)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
