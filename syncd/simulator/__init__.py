"""Deterministic fake trackers for syncd's demo, tests and benchmarks.

`JiraSimulator` lives in `syncd.simulator.jira`; it is re-exported lazily here so that
`python -m syncd.simulator.jira` does not import the module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.simulator.jira import JiraSimulator, RequestRecord

__all__ = ["JiraSimulator", "RequestRecord"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from syncd.simulator import jira

        return getattr(jira, name)
    raise AttributeError(f"module 'syncd.simulator' has no attribute {name!r}")
