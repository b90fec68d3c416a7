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
exact search counts a process keeps (:class:`VersionedCache`). ``epoch`` is random per database, so a
count is never taken for another database's at the same version.

Both stores (migration 0011): ``users_search_changes``, the log of the names each version removed and
added, written by the same triggers in the same transaction; a kept count is brought forward through it
by matching only the changed names (see the log's section below).
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from .store import SEARCH_INDEX_TABLE as TABLE
from .store import SEARCHABLE

V = TypeVar("V")

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
    """Before a bulk insert into ``users``: stop maintaining the search index and the change log row by row.

    One rebuild at the end reads the names once, in rowid order, instead of a trigger per row;
    the version moves once, and the log's floor with it (the load is not logged).
    """
    if _sqlite(conn):
        drop_triggers(conn)
        drop_triggers(conn, LOG_TRIGGERS)
    else:
        _drop_pg_log_triggers(conn)


def restore_after_bulk_load(conn: Connection) -> None:
    """After a bulk insert: rebuild the search index over every user and resume maintaining it."""
    if _sqlite(conn):
        rebuild(conn)
        create_triggers(conn)
        create_triggers(conn, LOG_TRIGGERS)
    else:
        _create_pg_log_triggers(conn)
    conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version = version + 1, floor = version + 1")


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


class VersionedCache(Generic[V]):
    """Facts about the names by query, each exact at one version: ``(epoch, version, value)``, the most
    recently used ``size`` of them. Thread-safe.

    services/users.py keeps exact counts here (brought to a later version through the change log,
    ``_kept_count``; one the log cannot bring forward is counted again in full), and where a search's
    matches begin in username order (``_walk_start``).
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, tuple[str, int, V]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[str, int, V] | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: Hashable, kept: tuple[str, int, V]) -> None:
        with self._lock:
            # Concurrent requests may bring one fact forward out of order: the newest version wins.
            found = self._kept.get(key)
            if found is None or found[0] != kept[0] or found[1] <= kept[1]:
                self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._kept.pop(key, None)


# ------------------------------------------------------------ the change log (migration 0011)
#
# ``users_search_changes``: the searchable names each version removed (sign -1) and added (sign +1),
# written by the triggers that move the version, in the writer's transaction. An exact count kept at
# version v is brought to the current version V by counting, with the search's own predicate, the
# logged rows of versions v+1..V (added minus removed): a few rows instead of every match.
# ``floor`` (on the version row): the log holds every change after it. Pruning moves it up; so does a
# statement too large to log (a bulk load, a truncation): a count older than ``floor`` is counted again.

LOG_TABLE = f"{TABLE}_changes"  # "users_search_" prefix: outside the schema comparison, like the version
LOG_KEEP = 10_000  # versions of changes kept; a count further behind is counted in full
LOG_PRUNE_EVERY = 1_000  # the trigger prunes when the version reaches a multiple of this
LOG_STATEMENT_MAX = 1_000  # PostgreSQL: a statement changing more rows moves the floor instead of logging
_LOG_COLS = f"version, sign, {_COLS}"
_PRUNE = (  # SQLite (in a trigger body): when the version is a multiple of LOG_PRUNE_EVERY
    f"DELETE FROM {LOG_TABLE} WHERE version <= "
    f"(SELECT version - {LOG_KEEP} FROM {VERSION_TABLE} WHERE version % {LOG_PRUNE_EVERY} = 0); "
    f"UPDATE {VERSION_TABLE} SET floor = version - {LOG_KEEP} "
    f"WHERE version % {LOG_PRUNE_EVERY} = 0 AND floor < version - {LOG_KEEP}"
)


def _log_rows(sign: int, row: str) -> str:
    values = ", ".join(f"{row}.{c}" for c in COLUMNS)
    return f"INSERT INTO {LOG_TABLE} ({_LOG_COLS}) SELECT version, {sign}, {values} FROM {VERSION_TABLE}"


_NAMES_DIFFER = " OR ".join(f"old.{c} IS NOT new.{c}" for c in COLUMNS)
LOG_TRIGGERS = {  # SQLite: they replace 0010's VERSION_TRIGGERS (the same bump, and the log)
    f"{LOG_TABLE}_ai": f"AFTER INSERT ON users BEGIN {_BUMP}; {_log_rows(1, 'new')}; {_PRUNE}; END",
    f"{LOG_TABLE}_ad": f"AFTER DELETE ON users BEGIN {_BUMP}; {_log_rows(-1, 'old')}; {_PRUNE}; END",
    f"{LOG_TABLE}_au": (
        f"AFTER UPDATE OF {_COLS} ON users WHEN {_NAMES_DIFFER} BEGIN {_BUMP}; "
        f"{_log_rows(-1, 'old')}; {_log_rows(1, 'new')}; {_PRUNE}; END"
    ),
}
_PG_LOG = f"{LOG_TABLE}_write"
# name -> (event, level, transition table): adding and removing users once a statement (their rows
# from the statement's transition table), renames once a row.
_PG_LOG_TRIGGERS = {
    f"{LOG_TABLE}_ins": ("INSERT", "STATEMENT", "REFERENCING NEW TABLE AS changed_rows"),
    f"{LOG_TABLE}_del": ("DELETE", "STATEMENT", "REFERENCING OLD TABLE AS changed_rows"),
    f"{LOG_TABLE}_trunc": ("TRUNCATE", "STATEMENT", ""),
    f"{LOG_TABLE}_upd": ("UPDATE", "ROW", ""),
}


def _pg_log_function() -> str:
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in COLUMNS)
    old = ", ".join(f"OLD.{c}" for c in COLUMNS)
    new = ", ".join(f"NEW.{c}" for c in COLUMNS)
    prune = (
        f"IF mod(v, {LOG_PRUNE_EVERY}) = 0 THEN DELETE FROM {LOG_TABLE} WHERE version <= v - {LOG_KEEP}; "
        f"UPDATE {VERSION_TABLE} SET floor = greatest(floor, v - {LOG_KEEP}); END IF;"
    )
    # Whole statements (TG_LEVEL) read the transition table; its name is the same in both triggers.
    return (
        f"CREATE OR REPLACE FUNCTION {_PG_LOG}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE v bigint; n bigint; sign smallint; BEGIN "
        "IF TG_OP = 'UPDATE' THEN "
        f"  IF NOT ({changed}) THEN RETURN NULL; END IF; "
        f"  UPDATE {VERSION_TABLE} SET version = version + 1 RETURNING version INTO v; "
        f"  INSERT INTO {LOG_TABLE} ({_LOG_COLS}) VALUES (v, -1, {old}), (v, 1, {new}); "
        "ELSIF TG_OP = 'TRUNCATE' THEN "
        f"  UPDATE {VERSION_TABLE} SET version = version + 1, floor = version + 1; RETURN NULL; "
        "ELSE "
        "  SELECT count(*) INTO n FROM (SELECT 1 FROM changed_rows "
        f"LIMIT {LOG_STATEMENT_MAX + 1}) AS limited; "
        "  IF n = 0 THEN RETURN NULL; END IF; "
        f"  IF n > {LOG_STATEMENT_MAX} THEN "
        f"    UPDATE {VERSION_TABLE} SET version = version + 1, floor = version + 1; RETURN NULL; "
        "  END IF; "
        f"  UPDATE {VERSION_TABLE} SET version = version + 1 RETURNING version INTO v; "
        "  sign := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END; "
        f"  INSERT INTO {LOG_TABLE} ({_LOG_COLS}) SELECT v, sign, {_COLS} FROM changed_rows; "
        "END IF; "
        f"{prune} RETURN NULL; END $$"
    )


def _create_pg_log_triggers(conn: Connection) -> None:
    for name, (event, level, referencing) in _PG_LOG_TRIGGERS.items():
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON users")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {name} AFTER {event} ON users {referencing} FOR EACH {level} EXECUTE FUNCTION {_PG_LOG}()"
        )


def _drop_pg_log_triggers(conn: Connection) -> None:
    for name in _PG_LOG_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON users")


COUNTS_TABLE = f"{TABLE}_counts"
STORED_MIN = 10_000  # a count of fewer matches is cheap to make again: not stored


def install_log(conn: Connection) -> None:
    """The change log, its floor, and the triggers that write it with the version; the stored counts
    (migration 0011)."""
    sqlite = _sqlite(conn)
    text = "TEXT" if sqlite else 'TEXT COLLATE "C"'  # the users' folded columns' type: the same comparisons
    integer = "INTEGER" if sqlite else "BIGINT"
    # Exact counts of large searches at a version, shared by every process and kept across restarts: a
    # process that has not counted a search yet brings the stored count forward through the log instead.
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (query {text} PRIMARY KEY, epoch TEXT NOT NULL, "
        f"version {integer} NOT NULL, total {integer} NOT NULL)"
    )
    names = ", ".join(f"{c} {text} NOT NULL" for c in COLUMNS)
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} (version {integer} NOT NULL, sign SMALLINT NOT NULL, {names})"
    )
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {LOG_TABLE}_version ON {LOG_TABLE} (version)")
    # Counts kept at an older version have no log to come forward by: the floor starts at the current one.
    # A database re-run from its inferred schema (made before migrations) may have the column already.
    if "floor" not in {c["name"] for c in inspect(conn).get_columns(VERSION_TABLE)}:
        conn.exec_driver_sql(f"ALTER TABLE {VERSION_TABLE} ADD COLUMN floor {integer} NOT NULL DEFAULT 0")
    conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET floor = version")
    if sqlite:
        drop_triggers(conn, VERSION_TRIGGERS)
        create_triggers(conn, LOG_TRIGGERS)
        return
    for name in _PG_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON users")
    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_PG_BUMP}()")
    conn.exec_driver_sql(_pg_log_function())
    _create_pg_log_triggers(conn)


def uninstall_log(conn: Connection) -> None:
    """Back to 0010: the version's own triggers, no log, no floor."""
    if _sqlite(conn):
        drop_triggers(conn, LOG_TRIGGERS)
    else:
        _drop_pg_log_triggers(conn)
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_PG_LOG}()")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {LOG_TABLE}")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {COUNTS_TABLE}")
    conn.exec_driver_sql(f"ALTER TABLE {VERSION_TABLE} DROP COLUMN floor")
    epoch, at = version(conn)
    conn.exec_driver_sql(f"DELETE FROM {VERSION_TABLE}")  # install_version makes the row again
    install_version(conn)
    conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET epoch = '{epoch}', version = {at + 1}")


# ------------------------------------------------------------ words worth counting before anyone searches


def frequent_substrings(rows: Iterable[Sequence[str]], min_rows: float, shortest: int) -> list[str]:
    """The substrings of ``shortest``+ characters, without whitespace (a search's words have none), found in at
    least ``min_rows`` of ``rows`` (a row: one user's folded names; a string is found in the row when any one
    name holds it), the most frequent first.

    Level by level (Apriori): a string of n+1 characters is in no more rows than either of its two substrings
    of n characters, so only those with both frequent are looked for. A sample of 5,000 users takes ~1 s.
    """
    sample = list(rows)
    found: dict[str, int] = {}
    frequent: set[str] | None = None
    size = shortest
    while frequent is None or frequent:
        seen: Counter[str] = Counter()
        for names in sample:
            here: set[str] = set()
            for name in names:
                for i in range(len(name) - size + 1):
                    piece = name[i : i + size]
                    if frequent is None:
                        if not any(c.isspace() for c in piece):
                            here.add(piece)
                    elif piece[:-1] in frequent and piece[1:] in frequent:
                        here.add(piece)
            seen.update(here)
        frequent = {piece for piece, rows_with in seen.items() if rows_with >= min_rows}
        found.update((piece, seen[piece]) for piece in frequent)
        size += 1
    return sorted(found, key=lambda piece: (-found[piece], piece))
