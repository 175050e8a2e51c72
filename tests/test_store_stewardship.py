"""Stewardship: conflicts wait for a decision; one open item per field."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from ledgerbridge.store import InvalidStatusError, NotFoundError, stewardship
from ledgerbridge.store.stewardship import NewStewardshipItem


def test_add_list_resolve(store_engine: Engine) -> None:
    item = NewStewardshipItem("customer", "C1", "tax_code", {"crm": "UK-VAT20", "erp_uk": "UK-EXEMPT"}, "crm")
    with store_engine.begin() as conn:
        (a,) = stewardship.add(conn, [item])
        # the same field conflicting again refreshes the open item instead of adding one
        (b,) = stewardship.add(conn, [NewStewardshipItem("customer", "C1", "tax_code", {"crm": "UK-VAT5"}, "erp_uk")])
        assert a == b
        stewardship.add(conn, [NewStewardshipItem("customer", "C2", "name", {"crm": "Acme", "erp_uk": "ACME"}, "crm")])
        open_items = stewardship.list_items(conn, canonical_type="customer")
        assert [(i.canonical_id, i.values, i.changed_by) for i in open_items] == [
            ("C1", {"crm": "UK-VAT5"}, "erp_uk"), ("C2", {"crm": "Acme", "erp_uk": "ACME"}, "crm"),
        ]  # fmt: skip
        done = stewardship.resolve(conn, a, {"value": "UK-VAT20", "decided_by": "jane", "reason": "contract"})
        assert done.status == "resolved" and done.resolved_at is not None
        assert done.resolution == {"value": "UK-VAT20", "decided_by": "jane", "reason": "contract"}
        assert [i.canonical_id for i in stewardship.list_items(conn)] == ["C2"]
        with pytest.raises(InvalidStatusError, match="already resolved"):
            stewardship.resolve(conn, a, {"value": "x"})
        with pytest.raises(NotFoundError):
            stewardship.resolve(conn, "missing", {"value": "x"})
        # after resolution, a new conflict on the field opens a new item
        (c,) = stewardship.add(conn, [item])
        assert c != a
