"""Every error syncd raises on purpose, in one tree.

    SyncdError
    ├── ConfigError              the configuration is wrong: file, key and what was expected
    ├── ConnectorError           a source could not be synced
    │   ├── RetryableError       worth another try later (the retry layer retries these)
    │   │   ├── RateLimited      the tracker said slow down; carries retry_after seconds
    │   │   ├── ServerError      5xx from the tracker
    │   │   └── TransportError   connection reset, timeout, DNS
    │   ├── FatalError           retrying will not help
    │   │   ├── AuthError        401, or 403 that is a permission problem
    │   │   ├── NotFound         404 (for endpoints that must exist)
    │   │   └── BadRequest       400/410/422: syncd asked something the tracker refuses
    │   └── MalformedPage        a page that cannot be parsed: the run fails, the cursor stays
    ├── SkippableRecord          one record that cannot be parsed: logged, counted, skipped
    └── Interrupted              the process is stopping: the page in flight is abandoned

Messages never contain a credential: the HTTP layer builds them from the method, the URL
without query secrets, the status and the tracker's own error text.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """A configuration problem, always naming the file and key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class ConnectorError(SyncdError):
    """A source could not be synced."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        self.status = status
        self.url = url
        super().__init__(message)


class RetryableError(ConnectorError):
    """Transient: the retry layer tries again with backoff."""

    retry_after: float | None = None


class RateLimited(RetryableError):
    """The tracker asked us to slow down (429, or a rate-limit 403)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        status: int | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after


class ServerError(RetryableError):
    """The tracker failed (502/503/504 and friends)."""


class TransportError(RetryableError):
    """The connection failed before a response arrived."""


class FatalError(ConnectorError):
    """Retrying will not help; the run for this source fails."""


class AuthError(FatalError):
    """Bad or missing credentials, or missing permission."""


class NotFound(FatalError):
    """The tracker says the resource does not exist."""


class BadRequest(FatalError):
    """The tracker refused the request as malformed or gone (400, 410, 422)."""


class MalformedPage(ConnectorError):
    """A response page that cannot be parsed. The run fails for the source, the cursor stays."""


class SkippableRecord(SyncdError):
    """One record in an otherwise good page that cannot be parsed."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class Interrupted(SyncdError):
    """The process was asked to stop (SIGTERM/SIGINT) while a page was in flight. The page is
    not committed, so its cursor stays where the last committed page left it."""
