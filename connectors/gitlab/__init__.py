"""The GitLab connector: issues and merge requests with their resource events (gitlab.com and
self-managed)."""

from connectors.gitlab.connector import GitLabConnector
from connectors.gitlab.settings import GitLabSourceConfig

__all__ = ["GitLabConnector", "GitLabSourceConfig"]
