"""The GitLab simulator's world: groups, projects, issues and merge requests with their
resource events and notes, the transitions that keep both consistent, and the seeded generator.

Nothing here knows HTTP. Times are integer epoch milliseconds (UTC), as GitLab keeps them.
Every change goes through `World`, which validates it like GitLab would (no closing a closed
issue, no merging a draft), records what GitLab records and updates the item's current state:

- state changes are resource state events (`closed`, `reopened`, `merged`); creating an item
  records none, its `created_at` is where its history starts;
- label changes are resource label events (`add`, `remove`). Adding a scoped label
  (`scope::value`) removes the item's other label of that scope in the same instant: the add
  event is written first, then the remove event, both with the same `created_at` (the order
  of GitLab's `ResourceEvents::ChangeLabelsService`);
- draft/ready, review requests, approvals, assignees, work item Status and issue links are
  system notes (`marked this merge request as **draft**`, `set status to **In progress**`);
  comments are notes with `system` false.

Each of the three tables (state events, label events, notes) numbers its rows on its own.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from syncd.simulator.jira_data import DAY_MS, HOUR_MS

ISSUE = "issue"
MERGE_REQUEST = "merge_request"
KINDS: tuple[str, ...] = (ISSUE, MERGE_REQUEST)
STATE, LABEL, NOTE = "state", "label", "note"
TABLES: tuple[str, ...] = (STATE, LABEL, NOTE)

IN_PROGRESS = "workflow::in progress"
IN_REVIEW = "workflow::in review"
BLOCKED = "workflow::blocked"
WORKFLOW_DONE = "workflow::done"
MR_REVIEW = "workflow::review"
WORKFLOW_LABELS: tuple[str, ...] = (IN_PROGRESS, IN_REVIEW, BLOCKED, WORKFLOW_DONE)
TYPE_LABELS: tuple[str, ...] = ("type::bug", "bug", "security", "tech debt", "feature")
CANCEL_LABELS: tuple[str, ...] = ("won't do", "duplicate")
LABEL_COLORS: dict[str, str] = {
    IN_PROGRESS: "#1068bf",
    IN_REVIEW: "#6699cc",
    BLOCKED: "#dc143c",
    WORKFLOW_DONE: "#009966",
    MR_REVIEW: "#8fbc8f",
    "type::bug": "#ed9121",
    "bug": "#d9534f",
    "security": "#cc0033",
    "tech debt": "#9400d3",
    "feature": "#428bca",
    "won't do": "#737278",
    "duplicate": "#cccccc",
}
STATUSES: tuple[str, ...] = ("To do", "In progress", "Done", "Won't do", "Duplicate")
# a link's type as its source sees it → as its target sees it
LINK_TYPES: dict[str, str] = {
    "relates_to": "relates_to",
    "blocks": "is_blocked_by",
    "is_blocked_by": "blocks",
}
_LINK_PHRASES: dict[str, str] = {
    "relates_to": "marked this issue as related to",
    "blocks": "marked this issue as blocking",
    "is_blocked_by": "marked this issue as blocked by",
}
USERS: tuple[tuple[str, str], ...] = (
    ("root", "Administrator"),
    ("alice", "Alice Martin"),
    ("bjorn", "Björn Lindqvist"),
    ("chloe", "Chloé Dubois"),
    ("daisuke", "Daisuke Sato"),
    ("emeka", "Emeka Obi"),
    ("fatima", "Fatima Khan"),
)
LOGINS: tuple[str, ...] = tuple(login for login, _ in USERS)
VIEWER = LOGINS[0]
COMMENTS: tuple[str, ...] = (
    "I can reproduce this on main.",
    "Any update on this?",
    "Looks good to me, one nit inline.",
    "Could you add a test for the empty case?",
    "Pushed a fix, please have another look.",
    "This depends on the API change landing first.",
)
_TITLES: tuple[str, ...] = (
    "{area}: error when {thing} is empty",
    "{area}: support {thing} in the API",
    "Flaky spec around {thing} in {area}",
    "{area}: {thing} is slow for large groups",
    "Document how {thing} works in {area}",
    "Refactor {thing} handling in {area}",
)
_AREAS: tuple[str, ...] = ("ci", "api", "web", "auth", "sync", "docs", "runner", "storage")
_THINGS: tuple[str, ...] = ("pagination", "webhooks", "rate limits", "labels", "time zones")
FIRST_IDS: dict[str, int] = {STATE: 41_000_001, LABEL: 270_000_001, NOTE: 2_100_000_001}
DRAFT_PREFIX = "Draft: "


# --------------------------------------------------------------------------- ids and time


def user_id(login: str) -> int:
    """A stable numeric user id: the catalogue's users are 1..n, anyone else is hashed."""
    if login in LOGINS:
        return LOGINS.index(login) + 1
    return 100_000 + int(hashlib.sha256(login.encode()).hexdigest()[:7], 16)


def user_name(login: str) -> str:
    """The display name of `login` (the login itself for users outside the catalogue)."""
    return dict(USERS).get(login, login)


def label_id(namespace: str, name: str) -> int:
    """A stable label id; labels are shared by a top-level group's projects."""
    digest = hashlib.sha256(f"{namespace}\n{name}".encode()).hexdigest()
    return 10_000_000 + int(digest[:7], 16)


def scope_of(name: str) -> str | None:
    """The scope of a scoped label (`workflow` of `workflow::in progress`; everything before
    the last `::`, as in GitLab), None for a plain label."""
    scope, sep, _ = name.rpartition("::")
    return scope if sep and scope else None


_ISO: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """GitLab's timestamp format: `2025-03-01T10:00:00.000Z`."""
    text = _ISO.get(ms)
    if text is None:
        seconds, millis = divmod(ms, 1000)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
        if len(_ISO) > 500_000:
            _ISO.clear()
        _ISO[ms] = text
    return text


# --------------------------------------------------------------------------- model


def _when(event: Event) -> int:
    return event.at


@dataclass(slots=True, eq=False)
class Event:
    """One row of a history table (`kind`: state | label | note)."""

    kind: str
    at: int
    actor: str
    state: str | None = None  # state events: closed | reopened | merged | locked
    label: str | None = None  # label events
    action: str | None = None  # label events: add | remove
    body: str = ""  # notes
    system: bool = False  # notes
    id: int = 0  # numbered by its table


@dataclass(slots=True, eq=False)
class Group:
    """A group or subgroup; `projects` are its own, not its subgroups'."""

    id: int
    full_path: str
    parent: Group | None
    created: int
    projects: list[Project] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.full_path.rpartition("/")[2]

    def contains(self, project: Project) -> bool:
        """Whether the project is in this group or one of its subgroups."""
        group: Group | None = project.group
        while group is not None:
            if group is self:
                return True
            group = group.parent
        return False


@dataclass(slots=True, eq=False)
class Project:
    """A project and its issues and merge requests by iid (separate sequences)."""

    index: int
    id: int
    full_path: str
    group: Group
    created: int
    issues: dict[int, Item] = field(default_factory=dict)
    merge_requests: dict[int, Item] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.full_path.rpartition("/")[2]

    @property
    def top_namespace(self) -> str:
        return self.full_path.partition("/")[0]

    def table(self, kind: str) -> dict[int, Item]:
        if kind == ISSUE:
            return self.issues
        if kind == MERGE_REQUEST:
            return self.merge_requests
        raise ValueError(f"kind must be 'issue' or 'merge_request', not {kind!r}")


@dataclass(slots=True, eq=False)
class Link:
    """An issue link; `link_type` is how `source` sees `target`."""

    id: int
    source: Item
    target: Item
    link_type: str
    at: int

    def seen_from(self, item: Item) -> tuple[Item, str]:
        """(the other issue, the link type as `item` sees it)."""
        if item is self.source:
            return self.target, self.link_type
        return self.source, LINK_TYPES[self.link_type]


@dataclass(slots=True, eq=False)
class Item:
    """An issue or merge request: its current state plus its history, oldest first."""

    project: Project
    kind: str
    iid: int
    title: str
    description: str
    author: str
    created: int
    updated: int
    issue_type: str = "issue"  # issue | incident (issues only)
    state: str = "opened"  # opened | closed | merged
    closed_at: int | None = None
    closed_by: str | None = None
    merged_at: int | None = None
    merged_by: str | None = None
    draft: bool = False
    status: str | None = None  # work item Status (issues)
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def id(self) -> int:
        """The global id (issues and merge requests have separate tables)."""
        base = 150_000_000 if self.kind == ISSUE else 310_000_000
        return base + self.project.index * 1_000_000 + self.iid

    @property
    def is_issue(self) -> bool:
        return self.kind == ISSUE

    @property
    def resource_type(self) -> str:
        return "Issue" if self.kind == ISSUE else "MergeRequest"

    @property
    def ref(self) -> str:
        return f"{'#' if self.kind == ISSUE else '!'}{self.iid}"

    @property
    def last_change(self) -> int:
        return self.events[-1].at if self.events else self.created

    @property
    def user_notes(self) -> int:
        return sum(1 for e in self.events if e.kind == NOTE and not e.system)

    def name(self) -> str:
        return f"{self.project.full_path}{self.ref}"


# --------------------------------------------------------------------------- transitions


class World:
    """All groups and projects and the only place item state changes.

    Methods take epoch milliseconds and raise ValueError for changes GitLab would refuse or
    that would break time order (a change not after the item's last one).
    """

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.projects: dict[str, Project] = {}
        self.next_ids: dict[str, int] = dict(FIRST_IDS)
        self.next_link_id = 5_000_001

    # ------------------------------------------------------------------ structure

    def add_project(self, full_path: str, created: int) -> Project:
        """A project; its groups and subgroups come from the path (`acme/platform/api`)."""
        parts = full_path.split("/")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"projects are full paths like group/project, not {full_path!r}")
        projects = {path.lower() for path in self.projects}
        groups = {path.lower(): path for path in self.groups}
        if full_path.lower() in projects or full_path.lower() in groups:
            raise ValueError(f"project {full_path} listed twice or also a group")
        parent: Group | None = None
        for depth in range(1, len(parts)):
            path = "/".join(parts[:depth])
            if path.lower() in projects or groups.get(path.lower(), path) != path:
                raise ValueError(f"group {path} of {full_path} clashes with {path.lower()!r}")
            group = self.groups.get(path)
            if group is None:
                group = Group(9_000_001 + len(self.groups), path, parent, created)
                self.groups[path] = group
            parent = group
        assert parent is not None
        project = Project(
            len(self.projects), 52_000_001 + len(self.projects), full_path, parent, created
        )
        self.projects[full_path] = project
        parent.projects.append(project)
        return project

    def project(self, full_path: str) -> Project:
        project = self.projects.get(full_path)
        if project is None:
            raise KeyError(f"no project {full_path!r}")
        return project

    def item(self, full_path: str, kind: str, iid: int) -> Item:
        item = self.project(full_path).table(kind).get(iid)
        if item is None:
            raise KeyError(f"no {kind} {iid} in {full_path}")
        return item

    def items(self) -> Iterator[Item]:
        for project in self.projects.values():
            yield from project.issues.values()
            yield from project.merge_requests.values()

    # ------------------------------------------------------------------ creation

    def create(
        self,
        project: Project,
        kind: str,
        *,
        created: int,
        title: str,
        author: str,
        description: str = "",
        labels: Sequence[str] = (),
        issue_type: str = "issue",
        draft: bool = False,
    ) -> Item:
        """A new issue or merge request with the next iid of its kind. `labels` are added at
        `created` (a later label of a scope wins over an earlier one of the same scope)."""
        table = project.table(kind)
        if issue_type not in ("issue", "incident") or (kind != ISSUE and issue_type != "issue"):
            raise ValueError(f"issue_type must be 'issue' or 'incident', not {issue_type!r}")
        if draft and kind != MERGE_REQUEST:
            raise ValueError("only merge requests can be drafts")
        if draft and not title.startswith(DRAFT_PREFIX):
            title = DRAFT_PREFIX + title
        iid = len(table) + 1  # items are never deleted
        item = Item(
            project,
            kind,
            iid,
            title,
            description,
            author,
            created,
            created,
            issue_type=issue_type,
            draft=draft,
        )
        table[iid] = item
        chosen: dict[str, str] = {}
        for name in labels:
            chosen[scope_of(name) or f"\0{name}"] = name
        for name in chosen.values():
            self._add(item, Event(LABEL, created, author, label=name, action="add"))
            item.labels.append(name)
        return item

    # ------------------------------------------------------------------ recording

    def _add(self, item: Item, event: Event) -> None:
        """Number `event` in its table and put it in the history after every row not later."""
        event.id = self.next_ids[event.kind]
        self.next_ids[event.kind] += 1
        bisect.insort_right(item.events, event, key=_when)
        item.updated = max(item.updated, event.at)

    @staticmethod
    def _need(ok: bool, item: Item, message: str) -> None:
        if not ok:
            raise ValueError(f"{item.name()}: {message}")

    def _after(self, item: Item, at: int) -> None:
        if at <= item.last_change:
            raise ValueError(
                f"{item.name()}: a change at {iso_ms(at)} is not after the item's last change "
                f"({iso_ms(item.last_change)}); histories must be strictly ordered"
            )

    def _note(self, item: Item, at: int, actor: str, body: str) -> None:
        self._add(item, Event(NOTE, at, actor, body=body, system=True))

    def _open_mr(self, item: Item) -> None:
        self._need(item.kind == MERGE_REQUEST, item, "is an issue, not a merge request")
        self._need(item.state == "opened", item, f"is {item.state}, not open")

    # ------------------------------------------------------------------ changes

    def label(self, item: Item, name: str, at: int, actor: str) -> None:
        """Add a label; a scoped one replaces the item's label of the same scope."""
        self._need(name not in item.labels, item, f"already has label {name!r}")
        self._after(item, at)
        scope = scope_of(name)
        replaced = [old for old in item.labels if scope is not None and scope_of(old) == scope]
        self._add(item, Event(LABEL, at, actor, label=name, action="add"))
        for old in replaced:
            self._add(item, Event(LABEL, at, actor, label=old, action="remove"))
            item.labels.remove(old)
        item.labels.append(name)

    def unlabel(self, item: Item, name: str, at: int, actor: str) -> None:
        self._need(name in item.labels, item, f"has no label {name!r}")
        self._after(item, at)
        self._add(item, Event(LABEL, at, actor, label=name, action="remove"))
        item.labels.remove(name)

    def close(self, item: Item, at: int, actor: str) -> None:
        self._need(item.state == "opened", item, f"is {item.state}, not open")
        self._after(item, at)
        self._add(item, Event(STATE, at, actor, state="closed"))
        item.state, item.closed_at, item.closed_by = "closed", at, actor

    def reopen(self, item: Item, at: int, actor: str) -> None:
        self._need(item.state == "closed", item, f"is {item.state}, not closed")
        self._after(item, at)
        self._add(item, Event(STATE, at, actor, state="reopened"))
        item.state, item.closed_at, item.closed_by = "opened", None, None

    def merge(self, item: Item, at: int, actor: str) -> None:
        self._open_mr(item)
        self._need(not item.draft, item, "is a draft and cannot be merged")
        self._after(item, at)
        self._add(item, Event(STATE, at, actor, state="merged"))
        item.state, item.merged_at, item.merged_by = "merged", at, actor

    def set_draft(self, item: Item, draft: bool, at: int, actor: str) -> None:
        self._open_mr(item)
        self._need(item.draft != draft, item, f"is {'already' if draft else 'not'} a draft")
        self._after(item, at)
        self._note(
            item, at, actor, f"marked this merge request as **{'draft' if draft else 'ready'}**"
        )
        item.draft = draft
        if draft:
            item.title = DRAFT_PREFIX + item.title
        elif item.title.startswith(DRAFT_PREFIX):
            item.title = item.title[len(DRAFT_PREFIX) :]

    def request_review(self, item: Item, login: str, at: int, actor: str) -> None:
        self._open_mr(item)
        self._need(login not in item.reviewers, item, f"already has reviewer {login!r}")
        self._after(item, at)
        self._note(item, at, actor, f"requested review from @{login}")
        item.reviewers.append(login)

    def approve(self, item: Item, login: str, at: int) -> None:
        self._open_mr(item)
        self._need(login not in item.approved_by, item, f"is already approved by {login!r}")
        self._after(item, at)
        self._note(item, at, login, "approved this merge request")
        item.approved_by.append(login)

    def set_status(self, item: Item, status: str, at: int, actor: str) -> None:
        self._need(item.kind == ISSUE, item, "only issues have a work item Status")
        self._need(status in STATUSES, item, f"status must be one of {STATUSES}, not {status!r}")
        self._need(status != item.status, item, f"status is already {status!r}")
        self._after(item, at)
        self._note(item, at, actor, f"set status to **{status}**")
        item.status = status

    def assign(self, item: Item, login: str, at: int, actor: str) -> None:
        self._need(login not in item.assignees, item, f"is already assigned to {login!r}")
        self._after(item, at)
        self._note(item, at, actor, f"assigned to @{login}")
        item.assignees.append(login)

    def comment(self, item: Item, body: str, at: int, author: str) -> None:
        self._need(bool(body.strip()), item, "a comment needs a body")
        self._after(item, at)
        self._add(item, Event(NOTE, at, author, body=body))

    def link(
        self, source: Item, target: Item, link_type: str, at: int, actor: str, ordered: bool = True
    ) -> Link:
        """Link two issues (system notes on both). With `ordered` false (generation) the
        notes may land before an item's newest change instead of having to be the newest."""
        self._need(source.kind == ISSUE and target.kind == ISSUE, source, "only issues link")
        self._need(source is not target, source, "cannot link an issue to itself")
        self._need(link_type in LINK_TYPES, source, f"link_type must be one of {list(LINK_TYPES)}")
        self._need(
            all(link.seen_from(source)[0] is not target for link in source.links),
            source,
            f"is already linked to {target.name()}",
        )
        if ordered:
            self._after(source, at)
            self._after(target, at)
        link = Link(self.next_link_id, source, target, link_type, at)
        self.next_link_id += 1
        for item, other, kind in (
            (source, target, link_type),
            (target, source, LINK_TYPES[link_type]),
        ):
            reference = other.ref if other.project is item.project else other.name()
            self._note(item, at, actor, f"{_LINK_PHRASES[kind]} {reference}")
            item.links.append(link)
        return link


# --------------------------------------------------------------------------- generator


class _Clock:
    """One item's history clock. `tick` moves it on by a random pause; once it would reach
    the anchor, or the item's change budget is spent, every further tick is refused, so a
    story simply stops where the item's history ends."""

    __slots__ = ("end", "left", "now", "rng")

    def __init__(self, rng: random.Random, start: int, end: int, left: int) -> None:
        self.rng, self.now, self.end, self.left = rng, start, end, left

    def tick(self, mean_hours: float) -> bool:
        if self.left <= 0:
            return False
        pause = int(self.rng.expovariate(1.0 / (mean_hours * HOUR_MS)))
        pause += self.rng.randrange(30_000, 1_200_000)
        if self.now + pause >= self.end:
            self.left = 0
            return False
        self.now += pause
        self.left -= 1
        return True


_DONE, _CANCELED, _OPEN, _UNTOUCHED = "done", "canceled", "open", "untouched"
_ENDLESS = 1 << 30


def _fate(rng: random.Random) -> str:
    roll = rng.random()
    return (
        _DONE if roll < 0.55 else _CANCELED if roll < 0.65 else _OPEN if roll < 0.95 else _UNTOUCHED
    )


def _someone(rng: random.Random, *besides: str) -> str:
    while True:
        login = rng.choice(LOGINS)
        if login not in besides:
            return login


def _issue_story(world: World, rng: random.Random, item: Item, fate: str, end: int) -> None:
    """Triage, work with pauses and back moves, review, close (done, won't do, duplicate),
    sometimes reopened; part of the issues also carry the work item Status."""
    ends = fate in (_DONE, _CANCELED)
    c = _Clock(rng, item.created, end, _ENDLESS if ends else rng.randint(1, 7))
    worker = _someone(rng)
    status = rng.random() < 0.4

    def move(label: str, new_status: str | None, mean_hours: float) -> None:
        if c.tick(mean_hours):
            world.label(item, label, c.now, worker)
            if status and new_status and new_status != item.status and c.tick(0.05):
                world.set_status(item, new_status, c.now, worker)

    def finish(label: str, new_status: str, by: str) -> None:
        if c.tick(24):
            world.label(item, label, c.now, by)
        if status and c.tick(0.05):
            world.set_status(item, new_status, c.now, by)
        if c.tick(0.5):
            world.close(item, c.now, by)

    if fate == _CANCELED and rng.random() < 0.5:  # triaged away without work
        cancel = rng.choice(CANCEL_LABELS)
        finish(cancel, "Won't do" if cancel == "won't do" else "Duplicate", _someone(rng))
        return
    if status and c.tick(12):
        world.set_status(item, "To do", c.now, _someone(rng))
    if rng.random() < 0.85 and c.tick(24):
        world.assign(item, worker, c.now, _someone(rng))
    move(IN_PROGRESS, "In progress", 30)
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        move(BLOCKED, None, 20)
        move(IN_PROGRESS, None, 40)
    if rng.random() < 0.3 and c.tick(10):
        world.comment(item, rng.choice(COMMENTS), c.now, _someone(rng))
    if rng.random() < 0.7:
        move(IN_REVIEW, None, 30)
        if rng.random() < 0.25:  # sent back
            move(IN_PROGRESS, None, 8)
            move(IN_REVIEW, None, 20)
    if not ends:
        return
    if fate == _CANCELED:
        cancel = rng.choice(CANCEL_LABELS)
        finish(cancel, "Won't do" if cancel == "won't do" else "Duplicate", _someone(rng))
        return
    finish(WORKFLOW_DONE, "Done", worker)
    if rng.random() < 0.08 and c.tick(72):  # reopened and finished again
        world.reopen(item, c.now, _someone(rng))
        move(IN_PROGRESS, "In progress", 2)
        finish(WORKFLOW_DONE, "Done", worker)


def _mr_story(world: World, rng: random.Random, item: Item, fate: str, end: int) -> None:
    """Draft → ready, reviewers, discussion, back to draft, approvals, merged or closed."""
    ends = fate in (_DONE, _CANCELED)
    c = _Clock(rng, item.created, end, _ENDLESS if ends else rng.randint(1, 6))
    author = item.author
    reviewer = _someone(rng, author)
    if rng.random() < 0.6 and c.tick(1):
        world.assign(item, author, c.now, author)
    if item.draft and c.tick(30):
        world.set_draft(item, False, c.now, author)
    if rng.random() < 0.5 and c.tick(2):
        world.label(item, MR_REVIEW, c.now, author)
    if rng.random() < 0.9 and c.tick(3):
        world.request_review(item, reviewer, c.now, author)
    if rng.random() < 0.15 and c.tick(4):
        world.request_review(item, _someone(rng, author, reviewer), c.now, author)
    for _ in range(rng.choice((0, 1, 1, 2))):
        if c.tick(20):
            world.comment(item, rng.choice(COMMENTS), c.now, reviewer)
        if rng.random() < 0.6 and c.tick(6):  # the author answers
            world.comment(item, rng.choice(COMMENTS), c.now, author)
        if rng.random() < 0.2 and c.tick(4):
            world.set_draft(item, True, c.now, author)
            if c.tick(30):
                world.set_draft(item, False, c.now, author)
    if fate == _CANCELED:
        if c.tick(60):
            world.close(item, c.now, author)
        return
    if c.tick(20):
        world.approve(item, reviewer, c.now)
    for other in item.reviewers:
        if other not in item.approved_by and rng.random() < 0.7 and c.tick(8):
            world.approve(item, other, c.now)
    if ends and not item.draft and c.tick(6):
        world.merge(item, c.now, rng.choice((author, reviewer)))


def generate(
    world: World,
    project: Project,
    *,
    issues: int,
    merge_requests: int,
    seed: int,
    anchor: int,
    days: int = 365,
) -> None:
    """Fill `project` with issues and merge requests, deterministic in (project path,
    counts, seed, anchor). Every change is strictly before `anchor`.

    Fates: 55% done (closed with `workflow::done` / merged), 10% canceled (closed with
    `won't do` or `duplicate`, or closed unmerged), 30% still open, 5% untouched. About 8%
    of the issues are incidents and 10% link an earlier issue.
    """
    rng = random.Random(f"gitlab:{seed}:{project.full_path}")
    kinds = [ISSUE] * issues + [MERGE_REQUEST] * merge_requests
    rng.shuffle(kinds)
    total = max(len(kinds), 1)
    span = days * DAY_MS
    start = anchor - span
    earlier: list[Item] = []
    for index, kind in enumerate(kinds):
        created = start + int((index + rng.random()) * span / total)
        fate = _fate(rng)
        title = rng.choice(_TITLES).format(area=rng.choice(_AREAS), thing=rng.choice(_THINGS))
        labels: tuple[str, ...] = ()
        if fate != _UNTOUCHED and rng.random() < (0.4 if kind == MERGE_REQUEST else 0.75):
            labels = (rng.choice(TYPE_LABELS),)
        incident = kind == ISSUE and rng.random() < 0.08
        item = world.create(
            project,
            kind,
            created=created,
            title=title,
            author=rng.choice(LOGINS),
            labels=labels,
            issue_type="incident" if incident else "issue",
            draft=kind == MERGE_REQUEST and rng.random() < 0.35,
        )
        if kind == ISSUE:
            if earlier and rng.random() < 0.1:
                target = rng.choice(earlier[-50:])
                link_type = rng.choice(("relates_to", "relates_to", "blocks", "is_blocked_by"))
                world.link(item, target, link_type, created, item.author, ordered=False)
            earlier.append(item)
        if fate != _UNTOUCHED:
            story = _issue_story if kind == ISSUE else _mr_story
            story(world, rng, item, fate, anchor)


def advance(world: World, rng: random.Random, item: Item, at: int) -> None:
    """Give `item` one plausible next change at `at` (what `mutate` does to each item)."""
    actor = rng.choice(LOGINS)
    if item.state == "closed":
        world.reopen(item, at, actor)
        return
    if item.kind == MERGE_REQUEST:
        if item.draft:
            world.set_draft(item, False, at, item.author)
        elif not item.reviewers:
            world.request_review(item, _someone(rng, item.author), at, item.author)
        elif not item.approved_by:
            world.approve(item, item.reviewers[0], at)
        elif rng.random() < 0.85:
            world.merge(item, at, actor)
        else:
            world.close(item, at, actor)
        return
    workflow = next((name for name in item.labels if name in WORKFLOW_LABELS), None)
    if workflow in (None, WORKFLOW_DONE, BLOCKED):
        world.label(item, IN_PROGRESS, at, actor)
    elif workflow == IN_PROGRESS:
        world.label(item, BLOCKED if rng.random() < 0.25 else IN_REVIEW, at, actor)
    elif rng.random() < 0.2:
        world.label(item, IN_PROGRESS, at, actor)  # sent back
    else:
        world.close(item, at, actor)


def renumber(world: World, items: Iterable[Item]) -> None:
    """Give each table's rows ids increasing with time, as GitLab's database does."""
    rows: dict[str, list[tuple[int, int, int, Event]]] = {kind: [] for kind in TABLES}
    for order, item in enumerate(items):
        for position, event in enumerate(item.events):
            rows[event.kind].append((event.at, order, position, event))
    for kind, table in rows.items():
        table.sort(key=lambda row: (row[0], row[1], row[2]))
        first = FIRST_IDS[kind]
        for offset, row in enumerate(table):
            row[3].id = first + offset
        world.next_ids[kind] = first + len(table)
