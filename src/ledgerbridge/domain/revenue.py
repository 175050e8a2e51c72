"""Revenue recognition rules for fixed-fee and milestone projects. Pure functions, no I/O.

- **Time and materials**: revenue is accrued from approved billable time at bill rates by costing/posting
  (``revenue_accrual``: Dr unbilled receivables / Cr service revenue on ``billable_value``); nothing here.
- **Fixed fee**: percent complete, cost-to-cost, with cumulative catch-up. Each period recognises
  ``round(contract_value * min(1, cost_to_date / estimated_cost)) - recognized_to_date``; when the estimate rises
  the period's figure can be negative (a catch-up reversal). Posting ``fixed_fee_revenue`` (amount ``revenue``).
- **Milestone**: the milestone amount is recognised when the milestone completes, on its completion date.
  Posting ``milestone_revenue`` (amount ``revenue``).

Recognition puts revenue on unbilled receivables; invoices (``domain.billing``) move it to receivables, so a
project's unbilled balance is recognised minus billed: :func:`contract_position` splits it into the asset
(unbilled) and the liability (billed ahead: deferred revenue) side.
A contract whose estimated cost exceeds its value is reported as a loss-provision warning
(:func:`revenue_warnings`); booking the provision is left to the accountant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from ledgerbridge.domain.billing import check_milestone, fixed_fee_contract_value, milestone_ref, period_bounds
from ledgerbridge.domain.errors import DomainError, Violation
from ledgerbridge.domain.types import Posting
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import BillingMilestone, ContractType, MilestoneStatus, Project
from ledgerbridge.model.money import round_money

TXN_FIXED_FEE_REVENUE = "fixed_fee_revenue"
TXN_MILESTONE_REVENUE = "milestone_revenue"


def percent_complete(estimated_cost: Decimal, cost_to_date: Decimal, item: str = "contract") -> Decimal:
    """Cost-to-cost progress ``min(1, cost_to_date / estimated_cost)`` (not rounded)."""
    if estimated_cost <= 0:
        raise DomainError(
            item,
            "revenue.bad_estimated_cost",
            f"estimated cost at completion must be positive, got {estimated_cost}",
            "enter the estimated total cost of the contract in the PSA",
        )
    if cost_to_date < 0:
        raise DomainError(
            item,
            "revenue.negative_cost_to_date",
            f"cost to date is negative ({cost_to_date})",
            "check the cost postings of the project: reversals exceed the cost posted",
        )
    return min(Decimal(1), cost_to_date / estimated_cost)


def percent_complete_revenue(
    contract_value: Decimal,
    estimated_cost: Decimal,
    cost_to_date: Decimal,
    recognized_to_date: Decimal,
    currency: str,
    item: str = "contract",
) -> Decimal:
    """Revenue to recognise this period with cumulative catch-up:
    ``round(contract_value * min(1, cost_to_date / estimated_cost)) - recognized_to_date``.

    All amounts in the contract currency (convert cost to date first). Negative when the estimate rose enough
    that less is earned to date than was recognised: post it (it reverses the excess), do not clamp it."""
    pct = percent_complete(estimated_cost, cost_to_date, item)
    return round_money(contract_value * pct, currency) - recognized_to_date


def revenue_warnings(
    project: Project, cost_to_date: Decimal | None = None, estimated_cost: Decimal | None = None
) -> list[Violation]:
    """Warnings a controller must see (nothing is posted for them):

    - ``revenue.expected_loss``: estimated cost exceeds the contract value: an onerous contract, book a loss
      provision for the difference;
    - ``revenue.cost_exceeds_estimate``: cost to date already exceeds the estimate: progress is capped at 100 %,
      the estimate to complete needs revising.
    """
    est = estimated_cost if estimated_cost is not None else project.estimated_cost
    out: list[Violation] = []
    item = f"project {project.id}"
    if est is not None and project.contract_value is not None and est > project.contract_value:
        out.append(
            Violation(
                item,
                "revenue.expected_loss",
                f"estimated cost {est} exceeds the contract value {project.contract_value} {project.currency}: "
                f"expected loss {est - project.contract_value}",
                "book a loss provision for the expected loss and review the estimate",
            )
        )
    if est is not None and cost_to_date is not None and cost_to_date > est:
        out.append(
            Violation(
                item,
                "revenue.cost_exceeds_estimate",
                f"cost to date {cost_to_date} exceeds the estimated cost {est} {project.currency}; "
                "progress is capped at 100 %",
                "revise the estimate at completion in the PSA",
            )
        )
    return out


def _dims(project: Project) -> tuple[tuple[str, str], ...]:
    return (("project", project.id), ("cost_center", project.cost_center))


def fixed_fee_postings(
    project: Project,
    period: str,
    cost_to_date: Decimal,
    recognized_to_date: Decimal,
    date: dt.date,
    ref: SourceRef,
    *,
    estimated_cost: Decimal | None = None,
) -> list[Posting]:
    """The period's percent-complete revenue as a ``fixed_fee_revenue`` posting (amount ``revenue``, may be
    negative: a catch-up reversal); empty when there is nothing to recognise.

    ``cost_to_date`` is the project's cumulative cost in the project currency through ``period``;
    ``recognized_to_date`` is the revenue recognised in earlier periods; ``estimated_cost`` overrides the
    project's (a re-estimate not yet synced). ``date`` must fall in ``period``; ``ref`` identifies the run
    (e.g. ``ledgerbridge:fixed_fee_revenue:P-1:2026-03``)."""
    item = f"project {project.id}"
    value = fixed_fee_contract_value(project, "revenue", "percent-complete revenue")
    est = estimated_cost if estimated_cost is not None else project.estimated_cost
    if est is None:
        raise DomainError(
            item, "revenue.no_estimated_cost", "the fixed-fee project has no estimated cost at completion",
            "set the estimated cost on the project in the PSA",
        )
    start, end = period_bounds(period)
    if not start <= date <= end:
        raise DomainError(
            item, "revenue.date_outside_period", f"posting date {date} is not in period {period}",
            f"date the recognition between {start} and {end}",
        )
    revenue = percent_complete_revenue(value, est, cost_to_date, recognized_to_date, project.currency, item)
    if revenue == 0:
        return []
    return [
        Posting(
            txn_type=TXN_FIXED_FEE_REVENUE,
            legal_entity_id=project.legal_entity_id,
            date=date,
            currency=project.currency,
            amounts=(("revenue", revenue),),
            dimensions=_dims(project),
            source=ref,
        )
    ]


def milestone_postings(
    milestone: BillingMilestone,
    project: Project,
    legal_entity_id: str | None = None,
    *,
    source_system: str = "psa",
    sign: int = 1,
) -> list[Posting]:
    """Recognise a completed milestone: one ``milestone_revenue`` posting (amount ``revenue`` = the milestone
    amount) on its completion date. ``sign=-1`` reverses it (a milestone reopened after recognition).

    DomainError for a planned or cancelled milestone, a completed one without a completion date, a project that
    is not a milestone project, or a legal entity other than the project's."""
    check_milestone(milestone, project)
    item = f"billing_milestone {milestone.id}"
    if project.contract_type is not ContractType.MILESTONE:
        raise DomainError(
            item,
            "revenue.not_milestone_project",
            f"project {project.id} is {project.contract_type.value}: its revenue follows that rule, "
            "recognising the milestone too would count it twice",
            f"set project {project.id} to milestone, or bill the milestone without recognising it",
        )
    if milestone.status not in (MilestoneStatus.COMPLETED, MilestoneStatus.INVOICED):
        raise DomainError(
            item,
            "revenue.milestone_not_completed",
            f"milestone revenue is recognised on completion; this milestone is {milestone.status.value}",
            "complete the milestone in the PSA first" if milestone.status is MilestoneStatus.PLANNED
            else "a cancelled milestone earns nothing; reopen it in the PSA if that is wrong",
        )
    if milestone.completed_on is None:
        raise DomainError(
            item, "revenue.no_completion_date", "the milestone is completed but has no completion date",
            "record the completion date in the PSA",
        )
    entity = legal_entity_id or project.legal_entity_id
    if entity != project.legal_entity_id:
        raise DomainError(
            item, "revenue.entity_mismatch",
            f"project {project.id} belongs to legal entity {project.legal_entity_id}, not {entity}",
            f"recognise the milestone in {project.legal_entity_id}",
        )
    if sign not in (1, -1):
        raise DomainError(item, "revenue.bad_sign", f"sign must be 1 or -1, got {sign}", "pass 1 or -1")
    return [
        Posting(
            txn_type=TXN_MILESTONE_REVENUE,
            legal_entity_id=entity,
            date=milestone.completed_on,
            currency=milestone.currency,
            amounts=(("revenue", milestone.amount),),
            dimensions=_dims(project),
            source=milestone_ref(milestone, source_system),
            sign=sign,
        )
    ]


@dataclass(frozen=True, slots=True)
class ContractPosition:
    """Where a contract stands: revenue earned but not billed (an asset, shown on unbilled receivables) or
    billed ahead of revenue (a contract liability, shown as deferred revenue). At most one is non-zero."""

    unbilled: Decimal
    deferred: Decimal


def contract_position(recognized_to_date: Decimal, billed_net_to_date: Decimal) -> ContractPosition:
    """Split a project's unbilled-receivables balance (recognised revenue minus billed net) into the asset and
    the liability side, for reporting or a period-end reclass to deferred revenue (2400)."""
    diff = recognized_to_date - billed_net_to_date
    return ContractPosition(unbilled=max(diff, Decimal(0)), deferred=max(-diff, Decimal(0)))
