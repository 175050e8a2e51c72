"""FX conversion and rounding: explicit rate and rate date on every converted amount, cents never lost.

Rules (see ``docs/domain-approvals-costing-fx.md``):

- **Which rate.** For a pair and a date, the rate with the latest ``rate_date`` on or before that date (a rate
  published on Friday applies over the weekend). No such rate is a :class:`DomainError` (``fx.missing_rate``) —
  never 1.
- **Inverse pairs.** If only ``B -> A`` is published, ``A -> B`` is derived as ``1 / rate`` quantized to 10 decimal
  places (half-up). A directly published rate is preferred over a derived one *on the same rate date*; otherwise
  the more recent of the two wins.
- **Same currency.** Rate 1, rate date = the requested date.
- **Which date.** :class:`RateDatePolicy`: ``transaction_date`` (the item's own date) or ``period_end`` (the last
  day of the accounting period it posts to), chosen per legal entity.
- **Rounding.** Half-up to the target currency's minor unit (2 for USD, 0 for JPY, 3 for BHD).
- **Summaries equal their sources.** :func:`allocate_rounding` distributes a rounded total over parts with the
  largest-remainder method (ties to the lower index), and :func:`convert_batch` converts many amounts so the
  converted parts add up exactly to the converted, rounded sum of the sources.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.model.entities import FxRate
from ledgerbridge.model.money import check_currency, quantum, round_money

__all__ = [
    "INVERSE_PLACES",
    "Converted",
    "FxTable",
    "RateDatePolicy",
    "allocate_rounding",
    "convert_batch",
    "rate_date_for",
    "round_to_currency",
]

#: Decimal places of a derived inverse rate (1 / published rate).
INVERSE_PLACES = 10
_INVERSE_Q = Decimal(1).scaleb(-INVERSE_PLACES)
_ONE = Decimal(1)


class RateDatePolicy(StrEnum):
    TRANSACTION_DATE = "transaction_date"
    PERIOD_END = "period_end"


def rate_date_for(policy: RateDatePolicy, txn_date: dt.date, period_end: dt.date) -> dt.date:
    """The date whose rate converts an item: its own date, or the end of the period it posts to."""
    if policy is RateDatePolicy.TRANSACTION_DATE:
        return txn_date
    if policy is RateDatePolicy.PERIOD_END:
        return period_end
    raise DomainError(  # pragma: no cover - unreachable with the enum; kept for str values from config
        f"fx policy {policy!r}",
        "fx.unknown_policy",
        f"unknown rate-date policy {policy!r}",
        "use transaction_date or period_end",
    )


def round_to_currency(amount: Decimal, currency: str) -> Decimal:
    """Half-up to the currency minor unit (alias of :func:`ledgerbridge.model.money.round_money`)."""
    return round_money(amount, currency)


@dataclass(frozen=True, slots=True)
class Converted:
    """An amount converted with an explicit rate and rate date. ``unrounded`` is ``source amount * rate``."""

    amount: Decimal
    currency: str
    rate: Decimal
    rate_date: dt.date
    unrounded: Decimal


class _Series:
    """Rates of one direction of one pair, sorted by date: (dates, rates, derived?)."""

    __slots__ = ("dates", "derived", "rates")

    def __init__(self) -> None:
        self.dates: list[dt.date] = []
        self.rates: list[Decimal] = []
        self.derived: list[bool] = []


class FxTable:
    """Published FX rates indexed for ``O(log n)`` lookups by date. Build once per batch with :meth:`from_rates`.

    Two published rates for the same pair and date with different values are refused (``fx.conflicting_rate``):
    the table would otherwise depend on load order."""

    __slots__ = ("_series",)

    def __init__(self, series: dict[tuple[str, str], _Series]) -> None:
        self._series = series

    @classmethod
    def from_rates(cls, rates: Iterable[FxRate]) -> FxTable:
        direct: dict[tuple[str, str], dict[dt.date, Decimal]] = defaultdict(dict)
        for r in rates:
            pair = (r.from_currency, r.to_currency)
            if r.from_currency == r.to_currency:
                if r.rate != _ONE:
                    raise DomainError(
                        f"fx_rate {r.from_currency}/{r.to_currency} {r.rate_date.isoformat()}",
                        "fx.conflicting_rate",
                        f"a same-currency rate must be 1, got {r.rate}",
                        "remove the same-currency rate from the rate feed",
                    )
                continue
            seen = direct[pair].get(r.rate_date)
            if seen is not None and seen != r.rate:
                raise DomainError(
                    f"fx_rate {pair[0]}/{pair[1]} {r.rate_date.isoformat()}",
                    "fx.conflicting_rate",
                    f"two different rates published for the same day: {seen} and {r.rate}",
                    "keep one rate per pair and day in the rate feed (e.g. the closing rate)",
                )
            direct[pair][r.rate_date] = r.rate
        merged: dict[tuple[str, str], dict[dt.date, tuple[Decimal, bool]]] = defaultdict(dict)
        for (a, b), by_date in direct.items():
            for day, rate in by_date.items():
                merged[(a, b)][day] = (rate, False)
        for (a, b), by_date in direct.items():
            inverse = merged[(b, a)]
            for day, rate in by_date.items():
                if day not in inverse:  # a directly published rate wins on its own day
                    inverse[day] = ((_ONE / rate).quantize(_INVERSE_Q, rounding=ROUND_HALF_UP), True)
        series: dict[tuple[str, str], _Series] = {}
        for pair, with_flags in merged.items():
            s = _Series()
            for day in sorted(with_flags):
                rate, derived = with_flags[day]
                s.dates.append(day)
                s.rates.append(rate)
                s.derived.append(derived)
            series[pair] = s
        return cls(series)

    def rate_for(self, from_currency: str, to_currency: str, on: dt.date) -> tuple[Decimal, dt.date]:
        """``(rate, rate_date)``: 1 ``from_currency`` = rate ``to_currency``, from the latest rate on or before
        ``on``. Raises :class:`DomainError` ``fx.missing_rate`` when there is none."""
        src = _currency(from_currency)
        dst = _currency(to_currency)
        if src == dst:
            return _ONE, on
        s = self._series.get((src, dst))
        i = bisect_right(s.dates, on) - 1 if s is not None else -1
        if s is None or i < 0:
            first = f"; the first {src}/{dst} rate is on {s.dates[0].isoformat()}" if s is not None else ""
            raise DomainError(
                f"fx {src}->{dst} on {on.isoformat()}",
                "fx.missing_rate",
                f"no {src}/{dst} rate (or inverse) on or before {on.isoformat()}{first}",
                f"load a {src}/{dst} or {dst}/{src} rate dated on or before {on.isoformat()}, then replay",
            )
        return s.rates[i], s.dates[i]

    def is_derived(self, from_currency: str, to_currency: str, on: dt.date) -> bool:
        """True when :meth:`rate_for` would answer with an inverse of a published rate."""
        s = self._series.get((_currency(from_currency), _currency(to_currency)))
        if s is None:
            return False
        i = bisect_right(s.dates, on) - 1
        return i >= 0 and s.derived[i]

    def convert(self, amount: Decimal, from_currency: str, to_currency: str, on: dt.date) -> Converted:
        """Convert one amount at the rate for ``on``, rounded half-up to the target currency's minor unit."""
        rate, rate_date = self.rate_for(from_currency, to_currency, on)
        unrounded = amount * rate
        dst = _currency(to_currency)
        return Converted(round_money(unrounded, dst), dst, rate, rate_date, unrounded)

    def convert_batch(
        self, amounts: Sequence[Decimal], from_currency: str, to_currency: str, on: dt.date
    ) -> tuple[list[Converted], Converted]:
        """Convert many amounts at one rate so the parts sum exactly to the converted total (see
        :func:`convert_batch`). Returns ``(parts, total)``."""
        rate, rate_date = self.rate_for(from_currency, to_currency, on)
        return convert_batch(amounts, rate, to_currency, rate_date)


def _currency(code: str) -> str:
    try:
        return check_currency(code)
    except ValueError as e:
        fix = "use an ISO 4217 code listed in ledgerbridge.model.money.MINOR_UNITS"
        raise DomainError(f"currency {code!r}", "fx.unknown_currency", str(e), fix) from None


def _check_targets(targets: Sequence[Decimal], currency: str) -> Decimal:
    """Validate the inputs of :func:`allocate_rounding`; return the currency quantum."""
    q = quantum(_currency(currency))
    for i, t in enumerate(targets):
        if not isinstance(t, Decimal) or not t.is_finite():
            raise DomainError(
                f"rounding target #{i}",
                "fx.bad_amount",
                f"{t!r} is not a finite Decimal amount",
                "pass Decimal amounts (never floats)",
            )
    return q


def allocate_rounding(targets: Sequence[Decimal], total: Decimal, currency: str) -> list[Decimal]:
    """Round each target to the currency minor unit so the parts add up exactly to ``total`` rounded half-up.

    Largest-remainder method: every part is first rounded down (toward minus infinity) to the minor unit, then the
    units still missing go one each to the parts with the largest remainders (ties: lower index first). Each part
    ends within one minor unit of its target whenever ``total`` is within half a unit per part of ``sum(targets)``.
    If the gap is larger (the caller passes a total that differs from the targets), the extra units are spread
    round-robin in the same order, so the sum is still exact. Signs are handled (credit notes, reversals).
    """
    q = _check_targets(targets, currency)
    goal = round_money(total, currency)
    if not targets:
        if goal != 0:
            raise DomainError(
                f"rounding to {goal} {currency}",
                "fx.allocation_without_parts",
                f"cannot allocate a total of {goal} {currency} over no parts",
                "pass at least one part, or a zero total",
            )
        return []
    floors = [t.quantize(q, rounding=ROUND_FLOOR) for t in targets]
    units = int(((goal - sum(floors, Decimal(0))) / q).to_integral_value())
    n = len(targets)
    # order: largest remainder first, ties by index (deterministic)
    order = sorted(range(n), key=lambda i: (-(targets[i] - floors[i]), i))
    out = list(floors)
    if units >= 0:
        base, extra = divmod(units, n)
        for rank, i in enumerate(order):
            out[i] += q * (base + (1 if rank < extra else 0))
    else:  # the goal is below the floors (only when total < sum(targets)): take units from the smallest remainders
        base, extra = divmod(-units, n)
        for rank, i in enumerate(reversed(order)):
            out[i] -= q * (base + (1 if rank < extra else 0))
    return out


def convert_batch(
    amounts: Sequence[Decimal], rate: Decimal, to_currency: str, rate_date: dt.date
) -> tuple[list[Converted], Converted]:
    """Convert many source amounts at one rate so that ``sum(parts) == total`` to the minor unit, where ``total``
    is the rounded conversion of ``sum(amounts)``: a summarized journal line equals the sum of its sources.

    Each part is within one minor unit of its own ``amount * rate``. Returns ``(parts, total)``."""
    dst = _currency(to_currency)
    unrounded = [a * rate for a in amounts]
    source_sum = sum(amounts, Decimal(0))
    total_unrounded = source_sum * rate
    total = Converted(round_money(total_unrounded, dst), dst, rate, rate_date, total_unrounded)
    parts = allocate_rounding(unrounded, total_unrounded, dst)
    return [Converted(p, dst, rate, rate_date, u) for p, u in zip(parts, unrounded, strict=True)], total
