"""A small, honest JQL: tokenizer, recursive-descent parser and evaluator.

Supported, and nothing else (anything else is a `JqlError`, answered 400 like Jira):

    query    := [expr] [ORDER BY sortkey ("," sortkey)*]
    expr     := and (OR and)*
    and      := term (AND term)*
    term     := "(" expr ")" | clause
    clause   := project (= | != | IN | NOT IN) value(s)
              | key|issuekey|id (= | != | IN | NOT IN) value(s)
              | created|updated (= | != | > | >= | < | <=) date
    date     := epoch milliseconds | "yyyy-MM-dd[ HH:mm]" | "yyyy/MM/dd[ HH:mm]"
    sortkey  := created|updated|key|issuekey|id [ASC|DESC]

Like Jira, date bounds have minute precision: an epoch-millisecond bound is floored to its
minute before comparing (`updated >= 1700000059999` matches everything updated from
`...:00.000` of that minute), and quoted dates are read in the simulated user's time zone.
Without ORDER BY results come in `key DESC` order (ties by id ascending).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

MINUTE_MS = 60_000


class JqlError(ValueError):
    """The query cannot be parsed or refers to things that do not exist; carries Jira's message."""


class Searchable(Protocol):
    """What the evaluator reads from an issue."""

    @property
    def id(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def created(self) -> int: ...
    @property
    def updated(self) -> int: ...


S = TypeVar("S", bound=Searchable)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word", "string", "op", "(", ")", ",", "end"
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


_OPERATORS = (">=", "<=", "!=", "!~", "=", ">", "<", "~")
_SPECIAL = set("()=,<>!~\"'")


def tokenize(text: str) -> list[Token]:
    """Split JQL into tokens; quoted strings honour backslash escapes."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "(),":
            tokens.append(Token(ch, ch, i))
            i += 1
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        if ch in "\"'":
            start, i = i, i + 1
            chars: list[str] = []
            while i < n and text[i] != ch:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise JqlError(
                    f"Error in the JQL Query: The quoted string '{text[start + 1 :]}' has not "
                    f"been completed. (line 1, character {start + 1})"
                )
            tokens.append(Token("string", "".join(chars), start))
            i += 1
            continue
        start = i
        while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
            i += 1
        tokens.append(Token("word", text[start:i], start))
    tokens.append(Token("end", "", n))
    return tokens


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class Value:
    text: str
    quoted: bool
    pos: int


@dataclass(frozen=True, slots=True)
class Clause:
    field: str  # canonical: project, key, id, created, updated
    op: str  # =, !=, >, >=, <, <=, in, not in
    values: tuple[Value, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Clause | BoolOp


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str  # created, updated, key, id
    ascending: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: an optional condition and the sort order (never empty)."""

    where: Node | None
    order: tuple[SortKey, ...]
    explicit_order: bool


_FIELDS = {
    "project": "project",
    "key": "key",
    "issuekey": "key",
    "id": "id",
    "created": "created",
    "createddate": "created",
    "updated": "updated",
    "updateddate": "updated",
}
_SORT_FIELDS = {
    "created": "created",
    "updated": "updated",
    "key": "key",
    "issuekey": "key",
    "id": "id",
}
_KEYWORDS = {"AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "IS", "EMPTY", "NULL", "WAS"}
_DEFAULT_ORDER = (SortKey("key", False),)


def _where(tok: Token) -> str:
    return f"(line 1, character {tok.pos + 1})"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, expected: str) -> JqlError:
        tok = self.peek()
        got = "the end of the query" if tok.kind == "end" else f"'{tok.text}'"
        return JqlError(
            f"Error in the JQL Query: Expecting {expected} but got {got}. {_where(tok)}"
        )

    def query(self) -> Query:
        where: Node | None = None
        if not (self.peek().upper == "ORDER" or self.peek().kind == "end"):
            where = self.expr()
        order: tuple[SortKey, ...] = _DEFAULT_ORDER
        explicit = False
        if self.peek().upper == "ORDER":
            self.take()
            if self.take().upper != "BY":
                self.i -= 1
                raise self.fail("'by'")
            order = self.order_by()
            explicit = True
        if self.peek().kind != "end":
            raise self.fail("either 'OR' or 'AND'" if where is not None else "a field name")
        return Query(where, order, explicit)

    def order_by(self) -> tuple[SortKey, ...]:
        keys: list[SortKey] = []
        while True:
            tok = self.take()
            name = tok.text.lower() if tok.kind in ("word", "string") else ""
            if name not in _SORT_FIELDS:
                self.i -= 1
                if tok.kind in ("word", "string"):
                    raise JqlError(
                        f"Error in the JQL Query: the simulator cannot order by '{tok.text}'; "
                        f"it supports created, updated, key and id. {_where(tok)}"
                    )
                raise self.fail("a field name")
            ascending = True
            if self.peek().upper in ("ASC", "DESC"):
                ascending = self.take().upper == "ASC"
            keys.append(SortKey(_SORT_FIELDS[name], ascending))
            if self.peek().kind != ",":
                return tuple(keys)
            self.take()

    def expr(self) -> Node:
        parts = [self.conjunction()]
        while self.peek().upper == "OR":
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.term()]
        while self.peek().upper == "AND":
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def term(self) -> Node:
        if self.peek().kind == "(":
            self.take()
            node = self.expr()
            if self.peek().kind != ")":
                raise self.fail("')'")
            self.take()
            return node
        return self.clause()

    def clause(self) -> Clause:
        tok = self.take()
        if tok.kind not in ("word", "string") or tok.upper in _KEYWORDS:
            self.i -= 1
            raise self.fail("a field name")
        name = _FIELDS.get(tok.text.lower())
        if name is None:
            raise JqlError(
                f"Error in the JQL Query: the simulator does not support the field '{tok.text}' "
                f"(supported: project, key, id, created, updated). {_where(tok)}"
            )
        op_tok = self.peek()
        if op_tok.kind == "op":
            op = self.take().text
            if op in ("~", "!~"):
                raise JqlError(
                    f"Error in the JQL Query: The operator '{op}' is not supported by the "
                    f"field '{tok.text}'. {_where(op_tok)}"
                )
        elif op_tok.upper == "IN":
            self.take()
            op = "in"
        elif op_tok.upper == "NOT":
            self.take()
            if self.peek().upper != "IN":
                raise self.fail("'in'")
            self.take()
            op = "not in"
        else:
            raise self.fail("operator")
        if op in ("in", "not in"):
            if name in ("created", "updated"):
                raise JqlError(
                    f"Error in the JQL Query: The operator '{op.upper()}' is not supported by "
                    f"the field '{tok.text}'. {_where(op_tok)}"
                )
            values = self.value_list()
        else:
            if op in (">", ">=", "<", "<=") and name not in ("created", "updated"):
                raise JqlError(
                    f"Error in the JQL Query: the simulator does not support '{op}' on "
                    f"'{tok.text}'. {_where(op_tok)}"
                )
            values = (self.value(),)
        return Clause(name, op, values, tok.pos)

    def value(self) -> Value:
        tok = self.take()
        if tok.kind == "string":
            return Value(tok.text, True, tok.pos)
        if tok.kind == "word" and tok.upper not in _KEYWORDS:
            if self.peek().kind == "(":  # a function call such as now() or currentUser()
                raise JqlError(
                    f"Error in the JQL Query: the simulator does not support JQL functions "
                    f"('{tok.text}()'). {_where(tok)}"
                )
            return Value(tok.text, False, tok.pos)
        self.i -= 1
        raise self.fail("either a value, list or function")

    def value_list(self) -> tuple[Value, ...]:
        if self.peek().kind != "(":
            raise self.fail("'('")
        self.take()
        values = [self.value()]
        while self.peek().kind == ",":
            self.take()
            values.append(self.value())
        if self.peek().kind != ")":
            raise self.fail("')'")
        self.take()
        return tuple(values)


def parse(text: str) -> Query:
    """Parse a JQL string into a `Query`; raises `JqlError` with Jira's style of message."""
    return _Parser(text).query()


# --------------------------------------------------------------------------- binding


_DATE_FORMATS = ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-[0-9]+$")


def date_bound(value: Value, field: str, zone: ZoneInfo) -> int:
    """Epoch ms of a date value, at minute precision (see module docstring)."""
    text = value.text.strip()
    if not value.quoted and text.isdigit():
        return (int(text) // MINUTE_MS) * MINUTE_MS
    for fmt in _DATE_FORMATS:
        try:
            local = datetime.strptime(text, fmt).replace(tzinfo=zone)
        except ValueError:
            continue
        return int(local.timestamp()) * 1000
    raise JqlError(
        f"Error in the JQL Query: Date value '{value.text}' for field '{field}' is invalid. "
        "The simulator accepts epoch milliseconds, 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', "
        "'yyyy/MM/dd' or 'yyyy-MM-dd' (relative dates such as '-1d' are not simulated)."
    )


@dataclass(frozen=True, slots=True)
class Catalog:
    """What binding needs to know about the site: projects and which issues exist."""

    projects: Mapping[str, str]  # lower-case key or name -> project key
    key_exists: Callable[[str], bool]
    id_exists: Callable[[int], bool]


Predicate = Callable[[Searchable], bool]


def _bind(node: Node, catalog: Catalog, zone: ZoneInfo) -> Predicate:
    if isinstance(node, BoolOp):
        parts = [_bind(p, catalog, zone) for p in node.parts]
        if node.op == "and":
            return lambda issue: all(p(issue) for p in parts)
        return lambda issue: any(p(issue) for p in parts)
    clause = node
    negate = clause.op in ("!=", "not in")
    if clause.field == "project":
        wanted: set[str] = set()
        for value in clause.values:
            project = catalog.projects.get(value.text.lower())
            if project is None:
                raise JqlError(f"The value '{value.text}' does not exist for the field 'project'.")
            wanted.add(project)
        return lambda issue: (issue.project in wanted) != negate
    if clause.field == "key":
        keys: set[str] = set()
        for value in clause.values:
            key = value.text.upper()
            if not _KEY_RE.match(key):
                raise JqlError(f"The issue key '{value.text}' for field 'key' is invalid.")
            if not catalog.key_exists(key):
                raise JqlError(f"An issue with key '{value.text}' does not exist for field 'key'.")
            keys.add(key)
        return lambda issue: (issue.key in keys) != negate
    if clause.field == "id":
        ids: set[int] = set()
        for value in clause.values:
            if not value.text.isdigit():
                raise JqlError(f"The issue id '{value.text}' for field 'id' is invalid.")
            if not catalog.id_exists(int(value.text)):
                raise JqlError(f"An issue with key '{value.text}' does not exist for field 'id'.")
            ids.add(int(value.text))
        return lambda issue: (issue.id in ids) != negate
    bound = date_bound(clause.values[0], clause.field, zone)
    read = _read_created if clause.field == "created" else _read_updated
    if clause.op in ("=", "!="):  # equality holds at minute precision
        return lambda issue: (read(issue) // MINUTE_MS * MINUTE_MS == bound) != negate
    compare = _COMPARE[clause.op]
    return lambda issue: compare(read(issue), bound)


def _read_created(issue: Searchable) -> int:
    return issue.created


def _read_updated(issue: Searchable) -> int:
    return issue.updated


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def compile_filter(query: Query, catalog: Catalog, zone: ZoneInfo) -> Predicate:
    """Turn the condition into a predicate, validating values against the catalog."""
    if query.where is None:
        return lambda issue: True
    return _bind(query.where, catalog, zone)


SortValue = tuple[object, ...]


def _descending_text(text: str) -> tuple[int, ...]:
    """A tuple that orders like `text` reversed (the trailing 1 sorts prefixes last)."""
    return (*(-ord(ch) for ch in text), 1)


def sort_key(order: Sequence[SortKey]) -> Callable[[Searchable], SortValue]:
    """The composite, totally ordered key of ORDER BY (ties broken by id ascending).

    Results are sorted ascending by this key, and a page cursor is the key of the last
    issue returned, so the next page starts after it even if issues changed meanwhile.
    """

    def key(issue: Searchable) -> SortValue:
        parts: list[object] = []
        for part in order:
            if part.field == "key":
                if part.ascending:
                    parts += [issue.project, issue.number]
                else:
                    parts += [_descending_text(issue.project), -issue.number]
            else:
                value = issue.id if part.field == "id" else int(getattr(issue, part.field))
                parts.append(value if part.ascending else -value)
        parts.append(issue.id)
        return tuple(parts)

    return key


def sort_issues(issues: Sequence[S], order: Sequence[SortKey]) -> list[S]:
    """Sort by the ORDER BY keys, ties broken by id ascending."""
    return sorted(issues, key=sort_key(order))
