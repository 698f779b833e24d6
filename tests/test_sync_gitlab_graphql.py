"""System notes through GitLab's GraphQL API, end to end against the simulator: the same
warehouse as REST notes, one query per batch, complexity splits, notes beyond one page, the
REST fallbacks (404, `graphql = false`, GitLab before 16.5, notes sharing a second with another
change) and 429s on `/api/graphql`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.export import iter_items, iter_transitions
from syncd.simulator.gitlab import GitLabSimulator, RequestRecord
from syncd.warehouse.store import Warehouse
from tests.helpers import cli, run_sync

T0 = datetime(2026, 4, 6, tzinfo=UTC)
TOKEN = "sim-gitlab-token-not-real-1111"
P = "acme/web"
GRAPHQL = "/api/graphql"
Snapshot = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GL_TOKEN", TOKEN)


def write_config(tmp_path: Path, name: str, url: str, warehouse_url: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n[[sources]]\nname = "gl"\nkind = "gitlab"\n'
        f'url = "{url}"\ntoken_env = "GL_TOKEN"\nprojects = ["{P}"]\n'
        f'value_stream = "Payments"\n{extra}\n',
        encoding="utf-8",
    )
    return path


def synced(
    sim: GitLabSimulator, tmp_path: Path, name: str, extra: str = "", url: str | None = None
) -> tuple[Snapshot, list[RequestRecord]]:
    """One sync of `sim` into a fresh warehouse (SQLite unless `url`): the exported items and
    transitions, and the requests it made."""
    url = url or f"sqlite:///{tmp_path / name}.db"
    sim.reset_requests()
    warehouse = Warehouse(url)
    [result] = run_sync(
        load_config(write_config(tmp_path, name, sim.base_url, url, extra)), warehouse
    )
    assert result.ok, result.error
    return (list(iter_items(warehouse)), list(iter_transitions(warehouse))), sim.requests


def graphql_calls(requests: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in requests if r.path == GRAPHQL]


def rest_notes(requests: list[RequestRecord]) -> list[str]:
    return [r.path for r in requests if r.path.endswith("/notes")]


def batch_iids(request: RequestRecord) -> list[str]:
    return list(request.body["variables"]["iids"])


def second(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(microsecond=0)


def same_to_the_second(ours: Snapshot, theirs: Snapshot) -> int:
    """Assert two warehouses are the same but for note times, which GraphQL gives to the
    second: a note-driven transition (and the work start or end it makes) may be up to 999 ms
    early, and the figures differ by as much. Returns how many transitions moved."""
    (items, transitions), (their_items, their_transitions) = ours, theirs
    assert len(transitions) == len(their_transitions) > 0
    moved = 0
    for mine, other in zip(transitions, their_transitions, strict=True):
        assert {k: v for k, v in mine.items() if k != "at"} == {
            k: v for k, v in other.items() if k != "at"
        }
        assert second(mine["at"]) == second(other["at"])
        moved += mine["at"] != other["at"]
    figures = ("flow_time_s", "active_s", "wait_s")
    ends = ("work_start", "work_end")
    for mine, other in zip(items, their_items, strict=True):
        assert {k: v for k, v in mine.items() if k not in figures + ends} == {
            k: v for k, v in other.items() if k not in figures + ends
        }
        for end in ends:
            assert (mine[end] is None) == (other[end] is None)
            assert mine[end] is None or second(mine[end]) == second(other[end])
        for figure in figures:
            assert mine[figure] == pytest.approx(other[figure], abs=1.0)
    return moved


@pytest.fixture
def scenario() -> Iterator[GitLabSimulator]:
    """Histories on whole seconds (where GraphQL's times lose nothing): merge requests with
    and without reviewers, issues with work item Status notes and comments."""
    sim = GitLabSimulator(projects=(P,), issues=0, merge_requests=0, anchor=T0, token=TOKEN)
    one = sim.add_issue(P, created=h(0), labels=("type::bug",))
    sim.set_status(P, one, "To do", h(1))
    sim.add_label(P, "issue", one, "workflow::in progress", h(2))
    sim.set_status(P, one, "In progress", h(3))
    sim.comment(P, "issue", one, "set status to **Done** (not really: a comment)", h(4))
    sim.set_status(P, one, "Done", h(30))
    sim.close(P, "issue", one, h(31))
    two = sim.add_issue(P, created=h(5))
    sim.set_status(P, two, "Won't do", h(6))
    sim.close(P, "issue", two, h(7))
    sim.add_issue(P, created=h(8))  # no notes at all
    mr1 = sim.add_merge_request(P, created=h(1), draft=True, labels=("type::feature",))
    sim.set_draft(P, mr1, False, h(2))
    sim.add_reviewer(P, mr1, "ana", h(3))
    sim.comment(P, "merge_request", mr1, "looks good", h(4))
    sim.approve(P, mr1, "ana", h(20))
    sim.merge(P, mr1, h(22))
    mr2 = sim.add_merge_request(P, created=h(2))
    sim.add_reviewer(P, mr2, "bo", h(2) + timedelta(seconds=17))
    sim.set_draft(P, mr2, True, h(9))
    sim.set_draft(P, mr2, False, h(12))
    sim.approve(P, mr2, "bo", h(13))
    sim.close(P, "merge_request", mr2, h(40))
    mr3 = sim.add_merge_request(P, created=h(3))  # no reviewers: its notes are not read
    sim.add_label(P, "merge_request", mr3, "workflow::review", h(4))
    with sim:
        yield sim


def test_graphql_and_rest_notes_give_the_same_warehouse(
    scenario: GitLabSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    extra = "work_item_status = true"
    through_graphql, requests = synced(scenario, tmp_path, "graphql", extra, warehouse_url)
    # one query per stream (issues, merge requests), no REST notes at all
    assert [batch_iids(r) for r in graphql_calls(requests)] == [["1", "2", "3"], ["1", "2"]]
    assert all(r.status == 200 for r in requests) and rest_notes(requests) == []
    through_rest, requests = synced(scenario, tmp_path, "rest", extra + "\ngraphql = false")
    assert graphql_calls(requests) == []
    assert len(rest_notes(requests)) == 5  # 3 issues + the 2 merge requests with reviewers
    assert through_graphql == through_rest
    transitions = {(t["key"], t["at"], t["to_state"]) for t in through_graphql[1]}
    assert {
        ("acme/web#1", "2026-04-06T03:00:00Z", "status: In progress"),
        ("acme/web#2", "2026-04-06T07:00:00Z", "closed (Won't do)"),
        ("acme/web!1", "2026-04-06T03:00:00Z", "in review"),
        ("acme/web!2", "2026-04-06T02:00:17Z", "in review"),
        ("acme/web!2", "2026-04-06T13:00:00Z", "approved"),
    } <= transitions
    # and so the same figures
    metrics = []
    for name in ("graphql", "rest"):
        code, out = cli(
            [
                "metrics",
                "-c",
                str(tmp_path / f"{name}.toml"),
                "--period",
                "week",
                "--as-of",
                h(24 * 7).isoformat(),
                "--format",
                "json",
            ]
        )
        assert code == 0, out
        metrics.append(json.loads(out))
    assert metrics[0] == metrics[1] and metrics[0]


def test_generated_world_matches_rest_to_the_second(tmp_path: Path) -> None:
    with GitLabSimulator(
        projects=(P,), issues=40, merge_requests=40, seed=21, anchor=T0, token=TOKEN
    ) as sim:
        batched, requests = synced(sim, tmp_path, "g", "work_item_status = true")
        assert len(graphql_calls(requests)) == 2 and rest_notes(requests) == []
        rest, _ = synced(sim, tmp_path, "r", "work_item_status = true\ngraphql = false")
    assert len(batched[1]) > 300
    assert same_to_the_second(batched, rest) > 0  # the generated times have milliseconds


@pytest.mark.parametrize("batch", [10, 100])
def test_one_query_per_batch_of_merge_requests_with_reviewers(tmp_path: Path, batch: int) -> None:
    with GitLabSimulator(projects=(P,), issues=0, merge_requests=0, anchor=T0, token=TOKEN) as sim:
        reviewed = []
        for n in range(30):
            iid = sim.add_merge_request(P, created=h(n))
            if n % 6 != 5:  # 25 with reviewers, 5 without
                sim.add_reviewer(P, iid, "ana", h(n + 0.5))
                reviewed.append(str(iid))
        _, requests = synced(sim, tmp_path, "b", f"graphql_batch_size = {batch}")
    calls = graphql_calls(requests)
    assert len(calls) == math.ceil(25 / batch)
    assert sorted((i for r in calls for i in batch_iids(r)), key=int) == reviewed
    assert rest_notes(requests) == []
    events = [r for r in requests if r.path.endswith("_events")]
    assert len(events) == 60  # state and label events of every merge request, as before


def test_a_complexity_refusal_splits_the_batch(tmp_path: Path) -> None:
    with GitLabSimulator(
        projects=(P,),
        issues=0,
        merge_requests=0,
        anchor=T0,
        token=TOKEN,
        graphql_iids_complexity=True,  # a server that scores each requested iid
    ) as sim:
        for n in range(40):
            iid = sim.add_merge_request(P, created=h(n))
            sim.add_reviewer(P, iid, "ana", h(n + 0.5))
        split, requests = synced(sim, tmp_path, "split")
        rest, _ = synced(sim, tmp_path, "rest", "graphql = false")
    # 40 iids score 803 > 250: the batch shrinks to 40 * 250 // 803 = 12 and stays there
    assert [len(batch_iids(r)) for r in graphql_calls(requests)] == [40, 12, 12, 12, 4]
    assert rest_notes(requests) == [] and split == rest


def test_notes_beyond_the_first_page_continue_by_cursor(tmp_path: Path) -> None:
    with GitLabSimulator(projects=(P,), issues=0, merge_requests=0, anchor=T0, token=TOKEN) as sim:
        busy = sim.add_merge_request(P, created=h(0), draft=True)
        for n in range(129):  # 129 draft/ready notes
            sim.set_draft(P, busy, n % 2 == 1, h(1) + timedelta(minutes=n))
        sim.add_reviewer(P, busy, "ana", h(5))
        sim.approve(P, busy, "ana", h(6))
        quiet = sim.add_merge_request(P, created=h(1))
        sim.add_reviewer(P, quiet, "bo", h(2))
        paged, requests = synced(sim, tmp_path, "paged")
        rest, _ = synced(sim, tmp_path, "rest", "graphql = false")
    calls = graphql_calls(requests)
    assert len(calls) == 2  # the batch, then page 2 of the busy one's 131 notes
    assert calls[1].body["variables"]["iid"] == str(busy) and calls[1].body["variables"]["after"]
    assert rest_notes(requests) == [] and paged == rest
    assert [t["to_state"] for t in paged[1] if t["key"] == "acme/web!1"][-2:] == [
        "in review",
        "approved",
    ]


def test_without_graphql_every_item_reads_its_rest_notes(tmp_path: Path) -> None:
    with GitLabSimulator(
        projects=(P,), issues=15, merge_requests=15, seed=3, anchor=T0, token=TOKEN, graphql=False
    ) as sim:
        fallen_back, requests = synced(sim, tmp_path, "gone", "work_item_status = true")
        assert [r.status for r in graphql_calls(requests)] == [404]  # asked once, then REST
        reviewed = [i for i in sim.iids(P, "merge_request") if _has_reviewers(sim, i)]
        assert len(rest_notes(requests)) == 15 + len(reviewed) and reviewed
        chosen, requests = synced(sim, tmp_path, "off", "work_item_status = true\ngraphql = false")
        assert graphql_calls(requests) == []
    assert fallen_back == chosen


def _has_reviewers(sim: GitLabSimulator, iid: int) -> bool:
    return any(
        e["type"] == "note" and str(e["body"]).startswith("requested review from")
        for e in sim.events(P, "merge_request", iid)
    )


def test_gitlab_before_16_5_gets_its_notes_without_the_filter(tmp_path: Path) -> None:
    with GitLabSimulator(
        projects=(P,),
        issues=10,
        merge_requests=10,
        seed=4,
        anchor=T0,
        token=TOKEN,
        graphql_notes_filter=False,
    ) as sim:
        old, requests = synced(sim, tmp_path, "old", "work_item_status = true")
        rest, _ = synced(sim, tmp_path, "rest", "work_item_status = true\ngraphql = false")
    calls = graphql_calls(requests)
    assert "filter: ONLY_ACTIVITY" in calls[0].body["query"]  # refused once...
    assert all("filter" not in r.body["query"] for r in calls[1:])  # ...then asked without
    assert len(calls) == 3 and rest_notes(requests) == []
    same_to_the_second(old, rest)


def test_a_note_sharing_its_second_with_an_event_is_read_over_rest(tmp_path: Path) -> None:
    with GitLabSimulator(projects=(P,), issues=0, merge_requests=0, anchor=T0, token=TOKEN) as sim:
        tight = sim.add_merge_request(P, created=h(0))
        at = h(1) + timedelta(milliseconds=200)
        sim.add_label(P, "merge_request", tight, "workflow::review", at)
        sim.add_reviewer(P, tight, "ana", at + timedelta(milliseconds=500))  # same second
        sim.remove_label(P, "merge_request", tight, "workflow::review", h(2))
        loose = sim.add_merge_request(P, created=h(0))
        sim.add_reviewer(P, loose, "bo", h(3))
        mixed, requests = synced(sim, tmp_path, "mixed")
        rest, _ = synced(sim, tmp_path, "rest", "graphql = false")
    assert len(graphql_calls(requests)) == 1
    assert rest_notes(requests) == [f"/api/v4/projects/acme/web/merge_requests/{tight}/notes"]
    assert mixed == rest  # to the millisecond: the order within that second is REST's


def test_429_on_graphql_is_waited_out(tmp_path: Path) -> None:
    def run(every: int, name: str) -> tuple[Snapshot, list[RequestRecord]]:
        with GitLabSimulator(
            projects=(P,),
            issues=12,
            merge_requests=12,
            seed=8,
            anchor=T0,
            token=TOKEN,
            rate_limit_every=every,
        ) as sim:
            return synced(sim, tmp_path, name, "work_item_status = true\nper_page = 6")

    stormy, requests = run(2, "stormy")
    calm, _ = run(0, "calm")
    throttled = [r for r in graphql_calls(requests) if r.status == 429]
    assert throttled and rest_notes(requests) == []
    assert stormy == calm


def test_check_reports_graphql(tmp_path: Path) -> None:
    for graphql, expected in ((True, "ok   gl: GraphQL available as root"), (False, "FAIL gl: ")):
        with GitLabSimulator(
            projects=(P,), issues=1, merge_requests=1, anchor=T0, token=TOKEN, graphql=graphql
        ) as sim:
            config = write_config(tmp_path, "check", sim.base_url, "sqlite:///:memory:")
            code, out = cli(["check", "-c", str(config)])
        line = next(line for line in out.splitlines() if "GraphQL" in line)
        assert line.startswith(expected), out
        assert code == (0 if graphql else 1)
        assert TOKEN not in out
