"""Jira + Tempo limits and auth against the sandboxes: 429 with Retry-After honoured without a storm (both APIs),
expired OAuth tokens refreshed (rotating refresh tokens), a wrong API token is a clear permanent error."""

from __future__ import annotations

import datetime as dt
import math

import httpx
import pytest

from jira_tempo_support import environment, ids, seed_basics
from ledgerbridge.errors import PermanentError


def _worklogs(env, n: int) -> list[str]:
    b = seed_basics(env)
    day = dt.datetime.fromtimestamp(env.clock(), dt.UTC).date() - dt.timedelta(days=1)
    made = []
    for i in range(n):
        made.append(env.log(b["issues"][i % 3], b["accounts"][i % 2], day, 900 * (1 + i % 4)))
        env.clock.advance(0.01)
    env.tempo.set_approval(b["accounts"][0], day, "APPROVED")
    env.clock.advance(120)
    return made


def test_429_retry_after_is_honoured_without_a_storm() -> None:
    limit = 4
    with environment(jira={"rate_limit": limit, "rate_window": 1.0, "page_size": 4},
                     tempo={"rate_limit": 2, "rate_window": 1.0}) as env:
        made = _worklogs(env, 8)
        src = env.source()
        r = src.sync(None)
        assert sorted(ids(r), key=int) == sorted(made, key=int) and not r.errors
        jira_limits, tempo_limits = env.jira_app.state.limits, env.tempo_app.state.limits
        assert jira_limits.refused >= 1 and tempo_limits.refused >= 1  # the limits were really hit
        # no storm: after a 429 the client waits Retry-After before anything else, so at most one refusal per
        # window the calls span
        for lim in (jira_limits, tempo_limits):
            assert lim.refused <= math.ceil(lim.accepted / lim.limit) + 1, lim.stats()
        assert env.sleeps and min(s for s in env.sleeps if s > 0) >= 0.5  # waited as told (Retry-After: 1)
        assert env.jira_app.state.calls.count(status=429) == jira_limits.refused


def _oauth_options(env) -> dict:
    return {"auth": "oauth", "client_id": "lb-jira-client", "api_url": env.jira_url,
            "token_url": f"{env.jira_url}/oauth/token",
            "tempo": {"url": env.tempo_url, "auth": "oauth", "client_id": "lb-tempo-client",
                      "token_url": f"{env.tempo_url}/oauth/token/"}}


def test_expired_tokens_are_refreshed_and_refresh_tokens_rotate() -> None:
    with environment(jira={"token_ttl": 600}, tempo={"token_ttl": 600}) as env:
        made = _worklogs(env, 3)
        secrets = {"client_secret": "lb-jira-secret", "refresh_token": "jira-refresh-0",
                   "tempo_client_secret": "lb-tempo-secret", "tempo_refresh_token": "tempo-refresh-0"}
        src = env.source(secrets=secrets, **_oauth_options(env))
        assert src.jira.base_url.endswith("/ex/jira/5a1e2d3c-0000-4000-8000-00000000c10d")  # discovered
        first = src.sync(None)
        assert sorted(ids(first), key=int) == sorted(made, key=int)
        assert any("/ex/jira/" in c for c in env.transport.checked)  # OAuth paths validated too
        jira_auth, tempo_auth = src.jira.auth, src.tempo.auth
        refreshes = (jira_auth.refreshes, tempo_auth.refreshes)
        # 1) the tokens are revoked server-side: the next call answers 401, the client refreshes and retries
        env.jira_app.state.tokens.clear()
        env.tempo_app.state.tokens.clear()
        env.jira.update_worklog(made[0], seconds=7200)
        env.clock.advance(120)
        second = src.sync(first.cursor)
        assert ids(second) == [made[0]]
        assert (jira_auth.refreshes, tempo_auth.refreshes) == (refreshes[0] + 1, refreshes[1] + 1)
        assert env.jira_app.state.calls.count(status=401) >= 1 and env.tempo_app.state.calls.count(status=401) >= 1
        # rotation: the client holds the newest refresh token, the sandbox retired the old ones
        assert jira_auth.refresh_token == env.jira_app.state.refresh["current"] != "jira-refresh-0"
        assert tempo_auth.refresh_token == env.tempo_app.state.refresh["current"] != "tempo-refresh-0"
        # 2) the token's lifetime runs out mid-run: refreshed before use, no 401 needed
        unauthorized = env.jira_app.state.calls.count(status=401)
        env.clock.advance(700)
        assert src.sync(second.cursor).events == []
        assert jira_auth.refreshes == refreshes[0] + 2
        assert env.jira_app.state.calls.count(status=401) == unauthorized


def test_wrong_api_token_is_a_clear_permanent_error() -> None:
    with environment() as env:
        _worklogs(env, 1)
        src = env.source(secrets={"api_token": "wrong"})
        with pytest.raises(PermanentError) as err:
            src.sync(None)
        assert err.value.code == "LB-P002" and env.jira_app.state.calls.count(status=401) == 1


def test_worklog_list_is_batched_at_the_1000_id_limit() -> None:
    with environment() as env:
        made = _worklogs(env, 1001)
        r = env.source(with_tempo=False).sync(None)
        assert len(r.events) == 1001 and not r.errors
        calls = env.jira_app.state.calls
        assert calls.count(method="POST", path_prefix="/rest/api/3/worklog/list", status=200) == 2
        assert calls.count(path_prefix="/rest/api/3/worklog/updated") == 2  # 1,000 per feed page
        auth = env.source(with_tempo=False).jira.auth.header()
        too_many = httpx.Client(transport=env.transport).post(
            f"{env.jira_url}/rest/api/3/worklog/list", json={"ids": [int(w) for w in made[:1001]]},
            headers={"Authorization": auth})
        assert too_many.status_code == 400 and "limit of 1000" in too_many.json()["errorMessages"][0]
