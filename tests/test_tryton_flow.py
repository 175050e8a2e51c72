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

import pytest

from ledgerbridge.config.schema import RouteTargets, SystemConfig
from ledgerbridge.config.secrets import SecretRef
from ledgerbridge.connectors.tryton.bootstrap import UNIVERSAL_CHART_MAP, ensure_currency
from ledgerbridge.flows import posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.periods import close_period
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


def test_two_months_into_tryton_by_config(tmp_path: Path, tryton: TrytonSettings,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_TRYTON_PASSWORD", tryton.password)
    export = tiny_firm(tmp_path / "firm", employees=6, months=2, seed=7)
    ctx = make_ctx(tmp_path / "w", export_from=export, failure_mode="line_level")
    erp = SystemConfig(connector="tryton", role="erp", secrets={"password": SecretRef("${env:LB_TRYTON_PASSWORD}")},
                       options={"url": tryton.url, "database": tryton.database, "user": tryton.user,
                                "legal_entity_id": "US01", "account_map": dict(UNIVERSAL_CHART_MAP)})
    routing = ctx.config.routing.model_copy(update={"by_entity": {"US01": RouteTargets(ledger="erp_us")}})
    ctx.config = ctx.config.model_copy(update={"systems": {**ctx.config.systems, "erp_us": erp},
                                               "routing": routing})
    ctx.reset_connectors()
    target = ctx.connector("erp_us")
    for code in sorted(set(ctx.reference.currencies) - {"USD"}):
        ensure_currency(target.client, code)
    target.push_customers(c for c in ctx.reference.customers.values() if c.legal_entity_id == "US01")

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
    with ctx.engine.connect() as conn:
        posted = journals.list_journals(conn, legal_entity_id="US01")
    want: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for j in posted:
        for ln in j.lines:
            deb = ln.functional_debit if ln.functional_currency else ln.debit
            cre = ln.functional_credit if ln.functional_currency else ln.credit
            want[ln.account][0] += deb or Decimal(0)
            want[ln.account][1] += cre or Decimal(0)
    tb = target.trial_balance(dt.date(2026, 9, 1), dt.date(2026, 10, 31))
    for code, (deb, cre) in want.items():
        assert tb[code] == (deb, cre), f"account {code}: Tryton {tb[code]} vs engine {(deb, cre)}"
    assert {code for code, (d, c) in tb.items() if d or c} == {c for c, (d, cr) in want.items() if d or cr}
