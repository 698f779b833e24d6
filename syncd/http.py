"""The one HTTP layer all syncing goes through, and the one retry layer on top of it.

`HttpClient` owns a pooled `httpx.Client` (timeouts, user agent, connection limits) and turns
every response into either a decoded result or an error from `syncd.errors`, using a status
table that connectors may refine. Retryable errors are retried here and nowhere else, by
tenacity, with jittered exponential backoff that gives way to the tracker's own `Retry-After`
or rate-limit reset headers. Sleep and clock are injectable so tests never wait.

syncd only reads: every request it sends is a GET or a POST that carries a query (GraphQL,
Jira's search and changelog bulk fetch), so every request may be repeated. A success whose
body is not the JSON asked for (a proxy's HTML page, a document cut short) is retried like
a transient failure, within `max_attempts`, and then reported as a MalformedPage.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from syncd import __version__
from syncd.config import HttpConfig
from syncd.errors import (
    AuthError,
    BadRequest,
    ConnectorError,
    FatalError,
    Interrupted,
    MalformedPage,
    NotFound,
    RateLimited,
    RetryableError,
    ServerError,
    TransportError,
)

log = structlog.get_logger("syncd.http")

USER_AGENT = f"syncd/{__version__} (+flow warehouse)"

#: seconds until the tracker lets us in again, read from its headers, or None
RETRY_AFTER_HEADERS = ("retry-after",)
RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset")
REMAINING_HEADERS = ("x-ratelimit-remaining", "ratelimit-remaining")


@dataclass(slots=True)
class HttpStats:
    """What the HTTP layer did, for run summaries, logs and benchmarks."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    wait_seconds: float = 0.0
    #: retries by the error class that caused them (RateLimited, ServerError, ...)
    retried: Counter[str] = field(default_factory=Counter)
    #: retries after a rate limit (429, rate-limit 403) and the seconds they waited
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    #: waits for the reset of a budget a success said was spent, and their seconds
    budget_waits: int = 0
    budget_wait_seconds: float = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "wait_seconds": round(self.wait_seconds, 3),
            "by_status": dict(sorted(self.by_status.items())),
            "retried": dict(sorted(self.retried.items())),
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "budget_waits": self.budget_waits,
            "budget_wait_seconds": round(self.budget_wait_seconds, 3),
        }


Classifier = Callable[[httpx.Response], ConnectorError | None]


def _header(response: httpx.Response, names: Iterable[str]) -> str | None:
    for name in names:
        value: str | None = response.headers.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def seconds_until(value: str, now: datetime) -> float | None:
    """Interpret a Retry-After or reset header: delta seconds, epoch seconds, an HTTP date
    or an ISO 8601 timestamp (Jira's X-RateLimit-Reset). None when unreadable."""
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if number > 1_000_000_000:  # epoch seconds (GitHub, GitLab reset headers)
            return max(0.0, number - now.timestamp())
        return max(0.0, number)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after(response: httpx.Response, now: datetime) -> float | None:
    """The wait the tracker asks for, from Retry-After first, then its reset header."""
    value = _header(response, RETRY_AFTER_HEADERS)
    if value is not None:
        seconds = seconds_until(value, now)
        if seconds is not None:
            return seconds
    value = _header(response, RESET_HEADERS)
    if value is not None:
        return seconds_until(value, now)
    return None


def _tracker_message(response: httpx.Response) -> str:
    """The tracker's own explanation, short, from the usual JSON error shapes."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip().replace("\n", " ")
        return text[:200] if text and not text.lstrip().startswith("<") else ""
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("errorMessages", "errors", "message", "error", "error_description"):
            value = body.get(key)
            if isinstance(value, list):
                parts.extend(str(v) for v in value if v)
            elif isinstance(value, dict):
                parts.extend(f"{k}: {v}" for k, v in value.items())
            elif value:
                parts.append(str(value))
    return "; ".join(parts)[:300]


def describe(request: httpx.Request) -> str:
    """`METHOD scheme://host/path` — never the query (it may carry a token on some trackers)."""
    url = request.url
    return (
        f"{request.method} {url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"
    )


def default_classifier(
    response: httpx.Response, now: datetime | None = None
) -> ConnectorError | None:
    """Map a response to the error it stands for (None = success). The status table:

    2xx, 304 → ok · 429 → rate limited · 403 with Retry-After or an exhausted rate-limit
    header → rate limited, other 403 → permission error · 401 → authentication error ·
    404 → not found · 400, 405, 409, 410, 422 and other 4xx → bad request ·
    500, 502, 503, 504 and other 5xx → server error (retried).
    """
    status = response.status_code
    if status < 400:
        return None
    now = now or datetime.now(UTC)
    where = describe(response.request)
    detail = _tracker_message(response)
    message = f"{where} answered {status} {response.reason_phrase}" + (
        f": {detail}" if detail else ""
    )
    url = where.split(" ", 1)[1]
    if status == 429:
        return RateLimited(message, retry_after=retry_after(response, now), status=status, url=url)
    if status == 403:
        remaining = _header(response, REMAINING_HEADERS)
        if _header(response, RETRY_AFTER_HEADERS) is not None or remaining == "0":
            return RateLimited(
                message, retry_after=retry_after(response, now), status=status, url=url
            )
        return AuthError(
            message + " (permission denied: check the account's access)", status=status, url=url
        )
    if status == 401:
        return AuthError(
            message + " (authentication failed: check the credentials)", status=status, url=url
        )
    if status == 404:
        return NotFound(message, status=status, url=url)
    if status < 500:
        return BadRequest(message, status=status, url=url)
    return ServerError(message, status=status, url=url)


def _tls(config: HttpConfig) -> ssl.SSLContext | bool:
    """Certificate verification: on by default, with a private CA added when configured."""
    if not config.verify:
        return False
    context = ssl.create_default_context()
    if config.ca_bundle is not None:
        context.load_verify_locations(cafile=str(config.ca_bundle))
    return context


class HttpClient:
    """Pooled HTTP client with one retry policy. Share one per process."""

    def __init__(
        self,
        config: HttpConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interrupt: threading.Event | None = None,
    ) -> None:
        self.config = config or HttpConfig()
        #: set when the process is stopping: no new request starts, no wait continues
        self._interrupt = interrupt
        self._sleep = sleep if interrupt is None else self._interruptible_sleep
        self._clock = clock
        self.stats = HttpStats()
        self._secrets: set[str] = set()
        timeout = self.config.timeout.total_seconds()
        if not self.config.verify:
            log.warning("http.tls_verification_disabled", reason="[http] verify = false")
        self._client = httpx.Client(
            transport=transport,
            verify=_tls(self.config),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            limits=httpx.Limits(
                max_connections=self.config.max_connections,
                max_keepalive_connections=self.config.max_connections,
            ),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"HttpClient(requests={self.stats.requests})"

    def _interruptible_sleep(self, seconds: float) -> None:
        assert self._interrupt is not None
        if self._interrupt.wait(seconds):
            raise Interrupted("stopping: a retry wait was cut short")

    def _check_interrupt(self) -> None:
        if self._interrupt is not None and self._interrupt.is_set():
            raise Interrupted("stopping: no new request is sent")

    def register_secret(self, value: str | None) -> None:
        """Remember a credential so it is scrubbed from any error message that might echo it."""
        if value and len(value) >= 4:
            self._secrets.add(value)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry layer ---------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_random_exponential(
            multiplier=self.config.backoff_initial.total_seconds(),
            max=self.config.backoff_max.total_seconds(),
        )(state)
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return max(exc.retry_after, 0.0) + min(backoff, 1.0) * 0.1  # a little jitter
        return float(backoff)

    def _stop(self, state: RetryCallState) -> bool:
        """Errors get `max_attempts`; rate limits, which are the tracker asking to slow down
        rather than failing, get four times as many (each wait is the one the tracker asks)."""
        exc = state.outcome.exception() if state.outcome else None
        limit = self.config.max_attempts * (4 if isinstance(exc, RateLimited) else 1)
        return bool(stop_after_attempt(limit)(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.stats.retries += 1
        self.stats.wait_seconds += wait
        self.stats.retried[type(exc).__name__] += 1
        if isinstance(exc, RateLimited):
            self.stats.rate_limit_waits += 1
            self.stats.rate_limit_wait_seconds += wait
        log.warning(
            "http.retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            error=self.scrub(str(exc)),
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        classify: Callable[[httpx.Response, datetime], ConnectorError | None] | None = None,
        expect_json: bool = True,
    ) -> httpx.Response:
        """Send a request, retrying what is retryable; return a successful response or raise
        the classified error. With `expect_json`, a success (other than 204/304) must carry
        a JSON body: one that does not is retried, then raised as MalformedPage; the decoded
        body is kept for `decode_json`."""
        classifier = classify or default_classifier
        retrying = Retrying(
            stop=self._stop,
            wait=self._wait,
            # a MalformedPage inside the loop is a success whose body was not JSON
            retry=retry_if_exception_type((RetryableError, MalformedPage)),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._once(
                    method,
                    url,
                    params=params,
                    json_body=json_body,
                    headers=headers,
                    auth=auth,
                    classifier=classifier,
                    expect_json=expect_json,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None,
        classifier: Callable[[httpx.Response, datetime], ConnectorError | None],
        expect_json: bool = False,
    ) -> httpx.Response:
        self._check_interrupt()
        self.stats.requests += 1
        try:
            response = self._client.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{method} {httpx.URL(url).copy_with(query=None)} timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(
                f"{method} {httpx.URL(url).copy_with(query=None)} failed: "
                f"{type(exc).__name__}: {self.scrub(str(exc))[:200]}"
            ) from None
        self.stats.by_status[response.status_code] += 1
        error = classifier(response, self._clock())
        if error is not None:
            limit = self.config.max_retry_after.total_seconds()
            if isinstance(error, RateLimited) and (error.retry_after or 0) > limit:
                raise FatalError(
                    self.scrub(
                        f"{error} — the tracker asks to wait {error.retry_after:.0f} s, "
                        f"more than http.max_retry_after"
                    ),
                    status=error.status,
                    url=error.url,
                )
            error.args = (self.scrub(str(error)),)
            raise error
        if expect_json and response.status_code not in (204, 304):
            response.extensions[_DECODED] = decode_json(response)
        self._respect_exhausted_budget(response)
        return response

    def _respect_exhausted_budget(self, response: httpx.Response) -> None:
        """When a success says the rate-limit budget is spent, wait for its reset rather than
        spend a request on a certain 429/403."""
        if _header(response, REMAINING_HEADERS) != "0":
            return
        reset = _header(response, RESET_HEADERS)
        wait = seconds_until(reset, self._clock()) if reset else None
        if wait and wait > 0:
            wait = min(wait, self.config.max_retry_after.total_seconds())
            log.warning("http.rate_limit_exhausted", wait_s=round(wait, 3))
            self.stats.wait_seconds += wait
            self.stats.budget_waits += 1
            self.stats.budget_wait_seconds += wait
            self._sleep(wait)

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """`request` and decode JSON; a body that is not JSON is a MalformedPage."""
        response = self.request(method, url, **kwargs)
        return decode_json(response)


#: where `HttpClient.request` keeps a body it already decoded, in the response's extensions
_DECODED = "syncd.decoded_json"


def decode_json(response: httpx.Response) -> Any:
    """Decode a JSON body (once: `HttpClient.request` already did for its responses) or
    raise MalformedPage naming the URL (never the query) and what came instead."""
    if _DECODED in response.extensions:
        return response.extensions[_DECODED]
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "unknown content type")
        raise MalformedPage(
            f"{describe(response.request)} answered {response.status_code} with a body that is "
            f"not JSON ({kind}, {len(response.content)} bytes)",
            status=response.status_code,
            url=describe(response.request).split(" ", 1)[1],
        ) from None
