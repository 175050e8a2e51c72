"""JSON-RPC client of a Tryton server (8.x): the only place the Tryton connector does I/O.

Protocol (see ``docs/connectors/tryton.md``):

- ``POST <url>/<database>/rpc/`` with ``{"id", "method", "params"}``; login is ``common.db.login`` and every later
  call carries ``Authorization: Session base64("<user>:<uid>:<token>")``.
- Typed values travel tagged: ``{"__class__": "Decimal", "decimal": "1.00"}``, ``date``, ``datetime``, ``time``,
  ``timedelta``, ``bytes``. Money is encoded and decoded as :class:`~decimal.Decimal`, never as a float.
- Model calls take the user's context (``res.user.get_preferences``) as their last parameter.
- Replies may be gzip-compressed even unasked; httpx decodes them (``Accept-Encoding: gzip`` is sent).
- Errors: ``{"error": ["UserError", [message, description, domain]]}`` (a record refused),
  ``["UserWarning", [name, message, description]]`` (needs an explicit skip), ``["ConcurrencyException", ...]``,
  or ``[str(exception), traceback]`` for server bugs. Authentication problems are HTTP 401/403/429 HTML pages.

Every failure leaves as a :class:`~ledgerbridge.errors.LedgerbridgeError`: a Tryton ``UserError`` becomes a
:class:`RecordValidationError` carrying Tryton's own message (closed-period refusals carry
``details["rule"] == "tryton.period_closed"``); 401 triggers one re-login and a retry (an idle session expires);
403/429 and other statuses go through :func:`ledgerbridge.errors.classify_http`; transport errors are transient.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from ledgerbridge.errors import (
    ConflictError,
    LedgerbridgeError,
    PermanentError,
    RecordValidationError,
    TransientError,
    classify_exception,
    classify_http,
)

SYSTEM = "tryton"
DEFAULT_BATCH = 150  # records per create/write call (100-200 is the measured sweet spot)
T = TypeVar("T")

# Tryton messages that mean "the period (or its journal-period) is closed": refused at create/write time.
# The second form is what Tryton 8.2 answers when a move names a period that is no longer open (the period field's
# domain requires state "open").
_CLOSED_PERIOD = re.compile(
    r"(closed period|closed journal-period|period .* is closed|in closed|closed fiscal ?year"
    r'|for field "Period" .* is not valid according to its domain)', re.IGNORECASE
)


# --------------------------------------------------------------------------------------------------- encoding


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    if isinstance(obj, dt.datetime):  # before date: datetime is a date subclass
        return {"__class__": "datetime", "year": obj.year, "month": obj.month, "day": obj.day, "hour": obj.hour,
                "minute": obj.minute, "second": obj.second, "microsecond": obj.microsecond}
    if isinstance(obj, dt.date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    if isinstance(obj, dt.time):
        return {"__class__": "time", "hour": obj.hour, "minute": obj.minute, "second": obj.second,
                "microsecond": obj.microsecond}
    if isinstance(obj, dt.timedelta):
        return {"__class__": "timedelta", "seconds": obj.total_seconds()}
    if isinstance(obj, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot send {type(obj).__name__} to Tryton: {obj!r}")


def _hook(dct: dict[str, Any]) -> Any:
    cls = dct.get("__class__")
    if cls is None:
        return dct
    if cls == "Decimal":
        return Decimal(str(dct["decimal"]))
    if cls == "date":
        return dt.date(dct["year"], dct["month"], dct["day"])
    if cls == "datetime":
        return dt.datetime(dct["year"], dct["month"], dct["day"], dct["hour"], dct["minute"], dct["second"],
                           dct["microsecond"])
    if cls == "time":
        return dt.time(dct["hour"], dct["minute"], dct["second"], dct["microsecond"])
    if cls == "timedelta":
        return dt.timedelta(seconds=float(dct["seconds"]))
    if cls == "bytes":
        return base64.b64decode(dct["base64"])
    return dct


def encode(payload: Any) -> bytes:
    """JSON bytes of a request with Tryton's tagged types (Decimal stays exact text)."""
    return json.dumps(payload, default=_default, separators=(",", ":")).encode("utf-8")


def decode(data: bytes | str) -> Any:
    """Parse a Tryton JSON reply; floats are parsed as Decimal so no amount ever passes through a float."""
    return json.loads(data, object_hook=_hook, parse_float=Decimal)


# --------------------------------------------------------------------------------------------------- errors


class TrytonUserWarning(Exception):
    """A Tryton ``UserWarning``: the call is refused until the warning ``name`` is skipped for this user."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def rpc_error(method: str, error: Any) -> LedgerbridgeError | TrytonUserWarning:
    """Map the ``error`` member of a JSON-RPC reply to the taxonomy (a UserWarning is returned as-is)."""
    kind = error[0] if isinstance(error, list | tuple) and error else error
    args = error[1] if isinstance(error, list | tuple) and len(error) > 1 else None
    details: dict[str, Any] = {"system": SYSTEM, "method": method, "tryton_error": str(kind)}
    if kind == "UserWarning" and isinstance(args, list | tuple) and args:
        return TrytonUserWarning(str(args[0]), str(args[1]) if len(args) > 1 else "")
    if kind == "UserError" and isinstance(args, list | tuple):
        message = str(args[0]) if args else "refused"
        description = str(args[1]) if len(args) > 1 and args[1] else ""
        details["tryton_message"] = message
        if description:
            details["tryton_description"] = description
        text = f"{message} ({description})" if description else message
        if _CLOSED_PERIOD.search(text):
            details["rule"] = "tryton.period_closed"
            return RecordValidationError(
                f"{SYSTEM}: {method} refused: {text} — the Tryton period is closed: post into an open period "
                "(next_open_period policy) or have the accountant reopen it", code="LB-V006", details=details)
        details["rule"] = "tryton.user_error"
        return RecordValidationError(f"{SYSTEM}: {method} refused: {text} — fix the record and replay",
                                     code="LB-V001", details=details)
    if kind == "ConcurrencyException":
        return ConflictError(f"{SYSTEM}: {method}: record changed concurrently ({args}) — re-read and retry",
                             code="LB-C003", details=details)
    if isinstance(kind, str) and kind.startswith("'") and kind.endswith("'"):
        # KeyError-like: an unknown model, field or method name (a mapping/version bug on our side)
        return PermanentError(f"{SYSTEM}: {method}: Tryton does not know {kind} — check the model/field names "
                              "against the installed Tryton version and modules", code="LB-P005", details=details)
    tb = str(args)[-600:] if args else ""
    details["traceback_tail"] = tb
    return PermanentError(f"{SYSTEM}: {method} failed on the server: {kind}", code="LB-P001", details=details)


# --------------------------------------------------------------------------------------------------- client


@dataclass(slots=True)
class CallStats:
    """Counters for benchmarks and tests."""

    calls: int = 0
    logins: int = 0
    relogins: int = 0
    warnings_skipped: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    seconds_by_method: dict[str, float] = field(default_factory=dict)


class TrytonClient:
    """A logged-in JSON-RPC session with one Tryton database.

    ``url`` is the server root (``http://127.0.0.1:8000``). The password is only held to log in again when the
    session expires (HTTP 401). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, url: str, database: str, user: str, password: str, *, language: str = "en",
                 timeout: float = 120.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.user = user
        self._password = password
        self.language = language
        self.endpoint = f"{self.url}/{database}/rpc/"
        self._http = httpx.Client(timeout=timeout, transport=transport,
                                  headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"})
        self._ids = itertools.count(1)
        self._session: str | None = None
        self.uid: int | None = None
        self._context: dict[str, Any] | None = None
        self.stats = CallStats()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> TrytonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, method: str, params: Sequence[Any], *, auth: bool) -> httpx.Response:
        headers = {}
        if auth:
            if self._session is None:
                self.login()
            headers["Authorization"] = f"Session {self._session}"
        body = encode({"id": next(self._ids), "method": method, "params": list(params)})
        self.stats.calls += 1
        self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
        started = time.perf_counter()
        try:
            return self._http.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            err = classify_exception(exc, system=SYSTEM)
            if err is None:  # pragma: no cover - classify_exception handles every httpx.HTTPError
                raise
            err.details.setdefault("method", method)
            raise err from exc
        finally:
            spent = time.perf_counter() - started
            self.stats.seconds_by_method[method] = self.stats.seconds_by_method.get(method, 0.0) + spent

    def _reply(self, method: str, resp: httpx.Response) -> Any:
        if resp.status_code != 200:
            err = classify_http(resp.status_code, resp.headers, resp.content, system=SYSTEM)
            if err is None:  # pragma: no cover - a non-200 2xx from Tryton
                err = PermanentError(f"{SYSTEM}: {method}: unexpected HTTP {resp.status_code}", code="LB-P007")
            err.details.setdefault("method", method)
            raise err
        try:
            data = decode(resp.content)
        except ValueError as exc:
            raise TransientError(f"{SYSTEM}: {method}: reply is not JSON ({resp.content[:200]!r})", code="LB-T001",
                                 details={"system": SYSTEM, "method": method}) from exc
        if isinstance(data, Mapping) and data.get("error") is not None:
            raise rpc_error(method, data["error"])
        if not isinstance(data, Mapping) or "result" not in data:
            raise PermanentError(f"{SYSTEM}: {method}: reply has neither result nor error: {str(data)[:200]}",
                                 code="LB-P006", details={"system": SYSTEM, "method": method})
        return data["result"]

    # ------------------------------------------------------------------ session

    def login(self) -> int:
        """``common.db.login``; stores the session token. Wrong credentials -> PermanentError (no retry: five
        failed logins make Tryton rate-limit the address)."""
        resp = self._post("common.db.login", [self.user, {"password": self._password}, self.language], auth=False)
        try:
            result = self._reply("common.db.login", resp)
        except RecordValidationError as exc:  # LoginException surfaces as a UserError-like reply
            raise PermanentError(f"{SYSTEM}: login of {self.user!r} to database {self.database!r} refused: "
                                 f"{exc.message} — check the user and password secret", code="LB-P002",
                                 details=exc.details) from exc
        if not isinstance(result, list) or len(result) < 2 or not result[0]:
            raise PermanentError(f"{SYSTEM}: login of {self.user!r} to database {self.database!r} refused — check "
                                 "the user and the password secret", code="LB-P002",
                                 details={"system": SYSTEM, "database": self.database})
        self.uid = int(result[0])
        token = str(result[1])
        self._session = base64.b64encode(f"{self.user}:{self.uid}:{token}".encode()).decode("ascii")
        self.stats.logins += 1
        return self.uid

    @property
    def session_header(self) -> str | None:
        """The current ``Authorization`` value (tests use it to end the session server-side)."""
        return None if self._session is None else f"Session {self._session}"

    def call(self, method: str, *params: Any) -> Any:
        """One authenticated JSON-RPC call; on HTTP 401 (session expired or deleted) log in once more and retry."""
        resp = self._post(method, params, auth=True)
        if resp.status_code == 401:
            self._session = None
            self.stats.relogins += 1
            resp = self._post(method, params, auth=True)
        return self._reply(method, resp)

    @property
    def context(self) -> dict[str, Any]:
        """The user's context (company, language, ...) from ``res.user.get_preferences``; fetched once."""
        if self._context is None:
            prefs = self.call("model.res.user.get_preferences", True, {})
            self._context = dict(prefs) if isinstance(prefs, Mapping) else {}
        return self._context

    def refresh_context(self) -> dict[str, Any]:
        self._context = None
        return self.context

    # ------------------------------------------------------------------ model helpers

    def model(self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*args, context)``."""
        ctx = dict(self.context)
        if context:
            ctx.update(context)
        return self.call(f"model.{model}.{method}", *args, ctx)

    def skipping_warnings(self, fn: Callable[[], T], *, max_skips: int = 5) -> T:
        """Run ``fn``; when Tryton raises a UserWarning, skip that warning for this user
        (``res.user.warning.skip(name, False)``: the ``_skip_warnings`` context key is stripped over RPC) and
        run ``fn`` again. Raises PermanentError when warnings keep coming."""
        for _ in range(max_skips + 1):
            try:
                return fn()
            except TrytonUserWarning as warn:
                self.model("res.user.warning", "skip", warn.name, False)
                self.stats.warnings_skipped += 1
                last = warn
        raise PermanentError(f"{SYSTEM}: still warned after skipping {max_skips} warnings (last: {last.message})",
                             code="LB-P001", details={"system": SYSTEM, "warning": last.name})

    def search(self, model: str, domain: Sequence[Any], *, offset: int = 0, limit: int | None = None,
               order: Sequence[tuple[str, str]] | None = None) -> list[int]:
        return list(self.model(model, "search", list(domain), offset, limit, _order(order)))

    def search_read(self, model: str, domain: Sequence[Any], fields: Sequence[str], *, offset: int = 0,
                    limit: int | None = None, order: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        return list(self.model(model, "search_read", list(domain), offset, limit, _order(order), list(fields)))

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk in chunks(list(ids), 1000):
            out += self.model(model, "read", chunk, list(fields))
        return out

    def create(self, model: str, values: Sequence[Mapping[str, Any]], *, batch: int = DEFAULT_BATCH) -> list[int]:
        """Create records in calls of ``batch`` records; returns ids in input order."""
        ids: list[int] = []
        for chunk in chunks([dict(v) for v in values], batch):
            ids += [int(i) for i in self.model(model, "create", chunk)]
        return ids

    def write(self, model: str, ids: Sequence[int], values: Mapping[str, Any]) -> None:
        if ids:
            self.model(model, "write", list(ids), dict(values))

    def button(self, model: str, name: str, ids: Sequence[int], *, batch: int = 1000) -> None:
        """A model button/class method taking a list of ids (``post``, ``create_period``, ``close``...)."""
        for chunk in chunks(list(ids), batch):
            self.model(model, name, chunk)

    def run_wizard(self, name: str, steps: Sequence[tuple[str, Mapping[str, Any]]],
                   start_state: str = "start") -> list[Any]:
        """Drive a wizard: ``create`` -> ``execute(session, data, state)`` per step -> ``delete``.

        Each step is ``(state_to_execute, data)`` where data maps a form state name to its values."""
        session_id, _, _ = self.call(f"wizard.{name}.create", self.context)
        answers = []
        try:
            answers.append(self.call(f"wizard.{name}.execute", session_id, {}, start_state, self.context))
            for state, data in steps:
                answers.append(self.call(f"wizard.{name}.execute", session_id, dict(data), state, self.context))
        finally:
            self.call(f"wizard.{name}.delete", session_id, self.context)
        return answers


def _order(order: Sequence[tuple[str, str]] | None) -> list[list[str]] | None:
    return None if order is None else [[f, d] for f, d in order]


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])
