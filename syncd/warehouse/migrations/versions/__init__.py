"""The revisions, one file each (Alembic loads them by path; this file makes them package
data)."""
