"""The users search index: FTS5 (trigram) on SQLite, pg_trgm GIN on PostgreSQL.

Stub: filled in by the search work (issue 8). Seeding calls these two around a bulk load.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection


def drop_for_bulk_load(conn: Connection) -> None:
    """Before a bulk insert into ``users``: stop maintaining the search index row by row."""


def restore_after_bulk_load(conn: Connection) -> None:
    """After a bulk insert: rebuild the search index over every user and resume maintaining it."""
