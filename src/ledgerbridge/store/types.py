"""Portable column types: exact decimals, UTC timestamps and JSON on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, Numeric, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Digits before and after the decimal point that every stored amount, rate and quantity may have.
INTEGER_DIGITS = 18
FRACTION_DIGITS = 10


class DecimalRangeError(ValueError):
    """A value cannot be stored exactly in an amount column (float, too many digits, not finite)."""


def _as_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool | float):
        raise DecimalRangeError(
            f"{what} {value!r} refused: floats and booleans cannot hold money exactly; pass a Decimal or a string"
        )
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise DecimalRangeError(f"{what} {value!r} is not a decimal number") from None
    raise DecimalRangeError(f"{what} {value!r} ({type(value).__name__}) is not a Decimal, int or numeric string")


def exact_decimal_text(value: Any, *, what: str = "amount") -> str:
    """The canonical text of ``value`` (see :func:`to_exact_decimal`): ``"100.5"``, ``"-0.01"``, ``"1000"``."""
    d = value if type(value) is Decimal else _as_decimal(value, what)
    if not d.is_finite():
        raise DecimalRangeError(f"{what} {value!r} is not finite")
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > FRACTION_DIGITS or len(whole.lstrip("0")) > INTEGER_DIGITS:
        raise DecimalRangeError(
            f"{what} {value!r} cannot be stored exactly: at most {INTEGER_DIGITS} digits before and "
            f"{FRACTION_DIGITS} after the decimal point; round it to the currency or rate precision first"
        )
    return text


def to_exact_decimal(value: Any, *, what: str = "amount") -> Decimal:
    """Return ``value`` as a canonical Decimal that fits ``NUMERIC(28, 10)`` exactly, or raise.

    Canonical: no exponent notation, trailing fractional zeros removed (``Decimal('100.50')`` ->
    ``Decimal('100.5')``, ``Decimal('100.00')`` -> ``Decimal('100')``), ``-0`` -> ``0``; the value is unchanged.
    Nothing is ever rounded: a value with more than 10 fractional or 18 integer digits is refused.
    """
    return Decimal(exact_decimal_text(value, what=what))


class ExactDecimal(TypeDecorator[Decimal]):
    """``NUMERIC(28, 10)`` on PostgreSQL, canonical decimal TEXT on SQLite (whose NUMERIC would use floats).

    Both return the same canonical :class:`~decimal.Decimal` (see :func:`to_exact_decimal`). On SQLite do not
    SUM or compare these columns in SQL (they are text there); aggregate in Python or DuckDB.
    """

    impl = String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(INTEGER_DIGITS + FRACTION_DIGITS, FRACTION_DIGITS, asdecimal=True))
        return dialect.type_descriptor(String(40))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        text = exact_decimal_text(value)
        return Decimal(text) if dialect.name == "postgresql" else text

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_exact_decimal(value if isinstance(value, Decimal) else str(value))


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``TIMESTAMP WITH TIME ZONE``; timezone-aware datetimes in, UTC-aware datetimes out on both backends.

    SQLite keeps no zone, so values are stored as UTC and read back with ``tzinfo=UTC``. Naive datetimes are
    refused (their meaning is ambiguous).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"timestamp {value!r} is not a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp {value!r} has no time zone: pass an aware datetime, e.g. datetime.now(UTC)")
        v = value.astimezone(dt.UTC)
        return v.replace(tzinfo=None) if dialect.name == "sqlite" else v

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        v: dt.datetime = value
        return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


#: JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: 64-bit autoincrement key that is SQLite's rowid alias there.
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
