"""The Jira sandbox and the connector against Atlassian's published Jira Cloud platform REST v3 OpenAPI description
(tests/specs/jira/platform-swagger.v3.json, loaded once per process): every request the connector sends
and every answer the sandbox gives is validated with openapi-core (``jira_tempo_support.ValidatingTransport``), and
a drifted shape is caught, so the validation cannot pass silently."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import httpx
import pytest
from openapi_core.validation.response.exceptions import InvalidData

from jira_tempo_support import check_exchange, environment, seed_basics
from ledgerbridge.connectors.base import InvoiceStatusUpdate

JSON = httpx.Headers({"content-type": "application/json"})


def _sync_everything(env) -> None:
    b = seed_basics(env)
    day = dt.datetime.fromtimestamp(env.clock(), dt.UTC).date() - dt.timedelta(days=1)
    w = [env.log(b["issues"][i % 3], b["accounts"][i % 2], day, 1800 * (i + 1), comment=f"c{i}") for i in range(4)]
    env.clock.advance(120)
    src = env.source()
    first = src.sync(None)
    assert len(first.events) == 4
    src.projects()
    src.resources()
    update = InvoiceStatusUpdate(key="K1", project_id=b["project"], legal_entity_id="US01", invoice_date=day,
                                 currency="USD", total=Decimal("1.00"), erp_system="erp", erp_number="INV-1",
                                 status="posted", items=tuple(("psa_jira", "time_entry", i) for i in w[:2]))
    assert src.write_invoice_status([update]) == 1
    assert src.invoice_refs(w[:3], one_by_one=True) == {w[0]: {"invoice": "INV-1", "status": "posted"},
                                                        w[1]: {"invoice": "INV-1", "status": "posted"},
                                                        w[2]: None}  # 404 for an unset property: in the spec too
    env.jira.delete_worklog(w[3])
    env.clock.advance(120)
    assert [e.kind for e in src.sync(first.cursor).events] == ["deleted"]


def test_every_jira_exchange_matches_the_published_openapi() -> None:
    with environment() as env:
        _sync_everything(env)
        checked = {c.rsplit(" ", 1)[0] for c in env.transport.checked}
        statuses = {c.rsplit(" ", 1)[1] for c in env.transport.checked}
        assert not env.transport.failures
    ops = {"GET /rest/api/3/worklog/updated", "GET /rest/api/3/worklog/deleted", "POST /rest/api/3/worklog/list",
           "GET /rest/api/3/project/search", "GET /rest/api/3/users/search"}
    assert ops <= checked
    assert any(c.startswith("GET /rest/api/3/issue/") and "/worklog/" not in c for c in checked)
    assert any(c.startswith("PUT /rest/api/3/issue/") and "/properties/" in c for c in checked)
    assert any(c.startswith("GET /rest/api/3/issue/") and "/properties/" in c for c in checked)
    assert {"200", "201", "404"} <= statuses


def test_a_drifted_answer_shape_is_caught_end_to_end() -> None:
    with environment(jira={"fault_feed_shape": True}) as env:
        b = seed_basics(env)
        env.log(b["issues"][0], b["accounts"][0], dt.date(2026, 11, 2), 3600)
        env.clock.advance(120)
        with pytest.raises(AssertionError, match="worklog/updated"):
            env.source().sync(None)
        assert len(env.transport.failures) == 1 and "is not of type 'integer'" in env.transport.failures[0]
        env.transport.failures.clear()  # expected here; the environment fails a test on any other


def _exchange(env, method: str, path: str, **kw):
    request = httpx.Request(method, env.jira_url + path, headers={"Authorization": "Basic eDp5"}, **kw)
    response = httpx.Client(transport=env.transport.inner).send(
        httpx.Request(method, env.jira_url + path, headers={"Authorization": env.source().jira.auth.header()},
                      **kw))
    return request, response


def test_wrong_shapes_are_refused_by_the_spec() -> None:
    with environment() as env:
        b = seed_basics(env)
        wid = env.log(b["issues"][0], b["accounts"][0], dt.date(2026, 11, 2), 3600)
        env.clock.advance(120)
        req, resp = _exchange(env, "GET", "/rest/api/3/worklog/updated?since=0")
        check_exchange(req, resp.status_code, resp.headers, resp.content)  # the real answer passes
        good = resp.json()
        bad_type = {**good, "values": [{**good["values"][0], "updatedTime": "yesterday"}]}
        extra = {**good, "cursor": "abc"}  # ChangedWorklogs has additionalProperties: false
        for body in (bad_type, extra, {**good, "lastPage": "yes"}):
            with pytest.raises(InvalidData):
                check_exchange(req, 200, JSON, json.dumps(body).encode())
        req, resp = _exchange(env, "POST", "/rest/api/3/worklog/list", json={"ids": [int(wid)]})
        check_exchange(req, resp.status_code, resp.headers, resp.content)
        with pytest.raises(InvalidData):  # an object where the spec says array
            check_exchange(req, 200, JSON, json.dumps({"worklogs": resp.json()}).encode())
        with pytest.raises(InvalidData):  # a date the spec's format refuses
            check_exchange(req, 200, JSON, json.dumps([{**resp.json()[0], "started": "2/11/2026"}]).encode())
        bad_req = httpx.Request("POST", env.jira_url + "/rest/api/3/worklog/list", json={"ids": ["x"]},
                                headers={"Authorization": "Basic eDp5"})
        with pytest.raises(Exception, match="'x' is not of type 'integer'"):  # ids must be integers
            check_exchange(bad_req, 200, JSON, b"[]")


def test_sandbox_worklog_writes_match_the_spec_and_reach_the_feeds() -> None:
    with environment() as env:
        b = seed_basics(env)
        src = env.source(with_tempo=False)
        api = httpx.Client(base_url=env.jira_url, transport=env.transport,
                           headers={"Authorization": src.jira.auth.header()})
        issue = b["issues"][0]
        comment = {"type": "doc", "version": 1,
                   "content": [{"type": "paragraph", "content": [{"type": "text", "text": "pairing"}]}]}
        made = api.post(f"/rest/api/3/issue/{issue}/worklog",
                        json={"started": "2026-11-02T09:00:00.000+0100", "timeSpentSeconds": 5400,
                              "comment": comment})
        assert made.status_code == 201
        wid = made.json()["id"]
        env.clock.advance(120)
        first = src.sync(None)
        entry = first.events[0].entry
        assert (entry.id, entry.hours, entry.work_date, entry.description) == (
            wid, Decimal("1.5000"), dt.date(2026, 11, 2), "pairing")
        assert entry.resource_id == "557058:ada@example.com"  # written as the caller
        assert api.put(f"/rest/api/3/issue/{issue}/worklog/{wid}", json={"timeSpentSeconds": 3600}).status_code == 200
        env.clock.advance(120)
        second = src.sync(first.cursor)
        assert [e.entry.hours for e in second.events] == [Decimal("1.0000")]
        assert api.delete(f"/rest/api/3/issue/{issue}/worklog/{wid}").status_code == 204
        env.clock.advance(120)
        assert [(e.kind, e.entry.id) for e in src.sync(second.cursor).events] == [("deleted", wid)]
        api.close()
        assert any(c.startswith("POST /rest/api/3/issue/") for c in env.transport.checked)
        assert any(c.startswith("DELETE /rest/api/3/issue/") for c in env.transport.checked)
