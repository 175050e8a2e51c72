"""File-based controlled posting: journal-import CSV + control-totals trailer + manifest into an outbox,
acknowledgements from an inbox. Formats: docs/file-posting.md."""

from ledgerbridge.connectors.file_journal.client import FileJournalClient, WriteOutcome
from ledgerbridge.connectors.file_journal.connector import CAPABILITIES, FileJournalConnector
from ledgerbridge.connectors.file_journal.mapping import COLUMNS, RenderedRun, render_run

__all__ = ["CAPABILITIES", "COLUMNS", "FileJournalClient", "FileJournalConnector", "RenderedRun", "WriteOutcome",
           "render_run"]
