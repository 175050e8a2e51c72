"""Invoices the billing flow drafted and created in a target ERP: one row per deterministic external key.

The row is written (``add_draft``) in the same transaction as the invoice's staged postings, *before* the target is
called, so the key is known before the effect: a crash after the target created the invoice finds the row, asks
the target for that key (lookup-before-create), and never creates a second one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update

from ledgerbridge.store._sql import bulk_insert_ignore, chunked, where_equal
from ledgerbridge.store.schema import invoices
from ledgerbridge.store.types import utcnow


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    id: str
    kind: str  # tm | milestone | fixed_fee | credit_note
    legal_entity_id: str
    project_id: str
    customer_id: str
    period: str
    invoice_date: dt.date
    currency: str
    net_total: Decimal
    tax_total: Decimal
    status: str
    erp_system: str
    erp_number: str | None
    credits: str | None
    payload: dict[str, Any]
    lineage: list[list[Any]]  # [system, entity, id, version] of each billed source version
    written_back: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


_FIELDS = tuple(InvoiceRow.__dataclass_fields__)


def _row(r: Any) -> InvoiceRow:
    m = r._mapping
    return InvoiceRow(**{f: m[f] for f in _FIELDS})


def add_drafts(conn: Connection, rows: Iterable[InvoiceRow], *, at: dt.datetime | None = None) -> int:
    """Record new invoice drafts; a key already recorded is left as it is. Returns the rows added."""
    now = at or utcnow()
    data = []
    for r in rows:
        d = {f: getattr(r, f) for f in _FIELDS}
        d["created_at"] = d["updated_at"] = now
        data.append(d)
    return bulk_insert_ignore(conn, invoices, data, ("id",))


def get_many(conn: Connection, ids: Sequence[str]) -> dict[str, InvoiceRow]:
    out: dict[str, InvoiceRow] = {}
    for part in chunked(list(dict.fromkeys(ids))):
        out.update({r.id: _row(r) for r in conn.execute(select(invoices).where(invoices.c.id.in_(part)))})
    return out


def get(conn: Connection, invoice_id: str) -> InvoiceRow | None:
    return get_many(conn, [invoice_id]).get(invoice_id)


def list_invoices(
    conn: Connection,
    *,
    legal_entity_id: str | None = None,
    period: str | None = None,
    status: str | None = None,
    project_id: str | None = None,
    kind: str | None = None,
    statuses: Sequence[str] | None = None,
) -> list[InvoiceRow]:
    q = where_equal(select(invoices), invoices, legal_entity_id=legal_entity_id, period=period, status=status,
                    project_id=project_id, kind=kind)
    if statuses is not None:
        q = q.where(invoices.c.status.in_(list(statuses)))
    return [_row(r) for r in conn.execute(q.order_by(invoices.c.id))]


def all_ids(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(select(invoices.c.id))}


def set_status(conn: Connection, invoice_id: str, status: str, *, erp_number: str | None = None,
               at: dt.datetime | None = None) -> int:
    """Record the status (and the ERP number, once known) the target reports for an invoice."""
    values: dict[str, Any] = {"status": status, "updated_at": at or utcnow()}
    if erp_number is not None:
        values["erp_number"] = erp_number
    return int(conn.execute(update(invoices).where(invoices.c.id == invoice_id).values(**values)).rowcount)


def mark_written_back(conn: Connection, ids_status: Iterable[tuple[str, str]]) -> int:
    """Remember which status was last written back to the source system (so an unchanged one is not re-sent)."""
    n = 0
    for invoice_id, status in ids_status:
        n += conn.execute(update(invoices).where(invoices.c.id == invoice_id).values(written_back=status)).rowcount
    return n
