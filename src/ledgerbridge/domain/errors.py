"""The domain's validation-error type, shared by every rule module under ``ledgerbridge.domain``.

A rule that cannot proceed raises :class:`DomainError`; a batch function that keeps going collects
:class:`Violation` records instead. Both carry the same four fields so the financial dead-letter queue can store
either one unchanged:

- ``item``: which business item is wrong, e.g. ``"time_entry psa_files:TE-1@2"``;
- ``rule``: a stable, searchable code, e.g. ``"rates.missing_cost_rate"`` (never reworded once published);
- ``message``: what is wrong, in business terms;
- ``fix``: what a person should do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


def _render(item: str, rule: str, message: str, fix: str) -> str:
    return f"{item}: {message} ({rule}) — fix: {fix}"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule, collected rather than raised (batch validation, dead-letter payloads)."""

    item: str
    rule: str
    message: str
    fix: str

    def __str__(self) -> str:
        return _render(self.item, self.rule, self.message, self.fix)

    def to_error(self) -> DomainError:
        return DomainError(self.item, self.rule, self.message, self.fix)


class DomainError(ValueError):
    """A business rule refused an item. Permanent (retrying will not help): route to the dead-letter queue."""

    item: str
    rule: str
    message: str
    fix: str

    def __init__(self, item: str, rule: str, message: str, fix: str) -> None:
        super().__init__(_render(item, rule, message, fix))
        self.item = item
        self.rule = rule
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return _render(self.item, self.rule, self.message, self.fix)

    def __reduce__(self) -> tuple[type[DomainError], tuple[str, str, str, str]]:
        return (type(self), (self.item, self.rule, self.message, self.fix))

    def to_violation(self) -> Violation:
        return Violation(self.item, self.rule, self.message, self.fix)
