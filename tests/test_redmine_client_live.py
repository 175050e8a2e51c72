"""Redmine REST client against a real Redmine: paging over >100 entries with ties, pages shifting while we read,
retries by error kind (faults injected in front of the real server), errors classified by the taxonomy."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ledgerbridge.connectors.redmine import RedmineClient, RedmineSource
from ledgerbridge.errors import PermanentError, RecordValidationError, TransientError
from ledgerbridge.testing.redmine_server import RedmineSettings
from ledgerbridge.testing.redmine_server import redmine_server as redmine_server

TIE_DAY = dt.date(2025, 3, 14)


@pytest.fixture(scope="module")
def tied(redmine_server: RedmineSettings) -> Iterator[tuple[dict[str, Any], list[int]]]:
    """A project with 110 entries on one day, created back to back (many share created_on to the second)."""
    api = redmine_server.client()
    ident = f"p{uuid.uuid4().hex[:10]}"
    project = api.create_project(ident, ident)
    ids = [api.create_time_entry({"project_id": project["id"], "hours": str(Decimal("0.25") * (i % 8 + 1)),
                                  "spent_on": TIE_DAY.isoformat()})["id"] for i in range(110)]
    yield project, ids
    api.close()


def test_paging_over_ties_is_complete(redmine_server: RedmineSettings, tied: Any) -> None:
    project, ids = tied
    with redmine_server.client() as api:
        rows = api.list_all("/time_entries.json", "time_entries",
                            {"project_id": project["id"], "spent_on": TIE_DAY.isoformat(), "sort": "created_on"})
        assert api.requests == 2  # 100 + 10
    got = [r["id"] for r in rows]
    assert len(got) == len(set(got)) == 110
    assert set(got) == set(ids)
    created = [r["created_on"] for r in rows]
    assert len(set(created)) < len(created)  # there were ties on created_on
    assert {r["hours"] for r in rows} <= {Decimal("0.25") * k for k in range(1, 9)}  # exact decimals


def test_full_sync_counts_match_total_count(redmine_server: RedmineSettings, tied: Any) -> None:
    _, ids = tied
    with redmine_server.client() as api:
        total = api.get("/time_entries.json", {"limit": 1})["total_count"]
    source = RedmineSource.from_options("psa_rm", redmine_server.options(), redmine_server.api_key)
    result = source.sync(None)
    assert result.stats["listed"] == total == len(result.events)
    assert set(map(str, ids)) <= {e.entry.id for e in result.events}
    source.close()


class _InsertBetweenPages(httpx.HTTPTransport):
    """Creates a real entry on the server right after the first page is served (a user working while we page)."""

    def __init__(self, settings: RedmineSettings, project_id: int) -> None:
        super().__init__()
        self.settings, self.project_id, self.inserted = settings, project_id, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "GET" and request.url.path == "/time_entries.json" and self.inserted < 1:
            response.read()
            self.inserted += 1
            with self.settings.client() as other:
                other.create_time_entry({"project_id": self.project_id, "hours": "1",
                                         "spent_on": TIE_DAY.isoformat()})
        return response


def test_pages_shifting_while_reading_are_read_again(redmine_server: RedmineSettings, tied: Any) -> None:
    project, ids = tied
    transport = _InsertBetweenPages(redmine_server, project["id"])
    with RedmineClient(redmine_server.url, redmine_server.api_key, transport=transport) as api:
        rows = api.time_entries(TIE_DAY.isoformat(), TIE_DAY.isoformat())
        assert api.requests >= 4  # 2 pages saw total_count 110 then 111: the list was read again
    assert len({r["id"] for r in rows}) == len(rows) >= 111
    assert set(ids) < {r["id"] for r in rows}


class _Faults(httpx.HTTPTransport):
    """Answers the first ``n`` requests with ``status`` (and headers) instead of forwarding them."""

    def __init__(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.n, self.status, self.headers, self.seen = n, status, headers or {}, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen <= self.n:
            return httpx.Response(self.status, headers=self.headers, content=b"injected", request=request)
        return super().handle_request(request)


def test_transient_errors_are_retried(redmine_server: RedmineSettings) -> None:
    waits: list[float] = []
    with RedmineClient(redmine_server.url, redmine_server.api_key, transport=_Faults(2, 503),
                       sleep=waits.append, backoff_seconds=0.1) as api:
        assert "projects" in api.get("/projects.json")
        assert api.requests == 3
    assert waits == [0.1, 0.2]


def test_rate_limit_waits_as_told(redmine_server: RedmineSettings) -> None:
    waits: list[float] = []
    with RedmineClient(redmine_server.url, redmine_server.api_key, transport=_Faults(1, 429, {"Retry-After": "7"}),
                       sleep=waits.append) as api:
        api.get("/projects.json")
    assert waits == [7.0]


def test_transient_errors_give_up_after_max_attempts(redmine_server: RedmineSettings) -> None:
    with RedmineClient(redmine_server.url, redmine_server.api_key, transport=_Faults(10, 502),
                       sleep=lambda s: None, max_attempts=3) as api:
        with pytest.raises(TransientError) as exc:
            api.get("/projects.json")
        assert api.requests == 3 and exc.value.code == "LB-T004"


def test_validation_and_permanent_errors_are_not_retried(redmine_server: RedmineSettings, tied: Any) -> None:
    project, _ = tied
    with redmine_server.client(sleep=lambda s: None) as api:
        with pytest.raises(RecordValidationError) as bad:
            api.create_time_entry({"project_id": project["id"], "hours": "1", "spent_on": "2025-01-01",
                                   "activity_id": 999999})
        assert api.requests == 1
        assert bad.value.code == "LB-V003" and "Activity" in bad.value.message
    with RedmineClient(redmine_server.url, "not-a-key", sleep=lambda s: None) as anon:
        with pytest.raises(PermanentError) as denied:
            anon.get("/time_entries.json")
        assert denied.value.code == "LB-P002" and anon.requests == 1


def test_connection_refused_is_transient() -> None:
    from ledgerbridge.testing.redmine_server import free_port

    with RedmineClient(f"http://127.0.0.1:{free_port()}", "k", sleep=lambda s: None, max_attempts=2) as api:
        with pytest.raises(TransientError) as exc:
            api.get("/projects.json")
        assert exc.value.code == "LB-T003" and api.requests == 2


def test_resources_include_locked_users(redmine_server: RedmineSettings) -> None:
    with redmine_server.client() as api:
        login = f"u{uuid.uuid4().hex[:8]}"
        user = api.create_user(login, "Ada", "Lovelace", f"{login}@example.com", "s3cret-pass-word")
        api.request("PUT", f"/users/{user['id']}.json", body={"user": {"status": 3}})  # lock
    source = RedmineSource.from_options("psa_rm", redmine_server.options(resources={"role": "engineer"}),
                                        redmine_server.api_key)
    by_id = {r.id: r for r in source.resources()}
    assert by_id[str(user["id"])].name == "Ada Lovelace"
    assert by_id[str(user["id"])].active is False and by_id[str(user["id"])].role == "engineer"
    assert by_id["1"].active is True
    source.close()
