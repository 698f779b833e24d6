"""Serving the API: uvicorn on its own thread, for `syncd serve` and inside `syncd run`.

The listening socket is bound when the server is made, so a taken port or a bad address is
an error at start-up naming the address, and connections made before the thread runs wait
in the backlog. uvicorn never sees a signal: the caller owns them (the daemon's stop event,
or `serve_until_signalled`), so SIGTERM ends a request in flight gracefully and exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType
from typing import Any

import structlog
import uvicorn

from syncd.errors import ConfigError, SyncdError

log = structlog.get_logger("syncd.api")

#: how long stopping waits for requests in flight
GRACE_SECONDS = 5


class _IntoStructlog(logging.Handler):
    """uvicorn's own log records, rendered like every other syncd event."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(record.name).log(record.levelno, record.getMessage())


def split_listen(address: str) -> tuple[str, int]:
    """'host:port' (IPv6 hosts in brackets) → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"expected 'host:port', got {address!r}", key="api.listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SyncdError(f"the API cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """The ASGI app served on `listen` by uvicorn, on a thread of its own."""

    def __init__(self, app: Any, listen: str) -> None:
        host, port = split_listen(listen)
        self._socket = _bind(host, port)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            library = logging.getLogger(name)
            library.handlers[:] = [_IntoStructlog()]
            library.setLevel(logging.WARNING)
            library.propagate = False
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,  # one event per request would drown the sync's events
            server_header=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=GRACE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="syncd-api"
        )
        self._thread.daemon = True

    def __repr__(self) -> str:
        return f"ApiServer({self.address!r})"

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        self._thread.start()
        log.info("api.listening", address=self.address)

    def stop(self) -> None:
        """Stop accepting, let requests in flight end (up to GRACE_SECONDS), close."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(GRACE_SECONDS + 5)
        self._socket.close()

    def serve_until_signalled(self) -> None:
        """Serve in the foreground until SIGTERM or SIGINT (the main thread only)."""
        stopping = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("api.stopping", signal=signal.Signals(signum).name)
            stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stopping.wait(1.0) and self._thread.is_alive():
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
