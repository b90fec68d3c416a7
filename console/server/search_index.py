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

Both stores (migration 0010): ``users_search_version``, one row (``epoch``, ``version``) that every
change to the searchable columns moves on, in the writer's own transaction (triggers: per row on
SQLite; on PostgreSQL per statement for inserts and deletes, so a ``COPY`` of a million users moves
it once, and per updated row whose names differ). It keys the
exact search counts a process keeps (:class:`CountCache`): a count is reused only while no user was
added, removed or renamed since, by any process. ``epoch`` is random per database, so a count is
never taken for another database's at the same version.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable

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


VERSION_TABLE = f"{TABLE}_version"  # its name keeps it out of the schema comparison with the FTS tables (store.py)
_BUMP = f"UPDATE {VERSION_TABLE} SET version = version + 1"
VERSION_TRIGGERS = {  # SQLite
    f"{VERSION_TABLE}_ai": f"AFTER INSERT ON users BEGIN {_BUMP}; END",
    f"{VERSION_TABLE}_ad": f"AFTER DELETE ON users BEGIN {_BUMP}; END",
    f"{VERSION_TABLE}_au": f"AFTER UPDATE OF {_COLS} ON users BEGIN {_BUMP}; END",
}
_PG_BUMP = f"{VERSION_TABLE}_bump"
_PG_TRIGGERS = {  # name -> (events, FOR EACH ...)
    f"{VERSION_TABLE}_rows": ("INSERT OR DELETE OR TRUNCATE", "STATEMENT"),
    f"{VERSION_TABLE}_names": ("UPDATE", "ROW"),
}


def _sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def create_triggers(conn: Connection, triggers: dict[str, str] = TRIGGERS) -> None:
    for name, body in triggers.items():
        conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")


def drop_triggers(conn: Connection, triggers: dict[str, str] = TRIGGERS) -> None:
    for name in triggers:
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

    One rebuild at the end reads the names once, in rowid order, instead of a trigger per row
    (and the version moves once).
    """
    if _sqlite(conn):
        drop_triggers(conn)
        drop_triggers(conn, VERSION_TRIGGERS)


def restore_after_bulk_load(conn: Connection) -> None:
    """After a bulk insert: rebuild the search index over every user and resume maintaining it."""
    if _sqlite(conn):
        rebuild(conn)
        create_triggers(conn)
        conn.exec_driver_sql(_BUMP)
        create_triggers(conn, VERSION_TRIGGERS)


# ------------------------------------------------------------ the version, and the counts it keys


def install_version(conn: Connection) -> None:
    """The version row and what moves it (migration 0010)."""
    integer = "INTEGER" if _sqlite(conn) else "BIGINT"
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
        f"epoch TEXT NOT NULL, version {integer} NOT NULL)"
    )
    conn.exec_driver_sql(f"DELETE FROM {VERSION_TABLE}")
    conn.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} (id, epoch, version) VALUES (1, '{secrets.token_hex(16)}', 0)")
    if _sqlite(conn):
        create_triggers(conn, VERSION_TRIGGERS)
        return
    # Adding and removing users: once a statement. Updates: a row trigger that compares the names in its
    # body, not "UPDATE OF <columns>" nor a WHEN clause, which would pin the columns' types (PostgreSQL
    # refuses ALTER TYPE on a column a trigger definition names; migration 0003 alters these).
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in COLUMNS)
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {_PG_BUMP}() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN IF TG_OP = 'UPDATE' THEN IF NOT ({changed}) THEN RETURN NULL; END IF; END IF; "
        f"{_BUMP}; RETURN NULL; END $$"
    )
    for name, (events, level) in _PG_TRIGGERS.items():
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON users")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {name} AFTER {events} ON users FOR EACH {level} EXECUTE FUNCTION {_PG_BUMP}()"
        )


def uninstall_version(conn: Connection) -> None:
    if _sqlite(conn):
        drop_triggers(conn, VERSION_TRIGGERS)
    else:
        for name in _PG_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON users")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_PG_BUMP}()")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")


def version(conn: Connection) -> tuple[str, int]:
    """(epoch, version): read before what it keys, so that a change committed in between makes the
    entry stale at once rather than keep an old count under the new version."""
    row = conn.exec_driver_sql(f"SELECT epoch, version FROM {VERSION_TABLE}").one()
    return str(row[0]), int(row[1])


class CountCache:
    """Exact counts by (epoch, version, query), the most recently used ``size`` of them. Thread-safe.

    Only repeats gain: a query asked for the first time since a change is counted in full. What it
    answers is what counting would answer, for counts that depend on the searchable columns alone.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._counts: OrderedDict[Hashable, int] = OrderedDict()

    def get(self, key: Hashable) -> int | None:
        with self._lock:
            found = self._counts.get(key)
            if found is not None:
                self._counts.move_to_end(key)
            return found

    def put(self, key: Hashable, count: int) -> None:
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            while len(self._counts) > self._size:
                self._counts.popitem(last=False)
