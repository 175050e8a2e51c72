"""Error taxonomy: kinds, stable codes, classification of HTTP answers and exceptions, round-trips."""

from __future__ import annotations

import json
import pickle
import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.errors import (
    CODES,
    ConflictError,
    ErrorKind,
    LedgerbridgeError,
    PermanentError,
    RateLimitedError,
    RecordValidationError,
    RetriesExhaustedError,
    TransientError,
    classify_exception,
    classify_http,
    error_from_dict,
    parse_retry_after,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "runtime.md"
NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------------------------- codes and classes


def test_every_code_has_a_kind_prefix_and_is_documented() -> None:
    prefix = {
        ErrorKind.TRANSIENT: ("LB-T", "LB-X"),
        ErrorKind.RATE_LIMITED: ("LB-R", "LB-X"),
        ErrorKind.PERMANENT: ("LB-P",),
        ErrorKind.VALIDATION: ("LB-V",),
        ErrorKind.CONFLICT: ("LB-C",),
    }
    doc = DOCS.read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\|\s*`(LB-[A-Z]\d{3})`\s*\|\s*(\w+)\s*\|", doc, flags=re.MULTILINE))
    for code, (kind, meaning) in CODES.items():
        assert re.fullmatch(r"LB-[TRPVCX]\d{3}", code), code
        assert code.startswith(prefix[kind]), (code, kind)
        assert meaning
        assert documented.get(code) == str(kind), f"{code} missing or with the wrong kind in docs/runtime.md"
    assert set(documented) == set(CODES), "docs/runtime.md lists codes that do not exist"


@pytest.mark.parametrize(
    ("cls", "kind", "code"),
    [
        (TransientError, "transient", "LB-T001"),
        (RateLimitedError, "rate_limited", "LB-R001"),
        (PermanentError, "permanent", "LB-P001"),
        (RecordValidationError, "validation", "LB-V001"),
        (ConflictError, "conflict", "LB-C001"),
    ],
)
def test_subclass_kind_default_code_and_retryable(cls: type[LedgerbridgeError], kind: str, code: str) -> None:
    err = cls("boom", details={"item": "INV-1"})
    assert err.kind == kind and err.code == code and err.message == "boom"
    assert err.retryable is (kind in ("transient", "rate_limited"))
    assert f"[{code} {kind}] boom" == str(err)
    assert isinstance(err, LedgerbridgeError) and isinstance(err, Exception)


def test_code_must_exist_and_match_the_kind() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        TransientError("x", code="LB-T999")
    with pytest.raises(ValueError, match="of kind permanent"):
        TransientError("x", code="LB-P002")
    with pytest.raises(ValueError, match="retry_after"):
        RateLimitedError("x", retry_after=-1)


def test_retries_exhausted_takes_the_kind_of_its_code_and_is_never_retryable() -> None:
    last = RateLimitedError("slow down", retry_after=30.0)
    err = RetriesExhaustedError("gave up", attempts=4, last_error=last, code="LB-X002", retry_after=30.0)
    assert err.kind == "rate_limited" and not err.retryable and err.attempts == 4
    assert err.details["last_error"]["code"] == "LB-R001"
    assert RetriesExhaustedError("gave up", attempts=2).kind == "transient"


_errors = st.builds(
    lambda cls, msg, ra, details: cls(msg, retry_after=ra, details=details),
    st.sampled_from([TransientError, RateLimitedError, PermanentError, RecordValidationError, ConflictError]),
    st.text(max_size=40),
    st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none(), max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(_errors)
def test_json_and_pickle_round_trip_keep_class_code_and_fields(err: LedgerbridgeError) -> None:
    for back in (error_from_dict(json.loads(json.dumps(err.to_dict()))), pickle.loads(pickle.dumps(err))):
        assert type(back) is type(err)
        assert (back.code, back.message, back.retry_after, back.details) == (
            err.code, err.message, err.retry_after, err.details
        )


def test_exhausted_error_round_trips_with_its_last_error() -> None:
    err = RetriesExhaustedError("gave up", attempts=3, last_error=TransientError("503", code="LB-T004"))
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, RetriesExhaustedError) and back.attempts == 3
    assert isinstance(back.last_error, TransientError) and back.last_error.code == "LB-T004"
    assert error_from_dict(err.to_dict()).to_dict() == err.to_dict()


# ----------------------------------------------------------------------------------------------- Retry-After


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=NOW) == 90.0
    earlier = format_datetime(NOW - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("-5") == 0.0 and parse_retry_after("inf") is None


# ----------------------------------------------------------------------------------------------- classify_http


def _c(status: int, body: object = None, headers: dict[str, str] | None = None, system: str = "generic",
       **kw: object) -> LedgerbridgeError | None:
    return classify_http(status, headers or {}, body, system=system, now=NOW, **kw)  # type: ignore[arg-type]


def test_real_success_is_none() -> None:
    assert _c(200, b'{"Id": "42"}') is None
    assert _c(201, {"id": 1, "errors": []}) is None
    assert _c(204, None) is None
    assert _c(304, b"") is None
    assert _c(200, b"<html>ok</html>") is None


def test_429_with_retry_after_seconds_or_date() -> None:
    err = _c(429, b"", {"Retry-After": "7", "X-Rate-Limit-Problem": "minute"}, system="xero")
    assert isinstance(err, RateLimitedError) and err.code == "LB-R001" and err.retry_after == 7.0
    assert err.details["rate_limit_problem"] == "minute" and "xero" in err.message
    date = format_datetime(NOW + timedelta(seconds=45), usegmt=True)
    err = _c(429, None, {"retry-after": date}, system="d365")
    assert isinstance(err, RateLimitedError) and err.retry_after == 45.0
    err = _c(429, None, {}, system="qbo")
    assert isinstance(err, RateLimitedError) and err.retry_after is None


def test_salesforce_403_request_limit_exceeded_is_rate_limited_other_403_permanent() -> None:
    body = b'[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]'
    err = _c(403, body, system="salesforce")
    assert isinstance(err, RateLimitedError) and err.code == "LB-R002"
    assert err.details["vendor_codes"] == ["REQUEST_LIMIT_EXCEEDED"]
    other = _c(403, b'[{"message":"no access","errorCode":"INSUFFICIENT_ACCESS"}]', system="salesforce")
    assert isinstance(other, PermanentError) and other.code == "LB-P003"


def test_netsuite_limits_in_problem_details_and_plain_429() -> None:
    problem = {"type": "x", "title": "Bad Request", "status": 400,
               "o:errorDetails": [{"detail": "limit", "o:errorCode": "SSS_REQUEST_LIMIT_EXCEEDED"}]}
    err = _c(400, json.dumps(problem), system="netsuite")
    assert isinstance(err, RateLimitedError) and err.code == "LB-R003"
    conc = {"o:errorDetails": [{"detail": "too many", "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED"}]}
    assert _c(429, conc, system="netsuite").code == "LB-R003"  # type: ignore[union-attr]
    assert _c(429, None, system="netsuite").code == "LB-R003"  # type: ignore[union-attr]
    user = {"o:errorDetails": [{"detail": "The period is closed", "o:errorCode": "USER_ERROR"}]}
    closed = _c(400, user, system="netsuite")
    assert isinstance(closed, RecordValidationError) and closed.details["vendor_codes"] == ["USER_ERROR"]


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (408, TransientError, "LB-T002"),
        (423, TransientError, "LB-T005"),
        (500, TransientError, "LB-T004"),
        (502, TransientError, "LB-T004"),
        (503, TransientError, "LB-T004"),
        (504, TransientError, "LB-T004"),
        (501, PermanentError, "LB-P005"),
        (409, ConflictError, "LB-C002"),
        (412, ConflictError, "LB-C003"),
        (400, RecordValidationError, "LB-V002"),
        (422, RecordValidationError, "LB-V003"),
        (401, PermanentError, "LB-P002"),
        (403, PermanentError, "LB-P003"),
        (404, PermanentError, "LB-P004"),
        (410, PermanentError, "LB-P004"),
        (405, PermanentError, "LB-P005"),
        (302, PermanentError, "LB-P007"),
        (101, PermanentError, "LB-P007"),
    ],
)
def test_status_mapping(status: int, cls: type[LedgerbridgeError], code: str) -> None:
    err = _c(status, b'{"message": "m"}', system="erp")
    assert type(err) is cls and err.code == code and err.details["status"] == status  # type: ignore[union-attr]
    assert f"erp: HTTP {status}" in err.message  # type: ignore[union-attr]


def test_duplicates_are_conflicts_to_link_not_to_recreate() -> None:
    idem = {"o:errorDetails": [{"detail": "key reused", "o:errorCode": "IDEMPOTENCY_ERROR"}]}
    err = _c(400, idem, system="netsuite")
    assert isinstance(err, ConflictError) and err.code == "LB-C004" and "external key" in err.message
    dup = _c(400, b'[{"message":"duplicate value found","errorCode":"DUPLICATE_VALUE"}]', system="salesforce")
    assert isinstance(dup, ConflictError) and dup.code == "LB-C004"


def test_503_keeps_retry_after_and_salesforce_row_lock_is_transient() -> None:
    err = _c(503, None, {"Retry-After": "3"})
    assert isinstance(err, TransientError) and err.retry_after == 3.0
    lock = _c(400, b'[{"message":"unable to obtain exclusive access","errorCode":"UNABLE_TO_LOCK_ROW"}]',
              system="salesforce")
    assert isinstance(lock, TransientError) and lock.code == "LB-T005"


@pytest.mark.parametrize(
    ("fault_type", "code", "cls"),
    [
        ("ValidationFault", "LB-V004", RecordValidationError),
        ("SystemFault", "LB-T006", TransientError),
        ("AuthenticationFault", "LB-P006", PermanentError),
        ("ThrottlingFault", "LB-R004", RateLimitedError),
    ],
)
def test_qbo_fault_inside_a_200_is_an_error(fault_type: str, code: str, cls: type[LedgerbridgeError]) -> None:
    body = {"Fault": {"Error": [{"Message": "Duplicate Document Number Error", "code": "6140"}], "type": fault_type},
            "time": "2026-03-02T04:00:00.000-08:00"}
    err = _c(200, json.dumps(body).encode(), system="qbo")
    assert type(err) is cls and err.code == code and err.details["status"] == 200  # type: ignore[union-attr]
    assert "6140" in err.details["vendor_codes"]  # type: ignore[union-attr]


def test_qbo_stale_object_is_a_conflict() -> None:
    body = {"Fault": {"Error": [{"Message": "Stale Object Error", "code": "5010"}], "type": "ValidationFault"}}
    err = _c(400, body, system="qbo")
    assert isinstance(err, RecordValidationError)  # a 400 stays validation (status rules first)
    err = _c(200, body, system="qbo")
    assert isinstance(err, ConflictError) and err.code == "LB-C003"


def test_errors_list_and_success_false_in_2xx_are_errors() -> None:
    err = _c(200, {"errors": [{"message": "bad"}]})
    assert isinstance(err, PermanentError) and err.code == "LB-P006"
    err = _c(200, b'{"success": false, "message": "not saved"}')
    assert isinstance(err, PermanentError) and err.code == "LB-P006"


def test_body_error_detector_sees_parsed_2xx_bodies_only() -> None:
    xero = {"Invoices": [
        {"InvoiceNumber": "INV-1", "StatusAttributeString": "OK"},
        {"InvoiceNumber": "INV-2", "StatusAttributeString": "ERROR",
         "ValidationErrors": [{"Message": "Account code '999' is not a valid code"}]},
    ]}
    seen: list[object] = []

    def detector(body: object) -> LedgerbridgeError | None:
        seen.append(body)
        bad = [i["InvoiceNumber"] for i in body["Invoices"] if i.get("ValidationErrors")]  # type: ignore[index]
        if not bad:
            return None
        return RecordValidationError(f"elements refused: {bad}", code="LB-V004", details={"items": bad})

    err = _c(200, json.dumps(xero), system="xero", body_error_detector=detector)
    assert isinstance(err, RecordValidationError) and err.details == {"items": ["INV-2"], "system": "xero",
                                                                        "status": 200}
    assert seen == [xero]
    assert _c(500, json.dumps(xero), body_error_detector=detector).code == "LB-T004"  # type: ignore[union-attr]
    assert len(seen) == 1, "the detector is not consulted for non-2xx answers"


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=100, max_value=599), st.binary(max_size=64))
def test_classify_http_never_crashes_and_none_only_for_2xx_or_304(status: int, body: bytes) -> None:
    err = classify_http(status, {"Retry-After": "x"}, body, system="fuzz")
    if err is None:
        assert 200 <= status < 300 or status == 304
    else:
        assert err.code in CODES and err.kind == CODES[err.code][0]


# ----------------------------------------------------------------------------------------------- classify_exception


def test_real_connection_refused_is_transient() -> None:
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as info:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    err = classify_exception(info.value, system="psa")
    assert isinstance(err, TransientError) and err.code == "LB-T003" and err.details["exception"] == "ConnectError"


def test_real_read_timeout_is_transient() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        with pytest.raises(httpx.ReadTimeout) as info:
            httpx.get(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=0.2)
        err = classify_exception(info.value, system="erp")
        assert isinstance(err, TransientError) and err.code == "LB-T002"
    finally:
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()


def test_http_status_error_domain_error_builtins_and_unknown() -> None:
    request = httpx.Request("POST", "https://erp.example/invoices")
    response = httpx.Response(429, headers={"Retry-After": "2"}, request=request)
    err = classify_exception(httpx.HTTPStatusError("x", request=request, response=response), system="erp")
    assert isinstance(err, RateLimitedError) and err.retry_after == 2.0
    dom = DomainError("time_entry psa:TE-1@2", "rates.missing_cost_rate", "no cost rate", "add a rate card")
    verr = classify_exception(dom)
    assert isinstance(verr, RecordValidationError) and verr.code == "LB-V005"
    assert verr.details == {"item": "time_entry psa:TE-1@2", "rule": "rates.missing_cost_rate",
                            "fix": "add a rate card"}
    assert classify_exception(TimeoutError("t")).code == "LB-T002"  # type: ignore[union-attr]
    assert classify_exception(ConnectionResetError("r")).code == "LB-T003"  # type: ignore[union-attr]
    assert classify_exception(httpx.DecodingError("bad gzip")).code == "LB-T003"  # type: ignore[union-attr]
    assert classify_exception(httpx.TooManyRedirects("loop")).code == "LB-P007"  # type: ignore[union-attr]
    same = ConflictError("c")
    assert classify_exception(same) is same
    assert classify_exception(KeyError("bug")) is None
