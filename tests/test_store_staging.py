"""Staging: the same delta is never staged twice; claim, post and release through posting runs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.store import DecimalRangeError, InvalidStatusError, UnknownRunError, journals, staging
from ledgerbridge.store.staging import StageItem


def posting(i: int, *, version: int = 1, sign: int = 1, entity: str = "US01", day: int = 15, cost: str = "412.50"):
    return Posting(
        txn_type="labor_cost",
        legal_entity_id=entity,
        date=dt.date(2026, 3, day),
        currency="USD",
        amounts=(("cost", Decimal(cost)), ("hours", Decimal("7.5"))),
        dimensions=(("project", f"P-{i % 7}"), ("cost_center", "CC-DEL-US")),
        source=SourceRef(system="psa", entity="time_entry", id=f"TE-{i}", version=version),
        sign=sign,
    )


def test_staging_is_idempotent_on_the_delta(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        assert staging.stage_many(conn, [posting(i) for i in range(50)]) == 50
        # replay of the same deltas + a reversal of v1 and a post of v2 for item 0: only the last two are new
        again = [posting(i) for i in range(50)] + [posting(0, sign=-1), posting(0, version=2)]
        assert staging.stage_many(conn, again) == 2
        assert staging.stage_many(conn, [posting(99), posting(99)]) == 1
        assert len(staging.list_lines(conn, status="staged")) == 53


def test_copy_path_is_idempotent_too(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        assert staging.stage_many(conn, [posting(i) for i in range(2500)], copy_threshold=1) == 2500
        assert staging.stage_many(conn, [posting(i) for i in range(2400, 2600)], copy_threshold=1) == 100
        assert staging.stage_many(conn, [posting(i) for i in range(2590, 2610)], copy_threshold=10**9) == 10
        lines = staging.list_lines(conn)
    assert len(lines) == 2610
    assert lines[0].posting == posting(0)
    assert lines[-1].posting == posting(2609)


def test_round_trip_of_a_posting(store_engine: Engine) -> None:
    p = posting(1, sign=-1, cost="-0.01")
    with store_engine.begin() as conn:
        staging.stage_many(conn, [StageItem(p, period="2026-04", redated_from="2026-03")])
        (line,) = staging.list_lines(conn)
    assert line.posting == p
    assert line.posting.amount("cost") == Decimal("-0.01")
    assert (line.period, line.redated_from, line.status, line.posting_run_id) == ("2026-04", "2026-03", "staged", None)
    assert line.created_at.tzinfo is not None


def test_bad_amount_is_refused_naming_the_posting(store_engine: Engine) -> None:
    bad = posting(3, cost="1.000000000001")
    with store_engine.begin() as conn, pytest.raises(DecimalRangeError, match=r"psa:time_entry:TE-3@1.*'cost'"):
        staging.stage_many(conn, [posting(1), bad])
    with store_engine.connect() as conn:
        assert staging.list_lines(conn) == []


def test_claim_post_and_release(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        staging.stage_many(conn, [posting(i) for i in range(10)] + [posting(i, entity="UK01") for i in range(3)])
        staging.stage_many(conn, [StageItem(posting(50), period="2026-04")])
        journals.start_run(conn, "US01:2026-03:1", legal_entity_id="US01", period="2026-03", target_system="erp")
        claimed = staging.claim_for_run(conn, "US01:2026-03:1", limit=4)
        assert [c.posting.source.id for c in claimed] == ["TE-0", "TE-1", "TE-2", "TE-3"]
        # resuming the run returns what it already holds plus the rest
        claimed = staging.claim_for_run(conn, "US01:2026-03:1")
        assert len(claimed) == 10
        assert {c.posting.legal_entity_id for c in claimed} == {"US01"}
        assert {c.status for c in claimed} == {"in_run"}
        assert staging.mark_dead(conn, "US01:2026-03:1", [claimed[0].id]) == 1
        assert staging.release(conn, "US01:2026-03:1", [claimed[1].id]) == 1
        assert staging.mark_posted(conn, "US01:2026-03:1") == 8
        assert staging.mark_posted(conn, "US01:2026-03:1") == 0
        by_status = {s: len(staging.list_lines(conn, status=s, legal_entity_id="US01")) for s in ("staged", "posted")}
        assert by_status == {"staged": 2, "posted": 8}  # released one + the April one
        # a second run of the same period picks up only the released line
        journals.start_run(conn, "US01:2026-03:2", legal_entity_id="US01", period="2026-03", target_system="erp")
        assert [c.id for c in staging.claim_for_run(conn, "US01:2026-03:2")] == [claimed[1].id]


def test_claim_needs_a_started_run(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        with pytest.raises(UnknownRunError, match="start_run"):
            staging.claim_for_run(conn, "nope")
        journals.start_run(conn, "r1", legal_entity_id="US01", period="2026-03", target_system="erp")
        journals.finish_run(conn, "r1", "cancelled")
        with pytest.raises(InvalidStatusError, match="cancelled"):
            staging.claim_for_run(conn, "r1")
