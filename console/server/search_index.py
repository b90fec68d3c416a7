"""The users search index: FTS5 (trigram) on SQLite, pg_trgm GIN on PostgreSQL.

SQLite: ``users_search`` is an external-content FTS5 table over the five folded (``*_ci``) columns
of ``users``, keyed by the users rowid, with the ``trigram`` tokenizer: a word of 3+ characters
matches as a substring (a phrase of its trigrams). External content rather than contentless: the
index stores no second copy of the names, and ``'rebuild'`` re-reads them from ``users`` (after a
bulk load or a repair) where a contentless table would need every row inserted again. Triggers keep
it in step, inside the writer's own transaction. ``case_sensitive 1``: the columns are already
case-folded by Python (``str.casefold``), so the index compares exactly what ``LIKE`` compares
on them, and a match is the same set as ``LIKE '%word%'``.

The users rowid is not an INTEGER PRIMARY KEY: anything that rewrites ``users`` with new rowids
(a future migration copying the table, say) must call :func:`rebuild` afterwards.

PostgreSQL: the GIN index ``ix_users_search_trgm`` (migration 0004) is declared in ``store.metadata``,
so a bulk load drops and rebuilds it with the other declared indexes; nothing more to do here.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from .store import SEARCH_INDEX_TABLE as TABLE
from .store import SEARCHABLE

COLUMNS = tuple(f"{name}_ci" for name in SEARCHABLE)
_COLS = ", ".join(COLUMNS)
_NEW = ", ".join(f"new.{c}" for c in COLUMNS)
_OLD = ", ".join(f"old.{c}" for c in COLUMNS)

CREATE_TABLE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5({_COLS}, content='users', content_rowid='rowid', "
    "tokenize='trigram case_sensitive 1')"
)
# External content: a removal names the values that were indexed (the old row's).
TRIGGERS = {
    f"{TABLE}_ai": f"AFTER INSERT ON users BEGIN INSERT INTO {TABLE}(rowid, {_COLS}) VALUES (new.rowid, {_NEW}); END",
    f"{TABLE}_ad": (
        f"AFTER DELETE ON users BEGIN INSERT INTO {TABLE}({TABLE}, rowid, {_COLS}) "
        f"VALUES ('delete', old.rowid, {_OLD}); END"
    ),
    f"{TABLE}_au": (
        f"AFTER UPDATE OF {_COLS} ON users BEGIN "
        f"INSERT INTO {TABLE}({TABLE}, rowid, {_COLS}) VALUES ('delete', old.rowid, {_OLD}); "
        f"INSERT INTO {TABLE}(rowid, {_COLS}) VALUES (new.rowid, {_NEW}); END"
    ),
}


def _sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def create_triggers(conn: Connection) -> None:
    for name, body in TRIGGERS.items():
        conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")


def drop_triggers(conn: Connection) -> None:
    for name in TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def rebuild(conn: Connection) -> None:
    """Re-index every user (SQLite): after a bulk load, or after rowids changed."""
    conn.exec_driver_sql(f"INSERT INTO {TABLE}({TABLE}) VALUES('rebuild')")


def install(conn: Connection) -> None:
    """Create the index over the users there are, and keep it in step from now on (migration 0005)."""
    if not _sqlite(conn):
        return
    conn.exec_driver_sql(CREATE_TABLE)
    rebuild(conn)
    create_triggers(conn)


def uninstall(conn: Connection) -> None:
    if not _sqlite(conn):
        return
    drop_triggers(conn)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")


def drop_for_bulk_load(conn: Connection) -> None:
    """Before a bulk insert into ``users``: stop maintaining the search index row by row.

    One rebuild at the end reads the names once, in rowid order, instead of a trigger per row.
    """
    if _sqlite(conn):
        drop_triggers(conn)


def restore_after_bulk_load(conn: Connection) -> None:
    """After a bulk insert: rebuild the search index over every user and resume maintaining it."""
    if _sqlite(conn):
        rebuild(conn)
        create_triggers(conn)
