"""Settings of ``ledgerbridge serve`` (a plain record; the CLI fills it from options and ``LB_SERVICE_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

EXPORTERS = ("none", "console", "otlp")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How the service runs.

    - ``host`` / ``port``: where uvicorn listens (default loopback only).
    - ``worker``: run the background worker in this process (the durable runtime is launched and webhooks are
      processed soon after they land); ``False`` = API only (separate workers process the inbox).
    - ``webhook_tolerance_seconds``: a delivery whose timestamp is further than this from now is refused as
      stale; an identical signed delivery seen again within it is refused as a replay.
    - ``process_window_seconds``: webhooks landing within one window are processed by one durable workflow that
      starts when the window ends (debounce); ``sweep_cron``: a schedule that processes anything left over.
    - ``process_batch_size``: inbox rows decided per transaction.
    - ``max_body_bytes``: larger webhook bodies get 413.
    - ``otel_exporter``: ``none`` (spans are made, ids go into logs, nothing exported), ``console`` or ``otlp``
      (needs the ``opentelemetry-exporter-otlp`` package; endpoint from ``OTEL_EXPORTER_OTLP_ENDPOINT``).
    - ``metrics_public``: ``/metrics`` without a token (Prometheus scrapers); ``False`` needs a read token.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    worker: bool = True
    webhook_tolerance_seconds: int = 300
    process_window_seconds: float = 0.25
    process_batch_size: int = 2000
    sweep_cron: str = "*/15 * * * * *"
    max_body_bytes: int = 1_000_000
    otel_exporter: str = "none"
    metrics_public: bool = True
    runtime_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.webhook_tolerance_seconds < 1:
            raise ValueError(f"webhook_tolerance_seconds must be >= 1, got {self.webhook_tolerance_seconds}")
        if not (0 < self.process_window_seconds <= 60):
            raise ValueError(f"process_window_seconds must be in (0, 60], got {self.process_window_seconds}")
        if self.process_batch_size < 1:
            raise ValueError(f"process_batch_size must be >= 1, got {self.process_batch_size}")
        if self.otel_exporter not in EXPORTERS:
            raise ValueError(f"otel_exporter {self.otel_exporter!r} must be one of {EXPORTERS}")
        if not (0 < self.port < 65536):
            raise ValueError(f"port {self.port} is not a TCP port")

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        """Defaults, then ``LB_SERVICE_WEBHOOK_TOLERANCE_SECONDS``, ``LB_SERVICE_OTEL_EXPORTER``,
        ``LB_SERVICE_PROCESS_WINDOW_SECONDS``, ``LB_SERVICE_METRICS_PUBLIC``, then ``overrides``."""
        env: dict[str, Any] = {}
        if v := os.environ.get("LB_SERVICE_WEBHOOK_TOLERANCE_SECONDS"):
            env["webhook_tolerance_seconds"] = int(v)
        if v := os.environ.get("LB_SERVICE_OTEL_EXPORTER"):
            env["otel_exporter"] = v
        if v := os.environ.get("LB_SERVICE_PROCESS_WINDOW_SECONDS"):
            env["process_window_seconds"] = float(v)
        if v := os.environ.get("LB_SERVICE_METRICS_PUBLIC"):
            env["metrics_public"] = v.lower() in ("1", "true", "yes")
        return cls(**(env | {k: v for k, v in overrides.items() if v is not None}))
