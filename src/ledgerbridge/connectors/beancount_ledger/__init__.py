"""The embedded Beancount ledger: one validated ledger file per legal entity, included from main.beancount."""

from ledgerbridge.connectors.beancount_ledger.client import BeancountLedgerClient
from ledgerbridge.connectors.beancount_ledger.connector import CAPABILITIES, BeancountLedgerConnector
from ledgerbridge.connectors.beancount_ledger.mapping import account_name, camel_name, render_journal

__all__ = ["CAPABILITIES", "BeancountLedgerClient", "BeancountLedgerConnector", "account_name", "camel_name",
           "render_journal"]
