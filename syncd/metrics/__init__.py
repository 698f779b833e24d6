"""Flow Framework metrics computed from item transition histories (pure, no I/O).

See docs/metrics.md for the definition of every figure and the choices behind them.
"""

from syncd.metrics.compute import (
    AgeStats,
    FlowTimeStats,
    MetricItem,
    MetricRow,
    compute_all,
    compute_periods,
    percentile,
    touched_periods,
)
from syncd.metrics.figures import ItemFigures, ItemTimeline, item_figures, item_timeline, stage_at
from syncd.metrics.periods import PERIOD_KINDS, period_end, period_start, period_starts

__all__ = [
    "PERIOD_KINDS",
    "AgeStats",
    "FlowTimeStats",
    "ItemFigures",
    "ItemTimeline",
    "MetricItem",
    "MetricRow",
    "compute_all",
    "compute_periods",
    "item_figures",
    "item_timeline",
    "percentile",
    "period_end",
    "period_start",
    "period_starts",
    "stage_at",
    "touched_periods",
]
