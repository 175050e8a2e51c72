"""Error taxonomy shared by connectors, flows and the runtime.

Every failure that crosses a boundary (an HTTP answer, a network error, a refused record) becomes a
:class:`LedgerbridgeError` with

- ``kind`` (:class:`ErrorKind`): what the runtime does with it —
  ``transient`` retry with backoff; ``rate_limited`` wait exactly as the target says, then retry;
  ``permanent`` and ``validation`` go to a dead-letter queue; ``conflict`` goes to stewardship;
- ``code``: a stable, searchable code such as ``"LB-T003"`` (table in :data:`CODES` and ``docs/runtime.md``;
  never reworded or reused once published);
- ``message``: what went wrong, naming the system, the item and the fix where known;
- ``retry_after``: seconds the target asked us to wait (``Retry-After``), or ``None``;
- ``details``: JSON-able extra facts (status, vendor error codes, element paths).

Errors are plain data: :meth:`LedgerbridgeError.to_dict` / :func:`error_from_dict` round-trip them through JSON
(dead letters, workflow outputs) and they pickle with all fields intact.

:func:`classify_http` turns an HTTP answer into an error (or ``None`` only for a real success — a 2xx whose body
carries a fault is an error), :func:`classify_exception` does the same for exceptions raised by ``httpx`` and the
socket layer. This module imports no I/O library at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar


class ErrorKind(StrEnum):
    """What the runtime does with an error (see the module docstring)."""

    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"
    VALIDATION = "validation"
    CONFLICT = "conflict"


#: Stable code table: code -> (kind, meaning). Documented in docs/runtime.md; tests check both agree.
CODES: dict[str, tuple[ErrorKind, str]] = {
    # transient: retried with backoff
    "LB-T001": (ErrorKind.TRANSIENT, "transient failure (unspecified)"),
    "LB-T002": (ErrorKind.TRANSIENT, "timeout (HTTP 408 or client-side timeout)"),
    "LB-T003": (ErrorKind.TRANSIENT, "connection failure (refused, reset, DNS, TLS, protocol)"),
    "LB-T004": (ErrorKind.TRANSIENT, "server error (HTTP 5xx)"),
    "LB-T005": (ErrorKind.TRANSIENT, "resource temporarily locked (HTTP 423, Salesforce UNABLE_TO_LOCK_ROW)"),
    "LB-T006": (ErrorKind.TRANSIENT, "2xx answer whose body reports a system/server fault (e.g. QBO SystemFault)"),
    # rate limited: wait as told (Retry-After), not counted as a failed attempt
    "LB-R001": (ErrorKind.RATE_LIMITED, "HTTP 429 Too Many Requests"),
    "LB-R002": (ErrorKind.RATE_LIMITED, "Salesforce REQUEST_LIMIT_EXCEEDED (403; daily or concurrent API limit)"),
    "LB-R003": (ErrorKind.RATE_LIMITED, "NetSuite concurrency/request limit (SSS_REQUEST_LIMIT_EXCEEDED and kin)"),
    "LB-R004": (ErrorKind.RATE_LIMITED, "2xx answer whose body reports throttling"),
    # permanent: dead letter, a person must act
    "LB-P001": (ErrorKind.PERMANENT, "permanent failure (unspecified)"),
    "LB-P002": (ErrorKind.PERMANENT, "authentication failed (HTTP 401): reconnect / refresh credentials"),
    "LB-P003": (ErrorKind.PERMANENT, "forbidden (HTTP 403): missing permission or role"),
    "LB-P004": (ErrorKind.PERMANENT, "not found or gone (HTTP 404/410)"),
    "LB-P005": (ErrorKind.PERMANENT, "client error (other HTTP 4xx, 501, 505)"),
    "LB-P006": (ErrorKind.PERMANENT, "2xx answer whose body carries an error"),
    "LB-P007": (ErrorKind.PERMANENT, "unexpected HTTP status (1xx, 3xx other than 304)"),
    # validation: dead letter, the record must be fixed
    "LB-V001": (ErrorKind.VALIDATION, "record refused (unspecified)"),
    "LB-V002": (ErrorKind.VALIDATION, "bad request (HTTP 400)"),
    "LB-V003": (ErrorKind.VALIDATION, "unprocessable entity (HTTP 422)"),
    "LB-V004": (ErrorKind.VALIDATION, "2xx answer whose body carries validation errors (QBO ValidationFault, Xero)"),
    "LB-V005": (ErrorKind.VALIDATION, "a ledgerbridge domain rule refused the item (DomainError)"),
    "LB-V006": (ErrorKind.VALIDATION, "the target's accounting period is closed or locked (refused before sending)"),
    # conflict: stewardship queue
    "LB-C001": (ErrorKind.CONFLICT, "conflict (unspecified)"),
    "LB-C002": (ErrorKind.CONFLICT, "conflict (HTTP 409)"),
    "LB-C003": (ErrorKind.CONFLICT, "precondition failed / stale version (HTTP 412, QBO 5010 Stale Object)"),
    "LB-C004": (
        ErrorKind.CONFLICT,
        "duplicate: idempotency or unique key already used (NetSuite IDEMPOTENCY_ERROR, Salesforce DUPLICATE_VALUE)",
    ),
    # retries exhausted (raised by the runtime's retry helper; kind = kind of the last error)
    "LB-X001": (ErrorKind.TRANSIENT, "retries exhausted: transient failures on every attempt"),
    "LB-X002": (ErrorKind.RATE_LIMITED, "rate-limit wait budget exhausted"),
}


class LedgerbridgeError(Exception):
    """Base of every classified ledgerbridge error.

    Subclasses fix ``kind`` and a default ``code``; ``code`` may be any code of the same kind from :data:`CODES`.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.PERMANENT
    default_code: ClassVar[str] = "LB-P001"

    code: str
    message: str
    retry_after: float | None
    details: dict[str, Any]

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        code = code or self.default_code
        known = CODES.get(code)
        if known is None:
            raise ValueError(f"unknown error code {code!r}: add it to ledgerbridge.errors.CODES and docs/runtime.md")
        if known[0] is not self.kind:
            raise ValueError(f"error code {code!r} is of kind {known[0]}, not {self.kind} ({type(self).__name__})")
        if retry_after is not None and (math.isnan(retry_after) or retry_after < 0):
            raise ValueError(f"retry_after must be a non-negative number of seconds, got {retry_after!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = dict(details or {})

    def __str__(self) -> str:
        wait = f" (retry after {self.retry_after:g} s)" if self.retry_after is not None else ""
        return f"[{self.code} {self.kind}] {self.message}{wait}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, retry_after={self.retry_after!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (error_from_dict, (self.to_dict(),))

    @property
    def retryable(self) -> bool:
        """True for kinds the runtime retries (transient, rate_limited)."""
        return self.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (dead letters, workflow outputs, API answers)."""
        return {
            "type": type(self).__name__,
            "kind": str(self.kind),
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "details": _jsonable(self.details),
        }


class TransientError(LedgerbridgeError):
    """May succeed if tried again later (timeouts, connection failures, 5xx). Retried with backoff."""

    kind = ErrorKind.TRANSIENT
    default_code = "LB-T001"


class RateLimitedError(LedgerbridgeError):
    """The target throttled us. Wait ``retry_after`` seconds (or the policy's backoff when unknown) and retry."""

    kind = ErrorKind.RATE_LIMITED
    default_code = "LB-R001"


class PermanentError(LedgerbridgeError):
    """Will fail again if retried unchanged (auth, permission, not found). Dead letter."""

    kind = ErrorKind.PERMANENT
    default_code = "LB-P001"


class RecordValidationError(LedgerbridgeError):
    """The target (or a domain rule) refused the record's content. Dead letter until the record is fixed."""

    kind = ErrorKind.VALIDATION
    default_code = "LB-V001"


class ConflictError(LedgerbridgeError):
    """The target holds a different version (409/412, stale token). Goes to stewardship."""

    kind = ErrorKind.CONFLICT
    default_code = "LB-C001"


class RetriesExhaustedError(LedgerbridgeError):
    """Raised by the runtime's retry helper when the retry policy gave up.

    ``kind`` is the kind of the last error (transient or rate_limited) so reports group it correctly, but the runtime
    never retries this error again (``retryable`` is False): it goes to a dead-letter queue and can be replayed.
    ``attempts`` counts the calls made; ``last_error`` is the final underlying error.
    """

    kind = ErrorKind.TRANSIENT
    default_code = "LB-X001"

    attempts: int
    last_error: LedgerbridgeError | None

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_error: LedgerbridgeError | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        code = code or self.default_code
        # kind follows the code (LB-X001 transient, LB-X002 rate_limited); set per instance before validation.
        known = CODES.get(code)
        if known is not None:
            self.kind = known[0]  # type: ignore[misc]
        merged = dict(details or {})
        merged["attempts"] = attempts
        if last_error is not None:
            merged["last_error"] = last_error.to_dict()
        super().__init__(message, code=code, retry_after=retry_after, details=merged)
        self.attempts = attempts
        self.last_error = last_error

    @property
    def retryable(self) -> bool:
        return False


_TYPES: dict[str, type[LedgerbridgeError]] = {
    cls.__name__: cls
    for cls in (
        LedgerbridgeError,
        TransientError,
        RateLimitedError,
        PermanentError,
        RecordValidationError,
        ConflictError,
        RetriesExhaustedError,
    )
}
_BY_KIND: dict[ErrorKind, type[LedgerbridgeError]] = {
    ErrorKind.TRANSIENT: TransientError,
    ErrorKind.RATE_LIMITED: RateLimitedError,
    ErrorKind.PERMANENT: PermanentError,
    ErrorKind.VALIDATION: RecordValidationError,
    ErrorKind.CONFLICT: ConflictError,
}


def error_class_for(kind: ErrorKind | str) -> type[LedgerbridgeError]:
    """The error class for a kind (``"transient"`` -> :class:`TransientError`, ...)."""
    return _BY_KIND[ErrorKind(kind)]


def error_from_dict(data: Mapping[str, Any]) -> LedgerbridgeError:
    """Rebuild an error from :meth:`LedgerbridgeError.to_dict` output (exact class, code, fields)."""
    cls = _TYPES.get(str(data.get("type", "")))
    if cls is None:
        cls = error_class_for(str(data["kind"]))
    details = dict(data.get("details") or {})
    retry_after = data.get("retry_after")
    if cls is RetriesExhaustedError:
        last = details.pop("last_error", None)
        attempts = int(details.pop("attempts", 0))
        return RetriesExhaustedError(
            str(data["message"]),
            attempts=attempts,
            last_error=error_from_dict(last) if last else None,
            code=str(data["code"]),
            retry_after=retry_after,
            details=details,
        )
    return cls(str(data["message"]), code=str(data["code"]), retry_after=retry_after, details=details)


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of details to JSON-able data (unknown objects become their repr)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------------------------------------------------
# HTTP classification
# ---------------------------------------------------------------------------------------------------------------------

#: A caller-supplied check of a successful (2xx) body: return an error when the body reports one, else None.
BodyErrorDetector = Callable[[Any], "LedgerbridgeError | None"]

_NETSUITE_LIMIT_CODES = frozenset(
    {
        "SSS_REQUEST_LIMIT_EXCEEDED",
        "CONCURRENCY_LIMIT_EXCEEDED",
        "WS_CONCUR_SESSION_DISALLWD",
        "WS_REQUEST_BLOCKED",
        "REQUEST_LIMIT_EXCEEDED",
        "SSS_REQUEST_FREQUENCY_EXCEEDED",
    }
)
_SALESFORCE_TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
_DUPLICATE_CODES = frozenset({"IDEMPOTENCY_ERROR", "DUPLICATE_VALUE"})
_QBO_STALE_CODES = frozenset({"5010"})
_MAX_BODY_IN_MESSAGE = 300


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns ``None`` when absent or unparsable; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _parse_body(body: bytes | str | Mapping[str, Any] | list[Any] | None) -> Any:
    if body is None or isinstance(body, Mapping | list):
        return body
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes | bytearray) else str(body)
    stripped = text.strip()
    if not stripped:
        return None
    if stripped[0] in "[{":
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def _snippet(parsed: Any) -> str:
    text = parsed if isinstance(parsed, str) else json.dumps(parsed, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_BODY_IN_MESSAGE else text[: _MAX_BODY_IN_MESSAGE - 1] + "…"


def _vendor_codes(parsed: Any) -> list[str]:
    """Vendor error codes found in well-known shapes: Salesforce arrays, NetSuite problem details, QBO Fault."""
    found: list[str] = []
    if isinstance(parsed, list):
        for item in parsed:
            if isinstance(item, Mapping):
                code = item.get("errorCode")
                if isinstance(code, str):
                    found.append(code)
    elif isinstance(parsed, Mapping):
        for item in parsed.get("o:errorDetails") or []:
            if isinstance(item, Mapping):
                code = item.get("o:errorCode")
                if isinstance(code, str):
                    found.append(code)
        code = parsed.get("errorCode")
        if isinstance(code, str):
            found.append(code)
        fault = parsed.get("Fault") or parsed.get("fault")
        if isinstance(fault, Mapping):
            for err in fault.get("Error") or fault.get("error") or []:
                if isinstance(err, Mapping) and err.get("code") is not None:
                    found.append(str(err["code"]))
    return found


def _builtin_body_error(parsed: Any, status: int, system: str) -> LedgerbridgeError | None:
    """Errors hiding in a 2xx body, in shapes shared across vendors."""
    if isinstance(parsed, Mapping):
        fault = parsed.get("Fault") or parsed.get("fault")
        if isinstance(fault, Mapping):  # QuickBooks Online: 200 + Fault
            ftype = str(fault.get("type") or "")
            codes = _vendor_codes(parsed)
            details = {"status": status, "fault_type": ftype, "vendor_codes": codes}
            msg = f"{system}: HTTP {status} carried a {ftype or 'Fault'}: {_snippet(fault)}"
            if any(c in _QBO_STALE_CODES for c in codes):
                return ConflictError(msg + " — re-read the record and retry with its current version",
                                     code="LB-C003", details=details)
            lowered = ftype.lower()
            if "validation" in lowered:
                return RecordValidationError(msg + " — fix the record's fields named above", code="LB-V004",
                                             details=details)
            if "throttl" in lowered:
                return RateLimitedError(msg, code="LB-R004", details=details)
            if "system" in lowered or "service" in lowered:
                return TransientError(msg, code="LB-T006", details=details)
            return PermanentError(msg, code="LB-P006", details=details)
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors:
            return PermanentError(f"{system}: HTTP {status} carried errors: {_snippet(errors)}", code="LB-P006",
                                  details={"status": status, "errors": _jsonable(errors)})
        if parsed.get("success") is False:
            return PermanentError(f"{system}: HTTP {status} reported success=false: {_snippet(parsed)}",
                                  code="LB-P006", details={"status": status})
    return None


def classify_http(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes | str | Mapping[str, Any] | list[Any] | None,
    *,
    system: str,
    body_error_detector: BodyErrorDetector | None = None,
    now: datetime | None = None,
) -> LedgerbridgeError | None:
    """Classify one HTTP answer from ``system`` (e.g. ``"netsuite"``). ``None`` means real success.

    Rules, in order:

    - 429 -> rate_limited (``retry_after`` from ``Retry-After`` seconds or HTTP-date; NetSuite sends none);
    - any status whose body names a NetSuite limit code (``SSS_REQUEST_LIMIT_EXCEEDED``, concurrency codes in
      problem-details ``o:errorDetails``) -> rate_limited ``LB-R003``;
    - 403 with a Salesforce ``[{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]`` body -> rate_limited ``LB-R002``;
    - 408 -> transient timeout; 423 / Salesforce ``UNABLE_TO_LOCK_ROW`` -> transient; 5xx (not 501/505) -> transient
      (``retry_after`` kept when a 503 sends ``Retry-After``);
    - a 4xx naming ``IDEMPOTENCY_ERROR`` (NetSuite) or ``DUPLICATE_VALUE`` (Salesforce) -> conflict ``LB-C004``;
    - 409, 412 -> conflict; 400, 422 -> validation; 401 / 403 / 404 / 410 / other 4xx -> permanent;
    - 2xx and 304: the body is checked — a QBO ``Fault``, a non-empty ``errors`` list or ``"success": false`` is an
      error — then ``body_error_detector(parsed_body)`` if given (e.g. Xero ``summarizeErrors=false`` elements with
      ``ValidationErrors``, Salesforce composite ``allOrNone=false`` items). Only then ``None``.

    ``headers`` may be any mapping (``httpx.Headers`` or a plain dict; names are matched case-insensitively).
    ``body`` may be raw bytes/str (parsed as JSON when it looks like JSON) or an already-parsed dict/list.
    """
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    parsed = _parse_body(body)
    codes = _vendor_codes(parsed)
    retry_after = parse_retry_after(hdrs.get("retry-after"), now=now)
    base: dict[str, Any] = {"system": system, "status": status}
    if codes:
        base["vendor_codes"] = codes
    where = f"{system}: HTTP {status}"
    body_txt = f": {_snippet(parsed)}" if parsed not in (None, "") else ""

    if 200 <= status < 300 or status == 304:
        if parsed is not None:
            err = _builtin_body_error(parsed, status, system)
            if err is None and body_error_detector is not None:
                err = body_error_detector(parsed)
            if err is not None:
                err.details.setdefault("system", system)
                err.details.setdefault("status", status)
                return err
        return None

    netsuite = system.lower().startswith("netsuite")
    if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes and not netsuite:
        return RateLimitedError(
            f"{where}: API request limit exceeded{body_txt} — wait for the rolling allowance to recover",
            code="LB-R002",
            retry_after=retry_after,
            details=base,
        )
    if any(c in _NETSUITE_LIMIT_CODES for c in codes) or (status == 429 and netsuite):
        return RateLimitedError(
            f"{where}: concurrency/request limit reached{body_txt} — wait and retry; lower this target's queue "
            "concurrency if it persists",
            code="LB-R003",
            retry_after=retry_after,
            details=base,
        )
    if status == 429:
        problem = hdrs.get("x-rate-limit-problem")
        if problem:
            base["rate_limit_problem"] = problem
        return RateLimitedError(
            f"{where}: too many requests{f' ({problem} limit)' if problem else ''}{body_txt} — waiting as told",
            code="LB-R001",
            retry_after=retry_after,
            details=base,
        )
    if status == 408:
        return TransientError(f"{where}: request timeout{body_txt}", code="LB-T002", retry_after=retry_after,
                              details=base)
    if status == 423 or any(c in _SALESFORCE_TRANSIENT_CODES for c in codes):
        return TransientError(f"{where}: resource temporarily locked or unavailable{body_txt}", code="LB-T005",
                              retry_after=retry_after, details=base)
    if 500 <= status < 600 and status not in (501, 505):
        return TransientError(f"{where}: server error{body_txt}", code="LB-T004", retry_after=retry_after,
                              details=base)
    if 400 <= status < 500 and any(c in _DUPLICATE_CODES for c in codes):
        return ConflictError(
            f"{where}: already done or already exists{body_txt} — look up the existing record by its external key "
            "and link it instead of creating another",
            code="LB-C004",
            details=base,
        )
    if status in (409, 412):
        return ConflictError(
            f"{where}: the target holds a different version{body_txt} — re-read it and resolve in stewardship",
            code="LB-C002" if status == 409 else "LB-C003",
            details=base,
        )
    if status in (400, 422):
        return RecordValidationError(
            f"{where}: record refused{body_txt} — fix the fields named above and replay",
            code="LB-V002" if status == 400 else "LB-V003",
            details=base,
        )
    if status == 401:
        return PermanentError(f"{where}: authentication failed{body_txt} — reconnect or refresh the credentials",
                              code="LB-P002", details=base)
    if status == 403:
        return PermanentError(f"{where}: forbidden{body_txt} — grant the integration role the permission",
                              code="LB-P003", details=base)
    if status in (404, 410):
        return PermanentError(f"{where}: not found{body_txt} — check the id/mapping", code="LB-P004", details=base)
    if 400 <= status < 600:
        return PermanentError(f"{where}: client error{body_txt}", code="LB-P005", details=base)
    return PermanentError(f"{where}: unexpected status{body_txt}", code="LB-P007", details=base)


def classify_exception(exc: BaseException, *, system: str = "unknown") -> LedgerbridgeError | None:
    """Classify an exception raised while talking to ``system``.

    - a :class:`LedgerbridgeError` is returned unchanged;
    - ``httpx`` timeouts -> transient ``LB-T002``; other ``httpx`` transport errors -> transient ``LB-T003``;
    - ``httpx.HTTPStatusError`` -> :func:`classify_http` on its response; ``TooManyRedirects`` -> ``LB-P007``;
      any other ``httpx.HTTPError`` (e.g. ``DecodingError``, a damaged answer) -> transient ``LB-T003``;
    - built-in ``TimeoutError`` -> ``LB-T002``; ``ConnectionError`` -> ``LB-T003``;
    - :class:`ledgerbridge.domain.errors.DomainError` -> validation ``LB-V005`` (item, rule, fix kept in details);
    - anything else -> ``None``: an unclassified exception is a bug and must surface, not be retried.
    """
    if isinstance(exc, LedgerbridgeError):
        return exc
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a declared dependency
        httpx = None  # type: ignore[assignment]
    name = type(exc).__name__
    if httpx is not None:
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(f"{system}: timed out ({name}: {exc})", code="LB-T002",
                                  details={"system": system, "exception": name})
        if isinstance(exc, httpx.TransportError):
            return TransientError(f"{system}: connection failed ({name}: {exc})", code="LB-T003",
                                  details={"system": system, "exception": name})
        if isinstance(exc, httpx.HTTPStatusError):
            resp = exc.response
            return classify_http(resp.status_code, resp.headers, resp.content, system=system)
        if isinstance(exc, httpx.TooManyRedirects):
            return PermanentError(f"{system}: too many redirects ({exc}) — check the base URL", code="LB-P007",
                                  details={"system": system, "exception": name})
        if isinstance(exc, httpx.HTTPError):  # DecodingError and other request errors: a damaged answer
            return TransientError(f"{system}: the answer could not be read ({name}: {exc})", code="LB-T003",
                                  details={"system": system, "exception": name})
    if isinstance(exc, TimeoutError):
        return TransientError(f"{system}: timed out ({name}: {exc})", code="LB-T002",
                              details={"system": system, "exception": name})
    if isinstance(exc, ConnectionError):
        return TransientError(f"{system}: connection failed ({name}: {exc})", code="LB-T003",
                              details={"system": system, "exception": name})
    from ledgerbridge.domain.errors import DomainError

    if isinstance(exc, DomainError):
        return RecordValidationError(
            str(exc), code="LB-V005", details={"item": exc.item, "rule": exc.rule, "fix": exc.fix}
        )
    return None


__all__ = [
    "CODES",
    "BodyErrorDetector",
    "ConflictError",
    "ErrorKind",
    "LedgerbridgeError",
    "PermanentError",
    "RateLimitedError",
    "RecordValidationError",
    "RetriesExhaustedError",
    "TransientError",
    "classify_exception",
    "classify_http",
    "error_class_for",
    "error_from_dict",
    "parse_retry_after",
]
