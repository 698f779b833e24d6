"""The GitLab simulator's GraphQL endpoint (`/api/graphql`): the part of GitLab's schema a sync
reads — a project's merge requests and issues by iid, and their notes — served by graphql-core
over the same world as the REST API.

Because the schema is real GraphQL, variables, aliases and fragments work as on GitLab; type,
field, argument and enum names are GitLab's. What a client meets, as on GitLab (app/graphql in
gitlab-org/gitlab, and the "Limits" of its GraphQL API documentation):

- connections have `count`, `edges`, `nodes` and `pageInfo`; `first`/`last` above 100 are cut
  to 100 (the schema's `default_max_page_size`) and no `first` means 100; cursors are opaque;
- `notes` come in creation order (NotesFinder's `fresh`: created_at, then id) and take
  `filter: ALL_NOTES | ONLY_COMMENTS | ONLY_ACTIVITY` (GitLab 16.5; with `notes_filter=False`
  the schema is the older one, whose `notes` has no `filter`);
- `Time` is ISO 8601 to the second, `2023-12-15T17:31:00Z` (Ruby's `Time#iso8601`): REST
  says `…:00.123Z` for the same instant;
- a query is scored before it runs, as GitLab's BaseField/BaseResolver do it: every field adds
  1 plus its selections; a field with a resolver adds its selections plus 1 (+1 with `sort`,
  +5 with `search`), and a connection's score then grows by 1 % per item of its page size,
  unless it is asked for by `iid`/`iids`. Over 250 (200 without a token) the whole query is
  refused, with HTTP 200: `{"errors": [{"message": "Query has complexity of 300, which
  exceeds max complexity of 250"}]}`. (GitLab also limits depth, to 20; no query of this
  schema can nest that deep.) With
  `iids_complexity`, `mergeRequests`/`issues` also count their selection once per requested
  iid, as GitLab's epics resolver does: a server that scores batches by their size;
- a token the instance does not know is a 401 `{"errors": [{"message": "Invalid token"}]}`;
  without a token the request is anonymous and a private project (every simulated one) is
  `null`; a query over 10,000 characters is a 422 `{"errors": [{"message": "Query too
  large"}]}`;
- syntax, validation and execution errors carry `message` and `locations` (and `path` for
  execution errors); an unknown field or argument is worded as graphql-ruby words it
  (`Field 'notes' doesn't accept argument 'filter'`), with its `extensions.code`.

`run` answers one request body; the HTTP side (routing, auth, rate limits) is
`GitLabSimulator`'s.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    OperationDefinitionNode,
    SelectionSetNode,
)

from syncd.simulator.common import BoundedCache
from syncd.simulator.gitlab_data import (
    ISSUE,
    MERGE_REQUEST,
    NOTE,
    VIEWER,
    Event,
    Item,
    Project,
    World,
    user_id,
    user_name,
)

__all__ = [
    "AUTHENTICATED_MAX_COMPLEXITY",
    "DEFAULT_MAX_COMPLEXITY",
    "MAX_QUERY_SIZE",
    "GraphQLRequest",
    "note_action",
    "run",
    "schema",
]

Json = Any
Info = GraphQLResolveInfo[Any]
PAGE_MAX = 100
MAX_QUERY_SIZE = 10_000  # characters (GraphqlController::MAX_QUERY_SIZE)
DEFAULT_MAX_COMPLEXITY = 200  # anonymous
AUTHENTICATED_MAX_COMPLEXITY = 250

_PAGE_ARGS = "after: String, before: String, first: Int, last: Int"
_NOTES_ARGS = "filter: NotesFilterType = ALL_NOTES, " + _PAGE_ARGS


def _sdl(notes_filter: bool) -> str:
    notes_args = _NOTES_ARGS if notes_filter else _PAGE_ARGS
    connections = "\n".join(
        f'"""The connection type for {kind}."""\n'
        f"type {kind}Connection {{\n  count: Int!\n  edges: [{kind}Edge]\n  nodes: [{kind}]\n"
        f"  pageInfo: PageInfo!\n}}\n\n"
        f'"""An edge in a connection."""\n'
        f"type {kind}Edge {{\n  cursor: String!\n  node: {kind}\n}}\n"
        for kind in ("Issue", "MergeRequest", "Note")
    )
    return f'''"""Time represented in ISO 8601."""
scalar Time

scalar IssueID
scalar MergeRequestID
scalar NoteID
scalar ProjectID
scalar SystemNoteMetadataID
scalar UserID

type Query {{
  currentUser: UserCore
  project(fullPath: ID!): Project
  queryComplexity: QueryComplexity
}}

type QueryComplexity {{
  limit: Int
  score: Int
}}

type PageInfo {{
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
}}

type UserCore {{
  avatarUrl: String
  id: UserID!
  name: String!
  state: UserState!
  username: String!
  webUrl: String!
}}

type Project {{
  fullPath: ID!
  id: ProjectID!
  issue(iid: String): Issue
  issues(
    iid: String
    iids: [String!]
    search: String
    sort: IssueSort = created_desc
    state: IssuableState
    {_PAGE_ARGS}
  ): IssueConnection
  mergeRequest(iid: String!): MergeRequest
  mergeRequests(
    iids: [String!]
    search: String
    sort: MergeRequestSort = created_desc
    state: MergeRequestState
    {_PAGE_ARGS}
  ): MergeRequestConnection
  name: String!
  webUrl: String
}}

interface NoteableInterface {{
  notes({notes_args}): NoteConnection!
}}

type Issue implements NoteableInterface {{
  author: UserCore!
  closedAt: Time
  createdAt: Time!
  id: IssueID!
  iid: String!
  notes({notes_args}): NoteConnection!
  state: IssueState!
  title: String!
  updatedAt: Time!
  webUrl: String!
}}

type MergeRequest implements NoteableInterface {{
  author: UserCore
  createdAt: Time!
  draft: Boolean!
  id: MergeRequestID!
  iid: String!
  mergedAt: Time
  notes({notes_args}): NoteConnection!
  state: MergeRequestState!
  title: String!
  updatedAt: Time!
  webUrl: String
}}

type Note {{
  author: UserCore
  body: String!
  createdAt: Time!
  id: NoteID!
  internal: Boolean
  system: Boolean!
  systemNoteMetadata: SystemNoteMetadata
  updatedAt: Time!
  url: String
}}

type SystemNoteMetadata {{
  action: String
  id: SystemNoteMetadataID!
}}

enum NotesFilterType {{
  ALL_NOTES
  ONLY_ACTIVITY
  ONLY_COMMENTS
}}

enum IssueState {{
  all
  closed
  locked
  opened
}}

enum IssuableState {{
  all
  closed
  locked
  opened
}}

enum MergeRequestState {{
  all
  closed
  locked
  merged
  opened
}}

enum IssueSort {{
  CREATED_ASC
  CREATED_DESC
  UPDATED_ASC
  UPDATED_DESC
  created_asc
  created_desc
  updated_asc
  updated_desc
}}

enum MergeRequestSort {{
  CREATED_ASC
  CREATED_DESC
  UPDATED_ASC
  UPDATED_DESC
  created_asc
  created_desc
  updated_asc
  updated_desc
}}

enum UserState {{
  active
  blocked
  deactivated
}}

{connections}'''


# --------------------------------------------------------------------------- request context


@dataclass(slots=True)
class GraphQLRequest:
    """What the resolvers may see of the simulator during one request."""

    world: World
    base: str
    authenticated: bool
    iids_complexity: bool = False
    score: int = 0

    @property
    def max_complexity(self) -> int:
        return AUTHENTICATED_MAX_COMPLEXITY if self.authenticated else DEFAULT_MAX_COMPLEXITY

    def user(self, login: str) -> Json:
        number = user_id(login)
        return {
            "avatarUrl": f"{self.base}/uploads/-/system/user/avatar/{number}/avatar.png",
            "id": f"gid://gitlab/User/{number}",
            "name": user_name(login),
            "state": "active",
            "username": login,
            "webUrl": f"{self.base}/{login}",
        }


def _ctx(info: Info) -> GraphQLRequest:
    request = info.context
    assert isinstance(request, GraphQLRequest)
    return request


class _FieldError(Exception):
    """A resolver failure reported in the response's `errors`, next to partial data."""


# --------------------------------------------------------------------------- rendering


def iso_seconds(ms: int) -> str:
    """GitLab's GraphQL `Time`: UTC to the second (`2023-12-15T17:31:00Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


_ACTIONS: tuple[tuple[str, str], ...] = (
    ("requested review from", "reviewer"),
    ("approved this merge request", "approved"),
    ("unapproved this merge request", "unapproved"),
    ("marked this merge request as", "title"),
    ("assigned to", "assignee"),
    ("marked this issue as", "relate"),
    # the closest documented action (SystemNoteMetadata::ICON_TYPES); the action GitLab gives
    # work item Status notes was not found in its sources
    ("set status to", "status"),
)


def note_action(body: str) -> str | None:
    """The `system_note_metadata.action` GitLab records with a system note of this body."""
    for prefix, action in _ACTIONS:
        if body.startswith(prefix):
            return action
    return None


def _note(ctx: GraphQLRequest, item: Item, event: Event) -> Json:
    segment = "issues" if item.kind == ISSUE else "merge_requests"
    action = note_action(event.body) if event.system else None
    return {
        "author": ctx.user(event.actor),
        "body": event.body,
        "createdAt": iso_seconds(event.at),
        "id": f"gid://gitlab/Note/{event.id}",
        "internal": False,
        "system": event.system,
        "systemNoteMetadata": (
            {"action": action, "id": f"gid://gitlab/SystemNoteMetadata/{event.id}"}
            if event.system
            else None
        ),
        "updatedAt": iso_seconds(event.at),
        "url": f"{ctx.base}/{item.project.full_path}/-/{segment}/{item.iid}#note_{event.id}",
    }


# --------------------------------------------------------------------------- connections

Key = tuple[int, ...]


def _cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": list(key)}).encode()).decode().rstrip("=")


def _read_cursor(value: str) -> Key:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        key = decoded["k"]
        if not isinstance(key, list) or not all(isinstance(k, int) for k in key):
            raise ValueError(value)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _FieldError("Please provide a valid cursor") from None
    return tuple(key)


def _connection(
    rows: Sequence[tuple[Key, Any]], render: Callable[[Any], Json], args: dict[str, Any]
) -> Json:
    """A connection over `rows` (sorted by key) with graphql-ruby's slicing: `after`/`before`
    narrow, then `first` keeps the head and `last` the tail, each at most 100."""
    keys = [key for key, _ in rows]
    low, high = 0, len(rows)
    if args.get("after"):
        low = _bisect_right(keys, _read_cursor(args["after"]))
    if args.get("before"):
        high = max(low, _bisect_left(keys, _read_cursor(args["before"])))
    first, last = args.get("first"), args.get("last")
    for name, size in (("first", first), ("last", last)):
        if size is not None and size < 0:
            raise _FieldError(f"Argument '{name}' must be greater than or equal to 0")
    start, end = low, high
    if first is None and last is None:
        first = PAGE_MAX
    if first is not None:
        end = min(end, start + min(first, PAGE_MAX))
    if last is not None:
        start = max(start, end - min(last, PAGE_MAX))
    edges = [{"cursor": _cursor(key), "node": render(obj)} for key, obj in rows[start:end]]
    return {
        "count": len(rows),
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "endCursor": edges[-1]["cursor"] if edges else None,
            "hasNextPage": end < high,
            "hasPreviousPage": start > low,
            "startCursor": edges[0]["cursor"] if edges else None,
        },
    }


def _bisect_right(keys: Sequence[Key], key: Key) -> int:
    low, high = 0, len(keys)
    while low < high:
        middle = (low + high) // 2
        if key < keys[middle]:
            high = middle
        else:
            low = middle + 1
    return low


def _bisect_left(keys: Sequence[Key], key: Key) -> int:
    low, high = 0, len(keys)
    while low < high:
        middle = (low + high) // 2
        if keys[middle] < key:
            low = middle + 1
        else:
            high = middle
    return low


# --------------------------------------------------------------------------- resolvers

_NOTE_FILTERS: dict[str, Callable[[Event], bool]] = {
    "ALL_NOTES": lambda event: True,
    "ONLY_COMMENTS": lambda event: not event.system,
    "ONLY_ACTIVITY": lambda event: event.system,
}


def _notes(item: Item, info: Info, **args: Any) -> Json:
    ctx = _ctx(info)
    keep = _NOTE_FILTERS[args.get("filter") or "ALL_NOTES"]
    rows = sorted(
        ((event.at, event.id), event) for event in item.events if event.kind == NOTE and keep(event)
    )
    return _connection(rows, functools.partial(_note, ctx, item), args)


def _project(_: Any, info: Info, fullPath: str) -> Project | None:
    ctx = _ctx(info)
    if not ctx.authenticated:
        return None  # every simulated project is private
    wanted = fullPath.lower()
    for path, project in ctx.world.projects.items():
        if path.lower() == wanted:
            return project
    return None


def _iid(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


_ORDERS: dict[str, Callable[[Item], tuple[int, int]]] = {
    "created_asc": lambda item: (item.created, item.id),
    "created_desc": lambda item: (-item.created, -item.id),
    "updated_asc": lambda item: (item.updated, item.id),
    "updated_desc": lambda item: (-item.updated, -item.id),
}


def _listing(project: Project, info: Info, kind: str, **args: Any) -> Json:
    """`issues` / `mergeRequests` of a project: by `iids` (or `iid`) and `state`, in `sort`
    order (default newest first)."""
    wanted: set[int] | None = None
    for chosen in (args.get("iids"), [args["iid"]] if args.get("iid") is not None else None):
        if chosen is not None:
            numbers = {n for n in map(_iid, chosen) if n is not None}
            wanted = numbers if wanted is None else wanted & numbers
    state = args.get("state") or "all"
    search = (args.get("search") or "").lower()
    order = _ORDERS[str(args.get("sort") or "created_desc").lower()]
    rows = []
    for item in project.table(kind).values():
        if wanted is not None and item.iid not in wanted:
            continue
        if state != "all" and item.state != state:
            continue
        if search and search not in item.title.lower():
            continue
        rows.append((order(item), item))
    rows.sort(key=lambda row: row[0])
    return _connection(rows, lambda item: item, args)


def _single(project: Project, kind: str, iid: str | None) -> Item | None:
    number = _iid(iid)
    return project.table(kind).get(number) if number is not None else None


def _item_fields(kind: str) -> dict[str, Callable[..., Any]]:
    segment = "issues" if kind == ISSUE else "merge_requests"
    gid = "Issue" if kind == ISSUE else "MergeRequest"
    return {
        "author": lambda item, info: _ctx(info).user(item.author),
        "createdAt": lambda item, info: iso_seconds(item.created),
        "id": lambda item, info: f"gid://gitlab/{gid}/{item.id}",
        "iid": lambda item, info: str(item.iid),
        "notes": _notes,
        "state": lambda item, info: item.state,
        "title": lambda item, info: item.title,
        "updatedAt": lambda item, info: iso_seconds(item.updated),
        "webUrl": lambda item, info: (
            f"{_ctx(info).base}/{item.project.full_path}/-/{segment}/{item.iid}"
        ),
    }


def _resolvers() -> dict[str, dict[str, Callable[..., Any]]]:
    issue = {
        **_item_fields(ISSUE),
        "closedAt": lambda item, info: iso_seconds(item.closed_at) if item.closed_at else None,
    }
    merge_request = {
        **_item_fields(MERGE_REQUEST),
        "draft": lambda item, info: item.draft,
        "mergedAt": lambda item, info: iso_seconds(item.merged_at) if item.merged_at else None,
    }
    project: dict[str, Callable[..., Any]] = {
        "fullPath": lambda project, info: project.full_path,
        "id": lambda project, info: f"gid://gitlab/Project/{project.id}",
        "issue": lambda project, info, iid=None: _single(project, ISSUE, iid),
        "issues": lambda project, info, **args: _listing(project, info, ISSUE, **args),
        "mergeRequest": lambda project, info, iid: _single(project, MERGE_REQUEST, iid),
        "mergeRequests": lambda project, info, **args: _listing(
            project, info, MERGE_REQUEST, **args
        ),
        "name": lambda project, info: project.path,
        "webUrl": lambda project, info: f"{_ctx(info).base}/{project.full_path}",
    }
    query: dict[str, Callable[..., Any]] = {
        "currentUser": lambda root, info: (
            _ctx(info).user(VIEWER) if _ctx(info).authenticated else None
        ),
        "project": _project,
        "queryComplexity": lambda root, info: {
            "limit": _ctx(info).max_complexity,
            "score": _ctx(info).score,
        },
    }
    return {"Issue": issue, "MergeRequest": merge_request, "Project": project, "Query": query}


def _resolve_type(value: Any, info: Info, abstract: Any) -> str | None:
    if isinstance(value, Item):
        return "Issue" if value.kind == ISSUE else "MergeRequest"
    return None


@functools.cache
def schema(notes_filter: bool = True) -> GraphQLSchema:
    """The schema (with `notes(filter:)` unless `notes_filter` is False), built once."""
    built = graphql.build_schema(_sdl(notes_filter))
    for type_name, fields in _resolvers().items():
        graphql_type = built.type_map[type_name]
        assert isinstance(graphql_type, GraphQLObjectType)
        for field_name, resolve in fields.items():
            graphql_type.fields[field_name].resolve = resolve
    return built


# --------------------------------------------------------------------------- complexity

#: fields GitLab resolves with a resolver class (their score is computed, not a constant 1)
_RESOLVER_FIELDS = {"project", "issue", "issues", "mergeRequest", "mergeRequests", "notes"}


def _arguments(
    node: FieldNode, field: graphql.GraphQLField, variables: dict[str, Any]
) -> dict[str, Any]:
    """The field's arguments as the resolver would get them: literals, variables, defaults."""
    out: dict[str, Any] = {}
    for name, declared in field.args.items():  # defaults as written in the SDL
        default = declared.ast_node.default_value if declared.ast_node is not None else None
        if default is not None:
            out[name] = graphql.value_from_ast_untyped(default)
    for argument in node.arguments or ():
        out[argument.name.value] = graphql.value_from_ast_untyped(argument.value, variables)
    return {name: value for name, value in out.items() if value is not None}


def _score(
    built: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
    iids_complexity: bool,
) -> int:
    """GitLab's complexity score of `operation` (see the module docstring)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }

    def walk(selections: SelectionSetNode, parent: GraphQLNamedType | None) -> int:
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__") or not isinstance(
                    parent, GraphQLObjectType | GraphQLInterfaceType
                ):
                    continue
                field = parent.fields.get(name)
                if field is None:
                    continue
                child_type = graphql.get_named_type(field.type)
                child = (
                    walk(selection.selection_set, child_type)
                    if selection.selection_set is not None
                    else 0
                )
                if name not in _RESOLVER_FIELDS:
                    total += 1 + child
                    continue
                args = _arguments(selection, field, variables)
                own: float = child + 1 + (1 if "sort" in args else 0)
                own += 5 if "search" in args else 0
                iids = args.get("iids")
                if iids_complexity and isinstance(iids, list) and len(iids) > 1:
                    own += (len(iids) - 1) * child
                if child_type.name.endswith("Connection"):
                    sizes = [args.get("first"), args.get("last"), PAGE_MAX]
                    limit = min(s for s in sizes if isinstance(s, int))
                    by_id = "iid" in args or "iids" in args
                    own += own * limit * (0 if by_id else 0.01)
                total += int(own)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = built.get_type(condition.name.value) if condition else parent
                total += walk(selection.selection_set, target)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    target = built.get_type(fragment.type_condition.name.value)
                    total += walk(fragment.selection_set, target)
        return total

    return walk(operation.selection_set, built.query_type)


# --------------------------------------------------------------------------- errors

_UNKNOWN_ARGUMENT = re.compile(
    r"^Unknown argument '(?P<arg>\w+)' on field '(?P<type>\w+)\.(?P<field>\w+)'"
)
_UNKNOWN_FIELD = re.compile(r"^Cannot query field '(?P<field>\w+)' on type '(?P<type>\w+)'")


def _format(error: GraphQLError) -> Json:
    """An error in graphql-ruby's shape (and, for unknown fields and arguments, its words)."""
    out: dict[str, Json] = {"message": error.message}
    if match := _UNKNOWN_ARGUMENT.match(error.message):
        out["message"] = f"Field '{match['field']}' doesn't accept argument '{match['arg']}'"
        out["extensions"] = {
            "code": "argumentNotAccepted",
            "name": match["field"],
            "typeName": "Field",
            "argumentName": match["arg"],
        }
    elif match := _UNKNOWN_FIELD.match(error.message):
        out["message"] = f"Field '{match['field']}' doesn't exist on type '{match['type']}'"
        out["extensions"] = {
            "code": "undefinedField",
            "typeName": match["type"],
            "fieldName": match["field"],
        }
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path is not None:
        out["path"] = list(error.path)
    return out


def _message(text: str) -> Json:
    return {"errors": [{"message": text}]}


# --------------------------------------------------------------------------- entry point

_PARSED: BoundedCache[tuple[str, bool], DocumentNode | list[Json]] = BoundedCache(64)
_PARSED_LOCK = threading.Lock()  # shared by every simulator in the process


def _document(query: str, notes_filter: bool) -> DocumentNode | list[Json]:
    """The parsed, validated document, or the errors to answer with (cached by text)."""
    key = (query, notes_filter)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
        if cached is not None:
            return cached
    result: DocumentNode | list[Json]
    try:
        document = graphql.parse(query)
    except GraphQLError as error:
        result = [_format(error)]
    else:
        errors = graphql.validate(schema(notes_filter), document)
        result = [_format(e) for e in errors] if errors else document
    with _PARSED_LOCK:
        return _PARSED.put(key, result)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | str:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        for operation in operations:
            if operation.name is not None and operation.name.value == name:
                return operation
        return f'No operation named "{name}"'
    if len(operations) != 1:
        return "An operation name is required"
    return operations[0]


def run(request: GraphQLRequest, body: Json, *, notes_filter: bool = True) -> Json:
    """Answer one GraphQL request (`{"query", "variables", "operationName"}`) with GitLab's
    response document. The query must be at most `MAX_QUERY_SIZE` characters (the caller
    answers 422 otherwise)."""
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query.strip():
        return _message("No query string was present")
    variables = body.get("variables") or {}
    if isinstance(variables, str):
        try:
            variables = json.loads(variables) if variables.strip() else {}
        except ValueError:
            return _message(f"Variables are invalid JSON: {variables[:100]}")
    if not isinstance(variables, dict):
        return _message("Variables are invalid JSON")
    document = _document(query, notes_filter)
    if isinstance(document, list):
        return {"errors": document}
    name = body.get("operationName")
    operation = _operation(document, name if isinstance(name, str) else None)
    if isinstance(operation, str):
        return _message(operation)
    built = schema(notes_filter)
    score = _score(built, document, operation, variables, request.iids_complexity)
    if score > request.max_complexity:
        return _message(
            f"Query has complexity of {score}, which exceeds max complexity of "
            f"{request.max_complexity}"
        )
    request.score = score
    result = graphql.execute(
        built,
        document,
        context_value=request,
        variable_values=variables,
        operation_name=operation.name.value if operation.name else None,
        type_resolver=_resolve_type,
    )
    assert isinstance(result, graphql.ExecutionResult)
    out: dict[str, Json] = {}
    if result.errors:
        out["errors"] = [_format(e) for e in result.errors]
    if result.data is not None or not result.errors:
        out["data"] = result.data
    return out
