"""The Jira simulator's world: catalogues, the in-memory issue model and its seeded generator.

Nothing here knows HTTP. `generate()` builds issues whose histories look like real Jira
work: forward flow through the catalogue, pauses, backward moves, reopens, cancellations,
non-status changes and multi-item histories. Times are kept as integer epoch milliseconds
(UTC) because that is cheap to generate, compare and page over; `Renderer` turns them into
Jira's wire format (`2023-11-03T09:58:19.762+0100`) in the simulated user's time zone.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


# --------------------------------------------------------------------------- catalogues


@dataclass(frozen=True, slots=True)
class StatusCategory:
    """A Jira status category (`new`, `indeterminate`, `done`) with its fixed numeric id."""

    id: int
    key: str
    color_name: str
    name: str


CATEGORIES: dict[str, StatusCategory] = {
    "new": StatusCategory(2, "new", "blue-gray", "To Do"),
    "indeterminate": StatusCategory(4, "indeterminate", "yellow", "In Progress"),
    "done": StatusCategory(3, "done", "green", "Done"),
}


@dataclass(frozen=True, slots=True)
class StatusDef:
    """One status of the catalogue: stable numeric-string id, name and category key."""

    id: str
    name: str
    category: str
    description: str = ""


STATUSES: tuple[StatusDef, ...] = (
    StatusDef("10000", "To Do", "new", "Work that has not been started."),
    StatusDef("10001", "Backlog", "new", "Ideas and requests not yet planned."),
    StatusDef("10002", "In Progress", "indeterminate", "Being actively worked on."),
    StatusDef("10003", "In Review", "indeterminate", "Waiting for a code review."),
    StatusDef("10004", "Blocked", "indeterminate", "Cannot move until something else does."),
    StatusDef("10005", "Ready for QA", "indeterminate", "Waiting for testing."),
    StatusDef("10006", "En révision", "indeterminate", "En cours de révision."),
    StatusDef("10007", "Väntar på kund", "indeterminate", "Väntar på svar från kunden."),
    StatusDef("10008", "Done", "done", "Work is finished."),
    StatusDef("10009", "Closed", "done", "Closed, finished or abandoned."),
    StatusDef("10010", "完了", "done", "作業が完了しました。"),
)
STATUS_BY_NAME: dict[str, StatusDef] = {s.name: s for s in STATUSES}


@dataclass(frozen=True, slots=True)
class NamedDef:
    """A catalogue entry that is only an id and a name (resolution, issue type)."""

    id: str
    name: str
    description: str = ""


RESOLUTIONS: tuple[NamedDef, ...] = (
    NamedDef("10000", "Done", "Work has been completed on this issue."),
    NamedDef("10001", "Won't Do", "This issue won't be actioned."),
    NamedDef("10002", "Duplicate", "The problem is a duplicate of an existing issue."),
    NamedDef("10003", "Cannot Reproduce", "This issue could not be reproduced."),
)
RESOLUTION_BY_NAME: dict[str, NamedDef] = {r.name: r for r in RESOLUTIONS}

ISSUE_TYPES: tuple[NamedDef, ...] = (
    NamedDef("10001", "Story", "Functionality or a feature expressed as a user goal."),
    NamedDef("10002", "Bug", "A problem or error."),
    NamedDef("10003", "Task", "A small, distinct piece of work."),
    NamedDef("10004", "Epic", "A big user story that needs to be broken down."),
    NamedDef("10005", "Vulnerability", "A security weakness."),
    NamedDef("10006", "Tech Debt", "Work that pays back a shortcut."),
    NamedDef("10007", "Incident", "An unplanned interruption of a service."),
)
ISSUE_TYPE_BY_NAME: dict[str, NamedDef] = {t.name: t for t in ISSUE_TYPES}


@dataclass(frozen=True, slots=True)
class LinkTypeDef:
    """An issue link type: `outward` reads "A <outward> B", `inward` reads "B <inward> A"."""

    id: str
    name: str
    inward: str
    outward: str


LINK_TYPES: tuple[LinkTypeDef, ...] = (
    LinkTypeDef("10000", "Blocks", "is blocked by", "blocks"),
    LinkTypeDef("10001", "Cloners", "is cloned by", "clones"),
    LinkTypeDef("10002", "Duplicate", "is duplicated by", "duplicates"),
    LinkTypeDef("10003", "Relates", "relates to", "relates to"),
)
LINK_TYPE_BY_NAME: dict[str, LinkTypeDef] = {t.name: t for t in LINK_TYPES}


@dataclass(frozen=True, slots=True)
class UserDef:
    """A Jira user. Cloud identifies users by `account_id`, Data Center by `name`/`key`."""

    account_id: str
    name: str
    display_name: str
    email: str
    time_zone: str


def _account_id(name: str) -> str:
    return "712020:" + hashlib.sha256(name.encode()).hexdigest()[:32]


_USER_NAMES: tuple[tuple[str, str, str], ...] = (
    ("alice", "Alice Martin", "Europe/Berlin"),
    ("bjorn", "Björn Lindqvist", "Europe/Stockholm"),
    ("chloe", "Chloé Dubois", "Europe/Paris"),
    ("daisuke", "Daisuke Sato", "Asia/Tokyo"),
    ("emeka", "Emeka Obi", "Africa/Lagos"),
    ("fatima", "Fatima Khan", "Europe/London"),
    ("gabriel", "Gabriel Souza", "America/Sao_Paulo"),
    ("hana", "Hana Novak", "Europe/Prague"),
)
USERS: tuple[UserDef, ...] = tuple(
    UserDef(_account_id(n), n, d, f"{n}@example.com", tz) for n, d, tz in _USER_NAMES
)
SIM_USER = UserDef(_account_id("syncd"), "syncd", "syncd service", "syncd@example.com", "UTC")

LABELS: tuple[str, ...] = ("frontend", "backend", "security", "tech-debt", "customer")
STORY_POINTS_FIELD = "customfield_10016"
STORY_POINTS_NAME = "Story point estimate"


# --------------------------------------------------------------------------- time


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime; naive datetimes are rejected (they are bugs)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the simulator needs aware datetimes")
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * DAY_MS) + (delta.seconds * 1000) + (delta.microseconds // 1000)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


class Renderer:
    """Formats epoch milliseconds the way Jira does, in one IANA zone, with a cache.

    Jira renders every timestamp in the requesting user's profile zone with a colon-less
    offset, so the offset changes across DST; clients must parse the offset, not assume one.
    """

    def __init__(self, tz: str) -> None:
        self.zone = ZoneInfo(tz)
        self._cache: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        text = self._cache.get(ms)
        if text is None:
            local = datetime.fromtimestamp(ms // 1000, tz=self.zone)
            text = f"{local:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}{local:%z}"
            if len(self._cache) > 500_000:
                self._cache.clear()
            self._cache[ms] = text
        return text


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class ChangeItem:
    """One changed field inside a history. `field_id` is None for fields Jira sends without one
    (e.g. "Link", "Workflow")."""

    field: str
    fieldtype: str
    field_id: str | None
    from_: str | None
    from_string: str | None
    to: str | None
    to_string: str | None


@dataclass(slots=True)
class History:
    """One changelog entry: who changed what at which instant (epoch ms)."""

    id: int
    created: int
    author: UserDef
    items: list[ChangeItem]

    def status_item(self) -> ChangeItem | None:
        """The status change in this history, if any."""
        for item in self.items:
            if item.field == "status":
                return item
        return None


@dataclass(slots=True)
class Link:
    """A directed link: `source` <type.outward> `target` (ids of issues)."""

    id: int
    type: LinkTypeDef
    source: int
    target: int


@dataclass(slots=True)
class Issue:
    """The simulator's record of one issue: current field values plus its full history."""

    id: int
    key: str
    project: str
    number: int
    summary: str
    issue_type: str
    created: int
    updated: int
    status: str
    initial_status: str
    resolution: str | None = None
    resolution_date: int | None = None
    labels: list[str] = field(default_factory=list)
    assignee: UserDef | None = None
    story_points: float | None = None
    histories: list[History] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


# --------------------------------------------------------------------------- generator

_FLOW: dict[str, tuple[tuple[str, int], ...]] = {
    "Backlog": (("To Do", 40), ("In Progress", 60)),
    "To Do": (("In Progress", 90), ("Backlog", 10)),
    "In Progress": (
        ("In Review", 45),
        ("Blocked", 12),
        ("Väntar på kund", 8),
        ("Ready for QA", 12),
        ("En révision", 8),
        ("To Do", 7),
    ),
    "In Review": (
        ("Ready for QA", 40),
        ("In Progress", 35),
        ("En révision", 10),
        ("Blocked", 5),
    ),
    "En révision": (("Ready for QA", 50), ("In Progress", 50)),
    "Blocked": (("In Progress", 85), ("To Do", 15)),
    "Väntar på kund": (("In Progress", 90), ("In Review", 10)),
    "Ready for QA": (("In Progress", 35), ("In Review", 25), ("Väntar på kund", 10)),
}
_WAITING = frozenset({"Blocked", "Väntar på kund"})
_TYPE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("Story", 40),
    ("Bug", 25),
    ("Task", 15),
    ("Epic", 4),
    ("Vulnerability", 5),
    ("Tech Debt", 8),
    ("Incident", 3),
)
_VERBS = ("Fix", "Add", "Remove", "Refactor", "Document", "Speed up", "Migrate", "Audit")
_NOUNS = (
    "login form",
    "billing export",
    "search index",
    "API rate limiter",
    "onboarding flow",
    "audit log",
    "dashboard widgets",
    "payment retries",
    "SSO integration",
    "report scheduler",
)


def pick(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    """Weighted choice that costs one random number (rng.choices is slower for tiny tables)."""
    total = 0
    for _, weight in choices:
        total += weight
    point = rng.random() * total
    for name, weight in choices:
        point -= weight
        if point < 0:
            return name
    return choices[-1][0]


def next_status(rng: random.Random, current: str) -> str:
    """A plausible next non-terminal status after `current` in the simulated workflow."""
    flow = _FLOW.get(current)
    if flow is None:  # a done status: reopen
        return "In Progress"
    return pick(rng, flow)


def status_item(old: str, new: str) -> ChangeItem:
    """The changelog item of a status change, ids in from/to and names in the strings."""
    a, b = STATUS_BY_NAME[old], STATUS_BY_NAME[new]
    return ChangeItem("status", "jira", "status", a.id, a.name, b.id, b.name)


def resolution_item(old: str | None, new: str | None) -> ChangeItem:
    """The changelog item of a resolution change (None means unresolved)."""
    a = RESOLUTION_BY_NAME[old] if old else None
    b = RESOLUTION_BY_NAME[new] if new else None
    return ChangeItem(
        "resolution",
        "jira",
        "resolution",
        a.id if a else None,
        a.name if a else None,
        b.id if b else None,
        b.name if b else None,
    )


def issue_type_item(old: str, new: str) -> ChangeItem:
    """The changelog item of an issue type change."""
    a, b = ISSUE_TYPE_BY_NAME[old], ISSUE_TYPE_BY_NAME[new]
    return ChangeItem("issuetype", "jira", "issuetype", a.id, a.name, b.id, b.name)


def apply_status_change(
    issue: Issue, new: str, at: int, resolution: str | None, author: UserDef, hid: int
) -> History:
    """Append a history moving `issue` to `new` at `at`, keeping resolution consistent.

    Entering a done-category status sets the resolution (`resolution`, else the current one,
    else "Done"); leaving done clears it; otherwise an explicit `resolution` is recorded.
    Real Jira puts the resolution item first in the same history as the status item.
    """
    old = issue.status
    entering_done = STATUS_BY_NAME[new].category == "done"
    was_done = STATUS_BY_NAME[old].category == "done"
    target_resolution = issue.resolution
    if entering_done:
        target_resolution = resolution or issue.resolution or "Done"
    elif was_done or resolution is not None:
        target_resolution = resolution
    items: list[ChangeItem] = []
    if target_resolution != issue.resolution:
        items.append(resolution_item(issue.resolution, target_resolution))
        issue.resolution = target_resolution
        issue.resolution_date = at if target_resolution else None
    items.append(status_item(old, new))
    issue.status = new
    history = History(hid, at, author, items)
    issue.histories.append(history)
    issue.updated = max(issue.updated, at)
    return history


class _Builder:
    """Builds one issue's history in time order; extra (non-status) changes are merged later."""

    def __init__(self, rng: random.Random, issue: Issue, anchor: int) -> None:
        self.rng = rng
        self.issue = issue
        self.anchor = anchor
        self.t = issue.created

    def advance(self, mean_ms: float) -> bool:
        """Move the clock by a random gap; False when that would reach the anchor."""
        gap = int(self.rng.expovariate(1.0 / mean_ms)) + self.rng.randrange(1, 60_000)
        if self.t + gap >= self.anchor:
            return False
        self.t += gap
        return True

    def move(
        self, new: str, resolution: str | None = None, extra: ChangeItem | None = None
    ) -> None:
        history = apply_status_change(
            self.issue, new, self.t, resolution, self.rng.choice(USERS), 0
        )
        if extra is not None:
            history.items.append(extra)


def _walk(builder: _Builder, moves: int, reopen: bool) -> bool:
    """Random forward-biased flow of `moves` status changes; False when time ran out."""
    rng = builder.rng
    reopen_at = rng.randrange(1, moves) if reopen and moves >= 4 else -1
    for step in range(moves):
        mean = 3.0 * DAY_MS if builder.issue.status in _WAITING else 1.2 * DAY_MS
        if not builder.advance(mean):
            return False
        if step == reopen_at:
            builder.move("Done", "Done")
            if not builder.advance(2 * DAY_MS):
                return False
            builder.move("In Progress")
            continue
        new = next_status(rng, builder.issue.status)
        extra = None
        if new == "In Progress" and builder.issue.assignee is None and rng.random() < 0.5:
            user = rng.choice(USERS)
            builder.issue.assignee = user
            extra = ChangeItem(
                "assignee", "jira", "assignee", None, None, user.account_id, user.display_name
            )
        builder.move(new, extra=extra)
    return True


def generate(
    *,
    items: int,
    seed: int,
    anchor_ms: int,
    projects: Sequence[str],
    changes_per_item: int,
    span_days: int = 400,
) -> list[Issue]:
    """Generate `items` issues with histories, deterministic in (items, seed, anchor, ...).

    Outcome mix: about 60% done, 10% canceled (some straight from the backlog), 25% still in
    progress or waiting, 5% never started. Every timestamp is strictly before `anchor_ms`
    and histories are strictly increasing in time per issue. History ids follow global time
    order, as database sequences do in real Jira.
    """
    rng = random.Random(seed)
    span = span_days * DAY_MS
    start = anchor_ms - span
    counters = dict.fromkeys(projects, 0)
    issues: list[Issue] = []
    walk_mean = max(0.0, 1.1 * changes_per_item - 0.06)
    for index in range(items):
        project = projects[index % len(projects)]
        counters[project] += 1
        number = counters[project]
        created = start + int((index + rng.random()) * span / max(items, 1))
        initial = "Backlog" if rng.random() < 0.3 else "To Do"
        issue_type = pick(rng, _TYPE_WEIGHTS)
        labels = sorted(set(rng.sample(LABELS, rng.choice((0, 0, 1, 1, 2)))))
        summary = f"{rng.choice(_VERBS)} {rng.choice(_NOUNS)} #{number}"
        issue = Issue(
            id=10001 + index,
            key=f"{project}-{number}",
            project=project,
            number=number,
            summary=summary,
            issue_type=issue_type,
            created=created,
            updated=created,
            status=initial,
            initial_status=initial,
            labels=list(labels),
        )
        builder = _Builder(rng, issue, anchor_ms)
        outcome = rng.random()
        moves = max(1, round(rng.gauss(walk_mean, walk_mean * 0.4))) if walk_mean else 0
        if moves == 0:
            pass
        elif outcome < 0.60:  # done
            if builder.advance(3 * DAY_MS) and _walk(builder, moves - 1, rng.random() < 0.08):
                mean = 1.5 * DAY_MS
                if builder.advance(mean):
                    final = pick(rng, (("Done", 75), ("Closed", 15), ("完了", 10)))
                    resolution = (
                        "Cannot Reproduce" if issue_type == "Bug" and rng.random() < 0.2 else "Done"
                    )
                    builder.move(final, resolution)
        elif outcome < 0.70:  # canceled
            resolution = "Won't Do" if rng.random() < 0.7 else "Duplicate"
            final = "Closed" if rng.random() < 0.6 else "Done"
            if rng.random() < 0.4:
                if builder.advance(10 * DAY_MS):
                    builder.move(final, resolution)
            elif (
                builder.advance(3 * DAY_MS)
                and _walk(builder, moves - 1, False)
                and builder.advance(4 * DAY_MS)
            ):
                builder.move(final, resolution)
        elif outcome < 0.95:  # in progress or waiting
            if (
                builder.advance(3 * DAY_MS)
                and _walk(builder, moves, False)
                and STATUS_BY_NAME[issue.status].category == "new"
                and builder.advance(DAY_MS)
            ):
                builder.move("In Progress")
        elif rng.random() < 0.3 and builder.advance(5 * DAY_MS):  # never started
            builder.move("To Do" if initial == "Backlog" else "Backlog")
        _add_side_changes(rng, issue, anchor_ms)
        issues.append(issue)
    _add_links(rng, issues, anchor_ms)
    _number_histories(issues)
    return issues


def _free_instant(rng: random.Random, issue: Issue, low: int, high: int) -> int | None:
    """A random instant in (low, high) not shared with an existing history of `issue`."""
    if high - low < 2:
        return None
    at = low + 1 + rng.randrange(high - low - 1)
    if any(h.created == at for h in issue.histories):
        return None
    return at


def _insert(issue: Issue, history: History) -> None:
    issue.histories.append(history)
    issue.histories.sort(key=lambda h: h.created)
    issue.updated = max(issue.updated, history.created)


def _add_side_changes(rng: random.Random, issue: Issue, anchor: int) -> None:
    """Non-status histories: story points, type changes, relabelling, assignment, Workflow."""
    end = issue.histories[0].created if issue.histories else min(anchor, issue.created + DAY_MS)
    if rng.random() < 0.2:
        at = _free_instant(rng, issue, issue.created, end)
        if at is not None:
            points = float(rng.choice((1, 2, 3, 5, 8, 13)))
            issue.story_points = points
            item = ChangeItem(
                STORY_POINTS_NAME, "custom", STORY_POINTS_FIELD, None, None, None, f"{points:g}"
            )
            _insert(issue, History(0, at, rng.choice(USERS), [item]))
    if rng.random() < 0.04:
        at = _free_instant(rng, issue, issue.created, end)
        if at is not None:
            # the generated type is the current one; the issue was filed as something else
            filed_as = "Story" if issue.issue_type == "Bug" else "Bug"
            item = issue_type_item(filed_as, issue.issue_type)
            _insert(issue, History(0, at, rng.choice(USERS), [item]))
    last = issue.histories[-1].created if issue.histories else issue.created
    if rng.random() < 0.12:
        at = _free_instant(rng, issue, issue.created, min(anchor, last + 3 * DAY_MS))
        if at is not None:
            before = " ".join(issue.labels)
            if issue.labels and rng.random() < 0.3:
                issue.labels = issue.labels[1:]
            else:
                issue.labels = sorted({*issue.labels, rng.choice(LABELS)})
            after = " ".join(issue.labels)
            if before != after:
                item = ChangeItem("labels", "jira", "labels", None, before, None, after)
                _insert(issue, History(0, at, rng.choice(USERS), [item]))
    if issue.assignee is None and rng.random() < 0.25:
        at = _free_instant(rng, issue, issue.created, end)
        if at is not None:
            user = rng.choice(USERS)
            issue.assignee = user
            item = ChangeItem(
                "assignee", "jira", "assignee", None, None, user.account_id, user.display_name
            )
            _insert(issue, History(0, at, rng.choice(USERS), [item]))
    if issue.histories and rng.random() < 0.03:
        with_status = [h for h in issue.histories if h.status_item() is not None]
        if with_status:
            target = rng.choice(with_status)
            target.items.append(
                ChangeItem(
                    "Workflow",
                    "jira",
                    None,
                    "10100",
                    f"Software Simplified Workflow for Project {issue.project}",
                    "10200",
                    f"{issue.project} delivery workflow",
                )
            )


def _add_links(rng: random.Random, issues: list[Issue], anchor: int) -> None:
    """A handful of Blocks/Relates links from a later issue to an earlier one, each with the
    "Link" history (an item without fieldId) real Jira writes on both ends."""
    link_id = 20000
    for index in range(1, len(issues)):
        if rng.random() >= 0.03:
            continue
        issue = issues[index]
        other = issues[rng.randrange(0, index)]
        link_type = LINK_TYPE_BY_NAME["Blocks" if rng.random() < 0.5 else "Relates"]
        link_id += 1
        link = Link(link_id, link_type, issue.id, other.id)
        issue.links.append(link)
        other.links.append(link)
        low = max(issue.created, other.created)
        at = _free_instant(rng, issue, low, min(anchor, low + DAY_MS))
        if at is None or any(h.created == at for h in other.histories):
            continue
        author = rng.choice(USERS)
        for this, that, verb in (
            (issue, other, link_type.outward),
            (other, issue, link_type.inward),
        ):
            text = f"This issue {verb} {that.key}"
            item = ChangeItem("Link", "jira", None, None, None, that.key, text)
            _insert(this, History(0, at, author, [item]))


def _number_histories(issues: list[Issue]) -> None:
    """Give every history an id increasing with (created, issue id), starting at 100000."""
    everything = [
        (h.created, issue.id, n, h) for issue in issues for n, h in enumerate(issue.histories)
    ]
    everything.sort(key=lambda row: (row[0], row[1], row[2]))
    for offset, row in enumerate(everything):
        row[3].id = 100000 + offset
