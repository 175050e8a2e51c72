"""Billing orchestration on a tiny generated firm through the real flows (transactions -> posting -> billing ->
Beancount ledger -> PSA status file): round trip with write-back, idempotent re-runs and crash resume, credit note
on an item reversed after billing, a refused draft dead-lettered with the draft and replayed, and the receivable
balances after billing."""

from __future__ import annotations

import csv
import io
import shutil
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.store import dead_letters
from ledgerbridge.store import invoices as invoices_repo
from ledgerbridge.store.schema import staging_lines

from flows_support import make_ctx, records, tiny_firm

SEP, OCT = "2026-09", "2026-10"


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("billing-firm"))


@pytest.fixture(scope="module")
def posted(tmp_path_factory: pytest.TempPathFactory, firm: Path) -> Path:
    """A workdir where the whole export was ingested and September posted (copied by each test)."""
    wd = tmp_path_factory.mktemp("billing-base")
    shutil.copytree(firm, wd / "psa-export")
    ctx = make_ctx(wd)
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    post(ctx, SEP)
    ctx.engine.dispose()
    return wd


def fresh(tmp_path: Path, base: Path):
    """A context on its own copy of the store, ledger and export (the status file goes into the export)."""
    wd = tmp_path / "wd"
    shutil.copytree(base, wd, symlinks=True)
    return make_ctx(wd)


def get(ctx, invoice_id: str) -> invoices_repo.InvoiceRow:
    with ctx.engine.connect() as conn:
        row = invoices_repo.get(conn, invoice_id)
    assert row is not None, invoice_id
    return row


def post(ctx, *periods: str) -> None:
    for period in periods:
        for entity in sorted(ctx.reference.entities):
            out = posting.post_period(ctx, entity, period)
            assert out.status in ("posted", "nothing_to_post"), out


def status_file(ctx) -> dict[str, dict[str, str]]:
    text = (ctx.workdir / "psa-export" / "invoice_status.csv").read_text()
    return {r["invoice_key"]: r for r in csv.DictReader(io.StringIO(text))}


def rows(ctx, **kw) -> list[invoices_repo.InvoiceRow]:
    with ctx.engine.connect() as conn:
        return invoices_repo.list_invoices(conn, **kw)


def accrued(ctx) -> dict[tuple[str, str, int], Decimal]:
    """(system, item id, version) -> billable value staged for that time-entry version (what was accrued)."""
    with ctx.engine.connect() as conn:
        q = sa.select(staging_lines).where(staging_lines.c.txn_type == "revenue_accrual",
                                           staging_lines.c.source_entity == "time_entry", staging_lines.c.sign == 1)
        return {(r.source_system, r.source_id, r.source_version): Decimal(r.amounts[0][1]) for r in conn.execute(q)}


def balances(ctx, entity: str, account: str) -> dict[str, Decimal]:
    """Debit - credit per currency of ``account`` over every period, read from the Beancount ledger itself."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for (_, code, cur), (d, c) in ctx.connector("ledger").account_totals(entity).items():
        if code == account:
            out[cur] += d - c
    return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------------------------------- round trip


def test_invoice_round_trip_with_write_back(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    out = billing.run_billing(ctx, SEP)
    drafted = out["draft"]["drafted"]
    assert drafted and out["create"]["created"] == sorted(drafted)
    assert all(i.startswith("INV-") and i.endswith(f"-{SEP}") for i in drafted)

    # each invoice bills exactly what was accrued for its time versions (cent for cent)
    acc = accrued(ctx)
    for r in rows(ctx):
        time_refs = [tuple(k) for k in r.lineage if k[1] == "time_entry"]
        time_net = sum((Decimal(ln["net_amount"]) for ln in r.payload["lines"]
                        if all(x["entity"] == "time_entry" for x in ln["lineage"])), start=Decimal(0))
        assert time_net == sum(acc[(s, i, v)] for s, _, i, v in time_refs)
        # each line names the account the posting rules credit: unbilled receivables for work, reimbursable
        # expense revenue for rebilled expenses (what an ERP booking the invoice itself must credit)
        for ln in r.payload["lines"]:
            rebilled = all(x["entity"] == "expense" for x in ln["lineage"])
            assert ln["revenue_account"] == ("4300" if rebilled else "1200")

    # the ERP (Beancount) assigned numbers; the PSA status file shows them with status posted
    held = ctx.connector("ledger").invoice_status(drafted)
    written = status_file(ctx)
    assert set(written) == set(drafted)
    for key in drafted:
        assert held[key].number and held[key].number.startswith("INV-")
        assert written[key]["erp_number"] == held[key].number
        assert written[key]["status"] == "posted"
    assert len({h.number for h in held.values()}) == len(drafted)
    assert all(r.written_back == "posted" and r.erp_number == held[r.id].number for r in rows(ctx))

    # the invoice postings go through the next posting run: AR and tax payable in the ledger = invoice totals
    post(ctx, SEP)
    assert ctx.connector("ledger").check() == []
    for entity in sorted(ctx.reference.entities):
        mine = [r for r in rows(ctx) if r.legal_entity_id == entity]
        want_ar: dict[str, Decimal] = defaultdict(Decimal)
        want_tax: dict[str, Decimal] = defaultdict(Decimal)
        for r in mine:
            want_ar[r.currency] += r.net_total + r.tax_total
            want_tax[r.currency] += r.tax_total
        assert balances(ctx, entity, "1100") == {k: v for k, v in want_ar.items() if v}
        assert balances(ctx, entity, "2300") == {k: -v for k, v in want_tax.items() if v}


def test_rerun_and_crash_resume_create_no_second_invoice(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    first = billing.run_billing(ctx, SEP)
    assert first["create"]["created"]
    status_before = (ctx.workdir / "psa-export" / "invoice_status.csv").read_bytes()
    accounts = sorted((ctx.workdir / "ledger").rglob("invoices.beancount"))  # the invoice registers
    ledger_before = [p.read_bytes() for p in accounts]
    with ctx.engine.connect() as conn:
        staged_before = conn.execute(sa.select(sa.func.count()).select_from(staging_lines)).scalar_one()

    again = billing.run_billing(ctx, SEP)
    assert again["draft"]["drafted"] == [] and again["create"]["created"] == []
    assert again["written_back"] == 0

    # crash after the ERP created the invoice but before the store recorded it: the row is still a draft
    victim = rows(ctx)[0]
    with ctx.engine.begin() as conn:
        conn.execute(sa.update(invoices_repo.invoices).where(invoices_repo.invoices.c.id == victim.id)
                     .values(status="draft", erp_number=None, written_back=None))
    resumed = billing.create_pending(ctx)
    assert resumed.created == [victim.id]
    assert get(ctx, victim.id).erp_number == victim.erp_number  # same ERP number
    billing.write_back(ctx)

    assert [p.read_bytes() for p in accounts] == ledger_before  # no second invoice in the ERP
    assert (ctx.workdir / "psa-export" / "invoice_status.csv").read_bytes() == status_before
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(staging_lines)).scalar_one() == staged_before
    text = "".join(p.read_text() for p in accounts)
    assert text.count(f'"{victim.id}"') == 1


# --------------------------------------------------------------------------------------------------- credit note


def _land_versions(ctx, rec: dict, statuses: list[str], hours: Decimal | None = None) -> list[int]:
    base = dict(rec["payload"])
    versions = []
    for n, st in enumerate(statuses, start=1):
        v = rec["version"] + n
        payload = {**base, "version": v, "approval_status": st}
        if hours is not None and st == "approved":
            payload["hours"] = str(hours)
        versions.append(v)
        transactions.land(ctx, SOURCE, [{"entity": "time_entry", "external_id": rec["external_id"], "version": v,
                                         "payload": payload}])
    transactions.process_pending(ctx)
    return versions


def test_credit_note_on_item_reversed_after_billing(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    billing.run_billing(ctx, SEP)
    (inv,) = [r for r in rows(ctx) if any(k[1] == "time_entry" for k in r.lineage)][:1]
    system, _, item_id, version = next(k for k in inv.lineage if k[1] == "time_entry")
    acc = accrued(ctx)[(system, item_id, version)]
    latest = max((r for r in records(ctx) if r["external_id"] == item_id), key=lambda r: r["version"])
    assert latest["version"] == version  # the billed version is the item's last one so far

    # recalled after billing, corrected and approved again with other hours
    new_hours = Decimal(latest["payload"]["hours"]) + Decimal("1.5")
    _, _, v_new = _land_versions(ctx, latest, ["recalled", "submitted", "approved"], hours=new_hours)
    assert v_new == version + 3
    post(ctx, SEP)

    out = billing.run_billing(ctx, SEP)
    (cn_id,) = out["draft"]["credit_notes"]
    assert cn_id == f"CN-{inv.id}-1"
    cn = get(ctx, cn_id)
    assert cn.lineage == [[system, "time_entry", item_id, version]]  # exactly the billed version
    assert cn.net_total == -acc and cn.credits == inv.id and cn.status == "posted"
    # the re-approved version is billed by the supplementary invoice of the period
    (supp,) = out["draft"]["drafted"]
    assert supp == f"{inv.id}-S2"
    supp_row = get(ctx, supp)
    assert [system, "time_entry", item_id, v_new] in supp_row.lineage
    assert [system, "time_entry", item_id, version] not in supp_row.lineage

    # the ERP reports the original as credited; the PSA status file shows both documents
    written = status_file(ctx)
    assert written[inv.id]["status"] == "credited"
    assert written[cn_id]["erp_number"].startswith("CRN-") and written[cn_id]["credits"] == inv.id
    assert Decimal(written[cn_id]["total"]) < 0

    # nothing more to credit or bill on a re-run
    again = billing.run_billing(ctx, SEP)
    assert again["draft"]["credit_notes"] == [] and again["draft"]["drafted"] == []


# --------------------------------------------------------------------------------------------------- validation


def test_inactive_tax_code_is_dead_lettered_with_the_draft_and_replayable(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    ref = ctx.reference
    # the ERP deactivates the tax code of one billed customer
    first_customer = ref.projects[sorted(p for p in ref.projects if ref.projects[p].contract_type.value
                                         == "time_and_materials")[0]].customer_id
    code = ref.customers[first_customer].tax_code
    ref.tax_codes[code] = ref.tax_codes[code].model_copy(update={"active": False})

    out = billing.run_billing(ctx, SEP)
    refused = out["draft"]["refused"]
    assert refused, "an invoice for a customer with the inactive tax code must be refused"
    with ctx.engine.connect() as conn:
        letters = [lt for lt in dead_letters.list_letters(conn, queue="financial") if lt.flow == "billing"]
        assert all(invoices_repo.get(conn, i) is None for i in refused)  # not recorded: its items stay unbilled
        staged_for = {r.source_id for r in conn.execute(sa.select(staging_lines.c.source_id).where(
            staging_lines.c.source_entity == "invoice"))}
    assert not staged_for & set(refused)
    assert {lt.item_key for lt in letters} == set(refused)
    for lt in letters:
        assert lt.error_code == "tax.inactive" and code in lt.error_text
        draft = lt.payload["invoice"]
        assert draft["id"] == lt.item_key and draft["lines"] and all(ln["tax_code"] == code for ln in draft["lines"])
        assert Decimal(draft["total"]) > 0

    # still inactive: replay fails again and keeps the letter open
    res = billing.replay(ctx, letters)
    assert set(res["failed"]) == {lt.id for lt in letters}

    # the ERP reactivates it: replay creates the invoices and closes the letters
    ref.tax_codes[code] = ref.tax_codes[code].model_copy(update={"active": True})
    res = billing.replay(ctx, letters)
    assert set(res["replayed"]) == {lt.id for lt in letters}
    created = {r.id: r for r in rows(ctx)}
    written = status_file(ctx)
    for i in refused:
        assert created[i].status == "posted" and written[i]["erp_number"] == created[i].erp_number
    with ctx.engine.connect() as conn:
        assert not [lt for lt in dead_letters.list_letters(conn, queue="financial") if lt.flow == "billing"]


# --------------------------------------------------------------------------------------------------- balances


def test_unbilled_receivables_net_to_the_expected_balance_after_billing(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    post(ctx, OCT)
    ref = ctx.reference
    entities = sorted(ref.entities)
    before = {e: balances(ctx, e, "1200") for e in entities}
    assert sum(sum(b.values()) for b in before.values()) > 0  # revenue accrued, not billed yet

    billing.run_billing(ctx, SEP)
    billing.run_billing(ctx, OCT)  # also bills milestones completed in October (recognised + invoiced)
    post(ctx, SEP, OCT)
    assert ctx.connector("ledger").check() == []
    invs = rows(ctx)
    assert {r.kind for r in invs} >= {"tm", "milestone"}
    # Every billable time version of a T&M project on the ledger was billed, and every completed milestone was
    # recognised and invoiced at the same amount, so what stays on unbilled receivables is exactly the revenue
    # accrued from time on the other (fixed-fee / milestone) projects, which their own billing events settle.
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with ctx.engine.connect() as conn:
        for r in conn.execute(sa.select(staging_lines).where(staging_lines.c.txn_type == "revenue_accrual",
                                                             staging_lines.c.source_entity == "time_entry")):
            assert r.status == "posted"
            project = ref.projects[dict(r.dimensions)["project"]]
            if project.contract_type.value != "time_and_materials":
                expected[(r.legal_entity_id, r.currency)] += Decimal(r.amounts[0][1]) * r.sign
    for e in entities:
        want = {c: v for (ent, c), v in expected.items() if ent == e and v}
        assert balances(ctx, e, "1200") == want, e
        # receivables hold every invoice total
        ar: dict[str, Decimal] = defaultdict(Decimal)
        for r in invs:
            if r.legal_entity_id == e:
                ar[r.currency] += r.net_total + r.tax_total
        assert balances(ctx, e, "1100") == {k: v for k, v in ar.items() if v}
    assert before != {e: balances(ctx, e, "1200") for e in entities}


# --------------------------------------------------------------------------------------------------- fixed fee


def test_fixed_fee_schedule_dates_are_invoiced_once(tmp_path: Path, posted: Path) -> None:
    from ledgerbridge.domain.billing import fixed_fee_schedule

    ctx = fresh(tmp_path, posted)
    ref = ctx.reference
    ff = [p for p in ref.projects.values() if p.contract_type.value == "fixed_fee" and p.contract_value and p.end_date]
    assert ff
    out = billing.run_billing(ctx, SEP, kinds=["fixed_fee"])
    drafted = set(out["draft"]["drafted"])
    expected = {}
    for p in ff:
        for item in fixed_fee_schedule(p, p.start_date, p.end_date):
            if item.date.strftime("%Y-%m") == SEP:
                expected[f"INV-{p.id}-FF-{item.seq:03d}"] = item.amount
    assert drafted == set(expected) and drafted
    for key, amount in expected.items():
        r = get(ctx, key)
        assert r.kind == "fixed_fee" and r.net_total == amount and r.status == "posted" and r.erp_number
    assert set(status_file(ctx)) == drafted  # only fixed-fee invoices: the T&M run was not asked for
    again = billing.run_billing(ctx, SEP, kinds=["fixed_fee"])
    assert again["draft"]["drafted"] == []


def test_write_back_failure_is_an_operational_dead_letter_and_retried(tmp_path: Path, posted: Path) -> None:
    ctx = fresh(tmp_path, posted)
    blocker = ctx.workdir / "psa-export" / "invoice_status.csv"
    blocker.mkdir()  # the PSA status output cannot be written
    out = billing.run_billing(ctx, SEP)
    created = out["create"]["created"]
    assert created and out["written_back"] == 0
    with ctx.engine.connect() as conn:
        letters = [lt for lt in dead_letters.list_letters(conn) if lt.flow == "billing"]
    assert {lt.item_key for lt in letters} == {f"write-back:{i}" for i in created}
    assert all(lt.queue == "operational" and lt.entity == "invoice_status" for lt in letters)
    assert all(r.status == "posted" and r.written_back is None for r in rows(ctx))  # money side unaffected
    blocker.rmdir()
    res = billing.replay(ctx, letters)
    assert set(res["replayed"]) == {lt.id for lt in letters}
    assert set(status_file(ctx)) == set(created)


# --------------------------------------------------------------------------------------------------- targets


def test_beancount_invoice_register_is_keyed_numbered_and_conflict_checked(tmp_path: Path, posted: Path) -> None:
    from ledgerbridge.domain.billing import credit_note
    from ledgerbridge.errors import ConflictError
    from ledgerbridge.model.entities import Invoice

    ctx = fresh(tmp_path, posted)
    billing.draft_invoices(ctx, SEP)
    drafts = [Invoice.model_validate(r.payload) for r in rows(ctx)]
    ledger = ctx.connector("ledger")
    first = ledger.create_invoices(drafts)
    again = ledger.create_invoices(list(reversed(drafts)))  # same keys, any order: the same numbers
    assert {k: v.number for k, v in first.items()} == {k: v.number for k, v in again.items()}
    for entity in {d.legal_entity_id for d in drafts}:
        numbers = sorted(v.number for k, v in first.items() if k.startswith("INV") and
                         next(d for d in drafts if d.id == k).legal_entity_id == entity)
        assert numbers == [f"INV-{entity}-{n:06d}" for n in range(1, len(numbers) + 1)]
    data = drafts[0].model_dump(mode="json")
    data["lines"][0]["net_amount"] = str(Decimal(data["lines"][0]["net_amount"]) + 1)
    data["net_total"], data["total"] = str(drafts[0].net_total + 1), str(drafts[0].total + 1)
    changed = Invoice.model_validate(data)  # same key, other amounts
    with pytest.raises(ConflictError, match=drafts[0].id):
        ledger.create_invoice(changed)
    cn = credit_note(drafts[0], drafts[0].invoice_date, ctx.reference.tax_codes)
    res = ledger.create_invoice(cn)
    assert res.number.startswith(f"CRN-{drafts[0].legal_entity_id}-") and res.status == "posted"
    assert ledger.invoice_status([drafts[0].id])[drafts[0].id].status == "credited"
    assert ledger.check() == []  # the registers are part of the ledger and load cleanly
    registers = list((ctx.workdir / "ledger").rglob("invoices.beancount"))
    assert sum(p.read_text().count("ledgerbridge-invoice") for p in registers) == len(drafts) + 1


class _BooksItself:
    """The real invoice target, answering as an ERP that books invoices in its own ledger (``books_ledger`` on each
    result); ``declares``: whether the connector also says so up front (the class attribute the flow reads)."""

    def __init__(self, inner, declares: bool) -> None:
        self.inner, self.sent = inner, []
        if declares:
            self.books_ledger = True

    def create_invoice(self, inv):
        import dataclasses

        self.sent.append(inv)
        return dataclasses.replace(self.inner.create_invoice(inv), books_ledger=True)

    def invoice_status(self, keys):
        import dataclasses

        return {k: dataclasses.replace(v, books_ledger=True) for k, v in self.inner.invoice_status(keys).items()}


@pytest.mark.parametrize("declares", [True, False])
def test_a_target_booking_invoices_itself_gets_clearing_lines_and_only_the_relief(tmp_path: Path, posted: Path,
                                                                                    declares: bool) -> None:
    ctx = fresh(tmp_path, posted)
    system = billing.invoice_system(ctx, "US01")
    target = _BooksItself(ctx.connector(system), declares)
    ctx._connectors[system] = target
    out = billing.run_billing(ctx, SEP, "US01")
    assert out["create"]["created"] and not out["create"]["failed"], out
    with ctx.engine.connect() as conn:
        staged = conn.execute(sa.select(staging_lines.c.txn_type, staging_lines.c.source_entity)
                              .where(staging_lines.c.source_system == "ledgerbridge")).all()
    types = {t for t, e in staged if e in ("invoice", "invoice_relief", "invoice_line")}
    work_accounts = {ln.revenue_account for inv in target.sent for ln in inv.lines
                     if not billing.is_expense_line(ln)}
    if declares:  # sent on the clearing account; the engine stages the relief and nothing else of the invoice
        assert work_accounts == {"4900"} and types == {"invoice_relief"}, (work_accounts, types)
    else:  # sent as drafted (crediting unbilled itself): nothing staged, unbilled is not relieved twice
        assert work_accounts == {"1200"} and types == set(), (work_accounts, types)
