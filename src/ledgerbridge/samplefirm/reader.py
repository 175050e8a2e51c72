"""Reader of the PSA export files (``docs/file-format.md``): CSV rows back to canonical model objects.

Streaming and forgiving: a bad row never stops a file. It becomes a :class:`FileError` carrying the file, the line
number, the field, the message and the raw row, and reading goes on with the next row. Only a header that does not
match the model stops a file (every row would fail the same way), with one error that names the columns.

Validation is the canonical model's own (pydantic): amounts are parsed from their text to ``Decimal``, never via
float; currencies must be ISO 4217; dates ISO 8601.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

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
from ledgerbridge.samplefirm.fileformat import (
    FILE_MODELS,
    LIST_SEPARATOR,
    MANIFEST,
    columns,
    list_columns,
    required_columns,
)

T = TypeVar("T", bound=Contract)


@dataclass(frozen=True, slots=True)
class FileError:
    """One problem in one file. ``line`` is the 1-based physical line (the header is line 1; 0 = the whole file).
    ``field`` is the column at fault, or None when the row or file as a whole is wrong. ``raw`` keeps the row's
    values exactly as read, so nothing is lost."""

    file: str
    line: int
    field: str | None
    message: str
    value: str | None = None
    raw: tuple[str, ...] | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        col = f" [{self.field}]" if self.field else ""
        return f"{where}{col}: {self.message}"


@dataclass(slots=True)
class ReadResult(Generic[T]):
    items: list[T]
    errors: list[FileError]
    rows: int = 0  # data rows seen (blank lines excluded)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bad_rows(self) -> int:
        """Number of distinct data lines that failed (header errors excluded)."""
        return len({e.line for e in self.errors if e.line > 1})


def _clean_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err.get("type") == "missing":
        return "a value is required here but the cell is empty; fill it in"
    return msg


def _not_utf8(cols: tuple[str, ...], row: list[str]) -> str | None:
    """The first column whose cell held bytes that are not UTF-8 (decoded as lone surrogates), else None."""
    for c, v in zip(cols, row, strict=True):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return c
    return None


class CsvReader(Generic[T]):
    """Iterate the rows of one export file as ``model_cls`` objects.

    Errors are appended to ``self.errors`` (or to the list given) as reading goes; ``line`` is the line of the
    item just yielded, ``rows`` the number of data rows seen so far."""

    def __init__(self, path: Path | str, model_cls: type[T], errors: list[FileError] | None = None) -> None:
        self.path = Path(path)
        self.model_cls = model_cls
        self.errors: list[FileError] = errors if errors is not None else []
        self.line = 0
        self.rows = 0
        self.name = self.path.name

    def _error(self, line: int, fld: str | None, message: str, value: str | None = None,
               raw: tuple[str, ...] | None = None) -> None:
        self.errors.append(FileError(self.name, line, fld, message, value, raw))

    def _check_header(self, header: list[str]) -> str | None:
        expected = columns(self.model_cls)
        known = set(expected)
        problems: list[str] = []
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            problems.append("duplicate column(s) " + ", ".join(repr(c) for c in dupes))
        unknown = [c for c in header if c not in known]
        if unknown:
            problems.append("unknown column(s) " + ", ".join(repr(c) for c in unknown))
        missing = [c for c in expected if c in required_columns(self.model_cls) and c not in header]
        if missing:
            problems.append("missing required column(s) " + ", ".join(repr(c) for c in missing))
        if not problems:
            return None
        return (f"header does not match {self.model_cls.__name__}: {'; '.join(problems)}. "
                f"Expected columns (optional ones may be left out): {','.join(expected)}. "
                "No row of this file was read; fix the header row and read the file again")

    def __iter__(self) -> Iterator[T]:
        validate = self.model_cls.model_validate
        lists = list_columns(self.model_cls)
        try:
            # invalid UTF-8 bytes become lone surrogates, caught per row below (so one bad row does not stop the file)
            fh = self.path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            self._error(0, None, f"cannot open the file: {exc.strerror or exc}")
            return
        with fh:
            rdr = csv.reader(fh, strict=True)
            try:
                header = next(rdr, None)
                if not header or not any(h.strip() for h in header):
                    self._error(0, None, f"the file is empty: expected a header row "
                                         f"{','.join(columns(self.model_cls))}")
                    return
                header = [h.strip() for h in header]
                problem = self._check_header(header)
                if problem:
                    self._error(1, None, problem, raw=tuple(header))
                    return
                cols = tuple(header)
                ncols = len(cols)
                list_cols = [c for c in cols if c in lists]
                rows = 0
                try:
                    for row in rdr:
                        if len(row) != ncols:
                            if not row or (len(row) == 1 and not row[0].strip()):
                                continue  # blank line
                            rows += 1
                            self._error(rdr.line_num, None,
                                        f"row has {len(row)} values but the header has {ncols} columns; "
                                        "check for an unquoted comma or a missing value",
                                        raw=tuple(row))
                            continue
                        rows += 1
                        if not "".join(row).isascii():
                            bad = _not_utf8(cols, row)
                            if bad is not None:
                                self._error(rdr.line_num, bad, "not valid UTF-8 text; re-save the file as UTF-8 "
                                                               "(Excel: 'CSV UTF-8')", raw=tuple(row))
                                continue
                        data: dict[str, Any] = {k: v for k, v in zip(cols, row, strict=True) if v}
                        for c in list_cols:
                            v = data.get(c)
                            if v is not None:
                                data[c] = tuple(p.strip() for p in v.split(LIST_SEPARATOR) if p.strip())
                        try:
                            item = validate(data)
                        except ValidationError as exc:
                            line = rdr.line_num
                            raw = tuple(row)
                            for err in exc.errors(include_url=False):
                                loc = err.get("loc") or ()
                                fld = str(loc[0]) if loc else None
                                value = data.get(fld) if fld else None
                                self._error(line, fld, _clean_message(err),
                                            value if isinstance(value, str) else None, raw)
                            continue
                        self.line = rdr.line_num
                        yield item
                finally:
                    self.rows = rows
            except csv.Error as exc:
                self._error(rdr.line_num, None, f"not valid CSV: {exc}; the rest of the file was not read")


def stream(path: Path | str, model_cls: type[T], errors: list[FileError] | None = None) -> Iterator[T]:
    """Yield the good rows of ``path`` as ``model_cls``; append every problem to ``errors``."""
    return iter(CsvReader(path, model_cls, errors))


#: Alias: ``read_entities(path, model_cls, errors)`` streams good rows, collecting problems in ``errors``.
read_entities = stream


def read_file(path: Path | str, model_cls: type[T]) -> ReadResult[T]:
    """Read a whole file into memory (master data, tests). For time entries prefer :func:`iter_time_entries`."""
    rdr = CsvReader(path, model_cls)
    items = list(rdr)
    return ReadResult(items, rdr.errors, rdr.rows)


def iter_time_entries(path: Path | str, errors: list[FileError] | None = None) -> Iterator[TimeEntry]:
    """Stream ``time_entries.csv`` (one row per version) in file order, constant memory.

    Every row goes through ``TimeEntry`` validation (pydantic-core): 80-130k rows/s of CPU, measured in
    ``bench/bench_generator.py``. A hand-written stdlib parser was tried and was no faster, so there is one path."""
    return stream(path, TimeEntry, errors)


def iter_expenses(path: Path | str, errors: list[FileError] | None = None) -> Iterator[Expense]:
    """Stream ``expenses.csv`` (one row per version) in file order, constant memory."""
    return stream(path, Expense, errors)


def latest_versions(items: Iterable[T]) -> dict[str, T]:
    """The latest version per id (the highest ``version`` wins; file order does not matter)."""
    out: dict[str, Any] = {}
    for it in items:
        key = it.id  # type: ignore[attr-defined]
        cur = out.get(key)
        if cur is None or it.version > cur.version:  # type: ignore[attr-defined]
            out[key] = it
    return out


# --------------------------------------------------------------------------- the whole firm


@dataclass(slots=True)
class Firm:
    """Master and reference data of one export directory; time entries and expenses are streamed on demand."""

    root: Path
    manifest: dict[str, Any] | None
    legal_entities: dict[str, LegalEntity] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    rate_cards: list[RateCardLine] = field(default_factory=list)
    milestones: dict[str, BillingMilestone] = field(default_factory=dict)
    accounts: list[Account] = field(default_factory=list)
    dimensions: list[DimensionValue] = field(default_factory=list)
    tax_codes: dict[str, TaxCode] = field(default_factory=dict)
    periods: list[AccountingPeriod] = field(default_factory=list)
    fx_rates: list[FxRate] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)

    def time_entries(self, errors: list[FileError] | None = None) -> Iterator[TimeEntry]:
        return iter_time_entries(self.root / "time_entries.csv", self.errors if errors is None else errors)

    def expenses(self, errors: list[FileError] | None = None) -> Iterator[Expense]:
        return iter_expenses(self.root / "expenses.csv", self.errors if errors is None else errors)

    def periods_of(self, legal_entity_id: str) -> list[AccountingPeriod]:
        return [p for p in self.periods if p.legal_entity_id == legal_entity_id]

    def dimension_values(self, dimension: str) -> list[DimensionValue]:
        return [d for d in self.dimensions if d.dimension == dimension]


class FirmLoadError(ValueError):
    """Raised by ``load_firm(..., strict=True)`` when any file has errors; ``errors`` lists them all."""

    def __init__(self, errors: list[FileError]) -> None:
        self.errors = errors
        head = "\n  ".join(str(e) for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(s) in the PSA export:\n  {head}{more}")


def _keyed(name: str, rdr: CsvReader[Any], key: Any, into: dict[Any, Any], lines: dict[Any, int]) -> None:
    for item in rdr:
        k = key(item)
        if k in into:
            rdr.errors.append(FileError(name, rdr.line, None,
                                        f"duplicate key {k!r}: first defined on line {lines[k]}; this row is "
                                        "ignored. Remove or rename one of them"))
            continue
        into[k] = item
        lines[k] = rdr.line


def load_firm(root: Path | str, *, strict: bool = False, verify: bool = False) -> Firm:
    """Load every master/reference file of an export directory into a :class:`Firm`.

    Row errors, duplicate keys and broken references (a project naming an unknown customer, ...) are collected in
    ``firm.errors``; with ``strict=True`` a :class:`FirmLoadError` is raised instead when there are any.
    ``verify=True`` also checks each file's SHA-256 and row count against ``manifest.json``."""
    root = Path(root)
    manifest: dict[str, Any] | None = None
    mpath = root / MANIFEST
    errors: list[FileError] = []
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            errors.append(FileError(MANIFEST, 0, None, f"manifest is not valid JSON: {exc}"))
    firm = Firm(root, manifest, errors=errors)
    if verify:
        errors.extend(verify_manifest(root))

    lines: dict[str, dict[Any, int]] = {}

    def load(name: str, key: Any, into: dict[Any, Any]) -> None:
        ln: dict[Any, int] = {}
        _keyed(name, CsvReader(root / name, FILE_MODELS[name], errors), key, into, ln)
        lines[name] = ln

    load("legal_entities.csv", lambda x: x.id, firm.legal_entities)
    tax: dict[Any, TaxCode] = {}
    load("tax_codes.csv", lambda x: x.code, tax)
    firm.tax_codes = tax
    accounts: dict[Any, Account] = {}
    load("accounts.csv", lambda x: (x.code, x.legal_entity_id), accounts)
    firm.accounts = list(accounts.values())
    dims: dict[Any, DimensionValue] = {}
    load("dimensions.csv", lambda x: (x.dimension, x.code), dims)
    firm.dimensions = list(dims.values())
    periods: dict[Any, AccountingPeriod] = {}
    load("periods.csv", lambda x: (x.legal_entity_id, x.period), periods)
    firm.periods = list(periods.values())
    fx: dict[Any, FxRate] = {}
    load("fx_rates.csv", lambda x: (x.from_currency, x.to_currency, x.rate_date), fx)
    firm.fx_rates = list(fx.values())
    load("customers.csv", lambda x: x.id, firm.customers)
    load("projects.csv", lambda x: x.id, firm.projects)
    load("resources.csv", lambda x: x.id, firm.resources)
    rates: dict[Any, RateCardLine] = {}
    load("rate_cards.csv", lambda x: x.id, rates)
    firm.rate_cards = list(rates.values())
    load("milestones.csv", lambda x: x.id, firm.milestones)

    def ref(name: str, key: Any, fld: str, value: str | None, target: dict[str, Any], target_file: str) -> None:
        if value is not None and value not in target:
            errors.append(FileError(name, lines[name].get(key, 0), fld,
                                    f"unknown {fld.removesuffix('_id')} {value!r}: not in {target_file}; add it "
                                    f"there or correct this row", value))

    for k, c in firm.customers.items():
        ref("customers.csv", k, "legal_entity_id", c.legal_entity_id, firm.legal_entities, "legal_entities.csv")
        ref("customers.csv", k, "tax_code", c.tax_code, firm.tax_codes, "tax_codes.csv")
    for k, p in firm.projects.items():
        ref("projects.csv", k, "customer_id", p.customer_id, firm.customers, "customers.csv")
        ref("projects.csv", k, "legal_entity_id", p.legal_entity_id, firm.legal_entities, "legal_entities.csv")
    for k, r in firm.resources.items():
        ref("resources.csv", k, "home_entity_id", r.home_entity_id, firm.legal_entities, "legal_entities.csv")
    for rc in firm.rate_cards:
        ref("rate_cards.csv", rc.id, "resource_id", rc.resource_id, firm.resources, "resources.csv")
        ref("rate_cards.csv", rc.id, "project_id", rc.project_id, firm.projects, "projects.csv")
    for k, m in firm.milestones.items():
        ref("milestones.csv", k, "project_id", m.project_id, firm.projects, "projects.csv")
    for (eid, per), _p in periods.items():
        ref("periods.csv", (eid, per), "legal_entity_id", eid, firm.legal_entities, "legal_entities.csv")

    if strict and errors:
        raise FirmLoadError(errors)
    return firm


def verify_manifest(root: Path | str) -> list[FileError]:
    """Compare every file listed in ``manifest.json`` with its recorded row count and SHA-256."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except OSError as exc:
        return [FileError(MANIFEST, 0, None, f"cannot read the manifest: {exc.strerror or exc}")]
    except ValueError as exc:
        return [FileError(MANIFEST, 0, None, f"manifest is not valid JSON: {exc}")]
    out: list[FileError] = []
    for name, meta in sorted(manifest.get("files", {}).items()):
        path = root / name
        if not path.exists():
            out.append(FileError(name, 0, None, "listed in manifest.json but missing from the directory"))
            continue
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != meta.get("sha256"):
            out.append(FileError(name, 0, None, f"SHA-256 {h.hexdigest()} differs from the manifest's "
                                                f"{meta.get('sha256')}: the file changed after export"))
    return out
