"""The sample consulting firm: a deterministic generator of PSA export files and their reader.

See ``docs/file-format.md``. Typical use::

    from ledgerbridge.samplefirm import generate_firm, load_firm
    report = generate_firm(Path("out/firm"), seed=42, employees=40, months=3, start="2026-09")
    firm = load_firm("out/firm")
    for entry in firm.time_entries(): ...
"""

from __future__ import annotations

from ledgerbridge.samplefirm.generator import FileStat, GenerationReport, generate_firm
from ledgerbridge.samplefirm.reader import (
    CsvReader,
    FileError,
    Firm,
    FirmLoadError,
    ReadResult,
    iter_expenses,
    iter_time_entries,
    latest_versions,
    load_firm,
    read_entities,
    read_file,
    stream,
    verify_manifest,
)

__all__ = [
    "CsvReader", "FileError", "FileStat", "Firm", "FirmLoadError", "GenerationReport", "ReadResult",
    "generate_firm", "iter_expenses", "iter_time_entries", "latest_versions", "load_firm", "read_entities",
    "read_file", "stream", "verify_manifest",
]
