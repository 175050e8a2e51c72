"""Redmine (5.x REST API) as a PSA source: time entries with windowed change detection, projects, users, and an
invoice-reference write-back. See docs/connectors/redmine.md."""

from ledgerbridge.connectors.redmine.client import RedmineClient
from ledgerbridge.connectors.redmine.connector import (
    CAPABILITIES,
    ChangeEvent,
    RedmineSource,
    SyncOptions,
    SyncResult,
    WriteBackResult,
)
from ledgerbridge.connectors.redmine.mapping import FieldMap, ProjectDefaults, ResourceDefaults, to_time_entry

__all__ = ["CAPABILITIES", "ChangeEvent", "FieldMap", "ProjectDefaults", "RedmineClient", "RedmineSource",
           "ResourceDefaults", "SyncOptions", "SyncResult", "WriteBackResult", "to_time_entry"]
