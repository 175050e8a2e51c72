"""PSA export reader: round trip with zero errors, bad rows become line-numbered errors, good rows still load."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerbridge.model import ApprovalStatus, Customer, Expense, Project, TimeEntry
from ledgerbridge.samplefirm.fileformat import FILE_MODELS, MASTER_FILES, columns
from ledgerbridge.samplefirm.generator import GenerationReport, generate_firm
from ledgerbridge.samplefirm.reader import (
    CsvReader,
    FirmLoadError,
    iter_expenses,
    iter_time_entries,
    latest_versions,
    load_firm,
    read_file,
    stream,
    verify_manifest,
)

TE_HEADER = ",".join(columns(TimeEntry))
GOOD_TE = "TE-1,psa_files,1,PRJ-1,RES-1,Build,2026-09-01,7.50,true,approved,2026-09-08T10:15:00Z,2026-09-04T17:00:00Z,x"


@pytest.fixture(scope="module")
def firm_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationReport]:
    d = tmp_path_factory.mktemp("firm")
    return d, generate_firm(d, seed=21, employees=30, months=2, start="2026-09")


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_loads_everything_with_zero_errors(firm_dir: tuple[Path, GenerationReport]) -> None:
    d, report = firm_dir
    firm = load_firm(d, strict=True, verify=True)
    assert firm.errors == []
    assert firm.manifest is not None and firm.manifest["seed"] == 21
    assert len(firm.legal_entities) == 3 and set(firm.legal_entities) == {"US01", "UK01", "DE01"}
    assert len(firm.projects) == report.rows("projects.csv")
    assert len(firm.customers) == report.rows("customers.csv")
    assert len(firm.resources) == report.rows("resources.csv") == 30
    assert len(firm.rate_cards) == report.rows("rate_cards.csv")
    assert len(firm.fx_rates) == report.rows("fx_rates.csv")
    assert len(firm.periods) == report.rows("periods.csv")
    assert len(firm.milestones) == report.rows("milestones.csv")
    assert {d.dimension for d in firm.dimensions} == {"cost_center", "department", "location"}
    cc = {v.code: v.legal_entity_ids for v in firm.dimension_values("cost_center")}
    assert cc["CC-DEL-US"] == ("US01",)
    assert [a.required_dimensions for a in firm.accounts if a.code == "5000"] == [("project", "cost_center")]
    assert [p.status.value for p in firm.periods_of("UK01")] == ["closed", "open", "open"]

    errors: list = []
    entries = list(firm.time_entries(errors))
    assert errors == [] and len(entries) == report.rows("time_entries.csv")
    expenses = list(firm.expenses(errors))
    assert errors == [] and len(expenses) == report.rows("expenses.csv")
    for e in entries:
        assert e.project_id in firm.projects and e.resource_id in firm.resources
    assert all(x.project_id in firm.projects for x in expenses)


def test_values_come_back_exactly_as_written(firm_dir: tuple[Path, GenerationReport]) -> None:
    d, _ = firm_dir
    with (d / "time_entries.csv").open(encoding="utf-8", newline="") as fh:
        raw = list(itertools.islice(csv.DictReader(fh), 500))
    parsed = list(itertools.islice(iter_time_entries(d / "time_entries.csv"), 500))
    for r, e in zip(raw, parsed, strict=True):
        assert e.id == r["id"] and e.version == int(r["version"])
        assert e.hours == Decimal(r["hours"]) and str(e.hours) == r["hours"]  # text -> Decimal, no float
        assert e.work_date == dt.date.fromisoformat(r["work_date"])
        assert e.approval_status == ApprovalStatus(r["approval_status"])
        assert e.billable is (r["billable"] == "true")
        assert (e.approved_at is None) == (r["approved_at"] == "")
        if e.approved_at is not None:
            assert e.approved_at.utcoffset() == dt.timedelta(0)
            assert e.approved_at.strftime("%Y-%m-%dT%H:%M:%SZ") == r["approved_at"]
        assert e.task == (r["task"] or None) and e.description == r["description"]
    with (d / "expenses.csv").open(encoding="utf-8", newline="") as fh:
        raw_x = list(csv.DictReader(fh))
    for r, x in zip(raw_x, iter_expenses(d / "expenses.csv"), strict=True):
        assert str(x.amount) == r["amount"] and x.currency == r["currency"]


def test_latest_version_wins(firm_dir: tuple[Path, GenerationReport]) -> None:
    d, report = firm_dir
    latest = latest_versions(iter_time_entries(d / "time_entries.csv"))
    assert len(latest) == report.stats["time_items"]
    multi = [e for e in latest.values() if e.version > 1]
    assert multi and all(e.approval_status != ApprovalStatus.REJECTED for e in multi)
    # order does not matter: reversed input gives the same winners
    again = latest_versions(reversed(list(iter_time_entries(d / "time_entries.csv"))))
    assert again == latest


def test_bad_rows_are_reported_with_line_and_field_and_good_rows_load(tmp_path: Path) -> None:
    p = write(
        tmp_path / "time_entries.csv",
        TE_HEADER,
        GOOD_TE,                                                                                     # line 2
        GOOD_TE.replace("TE-1,", "TE-2,").replace("2026-09-01", "2026-13-45"),                      # 3 bad date
        GOOD_TE.replace("TE-1,", "TE-3,").replace(",7.50,", ",7.5.0,"),                             # 4 garbage
        GOOD_TE.replace("TE-1,", "TE-4,").replace(",7.50,", ",0.1,"),                               # 5 fine
        GOOD_TE.replace("TE-1,", "TE-5,").replace(",x", ""),                                        # 6 short row
        GOOD_TE.replace("TE-1,", "TE-6,").replace(",7.50,", ",nan,"),                               # 7 not finite
        GOOD_TE.replace("TE-1,", "TE-7,").replace("approved,", "approvd,"),                        # 8 bad status
        GOOD_TE.replace("TE-1,", "TE-8,").replace(",7.50,", ",25,").replace("2026-09-01", "2026-02-30"),  # 9 two
        "",                                                                                          # 10 blank
        GOOD_TE.replace("TE-1,", "TE-9,").replace(",1,PRJ-1", ",0,PRJ-1"),                         # 11 version 0
        GOOD_TE.replace("TE-1,", "TE-10,"),                                                          # 12
    )
    result = read_file(p, TimeEntry)
    assert [e.id for e in result.items] == ["TE-1", "TE-4", "TE-10"]
    assert result.items[1].hours == Decimal("0.1") and str(result.items[1].hours) == "0.1"
    got = {(e.line, e.field) for e in result.errors}
    assert got == {(3, "work_date"), (4, "hours"), (6, None), (7, "hours"), (8, "approval_status"),
                   (9, "hours"), (9, "work_date"), (11, "version")}
    assert result.rows == 10 and result.bad_rows == 7
    by_line = {e.line: e for e in result.errors}
    assert "7.5.0" in by_line[4].message and by_line[4].value == "7.5.0"
    assert "12 values" in by_line[6].message and "13 columns" in by_line[6].message
    assert by_line[3].raw is not None and by_line[3].raw[0] == "TE-2"  # the raw row is kept
    assert str(by_line[3]).startswith("time_entries.csv:3 [work_date]: ")
    assert "approved" in by_line[8].message  # lists the allowed values


def test_unknown_currency_and_float_garbage_in_expenses(tmp_path: Path) -> None:
    header = ",".join(columns(Expense))
    good = "EX-1,psa_files,1,PRJ-1,RES-1,2026-09-03,120.50,EUR,travel,true,approved,,,Train"
    p = write(tmp_path / "expenses.csv", header, good,
              good.replace("EX-1", "EX-2").replace(",EUR,", ",XYZ,"),
              good.replace("EX-3", "EX-3").replace("EX-1", "EX-3").replace(",120.50,", ",1.2e3x,"),
              good.replace("EX-1", "EX-4").replace(",EUR,", ",usd,"))
    errors: list = []
    items = list(stream(p, Expense, errors))
    assert [x.id for x in items] == ["EX-1", "EX-4"]
    assert items[1].currency == "USD"
    assert [(e.line, e.field) for e in errors] == [(3, "currency"), (4, "amount")]
    assert "unknown currency 'XYZ'" in errors[0].message and "ISO 4217" in errors[0].message


def test_bytes_that_are_not_utf8_spoil_only_their_row(tmp_path: Path) -> None:
    p = tmp_path / "time_entries.csv"
    latin1 = GOOD_TE.replace("TE-1,", "TE-2,").replace("Build", "B\xfcild").encode("latin-1")
    utf8 = GOOD_TE.replace("TE-1,", "TE-3,").replace("Build", "Büild").encode("utf-8")
    p.write_bytes(b"\n".join([TE_HEADER.encode(), GOOD_TE.encode(), latin1, utf8]) + b"\n")
    r = read_file(p, TimeEntry)
    assert [(e.line, e.field) for e in r.errors] == [(3, "task")]
    assert "UTF-8" in r.errors[0].message
    assert [(e.id, e.task) for e in r.items] == [("TE-1", "Build"), ("TE-3", "Büild")]


def test_header_problems_give_one_clear_error(tmp_path: Path) -> None:
    missing = write(tmp_path / "time_entries.csv", TE_HEADER.replace(",hours", ""), GOOD_TE)
    r = read_file(missing, TimeEntry)
    assert r.items == [] and len(r.errors) == 1
    e = r.errors[0]
    assert e.line == 1 and "missing required column(s) 'hours'" in e.message and TE_HEADER in e.message

    unknown = write(tmp_path / "t2.csv", TE_HEADER.replace("hours", "hrs"), GOOD_TE)
    (e,) = read_file(unknown, TimeEntry).errors
    assert "unknown column(s) 'hrs'" in e.message and "missing required column(s) 'hours'" in e.message

    # optional columns may be left out; a UTF-8 BOM (Excel) is accepted
    cols = [c for c in columns(TimeEntry) if c not in ("task", "description", "updated_at")]
    row = dict(zip(columns(TimeEntry), next(csv.reader([GOOD_TE])), strict=True))
    short = tmp_path / "t3.csv"
    short.write_text("\ufeff" + ",".join(cols) + "\n" + ",".join(row[c] for c in cols) + "\n", encoding="utf-8")
    r = read_file(short, TimeEntry)
    assert r.errors == [] and r.items[0].task is None and r.items[0].description == ""

    empty = write(tmp_path / "t4.csv", "")
    (e,) = read_file(empty, TimeEntry).errors
    assert "empty" in e.message
    (e,) = read_file(tmp_path / "nope.csv", TimeEntry).errors
    assert "cannot open" in e.message


def test_bad_master_data_is_reported_and_the_rest_loads(tmp_path: Path,
                                                       firm_dir: tuple[Path, GenerationReport]) -> None:
    src, _ = firm_dir
    d = tmp_path / "firm"
    shutil.copytree(src, d)
    cust = (d / "customers.csv").read_text(encoding="utf-8").splitlines()
    first = cust[1]
    cust.append(first)  # duplicate id
    (d / "customers.csv").write_text("\n".join(cust) + "\n", encoding="utf-8")
    proj = (d / "projects.csv").read_text(encoding="utf-8").splitlines()
    proj[2] = proj[2].replace(proj[2].split(",")[2], "CUST-NOPE", 1)  # unknown customer on line 3
    (d / "projects.csv").write_text("\n".join(proj) + "\n", encoding="utf-8")

    firm = load_firm(d, verify=True)
    msgs = [str(e) for e in firm.errors]
    assert any(m.startswith(f"customers.csv:{len(cust)}: duplicate key") for m in msgs), msgs
    assert any(m.startswith("projects.csv:3 [customer_id]: unknown customer 'CUST-NOPE'") for m in msgs), msgs
    assert {e.file for e in firm.errors if e.line == 0} == {"customers.csv", "projects.csv"}  # SHA mismatch
    assert len(firm.projects) == len(proj) - 1  # the bad-reference project is still loaded, and flagged
    with pytest.raises(FirmLoadError, match="error"):
        load_firm(d, strict=True)
    assert {e.file for e in verify_manifest(d)} == {"customers.csv", "projects.csv"}


def test_every_master_file_reads_as_its_model(firm_dir: tuple[Path, GenerationReport]) -> None:
    d, _ = firm_dir
    for name in MASTER_FILES:
        r = read_file(d / name, FILE_MODELS[name])
        assert r.ok and r.items, name
    customers = read_file(d / "customers.csv", Customer).items
    projects = read_file(d / "projects.csv", Project).items
    assert all(isinstance(c.credit_terms_days, int) for c in customers)
    assert any(p.contract_value is not None and p.estimated_cost is not None for p in projects)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(columns(TimeEntry)) - 1),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)),
                min_size=1, max_size=6))
def test_any_garbage_in_cells_never_stops_the_file(tmp_path: Path, mutations: list[tuple[int, str]]) -> None:
    """Whatever lands in the cells, each data row ends up either as one item or as errors on its own line."""
    good = next(csv.reader([GOOD_TE]))
    lines = [list(columns(TimeEntry))]
    for i, (col, text) in enumerate(mutations):
        row = [f"TE-{i}", *good[1:]]
        row[col] = text
        lines.append(row)
        lines.append([f"TE-ok-{i}", *good[1:]])
    p = tmp_path / "garbage.csv"
    with p.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(lines)
    errors: list = []
    rdr = CsvReader(p, TimeEntry, errors)
    items = []
    item_lines = []
    for it in rdr:
        items.append(it)
        item_lines.append(rdr.line)
    bad_lines = {e.line for e in errors}
    assert all(f"TE-ok-{i}" in {x.id for x in items} for i in range(len(mutations)))  # good rows always load
    assert not bad_lines & set(item_lines)  # a row is an item or an error, never both
    assert len(items) + len(bad_lines) == rdr.rows == 2 * len(mutations)
    assert all(e.raw is not None and e.line > 1 for e in errors)
