"""Canonical journals <-> the journal-import CSV, its manifest and the target's acknowledgement. Pure: text in,
text out, no file system (see ``docs/file-posting.md`` for the formats).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledgerbridge.connectors.base import CurrencyTotals, PostingBatch, ReadBack, amount_text
from ledgerbridge.model.entities import JournalEntry

FORMAT_NAME = "ledgerbridge-journal-csv"
FORMAT_VERSION = 1

LINE = "LINE"
TRAILER = "TRAILER"

#: CSV columns, in order. ``record_count`` is filled on TRAILER rows only.
COLUMNS: tuple[str, ...] = (
    "record_type", "journal_id", "legal_entity", "period", "entry_date", "journal_type", "line_no", "account",
    "debit", "credit", "currency", "dimensions", "functional_currency", "functional_debit", "functional_credit",
    "fx_rate", "fx_rate_date", "lineage_count", "reverses", "redated_from", "description", "record_count",
)

ACK_COLUMNS: tuple[str, ...] = ("journal_id", "line_no", "status", "error_code", "error_text", "target_ref")
ACK_REQUIRED: frozenset[str] = frozenset({"journal_id", "status"})
ACK_STATUSES = ("accepted", "rejected")

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_run_id(run_id: str) -> str:
    """Run ids name files: letters, digits, ``.``, ``_``, ``-``; at most 200 characters."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(
            f"run id {run_id!r} cannot name a file: use letters, digits, '.', '_' and '-' only "
            "(at most 200 characters, starting with a letter or digit, no '..')"
        )
    return run_id


def csv_name(run_id: str) -> str:
    return f"{check_run_id(run_id)}.journal.csv"


def manifest_name(run_id: str) -> str:
    return f"{check_run_id(run_id)}.manifest.json"


def ack_names(run_id: str) -> tuple[str, str]:
    rid = check_run_id(run_id)
    return f"{rid}.ack.csv", f"{rid}.ack.json"


# --------------------------------------------------------------------------------------------------- rendering


def dimensions_text(dimensions: Mapping[str, str]) -> str:
    """``k=v;k=v`` sorted by key. Keys and values may not contain ``;`` or ``=``, or be empty."""
    parts = []
    for k in sorted(dimensions):
        v = dimensions[k]
        if not k or not v or any(ch in s for s in (k, v) for ch in ";="):
            raise ValueError(f"dimension {k!r}={v!r}: keys and values must be non-empty and contain no ';' or '='")
        parts.append(f"{k}={v}")
    return ";".join(parts)


def dimension_problems(journal: JournalEntry) -> list[str]:
    """Reasons the journal cannot be written to the CSV (empty list = fine)."""
    out = []
    for ln in journal.lines:
        try:
            dimensions_text(ln.dimensions)
        except ValueError as exc:
            out.append(f"line {ln.line_no}: {exc}")
    return out


def _opt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True, slots=True)
class RenderedRun:
    """A run rendered to bytes: the CSV and its manifest, plus the figures both carry."""

    run_id: str
    csv_name: str
    csv_bytes: bytes
    manifest_name: str
    manifest_bytes: bytes
    sha256: str
    journal_count: int
    record_count: int
    totals: Mapping[str, CurrencyTotals]


def render_run(batch: PostingBatch, journals: Sequence[JournalEntry] | None = None) -> RenderedRun:
    """Render ``journals`` (default: all of the batch) as the import CSV + manifest. Deterministic: the same batch
    and ``created_at`` give the same bytes. Journals are written in the batch's order, lines by line number."""
    if batch.created_at is None:
        raise ValueError(
            f"posting run {batch.run_id}: PostingBatch.created_at is required by the file target (it goes into "
            "the manifest); pass the run's recorded creation time so a retried write is byte-identical"
        )
    journals = batch.journals if journals is None else journals
    buf = io.StringIO()
    # RFC 4180: CRLF line ends, so a field holding a CR or LF is always quoted
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    deb: dict[str, Decimal] = defaultdict(Decimal)
    cre: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    records = 0
    for j in journals:
        for ln in sorted(j.lines, key=lambda x: x.line_no):
            fcur = ln.functional_currency
            w.writerow((
                LINE, j.id, j.legal_entity_id, j.period, j.entry_date.isoformat(), j.journal_type.value,
                ln.line_no, ln.account, amount_text(ln.debit, ln.currency), amount_text(ln.credit, ln.currency),
                ln.currency, dimensions_text(ln.dimensions), _opt(fcur),
                amount_text(ln.functional_debit, fcur) if fcur and ln.functional_debit is not None else "",
                amount_text(ln.functional_credit, fcur) if fcur and ln.functional_credit is not None else "",
                _opt(ln.fx_rate), _opt(ln.fx_rate_date), ln.lineage_count, _opt(j.reverses), _opt(j.redated_from),
                ln.description or j.description, "",
            ))
            deb[ln.currency] += ln.debit
            cre[ln.currency] += ln.credit
            counts[ln.currency] += 1
            records += 1
    totals = {c: CurrencyTotals(deb[c], cre[c]) for c in sorted(counts)}
    for cur, t in totals.items():
        row = dict.fromkeys(COLUMNS, "")
        row.update(record_type=TRAILER, legal_entity=batch.legal_entity_id, period=batch.period, currency=cur,
                   debit=amount_text(t.debit, cur), credit=amount_text(t.credit, cur), record_count=str(counts[cur]))
        w.writerow(row[c] for c in COLUMNS)
    data = buf.getvalue().encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "run_id": batch.run_id,
        "legal_entity": batch.legal_entity_id,
        "period": batch.period,
        "file_name": csv_name(batch.run_id),
        "created_at": batch.created_at.isoformat(),
        "journal_count": len(journals),
        "record_count": records,
        "totals": {
            c: {"debit": amount_text(t.debit, c), "credit": amount_text(t.credit, c), "record_count": counts[c]}
            for c, t in totals.items()
        },
        "sha256": digest,
        "size_bytes": len(data),
    }
    mbytes = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode("utf-8")
    return RenderedRun(batch.run_id, csv_name(batch.run_id), data, manifest_name(batch.run_id), mbytes, digest,
                       len(journals), records, totals)


# --------------------------------------------------------------------------------------------------- parsing back


@dataclass(frozen=True, slots=True)
class WrittenJournal:
    """One journal as the written CSV holds it: its line numbers and totals per currency."""

    journal_id: str
    line_nos: frozenset[int]
    line_count: int
    totals: Mapping[str, CurrencyTotals]


def parse_written_csv(text: str) -> dict[str, WrittenJournal]:
    """Journals of a CSV this module wrote (already verified against its manifest hash), keyed by journal id."""
    lines: dict[str, set[int]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    deb: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    cre: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in csv.DictReader(io.StringIO(text, newline="")):
        if row["record_type"] != LINE:
            continue
        jid = row["journal_id"]
        lines[jid].add(int(row["line_no"]))
        count[jid] += 1
        deb[jid][row["currency"]] += Decimal(row["debit"])
        cre[jid][row["currency"]] += Decimal(row["credit"])
    return {
        jid: WrittenJournal(
            jid, frozenset(nos), count[jid], {c: CurrencyTotals(deb[jid][c], cre[jid][c]) for c in sorted(deb[jid])}
        )
        for jid, nos in lines.items()
    }


# --------------------------------------------------------------------------------------------------- acknowledgement


@dataclass(frozen=True, slots=True)
class AckRow:
    source_line: int  # line number in the ack file (CSV) or 1-based position in ``results`` (JSON)
    journal_id: str
    line_no: int | None  # None = the whole journal
    status: str
    error_code: str
    error_text: str
    target_ref: str


@dataclass(frozen=True, slots=True)
class JournalAck:
    """The target's verdict on one journal, merged from its ack rows."""

    journal_id: str
    accepted: bool
    target_ref: str  # the target's own reference when it gave one, else ""
    errors: tuple[AckRow, ...]  # the rejected rows (empty when accepted)


class AckFormatError(ValueError):
    """The acknowledgement file is malformed; ``problems`` lists each one with its line number."""

    def __init__(self, ack_name: str, problems: Sequence[str]) -> None:
        self.ack_name = ack_name
        self.problems = list(problems)
        more = len(self.problems) - 20
        shown = "; ".join(self.problems[:20]) + (f"; … {more} more" if more > 0 else "")
        super().__init__(f"acknowledgement {ack_name} is malformed, nothing was applied: {shown}")


def parse_ack_csv(text: str, ack_name: str) -> list[AckRow]:
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise AckFormatError(ack_name, ["line 1: the file is empty; expected a header row"]) from None
    except csv.Error as exc:
        raise AckFormatError(ack_name, [f"line 1: not valid CSV ({exc})"]) from None
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in ACK_COLUMNS]
    missing = sorted(ACK_REQUIRED - set(header))
    dup = sorted({h for h in header if header.count(h) > 1})
    if unknown or missing or dup:
        raise AckFormatError(ack_name, [
            f"line 1: header {header}: "
            + ", ".join(filter(None, [
                f"unknown columns {unknown}" if unknown else "",
                f"missing columns {missing}" if missing else "",
                f"repeated columns {dup}" if dup else "",
            ]))
            + f"; expected columns {list(ACK_COLUMNS)} (journal_id and status required)"
        ])
    raw: list[tuple[int, dict[str, str]]] = []
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {reader.line_num}: not valid CSV ({exc}); check the quoting of this row")
            break
        lineno = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"line {lineno}: {len(values)} fields, header has {len(header)}")
            continue
        raw.append((lineno, dict(zip(header, values, strict=True))))
    rows = _rows_from_records(raw, problems)
    if problems:
        raise AckFormatError(ack_name, problems)
    return rows


def parse_ack_json(text: str, ack_name: str, run_id: str) -> list[AckRow]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AckFormatError(ack_name, [f"not valid JSON: {exc}"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise AckFormatError(ack_name, ['expected an object {"run_id": ..., "results": [...]}'])
    if doc.get("run_id") != run_id:
        raise AckFormatError(ack_name, [f"run_id {doc.get('run_id')!r} does not match the file's run {run_id!r}"])
    problems: list[str] = []
    raw: list[tuple[int, dict[str, str]]] = []
    for i, item in enumerate(doc["results"], start=1):
        if not isinstance(item, dict):
            problems.append(f"result {i}: expected an object")
            continue
        unknown = sorted(set(item) - set(ACK_COLUMNS))
        if unknown:
            problems.append(f"result {i}: unknown fields {unknown}; expected {list(ACK_COLUMNS)}")
            continue
        raw.append((i, {k: "" if v is None else str(v) for k, v in item.items()}))
    rows = _rows_from_records(raw, problems, what="result")
    if problems:
        raise AckFormatError(ack_name, problems)
    return rows


def _rows_from_records(
    raw: Iterable[tuple[int, dict[str, str]]], problems: list[str], what: str = "line"
) -> list[AckRow]:
    rows: list[AckRow] = []
    for pos, rec in raw:
        where = f"{what} {pos}"
        jid = rec.get("journal_id", "").strip()
        status = rec.get("status", "").strip().lower()
        line_txt = rec.get("line_no", "").strip()
        code = rec.get("error_code", "").strip()
        text = rec.get("error_text", "").strip()
        bad = False
        if not jid:
            problems.append(f"{where}: journal_id is empty")
            bad = True
        if status not in ACK_STATUSES:
            problems.append(f"{where}: status {rec.get('status', '')!r} is not one of {list(ACK_STATUSES)}")
            bad = True
        line_no: int | None = None
        if line_txt:
            try:
                line_no = int(line_txt)
                if line_no < 1:
                    raise ValueError
            except ValueError:
                problems.append(f"{where}: line_no {line_txt!r} is not a positive whole number (leave it empty "
                                "for the whole journal)")
                bad = True
        if status == "rejected" and not (code or text):
            problems.append(f"{where}: journal {jid} is rejected without error_code or error_text; say why")
            bad = True
        if not bad:
            rows.append(AckRow(pos, jid, line_no, status, code, text, rec.get("target_ref", "").strip()))
    return rows


def merge_ack(
    rows: Sequence[AckRow], written: Mapping[str, WrittenJournal], ack_name: str
) -> dict[str, JournalAck]:
    """Check the ack rows against the written run and merge them per journal.

    A journal is rejected when any of its rows is rejected, accepted when all its rows are accepted. Rows naming a
    journal or line not in the run, or the same journal/line acknowledged twice with different statuses, make
    the whole acknowledgement malformed (:class:`AckFormatError`): nothing is applied half-way.
    """
    problems: list[str] = []
    seen: dict[tuple[str, int | None], AckRow] = {}
    by_journal: dict[str, list[AckRow]] = defaultdict(list)
    for r in rows:
        wj = written.get(r.journal_id)
        if wj is None:
            problems.append(f"line {r.source_line}: journal {r.journal_id} is not in this run's file")
            continue
        if r.line_no is not None and r.line_no not in wj.line_nos:
            problems.append(f"line {r.source_line}: journal {r.journal_id} has no line {r.line_no} "
                            f"(lines {sorted(wj.line_nos)})")
            continue
        prev = seen.get((r.journal_id, r.line_no))
        if prev is not None and prev.status != r.status:
            what = f"journal {r.journal_id}" if r.line_no is None else f"line {r.line_no} of journal {r.journal_id}"
            problems.append(f"line {r.source_line}: {what} is {r.status} but line {prev.source_line} says "
                            f"{prev.status}")
            continue
        seen[(r.journal_id, r.line_no)] = r
        by_journal[r.journal_id].append(r)
    if problems:
        raise AckFormatError(ack_name, problems)
    out: dict[str, JournalAck] = {}
    for jid, rs in by_journal.items():
        rejected = tuple(r for r in rs if r.status == "rejected")
        refs = sorted({r.target_ref for r in rs if r.target_ref})
        out[jid] = JournalAck(jid, not rejected, ";".join(refs), rejected)
    return out


def readback_for(written: WrittenJournal, target_ref: str) -> ReadBack:
    return ReadBack(target_ref=target_ref, totals=dict(written.totals), line_count=written.line_count)
