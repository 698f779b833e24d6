"""The Jira connector (Cloud and Data Center)."""

from connectors.jira.connector import JiraConnector
from connectors.jira.settings import JiraSourceConfig

__all__ = ["JiraConnector", "JiraSourceConfig"]
