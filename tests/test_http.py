"""The HTTP layer and its retry policy, through httpx.MockTransport with an injected sleep."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from syncd.config import HttpConfig
from syncd.errors import (
    AuthError,
    BadRequest,
    FatalError,
    MalformedPage,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)
from syncd.http import HttpClient, decode_json, seconds_until

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://tracker.example/rest/api/3/thing"


def client(
    handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float], **config: object
) -> HttpClient:
    return HttpClient(
        HttpConfig(**config),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        clock=lambda: NOW,
    )


def sequence(
    *responses: httpx.Response | Exception,
) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def test_429_honours_retry_after_then_succeeds() -> None:
    handler, seen = sequence(
        httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={"ok": True})
    )
    sleeps: list[float] = []
    with client(handler, sleeps) as http:
        assert http.json("GET", URL) == {"ok": True}
        assert http.stats.retries == 1
        assert http.stats.by_status == {429: 1, 200: 1}
    assert len(seen) == 2
    assert 7.0 <= sleeps[0] <= 7.2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_backoff(status: int) -> None:
    handler, seen = sequence(
        httpx.Response(status), httpx.Response(status), httpx.Response(200, json=[])
    )
    sleeps: list[float] = []
    with client(handler, sleeps, backoff_initial="1s", backoff_max="10s") as http:
        assert http.json("GET", URL) == []
    assert len(seen) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 10 for s in sleeps)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (410, BadRequest),
        (422, BadRequest),
    ],
)
def test_client_errors_are_never_retried(status: int, error: type[Exception]) -> None:
    handler, seen = sequence(httpx.Response(status, json={"errorMessages": ["nope"]}))
    sleeps: list[float] = []
    with client(handler, sleeps) as http, pytest.raises(error) as caught:
        http.request("GET", URL)
    assert len(seen) == 1 and sleeps == []
    assert str(status) in str(caught.value) and "nope" in str(caught.value)


def test_403_with_retry_after_is_a_rate_limit() -> None:
    handler, seen = sequence(
        httpx.Response(403, headers={"Retry-After": "3"}), httpx.Response(200, json={})
    )
    sleeps: list[float] = []
    with client(handler, sleeps) as http:
        http.request("GET", URL)
    assert len(seen) == 2 and 3.0 <= sleeps[0] <= 3.2


def test_exhausted_budget_waits_for_reset_header() -> None:
    reset = int((NOW + timedelta(seconds=42)).timestamp())
    handler, _ = sequence(
        httpx.Response(
            429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
        ),
        httpx.Response(200, json={}),
    )
    sleeps: list[float] = []
    with client(handler, sleeps) as http:
        http.request("GET", URL)
    assert 42.0 <= sleeps[0] <= 42.2


def test_jira_iso_reset_header() -> None:
    assert seconds_until("2026-03-01T12:00:30Z", NOW) == 30.0
    assert seconds_until("Sun, 01 Mar 2026 12:01:00 GMT", NOW) == 60.0
    assert seconds_until("garbage", NOW) is None


def test_transport_errors_are_retried_and_then_reported() -> None:
    handler, seen = sequence(httpx.ConnectError("connection refused"))
    sleeps: list[float] = []
    with client(handler, sleeps, max_attempts=3) as http, pytest.raises(TransportError):
        http.request("GET", URL)
    assert len(seen) == 3 and len(sleeps) == 2


def test_gives_up_after_max_attempts() -> None:
    handler, seen = sequence(httpx.Response(503))
    sleeps: list[float] = []
    with client(handler, sleeps, max_attempts=4) as http, pytest.raises(ServerError):
        http.request("GET", URL)
    assert len(seen) == 4


def test_retry_after_beyond_the_limit_fails_instead_of_blocking() -> None:
    handler, seen = sequence(httpx.Response(429, headers={"Retry-After": "86400"}))
    sleeps: list[float] = []
    with client(handler, sleeps, max_retry_after="15m") as http, pytest.raises(FatalError) as err:
        http.request("GET", URL)
    assert len(seen) == 1 and sleeps == [] and "86400" in str(err.value)
    assert not isinstance(err.value, RateLimited)


def test_html_body_with_200_is_a_malformed_page() -> None:
    handler, _ = sequence(
        httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"})
    )
    with client(handler, []) as http, pytest.raises(MalformedPage) as err:
        http.json("GET", URL)
    assert "text/html" in str(err.value) and "/rest/api/3/thing" in str(err.value)


def test_secrets_never_reach_error_messages() -> None:
    secret = "s3cr3t-token-value"
    handler, _ = sequence(httpx.Response(401, json={"message": f"bad token {secret}"}))
    with client(handler, []) as http:
        http.register_secret(secret)
        with pytest.raises(AuthError) as err:
            http.request("GET", URL + "?x=1", auth=httpx.BasicAuth("me@example.com", secret))
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert "x=1" not in str(err.value)


def test_user_agent_and_pooled_client() -> None:
    handler, seen = sequence(httpx.Response(200, json={}))
    with client(handler, []) as http:
        http.request("GET", URL)
        http.request("GET", URL)
    assert seen[0].headers["user-agent"].startswith("syncd/")


def test_rate_limits_get_a_larger_retry_budget_than_errors() -> None:
    limited, seen = sequence(
        *[httpx.Response(429, headers={"Retry-After": "1"})] * 10,
        httpx.Response(200, json={"ok": 1}),
    )
    with client(limited, [], max_attempts=3) as http:
        assert http.json("GET", URL) == {"ok": 1}  # 10 rate limits survived with 3 attempts
    assert len(seen) == 11
    storm, seen = sequence(httpx.Response(429, headers={"Retry-After": "1"}))
    with client(storm, [], max_attempts=3) as http, pytest.raises(RateLimited):
        http.request("GET", URL)
    assert len(seen) == 12  # 4 x max_attempts, then the rate limit is reported


def test_a_body_that_is_not_json_is_retried_within_max_attempts() -> None:
    page = httpx.Response(200, json={"issues": [1, 2]})
    cut = httpx.Response(
        200, content=b'{"issues": [1,', headers={"content-type": "application/json"}
    )
    html = httpx.Response(200, text="<html>sign in</html>", headers={"content-type": "text/html"})
    handler, seen = sequence(html, cut, page)
    sleeps: list[float] = []
    with client(handler, sleeps, max_attempts=3) as http:
        assert http.json("POST", URL, json_body={"query": "{ viewer { login } }"}) == {
            "issues": [1, 2]
        }
        assert http.stats.retries == 2 and dict(http.stats.retried) == {"MalformedPage": 2}
        assert http.stats.rate_limit_waits == 0
    assert len(seen) == 3 and len(sleeps) == 2


def test_a_body_that_stays_broken_fails_as_malformed_page_after_max_attempts() -> None:
    handler, seen = sequence(httpx.Response(200, content=b"<html>", headers={"x": "y"}))
    with client(handler, [], max_attempts=4) as http, pytest.raises(MalformedPage) as err:
        http.request("GET", URL + "?token=abc123secret")
    assert len(seen) == 4
    assert err.value.url == URL and "abc123secret" not in str(err.value)
    assert "GET " + URL in str(err.value)


def test_the_decoded_body_is_kept_for_decode_json_and_304_is_not_decoded() -> None:
    handler, _ = sequence(httpx.Response(200, json={"a": [1]}))
    with client(handler, []) as http:
        response = http.request("GET", URL)
        assert decode_json(response) is decode_json(response)  # decoded once, in the loop
    handler, seen = sequence(httpx.Response(304), httpx.Response(200, text="plain"))
    with client(handler, []) as http:
        assert http.request("GET", URL).status_code == 304
        assert http.request("GET", URL, expect_json=False).text == "plain"
    assert len(seen) == 2  # neither was retried


def test_rate_limit_and_budget_waits_are_counted_apart() -> None:
    handler, _ = sequence(
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(
            200, json={}, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "20"}
        ),
    )
    sleeps: list[float] = []
    with client(handler, sleeps) as http:
        http.json("GET", URL)
        stats = http.stats.snapshot()
    assert stats["rate_limit_waits"] == 1 and 3.0 <= stats["rate_limit_wait_seconds"] <= 3.2
    assert stats["budget_waits"] == 1 and stats["budget_wait_seconds"] == 20.0
    assert stats["retried"] == {"RateLimited": 1}
