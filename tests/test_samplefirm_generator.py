"""Sample-firm generator: determinism, scaling, contract types, versions, timing, FX, rate cards, manifest."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from ledgerbridge.samplefirm.fileformat import FILE_MODELS, MANIFEST, columns
from ledgerbridge.samplefirm.generator import GenerationReport, generate_firm, parse_start
from ledgerbridge.samplefirm.reader import verify_manifest


def rows(d: Path, name: str) -> list[dict[str, str]]:
    with (d / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).replace(tzinfo=None)


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationReport]:
    d = tmp_path_factory.mktemp("firm")
    return d, generate_firm(d, seed=7, employees=60, months=3, start="2026-09")


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_firm(a, seed=11, employees=25, months=2, start="2026-09")
    generate_firm(b, seed=11, employees=25, months=2, start="2026-09")
    generate_firm(c, seed=12, employees=25, months=2, start="2026-09")
    for name in [*FILE_MODELS, MANIFEST]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "time_entries.csv").read_bytes() != (c / "time_entries.csv").read_bytes()
    assert (a / "expenses.csv").read_bytes() != (c / "expenses.csv").read_bytes()
    assert (a / "resources.csv").read_bytes() != (c / "resources.csv").read_bytes()
    assert (a / MANIFEST).read_bytes() != (c / MANIFEST).read_bytes()


def test_bytes_do_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    """No hash()/set ordering leaks into the output: two interpreters with different PYTHONHASHSEED agree."""
    code = ("import sys; from pathlib import Path; from ledgerbridge.samplefirm.generator import generate_firm; "
            "generate_firm(Path(sys.argv[1]), seed=5, employees=15, months=1, start='2026-09')")
    for hs in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / hs)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": hs})
    assert (tmp_path / "1" / MANIFEST).read_bytes() == (tmp_path / "2" / MANIFEST).read_bytes()


def test_counts_scale_with_employees_and_months(tmp_path: Path) -> None:
    base = generate_firm(tmp_path / "base", seed=3, employees=40, months=2, start="2026-09")
    more_staff = generate_firm(tmp_path / "staff", seed=3, employees=80, months=2, start="2026-09")
    more_months = generate_firm(tmp_path / "months", seed=3, employees=40, months=4, start="2026-09")
    b = base.stats["time_items"]
    assert 1.8 < more_staff.stats["time_items"] / b < 2.2
    assert 1.8 < more_months.stats["time_items"] / b < 2.3
    # documented rule of thumb: about 1.9 entries per employee per weekday (plus ~5% extra version rows)
    weekdays = sum(1 for i in range((base.window_end - base.window_start).days + 1)
                   if (base.window_start + dt.timedelta(days=i)).weekday() < 5)
    per_day = b / (40 * weekdays)
    assert 1.6 < per_day < 2.1
    assert 1.02 < base.rows("time_entries.csv") / b < 1.09


def test_header_is_the_model_fields_and_counts_match_manifest(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["seed"] == 7 and manifest["parameters"] == {"employees": 60, "months": 3, "start": "2026-09"}
    for name, model in FILE_MODELS.items():
        with (d / name).open(encoding="utf-8", newline="") as fh:
            r = csv.reader(fh)
            assert tuple(next(r)) == columns(model), name
            n = sum(1 for _ in r)
        meta = manifest["files"][name]
        assert meta["rows"] == n == report.rows(name), name
        assert meta["sha256"] == hashlib.sha256((d / name).read_bytes()).hexdigest()
        assert meta["bytes"] == (d / name).stat().st_size
    assert verify_manifest(d) == []


def test_entities_accounts_tax_codes_follow_chart(firm: tuple[Path, GenerationReport]) -> None:
    d, _ = firm
    ents = {r["id"]: (r["functional_currency"], r["country"], r["tax_jurisdiction"])
            for r in rows(d, "legal_entities.csv")}
    assert ents == {"US01": ("USD", "US", "US"), "UK01": ("GBP", "GB", "GB"), "DE01": ("EUR", "DE", "DE")}
    codes = {r["code"]: r["type"] for r in rows(d, "accounts.csv")}
    assert codes["1100"] == "asset" and codes["2400"] == "liability" and codes["4200"] == "revenue"
    assert codes["7900"] == "expense" and codes["4900"] == "revenue" and len(codes) == 14
    tax = {r["code"]: (r["jurisdiction"], Decimal(r["rate"])) for r in rows(d, "tax_codes.csv")}
    assert tax == {"US-EXEMPT": ("US", Decimal("0")), "UK-VAT20": ("GB", Decimal("0.2")),
                   "DE-VAT19": ("DE", Decimal("0.19"))}
    by_jur = {"US": "US-EXEMPT", "GB": "UK-VAT20", "DE": "DE-VAT19"}
    customers = rows(d, "customers.csv")
    assert all(c["tax_code"] == by_jur[c["tax_jurisdiction"]] for c in customers)
    assert {c["legal_entity_id"] for c in customers} == set(ents)


def test_projects_cover_all_contract_types(firm: tuple[Path, GenerationReport]) -> None:
    d, _ = firm
    projects = rows(d, "projects.csv")
    types = Counter(p["contract_type"] for p in projects)
    assert set(types) == {"time_and_materials", "fixed_fee", "milestone"}
    for p in projects:
        if p["contract_type"] == "fixed_fee":
            assert Decimal(p["contract_value"]) > Decimal(p["estimated_cost"]) > 0
        elif p["contract_type"] == "milestone":
            assert Decimal(p["contract_value"]) > 0 and p["end_date"]
        else:
            assert p["contract_value"] == "" and p["estimated_cost"] == ""
    internal = [p for p in projects if p["id"].startswith("PRJ-INT-")]
    assert sorted(p["legal_entity_id"] for p in internal) == ["DE01", "UK01", "US01"]
    # milestones of each milestone project add up to its contract value; some are completed in the window
    ms = rows(d, "milestones.csv")
    total: dict[str, Decimal] = defaultdict(Decimal)
    for m in ms:
        total[m["project_id"]] += Decimal(m["amount"])
        assert (m["completed_on"] != "") == (m["status"] in ("completed", "invoiced"))
    values = {p["id"]: Decimal(p["contract_value"]) for p in projects if p["contract_type"] == "milestone"}
    assert total == values
    assert any(m["status"] == "completed" for m in ms)


def test_time_entry_versions_are_coherent(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    as_of = report.as_of
    by_id: dict[str, list[dict[str, str]]] = defaultdict(list)
    internal = {p["id"] for p in rows(d, "projects.csv") if p["id"].startswith("PRJ-INT-")}
    for r in rows(d, "time_entries.csv"):
        by_id[r["id"]].append(r)
        q = Decimal(r["hours"]) * 4
        assert q == q.to_integral_value() and Decimal(0) < Decimal(r["hours"]) <= 24
        assert r["source_system"] == "psa_files"
        assert dt.date.fromisoformat(r["work_date"]).weekday() < 5
        if r["project_id"] in internal:
            assert r["billable"] == "false"
        if r["approval_status"] == "approved":
            assert r["approved_at"] and ts(r["approved_at"]) >= ts(r["updated_at"])
            assert ts(r["approved_at"]) < as_of
        else:
            assert r["approved_at"] == ""
        assert ts(r["updated_at"]) < as_of
        assert ts(r["updated_at"]).date() >= dt.date.fromisoformat(r["work_date"])
    kinds = Counter()
    for versions in by_id.values():
        assert [int(v["version"]) for v in versions] == list(range(1, len(versions) + 1))
        statuses = [v["approval_status"] for v in versions]
        for prev, cur in itertools.pairwise(versions):
            assert ts(cur["updated_at"]) > ts(prev["updated_at"])
            same = {k: v for k, v in cur.items() if k not in ("version", "approval_status", "approved_at",
                                                               "updated_at", "hours")}
            assert same == {k: v for k, v in prev.items() if k in same}  # a version changes only what it should
        for i, s in enumerate(statuses):
            prev = statuses[i - 1] if i else None
            if s == "recalled":
                assert prev == "approved" and versions[i]["hours"] == versions[i - 1]["hours"]
                kinds["recalled"] += 1
            if s == "rejected":
                assert i == 0
                kinds["rejected"] += 1
            if s == "submitted" and i:  # corrected and resubmitted after a rejection or a recall
                assert prev in ("rejected", "recalled")
                kinds["resubmitted"] += 1
            if s == "approved" and i:
                assert prev in ("submitted", "approved")  # approval of a resubmission, or an edit
                if prev == "submitted":
                    assert versions[i]["hours"] == versions[i - 1]["hours"]
                    assert versions[i]["approved_at"] == versions[i]["updated_at"]
                else:
                    assert versions[i]["hours"] != versions[i - 1]["hours"]
                    kinds["edited"] += 1
    n = len(by_id)
    assert n == report.stats["time_items"]
    assert kinds["recalled"] == report.stats["time_recalled"]
    assert kinds["rejected"] == report.stats["time_rejected"]
    assert kinds["edited"] == report.stats["time_edited"]
    assert kinds["resubmitted"] == report.stats["time_resubmitted"] > 0
    # roughly the configured shares: ~2% recalled, ~1% rejected, ~2% edited after approval
    assert 0.01 * n < kinds["recalled"] < 0.03 * n
    assert 0.004 * n < kinds["rejected"] < 0.02 * n
    assert 0.01 * n < kinds["edited"] < 0.03 * n


def test_approval_timing_and_late_items(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    end = report.window_end
    firsts = [r for r in rows(d, "time_entries.csv") if r["version"] == "1"]
    last_days = [r for r in firsts if dt.date.fromisoformat(r["work_date"]) > end - dt.timedelta(days=3)]
    assert last_days and all(r["approval_status"] == "submitted" for r in last_days)
    old = [r for r in firsts if dt.date.fromisoformat(r["work_date"]) < end - dt.timedelta(days=21)]
    assert sum(r["approval_status"] in ("approved", "rejected") for r in old) / len(old) > 0.97
    for r in old:
        if r["approval_status"] == "approved":
            lag = ts(r["approved_at"]) - ts(r["updated_at"])
            assert dt.timedelta(0) < lag <= dt.timedelta(days=6)
    # late items: a few entries dated in the closed month before the window, submitted inside the window
    closed = [p for p in rows(d, "periods.csv") if p["status"] == "closed"]
    assert {p["period"] for p in closed} == {"2026-08"} and len(closed) == 3
    late = [r for r in firsts if r["work_date"] < report.window_start.isoformat()]
    assert late and all(ts(r["updated_at"]).date() >= report.window_start for r in late)
    assert len(late) < 0.02 * len(firsts)


def test_expenses_currencies_categories_versions(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    projects = {p["id"]: p for p in rows(d, "projects.csv")}
    ex = rows(d, "expenses.csv")
    assert {r["category"] for r in ex} == {"travel", "lodging", "meals", "software"}
    assert any(r["currency"] != projects[r["project_id"]]["currency"] for r in ex)  # cross-currency
    assert {r["currency"] for r in ex} == {"USD", "GBP", "EUR"}
    by_id: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in ex:
        assert Decimal(r["amount"]) > 0 and Decimal(r["amount"]).as_tuple().exponent == -2
        by_id[r["id"]].append(r)
    for versions in by_id.values():
        assert [int(v["version"]) for v in versions] == list(range(1, len(versions) + 1))
        for i, v in enumerate(versions):
            if v["approval_status"] == "recalled":
                assert versions[i - 1]["approval_status"] == "approved"
    assert report.stats["expense_versions"] == len(ex)
    assert report.stats["expense_items"] == len(by_id)


def test_fx_rates_daily_business_days(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    fx = rows(d, "fx_rates.csv")
    dates = sorted({r["rate_date"] for r in fx})
    assert dates[0] == "2026-08-03" and dates[-1] <= report.window_end.isoformat()  # from the closed month
    assert all(dt.date.fromisoformat(x).weekday() < 5 for x in dates)
    per_day = Counter(r["rate_date"] for r in fx)
    assert set(per_day.values()) == {6}
    day: dict[tuple[str, str], Decimal] = {}
    for r in fx:
        assert len(r["rate"].split(".")[1]) == 6
        if r["rate_date"] == dates[10]:
            day[(r["from_currency"], r["to_currency"])] = Decimal(r["rate"])
    assert abs(day[("EUR", "USD")] * day[("USD", "EUR")] - 1) < Decimal("0.000002")
    assert abs(day[("EUR", "USD")] / day[("GBP", "USD")] - day[("EUR", "GBP")]) < Decimal("0.000002")
    eur = [Decimal(r["rate"]) for r in fx if (r["from_currency"], r["to_currency"]) == ("EUR", "USD")]
    assert Decimal("0.9") < min(eur) and max(eur) < Decimal("1.3") and len(set(eur)) > len(eur) // 2


def test_rate_cards_raises_and_overrides(firm: tuple[Path, GenerationReport]) -> None:
    d, report = firm
    lines = rows(d, "rate_cards.csv")
    projects = {p["id"]: p for p in rows(d, "projects.csv")}
    resources = {r["id"]: r for r in rows(d, "resources.csv")}
    roles = ("Analyst", "Consultant", "Senior Consultant", "Manager", "Partner")
    standard = {"USD": (150, 200, 260, 320, 450), "GBP": (120, 160, 210, 260, 360), "EUR": (140, 185, 240, 295, 415)}
    bill = [r for r in lines if r["kind"] == "bill"]
    # every client project has one bill line per role, in the project currency, at or below the standard card
    role_lines = {(r["project_id"], r["role"]): r for r in bill if r["role"]}
    client = [p for p in projects.values() if not p["id"].startswith("PRJ-INT-")]
    assert set(role_lines) == {(p["id"], role) for p in client for role in roles}
    discounted = 0
    for (pid, role), r in role_lines.items():
        assert r["currency"] == projects[pid]["currency"] and not r["resource_id"]
        card = Decimal(standard[r["currency"]][roles.index(role)])
        assert card * Decimal("0.85") <= Decimal(r["rate"]) <= card
        discounted += Decimal(r["rate"]) < card
    assert discounted > 0
    personal = [r for r in bill if r["resource_id"]]
    assert personal and all(r["project_id"] and r["currency"] == projects[r["project_id"]]["currency"]
                            for r in personal)
    currency = {"US01": "USD", "UK01": "GBP", "DE01": "EUR"}
    cost: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in lines:
        if r["kind"] == "cost":
            cost[r["resource_id"]].append(r)
            assert r["currency"] == currency[resources[r["resource_id"]]["home_entity_id"]]
    assert set(cost) == set(resources)
    raised = [v for v in cost.values() if len(v) == 2]
    assert raised
    for first, second in raised:
        start = dt.date.fromisoformat(second["effective_from"])
        assert dt.date.fromisoformat(first["effective_to"]) == start - dt.timedelta(days=1)
        assert report.window_start < start <= report.window_end
        assert Decimal(second["rate"]) > Decimal(first["rate"])


def test_time_entries_stream_in_constant_memory(tmp_path: Path) -> None:
    def peak(months: int) -> tuple[int, int]:
        tracemalloc.start()
        report = generate_firm(tmp_path / f"m{months}", seed=5, employees=20, months=months, start="2026-09")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, report.stats["time_versions"]

    (small, rows_small), (big, rows_big) = peak(1), peak(5)
    assert rows_big > 4 * rows_small
    assert big < small * 1.5, (small, big)  # 5x the rows, not 5x the memory


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_start("2026-9")
    with pytest.raises(ValueError, match="YYYY-MM"):
        generate_firm(tmp_path, start="Sept 2026")
    with pytest.raises(ValueError, match="employees"):
        generate_firm(tmp_path, employees=0)
    with pytest.raises(ValueError, match="months"):
        generate_firm(tmp_path, months=0)
