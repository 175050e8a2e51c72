"""Posting runs on a real generated firm into the real Beancount ledger: crash between the ledger write and the
store record, all-or-nothing vs line-level failures with dead letters and replay, read-back that catches a
target holding something else."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge.flows import dlq, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters, journals
from ledgerbridge.store.schema import posted_journals, staging_lines

from flows_support import ledger_text, make_ctx, records, tiny_firm

PERIOD = "2026-09"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), months=1)


def staged_ctx(tmp_path: Path, export: Path, **kw):
    ctx = make_ctx(tmp_path / "w", export_from=export, **kw)
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    return ctx


def journal_count_in_ledger(workdir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for text in ledger_text(workdir).values():
        for line in text.decode().splitlines():
            if line.strip().startswith("journal_id:"):
                jid = line.split(":", 1)[1].strip().strip('"')
                counts[jid] = counts.get(jid, 0) + 1
    return counts


def test_crash_after_ledger_write_posts_nothing_twice(tmp_path: Path, export: Path, monkeypatch) -> None:
    ctx = staged_ctx(tmp_path, export)
    entity = "US01"
    real = journals.record_journals
    calls = {"n": 0}

    def crash_once(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated crash after the ledger write, before the store commit")
        return real(*a, **k)

    monkeypatch.setattr(posting.journals, "record_journals", crash_once)
    with pytest.raises(RuntimeError):
        posting.post_period(ctx, entity, PERIOD)
    held_after_crash = journal_count_in_ledger(tmp_path / "w")
    assert held_after_crash and all(n == 1 for n in held_after_crash.values())
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(posted_journals)).scalar_one() == 0
        (run,) = journals.list_runs(conn, legal_entity_id=entity)
        assert run.status == "started"
    out = posting.post_period(ctx, entity, PERIOD)  # the same run is picked up and finished
    assert out.status == "posted" and out.run_id == run.id
    assert journal_count_in_ledger(tmp_path / "w") == held_after_crash
    with ctx.engine.connect() as conn:
        ids = {r.id for r in conn.execute(sa.select(posted_journals.c.id))}
    assert ids == set(held_after_crash)
    assert posting.post_period(ctx, entity, PERIOD).status == "nothing_to_post"
    assert ctx.connector("ledger").check() == []


def _deactivate(ctx, code: str) -> None:
    ctx.reference.accounts = [a.model_copy(update={"active": False}) if a.code == code else a
                              for a in ctx.reference.accounts]
    ctx.reset_connectors()  # the chart changed: connectors holding it are rebuilt


def _reactivate(ctx, code: str) -> None:
    ctx.reference.accounts = [a.model_copy(update={"active": True}) if a.code == code else a
                              for a in ctx.reference.accounts]
    ctx.reset_connectors()


def test_all_or_nothing_refuses_the_run_and_keeps_every_line(tmp_path: Path, export: Path) -> None:
    ctx = staged_ctx(tmp_path, export, failure_mode="all_or_nothing")
    _deactivate(ctx, "4000")  # T&M revenue account made inactive in the chart
    out = posting.post_period(ctx, "US01", PERIOD)
    assert out.status == "failed" and out.dead_lettered > 0
    with ctx.engine.connect() as conn:
        statuses = {r.status for r in conn.execute(sa.select(staging_lines.c.status).where(
            staging_lines.c.legal_entity_id == "US01"))}
        letters = dead_letters.list_letters(conn, flow="posting")
    assert statuses == {"staged"}, "nothing posted, every line back in staging"
    assert letters and all("4000" in lt.error_text for lt in letters)
    assert not journal_count_in_ledger(tmp_path / "w")
    _reactivate(ctx, "4000")
    again = posting.post_period(ctx, "US01", PERIOD)
    assert again.status == "posted" and again.run_id.endswith("r02")


def test_line_level_posts_the_rest_and_replays_the_refused_lines(tmp_path: Path, export: Path) -> None:
    ctx = staged_ctx(tmp_path, export, failure_mode="line_level")
    _deactivate(ctx, "4000")
    out = posting.post_period(ctx, "US01", PERIOD)
    assert out.status == "posted" and out.journals > 0 and out.dead_lettered > 0
    with ctx.engine.connect() as conn:
        dead = conn.execute(sa.select(staging_lines).where(staging_lines.c.status == "dead")).all()
        letters = dead_letters.list_letters(conn, flow="posting")
    assert {r.txn_type for r in dead} == {"revenue_accrual"}
    assert len(letters) == len(dead)
    held = journal_count_in_ledger(tmp_path / "w")
    assert held and not any("revenue_accrual" in j for j in held)
    _reactivate(ctx, "4000")
    res = dlq.replay(ctx, letters)
    assert res.replayed == len(letters)
    second = posting.post_period(ctx, "US01", PERIOD)
    assert second.status == "posted" and second.staged_lines == len(dead)
    with ctx.engine.connect() as conn:
        assert {r.status for r in conn.execute(sa.select(staging_lines.c.status).where(
            staging_lines.c.legal_entity_id == "US01"))} == {"posted"}
    assert any("revenue_accrual" in j for j in journal_count_in_ledger(tmp_path / "w"))
    assert ctx.connector("ledger").check() == []


def test_read_back_mismatch_is_not_recorded_as_posted(tmp_path: Path, export: Path) -> None:
    """A target that acknowledges a journal but holds other amounts (fault injected into the real ledger
    connector's read-back answer) must not be recorded as posted: the lines are dead-lettered as a conflict."""
    ctx = staged_ctx(tmp_path, export, failure_mode="line_level")
    target = ctx.connector("ledger")
    real_read_back = target.read_back

    def tampered(ids):
        from ledgerbridge.connectors.base import CurrencyTotals, ReadBack

        got = real_read_back(ids)
        first = sorted(got)[0]
        rb = got[first]
        cur, t = sorted(rb.totals.items())[0]
        got[first] = ReadBack(rb.target_ref, {**rb.totals, cur: CurrencyTotals(t.debit + 1, t.credit)},
                              rb.line_count)
        return got

    target.read_back = tampered
    out = posting.post_period(ctx, "US01", PERIOD)
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, flow="posting")
        recorded = {r.id for r in conn.execute(sa.select(posted_journals.c.id))}
    assert out.dead_lettered > 0 and letters
    assert all(lt.error_kind == "conflict" and "target holds" in lt.error_text for lt in letters)
    assert len(recorded) == out.journals
    res = dlq.replay(ctx, letters)  # re-posting a journal the target may hold would double it: refused
    assert res.failed == len(letters) and all("double" in d["note"] for d in res.details)


def _remap_service_revenue(ctx, code: str) -> None:
    """The controller changes the mapping for future postings: T&M revenue goes to another account."""
    from ledgerbridge.domain.posting import PostingRules

    roles = ctx.config.account_roles
    roles = roles.model_copy(update={"default": {**roles.default, "service_revenue": code}})
    ctx.config = ctx.config.model_copy(update={"account_roles": roles})
    pc = ctx.config.posting_config()
    ctx.rules = PostingRules.from_config(pc["account_roles"], pc["posting_rules"])


@pytest.mark.parametrize("mapping, account", [("original", "4000"), ("current", "4300")])
def test_replay_with_the_original_or_the_current_mapping(tmp_path: Path, export: Path, mapping: str,
                                                         account: str) -> None:
    ctx = staged_ctx(tmp_path, export, failure_mode="line_level")
    _deactivate(ctx, "4000")
    assert posting.post_period(ctx, "US01", PERIOD).dead_lettered > 0
    with ctx.engine.connect() as conn:
        letters = dead_letters.list_letters(conn, flow="posting")
    assert all(lt.payload["mapping"]["account_roles"]["default"]["service_revenue"] == "4000" for lt in letters)
    _reactivate(ctx, "4000")
    _remap_service_revenue(ctx, "4300")
    res = dlq.replay(ctx, letters, mapping=mapping)
    assert res.replayed == len(letters), res.details[:3]
    if mapping == "current":
        assert posting.post_period(ctx, "US01", PERIOD).status == "posted"
    with ctx.engine.connect() as conn:
        lines = journals.list_journals(conn, legal_entity_id="US01")
    revenue = [ln for j in lines if j.journal_type == "revenue_accrual" for ln in j.lines if ln.credit]
    assert revenue and {ln.account for ln in revenue} == {account}
    assert ctx.connector("ledger").check() == []
