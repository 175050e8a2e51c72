"""Oracle Fusion Cloud ERP <-> canonical model (pure: no I/O).

- Journals -> ``GL_INTERFACE`` rows in the column order of the FBDI journal import template
  (``JournalImportTemplate.xlsm``, sheet ``GL_INTERFACE`` -> ``GlInterface.csv``, no header row), zipped.
  One journal = one batch: ``REFERENCE1`` (batch name), ``REFERENCE4`` (journal name) and ``REFERENCE6`` (journal
  reference) all carry our journal id, so a re-run finds what an earlier import created.
- The Journal Import execution report (downloaded from the ESS job) -> per-journal interface errors.
- REST ``journalBatches`` (with ``journalHeaders`` and ``journalLines`` expanded) -> read-back totals.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import CurrencyTotals
from ledgerbridge.model.entities import JournalEntry

#: GL_INTERFACE columns in the FBDI template's order (GlInterface.csv has no header row)
GL_INTERFACE_COLUMNS: tuple[str, ...] = (
    "STATUS", "LEDGER_ID", "ACCOUNTING_DATE", "USER_JE_SOURCE_NAME", "USER_JE_CATEGORY_NAME", "CURRENCY_CODE",
    "DATE_CREATED", "ACTUAL_FLAG", *(f"SEGMENT{i}" for i in range(1, 31)),
    "ENTERED_DR", "ENTERED_CR", "ACCOUNTED_DR", "ACCOUNTED_CR",
    "REFERENCE1", "REFERENCE2", "REFERENCE3", "REFERENCE4", "REFERENCE5", "REFERENCE6", "REFERENCE7",
    "REFERENCE8", "REFERENCE9", "REFERENCE10", *(f"REFERENCE{i}" for i in range(21, 31)),
    "STAT_AMOUNT", "USER_CURRENCY_CONVERSION_TYPE", "CURRENCY_CONVERSION_DATE", "CURRENCY_CONVERSION_RATE",
    "GROUP_ID", "ATTRIBUTE_CATEGORY", *(f"ATTRIBUTE{i}" for i in range(1, 21)), "ATTRIBUTE_CATEGORY3",
    "AVERAGE_JOURNAL_FLAG", "ORIGINATING_BAL_SEG_VALUE", "LEDGER_NAME", "ENCUMBRANCE_TYPE_ID", "JGZZ_RECON_REF",
    "PERIOD_NAME",
)
CSV_NAME = "GlInterface.csv"
DATE_FMT = "%Y/%m/%d"
#: one error line of the Journal Import execution report: row, batch, journal, error code, message
REPORT_LINE = re.compile(r"^\s*Row\s+(\d+)\s+Batch\s+(\S+)\s+Journal\s+(\S+)\s+(E[A-Z]\d\d)\s+(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """How our accounts become an account combination: ``segments`` is a template per segment — ``{account}``
    (the ``account_map`` value), ``{company}`` (the entity's balancing segment value), ``{dim:<name>|<default>}``
    (a journal line dimension), or a literal."""

    company: str
    account_map: Mapping[str, str]
    segments: Sequence[str] = ("{company}", "{account}")

    def combination(self, account: str, dimensions: Mapping[str, str]) -> list[str]:
        out = []
        for seg in self.segments:
            if seg == "{account}":
                out.append(self.account_map[account])
            elif seg == "{company}":
                out.append(self.company)
            elif seg.startswith("{dim:") and seg.endswith("}"):
                name, _, default = seg[5:-1].partition("|")
                out.append(dimensions.get(name, default))
            else:
                out.append(seg)
        return out

    def code_of(self, combination: str, separator: str = "-") -> str:
        """Our account code of an account combination (its ``{account}`` segment); the combination itself when
        the natural account is not in the map."""
        parts = combination.split(separator)
        if "{account}" in self.segments and len(parts) == len(self.segments):
            value = parts[list(self.segments).index("{account}")]
            for code, v in sorted(self.account_map.items()):
                if v == value:
                    return code
        return combination


def journal_problems(journal: JournalEntry, chart: ChartSpec) -> list[str]:
    return [f"line {ln.line_no}: account {ln.account} is not in account_map"
            for ln in journal.lines if ln.account not in chart.account_map]


def _amount(value: Decimal | None) -> str:
    return f"{value:f}" if value else ""


def journal_rows(journal: JournalEntry, chart: ChartSpec, *, ledger_id: str, source: str, category: str,
                 created: dt.date, group_id: str, period_name: str) -> list[list[str]]:
    """One GL_INTERFACE row per journal line (every column of the template, in order)."""
    rows = []
    for ln in journal.lines:
        row = dict.fromkeys(GL_INTERFACE_COLUMNS, "")
        row.update({"STATUS": "NEW", "LEDGER_ID": ledger_id, "ACCOUNTING_DATE": journal.entry_date.strftime(DATE_FMT),
                    "USER_JE_SOURCE_NAME": source, "USER_JE_CATEGORY_NAME": category, "CURRENCY_CODE": ln.currency,
                    "DATE_CREATED": created.strftime(DATE_FMT), "ACTUAL_FLAG": "A",
                    "ENTERED_DR": _amount(ln.debit), "ENTERED_CR": _amount(ln.credit),
                    "REFERENCE1": journal.id, "REFERENCE2": (journal.description or journal.id)[:240],
                    "REFERENCE4": journal.id, "REFERENCE5": (journal.description or journal.id)[:240],
                    "REFERENCE6": journal.id, "REFERENCE10": ln.description[:240], "GROUP_ID": group_id,
                    "PERIOD_NAME": period_name})
        for i, value in enumerate(chart.combination(ln.account, ln.dimensions), 1):
            row[f"SEGMENT{i}"] = value
        if ln.functional_currency and ln.functional_currency != ln.currency:
            row["ACCOUNTED_DR"] = _amount(ln.functional_debit)
            row["ACCOUNTED_CR"] = _amount(ln.functional_credit)
            row["USER_CURRENCY_CONVERSION_TYPE"] = "User"
            row["CURRENCY_CONVERSION_RATE"] = f"{ln.fx_rate:f}" if ln.fx_rate else ""
            row["CURRENCY_CONVERSION_DATE"] = ln.fx_rate_date.strftime(DATE_FMT) if ln.fx_rate_date else ""
        rows.append([row[c] for c in GL_INTERFACE_COLUMNS])
    return rows


def fbdi_zip(rows: Iterable[Sequence[str]]) -> bytes:
    """The FBDI upload: a zip holding ``GlInterface.csv`` (fixed timestamp, so the same rows give the same bytes)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo(CSV_NAME, date_time=(2000, 1, 1, 0, 0, 0)), text.getvalue())
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class InterfaceError:
    row: int
    batch: str
    journal: str
    code: str
    message: str


def parse_report(files: Mapping[str, bytes]) -> tuple[list[InterfaceError], list[str]]:
    """Interface errors listed in the execution report files of an ESS job (``*.log`` / ``*.out`` text) and the
    report's summary lines (``Status:``/``Rows``...)."""
    errors: list[InterfaceError] = []
    summary: list[str] = []
    for name in sorted(files):
        for line in files[name].decode("utf-8", errors="replace").splitlines():
            m = REPORT_LINE.match(line)
            if m:
                errors.append(InterfaceError(int(m[1]), m[2], m[3], m[4], m[5]))
            elif line.strip().lower().startswith(("status:", "rows", "journals")):
                summary.append(line.strip())
    return errors, summary


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def to_decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def line_signature(lines: Iterable[Mapping[str, Any]]) -> list[tuple[str, Decimal, Decimal, str]]:
    return sorted((str(ln["AccountCombination"]), to_decimal(ln.get("EnteredDebitAmount")),
                   to_decimal(ln.get("EnteredCreditAmount")), str(ln["CurrencyCode"])) for ln in lines)


def journal_signature(journal: JournalEntry, chart: ChartSpec, separator: str = "-"
                      ) -> list[tuple[str, Decimal, Decimal, str]]:
    return sorted((separator.join(chart.combination(ln.account, ln.dimensions)), ln.debit, ln.credit, ln.currency)
                  for ln in journal.lines)


def readback_totals(lines: Iterable[Mapping[str, Any]]) -> dict[str, CurrencyTotals]:
    debit: dict[str, Decimal] = defaultdict(Decimal)
    credit: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        debit[str(ln["CurrencyCode"])] += to_decimal(ln.get("EnteredDebitAmount"))
        credit[str(ln["CurrencyCode"])] += to_decimal(ln.get("EnteredCreditAmount"))
    return {c: CurrencyTotals(debit[c], credit[c]) for c in sorted(debit)}
