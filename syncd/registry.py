"""Connector registry: connectors are entry points in the group `syncd.connectors`.

They are looked up by `kind` and imported only when a config uses them. A loaded class is
checked against the contract before use.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from syncd.errors import ConfigError

GROUP = "syncd.connectors"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed_kinds() -> list[str]:
    """Kinds of every installed connector, sorted."""
    return sorted(_entry_points())


@cache
def connector_class(kind: str) -> Any:
    """The connector class registered for `kind`, imported on first use."""
    eps = _entry_points()
    if kind not in eps:
        installed = ", ".join(sorted(eps)) or "none"
        raise ConfigError(f"unknown source kind {kind!r}; installed connectors: {installed}")
    cls = eps[kind].load()
    missing = [
        name
        for name in ("kind", "config_model", "check", "streams", "fetch")
        if not hasattr(cls, name)
    ]
    if missing:
        raise ConfigError(
            f"connector {kind!r} ({eps[kind].value}) does not implement the connector contract: "
            f"missing {', '.join(missing)}"
        )
    return cls
