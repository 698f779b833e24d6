"""What every tracker simulator shares: the loopback HTTP server, request records, the
`/_sim/...` control endpoints, signed page cursors and the command-line serving loop.

A simulator subclasses `Simulator` and implements `_api` (one `ApiRequest` → `Response`),
`_error` (the tracker's error body), `_stats` (its counts for `/_sim/stats`) and `mutate`.
Everything else (threads, sockets, keep-alive shutdown, JSON bodies, request records,
control endpoints, collector pauses, fault injection, command-line options and signals)
lives here once.
"""

from __future__ import annotations

import abc
import argparse
import base64
import binascii
import contextlib
import gc
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Generic, Self, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from syncd.simulator.faults import (
    BODY_KINDS,
    DEFAULT_HOLD,
    KINDS,
    DroppedConnection,
    FaultInjector,
    FaultPlan,
    cut_json,
    drop_creation_time,
    error_page,
)

__all__ = [
    "ApiRequest",
    "BoundedCache",
    "CliError",
    "CursorSigner",
    "RequestRecord",
    "Response",
    "Simulator",
    "add_serving_arguments",
    "dump_json",
    "env_secret",
    "gc_paused",
    "parse_anchor",
    "resolve_anchor",
    "run_cli",
    "serve_until_signalled",
    "serving_options",
]

Json = Any


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as served: what was asked and which status it got."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Json
    status: int


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One API request as a simulator's `_api` sees it. `body` is the decoded JSON (or, when
    `body_error`, the start of the undecodable text); `number` counts API requests from 1."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: Json
    body_error: bool
    number: int


@dataclass(slots=True)
class Response:
    """A simulator's answer. `raw`, when set, is sent as is instead of `body` as JSON."""

    status: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


def resolve_anchor(anchor: datetime | None) -> datetime:
    """The instant generated histories end before, in UTC: `anchor`, or today 00:00 UTC."""
    if anchor is None:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if anchor.tzinfo is None:
        raise ValueError(f"naive anchor {anchor!r}: the anchor must be timezone-aware")
    return anchor.astimezone(UTC)


def dump_json(body: Json) -> bytes:
    """Compact UTF-8 JSON, as the trackers send it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Defer the cyclic garbage collector while a request is answered.

    A simulator holds hundreds of thousands of long-lived objects; a request that allocates
    a lot (a GraphQL document, a page of 100 issues) otherwise triggers full collections
    that scan all of them and add 100 ms to random requests. Reference counting still frees
    almost everything at once; the deferred cycles are collected after the request.
    Re-entrant and shared by all threads: the collector is re-enabled when the last pause
    ends, and only if it was enabled when the first began.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedCache(Generic[_K, _V]):
    """A small least-recently-used map for answers derived from the data (sorted listings):
    keep `size` entries, forget the one used longest ago. Put a data version in the key and
    stale entries simply age out. Not thread-safe: use it under the simulator's lock."""

    def __init__(self, size: int = 32) -> None:
        if size < 1:
            raise ValueError("a cache needs room for at least one entry")
        self.size = size
        self._entries: OrderedDict[_K, _V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K) -> _V | None:
        """The value stored under `key` (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> _V:
        """Store `value` under `key`, dropping the least recently used beyond `size`."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


class CursorSigner:
    """Opaque, tamper-evident page cursors: a JSON payload and a truncated HMAC, base64url."""

    def __init__(self, label: str) -> None:
        self._secret = hashlib.sha256(label.encode()).digest()

    def _mac(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), "sha256").hexdigest()[:16]

    def sign(self, value: Json) -> str:
        """The cursor carrying `value` (anything JSON can hold)."""
        payload = json.dumps(value, separators=(",", ":"))
        signed = f"{payload}|{self._mac(payload)}".encode()
        return base64.urlsafe_b64encode(signed).decode().rstrip("=")

    def open(self, token: str) -> Json | None:
        """The value a cursor carries, or None when it is garbled or was not signed here."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        payload, _, mac = text.rpartition("|")
        if not payload or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            return json.loads(payload)
        except ValueError:
            return None


class Simulator(abc.ABC):
    """Lifecycle, request recording and control endpoints of an in-memory tracker.

    Subclasses hold their data under `self._lock` (re-entrant); every API request is recorded
    as a `RequestRecord`; control endpoints (`/_sim/...`) never need auth, are never rate
    limited or faulted and are not recorded. With `inject_faults`, API requests fail now and
    then in the ways of `syncd.simulator.faults`; faults answered without asking the tracker
    (rate limits, 5xx, HTML pages, dropped connections) are not recorded either.
    """

    server_name = "Simulator/1.0"
    content_type = "application/json"

    def __init__(
        self,
        *,
        seed: int,
        anchor: datetime | None,
        token: str | None,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self.seed = seed
        self.anchor = resolve_anchor(anchor)
        self.token = token
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._records: list[RequestRecord] = []
        self._api_count = 0
        self._control_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base = "http://127.0.0.1"
        self._faults: FaultInjector | None = None
        self._open = threading.Event()  # cleared while `held`: API requests wait
        self._open.set()
        self._hold_from: int | None = None  # `held_after`: the API request count to hold at
        self._waiting = 0  # API requests waiting while held

    # ------------------------------------------------------------------ to implement

    @abc.abstractmethod
    def _api(self, request: ApiRequest) -> Response:
        """Answer one tracker API request (anything outside `/_sim/`); called under the lock.
        Exceptions other than the tracker's own errors become a 500 from `_error`."""

    @abc.abstractmethod
    def _error(self, status: int, message: str) -> Response:
        """The tracker's error response carrying `message`."""

    @abc.abstractmethod
    def _stats(self) -> dict[str, Json]:
        """Tracker-specific counts merged into `GET /_sim/stats`."""

    @abc.abstractmethod
    def mutate(self, count: int, at: datetime | None = None) -> Sequence[Any]:
        """Give `count` items one plausible next change; returns what changed."""

    def _secondary_rate_limit(self, number: int, retry_after: int) -> Response | None:
        """This tracker's secondary-rate-limit refusal of API request `number`, asking to
        wait `retry_after` seconds; None for trackers that have no such limit."""
        return None

    # ------------------------------------------------------------------ faults

    def fault_kinds(self) -> tuple[str, ...]:
        """The fault kinds this simulator can inject."""
        if type(self)._secondary_rate_limit is Simulator._secondary_rate_limit:
            return tuple(kind for kind in KINDS if kind != "403-secondary")
        return KINDS

    def inject_faults(self, plan: FaultPlan | str | None, *, seed: int = 0) -> None:
        """Fail API requests from now on as `plan` says (a `FaultPlan`, or its text form
        `0.1` / `429=0.02,reset=0.01` drawn with `seed`); None stops injecting. Counts
        start again from zero."""
        if isinstance(plan, str):
            plan = FaultPlan.parse(plan, seed=seed)
        injector = FaultInjector(plan, self.fault_kinds()) if plan is not None else None
        with self._lock:
            self._faults = injector

    @property
    def faults(self) -> FaultInjector | None:
        """The fault injector in use (None when requests are not faulted)."""
        return self._faults

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Answer no API request until the block ends: clients wait on their requests, as
        on a tracker that stalls (control endpoints still answer). Tests use it to keep a
        sync in the middle of a run for as long as they need."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    @contextlib.contextmanager
    def held_after(self, count: int) -> Iterator[None]:
        """Answer `count` more API requests, then hold the next ones (as `held`) until the
        block ends: a sync stops at a chosen request however fast or slow it runs.
        `stalled` tells when a request waits."""
        with self._lock:
            self._hold_from = self._api_count + count
        try:
            yield
        finally:
            with self._lock:
                self._hold_from = None
            self._open.set()

    @property
    def stalled(self) -> bool:
        """Whether an API request is waiting (`held`, `held_after`)."""
        with self._lock:
            return self._waiting > 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:`port` (0 = any free port) in a daemon thread; return the base URL."""
        if self._server is not None:
            return self._base
        server = _Server(("127.0.0.1", port), self)
        self._server = server
        self._base = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self._base

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping = True  # kept-alive connections get no further answers
        server.halt.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL the simulator serves on (meaningful after `start`)."""
        return self._base

    # ------------------------------------------------------------------ observation

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every API request served (control endpoints excluded)."""
        with self._lock:
            return list(self._records)

    def reset_requests(self) -> None:
        """Forget recorded requests (rate-limit counters keep counting)."""
        with self._lock:
            self._records.clear()

    # ------------------------------------------------------------------ HTTP entry point

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, headers, body). Used by the server thread;
        raises DroppedConnection when an injected fault is no answer at all."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        injector = None if path.startswith("/_sim/") else self._faults
        fault = injector.draw() if injector is not None else None
        with gc_paused():
            response: Response | None = None
            if path.startswith("/_sim/"):
                with self._lock:
                    self._control_count += 1
                response = self._control(method, path, query)
            elif injector is not None and fault is not None:
                response = self._fault_response(fault, injector)
            if response is None:
                response = self._serve_api(method, path, query, headers, body)
            payload = response.raw if response.raw is not None else dump_json(response.body)
        out = {"Content-Type": self.content_type, **response.headers}
        if injector is not None and fault in BODY_KINDS and 200 <= response.status < 300:
            payload = self._bend(str(fault), injector, response.status, out, payload)
        return response.status, out, payload

    def _fault_response(self, fault: str, injector: FaultInjector) -> Response | None:
        """The answer standing in for the tracker's for `fault`; None when the tracker must
        answer first (faults that bend its answer). Raises DroppedConnection for faults
        that are no answer at all."""
        plan = injector.plan
        response: Response | None = None
        if fault == "429":
            response = self._error(429, "Rate limit exceeded. Try again later.")
            response.headers["Retry-After"] = str(plan.retry_after)
        elif fault == "429-bare":
            response = self._error(429, "Rate limit exceeded. Try again later.")
        elif fault == "403-secondary":
            with self._lock:
                number = self._api_count + 1
            response = self._secondary_rate_limit(number, plan.retry_after)
        elif fault == "500":
            response = self._error(500, "Internal server error")
        elif fault in ("502", "503", "504", "html"):
            status = 200 if fault == "html" else int(fault)
            response = Response(
                status, None, {"Content-Type": "text/html; charset=utf-8"}, raw=error_page(status)
            )
        elif fault in ("timeout", "reset"):
            injector.applied(fault)
            raise DroppedConnection(fault, hold=plan.hold if fault == "timeout" else 0.0)
        if response is not None:
            injector.applied(fault)
        return response

    def _bend(
        self,
        fault: str,
        injector: FaultInjector,
        status: int,
        headers: dict[str, str],
        payload: bytes,
    ) -> bytes:
        """The tracker's 2xx `payload` bent by a body fault (unchanged when it cannot be)."""
        if fault == "truncated" and len(payload) >= 2:
            injector.applied(fault)
            raise DroppedConnection(
                fault,
                head=(status, headers),
                partial=payload[: len(payload) // 2],
                length=len(payload),
            )
        bent = (
            cut_json(payload, injector)
            if fault == "malformed"
            else drop_creation_time(payload, injector)
            if fault == "missing-field"
            else None
        )
        if bent is None:
            return payload
        injector.applied(fault)
        return bent

    def _serve_api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        raw: bytes,
    ) -> Response:
        with self._lock:
            if self._hold_from is not None and self._api_count >= self._hold_from:
                self._open.clear()
            waits = not self._open.is_set()
            self._waiting += waits
        self._open.wait()
        if waits:
            with self._lock:
                self._waiting -= 1
        body: Json = None
        body_error = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, body_error = raw[:200].decode("utf-8", "replace"), True
        with self._lock:
            self._api_count += 1
            request = ApiRequest(method, path, query, headers, body, body_error, self._api_count)
            try:
                response = self._api(request)
            except Exception as error:  # a simulator bug: answer it rather than drop the socket
                response = self._error(
                    500, f"Internal simulator error: {type(error).__name__}: {error}"
                )
            self._records.append(RequestRecord(method, path, query, body, response.status))
            return response

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> Response:
        if path == "/_sim/mutate":
            if method != "POST":
                return self._error(405, "Use POST /_sim/mutate?count=N.")
            raw = (query.get("count") or ["1"])[0] or "1"
            try:
                count = int(raw)
            except ValueError:
                return self._error(400, f"The value '{raw}' is invalid for the parameter 'count'.")
            if count < 0:
                return self._error(400, "count must not be negative.")
            return Response(200, list(self.mutate(count)))
        if path == "/_sim/stats":
            with self._lock:
                by_path = Counter(r.path for r in self._records)
                faults = self._faults.counts() if self._faults is not None else None
                return Response(
                    200,
                    {
                        "requests": len(self._records),
                        "by_path": dict(sorted(by_path.items())),
                        **self._stats(),
                        "control_requests": self._control_count,
                        **({"faults": faults} if faults is not None else {}),
                    },
                )
        if path == "/_sim/faults":
            return self._control_faults(method, query)
        return self._error(404, f"Unknown control endpoint {path}.")

    def _control_faults(self, method: str, query: dict[str, list[str]]) -> Response:
        """`GET /_sim/faults`: plan and counts; `POST /_sim/faults?spec=0.1&seed=3` (also
        `retry_after`, `hold`): inject from now on (`spec=off` stops)."""
        if method == "POST":
            spec = (query.get("spec") or [""])[0].strip()
            try:
                plan = (
                    None
                    if spec in ("", "off", "0")
                    else FaultPlan.parse(
                        spec,
                        seed=int((query.get("seed") or ["0"])[0]),
                        retry_after=int((query.get("retry_after") or ["1"])[0]),
                        hold=float((query.get("hold") or [str(DEFAULT_HOLD)])[0]),
                    )
                )
                self.inject_faults(plan)
            except ValueError as error:
                return self._error(400, str(error))
        elif method != "GET":
            return self._error(405, "Use GET or POST /_sim/faults.")
        injector = self._faults
        return Response(
            200,
            injector.snapshot()
            if injector is not None
            else {"plan": None, "requests": 0, "injected": {}, "total": 0},
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def version_string(self) -> str:
        return cast(_Server, self.server).sim.server_name

    def _serve(self) -> None:
        server = cast(_Server, self.server)
        if server.stopping:
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, out, payload = server.sim.handle(self.command, self.path, headers, raw)
        except DroppedConnection as drop:
            self._drop(drop, server)
            return
        self.send_response(status)
        for name, value in out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self, drop: DroppedConnection, server: _Server) -> None:
        """Hold, cut short or reset the connection as an injected fault says."""
        self.close_connection = True
        if drop.hold > 0:
            server.halt.wait(drop.hold)
        if drop.head is not None:  # a body shorter than promised, then an orderly close
            status, headers = drop.head
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(drop.length))
            self.end_headers()
            self.wfile.write(drop.partial)
            return
        with contextlib.suppress(OSError):  # RST instead of FIN: a reset connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self.stopping = False
        self.halt = threading.Event()  # ends connections held by `timeout` faults
        super().__init__(address, _Handler)


# ---------------------------------------------------------------------- CLI


class CliError(Exception):
    """A command-line mistake: printed as `simulator: <message>`, exit code 2."""


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every simulator command has: port, seed, anchor, token, mutations."""
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--seed", type=int, default=1, help="generation seed")
    parser.add_argument(
        "--anchor",
        default=None,
        help="ISO instant the generated histories end before (default: today 00:00Z)",
    )
    parser.add_argument("--token-env", default=None, help="env var holding the expected token")
    parser.add_argument(
        "--mutate-every", type=float, default=0.0, help="seconds between mutations (0: never)"
    )
    parser.add_argument("--mutate-count", type=int, default=1, help="items changed per mutation")
    parser.add_argument(
        "--faults",
        default=None,
        help="fail API requests: a fraction over every kind (0.1) or kind=rate pairs "
        f"(429=0.02,reset=0.01); kinds: {', '.join(KINDS)}",
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--fault-retry-after", type=int, default=1, help="Retry-After seconds of 429/403 faults"
    )
    parser.add_argument(
        "--fault-hold",
        type=float,
        default=DEFAULT_HOLD,
        help="seconds a timeout fault holds the connection (beyond the client's timeout)",
    )


def serving_options(args: argparse.Namespace) -> dict[str, Any]:
    """The simulator keyword arguments behind `add_serving_arguments`' options: seed, anchor,
    token (read from the environment variable named by `--token-env`)."""
    return {
        "seed": args.seed,
        "anchor": parse_anchor(args.anchor),
        "token": env_secret(args.token_env),
    }


def env_secret(env: str | None) -> str | None:
    """The value of environment variable `env` (None when no variable is named)."""
    if not env:
        return None
    value = os.environ.get(env)
    if not value:
        raise CliError(f"environment variable {env} is not set")
    return value


def parse_anchor(text: str | None) -> datetime | None:
    """The `--anchor` option as an aware datetime (None when not given)."""
    if not text:
        return None
    try:
        anchor = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--anchor {text!r} is not an ISO 8601 instant") from None
    if anchor.tzinfo is None:
        raise CliError("--anchor needs an offset, e.g. 2025-01-01T00:00:00Z")
    return anchor


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    build: Callable[[argparse.Namespace], tuple[Simulator, Callable[[str], str]]],
) -> int:
    """A simulator command: parse `argv`, `build` the simulator and the banner from the
    options, serve until SIGINT/SIGTERM. Returns 0, or 2 (with `simulator: <why>` on stderr)
    when `build` refuses the options (CliError or ValueError)."""
    args = parser.parse_args(argv)
    try:
        sim, describe = build(args)
        if args.faults:
            sim.inject_faults(
                FaultPlan.parse(
                    args.faults,
                    seed=args.fault_seed,
                    retry_after=args.fault_retry_after,
                    hold=args.fault_hold,
                )
            )
    except (CliError, ValueError) as error:
        print(f"simulator: {error}", file=sys.stderr)
        return 2
    return serve_until_signalled(sim, args, describe)


def serve_until_signalled(
    sim: Simulator, args: argparse.Namespace, describe: Callable[[str], str]
) -> int:
    """Serve `sim` on `args.port` until SIGINT/SIGTERM, printing `describe(url)` once
    listening; returns 0. With `args.mutate_every` > 0, `args.mutate_count` items change
    every `args.mutate_every` seconds (the options of `add_serving_arguments`). Faults
    injected are printed when it stops."""
    port, mutate_every, mutate_count = args.port, args.mutate_every, args.mutate_count
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        url = sim.start(port)
        print(describe(url), flush=True)
        interval = mutate_every if mutate_every > 0 else 0.5
        while not stop.wait(interval):
            if mutate_every > 0:
                sim.mutate(mutate_count)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    injector = sim.faults
    if injector is not None:
        snapshot = injector.snapshot()
        counts = ", ".join(f"{kind}={n}" for kind, n in snapshot["injected"].items())
        print(
            f"simulator: {snapshot['total']} faults injected in {snapshot['requests']} API "
            f"requests" + (f" ({counts})" if counts else ""),
            flush=True,
        )
    return 0
