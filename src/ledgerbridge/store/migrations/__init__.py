"""Alembic migrations of the state store (run by ledgerbridge.store.migrate)."""
