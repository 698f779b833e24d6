"""Calendar periods in UTC: the buckets every flow metric is reported in.

A period is a half-open interval ``[start, end)`` of UTC calendar time: a day, an ISO week
(Monday 00:00 UTC to the next Monday), a calendar month or a calendar quarter. UTC is used
on purpose: local calendars have 23- and 25-hour days around daylight-saving changes, and a
warehouse that mixes trackers from several time zones needs one calendar for all of them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from syncd.domain import utc

PERIOD_KINDS: tuple[str, ...] = ("day", "week", "month", "quarter")

_ONE_DAY = timedelta(days=1)
_ONE_WEEK = timedelta(days=7)


def _check_kind(kind: str) -> None:
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown period kind {kind!r}: expected one of {PERIOD_KINDS}")


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + (d.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def period_start(kind: str, t: datetime) -> datetime:
    """Return the start of the UTC period of `kind` that contains `t`.

    `t` may carry any UTC offset (it is converted first); the result is aware UTC midnight.
    Weeks are ISO weeks, so they start on Monday and week 1 of a year may start in December.
    """
    _check_kind(kind)
    d = utc(t).date()
    if kind == "day":
        return _midnight(d)
    if kind == "week":
        return _midnight(d - timedelta(days=d.weekday()))
    if kind == "month":
        return _midnight(d.replace(day=1))
    return _midnight(date(d.year, 3 * ((d.month - 1) // 3) + 1, 1))


def period_end(kind: str, start: datetime) -> datetime:
    """Return the exclusive end of the period of `kind` that starts at (or contains) `start`.

    The end is also the start of the next period, so consecutive periods tile the time line.
    """
    first = period_start(kind, start)
    if kind == "day":
        return first + _ONE_DAY
    if kind == "week":
        return first + _ONE_WEEK
    months = 1 if kind == "month" else 3
    return _midnight(_add_months(first.date(), months))


def period_starts(kind: str, first: datetime, last: datetime) -> list[datetime]:
    """Return, in order, the starts of every period of `kind` that intersects ``[first, last]``.

    The period containing `last` is included even when `last` is its first instant. An empty
    list is returned when `first` is after `last`.
    """
    _check_kind(kind)
    last = utc(last)
    if utc(first) > last:
        return []
    starts: list[datetime] = []
    current = period_start(kind, first)
    while current <= last:
        starts.append(current)
        current = period_end(kind, current)
    return starts
