"""Master data sync on a generated firm and a real embedded store: authoritative changes propagate, others open
stewardship items with both values, resolve lands the chosen value (audited), invalid records wait in the
operational dead-letter queue, a record missing from a full read becomes a deactivation proposal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ledgerbridge.cli import app
from ledgerbridge.config.schema import MasterDataConfig
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.flows import masterdata
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import audit, dead_letters, stewardship, xref

from flows_support import make_ctx, tiny_firm

ERP = "ledger"  # the demo's ERP-role system
RULES = {
    "customer": {"authority": "psa", "fields": {"credit_terms_days": "erp"}, "required": ["name"],
                 "dimensions": {"tax_code": "tax_code"}, "legal_entity_field": "legal_entity_id",
                 "propagate_to": [ERP]},
    "project": {"authority": "psa", "fields": {"cost_center": "erp"}, "required": ["name", "customer_id"],
                "dimensions": {"cost_center": "cost_center"}, "legal_entity_field": "legal_entity_id"},
}


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"))


@pytest.fixture
def ctx(tmp_path: Path, export: Path) -> FlowContext:
    c = make_ctx(tmp_path / "w", export_from=export)
    c.config = c.config.model_copy(update={"master_data": MasterDataConfig.model_validate({"entities": RULES})})
    ref = c.reference
    res = masterdata.sync_master(c, SOURCE, [*ref.customers.values(), *ref.projects.values()])
    assert res.dead_lettered == 0 and res.stewardship == 0 and res.propagated > 0
    return c


def _canon(ctx: FlowContext, etype: str, cid: str) -> dict:
    with ctx.engine.connect() as conn:
        return masterdata.load_state(conn, masterdata.CANONICAL, etype)[cid]


def _items(ctx: FlowContext, **kw) -> list[stewardship.StewardshipItem]:
    with ctx.engine.connect() as conn:
        return stewardship.list_items(conn, **kw)


def test_resync_of_the_same_records_changes_nothing(ctx: FlowContext) -> None:
    ref = ctx.reference
    res = masterdata.sync_master(ctx, SOURCE, list(ref.customers.values()))
    assert res.unchanged == len(ref.customers) and res.propagated == 0 and res.stewardship == 0


def test_authoritative_change_propagates_to_canonical_and_reference(ctx: FlowContext) -> None:
    proj = next(iter(ctx.reference.projects.values()))
    renamed = proj.model_copy(update={"name": proj.name + " (phase 2)"})
    res = masterdata.sync_master(ctx, SOURCE, [renamed])
    assert res.propagated == 1 and res.stewardship == 0 and res.changed_ids == {"project": [proj.id]}
    assert _canon(ctx, "project", proj.id)["name"] == renamed.name
    assert ctx.reference.projects[proj.id].name == renamed.name
    with ctx.engine.connect() as conn:
        entries = [e for e in audit.entries(conn) if e.action == "master.synced"]
        assert xref.lookup_many(conn, "project", SOURCE, [proj.id])[proj.id].version_synced
    assert entries[-1].details["changes"] == [{"id": proj.id, "field": "name", "from": proj.name,
                                                "to": renamed.name}]
    # the ERP-role system is not authoritative for the name: its (old) value opens a question, never overwrites
    res = masterdata.sync_master(ctx, ERP, [proj])
    assert res.stewardship == 1 and res.propagated == 0
    assert ctx.reference.projects[proj.id].name == renamed.name


def test_non_authoritative_change_opens_stewardship_with_both_values(ctx: FlowContext) -> None:
    cust = next(iter(ctx.reference.customers.values()))
    erp_view = cust.model_copy(update={"name": "ACME (ERP spelling)"})
    res = masterdata.sync_master(ctx, ERP, [erp_view])
    assert res.stewardship == 1 and res.propagated == 0
    [item] = _items(ctx, canonical_id=cust.id)
    assert (item.canonical_type, item.field, item.changed_by) == ("customer", "name", ERP)
    assert item.values == {ERP: "ACME (ERP spelling)", SOURCE: cust.name}
    assert item.created_at is not None
    assert _canon(ctx, "customer", cust.id)["name"] == cust.name  # not overwritten
    assert ctx.reference.customers[cust.id].name == cust.name
    # the same disagreement reported again refreshes the one open item
    masterdata.sync_master(ctx, ERP, [erp_view.model_copy(update={"name": "ACME again"})])
    [again] = _items(ctx, canonical_id=cust.id)
    assert again.id == item.id and again.values[ERP] == "ACME again"


def test_erp_owned_field_propagates_from_erp_and_psa_change_waits(ctx: FlowContext) -> None:
    cust = next(iter(ctx.reference.customers.values()))
    res = masterdata.sync_master(ctx, ERP, [cust.model_copy(update={"credit_terms_days": 45})])
    assert res.propagated == 1 and ctx.reference.customers[cust.id].credit_terms_days == 45
    res = masterdata.sync_master(ctx, SOURCE, [cust.model_copy(update={"credit_terms_days": 60})])
    assert res.stewardship == 1 and ctx.reference.customers[cust.id].credit_terms_days == 45
    [item] = _items(ctx, canonical_id=cust.id)
    assert item.values == {SOURCE: 60, ERP: 45} and item.field == "credit_terms_days"


def test_resolve_picks_a_side_audited_and_the_value_lands(ctx: FlowContext) -> None:
    cust = next(iter(ctx.reference.customers.values()))
    masterdata.sync_master(ctx, ERP, [cust.model_copy(update={"name": "Name from ERP"})])
    [item] = _items(ctx, canonical_id=cust.id)
    done = masterdata.resolve(ctx, item.id, pick="erp", actor="jane@finance", reason="legal name per contract")
    assert done.status == "resolved" and done.resolution["value"] == "Name from ERP"
    assert done.resolution["decided_by"] == "jane@finance"
    assert _canon(ctx, "customer", cust.id)["name"] == "Name from ERP"
    assert ctx.reference.customers[cust.id].name == "Name from ERP"
    with ctx.engine.connect() as conn:
        [entry] = [e for e in audit.entries(conn) if e.action == "stewardship.resolved"]
        assert audit.verify(conn).ok
    assert entry.actor == "jane@finance" and entry.subject == f"customer:{cust.id}"
    assert entry.details["picked"] == "erp" and entry.details["value"] == "Name from ERP"
    assert entry.details["values"] == {ERP: "Name from ERP", SOURCE: cust.name}
    with pytest.raises(ValueError, match="already resolved"):
        masterdata.resolve(ctx, item.id, pick="psa")
    # the ERP reporting the same value again is no news: no new question
    assert masterdata.sync_master(ctx, ERP, [cust.model_copy(update={"name": "Name from ERP"})]).stewardship == 0


def test_resolve_with_an_entered_value_is_validated(ctx: FlowContext) -> None:
    cust = next(iter(ctx.reference.customers.values()))
    masterdata.sync_master(ctx, SOURCE, [cust.model_copy(update={"credit_terms_days": 90})])
    [item] = _items(ctx, canonical_id=cust.id)
    with pytest.raises(DomainError, match=r"master\.contract"):
        masterdata.resolve(ctx, item.id, value=-5)  # credit terms are >= 0: refused, the item stays open
    assert _items(ctx, canonical_id=cust.id)[0].status == "open"
    masterdata.resolve(ctx, item.id, value=40)
    assert ctx.reference.customers[cust.id].credit_terms_days == 40


def test_inactive_or_disallowed_dimension_is_dead_lettered_operationally(ctx: FlowContext) -> None:
    proj = next(p for p in ctx.reference.projects.values() if p.legal_entity_id == "US01")
    us = [d for d in ctx.reference.dimensions if d.dimension == "cost_center" and "US01" in d.legal_entity_ids]
    other = next(d for d in us if d.code != proj.cost_center)
    ctx.reference.dimensions = [d.model_copy(update={"active": False}) if d.code == other.code else d
                                for d in ctx.reference.dimensions]
    res = masterdata.sync_master(ctx, ERP, [proj.model_copy(update={"cost_center": other.code})])
    assert res.dead_lettered == 1 and res.propagated == 0
    assert ctx.reference.projects[proj.id].cost_center == proj.cost_center  # nothing applied
    with ctx.engine.connect() as conn:
        [letter] = dead_letters.list_letters(conn, flow="masterdata")
    assert (letter.queue, letter.system, letter.entity, letter.item_key) == ("operational", ERP, "project", proj.id)
    assert letter.error_code == "master.inactive_dimension_value"
    assert f"project {proj.id}" in letter.error_text and other.code in letter.error_text
    assert "fix:" in letter.error_text and letter.payload["record"]["cost_center"] == other.code
    uk = next(d for d in ctx.reference.dimensions if d.dimension == "cost_center" and "UK01" in d.legal_entity_ids)
    res = masterdata.sync_master(ctx, ERP, [proj.model_copy(update={"cost_center": uk.code})])
    with ctx.engine.connect() as conn:
        codes = {lt.error_code for lt in dead_letters.list_letters(conn, flow="masterdata")}
    assert res.dead_lettered == 1 and "master.dimension_not_allowed" in codes
    # the dimension is reactivated: replaying the first letter applies it and closes the letter
    ctx.reference.dimensions = [d.model_copy(update={"active": True}) for d in ctx.reference.dimensions]
    replayed = masterdata.replay_letters(ctx, [letter])
    assert replayed.propagated == 1 and replayed.dead_lettered == 0
    assert ctx.reference.projects[proj.id].cost_center == other.code
    with ctx.engine.connect() as conn:
        assert dead_letters.get(conn, letter.id).status == "replayed"


def test_missing_from_full_read_is_a_deactivation_proposal(ctx: FlowContext) -> None:
    custs = list(ctx.reference.customers.values())
    gone = custs[0]
    res = masterdata.sync_master(ctx, SOURCE, custs[1:], entity_type="customer", full_read=True)
    assert res.deactivation_proposals == 1
    [item] = _items(ctx, canonical_id=gone.id)
    assert item.field == "active" and item.values == {SOURCE: False, "canonical": True}
    assert ctx.reference.customers[gone.id].active  # never a silent deactivation, never a delete
    # a full read by a system without authority over `active` proposes nothing
    assert masterdata.sync_master(ctx, ERP, custs[1:], full_read=True).deactivation_proposals == 0
    masterdata.resolve(ctx, item.id, pick=SOURCE, actor="ops")
    assert ctx.reference.customers[gone.id].active is False and _canon(ctx, "customer", gone.id)["active"] is False


def test_stewardship_cli_list_show_resolve(ctx: FlowContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    cust = next(iter(ctx.reference.customers.values()))
    masterdata.sync_master(ctx, ERP, [cust.model_copy(update={"name": "CLI spelling"})])
    cfg_path = tmp_path / "w" / "ledgerbridge.yaml"
    cfg_path.write_text(yaml.safe_dump(ctx.config.model_dump(mode="json", exclude_none=True)))
    monkeypatch.chdir(tmp_path / "w")
    runner = CliRunner()
    out = runner.invoke(app, ["stewardship", "sync", "--json", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[SOURCE]["stewardship"] == 0  # the PSA agrees with the canonical records
    out = runner.invoke(app, ["stewardship", "list", "--json", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert row["values"] == {ERP: "CLI spelling", SOURCE: cust.name}
    out = runner.invoke(app, ["stewardship", "show", row["id"][:8], "-c", str(cfg_path)])
    assert out.exit_code == 0 and '"changed_by": "ledger"' in out.output
    out = runner.invoke(app, ["stewardship", "resolve", row["id"][:8], "--pick", "nobody", "-c", str(cfg_path)])
    assert out.exit_code == 1 and "no single side" in out.output
    out = runner.invoke(app, ["stewardship", "resolve", row["id"][:8], "--value", "Agreed Name Ltd",
                              "--actor", "ops", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    assert _canon(ctx, "customer", cust.id)["name"] == "Agreed Name Ltd"
    with ctx.engine.connect() as conn:
        assert stewardship.get(conn, row["id"]).resolution["decided_by"] == "ops"


def test_reference_reload_keeps_what_other_systems_own(ctx: FlowContext) -> None:
    """The main-job step: after a reload of the PSA files, ERP-owned values and decisions survive."""
    from ledgerbridge.flows.reference import load_reference

    cust = next(iter(ctx.reference.customers.values()))
    masterdata.sync_master(ctx, ERP, [cust.model_copy(update={"credit_terms_days": 75})])
    assert ctx.reference.customers[cust.id].credit_terms_days == 75
    load_reference(ctx, SOURCE)  # the PSA files still say 30
    assert ctx.reference.customers[cust.id].credit_terms_days == cust.credit_terms_days
    res = masterdata.sync_from_reference(ctx, SOURCE)
    assert res.stewardship == 0 and res.deactivation_proposals == 0 and res.dead_lettered == 0
    assert ctx.reference.customers[cust.id].credit_terms_days == 75
    n = len(ctx.reference.accounts)
    assert {f"{a.code}:{a.legal_entity_id or '*'}" for a in ctx.reference.accounts} == set(
        _all(ctx, "account")) and n == len(_all(ctx, "account"))


def _all(ctx: FlowContext, etype: str) -> dict:
    with ctx.engine.connect() as conn:
        return masterdata.load_state(conn, masterdata.CANONICAL, etype)


def test_sync_and_resolve_on_each_store_backend(store_url: str, export: Path, tmp_path: Path) -> None:
    """The same round trip on SQLite and PostgreSQL (upserts of master_records, JSON values, stewardship)."""
    from ledgerbridge.flows.main_job import demo_config
    from ledgerbridge.flows.reference import load_reference

    wd = tmp_path / "pg"
    wd.mkdir()
    (wd / "psa-export").symlink_to(export.resolve(), target_is_directory=True)
    cfg = demo_config(wd)
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": store_url}),
                                 "master_data": MasterDataConfig.model_validate({"entities": RULES})})
    c = FlowContext(cfg, workdir=wd)
    try:
        c.migrate()
        load_reference(c, SOURCE)
        custs = list(c.reference.customers.values())
        assert masterdata.sync_master(c, SOURCE, custs, batch_size=4).batches == -(-len(custs) // 4)
        res = masterdata.sync_master(c, ERP, [custs[0].model_copy(update={"name": "N", "credit_terms_days": 15})])
        assert (res.propagated, res.stewardship) == (1, 1)
        [item] = _items(c)
        masterdata.resolve(c, item.id, pick=ERP)
        assert (_canon(c, "customer", custs[0].id)["name"], c.reference.customers[custs[0].id].credit_terms_days) == (
            "N", 15)
    finally:
        c.engine.dispose()
