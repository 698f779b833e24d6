"""References between items written in words: what an issue's or pull/merge request's text
says about other items, for the GitHub and GitLab connectors alike. Pure functions.

Three kinds of statement become links, in Jira's vocabulary (`syncd.domain.Link`):

- "blocked by X" / "depends on X, Y and Z" in a description → ("Blocks", inward, X);
- a closing keyword in a pull or merge request's description ("Fixes #12") → ("Closes",
  outward, X), with the tracker's own keywords and grammar;
- a Jira key in a title or branch name → ("References", outward, key).

X is written the way the trackers write references (a Jira key, `owner/repo#12`,
`group/sub/project!3`, `#12` in the item's own project...) or as the URL of an issue, pull
request, merge request or Jira issue on any host; both forms give the same target key.
Markdown code (fenced blocks, blocks indented by four spaces, and `inline spans`) is not
read: the trackers do not link references there either. A markdown link `[text](url)` or
`<url>` stands for its URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from syncd.domain import Link

#: a Jira issue key (`SHOP-12`), upper case as Jira writes keys, not inside a longer word
#: (`_` separates words here: branch names are often `feature/SHOP-12_cart`)
_JIRA = r"(?<![A-Za-z0-9])(?-i:[A-Z][A-Z0-9_]+)-\d+(?![A-Za-z0-9])"
JIRA_KEY = re.compile(_JIRA)

_SEGMENT = r"[\w.-]+"
#: a URL naming one item: an issue or pull request on GitHub (`/owner/repo/pull/12`), an issue,
#: merge request or work item on GitLab (`/group/sub/project/-/issues/12`; `/-` missing in
#: older GitLab), a Jira issue (`<base>/browse/SHOP-12`, Cloud or Data Center). A tab, query
#: or anchor after it (`/files`, `#note_3`) still names the item; punctuation closing the
#: sentence is not part of it.
_URL = (
    r"https?://(?P<host>[\w.-]+(?::\d+)?)"
    r"(?:(?P<url_path>(?:/[\w.~-]+){2,}?)(?:/-)?/(?P<kind>issues|pull|merge_requests|work_items)"
    r"/(?P<url_number>\d+)"
    r"|(?:/[\w.~%-]+)*?/browse/(?P<browse>[A-Za-z][A-Za-z0-9_]*-\d+))"
    r"(?:[/?#](?:[^\s<>()\[\]{}\"'`]*[^\s<>()\[\]{}\"'`.,;:!?*_])?)?(?![\w-])"
)
#: `path#12` / `path!12` with the path optional (`#12`: the item's own project)
_SHORT = rf"(?P<path>{_SEGMENT}(?:/{_SEGMENT})*)?(?P<sigil>[#!])(?P<number>\d+)\b"
#: GitHub knows no `!12` and no `repo#12` without the owner: the path has a slash, or is absent
#: before `#12`
_SHORT_GITHUB = rf"(?P<path>{_SEGMENT}(?:/{_SEGMENT})+)(?P<sigil>[#!])(?P<number>\d+)\b|#\d+\b"
_SEPARATOR = r"\s*(?:,|&|\band\b)\s*"
_NEGATED = r"(?<!\bnot )(?<!\bno longer )(?<!\bnever )(?<!n't )"


def _uncaptured(pattern: str) -> str:
    """The pattern without its named groups, to be repeated inside a longer pattern."""
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


@dataclass(frozen=True, slots=True)
class Tracker:
    """How one tracker writes references: what may follow "blocked by", and its closing
    keywords with what they may close."""

    #: one target of "blocked by": named groups path/sigil/number (short forms) or those of
    #: `_URL`; anything else matched is a Jira key or GitHub's bare `#12`
    target: re.Pattern[str]
    blocked_by: re.Pattern[str]
    #: a closing statement, its targets in the group `targets`
    closing: re.Pattern[str]
    #: one target of a closing statement (issues only)
    closing_target: re.Pattern[str]
    #: whether `project#12` names a project in the item's own namespace (GitLab)
    siblings: bool


def _blocked_by(target: str) -> re.Pattern[str]:
    one = _uncaptured(target)
    return re.compile(
        rf"{_NEGATED}\b(?:blocked by|depends on)\s*:?\s+"
        rf"(?P<targets>(?:{one})(?:{_SEPARATOR}(?:{one}))*)",
        re.IGNORECASE,
    )


_GITHUB_TARGET = rf"{_JIRA}|{_URL}|{_SHORT_GITHUB}"
#: GitHub closes one issue per keyword: "Fixes #1, fixes acme/lib#2"
_GITHUB_CLOSING_TARGET = rf"{_URL}|(?P<path>{_SEGMENT}/{_SEGMENT})?(?P<sigil>#)(?P<number>\d+)"
GITHUB = Tracker(
    target=re.compile(_GITHUB_TARGET),
    blocked_by=_blocked_by(_GITHUB_TARGET),
    closing=re.compile(
        r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+"
        rf"(?P<targets>{_uncaptured(_GITHUB_CLOSING_TARGET)})",
        re.IGNORECASE,
    ),
    closing_target=re.compile(_GITHUB_CLOSING_TARGET),
    siblings=False,
)

_GITLAB_TARGET = rf"{_JIRA}|{_URL}|{_SHORT}"
#: GitLab's default closing pattern: a keyword, then a list of issues ("Closes #1, #2 and
#: group/other#3"), each optionally introduced by "issue(s)"
_GITLAB_CLOSING_TARGET = (
    rf"{_URL}|(?P<path>{_SEGMENT}(?:/{_SEGMENT})*)?(?P<sigil>#)(?P<number>\d+)\b"
)
_GITLAB_ISSUE = rf"(?:issues?[ \t]+)?(?:{_uncaptured(_GITLAB_CLOSING_TARGET)})"
_GITLAB_AND = r"(?:[ \t]*,?[ \t]+and[ \t]+|[ \t]*,?[ \t]*)"
GITLAB = Tracker(
    target=re.compile(_GITLAB_TARGET),
    blocked_by=_blocked_by(_GITLAB_TARGET),
    closing=re.compile(
        r"\b(?:clos(?:e[sd]?|ing)|fix(?:e[sd]|ing)?|resolv(?:e[sd]?|ing)"
        r"|implement(?:s|ed|ing)?):?[ \t]+"
        rf"(?P<targets>{_GITLAB_ISSUE}(?:{_GITLAB_AND}{_GITLAB_ISSUE})*)",
        re.IGNORECASE,
    ),
    closing_target=re.compile(_GITLAB_CLOSING_TARGET),
    siblings=True,
)

_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?(?:^[ \t]*\1[ \t\r]*$|\Z)", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?(https?://[^\s()<>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^\s<>]+)>")
#: a list item's marker and the spaces after it: its content starts where they end
_LIST_ITEM = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?: {1,4}|$)")


def _without_indented_code(text: str) -> str:
    """Blank out markdown's indented code blocks: lines indented by four spaces or more
    (a tab stops at four) past the content of the list item they are in, after a blank
    line or another such line. A line indented less that follows a paragraph without a
    blank line is still that paragraph, and the item's own paragraphs stay."""
    out: list[str] = []
    content = 0  # where the current list item's content starts; 0 outside lists
    in_code, after_blank = False, True
    for line in text.split("\n"):
        columns = line.expandtabs(4)
        if not columns.strip():
            out.append(line)
            after_blank = True
            continue
        indent = len(columns) - len(columns.lstrip(" "))
        if (in_code or after_blank) and indent >= content + 4:
            out.append("")
            in_code, after_blank = True, False
            continue
        item = _LIST_ITEM.match(columns, indent)
        if item is not None:
            content = item.end() if columns[item.end() :].strip() else indent + 2
        elif after_blank and indent < content:
            content = 0  # a paragraph outside the list: the list ended
        out.append(line)
        in_code, after_blank = False, False
    return "\n".join(out)


def prose(text: str) -> str:
    """Markdown text as its references read: code blocks and spans blanked out, links
    `[text](url)` and `<url>` replaced by their URL."""
    text = _without_indented_code(_FENCED.sub("\n", text))
    text = _INLINE_CODE.sub(" ", text)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    return _AUTOLINK.sub(r"\1", text)


def jira_keys(*texts: str) -> list[str]:
    """The Jira keys in texts (titles, branch names), in order, each once."""
    return list(dict.fromkeys(found.group() for text in texts for found in JIRA_KEY.finditer(text)))


@dataclass(frozen=True, slots=True)
class Origin:
    """The item whose text is read: relative references (`#12`, `!3`, `project#4`) resolve
    against its project. `site` is its tracker's web root where it has a path
    (`https://example.com/gitlab`): that path is not part of the project paths in URLs."""

    tracker: Tracker
    project: str
    site: str | None = None

    def _resolve(self, found: re.Match[str], *, closing: bool = False) -> str | None:
        groups = found.groupdict()
        if groups.get("browse"):
            return None if closing else str(groups["browse"]).upper()
        if groups.get("kind"):
            kind = groups["kind"]
            if closing and kind not in ("issues", "work_items"):
                return None
            sigil = "!" if kind == "merge_requests" else "#"
            where = self._url_path(groups["host"], groups["url_path"])
            return f"{where}{sigil}{groups['url_number']}"
        if groups.get("number") is None:  # a Jira key, or GitHub's `#12`
            text = found.group()
            return f"{self.project}{text}" if text.startswith("#") else text
        path: str | None = groups.get("path")
        if path is None:
            path = self.project
        elif self.tracker.siblings and "/" not in path:
            namespace = self.project.rpartition("/")[0]
            path = f"{namespace}/{path}" if namespace else path
        return f"{path}{groups['sigil']}{groups['number']}"

    def _url_path(self, host: str, path: str) -> str:
        if self.site is not None:
            site = urlsplit(self.site)
            prefix = site.path.rstrip("/")
            if (
                prefix
                and host.casefold() == site.netloc.casefold()
                and path.startswith(prefix + "/")
            ):
                path = path[len(prefix) :]
        return path.strip("/")

    def blockers(self, text: str) -> list[str]:
        """The targets of "blocked by X" / "depends on X, Y and Z" in prose, in order, each
        once. "not blocked by", "no longer depends on", "never", "isn't..." state nothing."""
        out: dict[str, None] = {}
        for match in self.tracker.blocked_by.finditer(text):
            for found in self.tracker.target.finditer(match.group("targets")):
                target = self._resolve(found)
                if target is not None:
                    out.setdefault(target)
        return list(out)

    def closed(self, text: str) -> list[str]:
        """The issues a pull or merge request's prose closes with the tracker's closing
        keywords, in order, each once."""
        out: dict[str, None] = {}
        for match in self.tracker.closing.finditer(text):
            for found in self.tracker.closing_target.finditer(match.group("targets")):
                target = self._resolve(found, closing=True)
                if target is not None:
                    out.setdefault(target)
        return list(out)


def text_links(
    origin: Origin, description: str, names: Iterable[str], *, closes: bool
) -> list[Link]:
    """The links an item states in words: closing references in its description when it is a
    pull or merge request (`closes`; "Closes", outward), "blocked by / depends on X" in it
    ("Blocks", inward: this item is blocked by X) and Jira keys in `names`, its title and
    branch ("References", outward)."""
    text = prose(description)
    links = [Link("Closes", "outward", target) for target in origin.closed(text)] if closes else []
    links += [Link("Blocks", "inward", target) for target in origin.blockers(text)]
    links += [Link("References", "outward", key) for key in jira_keys(*names)]
    return links
