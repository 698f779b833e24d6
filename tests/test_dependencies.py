"""Dependencies across trackers and value streams (syncd/dependencies.py), with numbers
computed by hand: the `flow_dependencies` view (key resolution and its ties, direction,
deleted items), items blocked by other value streams per period and the time they spent
blocked, references parsed from titles, branches and descriptions, the graph JSON and the
`syncd dependencies` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.github.parse import GitHubMapping
from connectors.github.parse import parse_item as parse_github
from connectors.github.settings import (
    DEFAULT_ACTIVE_LABELS,
    DEFAULT_PROJECT_STATUSES,
    DEFAULT_WAITING_LABELS,
)
from connectors.github.settings import DEFAULT_FLOW_TYPES as GITHUB_FLOW_TYPES
from connectors.gitlab.parse import GitLabMapping
from connectors.gitlab.parse import parse_item as parse_gitlab
from connectors.gitlab.settings import (
    DEFAULT_CANCELED_LABELS,
    DEFAULT_LABEL_STAGES,
    DEFAULT_STATUS_STAGES,
)
from connectors.gitlab.settings import DEFAULT_FLOW_TYPES as GITLAB_FLOW_TYPES
from syncd.contract import Cursor, Page
from syncd.dependencies import (
    BlockingEdge,
    ItemRef,
    blocked_rows,
    compute_blocked,
    graph,
    intersect,
    runs,
    union,
    view_sql,
)
from syncd.domain import FlowItem, Link, Stage, Transition
from syncd.mapping import FlowTypeRules, StageOverrides
from syncd.warehouse.store import Warehouse
from tests.helpers import Trackers, cli, empty_trackers, jira_toml

D = 86400.0
NOW = datetime(2025, 2, 1, tzinfo=UTC)


def jan(day: float) -> datetime:
    """An instant in January 2025 (Monday the 6th starts an ISO week); day 0 is Dec 31."""
    return datetime(2024, 12, 31, tzinfo=UTC) + timedelta(days=day)


# -- warehouse helpers ----------------------------------------------------------------------


def flow(
    source: str,
    item_id: str,
    key: str,
    value_stream: str,
    steps: Sequence[tuple[datetime, Stage]] = ((datetime(2025, 1, 1, tzinfo=UTC), Stage.NEW),),
    links: Sequence[Link] = (),
    flow_type: str = "feature",
) -> FlowItem:
    transitions: list[Transition] = []
    previous: Stage | None = None
    for at, stage in steps:
        state = None if previous is None else previous.value
        transitions.append(Transition(at, state, stage.value, previous, stage))
        previous = stage
    return FlowItem(
        source=source,
        id=item_id,
        key=key,
        kind="issue",
        title=key,
        project=key.rsplit("#", 1)[0].rsplit("!", 1)[0].rsplit("-", 1)[0],
        flow_type=flow_type,
        value_stream=value_stream,
        stage=steps[-1][1],
        state=steps[-1][1].value,
        created_at=steps[0][0],
        updated_at=steps[-1][0],
        transitions=transitions,
        links=list(links),
    )


def commit(warehouse: Warehouse, source: str, items: Sequence[FlowItem]) -> None:
    warehouse.commit_page(
        source=source,
        stream="s",
        run_id=f"run-{source}",
        page=Page(raws=[], items=list(items), cursor=Cursor()),
        now=NOW,
    )


def view_rows(warehouse: Warehouse) -> list[dict[str, Any]]:
    """The rows of the installed `flow_dependencies` view; a warehouse whose schema does not
    install it yet gets it from `view_sql` first."""
    with warehouse.begin() as conn:
        if "flow_dependencies" not in sa.inspect(conn).get_view_names():
            conn.execute(sa.text(f"CREATE VIEW flow_dependencies AS {view_sql(warehouse.dialect)}"))
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM flow_dependencies"))]


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


VIEW_COLUMNS = [
    "from_source",
    "from_item_id",
    "from_key",
    "from_value_stream",
    "link_type",
    "direction",
    "to_source",
    "to_item_id",
    "to_key",
    "to_value_stream",
    "to_stage",
    "cross_value_stream",
    "blocking",
]


# -- the view -------------------------------------------------------------------------------


@pytest.fixture
def linked(warehouse_url: str) -> Iterator[Warehouse]:
    """Four sources whose keys collide: SHOP-9 is in Jira (Checkout) and in a second Jira
    archive (Legacy); ops/tools#2 is a GitHub issue (Payments) and a GitLab issue (Ops)."""
    warehouse = Warehouse(warehouse_url)
    commit(
        warehouse,
        "jira",
        [
            flow(
                "jira",
                "1",
                "SHOP-1",
                "Checkout",
                links=[
                    Link("Blocks", "outward", "SHOP-2", "2"),
                    Link("Relates", "outward", "SHOP-9"),
                ],
            ),
            flow(
                "jira", "2", "SHOP-2", "Checkout", links=[Link("Blocks", "inward", "SHOP-1", "1")]
            ),
            flow("jira", "3", "SHOP-3", "Checkout", links=[Link("Blocks", "inward", "GONE-1")]),
            flow("jira", "4", "SHOP-4", "Checkout", links=[Link("Blocks", "inward", "SHOP-1")]),
            flow("jira", "5", "SHOP-5", "Checkout"),
            flow("jira", "9", "SHOP-9", "Checkout", links=[Link("Relates", "inward", "SHOP-1")]),
        ],
    )
    commit(warehouse, "archive", [flow("archive", "9", "SHOP-9", "Legacy")])
    commit(
        warehouse,
        "gh",
        [
            flow(
                "gh",
                "101",
                "acme/web#1",
                "Checkout",
                links=[
                    Link("References", "outward", "SHOP-9"),
                    Link("References", "outward", "UTF-8"),
                ],
            ),
            flow("gh", "102", "ops/tools#2", "Payments"),
            flow(
                "gh",
                "105",
                "acme/web#5",
                "Checkout",
                links=[Link("Blocks", "inward", "SHOP-5"), Link("References", "outward", "SHOP-5")],
            ),
        ],
    )
    commit(
        warehouse,
        "gl",
        [
            flow("gl", "202", "ops/tools#2", "Ops", [(jan(1), Stage.NEW), (jan(2), Stage.ACTIVE)]),
            flow(
                "gl",
                "203",
                "payments/api!3",
                "Payments",
                links=[Link("Blocks", "inward", "ops/tools#2")],
            ),
            flow(
                "gl",
                "204",
                "payments/api!4",
                "Payments",
                links=[Link("References", "outward", "SHOP-9")],
            ),
            # GitLab's link id in target_id, stated by the blocker only
            flow(
                "gl",
                "207",
                "payments/api#7",
                "Payments",
                links=[Link("Blocks", "outward", "payments/api#8", "555")],
            ),
            flow("gl", "208", "payments/api#8", "Payments"),
        ],
    )
    # SHOP-4 and SHOP-5 are deleted in Jira (reconciliation tombstones them)
    warehouse.reconcile("jira", {"1", "2", "3", "9"}, NOW)
    yield warehouse
    warehouse.close()


def test_view_resolves_keys_normalises_direction_and_drops_deleted(linked: Warehouse) -> None:
    rows = view_rows(linked)
    assert all(list(row) == VIEW_COLUMNS for row in rows)
    got = sorted(
        (
            r["from_source"],
            r["from_key"],
            r["link_type"],
            r["direction"],
            r["to_source"],
            r["to_key"],
            r["to_value_stream"],
            _flag(r["cross_value_stream"]),
            _flag(r["blocking"]),
        )
        for r in rows
    )
    assert got == sorted(
        [
            # stated at both ends in Jira: one row, from the blocked item
            ("jira", "SHOP-2", "Blocks", "inward", "jira", "SHOP-1", "Checkout", False, True),
            # "Relates" at both ends: one row, from its outward end; SHOP-9 in the same source
            ("jira", "SHOP-1", "Relates", "outward", "jira", "SHOP-9", "Checkout", False, False),
            # a blocker not in the warehouse: kept, target unknown
            ("jira", "SHOP-3", "Blocks", "inward", None, "GONE-1", None, None, True),
            # no same source; the SHOP-9 of the same value stream wins over "archive"
            (
                "gh",
                "acme/web#1",
                "References",
                "outward",
                "jira",
                "SHOP-9",
                "Checkout",
                False,
                False,
            ),
            # the same source (GitLab, Ops) wins over the same value stream (GitHub, Payments)
            ("gl", "payments/api!3", "Blocks", "inward", "gl", "ops/tools#2", "Ops", True, True),
            # neither same source nor same value stream: the first source by name ("archive")
            (
                "gl",
                "payments/api!4",
                "References",
                "outward",
                "archive",
                "SHOP-9",
                "Legacy",
                True,
                False,
            ),
            # stated by the blocker only: turned round, from the blocked item
            (
                "gl",
                "payments/api#8",
                "Blocks",
                "inward",
                "gl",
                "payments/api#7",
                "Payments",
                False,
                True,
            ),
            # a deleted blocker is an unknown one; references to it (and "UTF-8") are dropped
            ("gh", "acme/web#5", "Blocks", "inward", None, "SHOP-5", None, None, True),
        ]
    )
    by_from = {(r["from_key"], r["link_type"]): r for r in rows}
    blocked = by_from[("payments/api!3", "Blocks")]
    assert (blocked["to_item_id"], blocked["to_stage"]) == ("202", "active")
    assert by_from[("SHOP-2", "Blocks")]["to_item_id"] == "1"


def test_view_sql_refuses_unknown_dialects() -> None:
    with pytest.raises(ValueError, match="mysql"):
        view_sql("mysql")


def test_graph_json(linked: Warehouse) -> None:
    with linked.engine.connect() as conn:
        whole = graph(conn)
        payments = graph(conn, value_stream="Payments")
    ids = {node["id"] for node in whole["nodes"]}
    assert all(edge["from"] in ids and edge["to"] in ids for edge in whole["edges"])
    assert len(whole["edges"]) == 8
    nodes = {node["id"]: node for node in whole["nodes"]}
    assert nodes["gl:202"] == {
        "id": "gl:202",
        "key": "ops/tools#2",
        "source": "gl",
        "value_stream": "Ops",
        "flow_type": "feature",
        "stage": "active",
    }
    assert nodes["unresolved:GONE-1"]["source"] is None
    assert "jira:4" not in nodes and "jira:5" not in nodes  # deleted
    assert {
        (e["from"], e["to"], e["link_type"], e["blocking"], e["cross_value_stream"])
        for e in payments["edges"]
    } == {
        ("gl:203", "gl:202", "Blocks", True, True),
        ("gl:204", "archive:9", "References", False, True),
        ("gl:208", "gl:207", "Blocks", True, False),
    }
    assert {n["id"] for n in payments["nodes"]} == {
        "gl:202",
        "gl:203",
        "gl:204",
        "archive:9",
        "gl:207",
        "gl:208",
    }
    json.dumps(whole)  # JSON-ready as it is


# -- blocked items and blocked time, pure ---------------------------------------------------


def ref(key: str, value_stream: str) -> ItemRef:
    return ItemRef("t", key, key, value_stream)


def history(*steps: tuple[float, Stage]) -> list[Transition]:
    return flow("t", "x", "x", "x", [(jan(day), stage) for day, stage in steps]).transitions


N, A, W, DN = Stage.NEW, Stage.ACTIVE, Stage.WAITING, Stage.DONE
HISTORIES = {
    # in progress Jan 2-3 and Jan 4-8 (back in the backlog in between)
    ("t", "A"): history((1, N), (2, A), (3, N), (4, W), (8, DN)),
    # unfinished until Jan 3, reopened Jan 5 and done again at exactly Monday Jan 6 00:00
    ("t", "B"): history((0, N), (1, A), (3, DN), (5, A), (6, DN)),
    # created Jan 5, never started: unfinished from then on
    ("t", "B2"): history((5, N)),
    # starts at exactly Monday Jan 13 00:00, the end of the week of Jan 6
    ("t", "A2"): history((10, N), (13, A)),
    # blocked by A, in the same value stream
    ("t", "A3"): history((6, N), (7, A)),
}
EDGES = [
    BlockingEdge(ref("A", "X"), ref("B", "Y")),
    BlockingEdge(ref("A", "X"), ref("B2", "Y")),
    BlockingEdge(ref("A2", "X"), ref("B2", "Y")),
    BlockingEdge(ref("A3", "X"), ref("A", "X")),
]
AS_OF = jan(15.5)  # Wednesday Jan 15 12:00


def test_intervals() -> None:
    us = 86_400_000_000
    base = int((jan(0) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    progress = runs(HISTORIES[("t", "A")], AS_OF, lambda s: s.in_progress)
    assert [((a - base) / us, (b - base) / us) for a, b in progress] == [(2, 3), (4, 8)]
    unfinished = runs(HISTORIES[("t", "B")], AS_OF, lambda s: not s.terminal)
    assert [((a - base) / us, (b - base) / us) for a, b in unfinished] == [(0, 3), (5, 6)]
    assert intersect(progress, unfinished) == [
        (base + 2 * us, base + 3 * us),
        (base + 5 * us, base + 6 * us),
    ]
    assert union([[(1, 3), (7, 9)], [(2, 5), (9, 10)]]) == [(1, 5), (7, 10)]
    # a stage entered and left at the same instant holds for no time; as-of cuts the history
    flicker = history((1, N), (2, A), (2, N), (3, A), (9, DN))
    assert runs(flicker, jan(4), lambda s: s.in_progress) == [(base + 3 * us, 2**62)]


def test_blocked_per_week_by_hand() -> None:
    rows = compute_blocked(EDGES, HISTORIES, "week", AS_OF)
    got = [
        (
            r.period_start.date().isoformat(),
            r.blocked_cross,
            r.blocked_cross_s / D,
            r.blocked_same,
            r.blocked_same_s / D,
            [(b.item.key, [x.key for x in b.blockers]) for b in r.blocked_cross_items],
        )
        for r in rows
    ]
    assert got == [
        # A blocked by B Jan 2-3 and by B2 (created Jan 5) Jan 5-6: 2 days; at the week's end
        # (Jan 6 00:00) B is done again, B2 still blocks A
        ("2024-12-30", 1, 2.0, 0, 0.0, [("A", ["B2"])]),
        # A blocked Jan 6-8 by B2; A2 starts at exactly the week's end: blocked then, with no
        # time in this week; A3 is blocked within the stream by A from Jan 7 to Jan 8
        ("2025-01-06", 1, 2.0, 0, 1.0, [("A2", ["B2"])]),
        # the open week ends at the as-of time: A2 blocked Jan 13 to Jan 15 12:00
        ("2025-01-13", 1, 2.5, 0, 0.0, [("A2", ["B2"])]),
    ]
    assert {r.value_stream for r in rows} == {"X"}
    assert rows[-1].period_end == AS_OF
    assert rows[0].to_json()["blocked_cross_items"][0]["blockers"][0]["key"] == "B2"


def test_blocked_per_month_and_quarter_by_hand() -> None:
    (month,) = compute_blocked(EDGES, HISTORIES, "month", AS_OF)
    assert (month.period_start, month.blocked_cross, month.blocked_cross_s / D) == (
        datetime(2025, 1, 1, tzinfo=UTC),
        1,
        1 + 3 + 2.5,  # A: Jan 2-3 and Jan 5-8; A2: Jan 13 to Jan 15 12:00
    )
    assert (month.blocked_same, month.blocked_same_s / D) == (0, 1.0)
    # seen from Jan 5 12:00: B has been reopened, A is blocked by B and B2, A2 not created
    (early,) = compute_blocked(EDGES, HISTORIES, "quarter", jan(5.5))
    assert (early.blocked_cross, early.blocked_cross_s / D, early.period_end) == (1, 1.5, jan(5.5))
    assert [x.key for x in early.blocked_cross_items[0].blockers] == ["B", "B2"]
    with pytest.raises(ValueError, match="day"):
        compute_blocked(EDGES, HISTORIES, "day", AS_OF)


def test_items_never_blocked_give_no_rows() -> None:
    idle = {("t", "P"): history((1, N)), ("t", "Q"): history((1, A))}
    assert compute_blocked([BlockingEdge(ref("P", "X"), ref("Q", "Y"))], idle, "week", AS_OF) == []
    # blocked by itself: ignored
    busy = {("t", "P"): history((1, A))}
    assert compute_blocked([BlockingEdge(ref("P", "X"), ref("P", "X"))], busy, "week", AS_OF) == []


# -- references in words: realistic payloads ------------------------------------------------

GITHUB = GitHubMapping(
    active_labels=frozenset(label.casefold() for label in DEFAULT_ACTIVE_LABELS),
    waiting_labels=frozenset(label.casefold() for label in DEFAULT_WAITING_LABELS),
    project_statuses=DEFAULT_PROJECT_STATUSES,
    overrides=StageOverrides.from_config({}),
    flow_types=FlowTypeRules.from_config(GITHUB_FLOW_TYPES),
)
GITLAB = GitLabMapping(
    label_stages={k.casefold(): v for k, v in DEFAULT_LABEL_STAGES.items()},
    status_stages=DEFAULT_STATUS_STAGES,
    canceled_labels=frozenset(label.casefold() for label in DEFAULT_CANCELED_LABELS),
    overrides=StageOverrides.from_config({}),
    flow_types=FlowTypeRules.from_config(GITLAB_FLOW_TYPES),
)


def links_of(item: FlowItem) -> set[tuple[str, str, str]]:
    return {(lk.link_type, lk.direction, lk.target_key) for lk in item.links}


def devlake_pull(shared_fixtures: Path, number: int) -> dict[str, Any]:
    path = shared_fixtures / "github" / "devlake" / "_raw_github_api_pull_requests.csv"
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            data: dict[str, Any] = json.loads(row["data"])
            if data["number"] == number:
                return data
    raise AssertionError(f"pull request {number} not in the fixture")


def test_github_pull_references_from_title_branch_and_body(shared_fixtures: Path) -> None:
    # a REST pull object as recorded (head.ref "hotfix/tickerStop", body without links)
    pull = devlake_pull(shared_fixtures, 19)
    pull["pull_request"] = {"url": pull["url"], "merged_at": pull.get("merged_at")}
    plain = parse_github(pull, [], GITHUB, repo="panjf2000/ants", source="gh", value_stream="v")
    assert links_of(plain) == set()

    pull["title"] = "[ANTS-12] Possible memory leak because of Ticker (UTF-8 safe)"
    pull["head"]["ref"] = "hotfix/ANTS-13_tickerStop"
    pull["body"] = (
        "Blocked by: #18, payments/core/api!7 and OPS-4.\r\nDepends on acme/lib#2\r\n"
        "Fixes #3. Depends on python-3, shop-9 and xOPS-5."
    )
    parsed = parse_github(pull, [], GITHUB, repo="panjf2000/ants", source="gh", value_stream="v")
    assert links_of(parsed) == {
        ("References", "outward", "ANTS-12"),
        ("References", "outward", "UTF-8"),  # key-shaped; dropped by the view unless stored
        ("References", "outward", "ANTS-13"),
        ("Blocks", "inward", "panjf2000/ants#18"),
        ("Blocks", "inward", "payments/core/api!7"),
        ("Blocks", "inward", "OPS-4"),
        ("Blocks", "inward", "acme/lib#2"),
        ("Closes", "outward", "panjf2000/ants#3"),
    }
    # GraphQL's headRefName, given by the connector, wins over a REST head.ref
    branch = parse_github(
        pull, [], GITHUB, repo="panjf2000/ants", source="gh", value_stream="v", branch="OPS-9-x"
    )
    assert ("References", "outward", "OPS-9") in links_of(branch)
    assert ("References", "outward", "ANTS-13") not in links_of(branch)


def test_github_issue_title_but_no_branch(shared_fixtures: Path) -> None:
    pull = devlake_pull(shared_fixtures, 23)  # body "Fix #22": an issue closes nothing
    issue = {k: v for k, v in pull.items() if k != "head"}
    issue["title"] = "SHOP-7: add PanicHandler"
    parsed = parse_github(issue, [], GITHUB, repo="panjf2000/ants", source="gh", value_stream="v")
    assert links_of(parsed) == {("References", "outward", "SHOP-7")}
    assert parsed.kind == "issue"


def test_gitlab_merge_request_references(shared_fixtures: Path) -> None:
    path = shared_fixtures / "gitlab" / "go-gitlab-testdata" / "get_merge_request.json"
    mr = json.loads(path.read_text(encoding="utf-8"))
    project = "gitlab-org/gitlab-ee"
    plain = parse_gitlab(mr, [], GITLAB, project=project, source="gl", value_stream="v")
    assert links_of(plain) == set()
    mr["title"] = 'Resolve "DES-4 Add deletion support for designs"'
    mr["source_branch"] = "DES-5_delete-designs-v2"
    mr["description"] = (
        "## What does this MR do?\r\n\r\nBlocked by #3, !4 and gitlab-org/gitaly#7.\r\n"
        "Depends on: gitlab-ce#9 & OPS-2"
    )
    stated = [Link("Blocks", "inward", "gitlab-org/gitlab-ee#3", "901")]
    parsed = parse_gitlab(
        mr, [], GITLAB, project=project, source="gl", value_stream="v", links=stated
    )
    assert links_of(parsed) == {
        ("References", "outward", "DES-4"),
        ("References", "outward", "DES-5"),
        ("Blocks", "inward", "gitlab-org/gitlab-ee#3"),
        ("Blocks", "inward", "gitlab-org/gitlab-ee!4"),
        ("Blocks", "inward", "gitlab-org/gitaly#7"),
        ("Blocks", "inward", "gitlab-org/gitlab-ce#9"),  # a sibling project of the namespace
        ("Blocks", "inward", "OPS-2"),
    }
    # the stated link keeps its link id; the text adds no duplicate of it
    assert [lk.target_id for lk in parsed.links if lk.target_key.endswith("ee#3")] == ["901"]


# -- three trackers end to end --------------------------------------------------------------
#
# Value streams: Checkout = Jira SHOP + GitHub acme/checkout-web, Payments = GitLab
# payments/api, Platform = Jira OPS. Week of Monday 2026-03-02, as of Wednesday Mar 11 00:00.
#
# | item                         | stream   | in progress       | blocked by              |
# |------------------------------|----------|-------------------|-------------------------|
# | SHOP-1 (Jira link)           | Checkout | Mar 3 -           | OPS-1 (done Mar 6)      |
# | PR #1 branch SHOP-1          | Checkout | Mar 4 -           | payments/api#1 (open)   |
# | SHOP-2 (link on SHOP-3)      | Checkout | Mar 5 -           | SHOP-3 (done Mar 10)    |
# | MR !1 "SHOP-1 refund API"    | Payments | Mar 3 - Mar 5     | OPS-2 (never started)   |
#
# Checkout, week of Mar 2: blocked by others SHOP-1 Mar 3-6 (3 d) + PR Mar 4-9 (5 d) = 8 d,
# at the end (Mar 9) the PR; within the stream SHOP-2 Mar 5-9 (4 d), blocked at the end.
# Week of Mar 9 (to Mar 11): PR 2 d, blocked at the end; SHOP-2 Mar 9-10 (1 d), not at the end.
# Payments: MR Mar 3-5 (2 d) in the week of Mar 2, nothing at the end; zeros the next week.

EMAIL, TOKEN = "bot@example.com", "sim-token-deps"


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def trackers() -> Iterator[Trackers]:
    with empty_trackers(at(20), EMAIL, TOKEN) as three:
        jira, github, gitlab = three.jira, three.github, three.gitlab
        ops1 = jira.add_issue(key="OPS-1", issue_type="Story", created=at(1))
        jira.transition(ops1, "In Progress", at(2))
        jira.transition(ops1, "Done", at(6))
        ops2 = jira.add_issue(key="OPS-2", issue_type="Story", created=at(1))
        shop1 = jira.add_issue(
            key="SHOP-1", issue_type="Story", created=at(2), links=[("Blocks", "inward", ops1)]
        )
        jira.transition(shop1, "In Progress", at(3))
        shop2 = jira.add_issue(key="SHOP-2", issue_type="Story", created=at(2))
        jira.transition(shop2, "In Progress", at(5))
        shop3 = jira.add_issue(
            key="SHOP-3", issue_type="Story", created=at(2), links=[("Blocks", "outward", shop2)]
        )
        jira.transition(shop3, "In Progress", at(5))
        jira.transition(shop3, "Done", at(10))

        issue = gitlab.add_issue("payments/api", created=at(1), title="Refund ledger")
        mr = gitlab.add_merge_request(
            "payments/api", created=at(3), title="SHOP-1 refund API", description="Blocked by OPS-2"
        )
        gitlab.merge("payments/api", mr, at(5))
        github.add_pull(
            "acme/checkout-web",
            created=at(4),
            title="Checkout button",
            branch="feature/SHOP-1-button",
            body=f"Depends on payments/api#{issue}",
        )
        assert ops2 == "OPS-2"
        yield three


@pytest.fixture
def synced(
    trackers: Trackers, tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)
    more = f"""{trackers.sources_toml("SIM_TOKEN")}
[[value_streams]]
name = "Checkout"
scopes = [{{ source = "jira", projects = ["SHOP"] }}, {{ source = "gh" }}]

[[value_streams]]
name = "Payments"
scopes = [{{ source = "gl" }}]

[[value_streams]]
name = "Platform"
scopes = [{{ source = "jira", projects = ["OPS"] }}]
"""
    config = jira_toml(
        tmp_path / "syncd.toml",
        trackers.jira.base_url,
        warehouse_url,
        email_env="SIM_EMAIL",
        token_env="SIM_TOKEN",
        jql="project in (SHOP, OPS)",
        source=more,
    )
    code, out = cli(["sync", "-c", str(config)])
    assert code == 0, out
    return config


AS_OF_E2E = "2026-03-11T00:00:00Z"


def test_three_trackers_blocked_by_other_value_streams(synced: Path) -> None:
    code, out = cli(
        [
            "dependencies",
            "-c",
            str(synced),
            "--period",
            "week",
            "--as-of",
            AS_OF_E2E,
            "--format",
            "json",
        ]
    )
    assert code == 0, out
    rows = {(r["value_stream"], r["period_start"]): r for r in json.loads(out)}
    assert sorted(rows) == [
        ("Checkout", "2026-03-02"),
        ("Checkout", "2026-03-09"),
        ("Payments", "2026-03-02"),
        ("Payments", "2026-03-09"),
    ]
    figures = {
        k: (
            r["blocked_cross"],
            r["blocked_cross_s"] / D,
            r["blocked_same"],
            r["blocked_same_s"] / D,
        )
        for k, r in rows.items()
    }
    assert figures == {
        ("Checkout", "2026-03-02"): (1, 8.0, 1, 4.0),
        ("Checkout", "2026-03-09"): (1, 2.0, 0, 1.0),
        ("Payments", "2026-03-02"): (0, 2.0, 0, 0.0),
        ("Payments", "2026-03-09"): (0, 0.0, 0, 0.0),
    }
    (pr,) = rows[("Checkout", "2026-03-09")]["blocked_cross_items"]
    assert (pr["key"], pr["source"]) == ("acme/checkout-web#1", "gh")
    assert [(b["key"], b["source"], b["value_stream"]) for b in pr["blockers"]] == [
        ("payments/api#1", "gl", "Payments")
    ]
    assert rows[("Checkout", "2026-03-09")]["period_end"] == "2026-03-11T00:00:00+00:00"

    code, out = cli(
        ["dependencies", "-c", str(synced), "--as-of", AS_OF_E2E, "--value-stream", "Payments"]
    )
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["value", "stream"]
    assert [line.split() for line in lines[2:]] == [
        ["Payments", "2026-03-02", "0", "2.0", "0", "0.0"],
        ["Payments", "2026-03-09", "0", "0.0", "0", "0.0"],
    ]
    code, out = cli(["dependencies", "-c", str(synced), "--as-of", AS_OF_E2E, "--last", "1"])
    assert code == 0, out
    assert "acme/checkout-web#1 (gh) waits on payments/api#1 (Payments, gl)" in out


def test_three_trackers_view_and_graph(synced: Path, tmp_path: Path) -> None:
    target = tmp_path / "graph.json"
    code, out = cli(["dependencies", "-c", str(synced), "--graph", "--output", str(target)])
    assert code == 0, out
    document = json.loads(target.read_text(encoding="utf-8"))
    keys = {node["id"]: node["key"] for node in document["nodes"]}
    edges = {
        (keys[e["from"]], keys[e["to"]], e["link_type"], e["blocking"], e["cross_value_stream"])
        for e in document["edges"]
    }
    assert edges == {
        ("SHOP-1", "OPS-1", "Blocks", True, True),
        ("SHOP-2", "SHOP-3", "Blocks", True, False),
        # the PR's branch name and the MR's title name SHOP-1
        ("acme/checkout-web#1", "SHOP-1", "References", False, False),
        ("payments/api!1", "SHOP-1", "References", False, True),
        ("acme/checkout-web#1", "payments/api#1", "Blocks", True, True),
        ("payments/api!1", "OPS-2", "Blocks", True, True),
    }
    nodes = {node["key"]: node for node in document["nodes"]}
    assert (nodes["payments/api#1"]["source"], nodes["payments/api#1"]["stage"]) == ("gl", "new")
    assert nodes["acme/checkout-web#1"]["value_stream"] == "Checkout"

    code, out = cli(["dependencies", "-c", str(synced), "--graph", "--value-stream", "Platform"])
    assert code == 0, out
    platform = json.loads(out)
    assert {(keys[e["from"]], keys[e["to"]]) for e in platform["edges"]} == {
        ("SHOP-1", "OPS-1"),
        ("payments/api!1", "OPS-2"),
    }
    code, _out = cli(["dependencies", "-c", str(synced), "--output", str(target)])
    assert code == 2  # --output goes with --graph


def test_blocked_rows_read_the_warehouse(synced: Path) -> None:
    from syncd.config import load_config

    config = load_config(str(synced))
    warehouse = Warehouse(config.warehouse.resolved_url())
    try:
        with warehouse.engine.connect() as conn:
            rows = blocked_rows(conn, "month", at(11), value_stream="Checkout")
    finally:
        warehouse.close()
    (march,) = rows
    assert (march.blocked_cross, march.blocked_cross_s / D) == (1, 3 + 7)
    assert (march.blocked_same, march.blocked_same_s / D) == (0, 5.0)
