"""syncd: a flow warehouse of the work in Jira, GitHub and GitLab, with Flow Framework metrics."""

__version__ = "0.1.0"
