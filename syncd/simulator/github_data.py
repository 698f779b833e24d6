"""The GitHub simulator's world: repositories, issues and pull requests with their timelines,
the state transitions that keep both consistent, and the seeded generator.

Nothing here knows HTTP. Times are whole epoch seconds (UTC), as GitHub stores them. Every
change goes through `World`, which validates it like GitHub would (no closing a closed issue,
no merging a draft), appends the timeline event(s) and updates the item's current state, so
the generator, the scenario methods and `mutate` cannot disagree about what a history means.
Timeline event kinds are GraphQL type names (`LabeledEvent`, `PullRequestReview`, ...).
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DAY = 86_400
HOUR = 3_600

TYPE_LABELS: tuple[str, ...] = ("bug", "enhancement", "security", "tech-debt", "documentation")
PROGRESS_LABELS: tuple[str, ...] = ("in progress", "status: in progress")
WAIT_LABELS: tuple[str, ...] = ("blocked", "waiting")
LABELS: tuple[str, ...] = (
    "bug",
    "enhancement",
    "security",
    "tech-debt",
    "documentation",
    "in progress",
    "blocked",
    "status: in progress",
    "waiting",
)
LABEL_COLORS: dict[str, str] = {
    "bug": "d73a4a",
    "enhancement": "a2eeef",
    "security": "b60205",
    "tech-debt": "fbca04",
    "documentation": "0075ca",
    "in progress": "0e8a16",
    "blocked": "e11d21",
    "status: in progress": "1d76db",
    "waiting": "c5def5",
}
PROJECT_FLOW: tuple[str, ...] = ("Todo", "In Progress", "In Review", "Done")
USERS: tuple[str, ...] = ("octocat", "alice", "bjorn", "chloe", "daisuke", "emeka", "fatima")
CLOSE_REASONS: dict[str, str] = {
    "completed": "COMPLETED",
    "not_planned": "NOT_PLANNED",
    "duplicate": "DUPLICATE",
}
REVIEW_STATES: tuple[str, ...] = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED")

# GraphQL type name → (REST `event` name or None when REST does not show it, node id prefix)
EVENT_KINDS: dict[str, tuple[str | None, str]] = {
    "LabeledEvent": ("labeled", "LE"),
    "UnlabeledEvent": ("unlabeled", "UNLE"),
    "AssignedEvent": ("assigned", "AE"),
    "UnassignedEvent": ("unassigned", "UAE"),
    "ClosedEvent": ("closed", "CE"),
    "ReopenedEvent": ("reopened", "REE"),
    "MergedEvent": ("merged", "ME"),
    "ReadyForReviewEvent": ("ready_for_review", "RFRE"),
    "ConvertToDraftEvent": ("convert_to_draft", "CTDE"),
    "ReviewRequestedEvent": ("review_requested", "RRE"),
    "ReviewRequestRemovedEvent": ("review_request_removed", "RRRE"),
    "PullRequestReview": ("reviewed", "PRR"),
    "CrossReferencedEvent": ("cross-referenced", "CRE"),
    "AddedToProjectV2Event": (None, "ATPVTE"),
    "ProjectV2ItemStatusChangedEvent": (None, "PVTISCE"),
}
PULL_ONLY_KINDS = frozenset(
    {
        "MergedEvent",
        "ReadyForReviewEvent",
        "ConvertToDraftEvent",
        "ReviewRequestedEvent",
        "ReviewRequestRemovedEvent",
        "PullRequestReview",
    }
)
_ADDING = frozenset({"LabeledEvent", "AssignedEvent", "ReviewRequestedEvent"})
_CLOSING_RE = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)", re.I)
_TITLES = (
    "{area}: crash when {thing} is empty",
    "{area}: support {thing} in the API",
    "Flaky test around {thing} in {area}",
    "{area}: {thing} is slow on large repositories",
    "Document how {thing} works in {area}",
    "Bump {thing} handling in {area}",
)
_AREAS = ("cli", "api", "web", "auth", "sync", "docs", "ci", "storage")
_THINGS = ("pagination", "webhooks", "rate limits", "label colours", "time zones", "retries")


# --------------------------------------------------------------------------- ids and time


def user_id(login: str) -> int:
    """A stable numeric user id: the catalogue's users are 1..n, anyone else is hashed."""
    if login in USERS:
        return USERS.index(login) + 1
    return 100_000 + int(hashlib.sha256(login.encode()).hexdigest()[:7], 16)


def label_id(repo: Repo, name: str) -> int:
    """A stable numeric id of a repository's label."""
    digest = hashlib.sha256(f"{repo.full_name}\n{name}".encode()).hexdigest()
    return 1_000_000 + int(digest[:8], 16)


def node_id(prefix: str, *parts: int) -> str:
    """A GitHub-style global node id (`I_kwDO...`) that `parse_node_id` can read back."""
    packed = struct.pack(f">{len(parts)}Q", *parts)
    return f"{prefix}_kwDO" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def parse_node_id(value: str) -> tuple[str, tuple[int, ...]] | None:
    """(prefix, parts) of an id made by `node_id`, or None for anything else."""
    prefix, sep, rest = value.partition("_kwDO")
    if not sep or not rest:
        return None
    try:
        packed = base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
    except ValueError:
        return None
    if not packed or len(packed) % 8:
        return None
    return prefix, struct.unpack(f">{len(packed) // 8}Q", packed)


_ISO_CACHE: dict[int, str] = {}


def iso(seconds: int) -> str:
    """GitHub's timestamp format: `2025-03-01T10:00:00Z`."""
    text = _ISO_CACHE.get(seconds)
    if text is None:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
        if len(_ISO_CACHE) > 400_000:
            _ISO_CACHE.clear()
        _ISO_CACHE[seconds] = text
    return text


def closing_numbers(body: str) -> list[int]:
    """Issue numbers a pull request body closes ("Closes #12", "fixes #3"), in order."""
    return list(dict.fromkeys(int(m.group(1)) for m in _CLOSING_RE.finditer(body)))


# --------------------------------------------------------------------------- model


@dataclass(slots=True, eq=False)
class Event:
    """One timeline event. Which detail fields are set depends on `kind`."""

    kind: str
    at: int
    actor: str
    id: int = 0
    label: str | None = None  # Labeled/Unlabeled
    login: str | None = None  # assignee, requested reviewer or review author
    state: str | None = None  # ClosedEvent stateReason (None on PRs), PullRequestReview state
    status: str | None = None  # ProjectV2ItemStatusChangedEvent
    previous: str | None = None
    source: Item | None = None  # CrossReferencedEvent
    will_close: bool = False


@dataclass(slots=True, eq=False)
class Repo:
    """A repository and its items by number (issues and pull requests share numbers)."""

    index: int
    full_name: str
    owner: str
    name: str
    id: int
    created: int
    archived: bool = False
    items: dict[int, Item] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return node_id("R", self.id)


@dataclass(slots=True, eq=False)
class Item:
    """An issue or pull request: current state plus the full timeline, oldest first."""

    repo: Repo
    number: int
    pull: bool
    title: str
    body: str
    user: str
    created: int
    updated: int
    state: str = "open"  # open | closed
    state_reason: str | None = None  # completed | not_planned | duplicate | reopened
    closed_at: int | None = None
    closed_by: str | None = None
    merged_at: int | None = None
    draft: bool = False
    head_ref: str = ""  # a pull request's head branch
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    project_status: str | None = None  # None: not on the project
    closes: list[Item] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def id(self) -> int:
        """The REST database id."""
        return 3_000_000_000 + self.repo.index * 10_000_000 + self.number

    @property
    def node_id(self) -> str:
        return node_id("PR" if self.pull else "I", self.repo.id, self.number)

    @property
    def typename(self) -> str:
        return "PullRequest" if self.pull else "Issue"

    @property
    def last_at(self) -> int:
        return self.events[-1].at if self.events else self.created

    @property
    def approved(self) -> bool:
        reviews = [e.state for e in self.events if e.kind == "PullRequestReview"]
        return bool(reviews) and reviews[-1] == "APPROVED"


def event_node_id(item: Item, event: Event) -> str:
    """The event's global id (also its REST `node_id`)."""
    return node_id(EVENT_KINDS[event.kind][1], item.repo.id, item.number, event.id)


@dataclass(slots=True)
class RateBudget:
    """One rate-limit resource (REST `core`, `graphql`): `limit` units per window of
    `window` seconds; the window starts with the first request after the previous one ended."""

    limit: int
    window: int
    used: int = 0
    reset: int = 0

    def roll(self, now: int) -> None:
        """Start a new window when the current one is over (or none started yet)."""
        if self.reset == 0 or now >= self.reset:
            self.used = 0
            self.reset = now + self.window

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self, resource: str) -> dict[str, str]:
        """GitHub's `x-ratelimit-*` headers for this resource."""
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
            "x-ratelimit-used": str(min(self.used, self.limit)),
            "x-ratelimit-resource": resource,
        }


# --------------------------------------------------------------------------- transitions


class World:
    """All repositories and the only place item state changes.

    Methods take epoch seconds and raise ValueError for changes GitHub would refuse or that
    would break time order (an event before the item's last one).
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.next_event_id = 1_000_000_001

    def add_repo(self, full_name: str, created: int, archived: bool = False) -> Repo:
        owner, sep, name = full_name.partition("/")
        if not sep or not owner or not name or "/" in name:
            raise ValueError(f"repository names are owner/name, not {full_name!r}")
        if full_name in self.repos:
            raise ValueError(f"repository {full_name} listed twice")
        index = len(self.repos)
        repo = Repo(index, full_name, owner, name, 700_000_001 + index, created, archived)
        self.repos[full_name] = repo
        return repo

    def repo(self, full_name: str) -> Repo:
        repo = self.repos.get(full_name)
        if repo is None:
            raise KeyError(f"no repository {full_name!r}")
        return repo

    def item(self, full_name: str, number: int) -> Item:
        item = self.repo(full_name).items.get(number)
        if item is None:
            raise KeyError(f"no issue or pull request {full_name}#{number}")
        return item

    def items(self) -> Iterable[Item]:
        for repo in self.repos.values():
            yield from repo.items.values()

    # ------------------------------------------------------------------ creation

    def create(
        self,
        repo: Repo,
        *,
        pull: bool,
        created: int,
        title: str,
        user: str,
        body: str = "",
        labels: Sequence[str] = (),
        draft: bool = False,
        number: int | None = None,
        branch: str = "",
    ) -> Item:
        """A new issue or pull request; initial labels become LabeledEvents at `created`.
        A pull request without a `branch` gets GitHub's web-editor name, `<user>-patch-<n>`."""
        if number is None:
            number = max(repo.items, default=0) + 1
        item = Item(repo, number, pull, title, body, user, created, created, draft=draft)
        if pull:
            item.head_ref = branch or f"{user}-patch-{number}"
        if pull:
            for ref in closing_numbers(body):
                target = repo.items.get(ref)
                if target is not None and not target.pull:
                    item.closes.append(target)
        repo.items[number] = item
        for name in dict.fromkeys(labels):
            self._add(item, Event("LabeledEvent", created, user, label=name))
            item.labels.append(name)
        return item

    # ------------------------------------------------------------------ events

    def _add(self, item: Item, event: Event) -> Event:
        """Give `event` the next id and put it in the timeline after every event not later."""
        event.id = self.next_event_id
        self.next_event_id += 1
        events = item.events
        position = len(events)
        while position and events[position - 1].at > event.at:
            position -= 1
        events.insert(position, event)
        if event.at > item.updated:
            item.updated = event.at
        return event

    @staticmethod
    def _after(item: Item, at: int) -> None:
        if at <= item.last_at:
            raise ValueError(
                f"{item.repo.full_name}#{item.number}: an event at {iso(at)} is not after the "
                f"item's last event ({iso(item.last_at)}); timelines must be strictly ordered"
            )

    @staticmethod
    def _need(ok: bool, item: Item, message: str) -> None:
        if not ok:
            raise ValueError(f"{item.repo.full_name}#{item.number}: {message}")

    def _toggle(self, item: Item, members: list[str], value: str, what: str, event: Event) -> None:
        """Record `event` adding `value` to (or removing it from) one of the item's sets."""
        adding = event.kind in _ADDING
        state = "already has" if adding else "has no"
        self._need((value in members) != adding, item, f"{state} {what} {value!r}")
        self._after(item, event.at)
        self._add(item, event)
        if adding:
            members.append(value)
        else:
            members.remove(value)

    def label(self, item: Item, name: str, at: int, actor: str) -> None:
        event = Event("LabeledEvent", at, actor, label=name)
        self._toggle(item, item.labels, name, "label", event)

    def unlabel(self, item: Item, name: str, at: int, actor: str) -> None:
        event = Event("UnlabeledEvent", at, actor, label=name)
        self._toggle(item, item.labels, name, "label", event)

    def assign(self, item: Item, login: str, at: int, actor: str) -> None:
        event = Event("AssignedEvent", at, actor, login=login)
        self._toggle(item, item.assignees, login, "assignee", event)

    def unassign(self, item: Item, login: str, at: int, actor: str) -> None:
        event = Event("UnassignedEvent", at, actor, login=login)
        self._toggle(item, item.assignees, login, "assignee", event)

    def close(self, item: Item, at: int, reason: str, actor: str) -> None:
        self._need(item.state == "open", item, "is already closed")
        if reason not in CLOSE_REASONS:
            raise ValueError(f"close reason must be one of {sorted(CLOSE_REASONS)}, not {reason!r}")
        self._after(item, at)
        self._close(item, at, None if item.pull else reason, actor)

    def _close(self, item: Item, at: int, reason: str | None, actor: str) -> None:
        state = CLOSE_REASONS[reason] if reason else None
        self._add(item, Event("ClosedEvent", at, actor, state=state))
        item.state, item.state_reason = "closed", reason
        item.closed_at, item.closed_by = at, actor

    def reopen(self, item: Item, at: int, actor: str) -> None:
        self._need(item.state == "closed", item, "is not closed")
        self._need(item.merged_at is None, item, "is merged and cannot be reopened")
        self._after(item, at)
        self._add(item, Event("ReopenedEvent", at, actor))
        item.state, item.state_reason = "open", None if item.pull else "reopened"
        item.closed_at = item.closed_by = None

    def _need_open_pull(self, item: Item) -> None:
        self._need(item.pull, item, "is an issue, not a pull request")
        self._need(item.state == "open", item, "is not open")

    def request_review(self, item: Item, reviewer: str, at: int, actor: str) -> None:
        self._need_open_pull(item)
        event = Event("ReviewRequestedEvent", at, actor, login=reviewer)
        self._toggle(item, item.requested, reviewer, "review request of", event)

    def remove_review_request(self, item: Item, reviewer: str, at: int, actor: str) -> None:
        self._need_open_pull(item)
        event = Event("ReviewRequestRemovedEvent", at, actor, login=reviewer)
        self._toggle(item, item.requested, reviewer, "review request of", event)

    def review(self, item: Item, at: int, state: str, author: str) -> None:
        self._need_open_pull(item)
        if state not in REVIEW_STATES:
            raise ValueError(f"review state must be one of {REVIEW_STATES}, not {state!r}")
        self._after(item, at)
        self._add(item, Event("PullRequestReview", at, author, login=author, state=state))
        if author in item.requested:  # submitting a review answers the request
            item.requested.remove(author)

    def ready_for_review(self, item: Item, at: int, actor: str) -> None:
        self._need_open_pull(item)
        self._need(item.draft, item, "is not a draft")
        self._after(item, at)
        self._add(item, Event("ReadyForReviewEvent", at, actor))
        item.draft = False

    def convert_to_draft(self, item: Item, at: int, actor: str) -> None:
        self._need_open_pull(item)
        self._need(not item.draft, item, "is already a draft")
        self._after(item, at)
        self._add(item, Event("ConvertToDraftEvent", at, actor))
        item.draft = True

    def merge(self, item: Item, at: int, actor: str) -> None:
        self._need_open_pull(item)
        self._need(not item.draft, item, "is a draft and cannot be merged")
        self._after(item, at)
        self._add(item, Event("MergedEvent", at, actor))
        self._close(item, at, None, actor)
        item.merged_at = at

    def project_status(self, item: Item, status: str, at: int, actor: str) -> None:
        self._need(status != item.project_status, item, f"project status is already {status!r}")
        self._after(item, at)
        if item.project_status is None:
            self._add(item, Event("AddedToProjectV2Event", at, actor))
        previous = item.project_status or ""
        self._add(
            item,
            Event("ProjectV2ItemStatusChangedEvent", at, actor, status=status, previous=previous),
        )
        item.project_status = status

    def cross_reference(
        self, item: Item, source: Item, at: int, will_close: bool, actor: str, ordered: bool = True
    ) -> None:
        """`source` mentions `item`. With `ordered` false (generation) the event may land
        before the item's newest one instead of having to be the newest."""
        self._need(source is not item, item, "cannot reference itself")
        if ordered:
            self._after(item, at)
        event = Event("CrossReferencedEvent", at, actor, source=source, will_close=will_close)
        self._add(item, event)


# --------------------------------------------------------------------------- generator


class _Script:
    """Moves one item's clock forward; once time (or the step budget) runs out, every
    further step is refused so a script simply stops where the item's history ends."""

    __slots__ = ("anchor", "budget", "rng", "t")

    def __init__(self, rng: random.Random, start: int, anchor: int, budget: int) -> None:
        self.rng = rng
        self.t = start
        self.anchor = anchor
        self.budget = budget

    def step(self, mean_hours: float) -> bool:
        if self.budget <= 0:
            return False
        gap = int(self.rng.expovariate(1.0 / (mean_hours * HOUR))) + self.rng.randrange(60, 1800)
        if self.t + gap >= self.anchor:
            self.budget = 0
            return False
        self.t += gap
        self.budget -= 1
        return True


_DONE, _CANCELED, _PROGRESS, _UNTOUCHED = "done", "canceled", "progress", "untouched"
_UNLIMITED = 1 << 30


def _outcome(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        return _DONE
    if roll < 0.65:
        return _CANCELED
    if roll < 0.95:
        return _PROGRESS
    return _UNTOUCHED


def _other(rng: random.Random, *logins: str) -> str:
    while True:
        login = rng.choice(USERS)
        if login not in logins:
            return login


def _issue_script(world: World, rng: random.Random, item: Item, outcome: str, anchor: int) -> None:
    """Triage, work with pauses, review, close (completed, not planned or duplicate)."""
    finish = outcome in (_DONE, _CANCELED)
    s = _Script(rng, item.created, anchor, _UNLIMITED if finish else rng.randint(1, 6))
    worker = rng.choice(USERS)
    on_project = rng.random() < 0.7
    progress = rng.choice(PROGRESS_LABELS)
    if outcome == _CANCELED and rng.random() < 0.5:  # triaged away without work
        if s.step(48):
            reason = "duplicate" if rng.random() < 0.3 else "not_planned"
            world.close(item, s.t, reason, _other(rng))
        return
    if on_project and s.step(12):
        world.project_status(item, "Todo", s.t, _other(rng))
    if rng.random() < 0.9 and s.step(24):
        world.assign(item, worker, s.t, _other(rng))
        if rng.random() < 0.15 and s.step(30) and s.t + 1 < anchor:  # handed over
            world.unassign(item, worker, s.t, worker)
            worker = _other(rng, worker)
            s.t += 1
            world.assign(item, worker, s.t, worker)
    if s.step(30):
        world.label(item, progress, s.t, worker)
    if on_project and s.step(1):
        world.project_status(item, "In Progress", s.t, worker)
    for _ in range(rng.choice((0, 1, 1, 2, 2))):
        wait = rng.choice(WAIT_LABELS)
        if s.step(20):
            world.label(item, wait, s.t, worker)
        if s.step(40):
            world.unlabel(item, wait, s.t, worker)
    if on_project and rng.random() < 0.7 and s.step(30):
        world.project_status(item, "In Review", s.t, worker)
    if not finish:
        return
    if outcome == _CANCELED:
        if s.step(30):
            reason = "duplicate" if rng.random() < 0.3 else "not_planned"
            world.close(item, s.t, reason, _other(rng))
        return
    if s.step(24):
        world.unlabel(item, progress, s.t, worker)
    if s.step(2):
        world.close(item, s.t, "completed", worker)
    if on_project and s.step(0.5):
        world.project_status(item, "Done", s.t, worker)
    if rng.random() < 0.08 and s.step(72):  # reopened and finished again
        world.reopen(item, s.t, _other(rng))
        if s.step(24):
            world.close(item, s.t, "completed", worker)


def _pull_script(world: World, rng: random.Random, item: Item, outcome: str, anchor: int) -> None:
    """Draft → ready, review requests, changes requested → approved, merged (or closed)."""
    finish = outcome in (_DONE, _CANCELED)
    s = _Script(rng, item.created, anchor, _UNLIMITED if finish else rng.randint(1, 5))
    author = item.user
    reviewer = _other(rng, author)
    if rng.random() < 0.7 and s.step(1):
        world.assign(item, author, s.t, author)
    if item.draft and s.step(30):
        world.ready_for_review(item, s.t, author)
    on_project = rng.random() < 0.4
    if on_project and s.step(2):
        world.project_status(item, "In Review", s.t, author)
    if rng.random() < 0.9 and s.step(3):
        world.request_review(item, reviewer, s.t, author)
    if rng.random() < 0.12:
        extra = _other(rng, author, reviewer)
        if s.step(2):
            world.request_review(item, extra, s.t, author)
        if s.step(20):
            world.remove_review_request(item, extra, s.t, author)
    for _ in range(rng.choice((0, 1, 1, 2))):
        if rng.random() < 0.3:
            if s.step(20):
                world.review(item, s.t, "COMMENTED", reviewer)
            continue
        if s.step(20):
            world.review(item, s.t, "CHANGES_REQUESTED", reviewer)
        if rng.random() < 0.25 and s.step(4):
            world.convert_to_draft(item, s.t, author)
            if s.step(30):
                world.ready_for_review(item, s.t, author)
    if outcome == _CANCELED:
        if s.step(60):
            world.close(item, s.t, "completed", author)
        return
    if s.step(20):
        world.review(item, s.t, "APPROVED", reviewer)
    if not finish or item.draft:
        return
    if s.step(6):
        world.merge(item, s.t, rng.choice((author, reviewer)))
        if on_project and s.step(0.5):
            world.project_status(item, "Done", s.t, author)


def generate(
    world: World,
    repo: Repo,
    *,
    issues: int,
    pulls: int,
    seed: int,
    anchor: int,
    span_days: int = 365,
) -> None:
    """Fill `repo` with `issues` issues and `pulls` pull requests, deterministic in
    (repo name, counts, seed, anchor). Every event is strictly before `anchor`.

    Outcome mix per item: 55% done (closed as completed / merged), 10% not planned, duplicate
    or closed unmerged, 30% still in progress, 5% untouched. About 30% of pull requests close
    an earlier issue ("Closes #N", with a cross reference on the issue) and a few items
    mention an earlier one.
    """
    rng = random.Random(f"github:{seed}:{repo.full_name}")
    total = issues + pulls
    kinds = [False] * issues + [True] * pulls
    rng.shuffle(kinds)
    span = span_days * DAY
    start = anchor - span
    issue_numbers: list[int] = []
    for index, pull in enumerate(kinds):
        number = index + 1
        created = start + int((index + rng.random()) * span / max(total, 1))
        outcome = _outcome(rng)
        title = rng.choice(_TITLES).format(area=rng.choice(_AREAS), thing=rng.choice(_THINGS))
        body = ""
        if pull and issue_numbers and rng.random() < 0.3:
            body = f"Closes #{rng.choice(issue_numbers[-50:])}"
        labels: tuple[str, ...] = ()
        if outcome != _UNTOUCHED and rng.random() < (0.4 if pull else 0.75):
            labels = (rng.choice(TYPE_LABELS),)
        user = rng.choice(USERS)
        item = world.create(
            repo,
            pull=pull,
            created=created,
            title=title,
            user=user,
            body=body,
            labels=labels,
            draft=pull and rng.random() < 0.3,
            number=number,
        )
        if outcome != _UNTOUCHED:
            (_pull_script if pull else _issue_script)(world, rng, item, outcome, anchor)
        for target in item.closes:
            world.cross_reference(target, item, created, True, user, ordered=False)
        if number > 1 and rng.random() < 0.05:
            target = repo.items[rng.randrange(1, number)]
            world.cross_reference(target, item, created, False, user, ordered=False)
        if not pull:
            issue_numbers.append(number)


def advance(world: World, rng: random.Random, item: Item, at: int) -> None:
    """Give `item` one plausible next event at `at` (what `mutate` does to each item)."""
    actor = rng.choice(USERS)
    if item.state == "closed":
        world.reopen(item, at, actor)
        return
    waiting = [name for name in item.labels if name in WAIT_LABELS]
    if item.pull:
        if item.draft:
            world.ready_for_review(item, at, item.user)
        elif item.approved:
            if rng.random() < 0.8:
                world.merge(item, at, actor)
            else:
                world.close(item, at, "completed", actor)
        elif item.requested:
            state = "CHANGES_REQUESTED" if rng.random() < 0.35 else "APPROVED"
            world.review(item, at, state, item.requested[0])
        else:
            reviewer = rng.choice([u for u in USERS if u != item.user])
            world.request_review(item, reviewer, at, item.user)
        return
    if waiting:
        world.unlabel(item, waiting[0], at, actor)
    elif not item.assignees:
        world.assign(item, actor, at, actor)
    elif not any(name in item.labels for name in PROGRESS_LABELS):
        world.label(item, "in progress", at, actor)
    else:
        roll = rng.random()
        if roll < 0.3:
            world.close(item, at, "completed", actor)
        elif roll < 0.4:
            world.close(item, at, "not_planned", actor)
        elif roll < 0.55:
            world.label(item, rng.choice(WAIT_LABELS), at, actor)
        else:
            status = item.project_status
            current = PROJECT_FLOW.index(status) if status in PROJECT_FLOW else -1
            if current + 1 < len(PROJECT_FLOW):
                world.project_status(item, PROJECT_FLOW[current + 1], at, actor)
            else:
                world.close(item, at, "completed", actor)


def renumber_events(items: Iterable[Item], first_id: int) -> int:
    """Give events ids increasing with time, as GitHub's database does; returns the next id."""
    rows = [(e.at, item.id, n, e) for item in items for n, e in enumerate(item.events)]
    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    for offset, row in enumerate(rows):
        row[3].id = first_id + offset
    return first_id + len(rows)
