"""Errors raised by the store's repositories. Each names the item, the rule it broke and the fix."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


class XrefConflictError(StoreError):
    """An external id is already bound to another canonical id of the same type in the same system."""


class JournalConflictError(StoreError):
    """A journal id was recorded before with different content: posted journals are never edited."""


class UnknownRunError(StoreError):
    """The posting run does not exist."""


class RunConflictError(StoreError):
    """A posting run id exists with a different legal entity, period or target."""


class InvalidStatusError(StoreError):
    """A status value or transition the store does not allow."""


class NotFoundError(StoreError):
    """The row asked for does not exist."""
