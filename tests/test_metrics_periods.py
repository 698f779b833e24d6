"""UTC calendar periods: boundaries of days, ISO weeks, months and quarters."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.metrics.periods import PERIOD_KINDS, period_end, period_start, period_starts


def z(text: str) -> datetime:
    """Parse an ISO timestamp that carries its offset."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


def test_day_bounds() -> None:
    assert period_start("day", z("2025-01-07T13:45:10.123+00:00")) == z("2025-01-07T00:00+00:00")
    assert period_end("day", z("2025-01-07T00:00+00:00")) == z("2025-01-08T00:00+00:00")
    # Last instant of a year rolls into the next year's first day.
    assert period_end("day", z("2024-12-31T00:00+00:00")) == z("2025-01-01T00:00+00:00")


def test_day_uses_utc_not_local_calendar() -> None:
    # 2025-03-31 01:30 in Berlin (+02:00, summer time) is 2025-03-30 23:30 UTC.
    assert period_start("day", z("2025-03-31T01:30+02:00")) == z("2025-03-30T00:00+00:00")
    # The UTC day of the DST change is 24 hours long (Berlin's local day was 23 hours).
    start = z("2025-03-30T00:00+00:00")
    assert (period_end("day", start) - start) == timedelta(hours=24)


def test_week_is_iso_week_starting_monday() -> None:
    # 2025-03-30 is a Sunday: its ISO week began Monday 2025-03-24.
    assert period_start("week", z("2025-03-30T23:59:59.999+00:00")) == z("2025-03-24T00:00+00:00")
    # Monday 00:00 exactly starts a new week.
    assert period_start("week", z("2025-03-31T00:00+00:00")) == z("2025-03-31T00:00+00:00")
    assert period_end("week", z("2025-03-24T00:00+00:00")) == z("2025-03-31T00:00+00:00")


def test_week_one_starting_in_december() -> None:
    # 2025-01-01 is a Wednesday; ISO week 1 of 2025 starts Monday 2024-12-30.
    start = period_start("week", z("2025-01-01T12:00+00:00"))
    assert start == z("2024-12-30T00:00+00:00")
    assert start.isocalendar()[:2] == (2025, 1)
    assert period_end("week", start) == z("2025-01-06T00:00+00:00")
    # The Sunday before is still in 2024's week 52.
    assert period_start("week", z("2024-12-29T23:00+00:00")) == z("2024-12-23T00:00+00:00")


def test_week_crossing_year_end() -> None:
    # Thursday 2020-12-31 belongs to ISO week 2020-W53, Monday 2020-12-28 to Sunday 2021-01-03.
    assert period_start("week", z("2020-12-31T10:00+00:00")) == z("2020-12-28T00:00+00:00")
    assert period_end("week", z("2020-12-28T00:00+00:00")) == z("2021-01-04T00:00+00:00")


def test_month_bounds() -> None:
    assert period_start("month", z("2024-02-29T23:59+00:00")) == z("2024-02-01T00:00+00:00")
    assert period_end("month", z("2024-02-01T00:00+00:00")) == z("2024-03-01T00:00+00:00")
    assert period_end("month", z("2024-12-01T00:00+00:00")) == z("2025-01-01T00:00+00:00")
    # 2025-03-01 00:30 in +01:00 is still February in UTC.
    assert period_start("month", z("2025-03-01T00:30+01:00")) == z("2025-02-01T00:00+00:00")


def test_quarter_bounds() -> None:
    assert period_start("quarter", z("2024-11-15T08:00+00:00")) == z("2024-10-01T00:00+00:00")
    assert period_end("quarter", z("2024-10-01T00:00+00:00")) == z("2025-01-01T00:00+00:00")
    assert period_start("quarter", z("2025-03-31T23:59:59+00:00")) == z("2025-01-01T00:00+00:00")
    assert period_start("quarter", z("2025-04-01T00:00+00:00")) == z("2025-04-01T00:00+00:00")
    assert period_end("quarter", z("2025-07-01T00:00+00:00")) == z("2025-10-01T00:00+00:00")


def test_period_end_of_a_mid_period_instant_is_that_period_end() -> None:
    assert period_end("month", z("2025-01-17T05:00+00:00")) == z("2025-02-01T00:00+00:00")


def test_period_starts_inclusive_of_last_period() -> None:
    starts = period_starts("week", z("2025-01-08T00:00+00:00"), z("2025-01-20T00:00+00:00"))
    # Jan 20 is a Monday: the week it starts is included.
    assert starts == [
        z("2025-01-06T00:00+00:00"),
        z("2025-01-13T00:00+00:00"),
        z("2025-01-20T00:00+00:00"),
    ]
    assert period_starts("month", z("2024-11-30T00:00+00:00"), z("2025-01-01T00:00+00:00")) == [
        z("2024-11-01T00:00+00:00"),
        z("2024-12-01T00:00+00:00"),
        z("2025-01-01T00:00+00:00"),
    ]
    assert period_starts("quarter", z("2025-01-02T00:00+00:00"), z("2025-01-01T00:00+00:00")) == []
    same = z("2025-05-05T05:05+00:00")
    assert period_starts("quarter", same, same) == [z("2025-04-01T00:00+00:00")]


def test_rejects_unknown_kind_and_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        period_start("year", z("2025-01-01T00:00+00:00"))
    with pytest.raises(ValueError):
        period_start("day", datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        period_starts("fortnight", z("2025-01-01T00:00+00:00"), z("2025-02-01T00:00+00:00"))


instants = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
)


@given(kind=st.sampled_from(PERIOD_KINDS), t=instants)
def test_period_contains_instant_and_periods_tile(kind: str, t: datetime) -> None:
    start = period_start(kind, t)
    end = period_end(kind, start)
    assert start.tzinfo is UTC and start.utcoffset() == timedelta(0)
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert start <= t < end
    assert period_start(kind, end) == end
    assert period_start(kind, end - timedelta(microseconds=1)) == start
    if kind == "week":
        assert start.weekday() == 0
    if kind in ("month", "quarter"):
        assert start.day == 1
    if kind == "quarter":
        assert start.month in (1, 4, 7, 10)


@given(kind=st.sampled_from(PERIOD_KINDS), a=instants, b=instants)
def test_period_starts_are_consecutive_and_cover(kind: str, a: datetime, b: datetime) -> None:
    first, last = min(a, b), max(a, b)
    starts = period_starts(kind, first, last)
    assert starts[0] == period_start(kind, first)
    assert starts[-1] == period_start(kind, last)
    for earlier, later in itertools.pairwise(starts):
        assert period_end(kind, earlier) == later
