"""Optional bearer-token protection of the API and the dashboard.

With `[api] token_env` or `token_file` set, every request but the OpenAPI description must
carry `Authorization: Bearer <token>`. Browsers cannot add that header to a page load, so
the dashboard also accepts HTTP Basic credentials whose password is the token (any user
name): a 401 on the dashboard asks with `WWW-Authenticate: Basic`, and the browser prompts.

The comparison is in constant time (of SHA-256 digests, so not even the token's length
leaks), and the token never reaches a log line, an error message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import SecretStr

from syncd.api.formats import json_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: paths anyone may read: the description of the API holds no data
PUBLIC_PATHS = frozenset({"/api/v1/openapi.json"})
REALM = "syncd"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def presented_token(authorization: str | None) -> bytes | None:
    """The secret a request presents: a bearer token, or the password of Basic credentials."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials.encode()
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return None
        _user, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


class TokenGate:
    """ASGI middleware: lets a request through when it presents the token, else answers 401."""

    def __init__(self, app: ASGIApp, token: SecretStr) -> None:
        self.app = app
        self._digest = _digest(token.get_secret_value().encode())

    def __repr__(self) -> str:
        return "TokenGate(token=**********)"

    def allows(self, authorization: str | None) -> bool:
        presented = presented_token(authorization)
        # compared even when absent, so a missing header costs what a wrong one does
        candidate = _digest(presented if presented is not None else b"")
        return hmac.compare_digest(candidate, self._digest) and presented is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if self.allows(authorization):
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, send, authorization is not None)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, presented: bool) -> None:
        browser = not scope["path"].startswith("/api/")
        if browser:
            challenge = f'Basic realm="{REALM}", charset="UTF-8"'
        elif presented:
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
        else:
            challenge = f'Bearer realm="{REALM}"'
        message = (
            "the token is not valid" if presented else "this API needs a bearer token"
        ) + ": send 'Authorization: Bearer <token>' (the token of [api] token_env/token_file)"
        body = json_body({"status": 401, "error": "Unauthorized", "message": message})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
