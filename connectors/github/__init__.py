"""The GitHub connector: issues and pull requests with their timelines (github.com and GHES)."""

from connectors.github.connector import GitHubConnector
from connectors.github.settings import GitHubSourceConfig

__all__ = ["GitHubConnector", "GitHubSourceConfig"]
