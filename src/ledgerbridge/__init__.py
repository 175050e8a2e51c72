"""ledgerbridge: keeps PSA delivery systems and ERP finance systems in step."""

__version__ = "0.1.0"
