"""The GitHub simulator's GraphQL endpoint: a subset of GitHub's schema, served by graphql-core.

Because the schema is real GraphQL, variables, aliases, fragments, inline fragments and
`__typename` work as on GitHub; names (types, fields, enum values) are GitHub's. Around the
execution sit GitHub's resource limits:

- every connection needs `first` or `last` (1..100), else the field fails with
  MISSING_PAGINATION_BOUNDARIES / EXCESSIVE_PAGINATION;
- a query is costed before it runs: each connection needs as many requests as the product
  of the page sizes of the connections around it; cost = round(requests / 100), at least 1;
  more than 500,000 possible nodes (the sum of those products times the connection's own
  page size) refuses the whole query with MAX_NODE_LIMIT_EXCEEDED;
- the cost is taken from the point budget before execution; when it does not fit, the
  query is refused with RATE_LIMITED. `rateLimit { cost remaining resetAt ... }` reports it.

Errors come back in GitHub's shape, with HTTP 200: `{"data": ..., "errors": [{"message",
"locations", "path", "type"}]}` (`type` for errors GitHub types: NOT_FOUND, RATE_LIMITED...;
syntax and validation errors carry message and locations only, as on GitHub).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import graphql
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)

from syncd.simulator.common import BoundedCache
from syncd.simulator.github_data import (
    EVENT_KINDS,
    LABEL_COLORS,
    PULL_ONLY_KINDS,
    USERS,
    Event,
    Item,
    RateBudget,
    Repo,
    World,
    event_node_id,
    iso,
    label_id,
    node_id,
    parse_node_id,
    user_id,
)

__all__ = ["SDL", "GraphQLRequest", "run", "schema"]

Json = Any
Info = GraphQLResolveInfo[Any]
Rows = Sequence[tuple[tuple[int, ...], Any]]
PAGE_MAX = 100
NODE_LIMIT = 500_000
VIEWER = USERS[0]

_EXTRA_ISSUE_ITEM_TYPES = (
    "ISSUE_COMMENT",
    "MENTIONED_EVENT",
    "MILESTONED_EVENT",
    "REFERENCED_EVENT",
    "RENAMED_TITLE_EVENT",
)
_EXTRA_PULL_ITEM_TYPES = (
    "HEAD_REF_FORCE_PUSHED_EVENT",
    "PULL_REQUEST_COMMIT",
    "REVIEW_DISMISSED_EVENT",
)


def _constant(kind: str) -> str:
    """`AddedToProjectV2Event` → `ADDED_TO_PROJECT_V2_EVENT`, as GitHub names item types."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).upper()


ISSUE_KINDS = tuple(k for k in EVENT_KINDS if k not in PULL_ONLY_KINDS)
PULL_KINDS = tuple(EVENT_KINDS)
ITEM_TYPE_KIND: dict[str, str] = {_constant(k): k for k in EVENT_KINDS}


def _enum(name: str, values: Sequence[str]) -> str:
    return f"enum {name} {{\n" + "".join(f"  {v}\n" for v in sorted(values)) + "}\n"


def _union(name: str, members: Sequence[str]) -> str:
    return f"union {name} = " + " | ".join(sorted(members)) + "\n"


_TIMELINE_ARGS = "first: Int, after: String, last: Int, before: String, since: DateTime"
_PAGE_ARGS = "first: Int, after: String, last: Int, before: String"

SDL = (
    '''"""An ISO-8601 encoded UTC date string."""
scalar DateTime

"""An RFC 3986, RFC 3987, and RFC 6570 (level 4) compliant URI string."""
scalar URI

interface Node {
  id: ID!
}

interface Actor {
  avatarUrl(size: Int): URI!
  login: String!
  url: URI!
}

interface RepositoryOwner {
  id: ID!
  login: String!
  url: URI!
}

type Query {
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  rateLimit(dryRun: Boolean = false): RateLimit
  repository(owner: String!, name: String!, followRenames: Boolean = true): Repository
  viewer: User!
}

type RateLimit {
  cost: Int!
  limit: Int!
  nodeCount: Int!
  remaining: Int!
  resetAt: DateTime!
  used: Int!
}

type PageInfo {
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
}

type Team implements Node {
  id: ID!
  name: String!
  slug: String!
  url: URI!
}

type ProjectV2 implements Node {
  id: ID!
  number: Int!
  title: String!
  url: URI!
}

type Label implements Node {
  color: String!
  description: String
  id: ID!
  name: String!
  url: URI!
}

type Repository implements Node {
  createdAt: DateTime!
  databaseId: Int
  hasIssuesEnabled: Boolean!
  id: ID!
  isArchived: Boolean!
  isPrivate: Boolean!
  issue(number: Int!): Issue
  issueOrPullRequest(number: Int!): IssueOrPullRequest
  issues(
    PAGE_ARGS
    states: [IssueState!]
    orderBy: IssueOrder
    filterBy: IssueFilters
  ): IssueConnection!
  name: String!
  nameWithOwner: String!
  owner: RepositoryOwner!
  pullRequest(number: Int!): PullRequest
  pullRequests(
    PAGE_ARGS
    states: [PullRequestState!]
    orderBy: IssueOrder
  ): PullRequestConnection!
  updatedAt: DateTime!
  url: URI!
}

input IssueOrder {
  direction: OrderDirection!
  field: IssueOrderField!
}

input IssueFilters {
  since: DateTime
  states: [IssueState!]
}

type Issue implements Node {
  assignees(PAGE_ARGS): UserConnection!
  author: Actor
  body: String!
  closed: Boolean!
  closedAt: DateTime
  createdAt: DateTime!
  databaseId: Int
  id: ID!
  labels(PAGE_ARGS): LabelConnection
  number: Int!
  repository: Repository!
  state: IssueState!
  stateReason: IssueStateReason
  timelineItems(
    TIMELINE_ARGS
    itemTypes: [IssueTimelineItemsItemType!]
  ): IssueTimelineItemsConnection!
  title: String!
  updatedAt: DateTime!
  url: URI!
}

type PullRequest implements Node {
  assignees(PAGE_ARGS): UserConnection!
  author: Actor
  body: String!
  closed: Boolean!
  closedAt: DateTime
  closingIssuesReferences(PAGE_ARGS): IssueConnection
  createdAt: DateTime!
  databaseId: Int
  headRefName: String!
  id: ID!
  isDraft: Boolean!
  labels(PAGE_ARGS): LabelConnection
  merged: Boolean!
  mergedAt: DateTime
  number: Int!
  repository: Repository!
  state: PullRequestState!
  timelineItems(
    TIMELINE_ARGS
    itemTypes: [PullRequestTimelineItemsItemType!]
  ): PullRequestTimelineItemsConnection!
  title: String!
  updatedAt: DateTime!
  url: URI!
}

type LabeledEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  label: Label!
}

type UnlabeledEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  label: Label!
}

type AssignedEvent implements Node {
  actor: Actor
  assignee: Assignee
  createdAt: DateTime!
  id: ID!
}

type UnassignedEvent implements Node {
  actor: Actor
  assignee: Assignee
  createdAt: DateTime!
  id: ID!
}

type ClosedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  stateReason: IssueStateReason
  url: URI!
}

type ReopenedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  stateReason: IssueStateReason
}

type MergedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  mergeRefName: String!
  url: URI!
}

type ReadyForReviewEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  url: URI!
}

type ConvertToDraftEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  url: URI!
}

type ReviewRequestedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  requestedReviewer: RequestedReviewer
}

type ReviewRequestRemovedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  requestedReviewer: RequestedReviewer
}

type PullRequestReview implements Node {
  author: Actor
  body: String!
  createdAt: DateTime!
  databaseId: Int
  id: ID!
  pullRequest: PullRequest!
  state: PullRequestReviewState!
  submittedAt: DateTime
  url: URI!
}

type CrossReferencedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  isCrossRepository: Boolean!
  referencedAt: DateTime!
  source: ReferencedSubject!
  target: ReferencedSubject!
  url: URI!
  willCloseTarget: Boolean!
}

type AddedToProjectV2Event implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  project: ProjectV2
}

type ProjectV2ItemStatusChangedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  previousStatus: String!
  project: ProjectV2
  status: String!
}

union Assignee = Bot | Mannequin | Organization | User
union RequestedReviewer = Bot | Mannequin | Team | User
union IssueOrPullRequest = Issue | PullRequest
union ReferencedSubject = Issue | PullRequest

enum IssueState {
  CLOSED
  OPEN
}

enum IssueStateReason {
  COMPLETED
  DUPLICATE
  NOT_PLANNED
  REOPENED
}

enum PullRequestState {
  CLOSED
  MERGED
  OPEN
}

enum PullRequestReviewState {
  APPROVED
  CHANGES_REQUESTED
  COMMENTED
  DISMISSED
  PENDING
}

enum IssueOrderField {
  COMMENTS
  CREATED_AT
  UPDATED_AT
}

enum OrderDirection {
  ASC
  DESC
}
'''.replace("PAGE_ARGS", _PAGE_ARGS).replace("TIMELINE_ARGS", _TIMELINE_ARGS)
    + "".join(
        f"type {name} implements {interfaces} {{\n  avatarUrl(size: Int): URI!\n"
        f"  databaseId: Int\n  id: ID!\n  login: String!\n{extra}  url: URI!\n}}\n\n"
        for name, interfaces, extra in (
            ("User", "Node & Actor & RepositoryOwner", "  name: String\n"),
            ("Organization", "Node & Actor & RepositoryOwner", "  name: String\n"),
            ("Bot", "Node & Actor", ""),
            ("Mannequin", "Node & Actor", ""),
        )
    )
    + _union("IssueTimelineItems", ISSUE_KINDS)
    + _union("PullRequestTimelineItems", PULL_KINDS)
    + _enum(
        "IssueTimelineItemsItemType",
        [_constant(k) for k in ISSUE_KINDS] + list(_EXTRA_ISSUE_ITEM_TYPES),
    )
    + _enum(
        "PullRequestTimelineItemsItemType",
        [_constant(k) for k in PULL_KINDS] + list(_EXTRA_ISSUE_ITEM_TYPES + _EXTRA_PULL_ITEM_TYPES),
    )
    + "\n".join(
        f"type {kind}Connection {{\n  edges: [{kind}Edge]\n  nodes: [{kind}]\n"
        f"  pageInfo: PageInfo!\n  totalCount: Int!\n}}\n\n"
        f"type {kind}Edge {{\n  cursor: String!\n  node: {kind}\n}}\n"
        for kind in ("Issue", "PullRequest", "Label", "User")
    )
    + "\n".join(
        f"type {kind}Connection {{\n  edges: [{kind}Edge]\n  filteredCount: Int!\n"
        f"  nodes: [{kind}]\n  pageCount: Int!\n  pageInfo: PageInfo!\n  totalCount: Int!\n"
        f"  updatedAt: DateTime!\n}}\n\n"
        f"type {kind}Edge {{\n  cursor: String!\n  node: {kind}\n}}\n"
        for kind in ("IssueTimelineItems", "PullRequestTimelineItems")
    )
)


# --------------------------------------------------------------------------- errors


class GitHubGraphQLError(Exception):
    """A resolver failure GitHub reports with a `type` (NOT_FOUND, EXCESSIVE_PAGINATION...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _format(error: GraphQLError) -> Json:
    out: dict[str, Json] = {}
    original = error.original_error
    if isinstance(original, GitHubGraphQLError):
        out["type"] = original.kind
    if error.path is not None:
        out["path"] = list(error.path)
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    out["message"] = error.message
    return out


# --------------------------------------------------------------------------- request context


@dataclass(slots=True)
class GraphQLRequest:
    """What the resolvers may see of the simulator during one request."""

    world: World
    base: str
    budget: RateBudget
    now: int
    cost: int = 0
    node_count: int = 0

    def user(self, login: str) -> Json:
        uid = user_id(login)
        return {
            "__typename": "User",
            "avatarUrl": f"{self.base}/avatars/u/{uid}?v=4",
            "databaseId": uid,
            "id": node_id("U", uid),
            "login": login,
            "name": None,
            "url": f"{self.base}/{login}",
        }

    def organization(self, login: str) -> Json:
        owner = self.user(login)
        owner["__typename"] = "Organization"
        owner["id"] = node_id("O", user_id(login))
        return owner

    def label(self, repo: Repo, name: str) -> Json:
        return {
            "__typename": "Label",
            "color": LABEL_COLORS.get(name, "ededed"),
            "description": None,
            "id": node_id("LA", repo.id, label_id(repo, name)),
            "name": name,
            "url": f"{self.base}/{repo.full_name}/labels/{name}",
        }

    def project(self, repo: Repo) -> Json:
        return {
            "__typename": "ProjectV2",
            "id": node_id("PVT", user_id(repo.owner), 1),
            "number": 1,
            "title": "Roadmap",
            "url": f"{self.base}/orgs/{repo.owner}/projects/1",
        }

    def item_url(self, item: Item) -> str:
        kind = "pull" if item.pull else "issues"
        return f"{self.base}/{item.repo.full_name}/{kind}/{item.number}"

    def event(self, item: Item, event: Event) -> Json:
        kind = event.kind
        node: dict[str, Json] = {
            "__typename": kind,
            "actor": self.user(event.actor),
            "createdAt": iso(event.at),
            "id": event_node_id(item, event),
        }
        url = f"{self.item_url(item)}#event-{event.id}"
        if kind in ("LabeledEvent", "UnlabeledEvent"):
            assert event.label is not None
            node["label"] = self.label(item.repo, event.label)
        elif kind in ("AssignedEvent", "UnassignedEvent"):
            node["assignee"] = self.user(event.login or "")
        elif kind in ("ReviewRequestedEvent", "ReviewRequestRemovedEvent"):
            node["requestedReviewer"] = self.user(event.login or "")
        elif kind == "ClosedEvent":
            node.update(stateReason=event.state, url=url)
        elif kind == "ReopenedEvent":
            node["stateReason"] = None if item.pull else "REOPENED"
        elif kind in ("MergedEvent", "ReadyForReviewEvent", "ConvertToDraftEvent"):
            node.update(mergeRefName="main", url=url)
        elif kind == "PullRequestReview":
            node.update(
                author=node.pop("actor"),
                body="",
                databaseId=event.id,
                pullRequest=item,
                state=event.state,
                submittedAt=node["createdAt"],
                url=f"{self.item_url(item)}#pullrequestreview-{event.id}",
            )
        elif kind == "CrossReferencedEvent":
            assert event.source is not None
            node.update(
                isCrossRepository=event.source.repo is not item.repo,
                referencedAt=node["createdAt"],
                source=event.source,
                target=item,
                url=f"{self.item_url(event.source)}#ref-{event.id}",
                willCloseTarget=event.will_close,
            )
        else:  # the Projects (v2) events
            node.update(project=self.project(item.repo), status=event.status)
            node["previousStatus"] = event.previous
        return node


# --------------------------------------------------------------------------- connections


def _cursor(key: tuple[int, ...]) -> str:
    text = "cursor:v2:" + json.dumps(list(key), separators=(",", ":"))
    return base64.b64encode(text.encode()).decode()


def _read_cursor(value: str) -> tuple[int, ...]:
    try:
        text = base64.b64decode(value, validate=True).decode()
        if not text.startswith("cursor:v2:"):
            raise ValueError(text)
        key = json.loads(text[len("cursor:v2:") :])
        if not isinstance(key, list) or not all(isinstance(k, int) for k in key):
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise GitHubGraphQLError(
            "INVALID_CURSOR_ARGUMENTS", f"`{value}` does not appear to be a valid cursor."
        ) from None
    return tuple(key)


def _connection(
    info: Info,
    rows: Rows,
    render: Callable[[Any], Json],
    args: dict[str, Any],
) -> Json:
    """A Relay connection over `rows` (sorted by their keys) with GitHub's paging rules."""
    first, last = args.get("first"), args.get("last")
    name = info.field_name
    if first is None and last is None:
        raise GitHubGraphQLError(
            "MISSING_PAGINATION_BOUNDARIES",
            f"You must provide a `first` or `last` value to properly paginate the `{name}` "
            "connection.",
        )
    for label, size in (("first", first), ("last", last)):
        if size is not None and size > PAGE_MAX:
            raise GitHubGraphQLError(
                "EXCESSIVE_PAGINATION",
                f"Requesting {size} records on the `{name}` connection exceeds the `{label}` "
                f"limit of {PAGE_MAX} records.",
            )
        if size is not None and size < 0:
            raise GitHubGraphQLError(
                "INVALID_PAGINATION", f"`{label}` on the `{name}` connection cannot be negative."
            )
    keys = [key for key, _ in rows]
    low, high = 0, len(rows)
    if args.get("after"):
        low = bisect.bisect_right(keys, _read_cursor(args["after"]))
    if args.get("before"):
        high = max(low, bisect.bisect_left(keys, _read_cursor(args["before"])))
    start, end = low, high
    if first is not None:
        end = min(end, start + first)
    if last is not None:
        start = max(start, end - last)
    page = rows[start:end]
    edges = [{"cursor": _cursor(key), "node": render(obj)} for key, obj in page]
    return {
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
            "hasNextPage": end < high,
            "hasPreviousPage": start > low,
        },
        "totalCount": len(rows),
        "filteredCount": high - low,
        "pageCount": len(page),
    }


def _ctx(info: Info) -> GraphQLRequest:
    request = info.context
    assert isinstance(request, GraphQLRequest)
    return request


def _since(value: Any) -> int | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise GitHubGraphQLError("INVALID_ARGUMENTS", f"Invalid DateTime: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


# --------------------------------------------------------------------------- resolvers


def _timeline(item: Item, info: Info, **args: Any) -> Json:
    ctx = _ctx(info)
    item_types = args.get("itemTypes")
    kinds = {ITEM_TYPE_KIND.get(t, t) for t in item_types} if item_types else None
    since = _since(args.get("since"))
    rows = [
        ((position,), event)
        for position, event in enumerate(item.events)
        if (kinds is None or event.kind in kinds) and (since is None or event.at >= since)
    ]
    connection = _connection(info, rows, functools.partial(ctx.event, item), args)
    connection["updatedAt"] = iso(item.updated)
    return connection


def _labels(item: Item, info: Info, **args: Any) -> Json:
    ctx = _ctx(info)
    rows = [((n,), name) for n, name in enumerate(item.labels)]
    return _connection(info, rows, functools.partial(ctx.label, item.repo), args)


def _assignees(item: Item, info: Info, **args: Any) -> Json:
    rows = [((n,), login) for n, login in enumerate(item.assignees)]
    return _connection(info, rows, _ctx(info).user, args)


def _closing(item: Item, info: Info, **args: Any) -> Json:
    rows = [((n,), issue) for n, issue in enumerate(item.closes)]
    return _connection(info, rows, lambda issue: issue, args)


def _not_found(kind: str, what: str) -> GitHubGraphQLError:
    return GitHubGraphQLError("NOT_FOUND", f"Could not resolve to {kind} with {what}.")


def _number(repo: Repo, number: int, want: bool | None) -> Item:
    item = repo.items.get(number)
    if item is None or (want is not None and item.pull != want):
        article = {None: "an issue or pull request", False: "an Issue", True: "a PullRequest"}
        raise _not_found(article[want], f"the number of {number}")
    return item


_ORDER_FIELDS: dict[str, Callable[[Item], int]] = {
    "CREATED_AT": lambda item: item.created,
    "UPDATED_AT": lambda item: item.updated,
    "COMMENTS": lambda item: 0,
}


def _listing(repo: Repo, info: Info, pull: bool, **args: Any) -> Json:
    """`issues` / `pullRequests` of a repository, ordered by `orderBy` (default: created)."""
    filters = args.get("filterBy") or {}
    states = set(args.get("states") or filters.get("states") or ())
    since = _since(filters.get("since"))
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "ASC"}
    value = _ORDER_FIELDS[order["field"]]
    sign = -1 if order["direction"] == "DESC" else 1
    rows = []
    for item in repo.items.values():
        if item.pull != pull or (since is not None and item.updated < since):
            continue
        if states and _state(item) not in states:
            continue
        rows.append(((sign * value(item), sign * item.number), item))
    rows.sort(key=lambda row: row[0])
    return _connection(info, rows, lambda item: item, args)


def _state(item: Item) -> str:
    if item.merged_at is not None:
        return "MERGED"
    return item.state.upper()


def _repository(_: Any, info: Info, owner: str, name: str, **__: Any) -> Repo:
    world = _ctx(info).world
    wanted = f"{owner}/{name}".lower()
    for repo in world.repos.values():
        if repo.full_name.lower() == wanted:
            return repo
    raise GitHubGraphQLError(
        "NOT_FOUND", f"Could not resolve to a Repository with the name '{owner}/{name}'."
    )


def _rate_limit(_: Any, info: Info, **__: Any) -> Json:
    ctx = _ctx(info)
    budget = ctx.budget
    return {
        "cost": ctx.cost,
        "limit": budget.limit,
        "nodeCount": ctx.node_count,
        "remaining": budget.remaining,
        "resetAt": iso(budget.reset),
        "used": budget.used,
    }


def _node(ctx: GraphQLRequest, value: str) -> Any:
    """The object a global id names, or None."""
    parsed = parse_node_id(value)
    if parsed is None:
        return None
    prefix, parts = parsed
    repos = {repo.id: repo for repo in ctx.world.repos.values()}
    if prefix == "R" and len(parts) == 1:
        return repos.get(parts[0])
    if prefix in ("U", "O") and len(parts) == 1:
        logins = {user_id(login): login for login in _logins(ctx.world)}
        login = logins.get(parts[0])
        if login is None:
            return None
        return ctx.user(login) if prefix == "U" else ctx.organization(login)
    repo = repos.get(parts[0]) if len(parts) >= 2 else None
    item = repo.items.get(parts[1]) if repo is not None else None
    if item is None:
        return None
    if len(parts) == 2 and prefix == ("PR" if item.pull else "I"):
        return item
    if len(parts) == 3:
        for event in item.events:
            if event.id == parts[2] and EVENT_KINDS[event.kind][1] == prefix:
                return ctx.event(item, event)
    return None


def _logins(world: World) -> set[str]:
    logins = set(USERS)
    for item in world.items():
        logins.add(item.user)
        logins.update(e.actor for e in item.events)
        logins.update(e.login for e in item.events if e.login)
    for repo in world.repos.values():
        logins.add(repo.owner)
    return logins


def _node_or_error(ctx: GraphQLRequest, value: str) -> Any:
    found = _node(ctx, value)
    if found is None:
        return GitHubGraphQLError(
            "NOT_FOUND", f"Could not resolve to a node with the global id of '{value}'."
        )
    return found


def _nodes(_: Any, info: Info, ids: list[str]) -> list[Any]:
    """Each id's object; an unknown id is null with its own NOT_FOUND error (graphql-core
    turns an exception in a list into an error at that index), the others still resolve."""
    if len(ids) > PAGE_MAX:
        raise GitHubGraphQLError(
            "EXCESSIVE_PAGINATION",
            f"You may not request more than {PAGE_MAX} node ids; you requested {len(ids)}.",
        )
    ctx = _ctx(info)
    return [_node_or_error(ctx, value) for value in ids]


def _single_node(_: Any, info: Info, id: str) -> Any:
    found = _node_or_error(_ctx(info), id)
    if isinstance(found, Exception):
        raise found
    return found


def _item_fields() -> dict[str, Callable[..., Any]]:
    return {
        "assignees": _assignees,
        "author": lambda item, info: _ctx(info).user(item.user),
        "body": lambda item, info: item.body,
        "closed": lambda item, info: item.state == "closed",
        "closedAt": lambda item, info: iso(item.closed_at) if item.closed_at else None,
        "createdAt": lambda item, info: iso(item.created),
        "databaseId": lambda item, info: item.id,
        "id": lambda item, info: item.node_id,
        "labels": _labels,
        "repository": lambda item, info: item.repo,
        "timelineItems": _timeline,
        "updatedAt": lambda item, info: iso(item.updated),
        "url": lambda item, info: _ctx(info).item_url(item),
    }


def _resolvers() -> dict[str, dict[str, Callable[..., Any]]]:
    issue: dict[str, Callable[..., Any]] = {
        **_item_fields(),
        "state": lambda item, info: item.state.upper(),
        "stateReason": lambda item, info: (item.state_reason or "").upper() or None,
    }
    pull: dict[str, Callable[..., Any]] = {
        **_item_fields(),
        "closingIssuesReferences": _closing,
        "headRefName": lambda item, info: item.head_ref,
        "isDraft": lambda item, info: item.draft,
        "merged": lambda item, info: item.merged_at is not None,
        "mergedAt": lambda item, info: iso(item.merged_at) if item.merged_at else None,
        "state": lambda item, info: _state(item),
    }
    repository: dict[str, Callable[..., Any]] = {
        "createdAt": lambda repo, info: iso(repo.created),
        "databaseId": lambda repo, info: repo.id,
        "hasIssuesEnabled": lambda repo, info: True,
        "id": lambda repo, info: repo.node_id,
        "isArchived": lambda repo, info: repo.archived,
        "isPrivate": lambda repo, info: False,
        "issue": lambda repo, info, number: _number(repo, number, False),
        "issueOrPullRequest": lambda repo, info, number: _number(repo, number, None),
        "issues": lambda repo, info, **args: _listing(repo, info, False, **args),
        "name": lambda repo, info: repo.name,
        "nameWithOwner": lambda repo, info: repo.full_name,
        "owner": lambda repo, info: _ctx(info).organization(repo.owner),
        "pullRequest": lambda repo, info, number: _number(repo, number, True),
        "pullRequests": lambda repo, info, **args: _listing(repo, info, True, **args),
        "updatedAt": lambda repo, info: iso(
            max((i.updated for i in repo.items.values()), default=repo.created)
        ),
        "url": lambda repo, info: f"{_ctx(info).base}/{repo.full_name}",
    }
    query: dict[str, Callable[..., Any]] = {
        "node": _single_node,
        "nodes": _nodes,
        "rateLimit": _rate_limit,
        "repository": _repository,
        "viewer": lambda root, info: _ctx(info).user(VIEWER),
    }
    return {"Issue": issue, "PullRequest": pull, "Repository": repository, "Query": query}


def _resolve_type(value: Any, info: Info, abstract: Any) -> str | None:
    if isinstance(value, dict):
        name = value.get("__typename")
        return name if isinstance(name, str) else None
    if isinstance(value, Item):
        return value.typename
    if isinstance(value, Repo):
        return "Repository"
    return None


@functools.cache
def schema() -> GraphQLSchema:
    """The schema, built once from `SDL`, with the simulator's resolvers attached."""
    built = graphql.build_schema(SDL)
    for type_name, fields in _resolvers().items():
        graphql_type = built.type_map[type_name]
        assert isinstance(graphql_type, GraphQLObjectType)
        for field_name, resolve in fields.items():
            graphql_type.fields[field_name].resolve = resolve
    return built


# --------------------------------------------------------------------------- cost


@dataclass(slots=True)
class _Cost:
    requests: int = 0
    nodes: int = 0
    worst_field: str = ""


def _int_arg(
    node: FieldNode, name: str, variables: dict[str, Any], defaults: dict[str, Any]
) -> int | None:
    for argument in node.arguments or ():
        if argument.name.value != name:
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            raw = variables.get(value.name.value, defaults.get(value.name.value))
            return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    return None


def _cost(
    built: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
) -> _Cost:
    """GitHub's static cost of `operation`: requests and possible nodes per connection."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    defaults: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            defaults[definition.variable.name.value] = int(definition.default_value.value)
    total = _Cost()

    def walk(selections: SelectionSetNode, parent: GraphQLNamedType | None, outer: int) -> None:
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
                    continue
                field = parent.fields.get(selection.name.value)
                if field is None:
                    continue
                child_type = graphql.get_named_type(field.type)
                inner = outer
                if child_type.name.endswith("Connection"):
                    size = _int_arg(selection, "first", variables, defaults)
                    if size is None:
                        size = _int_arg(selection, "last", variables, defaults)
                    inner = outer * max(size or 0, 0)
                    total.requests += outer
                    total.nodes += inner
                    if inner and total.nodes > NODE_LIMIT and not total.worst_field:
                        total.worst_field = selection.name.value
                if selection.selection_set is not None:
                    walk(selection.selection_set, child_type, inner)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = built.get_type(condition.name.value) if condition else parent
                walk(selection.selection_set, target, outer)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    target = built.get_type(fragment.type_condition.name.value)
                    walk(fragment.selection_set, target, outer)

    walk(operation.selection_set, built.query_type, 1)
    return total


def _points(requests: int) -> int:
    return max(1, (requests + 50) // 100)


# --------------------------------------------------------------------------- entry point


_PARSED: BoundedCache[str, DocumentNode | list[Json]] = BoundedCache(64)
_PARSED_LOCK = threading.Lock()  # shared by every simulator in the process
_ALL_RULES = tuple(graphql.specified_rules)
_NO_VARIABLE_RULES = tuple(
    rule
    for rule in _ALL_RULES
    if rule
    not in (
        graphql.NoUndefinedVariablesRule,
        graphql.NoUnusedVariablesRule,
        graphql.VariablesInAllowedPositionRule,
    )
)


def _document(query: str) -> DocumentNode | list[Json]:
    """The parsed, validated document, or the errors to answer with (cached by text)."""
    with _PARSED_LOCK:
        cached = _PARSED.get(query)
        if cached is not None:
            return cached
    result: DocumentNode | list[Json]
    try:
        document = graphql.parse(query)
    except GraphQLError as error:
        result = [_format(error)]
    else:
        # Without `$` there are no variables, so the three variable rules cannot fail; they
        # re-walk the document and cost a third of the validation of a large query.
        rules = _ALL_RULES if "$" in query else _NO_VARIABLE_RULES
        errors = graphql.validate(schema(), document, rules=rules)
        result = [_format(e) for e in errors] if errors else document
    with _PARSED_LOCK:
        return _PARSED.put(query, result)


def _operation(
    document: DocumentNode, name: str | None
) -> OperationDefinitionNode | GitHubGraphQLError:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        for operation in operations:
            if operation.name is not None and operation.name.value == name:
                return operation
        return GitHubGraphQLError("INVALID_OPERATION", f'Unknown operation named "{name}".')
    if len(operations) != 1:
        return GitHubGraphQLError(
            "INVALID_OPERATION",
            "An operation name is required when the document contains several operations.",
        )
    return operations[0]


def _dry_run(operation: OperationDefinitionNode, variables: dict[str, Any]) -> bool:
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode) and selection.name.value == "rateLimit":
            for argument in selection.arguments or ():
                if argument.name.value != "dryRun":
                    continue
                value = argument.value
                if isinstance(value, VariableNode):
                    return variables.get(value.name.value) is True
                return isinstance(value, graphql.BooleanValueNode) and value.value
    return False


def run(request: GraphQLRequest, body: Json) -> Json:
    """Answer one `POST /graphql` body with GitHub's response document."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return {
            "errors": [{"message": "A query attribute must be specified and must be a string."}]
        }
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        return {"errors": [{"message": "Variables are invalid JSON."}]}
    name = body.get("operationName")
    document = _document(body["query"])
    if isinstance(document, list):
        return {"errors": document}
    operation = _operation(document, name if isinstance(name, str) else None)
    if isinstance(operation, GitHubGraphQLError):
        return {"errors": [{"type": operation.kind, "message": str(operation)}]}
    cost = _cost(schema(), document, operation, variables)
    if cost.nodes > NODE_LIMIT:
        message = (
            f"By the time this query traverses to the {cost.worst_field} connection, it is "
            f"requesting up to {cost.nodes:,} possible nodes which exceeds the maximum limit "
            f"of {NODE_LIMIT:,}."
        )
        return {"errors": [{"type": "MAX_NODE_LIMIT_EXCEEDED", "message": message}]}
    points = _points(cost.requests)
    budget = request.budget
    if budget.remaining < points:
        message = f"API rate limit exceeded for user ID {user_id(VIEWER)}."
        return {"errors": [{"type": "RATE_LIMITED", "message": message}]}
    if not _dry_run(operation, variables):
        budget.used += points
    request.cost, request.node_count = points, cost.nodes
    result = graphql.execute(
        schema(),
        document,
        context_value=request,
        variable_values=variables,
        operation_name=operation.name.value if operation.name else None,
        type_resolver=_resolve_type,
    )
    assert isinstance(result, graphql.ExecutionResult)
    out: dict[str, Json] = {"data": result.data}
    if result.errors:
        out["errors"] = [_format(e) for e in result.errors]
    return out
