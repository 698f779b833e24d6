"""References between items written in words (connectors/references.py): "blocked by / depends
on" targets in short and URL forms, closing keywords as GitHub and GitLab read them, Jira keys,
markdown around them; and, end to end through the simulators, such references ending as edges
of `flow_dependencies`, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.references import GITHUB, GITLAB, Origin, jira_keys, prose, text_links
from syncd.config import load_config
from syncd.simulator.github import GitHubSimulator
from syncd.simulator.gitlab import GitLabSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import run_sync

GH = Origin(GITHUB, "acme/web")
GL = Origin(GITLAB, "group/sub/proj")


def blockers(origin: Origin, text: str) -> list[str]:
    return origin.blockers(prose(text))


def closed(origin: Origin, text: str) -> list[str]:
    return origin.closed(prose(text))


# -- blocked by / depends on ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "github", "gitlab"),
    [
        # short forms, as both connectors read them before URLs were
        ("Blocked by #3", ["acme/web#3"], ["group/sub/proj#3"]),
        ("depends on: !4 and lib#5", [], ["group/sub/proj!4", "group/sub/lib#5"]),
        ("Depends on o/r#1, a/b/c!2 & OPS-7.", ["o/r#1", "a/b/c!2", "OPS-7"], None),
        # GitHub issue and pull request URLs, any host
        ("blocked by https://github.com/acme/api/issues/12", ["acme/api#12"], None),
        ("blocked by https://github.com/acme/api/pull/12.", ["acme/api#12"], None),
        ("blocked by http://ghe.example.com:8443/o/r/pull/7/files", ["o/r#7"], None),
        # GitLab issues, merge requests and work items, subgroups, with and without `/-`
        (
            "Blocked by https://gitlab.example.com/group/sub/proj/-/issues/12, "
            "https://gitlab.example.com/group/sub/proj/-/merge_requests/3 and "
            "https://gitlab.com/g/p/-/work_items/4",
            ["group/sub/proj#12", "group/sub/proj!3", "g/p#4"],
            None,
        ),
        ("depends on https://gitlab.example.com/g/s/p/issues/9#note_12)", ["g/s/p#9"], None),
        ("depends on https://gitlab.example.com/g/p/merge_requests/9", ["g/p!9"], None),
        # Jira browse URLs: Cloud, Data Center under a context path, a lower-case key
        ("Blocked by https://acme.atlassian.net/browse/SHOP-12!", ["SHOP-12"], None),
        (
            "depends on https://jira.example.com/jira/browse/shop-12?focusedCommentId=5;",
            ["SHOP-12"],
            None,
        ),
        # markdown links and angle brackets stand for their URL
        ("blocked by [the API](https://github.com/acme/api/issues/4).", ["acme/api#4"], None),
        ('blocked by [x](<https://github.com/o/r/issues/4> "title")', ["o/r#4"], None),
        (
            "blocked by <https://github.com/acme/api/issues/5>, #6",
            ["acme/api#5", "acme/web#6"],
            ["acme/api#5", "group/sub/proj#6"],
        ),
        # a URL mixed with short forms in one list, each once
        (
            "Depends on https://github.com/acme/web/issues/2 and #2, OPS-1",
            ["acme/web#2", "OPS-1"],
            ["acme/web#2", "group/sub/proj#2", "OPS-1"],
        ),
    ],
)
def test_blocked_by_targets(text: str, github: list[str], gitlab: list[str] | None) -> None:
    assert blockers(GH, text) == github
    assert blockers(GL, text) == (github if gitlab is None else gitlab)


@pytest.mark.parametrize(
    "text",
    [
        "not blocked by anything",
        "It is not blocked by #3 any more; no longer depends on OPS-2",
        "isn't blocked by #3, never blocked by #4",
        "blocked by https://github.com/acme/web/blob/main/README.md",
        "blocked by https://github.com/acme/web/issues",
        "blocked by https://github.com/acme/web/issues/12abc",
        "blocked by https://gitlab.example.com/g/p/-/pipelines/12",
        "blocked by https://gitlab.example.com/g/p/-/milestones/3",
        "blocked by https://github.com/acme/issues/12",  # one path segment: no repository
        "blocked by https://acme.atlassian.net/browse/",
        "blocked by ftp://github.com/acme/web/issues/1",
        "blocked by the API (#3)",
        "unblocked by #3",
        # code is not read: fenced blocks (closed or not) and inline spans
        "```\nblocked by #3\n```",
        "~~~text\r\ndepends on OPS-1\r\n~~~\r\n",
        "Logs:\n```\ndepends on #3",
        "the check `blocked by #3` is wrong",
    ],
)
def test_what_is_no_blocked_by_reference(text: str) -> None:
    assert blockers(GH, text) == [] and blockers(GL, text) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Intro\n\n    blocked by #3\n\nText", []),  # an indented code block
        ("    blocked by #3", []),
        ("Intro\n\n\tblocked by #3", []),  # a tab stops at four
        ("x\n\n    code\n\nblocked by #7", ["acme/web#7"]),  # after the block: prose
        ("para\n    blocked by #3", ["acme/web#3"]),  # no blank line: the paragraph goes on
        ("  blocked by #6", ["acme/web#6"]),  # indented less than four
        ("- item\n\n    blocked by #3", ["acme/web#3"]),  # the list item's own paragraph
        ("1. first\n2. second\n\n   blocked by #4", ["acme/web#4"]),
        ("- item\n\n        blocked by #3", []),  # code inside the list item
        ("- item\n\nafter the list\n\n    blocked by #5", []),
    ],
)
def test_indented_code_blocks_are_not_read(text: str, found: list[str]) -> None:
    assert blockers(GH, text) == found


def test_code_hides_only_what_it_encloses() -> None:
    text = "```\nblocked by #1\n```\nBlocked by #2 (see `depends on #3`) and depends on #4"
    assert blockers(GH, text) == ["acme/web#2", "acme/web#4"]


def test_gitlab_urls_under_a_relative_root() -> None:
    origin = Origin(GITLAB, "group/proj", site="https://example.com/gitlab")
    text = (
        "blocked by https://EXAMPLE.com/gitlab/group/proj/-/issues/2, "
        "https://other.example.com/gitlab/x/y/-/issues/3 and https://example.com/team/z/-/issues/4"
    )
    # only the item's own site drops its root path; other hosts keep theirs
    assert blockers(origin, text) == ["group/proj#2", "gitlab/x/y#3", "team/z#4"]


# -- closing keywords -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "github", "gitlab"),
    [
        ("Closes #12", ["acme/web#12"], ["group/sub/proj#12"]),
        ("FIXED: #9", ["acme/web#9"], ["group/sub/proj#9"]),
        ("Fixes group/proj#12", ["group/proj#12"], ["group/proj#12"]),
        ("resolves other#3", [], ["group/sub/other#3"]),  # a GitLab sibling project
        (
            "Resolves https://gitlab.example.com/group/sub/proj/-/issues/12.",
            ["group/sub/proj#12"],
            ["group/sub/proj#12"],
        ),
        ("Fixes https://github.com/acme/web/issues/8).", ["acme/web#8"], ["acme/web#8"]),
        ("Closes [#8](https://github.com/acme/api/issues/8)", ["acme/api#8"], ["acme/api#8"]),
        # GitHub closes one issue per keyword; GitLab reads a list, "issue(s)" allowed
        (
            "Closes #1, #2 and proj#3",
            ["acme/web#1"],
            ["group/sub/proj#1", "group/sub/proj#2", "group/sub/proj#3"],
        ),
        (
            "Fix #1, fixes acme/lib#2",
            ["acme/web#1", "acme/lib#2"],
            ["group/sub/proj#1", "acme/lib#2"],
        ),
        ("closes issues #4 and #5", [], ["group/sub/proj#4", "group/sub/proj#5"]),
        (
            "Closing #1 #2; fixing #3",
            [],
            ["group/sub/proj#1", "group/sub/proj#2", "group/sub/proj#3"],
        ),
        ("Implements #7", [], ["group/sub/proj#7"]),
        # what closes nothing: merge and pull requests, Jira, no target, code, other words
        ("Closes !3", [], []),
        ("Fixes https://github.com/acme/web/pull/3", [], []),
        ("Closes https://gitlab.example.com/g/p/-/merge_requests/3", [], []),
        ("Fixes SHOP-12 and https://acme.atlassian.net/browse/SHOP-12", [], []),
        ('Resolve "Add documentation"', [], []),
        ("see `fixes #3`", [], []),
        ("a prefix #3, enclosed #4", [], []),
        ("Related to #17", [], []),
    ],
)
def test_closing_references(text: str, github: list[str], gitlab: list[str] | None) -> None:
    assert closed(GH, text) == github
    assert closed(GL, text) == (github if gitlab is None else gitlab)


def test_gitlab_closing_list_stays_on_its_line() -> None:
    # GitLab's pattern separates a list with spaces and commas, not line breaks
    assert closed(GL, "Closes #1\n#2 is related") == ["group/sub/proj#1"]
    assert closed(GH, "Fixes\n#2") == ["acme/web#2"]  # GitHub allows any white space


# -- Jira keys and the links ----------------------------------------------------------------


def test_jira_keys_in_titles_and_branches() -> None:
    assert jira_keys("[SHOP-12] cart (UTF-8)", "feature/SHOP-13_cart", "shop-9 xOPS-5 SHOP-12") == [
        "SHOP-12",
        "UTF-8",
        "SHOP-13",
    ]


def test_text_links_types_directions_and_closing_only_where_asked() -> None:
    text = "Fixes #1. Blocked by https://github.com/acme/api/pull/2\n"
    links = text_links(GH, text, ("OPS-3 title", "branch-OPS-4"), closes=True)
    assert [(lk.link_type, lk.direction, lk.target_key) for lk in links] == [
        ("Closes", "outward", "acme/web#1"),
        ("Blocks", "inward", "acme/api#2"),
        ("References", "outward", "OPS-3"),
        ("References", "outward", "OPS-4"),
    ]
    issue = text_links(GH, text, ("",), closes=False)  # an issue closes nothing
    assert [lk.link_type for lk in issue] == ["Blocks"]


# -- end to end: into flow_dependencies ------------------------------------------------------

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TOKEN = "sim-token-references-000"
Row = tuple[str, str, str, str, str | None, bool, bool]


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def edges(tmp_path: Path, warehouse_url: str, kind: str, url: str, scope: str) -> set[Row]:
    """Sync one source (named after its kind) and read its `flow_dependencies` rows:
    from, type, direction, to, the target's source, whether it resolved, blocking."""
    path = tmp_path / "refs.toml"
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n[[sources]]\nname = "{kind}"\nkind = "{kind}"\n'
        f'url = "{url}"\ntoken_env = "REF_TOKEN"\n{scope}\n',
        encoding="utf-8",
    )
    warehouse = Warehouse(warehouse_url)
    try:
        [result] = run_sync(load_config(path), warehouse)
        assert result.ok, result.error
        with warehouse.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT from_key, link_type, direction, to_key, to_source, to_item_id, "
                    "blocking FROM flow_dependencies"
                )
            )
            return {
                (
                    r.from_key,
                    r.link_type,
                    r.direction,
                    r.to_key,
                    r.to_source,
                    r.to_item_id is not None,
                    bool(r.blocking),
                )
                for r in rows
            }
    finally:
        warehouse.close()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REF_TOKEN", TOKEN)


@pytest.fixture(params=[True, False], ids=["graphql", "rest"])
def github(request: pytest.FixtureRequest) -> Iterator[GitHubSimulator]:
    sim = GitHubSimulator(
        repos=("acme/web",), issues=0, pulls=0, anchor=T0, token=TOKEN, graphql=request.param
    )
    repo = "acme/web"
    one = sim.add_issue(repo, created=h(0), labels=("bug",))
    two = sim.add_issue(repo, created=h(1))
    sim.add_pull(
        repo,
        created=h(2),
        body=(
            f"Fixes https://github.com/{repo}/issues/{one}.\n\n"
            f"Blocked by [the API change](https://github.example.com/{repo}/issues/{two})"
        ),
    )
    sim.add_issue(repo, created=h(3), body=f"Closes #{one}; not blocked by #{two}")
    with sim:
        yield sim


def test_github_url_references_become_edges(
    github: GitHubSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    rows = edges(tmp_path, warehouse_url, "github", github.base_url, 'repos = ["acme/web"]')
    # the issue's "Closes" and negated "blocked by" state nothing
    assert rows == {
        ("acme/web#3", "Closes", "outward", "acme/web#1", "github", True, False),
        ("acme/web#3", "Blocks", "inward", "acme/web#2", "github", True, True),
    }


def test_gitlab_merge_request_closing_and_url_references_become_edges(
    tmp_path: Path, warehouse_url: str
) -> None:
    sim = GitLabSimulator(
        projects=("payments/api", "payments/ledger"),
        issues=0,
        merge_requests=0,
        anchor=T0,
        token=TOKEN,
    )
    project = "payments/api"
    one = sim.add_issue(project, created=h(0))
    two = sim.add_issue(project, created=h(1))
    other = sim.add_issue("payments/ledger", created=h(1))
    sim.add_merge_request(
        project,
        created=h(2),
        description=(
            f"Closes #{one} and ledger#{other}\n\n"
            f"Depends on https://gitlab.example.com/{project}/-/issues/{two}."
        ),
    )
    sim.add_issue(project, created=h(3), description=f"Closes #{two}")
    with sim:
        scope = 'projects = ["payments/api", "payments/ledger"]'
        rows = edges(tmp_path, warehouse_url, "gitlab", sim.base_url, scope)
    assert rows == {
        ("payments/api!1", "Closes", "outward", "payments/api#1", "gitlab", True, False),
        ("payments/api!1", "Closes", "outward", "payments/ledger#1", "gitlab", True, False),
        ("payments/api!1", "Blocks", "inward", "payments/api#2", "gitlab", True, True),
    }
