"""PSA CSV export source: a PSA's export files dropped in a folder (format: docs/file-format.md)."""

from ledgerbridge.connectors.psa_csv.connector import CAPABILITIES, PsaCsvSource

__all__ = ["CAPABILITIES", "PsaCsvSource"]
