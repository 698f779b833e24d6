"""The read-only HTTP API and dashboard (`syncd serve`, or `[api] enabled` in `syncd run`).

- `queries`: the reads, over the SQL views and the value stream tables only;
- `app`: the FastAPI application, its OpenAPI description, JSON/CSV answers, errors;
- `auth`: the optional bearer token; `formats`: JSON, CSV and content negotiation;
- `dashboard` and `charts`: the HTML page and its server-side SVG charts;
- `server`: uvicorn on a thread, with the socket bound up front.

docs/api.md documents the endpoints for users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.api.server import ApiServer
    from syncd.config import Config
    from syncd.warehouse.store import Warehouse


def build_server(config: Config, warehouse: Warehouse, listen: str | None = None) -> ApiServer:
    """The API server over `warehouse` as `[api]` configures it (`listen` overrides the
    configured address). Not started."""
    from syncd.api.app import create_app
    from syncd.api.server import ApiServer

    token = config.api.token()
    if token is not None and not token.get_secret_value():
        key = "api.token_env" if config.api.token_env else "api.token_file"
        raise ConfigError("the API token is empty", file=str(config.path), key=key)
    return ApiServer(create_app(warehouse, token=token), listen or config.api.listen)
