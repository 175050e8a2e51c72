"""Periods: status per legal entity and month."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from ledgerbridge.store import InvalidStatusError, periods


def test_set_get_list(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        periods.set_period(conn, "US01", "2026-02", "open")
        periods.set_period(conn, "US01", "2026-03", "open")
        periods.set_period(conn, "UK01", "2026-02", "locked")
        periods.set_period(conn, "US01", "2026-02", "closed")
        p = periods.get_period(conn, "US01", "2026-02")
        assert p is not None
        assert (p.status, p.start_date, p.end_date) == ("closed", dt.date(2026, 2, 1), dt.date(2026, 2, 28))
        still_open = periods.list_periods(conn, status="open")
        assert [(x.legal_entity_id, x.period) for x in still_open] == [("US01", "2026-03")]
        assert [x.period for x in periods.list_periods(conn, legal_entity_id="US01")] == ["2026-02", "2026-03"]
        assert periods.get_period(conn, "DE01", "2026-02") is None
        with pytest.raises(InvalidStatusError, match="'frozen'"):
            periods.set_period(conn, "US01", "2026-03", "frozen")
        with pytest.raises(ValueError, match="YYYY-MM"):
            periods.set_period(conn, "US01", "2026-13", "open")
