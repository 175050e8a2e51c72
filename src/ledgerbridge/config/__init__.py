"""The configuration file: typed schema, YAML loader with key paths and line numbers, secret references."""

from __future__ import annotations

from ledgerbridge.config.loader import (
    ConfigError,
    default_config,
    load_config,
    load_config_text,
    starter_text,
    validate_file,
    validate_text,
)
from ledgerbridge.config.schema import ConfigIssue, LedgerbridgeConfig, SystemConfig
from ledgerbridge.config.secrets import SecretRef, SecretResolutionError

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LedgerbridgeConfig",
    "SecretRef",
    "SecretResolutionError",
    "SystemConfig",
    "default_config",
    "load_config",
    "load_config_text",
    "starter_text",
    "validate_file",
    "validate_text",
]
