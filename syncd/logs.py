"""structlog set-up: readable console lines on a TTY, JSON lines otherwise, on stderr."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = ("debug", "info", "warning", "error")


class _StderrLogger:
    """Writes each rendered event to whatever `sys.stderr` is at that moment (a captured or
    redirected stream included), one line per event."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


class _IntoStructlog(logging.Handler):
    """Library loggers (APScheduler) go through the same renderer as syncd's own events."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(record.name).log(record.levelno, record.getMessage())


def configure(level: str = "info", *, json_lines: bool | None = None) -> None:
    """Configure structlog once per process. Events are one per page/run, never per record."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )
    for name in ("apscheduler",):
        library = logging.getLogger(name)
        library.handlers[:] = [_IntoStructlog()]
        library.setLevel(logging.WARNING)
        library.propagate = False
