"""Helpers for the Jira + Tempo tests: both sandboxes on real loopback HTTP with one settable clock, a source built
from configuration options, and a transport that checks every Jira request and answer against Atlassian's published
OpenAPI description (loaded once per process)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ledgerbridge.connectors.jira_tempo import JiraTempoSource
from ledgerbridge.testing.sandbox import serve_in_thread
from ledgerbridge.testing.sandboxes import jira as jira_sandbox
from ledgerbridge.testing.sandboxes import tempo as tempo_sandbox

SPEC = Path(__file__).parent / "specs" / "jira" / "platform-swagger.v3.json"
SPEC_SERVER = "https://your-domain.atlassian.net"  # the spec's server; sandbox URLs are presented as it
EMAIL, TOKEN, TEMPO_TOKEN = "ada@example.com", "jira-api-token", "tempo-api-token"


class Clock:
    """Epoch seconds, moved by the test (shared by both sandboxes and the connector)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(start if start is not None else time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------------------------------- OpenAPI


_JIRA_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})$")


def jira_date_time(value: Any) -> bool:
    """``format: date-time`` as Jira writes it: RFC 3339, or with the offset without a colon (``+0000``) — the
    form of the spec's own examples (``2021-01-17T12:34:00.000+0000``) and of Jira's answers."""
    if not isinstance(value, str) or not _JIRA_DATE_TIME.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def jira_openapi() -> Any:
    """Atlassian's Jira Cloud platform REST v3 OpenAPI description (1.7 MB), parsed once per process (the spec
    itself is not re-validated: that alone costs ~3 s)."""
    from openapi_core import Config, OpenAPI

    return OpenAPI.from_file_path(str(SPEC), config=Config(
        spec_validator_cls=None, extra_format_validators={"date-time": jira_date_time}))


class _OpenApiRequest:
    def __init__(self, request: httpx.Request) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        url = urlsplit(str(request.url))
        path = url.path
        if path.startswith("/ex/jira/"):  # OAuth (api.atlassian.com/ex/jira/<cloudId>) -> the site's path
            path = "/" + path.split("/", 4)[4]
        self.path, self.method = path, request.method.lower()
        self.host_url = SPEC_SERVER
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(query=ImmutableMultiDict(parse_qs(url.query)),
                                            header=Headers(dict(request.headers)), cookie=ImmutableMultiDict())


class _OpenApiResponse:
    def __init__(self, status: int, headers: httpx.Headers, content: bytes) -> None:
        self.status_code, self.data = status, content
        self.headers = dict(headers)
        self.content_type = headers.get("content-type", "")


def check_exchange(request: httpx.Request, status: int, headers: httpx.Headers, content: bytes) -> None:
    """Validate one Jira request and its answer against the spec; raise the spec's error on a mismatch."""
    spec = jira_openapi()
    req = _OpenApiRequest(request)
    with warnings.catch_warnings():  # openapi-core has no OAuth2 security provider (it checks basic auth only)
        warnings.filterwarnings("ignore", "Unsupported scheme type")
        spec.validate_request(req)
    spec.validate_response(req, _OpenApiResponse(status, headers, content))


def explain(exc: BaseException) -> str:
    """The validation error with its cause and the schema errors (openapi-core's own repr is empty)."""
    cause = exc.__cause__
    errors = getattr(cause, "schema_errors", None) or ()
    return f"{exc!r} {cause!s}"[:300] + "".join(f" | {e.message}" for e in errors)


class ValidatingTransport(httpx.BaseTransport):
    """Real HTTP; every exchange with ``jira_base`` (except OAuth token endpoints, not in the platform spec) is
    checked against the OpenAPI description. Mismatches fail the call (``AssertionError``) and are kept."""

    def __init__(self, jira_base: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.jira_base = jira_base
        self.checked: list[str] = []
        self.failures: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        path = request.url.path
        if str(request.url).startswith(self.jira_base) and not path.startswith("/oauth/") \
                and response.status_code != 429:
            try:
                check_exchange(request, response.status_code, response.headers, content)
            except Exception as exc:
                self.failures.append(f"{request.method} {path} -> {response.status_code}: {explain(exc)}")
                raise AssertionError(self.failures[-1]) from exc
            self.checked.append(f"{request.method} {path} {response.status_code}")
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              request=request)

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------------------------------- environment


@dataclass
class Env:
    clock: Clock
    jira_app: Any
    tempo_app: Any
    jira_url: str
    tempo_url: str
    transport: ValidatingTransport
    sleeps: list[float] = field(default_factory=list)

    @property
    def jira(self) -> jira_sandbox.JiraStore:
        return self.jira_app.state.store

    @property
    def tempo(self) -> tempo_sandbox.TempoStore:
        return self.tempo_app.state.store

    def options(self, *, with_tempo: bool = True, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {"url": self.jira_url, "email": EMAIL}
        if with_tempo:
            opts["tempo"] = {"url": self.tempo_url}
        opts.update(extra)
        return opts

    def source(self, *, secrets: dict[str, str] | None = None, **options: Any) -> JiraTempoSource:
        keys = {"api_token": TOKEN, "tempo_token": TEMPO_TOKEN, **(secrets or {})}

        def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            time.sleep(seconds)

        return JiraTempoSource.from_options("psa_jira", self.options(**options), keys.get,
                                            transport=self.transport, clock=self.clock, sleep=sleep)

    def log(self, issue: str, account: str, day: dt.date, seconds: int, *, billable: bool = True,
            attributes: dict[str, str] | None = None, comment: str = "work") -> str:
        """A worklog as Tempo writes it: the Jira worklog and Tempo's record of it."""
        wid = self.jira.add_worklog(issue, account, day.isoformat(), seconds, comment)
        self.tempo.add_worklog(wid, issue, account, day.isoformat(), seconds,
                               billable_seconds=seconds if billable else 0, attributes=attributes)
        return wid


@contextlib.contextmanager
def environment(*, jira: dict[str, Any] | None = None, tempo: dict[str, Any] | None = None,
                start: float | None = None) -> Iterator[Env]:
    clock = Clock(start)
    japp = jira_sandbox.create_app(**(jira or {}))
    tapp = tempo_sandbox.create_app(**(tempo or {}))
    japp.state.store.clock = clock
    tapp.state.store.clock = clock
    with serve_in_thread(japp) as jurl, serve_in_thread(tapp) as turl:
        transport = ValidatingTransport(jurl)
        yield Env(clock, japp, tapp, jurl, turl, transport)
        assert not transport.failures, transport.failures


def seed_basics(env: Env, *, users: int = 2) -> dict[str, Any]:
    pid = env.jira.add_project("ACME", "Acme rollout")
    issues = [env.jira.add_issue(pid, summary=f"Task {i}") for i in range(3)]
    accounts = [env.jira.add_user(f"557058:{i:04d}", f"User {i}") for i in range(users)]
    env.jira.add_user("557058:app", "Automation", account_type="app")
    return {"project": pid, "issues": issues, "accounts": accounts}


def ids(result: Any) -> list[str]:
    return [e.entry.id for e in result.events]


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
