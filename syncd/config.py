"""Configuration: one TOML file parsed into typed models and validated once at start.

Every error names the file, the key and what was expected. Secrets are never in the file:
a source names the environment variable (`token_env`) or the file (`token_file`) holding them,
and the value is read into a `SecretStr`, which never prints.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.domain import FLOW_TYPES, Stage
from syncd.errors import ConfigError
from syncd.records import MAX_PASSES
from syncd.streams import ValueStreamConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """'5m', '30s', '1h', '2d', '250ms' or a number of seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"expected a duration like '5m', '30s', '1h' or seconds, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseConfig(_Strict):
    """Where the warehouse lives. SQLite by default; `postgresql://…` for teams."""

    url: str = "sqlite:///syncd.db"
    url_env: str | None = None
    #: raw pages older than this are pruned after a successful run; 0 (the default) keeps
    #: them, which re-normalising from the warehouse needs
    raw_retention_days: int = Field(default=0, ge=0)

    def resolved_url(self) -> str:
        if self.url_env:
            value = os.environ.get(self.url_env)
            if not value:
                raise ConfigError(
                    f"environment variable {self.url_env} is not set", key="warehouse.url_env"
                )
            return value
        return self.url


class HttpConfig(_Strict):
    """The one HTTP layer every connector shares."""

    timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_initial: Duration = timedelta(seconds=1)
    backoff_max: Duration = timedelta(seconds=120)
    #: a Retry-After longer than this fails the request rather than blocking the source
    max_retry_after: Duration = timedelta(minutes=15)
    max_connections: int = Field(default=8, ge=1)
    #: TLS certificates are verified; `ca_bundle` adds a private CA (a PEM file). Turning
    #: verification off needs `verify = false` spelled out and is logged at every start.
    verify: bool = True
    ca_bundle: Path | None = None

    @model_validator(mode="after")
    def _bundle_needs_verify(self) -> HttpConfig:
        if self.ca_bundle is not None and not self.verify:
            raise ValueError("ca_bundle is set but verify = false: choose one")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"ca_bundle {str(self.ca_bundle)!r} is not a readable file")
        return self


class SyncConfig(_Strict):
    """How incremental syncing behaves across sources."""

    lookback: Duration = timedelta(minutes=5)
    #: listing passes in a row a record that cannot be parsed holds its stream's watermark
    #: back (so it is listed and tried again) before it is given up (`syncd.records.SkipHold`)
    skip_retry_passes: int = Field(default=MAX_PASSES, ge=1, le=100)


def _listen_address(value: str) -> str:
    if value in ("", "off"):
        return ""
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected 'host:port' (e.g. '127.0.0.1:9464') or 'off', got {value!r}")
    return value


class DaemonConfig(_Strict):
    """How `syncd run` schedules sources and reports on itself."""

    #: default schedule of a source that names neither `every` nor `cron`
    every: Duration = timedelta(minutes=15)
    #: each run starts up to this much later than scheduled, so sources don't all fire at once
    jitter: Duration = timedelta(seconds=30)
    #: consecutive failures double a source's interval, up to this
    backoff_max: Duration = timedelta(hours=6)
    #: sources synced at the same time (each has its own HTTP client and lock)
    workers: int = Field(default=4, ge=1, le=64)
    #: `/healthz`, `/readyz`, `/metrics`; "off" for none
    listen: Annotated[str, BeforeValidator(_listen_address)] = "127.0.0.1:9464"
    #: how long SIGTERM/SIGINT waits for the page in flight before exiting anyway
    stop_grace: Duration = timedelta(seconds=8)
    #: how often each source's ids are listed to tombstone deleted items; "0s" turns it off
    reconcile_every: Duration = timedelta(days=1)

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("expected at least 1 s")
        return value


def _api_listen(value: str) -> str:
    if _listen_address(value) == "":
        raise ValueError(f"expected 'host:port' (e.g. '127.0.0.1:8080'), got {value!r}")
    return value


class ApiConfig(_Strict):
    """The read-only HTTP API and dashboard: `syncd serve`, or inside `syncd run` with
    `enabled`. Without a token anyone who reaches `listen` can read the metrics."""

    listen: Annotated[str, BeforeValidator(_api_listen)] = "127.0.0.1:8080"
    #: also serve the API inside `syncd run`
    enabled: bool = False
    #: a bearer token every request must carry, from this environment variable or file
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token_source(self) -> ApiConfig:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        return self

    def token(self) -> SecretStr | None:
        """The API's bearer token, or None when the API is open."""
        return read_secret(self.token_env, self.token_file, "api")


class FlowTypeRule(_Strict):
    """An item gets `flow_type` when its type is in `issue_types` or it has one of `labels`
    (case-insensitive). Rules are tried in order; the first match wins."""

    flow_type: str
    issue_types: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)

    @field_validator("flow_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in FLOW_TYPES:
            raise ValueError(f"expected one of {', '.join(FLOW_TYPES)}, got {value!r}")
        return value


class SourceConfig(BaseModel):
    """Keys shared by every source. Connectors subclass it with their own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    url: str
    value_stream: str | None = None
    token_env: str | None = None
    token_file: Path | None = None
    enabled: bool = True
    #: stage overrides: tracker state name or id → stage
    stages: dict[str, Stage] = Field(default_factory=dict)
    #: flow type rules; empty means the connector's defaults
    flow_types: list[FlowTypeRule] = Field(default_factory=list)
    #: schedule under `syncd run`: an interval, or a 5-field crontab line (UTC); neither means
    #: the `[daemon] every` default
    every: Duration | None = None
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"expected a crontab line like '*/15 * * * *': {exc}") from None
        return value

    @field_validator("every")
    @classmethod
    def _positive_every(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() < 1:
            raise ValueError("expected at least 1 s")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> SourceConfig:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        if self.every is not None and self.cron is not None:
            raise ValueError("give every or cron, not both")
        return self

    @property
    def stream_value(self) -> str:
        """The value stream of this source's items (the source name when not configured)."""
        return self.value_stream or self.name

    def token(self) -> SecretStr | None:
        """The source's secret, read from the environment or the file named in the config."""
        return read_secret(self.token_env, self.token_file, f"sources.{self.name}")


#: source keys that change how or when a source is fetched, not what its items are
_OPERATIONAL_KEYS = frozenset(
    {
        "name",
        "enabled",
        "every",
        "cron",
        "token_env",
        "token_file",
        "email_env",
        "email",
        "app_id",
        "app_private_key_file",
        "app_installation_id",
        "page_size",
        "batch_size",
        "per_page",
        "concurrency",
        "graphql",
        "graphql_batch_size",
    }
)


#: source keys that only decide how stored tracker responses become items (stages, flow types,
#: the resolutions, labels and statuses that mean a stage): changing them re-normalises the
#: source from its raw pages (`syncd.renormalise`) instead of fetching it again
MAPPING_KEYS = frozenset(
    {
        "stages",
        "flow_types",
        "canceled_resolutions",
        "active_labels",
        "waiting_labels",
        "project_statuses",
        "label_stages",
        "status_stages",
        "canceled_labels",
    }
)
#: the value stream of items no `[[value_streams]]` claims: `syncd.streams` moves stored items
#: when it changes, so it is neither scope nor mapping
_ASSIGNMENT_KEYS = frozenset({"value_stream"})


def scope_of(source: SourceConfig) -> dict[str, Any]:
    """What decides which records a source fetches (URL, JQL, repositories, organisations,
    projects, groups, …) as JSON values: the source's keys that are neither operational nor
    mapping. A key a connector adds counts as scope unless listed above, so a change nobody
    classified costs a resync rather than a wrong warehouse."""
    exclude = set(_OPERATIONAL_KEYS | MAPPING_KEYS | _ASSIGNMENT_KEYS)
    data: dict[str, Any] = source.model_dump(mode="json", exclude=exclude)
    return data


def mapping_fingerprint(source: SourceConfig) -> str:
    """A digest of the source's mapping keys (`MAPPING_KEYS`)."""
    return _digest(source.model_dump(mode="json", include=set(MAPPING_KEYS)))


def legacy_fingerprint(source: SourceConfig) -> str:
    """The digest warehouses stored before scope and mapping were told apart: the source's
    config minus operational keys. Only used to recognise an unchanged source there."""
    return _digest(source.model_dump(mode="json", exclude=set(_OPERATIONAL_KEYS)))


def _digest(data: Any) -> str:
    import hashlib
    import json

    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_secret(
    env: str | None,
    file: Path | None,
    where: str,
    *,
    env_key: str = "token_env",
    file_key: str = "token_file",
) -> SecretStr | None:
    """Read a secret by environment variable name or file path; None when neither is set."""
    if env:
        value = os.environ.get(env)
        if value is None or not value.strip():
            raise ConfigError(
                f"environment variable {env} is not set or empty", key=f"{where}.{env_key}"
            )
        return SecretStr(value.strip())
    if file:
        try:
            return SecretStr(file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(
                f"cannot read secret file {file}: {exc.strerror}", key=f"{where}.{file_key}"
            ) from None
    return None


class Config(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    path: Path
    warehouse: WarehouseConfig = WarehouseConfig()
    http: HttpConfig = HttpConfig()
    sync: SyncConfig = SyncConfig()
    daemon: DaemonConfig = DaemonConfig()
    api: ApiConfig = ApiConfig()
    sources: list[Any] = Field(default_factory=list)  # each a SourceConfig subclass instance
    #: `[[value_streams]]`, in config order: an item belongs to the first that claims it
    value_streams: list[ValueStreamConfig] = Field(default_factory=list)

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                assert isinstance(source, SourceConfig)
                return source
        names = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} (configured: {names})", file=str(self.path))

    @property
    def enabled_sources(self) -> list[SourceConfig]:
        return [s for s in self.sources if s.enabled]


def _location(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(exc: ValidationError, file: str, prefix: str = "") -> ConfigError:
    lines = []
    for err in exc.errors():
        key = _location(tuple(err["loc"]), prefix)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{file}: {key}: {message}")
    error = ConfigError("\n".join(lines))
    error.file = file
    return error


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key and expectation
    for every problem found (not just the first)."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(file)) from None

    raw_sources = data.pop("sources", [])
    problems: list[str] = []  # every problem of the file, reported at once
    if not isinstance(raw_sources, list):
        problems.append(f"{file}: sources: expected an array of tables [[sources]]")
        raw_sources = []
    config: Config | None = None
    try:
        config = Config(path=file, **data)
    except ValidationError as exc:
        problems.append(str(_explain(exc, str(file))))

    sources: list[SourceConfig] = []
    unloaded: set[str] = set()  # sources whose own errors are reported already
    seen: set[str] = set()
    for index, raw in enumerate(raw_sources):
        key = f"sources[{index}]"
        try:
            source = _load_source(raw, file, key)
        except ConfigError as exc:
            problems.append(str(exc))
            if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                unloaded.add(raw["name"])
            continue
        if source.name in seen:
            problems.append(f"{file}: {key}.name: duplicate source name {source.name!r}")
        seen.add(source.name)
        sources.append(source)
    if config is not None:
        problems += _check_value_streams(config.value_streams, sources, unloaded, str(file))
    if problems or config is None:
        error = ConfigError("\n".join(problems))
        error.file = str(file)
        raise error
    return config.model_copy(update={"sources": sources})


def _check_value_streams(
    streams: list[ValueStreamConfig], sources: list[SourceConfig], unloaded: set[str], file: str
) -> list[str]:
    """What a value stream's scopes can only be checked against the sources for."""
    kinds = {s.name: s.kind for s in sources}
    problems: list[str] = []
    seen: set[str] = set()
    for i, vs in enumerate(streams):
        if vs.name in seen:
            problems.append(f"{file}: value_streams[{i}].name: duplicate value stream {vs.name!r}")
        seen.add(vs.name)
        for j, scope in enumerate(vs.scopes):
            key = f"value_streams[{i}].scopes[{j}]"
            if scope.source in unloaded:
                continue
            if scope.source not in kinds:
                names = ", ".join(sorted(kinds)) or "none"
                problems.append(
                    f"{file}: {key}.source: no source named {scope.source!r} (configured: {names})"
                )
            elif scope.jql is not None and kinds[scope.source] != "jira":
                problems.append(
                    f"{file}: {key}.jql: JQL needs a Jira source; {scope.source!r} is "
                    f"{kinds[scope.source]}"
                )
    return problems


def _load_source(raw: object, file: Path, key: str) -> SourceConfig:
    from syncd.registry import connector_class  # late: loading connectors needs config types

    if not isinstance(raw, dict):
        raise ConfigError("expected a table", file=str(file), key=key)
    kind = raw.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(
            "required key 'kind' is missing or not a string", file=str(file), key=f"{key}.kind"
        )
    try:
        model = connector_class(kind).config_model
    except ConfigError as exc:
        raise ConfigError(str(exc), file=str(file), key=f"{key}.kind") from None
    try:
        source: SourceConfig = model(**raw)
    except ValidationError as exc:
        raise _explain(exc, str(file), key) from None
    return source
