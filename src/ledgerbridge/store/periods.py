"""Accounting periods per legal entity (``YYYY-MM``) and their status: open, closing, closed, locked.

The store records status; which transitions are allowed and what a late item does is the domain's rule."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ledgerbridge.store._sql import insert_for, where_equal
from ledgerbridge.store.errors import InvalidStatusError
from ledgerbridge.store.schema import PERIOD_STATUSES, periods
from ledgerbridge.store.types import utcnow

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class Period:
    legal_entity_id: str
    period: str
    start_date: dt.date
    end_date: dt.date
    status: str
    changed_at: dt.datetime


def month_bounds(period: str) -> tuple[dt.date, dt.date]:
    m = _PERIOD.match(period)
    if m is None:
        raise ValueError(f"period {period!r} is not YYYY-MM (e.g. 2026-03)")
    y, mo = int(m.group(1)), int(m.group(2))
    return dt.date(y, mo, 1), dt.date(y, mo, calendar.monthrange(y, mo)[1])


def set_period(
    conn: Connection,
    legal_entity_id: str,
    period: str,
    status: str,
    *,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    at: dt.datetime | None = None,
) -> Period:
    """Create or update a period's status (dates default to the calendar month of ``period``)."""
    if status not in PERIOD_STATUSES:
        raise InvalidStatusError(
            f"period {legal_entity_id} {period}: status {status!r} is not one of {PERIOD_STATUSES}"
        )
    s, e = month_bounds(period)
    row: dict[str, Any] = {
        "legal_entity_id": legal_entity_id,
        "period": period,
        "start_date": start_date or s,
        "end_date": end_date or e,
        "status": status,
        "changed_at": at or utcnow(),
    }
    stmt = insert_for(conn, periods)
    stmt = stmt.on_conflict_do_update(
        index_elements=["legal_entity_id", "period"],
        set_={c: stmt.excluded[c] for c in ("start_date", "end_date", "status", "changed_at")},
    )
    conn.execute(stmt, row)
    return Period(**row)


def get_period(conn: Connection, legal_entity_id: str, period: str) -> Period | None:
    r = conn.execute(
        select(periods).where(periods.c.legal_entity_id == legal_entity_id, periods.c.period == period)
    ).first()
    return Period(**r._mapping) if r is not None else None


def list_periods(
    conn: Connection, *, legal_entity_id: str | None = None, status: str | None = None
) -> list[Period]:
    q = where_equal(select(periods), periods, legal_entity_id=legal_entity_id, status=status)
    return [Period(**r._mapping) for r in conn.execute(q.order_by(periods.c.legal_entity_id, periods.c.period))]
