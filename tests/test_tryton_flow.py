"""Tryton as a configured target of the posting flow (config only): two months of the sample firm's US01 ledger
go into a real Tryton on PostgreSQL. Tryton's own trial balance equals what the engine recorded as posted, to the
cent per account; after September is closed (in the store and in Tryton), late changes are redated into October
and Tryton never receives a move for September again; a re-run posts nothing twice."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP, ensure_currency
from ledgerbridge.domain.billing import is_expense_line
from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
from ledgerbridge.model.entities import Invoice
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.store import journals
from ledgerbridge.testing.tryton_server import TrytonSettings, live_tryton

from flows_support import make_ctx, records, tiny_firm

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonSettings]:
    with live_tryton("postgresql") as settings:
        yield settings


def _cutoff(period: str) -> dt.datetime:
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=dt.UTC)


def _wired(tmp_path: Path, tryton: TrytonSettings, monkeypatch: pytest.MonkeyPatch, *, months: int,
           route: RouteTargets) -> tuple[Any, Any]:
    """A flow context of a small sample firm whose US01 is routed to the Tryton ``erp_us`` by configuration."""
    monkeypatch.setenv("LB_TRYTON_PASSWORD", tryton.password)
    export = tiny_firm(tmp_path / "firm", employees=6, months=months, seed=7)
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    erp = SystemConfig(connector="tryton", role="erp", secrets={"password": SecretRef("${env:LB_TRYTON_PASSWORD}")},
                       options={"url": tryton.url, "database": tryton.database, "user": tryton.user,
                                "legal_entity_id": "US01", "account_map": dict(UNIVERSAL_CHART_MAP)})
    routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": route}})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp_us": erp},
                                               "routing": routing})
    ctx.reset_connectors()
    target = ctx.connector("erp_us")
    for code in sorted(set(ctx.reference.currencies) - {"USD"}):
        ensure_currency(target.client, code)
    target.push_customers(c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")
    return ctx, target


def _engine_totals(ctx: Any) -> dict[str, list[Decimal]]:
    """account -> [debit, credit] in functional currency of everything the engine recorded as posted for US01."""
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id="US01")
    want: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            deb = ln.functional_debit if ln.functional_currency else ln.debit
            cre = ln.functional_credit if ln.functional_currency else ln.credit
            want[ln.account][0] += deb or Decimal(0)
            want[ln.account][1] += cre or Decimal(0)
    return want


def test_two_months_into_tryton_by_config(tmp_path: Path, tryton: TrytonSettings,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, target = _wired(tmp_path, tryton, monkeypatch, months=2, route=RouteTargets(ledger="erp_us"))

    transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
    transactions.process_pending(ctx)
    sep = posting.post_period(ctx, "US01", "2026-09")
    assert sep.status == "posted" and sep.target == "erp_us" and sep.journals > 0, sep
    assert close_period(ctx, "US01", "2026-09")["status"] == "closed"
    assert target.period_status("US01", "2026-09") == "closed"
    sep_moves = target.client.search_read("account.move", [("period.name", "=", "2026-09")], ["id"])

    transactions.land(ctx, SOURCE, records(ctx, since=_cutoff("2026-09")))
    transactions.process_pending(ctx)
    octo = posting.post_period(ctx, "US01", "2026-10")
    assert octo.status == "posted", octo
    assert posting.post_period(ctx, "US01", "2026-10").status == "nothing_to_post"
    assert len(target.client.search_read("account.move", [("period.name", "=", "2026-09")], ["id"])) == len(sep_moves)

    # Tryton's own trial balance (company currency) = the functional amounts the engine recorded as posted
    want = _engine_totals(ctx)
    tb = target.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 10, 31))
    for code, (deb, cre) in want.items():
        assert tb[code] == (deb, cre), f"account {code}: Tryton {tb[code]} vs engine {(deb, cre)}"
    assert {code for code, (d, c) in tb.items() if d or c} == {c for c, (d, cr) in want.items() if d or cr}


def test_billing_through_the_flow_into_tryton(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invoices routed to Tryton by configuration: created and posted there (Tryton books them in its own ledger,
    work lines on the revenue-typed invoice clearing account), numbers written back to the store; the engine posts
    its accruals and the invoice relief. Tryton's trial balance then shows unbilled receivables relieved by exactly
    the billed work, the clearing account at zero and service revenue equal to the accrual."""
    with live_tryton("postgresql") as tryton:
        ctx, target = _wired(tmp_path, tryton, monkeypatch, months=1,
                             route=RouteTargets(ledger="erp_us", invoices="erp_us"))
        transactions.land(ctx, SOURCE, records(ctx, until=_cutoff("2026-09")))
        transactions.process_pending(ctx)
        assert posting.post_period(ctx, "US01", "2026-09").status == "posted"
        accrued = _engine_totals(ctx)["4000"]

        summary = billing.run_billing(ctx, "2026-09", "US01")
        assert summary["create"]["failed"] == [] and summary["create"]["created"], summary
        with ctx.engine.connect() as conn:
            invs = [r for r in invoices_repo.list_invoices(conn, legal_entity_id="US01") if r.status != "void"]
        assert invs and all(r.status == "posted" and (r.erp_number or "").startswith("INV/") for r in invs), invs
        held = target.invoice_status([r.id for r in invs])
        assert {k: (v.number, v.status) for k, v in held.items()} == {r.id: (r.erp_number, "posted") for r in invs}

        assert posting.post_period(ctx, "US01", "2026-09").status == "posted"  # the relief journals
        with ctx.engine.connect() as conn:
            reliefs = [j for j in journals.list_journals(conn, legal_entity_id="US01")
                       if j.journal_type == "invoice_relief"]
        docs = [Invoice.model_validate(r.payload) for r in invs]
        work = sum((ln.net_amount for d in docs for ln in d.lines if not is_expense_line(ln)), Decimal(0))
        rebilled = sum((ln.net_amount for d in docs for ln in d.lines if is_expense_line(ln)), Decimal(0))
        total, tax = sum((d.total for d in docs), Decimal(0)), sum((d.tax_total for d in docs), Decimal(0))
        assert work > 0 and sum(ln.debit for j in reliefs for ln in j.lines) == work

        # Tryton = what the engine posted + what Tryton's own invoices booked, to the cent per account
        booked = {"1100": (total, Decimal(0)), "4900": (Decimal(0), work), "4300": (Decimal(0), rebilled),
                  "2300": (Decimal(0), tax)}
        engine = _engine_totals(ctx)
        tb = target.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 9, 30))
        for code in set(engine) | set(booked) | {c for c, (d, cr) in tb.items() if d or cr}:
            e, b = engine.get(code, [Decimal(0), Decimal(0)]), booked.get(code, (Decimal(0), Decimal(0)))
            assert tb.get(code, (Decimal(0), Decimal(0))) == (e[0] + b[0], e[1] + b[1]), code
        assert tb["4900"][0] == tb["4900"][1] == work  # clearing: credited by Tryton's invoices, debited by relief
        assert tb["4000"] == tuple(accrued)  # service revenue = the accrual, untouched by billing
        # billing again: nothing new in Tryton, nothing new staged
        again = billing.run_billing(ctx, "2026-09", "US01")
        assert again["create"]["created"] == [] and posting.post_period(ctx, "US01", "2026-09").status == \
            "nothing_to_post"
        assert len(target.client.search("account.invoice", [("type", "=", "out")])) == len(invs)
