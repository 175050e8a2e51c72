"""Pure business rules of ledgerbridge: no I/O, deterministic, ``mypy --strict`` clean.

Import the module you need (nothing is re-exported here):

- ``types``      shared value types: LedgerDelta, CostedTime, CostedExpense, Posting
- ``errors``     DomainError (raised) and Violation (collected): item, rule, message, fix
- ``approvals``  which source versions to post or reverse
- ``costing``    cost and bill rates, labor cost and billable value
- ``fx``         currency conversion with explicit rate and rate date
- ``posting``    posting rules: Posting -> balanced journal entries
- ``periods``    accounting periods and the late-item policy
- ``validation`` checks against ERP dimensions, accounts and tax codes before any write
- ``billing``    tax, T&M / milestone / fixed-fee invoice drafts, invoice postings
- ``revenue``    percent-complete (fixed fee) and milestone revenue recognition

``tests/test_purity.py`` fails if any module here or in ``ledgerbridge.model`` imports an I/O library.
"""
