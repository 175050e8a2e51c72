"""The PSA export file format shared by the sample-firm generator and the reader (see ``docs/file-format.md``).

One CSV file per canonical entity: UTF-8, one header row, the columns are the field names of the canonical model
class, in model field order. Empty cell = "not given" (the model default applies, ``None`` for optional fields).
Tuple fields (``DimensionValue.legal_entity_ids``, ``Account.required_dimensions``) are joined with ``;``.
"""

from __future__ import annotations

import typing

from ledgerbridge.model import (
    Account,
    AccountingPeriod,
    BillingMilestone,
    Contract,
    Customer,
    DimensionValue,
    Expense,
    FxRate,
    LegalEntity,
    Project,
    RateCardLine,
    Resource,
    TaxCode,
    TimeEntry,
)

FORMAT_NAME = "ledgerbridge-psa-files"
FORMAT_VERSION = "1.0"
SOURCE_SYSTEM = "psa_files"
MANIFEST = "manifest.json"
LIST_SEPARATOR = ";"

#: Every file of a PSA export, in the order the generator writes them, with the model class of its rows.
FILE_MODELS: dict[str, type[Contract]] = {
    "legal_entities.csv": LegalEntity,
    "accounts.csv": Account,
    "tax_codes.csv": TaxCode,
    "dimensions.csv": DimensionValue,
    "periods.csv": AccountingPeriod,
    "fx_rates.csv": FxRate,
    "customers.csv": Customer,
    "projects.csv": Project,
    "resources.csv": Resource,
    "rate_cards.csv": RateCardLine,
    "milestones.csv": BillingMilestone,
    "time_entries.csv": TimeEntry,
    "expenses.csv": Expense,
}

#: Files that ``load_firm`` loads into memory (everything except the streamed transaction files).
MASTER_FILES: tuple[str, ...] = tuple(n for n in FILE_MODELS if n not in ("time_entries.csv", "expenses.csv"))


def columns(model_cls: type[Contract]) -> tuple[str, ...]:
    """The header of a file of ``model_cls`` rows: the model's field names in declaration order."""
    return tuple(model_cls.model_fields)


def required_columns(model_cls: type[Contract]) -> frozenset[str]:
    """Columns that must be present in the header (fields without a default)."""
    return frozenset(n for n, f in model_cls.model_fields.items() if f.is_required())


def list_columns(model_cls: type[Contract]) -> frozenset[str]:
    """Columns holding a tuple, written as ``;``-joined values."""
    out = set()
    for name, f in model_cls.model_fields.items():
        if typing.get_origin(f.annotation) is tuple:
            out.add(name)
    return frozenset(out)
