"""The embedded main job end to end, in-process on the durable runtime: months posted into the Beancount ledger,
the ledger valid for beancount's own loader, every journal balanced and recorded once, and a second run posting
nothing new (byte-identical ledger)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from ledgerbridge.flows.main_job import DemoOptions, run_demo
from ledgerbridge.store import audit, create_store_engine
from ledgerbridge.store.schema import posted_journals, staging_lines

from flows_support import ledger_text


def test_main_job_posts_three_months_once(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path / "demo", employees=6, months=3, seed=11)
    first = run_demo(opts)
    assert not first.failed and first.ledger_check == []
    assert first.recon is not None and first.recon.ok, first.recon.findings[:5]  # every variance explained
    assert [m["period"] for m in first.months] == ["2026-09", "2026-10", "2026-11"]
    posted = [p for m in first.months for p in m["posting"] if p["status"] == "posted"]
    assert len(posted) >= 6
    for p in posted:
        assert p["control_totals"]["debit"] == p["control_totals"]["credit"]
    closes = [c for m in first.months for c in m.get("close", [])]
    assert closes and all(c["status"] == "closed" for c in closes)
    ledger = ledger_text(opts.workdir)
    engine = create_store_engine(f"sqlite:///{opts.workdir / 'state.sqlite'}")
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(posted_journals.c.id))]
        unposted = conn.execute(sa.select(sa.func.count()).select_from(staging_lines).where(
            staging_lines.c.status != "posted")).scalar_one()
        assert audit.verify(conn).ok
    assert ids and max(Counter(ids).values()) == 1
    assert unposted == 0
    text = "".join(v.decode() for v in ledger.values())
    assert all(text.count(f'journal_id: "{j}"') == 1 for j in ids)

    second = run_demo(opts)  # resumable and idempotent: nothing new anywhere
    assert not second.failed
    assert ledger_text(opts.workdir) == ledger
    with engine.connect() as conn:
        assert sorted(r[0] for r in conn.execute(sa.select(posted_journals.c.id))) == sorted(ids)
    engine.dispose()
