"""domain.revenue: percent-complete (cost-to-cost, cumulative catch-up) and milestone recognition — worked
examples, every DomainError, warnings, and the catch-up property over random sequences of periods."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain import revenue
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.model import BillingMilestone, ContractType, MilestoneStatus, Project, SourceRef, quantum, round_money


def project(pid: str = "P-FF", kind: ContractType = ContractType.FIXED_FEE, **kw: object) -> Project:
    base: dict[str, object] = {
        "id": pid, "name": pid, "customer_id": "C-UK", "legal_entity_id": "UK01", "contract_type": kind,
        "currency": "GBP", "cost_center": "CC-DEL-UK", "start_date": dt.date(2026, 1, 1),
        "contract_value": D("120000.00"), "estimated_cost": D("80000.00"),
    }
    base.update(kw)
    return Project.model_validate(base)


FF = project()
MS_P = project("P-MS", ContractType.MILESTONE, estimated_cost=None)
REF = SourceRef(system="ledgerbridge", entity="fixed_fee_revenue", id="P-FF:2026-03", version=1)
MAR = dt.date(2026, 3, 31)


def ms(status: MilestoneStatus = MilestoneStatus.COMPLETED, **kw: object) -> BillingMilestone:
    base: dict[str, object] = {
        "id": "M1", "project_id": "P-MS", "name": "Go-live", "amount": D("15000.00"), "currency": "GBP",
        "due_date": dt.date(2026, 3, 15), "status": status, "completed_on": dt.date(2026, 3, 12),
    }
    base.update(kw)
    return BillingMilestone.model_validate(base)


# ------------------------------------------------------------------------------------------------ percent complete


def test_percent_complete_worked_example_with_estimate_rise() -> None:
    # Contract 120,000; estimate 80,000.
    # Jan: cost 20,000 -> 25 % -> 30,000.00 recognised.
    jan = revenue.percent_complete_revenue(D("120000"), D("80000"), D("20000"), D(0), "GBP")
    assert jan == D("30000.00")
    # Feb: cost 44,000 -> 55 % -> cumulative 66,000, this period 36,000.
    feb = revenue.percent_complete_revenue(D("120000"), D("80000"), D("44000"), jan, "GBP")
    assert feb == D("36000.00")
    # Mar: estimate rises to 110,000, cost 50,000 -> 45.4545 % -> cumulative 54,545.45: catch-up of -11,454.55.
    mar = revenue.percent_complete_revenue(D("120000"), D("110000"), D("50000"), jan + feb, "GBP")
    assert mar == D("-11454.55")
    # Apr: cost 56,000 -> 50.909 % -> cumulative 61,090.91, this period 6,545.46 (docs example).
    apr = revenue.percent_complete_revenue(D("120000"), D("110000"), D("56000"), jan + feb + mar, "GBP")
    assert apr == D("6545.46")
    # Later: cost reaches the estimate: 100 % -> the whole contract value, exactly.
    end = revenue.percent_complete_revenue(D("120000"), D("110000"), D("110000"), jan + feb + mar + apr, "GBP")
    assert jan + feb + mar + apr + end == D("120000.00")


def test_percent_complete_is_capped_at_100_percent() -> None:
    assert revenue.percent_complete(D("100"), D("130")) == D(1)
    assert revenue.percent_complete_revenue(D("1000"), D("100"), D("130"), D("400"), "GBP") == D("600.00")


def test_percent_complete_rounds_half_up_to_the_currency() -> None:
    # 1000 x 1/3 = 333.333... -> 333.33 GBP; 1000 JPY x 1/8 = 125; 1000 BHD x 1/3 = 333.333
    assert revenue.percent_complete_revenue(D("1000"), D("3"), D("1"), D(0), "GBP") == D("333.33")
    assert revenue.percent_complete_revenue(D("1001"), D("8"), D("1"), D(0), "JPY") == D("125")  # 125.125
    assert revenue.percent_complete_revenue(D("1000"), D("3"), D("1"), D(0), "BHD") == D("333.333")


@pytest.mark.parametrize(
    ("est", "ctd", "rule"),
    [(D(0), D(1), "revenue.bad_estimated_cost"), (D(-5), D(1), "revenue.bad_estimated_cost"),
     (D(10), D(-1), "revenue.negative_cost_to_date")],
)
def test_percent_complete_errors(est: D, ctd: D, rule: str) -> None:
    with pytest.raises(DomainError) as e:
        revenue.percent_complete_revenue(D(100), est, ctd, D(0), "GBP")
    assert e.value.rule == rule and e.value.fix


def test_fixed_fee_postings() -> None:
    [p] = revenue.fixed_fee_postings(FF, "2026-03", D("20000"), D("0"), MAR, REF)
    assert (p.txn_type, p.amount("revenue"), p.sign) == ("fixed_fee_revenue", D("30000.00"), 1)
    assert (p.legal_entity_id, p.date, p.currency, p.source) == ("UK01", MAR, "GBP", REF)
    assert p.dimensions == (("project", "P-FF"), ("cost_center", "CC-DEL-UK"))


def test_fixed_fee_postings_negative_catch_up_and_estimate_override() -> None:
    [p] = revenue.fixed_fee_postings(
        FF, "2026-03", D("50000"), D("66000.00"), MAR, REF, estimated_cost=D("110000")
    )
    assert p.amount("revenue") == D("-11454.55")


def test_fixed_fee_postings_nothing_to_recognise() -> None:
    assert revenue.fixed_fee_postings(FF, "2026-03", D("20000"), D("30000.00"), MAR, REF) == []


@pytest.mark.parametrize(
    ("proj", "period", "date", "rule"),
    [
        (project(kind=ContractType.TIME_AND_MATERIALS), "2026-03", MAR, "revenue.not_fixed_fee"),
        (project(contract_value=None), "2026-03", MAR, "revenue.no_contract_value"),
        (project(estimated_cost=None), "2026-03", MAR, "revenue.no_estimated_cost"),
        (FF, "2026-03", dt.date(2026, 4, 1), "revenue.date_outside_period"),
        (FF, "March", MAR, "billing.bad_period"),
        (project(estimated_cost=D(0)), "2026-03", MAR, "revenue.bad_estimated_cost"),
    ],
)
def test_fixed_fee_postings_errors(proj: Project, period: str, date: dt.date, rule: str) -> None:
    with pytest.raises(DomainError) as e:
        revenue.fixed_fee_postings(proj, period, D("100"), D(0), date, REF)
    assert e.value.rule == rule


def test_warnings_expected_loss_and_exhausted_estimate() -> None:
    assert revenue.revenue_warnings(FF, cost_to_date=D("40000")) == []
    onerous = project(estimated_cost=D("130000.00"))
    [w] = revenue.revenue_warnings(onerous)
    assert (w.rule, w.item) == ("revenue.expected_loss", "project P-FF")
    assert "10000.00" in w.message and "loss provision" in w.fix
    rules = [v.rule for v in revenue.revenue_warnings(FF, cost_to_date=D("90000"), estimated_cost=D("125000"))]
    assert rules == ["revenue.expected_loss"]
    rules = [v.rule for v in revenue.revenue_warnings(onerous, cost_to_date=D("131000"))]
    assert rules == ["revenue.expected_loss", "revenue.cost_exceeds_estimate"]


# ------------------------------------------------------------------------------------------------ milestones


def test_milestone_postings() -> None:
    [p] = revenue.milestone_postings(ms(), MS_P, "UK01")
    assert (p.txn_type, p.amount("revenue"), p.date, p.sign) == (
        "milestone_revenue", D("15000.00"), dt.date(2026, 3, 12), 1
    )
    assert p.source == SourceRef(system="psa", entity="billing_milestone", id="M1", version=1)
    assert p.dimensions == (("project", "P-MS"), ("cost_center", "CC-DEL-UK"))
    # already invoiced still was completed: same recognition (same source ref, so posting it twice dedupes)
    assert revenue.milestone_postings(ms(MilestoneStatus.INVOICED), MS_P) == [p]
    [rev] = revenue.milestone_postings(ms(), MS_P, sign=-1)
    assert rev.sign == -1 and rev.amount("revenue") == p.amount("revenue")


@pytest.mark.parametrize(
    ("milestone", "proj", "kwargs", "rule"),
    [
        (ms(MilestoneStatus.PLANNED, completed_on=None), MS_P, {}, "revenue.milestone_not_completed"),
        (ms(MilestoneStatus.CANCELLED), MS_P, {}, "revenue.milestone_not_completed"),
        (ms(completed_on=None), MS_P, {}, "revenue.no_completion_date"),
        (ms(project_id="P-FF"), FF, {}, "revenue.not_milestone_project"),
        (ms(), FF, {}, "billing.milestone_project_mismatch"),
        (ms(currency="USD"), MS_P, {}, "billing.milestone_currency_mismatch"),
        (ms(), MS_P, {"legal_entity_id": "US01"}, "revenue.entity_mismatch"),
        (ms(), MS_P, {"sign": 0}, "revenue.bad_sign"),
    ],
)
def test_milestone_postings_errors(
    milestone: BillingMilestone, proj: Project, kwargs: dict[str, object], rule: str
) -> None:
    with pytest.raises(DomainError) as e:
        revenue.milestone_postings(milestone, proj, **kwargs)  # type: ignore[arg-type]
    assert e.value.rule == rule and e.value.item == "billing_milestone M1"


# ------------------------------------------------------------------------------------------------ property


@st.composite
def contract_histories(draw: st.DrawFn) -> tuple[D, str, list[tuple[D, D]]]:
    """A contract value and a sequence of (estimated cost, cost to date) per period: cost never falls much,
    the estimate moves up and down between periods."""
    cur = draw(st.sampled_from(["GBP", "JPY", "BHD"]))
    value = D(draw(st.integers(1, 10**9))) * quantum(cur)  # a contract value is at the minor unit
    periods = []
    ctd = D(0)
    for _ in range(draw(st.integers(1, 24))):
        ctd += D(draw(st.integers(-500, 10**6))) / 100
        ctd = max(ctd, D(0))
        est = D(draw(st.integers(1, 2 * 10**7))) / 100
        periods.append((est, ctd))
    return value, cur, periods


@settings(max_examples=200, deadline=None)
@given(history=contract_histories(), finish=st.booleans())
def test_catch_up_sums_to_value_times_final_percent_complete(
    history: tuple[D, str, list[tuple[D, D]]], finish: bool
) -> None:
    value, cur, periods = history
    if finish:  # last period: cost to date reaches the estimate
        est, _ = periods[-1]
        periods = [*periods, (est, est)]
    recognized = D(0)
    for est, ctd in periods:
        recognized += revenue.percent_complete_revenue(value, est, ctd, recognized, cur)
    est, ctd = periods[-1]
    assert recognized == round_money(value * min(D(1), ctd / est), cur)
    if finish:
        assert recognized == value


def test_contract_position_splits_asset_and_liability() -> None:
    # 30,000 recognised, 40,000 billed: 10,000 billed in advance is deferred revenue, nothing unbilled.
    assert revenue.contract_position(D("30000.00"), D("40000.00")) == revenue.ContractPosition(D(0), D("10000.00"))
    assert revenue.contract_position(D("66000.00"), D("40000.00")) == revenue.ContractPosition(D("26000.00"), D(0))
    assert revenue.contract_position(D("5.00"), D("5.00")) == revenue.ContractPosition(D(0), D(0))
