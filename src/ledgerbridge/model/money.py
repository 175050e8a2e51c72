"""Money: ``Decimal`` amounts with an ISO 4217 currency. Floats are refused everywhere.

Every amount that crosses a contract boundary is either a :class:`Money` or an ``Amount`` field next to a
``currency`` field. Rounding is per currency minor unit (:func:`minor_unit`), half-up to the cent (or to the
currency's own unit: JPY has none, BHD has three).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

# ISO 4217 codes this engine knows, with their minor units (digits after the decimal point).
MINOR_UNITS: dict[str, int] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BGN": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2, "NGN": 2,
    "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2, "QAR": 2, "RON": 2, "SAR": 2, "SEK": 2, "SGD": 2,
    "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0, "ZAR": 2,
}


class FloatRejectedError(TypeError):
    """A float reached a money field. Floats cannot represent cents exactly; pass a str or Decimal."""


def reject_float(value: Any) -> Any:
    """Pydantic before-validator: refuse floats (and bools) for amounts; accept Decimal, int and numeric str."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, float):
        raise ValueError(
            f"float {value!r} refused for an amount: floats cannot hold cents exactly; "
            f"pass a string such as '{value}' or a Decimal"
        )
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not d.is_finite():
            raise ValueError(f"{value!r} is not a finite amount")
        return d
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    return value


#: A Decimal field that refuses floats with a clear message. Use it for every amount, rate and quantity.
Amount = Annotated[Decimal, BeforeValidator(reject_float)]


def check_currency(code: object) -> str:
    """Return the upper-cased ISO 4217 code or raise ``ValueError`` naming the unknown code (also for a value that
    is not text at all: a ``TypeError`` here would escape validation as a crash instead of a clear refusal)."""
    if not isinstance(code, str):
        raise ValueError(f"currency must be an ISO 4217 code as text such as USD, got {type(code).__name__} {code!r}")
    c = code.strip().upper()
    if c not in MINOR_UNITS:
        raise ValueError(f"unknown currency {code!r}: expected an ISO 4217 code such as USD, EUR, GBP")
    return c


CurrencyCode = Annotated[str, BeforeValidator(check_currency)]


def minor_unit(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (2 for USD, 0 for JPY, 3 for BHD)."""
    return MINOR_UNITS[check_currency(currency)]


def quantum(currency: str) -> Decimal:
    """The smallest unit of ``currency`` as a Decimal exponent: Decimal('0.01') for USD."""
    return Decimal(1).scaleb(-minor_unit(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


class Money(BaseModel):
    """An amount in one currency. Arithmetic across currencies raises; rounding is explicit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Amount
    currency: CurrencyCode

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        return cls(amount=reject_float(amount), currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal(0), currency=currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency} without an FX rate")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

    def rounded(self) -> Money:
        return Money(amount=round_money(self.amount, self.currency), currency=self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
