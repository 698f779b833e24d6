"""Flow Framework metrics per value stream, flow type and calendar period.

Pure computation over items and their transition histories: no storage, no clock. The
caller passes the as-of instant, so a run is reproducible and a past state can be
recomputed exactly. Definitions and every choice behind them are in docs/metrics.md.

Cost: each item's history is read once; the item then visits only the requested periods it
touches (found by bisection), so computing a few dirty periods after a sync costs in
proportion to the items in those periods, not to items x periods.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from syncd.domain import ALL, FLOW_TYPES, Stage, Transition, utc
from syncd.metrics.figures import ItemFigures, ItemTimeline, item_timeline
from syncd.metrics.periods import PERIOD_KINDS, period_end, period_start
from syncd.metrics.periods import period_starts as _period_starts

_TYPE_INDEX: dict[str, int] = {flow_type: i for i, flow_type in enumerate(FLOW_TYPES)}
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class MetricItem:
    """One flow item as the metrics see it: its current flow type and its history.

    `transitions` are ordered by time and the first one is the creation. A list is accepted
    and stored as a tuple. A flow type outside FLOW_TYPES is rejected, because a row set
    that silently dropped an item would under-report.
    """

    key: str
    flow_type: str
    transitions: tuple[Transition, ...]

    def __post_init__(self) -> None:
        if self.flow_type not in _TYPE_INDEX:
            raise ValueError(
                f"item {self.key!r}: unknown flow type {self.flow_type!r}, "
                f"expected one of {FLOW_TYPES}"
            )
        if not isinstance(self.transitions, tuple):
            object.__setattr__(self, "transitions", tuple(self.transitions))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the `q`-th percentile (0..100) of `values`, or None when there are none.

    Linear interpolation between closest ranks, as numpy's default ``linear`` method, pandas
    ``quantile`` and Excel ``PERCENTILE.INC``: rank ``h = (n - 1) * q / 100``, then
    ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`` on the sorted values.
    The arithmetic is exact (rationals) and rounded once, so results do not depend on the
    order of `values`.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], got {q!r}")
    if not values:
        return None
    ordered = sorted(float(v) for v in values)
    if not all(math.isfinite(v) for v in ordered):
        raise ValueError("percentile of non-finite values")
    return percentile_sorted(ordered.__getitem__, len(ordered), q)


def percentile_sorted(value_at: Callable[[int], float], n: int, q: float) -> float:
    """The `q`-th percentile of `n` > 0 finite values in ascending order, as
    :func:`percentile` computes it, reading only the (at most two) values it needs through
    `value_at(index)`: callers that keep values sorted pay O(1) per percentile."""
    if float(q).is_integer():
        # the same exact arithmetic in integers: rank = low + rest / 100, and
        # a + rest/100 * (b - a) = ((100 - rest) * a + rest * b) / 100, rounded once
        low, rest = divmod((n - 1) * int(q), 100)
        if rest == 0:
            return value_at(low)
        (na, da), (nb, db) = value_at(low).as_integer_ratio(), value_at(low + 1).as_integer_ratio()
        common = max(da, db)  # both are powers of two
        numerator = (100 - rest) * na * (common // da) + rest * nb * (common // db)
        return numerator / (100 * common)
    rank = Fraction(n - 1) * Fraction(q) / 100
    low = math.floor(rank)
    fraction = rank - low
    if fraction == 0:
        return value_at(low)
    a, b = Fraction(value_at(low)), Fraction(value_at(low + 1))
    return float(a + fraction * (b - a))


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class FlowTimeStats:
    """Distribution of the flow times (seconds) of the items finished in a period."""

    count: int
    mean_s: float | None
    p50_s: float | None
    p85_s: float | None
    p95_s: float | None
    max_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> FlowTimeStats:
        """Summarise `values`; an empty sequence gives count 0 and nulls."""
        return cls(
            count=len(values),
            mean_s=_mean(values),
            p50_s=percentile(values, 50),
            p85_s=percentile(values, 85),
            p95_s=percentile(values, 95),
            max_s=max(values) if values else None,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored for these statistics."""
        return {
            "count": self.count,
            "mean_s": self.mean_s,
            "p50_s": self.p50_s,
            "p85_s": self.p85_s,
            "p95_s": self.p95_s,
            "max_s": self.max_s,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FlowTimeStats:
        """Inverse of :meth:`to_json`."""
        return cls(
            count=int(d["count"]),
            mean_s=_opt_float(d["mean_s"]),
            p50_s=_opt_float(d["p50_s"]),
            p85_s=_opt_float(d["p85_s"]),
            p95_s=_opt_float(d["p95_s"]),
            max_s=_opt_float(d["max_s"]),
        )


@dataclass(frozen=True, slots=True)
class AgeStats:
    """Ages (seconds since work start) of the items in progress at the end of a period."""

    count: int
    p50_s: float | None
    p85_s: float | None
    max_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> AgeStats:
        """Summarise `values`; an empty sequence gives count 0 and nulls."""
        return cls(
            count=len(values),
            p50_s=percentile(values, 50),
            p85_s=percentile(values, 85),
            max_s=max(values) if values else None,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored for these statistics."""
        return {"count": self.count, "p50_s": self.p50_s, "p85_s": self.p85_s, "max_s": self.max_s}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AgeStats:
        """Inverse of :meth:`to_json`."""
        return cls(
            count=int(d["count"]),
            p50_s=_opt_float(d["p50_s"]),
            p85_s=_opt_float(d["p85_s"]),
            max_s=_opt_float(d["max_s"]),
        )


def _opt_shares(d: Any) -> dict[str, float] | None:
    return None if d is None else {str(k): float(v) for k, v in d.items()}


@dataclass(frozen=True, slots=True)
class MetricRow:
    """The flow metrics of one (value stream, flow type or ALL, period) bucket.

    ``distribution`` and ``load_distribution`` are set on ALL rows only.
    """

    value_stream: str
    flow_type: str
    period: str
    period_start: datetime
    velocity: int
    flow_time: FlowTimeStats
    efficiency: float | None
    efficiency_mean: float | None
    load_end: int
    load_avg: float | None
    distribution: dict[str, float] | None
    load_distribution: dict[str, float] | None
    age: AgeStats

    def to_json(self) -> dict[str, Any]:
        """Return the row as a JSON-ready dict; ``period_start`` is the ISO date of the
        period's first UTC day (periods always start at UTC midnight)."""
        return {
            "value_stream": self.value_stream,
            "flow_type": self.flow_type,
            "period": self.period,
            "period_start": self.period_start.date().isoformat(),
            "velocity": self.velocity,
            "flow_time": self.flow_time.to_json(),
            "efficiency": self.efficiency,
            "efficiency_mean": self.efficiency_mean,
            "load_end": self.load_end,
            "load_avg": self.load_avg,
            "distribution": None if self.distribution is None else dict(self.distribution),
            "load_distribution": (
                None if self.load_distribution is None else dict(self.load_distribution)
            ),
            "age": self.age.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MetricRow:
        """Inverse of :meth:`to_json`: ``MetricRow.from_json(row.to_json()) == row``."""
        start = datetime.fromisoformat(str(d["period_start"]))
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else utc(start)
        return cls(
            value_stream=str(d["value_stream"]),
            flow_type=str(d["flow_type"]),
            period=str(d["period"]),
            period_start=start,
            velocity=int(d["velocity"]),
            flow_time=FlowTimeStats.from_json(d["flow_time"]),
            efficiency=_opt_float(d["efficiency"]),
            efficiency_mean=_opt_float(d["efficiency_mean"]),
            load_end=int(d["load_end"]),
            load_avg=_opt_float(d["load_avg"]),
            distribution=_opt_shares(d["distribution"]),
            load_distribution=_opt_shares(d["load_distribution"]),
            age=AgeStats.from_json(d["age"]),
        )


# --- touched periods ---------------------------------------------------------------------


def _touched_ranges(
    kind: str, figures: ItemFigures, as_of: datetime
) -> list[tuple[datetime, datetime]]:
    """The periods an item touches, as inclusive ranges of period starts."""
    ranges: list[tuple[datetime, datetime]] = []
    if figures.work_start is not None:
        last = figures.work_end if figures.work_end is not None else as_of
        first = period_start(kind, figures.work_start)
        if first == figures.work_start:
            # Work started on a boundary instant: by "stage at t applies at <= t" the item
            # is already in the load at the end of the period that ends there.
            first = period_start(kind, figures.work_start - _ONE_MICROSECOND)
        if figures.work_start <= last:
            ranges.append((first, period_start(kind, last)))
    if figures.work_end is not None:
        end_period = period_start(kind, figures.work_end)
        ranges.append((end_period, end_period))
    return ranges


def _touched(kind: str, figures: ItemFigures, as_of: datetime) -> set[datetime]:
    touched: set[datetime] = set()
    for first, last in _touched_ranges(kind, figures, as_of):
        touched.update(_period_starts(kind, first, last))
    return touched


def touched_among(
    kind: str, figures: ItemFigures, as_of: datetime, starts: Sequence[datetime]
) -> set[datetime]:
    """`touched_periods` restricted to `starts` (sorted period starts of `kind`), for figures
    already computed at `as_of`: costs a bisection per range, however long the item's flow."""
    out: set[datetime] = set()
    for first, last in _touched_ranges(kind, figures, as_of):
        out.update(starts[bisect_left(starts, first) : bisect_right(starts, last)])
    return out


def touched_periods(kind: str, transitions: Sequence[Transition], as_of: datetime) -> set[datetime]:
    """Return the starts of the periods of `kind` whose figures this item contributes to.

    Transitions after `as_of` are ignored. These are every period intersecting
    ``[work start, work end or as_of]`` when the item has a work start, the period that ends
    exactly at the work start when that falls on a boundary (the load at that period's end
    instant includes the item), and the period containing the work end when there is one.
    An item never started and not finished touches nothing. After a change to an item, the
    periods to recompute are the union of its old and new touched periods.
    """
    _check_kind(kind)
    as_of = utc(as_of)
    return _touched(kind, item_timeline(transitions, as_of).figures, as_of)


# --- aggregation -------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown period kind {kind!r}: expected one of {PERIOD_KINDS}")


@dataclass(slots=True)
class _Bucket:
    """Running sums for one (period, flow type)."""

    velocity: int = 0
    flow_times: list[float] = field(default_factory=list)
    active_times: list[float] = field(default_factory=list)
    efficiencies: list[float] = field(default_factory=list)
    load_end: int = 0
    load_time: timedelta = timedelta(0)
    ages: list[float] = field(default_factory=list)

    def absorb(self, other: _Bucket) -> None:
        self.velocity += other.velocity
        self.flow_times.extend(other.flow_times)
        self.active_times.extend(other.active_times)
        self.efficiencies.extend(other.efficiencies)
        self.load_end += other.load_end
        self.load_time += other.load_time
        self.ages.extend(other.ages)


@dataclass(slots=True)
class _Grid:
    """The requested periods, sorted, with their ends and effective ends (min(end, as_of))."""

    starts: list[datetime]
    ends: list[datetime]
    effective_ends: list[datetime]
    buckets: list[list[_Bucket]]


def _make_grid(kind: str, starts: Iterable[datetime], as_of: datetime) -> _Grid:
    chosen: set[datetime] = set()
    for raw in starts:
        start = utc(raw)
        if period_start(kind, start) != start:
            raise ValueError(f"{raw.isoformat()} is not the start of a {kind} period")
        if start <= as_of:
            chosen.add(start)
    ordered = sorted(chosen)
    ends = [period_end(kind, s) for s in ordered]
    return _Grid(
        starts=ordered,
        ends=ends,
        effective_ends=[min(end, as_of) for end in ends],
        buckets=[[_Bucket() for _ in FLOW_TYPES] for _ in ordered],
    )


def _accumulate(grid: _Grid, type_index: int, timeline: ItemTimeline, as_of: datetime) -> None:
    """Add one item to every requested period it touches, and to no other."""
    figures = timeline.figures
    if figures.outcome is Stage.DONE and figures.work_end is not None:
        i = bisect_right(grid.starts, figures.work_end) - 1
        if i >= 0 and figures.work_end < grid.ends[i]:
            bucket = grid.buckets[i][type_index]
            bucket.velocity += 1
            if figures.flow_time_s is not None and figures.active_s is not None:
                bucket.flow_times.append(figures.flow_time_s)
                bucket.active_times.append(figures.active_s)
                if figures.efficiency is not None:
                    bucket.efficiencies.append(figures.efficiency)

    work_start = figures.work_start
    if work_start is None:
        return
    n = len(grid.starts)
    for seg_start, seg_end in timeline.in_progress:
        still_open = seg_end is None
        end = as_of if seg_end is None else seg_end
        # First requested period whose end is at or after the segment start; effective ends
        # are >= seg_start too, since seg_start <= as_of.
        i = bisect_left(grid.ends, seg_start)
        while i < n and grid.starts[i] <= end:
            effective_end = grid.effective_ends[i]
            bucket = grid.buckets[i][type_index]
            overlap = min(end, effective_end) - max(seg_start, grid.starts[i])
            if overlap > timedelta(0):
                bucket.load_time += overlap
            if seg_start <= effective_end and (effective_end < end or still_open):
                bucket.load_end += 1
                bucket.ages.append((effective_end - work_start).total_seconds())
            i += 1


def _row(
    value_stream: str,
    kind: str,
    flow_type: str,
    start: datetime,
    effective_end: datetime,
    bucket: _Bucket,
    by_type: list[_Bucket] | None,
) -> MetricRow:
    total_flow = math.fsum(bucket.flow_times)
    efficiency = math.fsum(bucket.active_times) / total_flow if total_flow > 0 else None
    length = effective_end - start
    distribution: dict[str, float] | None = None
    load_distribution: dict[str, float] | None = None
    if by_type is not None:
        if bucket.velocity:
            distribution = {
                ft: by_type[i].velocity / bucket.velocity for i, ft in enumerate(FLOW_TYPES)
            }
        if bucket.load_end:
            load_distribution = {
                ft: by_type[i].load_end / bucket.load_end for i, ft in enumerate(FLOW_TYPES)
            }
    return MetricRow(
        value_stream=value_stream,
        flow_type=flow_type,
        period=kind,
        period_start=start,
        velocity=bucket.velocity,
        flow_time=FlowTimeStats.of(bucket.flow_times),
        efficiency=efficiency,
        efficiency_mean=_mean(bucket.efficiencies),
        load_end=bucket.load_end,
        load_avg=bucket.load_time / length if length > timedelta(0) else None,
        distribution=distribution,
        load_distribution=load_distribution,
        age=AgeStats.of(bucket.ages),
    )


def _rows(value_stream: str, kind: str, grid: _Grid) -> list[MetricRow]:
    rows: list[MetricRow] = []
    for start, effective_end, by_type in zip(
        grid.starts, grid.effective_ends, grid.buckets, strict=True
    ):
        total = _Bucket()
        for bucket in by_type:
            total.absorb(bucket)
        rows.append(_row(value_stream, kind, ALL, start, effective_end, total, by_type))
        for flow_type, bucket in zip(FLOW_TYPES, by_type, strict=True):
            rows.append(_row(value_stream, kind, flow_type, start, effective_end, bucket, None))
    return rows


def _prepare(items: Iterable[MetricItem], as_of: datetime) -> list[tuple[int, ItemTimeline]]:
    return [(_TYPE_INDEX[it.flow_type], item_timeline(it.transitions, as_of)) for it in items]


def _compute(
    value_stream: str,
    kind: str,
    prepared: Iterable[tuple[int, ItemTimeline]],
    starts: Iterable[datetime],
    as_of: datetime,
) -> list[MetricRow]:
    grid = _make_grid(kind, starts, as_of)
    if grid.starts:
        for type_index, timeline in prepared:
            _accumulate(grid, type_index, timeline, as_of)
    return _rows(value_stream, kind, grid)


def compute_periods(
    value_stream: str,
    kind: str,
    items: Iterable[MetricItem],
    period_starts: Iterable[datetime],
    as_of: datetime,
) -> list[MetricRow]:
    """Return the metric rows of `value_stream` for the requested periods, as of `as_of`.

    `items` are the value stream's items; transitions after `as_of` are ignored and periods
    starting after `as_of` are skipped. Each requested start must be the start of a `kind`
    period. Every period gets six rows, ALL first and then FLOW_TYPES in order, with zeros
    and nulls where nothing happened; rows are sorted by (period start, that order). The
    rows of a period do not depend on which other periods are requested.
    """
    _check_kind(kind)
    as_of = utc(as_of)
    prepared = (
        (_TYPE_INDEX[item.flow_type], item_timeline(item.transitions, as_of)) for item in items
    )
    return _compute(value_stream, kind, prepared, period_starts, as_of)


def compute_all(
    value_stream: str, kind: str, items: Iterable[MetricItem], as_of: datetime
) -> list[MetricRow]:
    """Return the rows of every period that any item touches (see :func:`touched_periods`),
    as of `as_of`: the full recompute that incremental updates must agree with."""
    _check_kind(kind)
    as_of = utc(as_of)
    prepared = _prepare(items, as_of)
    starts: set[datetime] = set()
    for _, timeline in prepared:
        starts |= _touched(kind, timeline.figures, as_of)
    return _compute(value_stream, kind, prepared, starts, as_of)
