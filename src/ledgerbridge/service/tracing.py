"""OpenTelemetry tracing of the service: one tracer provider per app (SDK; no exporter unless configured).

Spans: ``webhook <system>`` (the request) -> ``intake.accept`` (the inbox write); ``inbox.process`` for each
batch the worker decides. The trace id goes into every log line of the request (``trace_id``), into the webhook
answer, into the inbox rows' ``batch_id`` (``wh:<trace id>:...``) and into dead letters the service creates.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ledgerbridge import __version__


def make_provider(exporter: str = "none", *, extra: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider for one app. ``exporter``: none | console | otlp; ``extra``: another exporter (tests)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "ledgerbridge",
                                                        "service.version": __version__}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore
        except ImportError as exc:
            raise ValueError("otel_exporter=otlp needs the opentelemetry-exporter-otlp-proto-http package: "
                             "pip install opentelemetry-exporter-otlp-proto-http, or use console/none") from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if extra is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(extra))
    return provider


def trace_id_hex(span: Any = None) -> str | None:
    """The current (or given) span's trace id as 32 hex digits, or None outside a recorded span."""
    span = span or trace.get_current_span()
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
