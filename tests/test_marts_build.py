"""The DuckDB reporting mart built from what the flows posted: equal to the ledger, exact decimals, idempotent and
atomic rebuilds. The firm is run through the real flows by the harness of ``test_reconcile_variances``."""

from __future__ import annotations

import shutil
import sqlite3
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from ledgerbridge.flows.marts import MART_TABLES, build_marts, open_mart
from ledgerbridge.flows.reconcile import reconcile
from test_reconcile_variances import context, run_firm


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("marts") / "firm"
    run_firm(wd, seed=5)
    return wd


def dump(path: Path) -> dict[str, list[tuple]]:
    con = open_mart(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in MART_TABLES}
    finally:
        con.close()


def test_mart_totals_equal_the_ledger(firm: Path, tmp_path: Path) -> None:
    ctx = context(firm)
    path = tmp_path / "mart.duckdb"
    report = build_marts(ctx, path)
    assert report.path == path and path.exists()
    assert all(report.rows[t] > 0 for t in ("fact_time", "fact_expense", "gl_lines", "project_margin",
                                            "utilization", "revenue", "wip"))
    con = open_mart(path)
    for entity in sorted(ctx.reference.entities):
        held = ctx.connector(ctx.ledger_system(entity)).account_totals(entity)
        mart = {(p, a, c): (d, cr) for p, a, c, d, cr in con.execute(
            "SELECT period, account, currency, debit, credit FROM gl_balances WHERE legal_entity_id = ?",
            [entity]).fetchall()}
        assert held, entity
        assert set(mart) == set(held)
        assert all(mart[k] == held[k] for k in held), entity
    # fact_time carries exactly the labor cost and T&M revenue the ledger holds, per entity/period/currency
    cost = dict(((e, p, c), v) for e, p, c, v in con.execute(
        "SELECT legal_entity_id, period, cost_currency, sum(cost) FROM fact_time GROUP BY ALL").fetchall())
    gl_cost = dict(((e, p, c), v) for e, p, c, v in con.execute(
        "SELECT legal_entity_id, period, currency, sum(net) FROM gl_balances WHERE account = '5000' "
        "GROUP BY ALL").fetchall())
    assert cost == gl_cost
    rev = dict(((e, p, c), v) for e, p, c, v in con.execute(
        "SELECT legal_entity_id, period, currency, sum(billable_value) FROM fact_time GROUP BY ALL "
        "HAVING sum(billable_value) <> 0").fetchall())
    gl_rev = dict(((e, p, c), v) for e, p, c, v in con.execute(
        "SELECT legal_entity_id, period, currency, amount FROM revenue WHERE account = '4000'").fetchall())
    assert rev == gl_rev
    con.close()


def test_money_is_decimal_and_ratios_are_exact(firm: Path, tmp_path: Path) -> None:
    path = tmp_path / "mart.duckdb"
    build_marts(context(firm), path)
    con = open_mart(path)
    types = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_name IN ("
        + ", ".join(f"'{t}'" for t in MART_TABLES) + ")").fetchall()
    assert not [t for t in types if t[2] in ("DOUBLE", "FLOAT", "REAL")], types
    money = {(t, c) for t, c, d in types if d == "DECIMAL(38,10)"}
    for col in (("fact_time", "cost"), ("fact_time", "hours"), ("project_margin", "margin"),
                ("project_margin", "margin_pct"), ("utilization", "utilization"), ("wip", "balance")):
        assert col in money, col
    for revenue, cost, margin, pct in con.execute(
            "SELECT revenue, cost, margin, margin_pct FROM project_margin").fetchall():
        assert margin == revenue - cost
        if revenue == 0:
            assert pct is None
        else:
            q = (margin * 100 / revenue).quantize(Decimal("0.01"), ROUND_HALF_UP)
            assert pct == q
    rows = con.execute("SELECT total_hours, billable_hours, non_billable_hours, utilization FROM utilization"
                       ).fetchall()
    assert rows
    for total, billable, non_billable, util in rows:
        assert total == billable + non_billable
        assert util == (billable / total).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    # hours come from the inbox payload of the very version posted
    store = sqlite3.connect(firm / "state.sqlite")
    te, ver, hours, sign = con.execute(
        "SELECT time_entry_id, version, hours, sign FROM fact_time ORDER BY time_entry_id DESC LIMIT 1").fetchone()
    raw = store.execute("SELECT json_extract(payload, '$.hours') FROM inbox WHERE external_id = ? AND version = ?",
                        (te, str(ver))).fetchone()[0]
    assert hours == Decimal(raw) * sign
    con.close()


def test_rebuild_is_idempotent_and_atomic(firm: Path, tmp_path: Path) -> None:
    wd = tmp_path / "firm"
    shutil.copytree(firm, wd)
    ctx = context(wd)
    path = tmp_path / "out" / "mart.duckdb"
    first = build_marts(ctx, path)
    before = dump(path)
    second = build_marts(ctx, path)
    assert first.rows == second.rows
    assert dump(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["mart.duckdb"]  # no temp file left behind

    # a store that lost a posted version's payload: the build fails naming it, the old mart stays in place
    store = sqlite3.connect(wd / "state.sqlite")
    te, ver = store.execute("SELECT source_id, source_version FROM staging_lines WHERE status = 'posted' AND "
                            "source_entity = 'time_entry' ORDER BY id LIMIT 1").fetchone()
    store.execute("DELETE FROM inbox WHERE external_id = ? AND version = ?", (te, str(ver)))
    store.commit()
    store.close()
    with pytest.raises(RuntimeError, match=te):
        build_marts(ctx, path)
    assert dump(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["mart.duckdb"]


def test_open_mart_names_the_fix_when_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_marts"):
        open_mart(tmp_path / "nope.duckdb")


@pytest.mark.parametrize("store_backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_mart_and_reconciliation_on_a_postgresql_store(store_url: str, tmp_path: Path) -> None:
    # the same flows with the state store on PostgreSQL (JSONB payloads, NUMERIC amounts): the mart loads through
    # the same SQLAlchemy path and the reconciliation still explains every cell
    wd = tmp_path / "firm"
    ctx = run_firm(wd, seed=5, store_url=store_url)
    try:
        report = build_marts(ctx, wd / "mart.duckdb")
        assert report.rows["fact_time"] > 0
        recon = reconcile(ctx, wd / "psa-export", mart_path=wd / "mart.duckdb")
        assert recon.ok, recon.findings
        assert all(c.mart_variance == 0 for c in recon.cells)
    finally:
        ctx.engine.dispose()
