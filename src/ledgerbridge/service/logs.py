"""JSON logs (structlog) with a correlation id and the trace id of every request, and secret redaction.

Every log line of the service is one JSON object on the ``ledgerbridge.service`` logger, carrying
``request_id`` (the caller's ``X-Request-ID`` or a new one) and ``trace_id`` (OpenTelemetry) when it is written
during a request. :func:`register_secrets` adds values that must never appear: the last processor replaces any of
them, anywhere in the rendered line, by ``[REDACTED]`` (defence in depth: the service never logs a secret or a
token on purpose).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

LOGGER_NAME = "ledgerbridge.service"
_secrets: set[str] = set()
_lock = threading.Lock()
_configured = False


def register_secrets(values: Iterable[str]) -> None:
    """Values to redact from every log line (configured secrets; tokens are never logged anyway)."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "[REDACTED]")
    return text


def _redact_rendered(_logger: Any, _name: str, event: str | MutableMapping[str, Any]) -> Any:
    return redact(event) if isinstance(event, str) else event


def configure(*, stream: Any = None, level: int = logging.INFO) -> None:
    """Configure structlog for the service (idempotent). ``stream``: also attach a handler printing the JSON lines
    (``serve`` passes stderr); tests leave it out and read the records."""
    global _configured
    with _lock:
        if not _configured:
            structlog.configure(
                processors=[
                    structlog.stdlib.filter_by_level,  # drop disabled levels before any rendering
                    structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(sort_keys=True, default=str),
                    _redact_rendered,
                ],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger,
                cache_logger_on_first_use=False,
            )
            _configured = True
    lg = logging.getLogger(LOGGER_NAME)
    lg.setLevel(level)
    if stream is not None and not any(getattr(h, "_lb_json", False) for h in lg.handlers):
        h = logging.StreamHandler(stream or sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._lb_json = True  # type: ignore[attr-defined]
        lg.addHandler(h)
        lg.propagate = False


def get_logger(name: str = LOGGER_NAME) -> Any:
    configure()
    return structlog.get_logger(name)
