"""Jira Cloud (REST v3 worklogs) + Tempo (API v4 approvals, work attributes) as a PSA source: time entries with
change feeds (including deletions and the feeds' last-minute gap), approvals per user and period, projects, users,
and an invoice write-back into a worklog property. See docs/connectors/jira-tempo.md."""

from __future__ import annotations

from typing import Any

from ledgerbridge.connectors.jira_tempo.client import JiraClient, OAuthAuth, StaticAuth, TempoClient
from ledgerbridge.connectors.jira_tempo.connector import (
    CAPABILITIES,
    ChangeEvent,
    JiraTempoSource,
    SyncOptions,
    SyncResult,
)
from ledgerbridge.connectors.jira_tempo.mapping import FieldMap, ProjectDefaults, ResourceDefaults


def build(name: str, cfg: Any, ctx: Any) -> JiraTempoSource:
    """The registry's entry (``connector: jira_tempo``): options from ``cfg.options``, secrets ``api_token``
    (basic auth) or ``client_secret`` + ``refresh_token`` (OAuth), and ``tempo_token`` (or ``tempo_client_secret``
    + ``tempo_refresh_token``) when a ``tempo:`` block is configured."""

    def secret(key: str) -> str | None:
        return cfg.secret(key) if key in (cfg.secrets or {}) else None

    return JiraTempoSource.from_options(name, dict(cfg.options or {}), secret)


__all__ = ["CAPABILITIES", "ChangeEvent", "FieldMap", "JiraClient", "JiraTempoSource", "OAuthAuth",
           "ProjectDefaults", "ResourceDefaults", "StaticAuth", "SyncOptions", "SyncResult", "TempoClient", "build"]
