"""docs/posting-rules.md is produced by the code: regenerating it must give exactly the committed text."""

from __future__ import annotations

from pathlib import Path

from ledgerbridge.flows.worked_example import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "posting-rules.md"


def test_posting_rules_document_is_current() -> None:
    produced = render() + "\n"
    assert DOC.read_text(encoding="utf-8") == produced, (
        "docs/posting-rules.md is stale: run scripts/posting-rules-doc and commit the result")
    assert "| 5000 |" in produced and "INV-" in produced  # it shows labor cost journals and invoices
