"""Fault injection for every tracker simulator: the ways a tracker, or what stands in front of
it, answers badly.

A `FaultPlan` says how often each kind of fault happens per API request (`--faults 0.1`
spreads 10 % over every kind the simulator has; `--faults 429=0.02,500=0.03,reset=0.01`
names them). A `FaultInjector` draws one fault (or none) per API request from a seeded
random sequence, so a run is reproducible given the seed and the order requests arrive in,
and counts the faults it applied. `syncd.simulator.common` applies them; the control
endpoints under `/_sim/` are never faulted.

Kinds:

- `429` rate limited with `Retry-After`, `429-bare` without it (the client backs off alone);
- `403-secondary` GitHub's secondary rate limit (only simulators that have one);
- `500` the tracker's own error body; `502`, `503`, `504` a proxy's HTML error page;
- `timeout` the connection is held longer than the client waits, then dropped;
- `reset` the connection is reset without a response;
- `truncated` a 2xx whose `Content-Length` promises more than is sent;
- `html` a 200 HTML page (a login or maintenance page) instead of JSON;
- `malformed` a 200 whose JSON document stops mid-way (the framing is intact);
- `missing-field` one record of a 2xx JSON body loses its creation timestamp, a key every
  connector requires of items and of their history entries.

The last four need the real answer, so the tracker answers first and the fault bends its
body; on an answer they cannot bend (not 2xx, empty, no record list) nothing is injected.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BODY_KINDS",
    "DROP_KINDS",
    "KINDS",
    "DroppedConnection",
    "FaultInjector",
    "FaultPlan",
    "drop_creation_time",
    "error_page",
]

KINDS: tuple[str, ...] = (
    "429",
    "429-bare",
    "403-secondary",
    "500",
    "502",
    "503",
    "504",
    "timeout",
    "reset",
    "truncated",
    "html",
    "malformed",
    "missing-field",
)
#: faults that need the connection rather than a response
DROP_KINDS = frozenset({"timeout", "reset", "truncated"})
#: faults that bend the tracker's real answer
BODY_KINDS = frozenset({"truncated", "malformed", "missing-field"})
#: keys holding a record's creation time, in the trackers' spellings
CREATION_KEYS = ("created", "created_at", "createdAt")

#: seconds a `timeout` holds the connection: beyond syncd's default 30 s client timeout
DEFAULT_HOLD = 35.0


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How often faults happen, per API request. Either `total`, spread evenly over the kinds
    the simulator has, or `rates` by kind. `retry_after` is the wait (seconds) the rate-limit
    faults ask for; `hold` how long a `timeout` keeps the connection before dropping it."""

    total: float = 0.0
    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: int = 1
    hold: float = DEFAULT_HOLD

    def __post_init__(self) -> None:
        if not 0.0 <= self.total <= 1.0:
            raise ValueError(f"a fault rate is a fraction of requests in [0, 1], not {self.total}")
        for kind, rate in self.rates.items():
            if kind not in KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate of {kind} must be in [0, 1], not {rate}")
        if self.total and self.rates:
            raise ValueError("give either one rate for every kind or rates by kind, not both")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        if self.retry_after < 0 or self.hold < 0:
            raise ValueError("retry_after and hold must not be negative")

    @classmethod
    def parse(
        cls, spec: str, *, seed: int = 0, retry_after: int = 1, hold: float = DEFAULT_HOLD
    ) -> FaultPlan:
        """`0.1` (10 % of requests, every kind alike) or `429=0.02,500=0.03,reset=0.01`."""
        text = spec.strip()
        extra: dict[str, Any] = {"seed": seed, "retry_after": retry_after, "hold": hold}
        if "=" not in text:
            try:
                return cls(total=float(text or 0), **extra)
            except ValueError as error:
                if "could not convert" in str(error):
                    raise ValueError(
                        f"--faults {spec!r}: expected a fraction like 0.1 or kind=rate pairs"
                    ) from None
                raise
        rates: dict[str, float] = {}
        for part in text.split(","):
            kind, sep, value = part.partition("=")
            kind = kind.strip()
            try:
                rate = float(value)
            except ValueError:
                raise ValueError(f"--faults {spec!r}: {part.strip()!r} is not kind=rate") from None
            if not sep or not kind:
                raise ValueError(f"--faults {spec!r}: {part.strip()!r} is not kind=rate")
            if kind in rates:
                raise ValueError(f"--faults {spec!r}: {kind} is given twice")
            rates[kind] = rate
        return cls(rates=rates, **extra)

    def resolve(self, available: Sequence[str]) -> dict[str, float]:
        """Rate by kind for a simulator offering `available` kinds."""
        if self.total:
            return {kind: self.total / len(available) for kind in available}
        missing = sorted(set(self.rates) - set(available))
        if missing:
            raise ValueError(f"this simulator cannot inject {', '.join(missing)}")
        return {kind: rate for kind, rate in self.rates.items() if rate > 0}

    def describe(self) -> dict[str, Any]:
        """The plan as JSON, for `/_sim/faults`."""
        return {
            "total": self.total,
            "rates": dict(self.rates),
            "seed": self.seed,
            "retry_after": self.retry_after,
            "hold": self.hold,
        }


class FaultInjector:
    """Draws a fault (or none) per API request and counts the faults actually applied.
    Thread-safe; deterministic given the plan's seed and the order of `draw` calls."""

    def __init__(self, plan: FaultPlan, available: Sequence[str]) -> None:
        self.plan = plan
        self._rates = plan.resolve(available)
        self._order = [kind for kind in KINDS if kind in self._rates]
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._drawn = 0
        self._injected: Counter[str] = Counter()

    def draw(self) -> str | None:
        """The fault for the next API request, or None."""
        with self._lock:
            self._drawn += 1
            roll = self._rng.random()
        for kind in self._order:
            roll -= self._rates[kind]
            if roll < 0:
                return kind
        return None

    def choose(self, count: int) -> int:
        """A seeded index in range(count), for a fault that picks what to bend."""
        with self._lock:
            return self._rng.randrange(count)

    def applied(self, kind: str) -> None:
        """Count a fault that was injected."""
        with self._lock:
            self._injected[kind] += 1

    def counts(self) -> dict[str, int]:
        """Faults injected so far, by kind (kinds never injected are left out)."""
        with self._lock:
            return {kind: self._injected[kind] for kind in KINDS if self._injected[kind]}

    def snapshot(self) -> dict[str, Any]:
        """Plan, requests drawn for and faults injected, for `/_sim/faults`."""
        with self._lock:
            drawn = self._drawn
        return {
            "plan": self.plan.describe(),
            "rates": dict(self._rates),
            "requests": drawn,
            "injected": self.counts(),
            "total": sum(self.counts().values()),
        }


class DroppedConnection(Exception):
    """A fault no HTTP response can express: the server thread holds the connection for
    `hold` seconds, then, for `truncated`, sends `head` (status, headers) announcing `length`
    bytes followed by only `partial`, and closes (resets, for the others) the connection."""

    def __init__(
        self,
        kind: str,
        *,
        hold: float = 0.0,
        head: tuple[int, dict[str, str]] | None = None,
        partial: bytes = b"",
        length: int = 0,
    ) -> None:
        super().__init__(kind)
        self.kind = kind
        self.hold = hold
        self.head = head
        self.partial = partial
        self.length = length


_REASONS = {
    200: "Service maintenance",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def error_page(status: int) -> bytes:
    """The HTML a proxy or a maintenance page answers with instead of the API's JSON."""
    title = _REASONS.get(status, f"{status} Error")
    text = (
        "The service is down for maintenance. Please sign in again later."
        if status == 200
        else title
    )
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{text}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def cut_json(payload: bytes, injector: FaultInjector) -> bytes | None:
    """`payload` stopped at a seeded point in its second half (None when too short)."""
    if len(payload) < 4:
        return None
    half = len(payload) // 2
    return payload[: half + injector.choose(len(payload) - half - 1)]


def _record_lists(node: Any, out: list[list[dict[str, Any]]]) -> None:
    """Every list of objects in `node` (depth first, in document order) whose elements carry
    a creation time, directly or in a direct child object (Jira's `fields.created`)."""
    if isinstance(node, dict):
        for value in node.values():
            _record_lists(value, out)
    elif isinstance(node, list):
        if node and all(isinstance(e, dict) for e in node) and any(_creation(e) for e in node):
            out.append(node)
        for element in node:
            _record_lists(element, out)


def _creation(record: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    for key in CREATION_KEYS:
        if key in record:
            return record, key
    for value in record.values():
        if isinstance(value, dict):
            for key in CREATION_KEYS:
                if key in value:
                    return value, key
    return None


def drop_creation_time(payload: bytes, injector: FaultInjector) -> bytes | None:
    """`payload` (JSON) with the creation timestamp removed from one seeded record of one
    seeded record list; None when the payload is not JSON or has no record list."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    lists: list[list[dict[str, Any]]] = []
    _record_lists(document, lists)
    if not lists:
        return None
    records = lists[injector.choose(len(lists))]
    candidates = [found for found in (_creation(r) for r in records) if found is not None]
    holder, key = candidates[injector.choose(len(candidates))]
    del holder[key]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
