"""The FastAPI application: ``create_app(ctx, settings)`` (tests drive it in-process with httpx/TestClient;
``ledgerbridge serve`` runs it under uvicorn)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledgerbridge import __version__
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.errors import ErrorKind, LedgerbridgeError
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.service import api, dashboard, logs, webhooks, worker
from ledgerbridge.service.ingest import GroupCommitter
from ledgerbridge.service.metrics import AppMetrics
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.tracing import make_provider, trace_id_hex
from ledgerbridge.store.errors import InvalidStatusError, NotFoundError, StoreError

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logs.get_logger()


def _secret_values(ctx: FlowContext) -> list[str]:
    out = []
    for _path, ref in ctx.config.secret_refs():
        try:
            out.append(ref.reveal())
        except Exception:  # an unresolvable reference has no value to hide
            continue
    return out


def create_app(ctx: FlowContext, settings: ServiceSettings | None = None, *, span_exporter: Any = None,
               runtime_settings: Any = None) -> FastAPI:
    """Build the service around a :class:`FlowContext`.

    With ``settings.worker`` the app's lifespan launches the durable runtime (unless one is already launched, as
    in tests), registers the intake queue and sweep schedule, and makes webhooks trigger processing.
    ``runtime_settings`` overrides ``ctx.config.runtime``; ``span_exporter`` adds an exporter (tests)."""
    settings = settings or ServiceSettings()
    logs.configure()
    logs.register_secrets(_secret_values(ctx))
    provider = make_provider(settings.otel_exporter, extra=span_exporter)
    tracer = provider.get_tracer("ledgerbridge.service")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        launched = False
        if settings.worker:
            from ledgerbridge.flows.context import set_current

            set_current(ctx)
            worker.set_tracer(tracer)
            launched = await anyio.to_thread.run_sync(  # DBOS refuses sync calls on the event loop thread
                worker.start, settings, runtime_settings or ctx.config.runtime.to_runtime())
            app.state.trigger = worker.Trigger(settings.process_window_seconds, settings.process_batch_size)
            app.state.worker_running = True
        log.info("service.started", worker=settings.worker, version=__version__)
        try:
            yield
        finally:
            app.state.trigger = None
            app.state.worker_running = False
            await anyio.to_thread.run_sync(app.state.committer.close)
            await anyio.to_thread.run_sync(worker.stop, launched)
            provider.shutdown()

    app = FastAPI(title="ledgerbridge", version=__version__, lifespan=lifespan,
                  description="Signed webhook ingress and the admin API of ledgerbridge (see docs/service.md).",
                  responses={400: {"description": "bad input"}, 401: {"description": "missing or invalid token"},
                             403: {"description": "scope too narrow"}, 404: {"description": "not found"},
                             409: {"description": "conflict with the current state"},
                             422: {"description": "invalid request"}})
    app.state.ctx = ctx
    app.state.settings = settings
    app.state.metrics = AppMetrics(ctx.engine)
    app.state.tracer = tracer
    app.state.replay_guard = webhooks.ReplayGuard(settings.webhook_tolerance_seconds)
    app.state.trigger = None
    app.state.worker_running = False
    app.state.committer = GroupCommitter(ctx, on_new=lambda: app.state.trigger and app.state.trigger.notify())

    @app.middleware("http")
    async def correlate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.request_id = request_id
        path = request.url.path
        name = f"webhook {path.rsplit('/', 1)[-1]}" if path.startswith("/webhooks/") else f"{request.method} {path}"
        started = time.perf_counter()
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", path)
            span.set_attribute("ledgerbridge.request_id", request_id)
            structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id_hex(span))
            try:
                response = await call_next(request)
            finally:
                structlog.contextvars.clear_contextvars()
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            response.headers["X-Request-ID"] = request_id
            tid = trace_id_hex(span)
            if tid:
                response.headers["X-Trace-Id"] = tid
        route = request.scope.get("route")
        app.state.metrics.requests.labels(route=getattr(route, "path", "_unmatched"), method=request.method,
                                          status=str(response.status_code)).inc()
        if not path.startswith("/webhooks/"):  # webhooks log their own line
            log.info("http.request", method=request.method, path=path, status=response.status_code,
                     ms=round((time.perf_counter() - started) * 1000, 2), request_id=request_id, trace_id=tid)
        return response

    def body(request: Request, status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"message": message, "request_id": getattr(request.state, "request_id", None),
                             **extra}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        resp = body(request, exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        where = ".".join(str(x) for x in errors[0]["loc"]) if errors else "request"
        return body(request, 422, f"invalid request: {where}: {errors[0]['msg'] if errors else ''}", errors=errors)

    @app.exception_handler(DomainError)
    async def domain(request: Request, exc: DomainError) -> JSONResponse:
        return body(request, 409, str(exc), rule=exc.rule, fix=exc.fix)

    @app.exception_handler(LedgerbridgeError)
    async def classified(request: Request, exc: LedgerbridgeError) -> JSONResponse:
        status = {ErrorKind.VALIDATION: 422, ErrorKind.CONFLICT: 409, ErrorKind.RATE_LIMITED: 429,
                  ErrorKind.TRANSIENT: 503}.get(exc.kind, 400)
        return body(request, status, exc.message, code=exc.code, kind=str(exc.kind))

    @app.exception_handler(StoreError)
    async def store(request: Request, exc: StoreError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, InvalidStatusError) else 400
        return body(request, status, str(exc))

    @app.exception_handler(ValueError)
    async def value(request: Request, exc: ValueError) -> JSONResponse:
        return body(request, 400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        log.error("http.unexpected_error", error=type(exc).__name__, path=request.url.path, request_id=rid,
                  exc_info=exc)
        return body(request, 500, f"internal error ({type(exc).__name__}); quote request id {rid} when reporting")

    @app.get("/healthz", tags=["service"], summary="Liveness (no token)")
    def healthz() -> dict[str, Any]:
        from ledgerbridge import runtime as rt

        return {"status": "ok", "version": __version__, "worker": bool(settings.worker),
                "runtime": rt.Runtime.is_launched()}

    metrics_deps = [] if settings.metrics_public else [api.R]

    @app.get("/metrics", tags=["service"], dependencies=metrics_deps, response_class=Response,
             summary="Prometheus metrics (business metrics; no token unless metrics_public=false)")
    def metrics_endpoint() -> Response:
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(webhooks.make_router())
    app.include_router(api.make_router())
    app.include_router(dashboard.make_router())  # /dashboard (docs/dashboard.md)
    return app
