"""The service's store: SQLAlchemy Core tables on SQLite (WAL) or PostgreSQL (psycopg 3).

One set of tables and queries serves both. The schema is made and changed only by the
Alembic migrations in ``migrations/`` (``protect-console db upgrade``); ``metadata`` here
must always equal what the latest migration produces (tests/server/test_store_migrations.py checks).

Only portable SQL is used: CASE, LIKE with an
explicit ESCAPE, ``SELECT ... FOR UPDATE`` (dropped by SQLite, honoured by
PostgreSQL). On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so
that read-check-write sequences (the push cap, TOTP replay) are serialised.
All timestamps are naive UTC.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import itertools
import os
import re
import threading
import unicodedata
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    URL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    literal_column,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

metadata = MetaData()

ID = String(24)
SEARCHABLE = ("username", "email", "firstname", "lastname", "displayname")
# Row counters: 64-bit on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the (64-bit) rowid.
SERIAL_ID = BigInteger().with_variant(Integer, "sqlite")
# Text that is ordered or compared: code point order on PostgreSQL too (SQLite's BINARY), whatever
# the server's locale (migration 0003), so one query gives one order on both stores.
CTEXT = Text().with_variant(Text(collation="C"), "postgresql")
# Percent of a users page that bulk loads and inserts fill (PostgreSQL; see the users table).
USERS_FILLFACTOR = 90

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", CTEXT, nullable=False),
    Column("email", CTEXT, nullable=False),
    Column("firstname", CTEXT, nullable=False, default=""),
    Column("lastname", CTEXT, nullable=False, default=""),
    Column("displayname", CTEXT, nullable=False, default=""),
    # Case-folded copies for search and uniqueness: SQLite's lower() only knows ASCII.
    Column("username_ci", CTEXT, nullable=False),
    Column("email_ci", CTEXT, nullable=False),
    Column("firstname_ci", CTEXT, nullable=False, default=""),
    Column("lastname_ci", CTEXT, nullable=False, default=""),
    Column("displayname_ci", CTEXT, nullable=False, default=""),
    # Sort keys (see sort_key): accent- and case-folded, kept in step with the names by folded().
    Column("firstname_sort", CTEXT, nullable=False, default=""),
    Column("lastname_sort", CTEXT, nullable=False, default=""),
    Column("state", String(16), nullable=False, default="ACTIVATED"),
    Column("account_locked", Boolean, nullable=False, default=False),
    Column("created", DateTime, nullable=False),
    # TOTP: the secret never leaves the server except in the enrolment URI.
    Column("totp_secret", String(64)),
    Column("totp_status", String(24), nullable=False, default="NOT_ENROLLED"),
    Column("totp_last_step", BigInteger),
    Column("totp_failures", Integer, nullable=False, default=0),
    Column("push_status", String(24), nullable=False, default="NOT_ENROLLED"),
    Column("push_pending_until", DateTime),
    Column("webauthn_status", String(24), nullable=False, default="NOT_ENROLLED"),
    Column("mfa_exclusion", Boolean, nullable=False, default=False),
    Column("mfa_exclusion_until", DateTime),
    # Stop attack: new pushes are refused while push_blocked_until > now (compared in SQL).
    Column("push_blocked_until", DateTime),
    Column("push_blocked_by", Text),
    Column("push_blocked_at", DateTime),
    # Per-user biometric requirement for approvals (the global setting applies to everyone).
    Column("require_user_verification", Boolean, nullable=False, default=False),
    # PostgreSQL (migration 0012): room on each page for a row's next version, so that updates of unindexed
    # columns (TOTP's last step and failures) stay on the page, "HOT", and touch none of the 14 indexes.
    postgresql_with={"fillfactor": USERS_FILLFACTOR},
)
Index("ux_users_username_ci", users.c.username_ci, unique=True)
Index("ux_users_email_ci", users.c.email_ci, unique=True)
# SQLite only (migration 0013): a search's usernames-starting-with-the-word group read from the index alone.
Index("ix_users_username_ci_order", users.c.username_ci, users.c.username, users.c.id).ddl_if(dialect="sqlite")
# (column, id) pairs match the list's ORDER BY ..., id so paging walks an index.
Index("ix_users_username_id", users.c.username, users.c.id)
Index("ix_users_created_id", users.c.created, users.c.id)
Index("ix_users_push_status", users.c.push_status)
Index("ix_users_totp_status", users.c.totp_status)
Index("ix_users_lastname_sort", users.c.lastname_sort, users.c.firstname_sort, users.c.id)
Index("ix_users_firstname_sort", users.c.firstname_sort, users.c.lastname_sort, users.c.id)
Index("ix_users_push_blocked", users.c.push_blocked_until)
# Search words of 1-2 characters match as a prefix of a field: a range on these (migration 0005;
# username_ci and email_ci have their unique indexes).
Index("ix_users_firstname_ci", users.c.firstname_ci)
Index("ix_users_lastname_ci", users.c.lastname_ci)
Index("ix_users_displayname_ci", users.c.displayname_ci)
# PostgreSQL only (migration 0004, when pg_trgm can be created): substring search by trigrams.
Index(
    "ix_users_search_trgm",
    *(users.c[f"{name}_ci"] for name in SEARCHABLE),
    postgresql_using="gin",
    postgresql_ops={f"{name}_ci": "gin_trgm_ops" for name in SEARCHABLE},
).ddl_if(dialect="postgresql")

# SQLite only (migration 0005): the FTS5 trigram index over the folded columns and its shadow tables,
# kept by triggers (console/server/search_index.py). Not SQLAlchemy tables: the schema comparison skips them.
SEARCH_INDEX_TABLE = "users_search"


def include_in_schema_compare(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for comparing ``metadata`` with a database of ``dialect``.

    Leaves out indexes declared for the other store only (``Index(...).ddl_if(dialect=...)``) and the
    search index's own tables (an FTS5 virtual table and its shadow tables, which no metadata describes).
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name and (name == SEARCH_INDEX_TABLE or name.startswith(SEARCH_INDEX_TABLE + "_")):
            return False
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)

    return include


devices = Table(
    "devices",
    metadata,
    Column("id", ID, primary_key=True),
    # unique: the database itself guarantees one push device per user
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("state", String(16), nullable=False, default="active"),
    Column("make", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("os", String(16), nullable=False),
    Column("os_version", String(32), nullable=False),
    Column("app_version", String(32), nullable=False),
    Column("uv_enabled", Boolean, nullable=False, default=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("enrolled_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
    Column("diagnostics_opt_out", Boolean, nullable=False, default=False),
    Column("privacy_updated_at", DateTime),
    Column("notifications_enabled", Boolean, nullable=False, default=True),
    Column("diagnostics_dropped", Integer, nullable=False, default=0),
)
Index("ix_devices_opt_out", devices.c.diagnostics_opt_out, devices.c.id)

diagnostics = Table(
    "diagnostics",
    metadata,
    Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("payload", Text, nullable=False),
)

enrollment_codes = Table(
    "enrollment_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime),
)
Index("ix_enrollment_codes_user", enrollment_codes.c.user_id)

push_attempts = Table(
    "push_attempts",
    metadata,
    Column("id", ID, primary_key=True),
    # No foreign key: the history outlives a deleted user (then ``username`` keeps their name).
    Column("user_id", ID, nullable=False),
    Column("username", Text),  # set when the user is deleted; live users' names come from users
    Column("device_id", ID),
    Column("resource", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("fraud", Boolean, nullable=False, default=False),
    Column("user_verified", Boolean),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("responded_at", DateTime),
    Column("app", Text),
    Column("location", Text),
    Column("ip", String(64)),
)
Index(
    "ix_push_cap", push_attempts.c.user_id, push_attempts.c.resource, push_attempts.c.status, push_attempts.c.expires_at
)
Index("ix_push_user_created", push_attempts.c.user_id, push_attempts.c.created_at)
Index("ix_push_created", push_attempts.c.created_at)
Index("ix_push_status_created", push_attempts.c.status, push_attempts.c.created_at)
# A user's pending attempts are found through the user (a handful of rows), never through the status index:
# "pending" is rare in the statistics (a seeded or quiet table has none), so PostgreSQL estimated one pending
# row in all and read every pending attempt of every user for each admission (1M users, 11,000 pending:
# 1,400 pages and 1.7 ms per admission, 26-88 ms per batch). ``|| ''`` keeps the status index out of reach.
PUSH_IS_PENDING = (push_attempts.c.status + literal_column("''", String)) == literal_column("'pending'")

# ------------------------------------------------------------ throttling: lock-out back-off and rate limits (0007)
# Kept apart from the tables above (appended columns). TOTP failures are counted in a window that slides
# with each wrong code (totp_failure_at: the last one); a lock-out lasts until totp_locked_until, each one
# in a row longer (totp_lockouts). See services/lockout.py.
users.append_column(Column("totp_failure_at", DateTime))
users.append_column(Column("totp_locked_until", DateTime))
users.append_column(Column("totp_lockouts", Integer, nullable=False, default=0, server_default="0"))
# One counter per (route, subject, minute), subject "key:<key id>" or "ip:<address>": what every process
# counts against (services/ratelimit.py). Rows of past windows are pruned as new windows start.
rate_limit_hits = Table(
    "rate_limit_hits",
    metadata,
    Column("route", String(16), primary_key=True),
    Column("subject", String(80), primary_key=True),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("hits", Integer, nullable=False),
)
Index("ix_rate_limit_hits_window", rate_limit_hits.c.window_start)

settings = Table(
    "settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("doc", Text, nullable=False),
    Column("version", Integer, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
)

audit = Table(
    "audit",
    metadata,
    Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", CTEXT, nullable=False),
    Column("action", String(64).with_variant(String(64, collation="C"), "postgresql"), nullable=False),
    Column("target", CTEXT, nullable=False),
    Column("details", Text, nullable=False),
    # "admin": an API key did it; "device": the user's app/device did (actor "user:<username>").
    Column("kind", String(8), nullable=False, default="admin"),
    Column("target_name", Text),  # set when the target user is deleted, so the trail still names them
)
Index("ix_audit_at", audit.c.at)
Index("ix_audit_target_id", audit.c.target, audit.c.id)
Index("ix_audit_actor_id", audit.c.actor, audit.c.id)
Index("ix_audit_action_id", audit.c.action, audit.c.id)
Index("ix_audit_kind_id", audit.c.kind, audit.c.id)

# ------------------------------------------------------------ API key lifecycle, audit actor and chain (0008, 0009)
# Kept apart from the tables above (appended columns): migration 0008 adds the key and actor columns, 0009 the chain.


def _c_string(length: int) -> Any:
    """Text in code point order on PostgreSQL too, as the audit table's other columns (migration 0003)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


api_keys.append_column(Column("expires_at", DateTime))  # null: never expires
api_keys.append_column(Column("last_used_at", DateTime))  # written at most once a minute per key and process
api_keys.append_column(Column("resources", Text))  # JSON list a service key may push for; null: any resource
audit.append_column(Column("actor_key_id", _c_string(24)))  # the API key that did it (null: a device, the local CLI)
audit.append_column(Column("actor_role", _c_string(16)))
# Tamper evidence: hash = sha256(canonical event fields + prev_hash), prev_hash = the previous event's hash.
audit.append_column(Column("prev_hash", _c_string(64)))
audit.append_column(Column("hash", _c_string(64)))
# One row (id 1): the last event's id and hash. Appenders lock it (FOR UPDATE on PostgreSQL; SQLite's write
# lock serializes them anyway), and it shows whether events were cut off the end of the chain.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", SERIAL_ID, nullable=False),
    Column("last_hash", String(64), nullable=False),
)


# ------------------------------------------------------------ secrets at rest (0006)
# TOTP secrets are stored sealed (AES-GCM, console/server/secretbox.py): "v1:<key id>:<base64url>", wider than
# the plain secret. secret_keys lists the key ids (never a key) this database's secrets may be under, and
# which is current: new secrets are sealed under it.
users.c.totp_secret.type = String(160)
secret_keys = Table(
    "secret_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime, nullable=False),
    Column("is_current", Boolean, nullable=False, default=False),
)

SORTABLE_NAMES = ("firstname", "lastname")

# Letters that NFKD does not decompose into a base letter plus marks (Ł, ø, đ...).
_TRANSLIT = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "œ": "oe",
        "Œ": "OE",
        "þ": "th",
        "Þ": "TH",
    }
)


def sort_key(text: str) -> str:
    """A name as it sorts: accents folded (NFKD without combining marks) and case folded.

    ``Ó Briain`` -> ``o briain`` (among the Os), ``Müller`` -> ``muller``.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def folded(values: dict[str, Any]) -> dict[str, Any]:
    """The derived columns (case-folded search copies, name sort keys) for whichever fields ``values`` sets."""
    derived = {f"{k}_ci": str(values[k]).casefold() for k in SEARCHABLE if k in values and values[k] is not None}
    derived.update(
        {f"{k}_sort": sort_key(str(values[k])) for k in SORTABLE_NAMES if k in values and values[k] is not None}
    )
    return derived


ACCEPTED_FORMS = (
    "a SQLite file path (e.g. ./protect.db) or postgresql://user:password@host:port/dbname "
    "(also postgresql://user@/dbname?host=/socket/dir)"
)
PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Held while a PostgreSQL schema is checked or migrated: processes starting together take turns.
_SCHEMA_LOCK = 724_0001


class StoreError(Exception):
    """A one-line reason the database cannot be used (the CLI prints it without a traceback)."""

    exit_code = 1


class BadDatabaseUrl(StoreError):
    """``--db``/``PROTECT_DB`` is neither a SQLite path nor a PostgreSQL URL."""

    exit_code = 2


class CannotConnect(StoreError):
    """The database server does not answer (or refuses us)."""


class SchemaBehind(StoreError):
    """The database holds an older schema: ``protect-console db upgrade`` brings it up."""


class SchemaUnknown(StoreError):
    """The database is at a revision this code does not know (made by a newer release)."""


@dataclass(frozen=True)
class DbTarget:
    """Where the data lives: a SQLite file or a PostgreSQL database. ``str()`` never shows a password."""

    url: URL
    path: Path | None = None  # SQLite only

    @property
    def is_sqlite(self) -> bool:
        return self.path is not None

    @property
    def server(self) -> str:
        """HOST:PORT (or the socket directory and port) for messages about PostgreSQL."""
        # libpq: ?host= and ?port= override the URL's authority part.
        host = self.url.query.get("host") or self.url.host or "localhost"
        if isinstance(host, tuple):
            host = ",".join(host)
        port = self.url.query.get("port") or self.url.port or 5432
        return f"{host}:{port}"

    @property
    def value(self) -> str:
        """The whole path or URL, password included: for child processes, never for output."""
        if self.path is not None:
            return str(self.path)
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)


def parse_db(value: str | Path | DbTarget) -> DbTarget:
    """``--db``/``PROTECT_DB``: a SQLite file path or a PostgreSQL URL; anything else is BadDatabaseUrl."""
    if isinstance(value, DbTarget):
        return value
    if isinstance(value, Path):
        path = value.expanduser()
        return DbTarget(URL.create("sqlite", database=str(path)), path)
    text = str(value).strip()
    if not text:
        raise BadDatabaseUrl(f"--db is empty: give {ACCEPTED_FORMS}")
    scheme = _SCHEME.match(text)
    if scheme is None or len(scheme.group(1)) == 1:  # no scheme, or a Windows drive letter
        return parse_db(Path(text))
    name = scheme.group(1).lower()
    if name not in PG_SCHEMES:
        raise BadDatabaseUrl(f"unsupported database URL scheme {name + ':'!r}: --db takes {ACCEPTED_FORMS}")
    rest = text[scheme.end() :]
    if not rest.startswith("//"):
        raise BadDatabaseUrl(f"cannot parse the database URL (no // after {name}:): --db takes {ACCEPTED_FORMS}")
    try:
        url = make_url("postgresql+psycopg:" + rest)
        ports = [url.port] if url.port is not None else []
        if "port" in url.query:
            ports.append(int(str(url.query["port"])))
    except (ValueError, TypeError, ArgumentError) as exc:
        raise BadDatabaseUrl(f"cannot parse the database URL ({exc}): --db takes {ACCEPTED_FORMS}") from None
    if url.password == "":  # "user:@host": libpq's no password; shown without a "***"
        url = URL.create(
            url.drivername, username=url.username, host=url.host, port=url.port, database=url.database, query=url.query
        )
    if any(not 0 < p < 65536 for p in ports):
        raise BadDatabaseUrl(f"the database URL's port is out of range: --db takes {ACCEPTED_FORMS}")
    return DbTarget(url)


class Store:
    """A database handle: ``read()`` and ``write()`` give transactional connections; ``run_raw()`` is the hot path.

    On SQLite every write transaction (in any process using this code) first takes the *write gate*:
    a lock within the process and ``flock`` on a lock file beside the database, held until commit.
    Writers then queue on the kernel instead of meeting SQLite's busy handler, which sleeps up to
    100 ms between tries when another process holds the write lock.
    """

    def __init__(self, engine: Engine, target: DbTarget | None = None) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.target = target
        database = engine.url.database if self.is_sqlite else None
        self._lock_path = Path(database + ".lock") if database and database != ":memory:" else None
        self._gate = threading.Lock()
        self._gate_depth = threading.local()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._prepared: dict[object, Prepared] = {}
        self._numbered: dict[object, Numbered] = {}  # PostgreSQL, for LoopDriver
        self._numbering = itertools.count()  # their names: next() is atomic, loops in several threads share a store
        self._idle: list[Any] = []  # PostgreSQL: autocommit connections kept for run_raw
        self._idle_lock = threading.Lock()
        self._pinned = threading.local()  # SQLite: the event loop thread's own connection for run_raw
        self._all_pinned: list[Any] = []  # every thread's, to close on dispose
        self.caches: dict[str, Any] = {}  # per process: the services' small caches (keys, settings)
        self._dt_in = self._dt_out = None
        if self.is_sqlite:
            dt = DateTime().dialect_impl(engine.dialect)
            self._dt_in = dt.bind_processor(engine.dialect)
            self._dt_out = dt.result_processor(engine.dialect, None)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the write gate and the write lock from the start."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
                with self.write_gate(), conn.begin():
                    yield conn
            else:
                with conn.begin():
                    yield conn

    @contextmanager
    def write_gate(self) -> Iterator[None]:
        """SQLite: one writer at a time in this process, and (by flock) across processes. Re-entrant per thread."""
        if not self.is_sqlite:
            yield
            return
        depth = getattr(self._gate_depth, "n", 0)
        if depth:
            self._gate_depth.n = depth + 1
            try:
                yield
            finally:
                self._gate_depth.n = depth
            return
        with self._gate:
            fd = self._lock_file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._gate_depth.n = 1
            try:
                yield
            finally:
                self._gate_depth.n = 0
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self) -> int | None:
        if self._lock_path is None:
            return None
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            return self._lock_fd
        if not self._lock_path.parent.is_dir():
            return None  # the volume is gone: SQLite itself reports the outage
        try:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None  # no lock file (read-only folder): SQLite's own locking still applies
        self._lock_pid = os.getpid()
        return self._lock_fd

    # ------------------------------------------------------------ the hot path

    def prepare(self, statement: Any) -> Prepared:
        """``statement`` (SQLAlchemy Core, with ``bindparam`` names) compiled once for this database."""
        prepared = self._prepared.get(statement)
        if prepared is None:
            compiled = statement.compile(dialect=self.engine.dialect)
            order = tuple(compiled.positiontup) if compiled.positional else None
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            prepared = self._prepared[statement] = Prepared(str(compiled), order, defaults)
        return prepared

    def dt_in(self, value: Any) -> Any:
        """A datetime parameter as the store keeps it (SQLite: SQLAlchemy's text form)."""
        return self._dt_in(value) if self._dt_in is not None and value is not None else value

    def dt_out(self, value: Any) -> Any:
        return self._dt_out(value) if self._dt_out is not None and value is not None else value

    def run_raw(self, work: Callable[[RawConn], T]) -> T:
        """``work(conn)`` on a DB-API connection in autocommit mode, without SQLAlchemy's per-statement cost.

        For the two hot routes. ``conn.begin()`` opens a transaction (on SQLite under the write
        gate, ``BEGIN IMMEDIATE``); statements outside one commit by themselves. A connection that
        turns out dead on its first statement (PostgreSQL restarted meanwhile) is replaced and the
        work run once more; database errors come out as SQLAlchemy's (so the API answers 503).
        """
        dbapi = self._dbapi()
        for attempt in (1, 2):
            conn = self._take_raw()
            try:
                result = work(conn)
            except dbapi.Error as exc:
                self._retry_or_raise(conn, exc, attempt)
                continue
            except Exception:
                conn.give_back()  # a refusal (ApiProblem): any transaction was rolled back on the way out
                raise
            except BaseException:
                conn.discard()
                raise
            conn.give_back()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def run_steps(self, decision: Callable[[], Decision[T]]) -> T:
        """A hot decision written as steps (see :class:`Step`), run on a :meth:`run_raw` connection.

        ``decision`` makes the generator afresh: a connection found dead on its first round trip is
        replaced and the decision run again from the start."""
        return self.run_raw(lambda conn: conn.drive(decision()))

    async def run_steps_on_loop(self, decision: Callable[[], Decision[T]]) -> T:
        """PostgreSQL: :meth:`run_steps` driven from the event loop, without a thread per decision.

        Each statement is sent through libpq and its answer awaited on the connection's socket (see
        :class:`LoopDriver`): a decision in a thread cost a thread hop and the threads' fight for the GIL, a
        third of the service's CPU per TOTP check (bench/totp_verify.py, 2 workers, 8 clients, paired runs:
        0.65-0.84 -> 0.46-0.50 ms). Steps other than a single statement (a settings reload,
        a lock-out's durable transaction, a batch) still run in a thread. Same connections, same retry of a
        connection found dead on its first statement, same errors as :meth:`run_steps`."""
        loop = asyncio.get_running_loop()
        dbapi = self._dbapi()
        for attempt in (1, 2):
            idle = self._take_idle()
            conn = idle if idle is not None else await loop.run_in_executor(None, self._take_raw)
            driver = LoopDriver(self, conn, loop)
            try:
                result = await driver.drive(decision())
            except dbapi.Error as exc:
                self._retry_or_raise(conn, exc, attempt)
                continue
            except Exception:
                if driver.waiting:  # stopped with a statement's answer still to come: not reusable
                    conn.discard()
                else:
                    conn.give_back()  # a refusal (ApiProblem)
                raise
            except BaseException:
                conn.discard()  # cancelled, possibly with a statement in flight
                raise
            conn.give_back()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _dbapi(self) -> Any:
        """The DB-API module (sqlite3, psycopg): its ``Error`` classes."""
        return self.engine.dialect.dbapi

    def _retry_or_raise(self, conn: RawConn, exc: Exception, attempt: int) -> None:
        """After a database error on ``conn`` (discarded here): returns when the work is worth running once more,
        on another connection (a kept PostgreSQL one that failed on its first statement died while it waited:
        the server restarted meanwhile); else raises the error as SQLAlchemy's (so the API answers 503)."""
        conn.discard()
        dbapi = self._dbapi()
        if (
            attempt == 1
            and not self.is_sqlite
            and conn.reused
            and conn.statements <= 1
            and isinstance(exc, dbapi.OperationalError)
        ):
            return
        raise DBAPIError.instance(None, None, exc, dbapi.Error, hide_parameters=True) from None

    def _take_idle(self) -> RawConn | None:
        """PostgreSQL: an autocommit connection kept for run_raw, if one is idle."""
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        return RawConn(self, conn, None, reused=True) if conn is not None else None

    def _take_raw(self) -> RawConn:
        fairy: Any
        try:
            if self.is_sqlite:
                if asyncio._get_running_loop() is None:
                    fairy = self.engine.raw_connection()
                    return RawConn(self, fairy.driver_connection, fairy, reused=True)
                # The event loop's thread keeps one connection (no pool checkout per request), checked as
                # the pool's checkout would: still the file it opened (see health.py)?
                fairy = getattr(self._pinned, "fairy", None)
                if fairy is not None and (not fairy.is_valid or not still_the_file(self.engine, fairy)):
                    self._pinned.fairy = None
                    self._forget_pinned(fairy)
                    fairy.invalidate()
                    fairy = None
                if fairy is None:
                    fairy = self._pinned.fairy = self.engine.raw_connection()
                    fairy.driver_connection.execute(f"PRAGMA synchronous={HOT_ROUTES_SYNCHRONOUS}")
                    with self._idle_lock:
                        self._all_pinned.append(fairy)
                return RawConn(self, fairy.driver_connection, fairy, reused=True, pinned=True)
            idle = self._take_idle()
            if idle is not None:
                return idle
            fairy = self.engine.raw_connection()
            conn = fairy.driver_connection
            assert conn is not None  # a connection just made
            fairy.detach()  # kept by run_raw, not the pool (whose pre-ping costs a round trip per checkout)
            conn.autocommit = True
            conn.prepare_threshold = 0  # a handful of statements, run all the time: prepared on first use
            # The PostgreSQL form of HOT_ROUTES_SYNCHRONOUS (see there); this connection serves run_raw only.
            conn.execute(f"SET synchronous_commit = {HOT_ROUTES_SYNCHRONOUS_COMMIT}")
            return RawConn(self, conn, None, reused=False)
        except self._dbapi().Error as exc:
            raise DBAPIError.instance(None, None, exc, self._dbapi().Error, hide_parameters=True) from None

    def _forget_pinned(self, fairy: Any) -> None:
        with self._idle_lock:
            if fairy in self._all_pinned:
                self._all_pinned.remove(fairy)

    def _keep_idle(self, conn: Any) -> None:
        with self._idle_lock:
            if len(self._idle) < 16:
                self._idle.append(conn)
                return
        conn.close()

    def dispose(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
            pinned, self._all_pinned = self._all_pinned, []
        for fairy in pinned:
            try:
                fairy.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        for conn in idle:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        self.engine.dispose()


def still_the_file(engine: Engine, fairy: Any) -> bool:
    """What the pool checks at checkout when health.watch_sqlite_file watches the engine, for a kept connection."""
    if not getattr(engine, "_protect_watched", False):
        return True
    from .health import opened_this_file

    return opened_this_file(fairy.info, Path(str(engine.url.database)))


@dataclass(frozen=True)
class Prepared:
    sql: str
    order: tuple[str, ...] | None  # positional drivers (SQLite): parameter names in order
    defaults: dict[str, Any]  # literal values the statement's own expressions bound


T = TypeVar("T")


class RawConn:
    """One DB-API connection for :meth:`Store.run_raw`."""

    def __init__(self, store: Store, conn: Any, fairy: Any, *, reused: bool, pinned: bool = False) -> None:
        self.store, self.conn, self.fairy, self.reused, self.pinned = store, conn, fairy, reused, pinned
        self.statements = 0
        self._cursor: Any = None
        self._tx: Any = None  # SQLite: an open BEGIN step (the begin() context, entered)
        self._in_tx = False  # PostgreSQL: an open BEGIN step

    def _args(self, prepared: Prepared, params: dict[str, Any]) -> Any:
        values = {**prepared.defaults, **params} if prepared.defaults else params
        if prepared.order is not None:
            args = [values[name] for name in prepared.order]
            for i, value in enumerate(args):
                if isinstance(value, datetime):
                    args[i] = self.store.dt_in(value)
            return args
        # PostgreSQL text cannot hold NUL; as in the engine's hook, U+FFFD keeps it a value that matches nothing
        # (also in the arrays of a batch's statements).
        if any((type(v) is str and "\x00" in v) or (type(v) is list and _has_nul(v)) for v in values.values()):
            return {k: [_no_nul(x) for x in v] if type(v) is list else _no_nul(v) for k, v in values.items()}
        return values

    def execute(self, statement: Any, **params: Any) -> Any:
        prepared = self.store.prepare(statement)
        self.statements += 1
        if self._cursor is None:
            self._cursor = self.conn.cursor()  # one per use of the connection: a new one per statement costs
        self._cursor.execute(prepared.sql, self._args(prepared, params))
        return self._cursor

    def submit(self, statement: Any, **params: Any) -> Any:
        """``statement`` on a cursor of its own, returned to be read later: in a PostgreSQL pipeline, after the
        statements sent behind it (one round trip for all of them). Not counted in ``statements``: it reaches
        the server with the next one, so a dead connection fails on that one, before anything ran."""
        prepared = self.store.prepare(statement)
        cursor = self.conn.cursor()
        cursor.execute(prepared.sql, self._args(prepared, params))
        return cursor

    def one(self, statement: Any, **params: Any) -> Any:
        """The first row (a tuple), or None."""
        return self.execute(statement, **params).fetchone()

    @contextmanager
    def begin(self) -> Iterator[RawConn]:
        """A transaction: on SQLite under the write gate with ``BEGIN IMMEDIATE``."""
        if self.store.is_sqlite:
            with self.store.write_gate():
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.conn.rollback()
                    raise
                self.conn.commit()
        else:
            with self.conn.transaction():
                yield self

    def drive(self, decision: Decision[T]) -> T:
        """Run ``decision``'s steps on this connection and return what it returns."""
        value: Any = None
        try:
            while True:
                try:
                    op = decision.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                value = self._perform(op)
        finally:
            self._end_transaction()

    def _perform(self, op: Op) -> Any:
        if type(op) is Step:
            if op.writes and self._tx is None and self.store.is_sqlite:  # inside BEGIN the gate is held already
                with self.store.write_gate():
                    return _fetched(self.execute(op.statement, **op.params), op.fetch)
            return _fetched(self.execute(op.statement, **op.params), op.fetch)
        if type(op) is Batch:
            if self.store.is_sqlite:
                return [self._perform(step) for step in op.steps]
            self.statements += 1  # one round trip: a dead connection fails on it before anything ran
            with self.conn.pipeline() as pipeline:
                cursors = [self._queue(step, pipeline) for step in op.steps]
            return [_read(cursor, step) for cursor, step in zip(cursors, op.steps, strict=True)]
        if type(op) is Call:
            return op.work(self)
        return self._mark(op)

    def _queue(self, step: Step | Mark, pipeline: Any) -> Any:
        if type(step) is Step:
            return self.submit(step.statement, **step.params)
        if step is SYNC:
            pipeline.sync()
        else:
            self._mark(step)
        return None

    def _mark(self, mark: Any) -> None:
        if self.store.is_sqlite:
            if mark is BEGIN:
                tx = self.begin()
                tx.__enter__()
                self._tx = tx
            elif mark is COMMIT and self._tx is not None:
                tx, self._tx = self._tx, None
                tx.__exit__(None, None, None)
        elif mark is not SYNC:
            self.conn.execute(mark.sql)  # autocommit: BEGIN opens a transaction block, COMMIT ends it
            self._in_tx = mark is BEGIN

    def _end_transaction(self) -> None:
        """A decision that stopped inside its transaction (a refusal, an error): roll it back."""
        if self._tx is not None:
            tx, self._tx = self._tx, None
            stopped = RuntimeError("decision stopped")
            try:
                tx.__exit__(RuntimeError, stopped, None)  # rolls back, then re-raises ``stopped``
            except RuntimeError as exc:
                if exc is not stopped:
                    raise
        if self._in_tx:
            self._in_tx = False
            try:
                self.conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a broken connection: run_raw discards it
                pass

    def give_back(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self.pinned:
            return
        if self.fairy is not None:
            self.fairy.close()
        else:
            self.store._keep_idle(self.conn)

    def discard(self) -> None:
        if self.pinned:
            self.store._pinned.fairy = None
            self.store._forget_pinned(self.fairy)
        try:
            if self.fairy is not None:
                self.fairy.invalidate()
            else:
                self.conn.close()
        except Exception:  # noqa: BLE001 - already broken
            pass


@dataclass(frozen=True)
class Numbered:
    """A statement as libpq prepares it (``$1``...): its server-side name, text and parameter names in order."""

    name: bytes
    sql: bytes
    order: tuple[str, ...]
    types: tuple[int, ...]  # the parameters' type oids (0: the server infers it, from the cast the SQL has)
    defaults: dict[str, Any]


# The parameters the psycopg dialect does not cast in the SQL, typed as psycopg types them (bool, int, datetime).
_OIDS = {"BOOLEAN": 16, "SMALLINT": 21, "INTEGER": 23, "BIGINT": 20, "TIMESTAMP": 1114}


def _oid(sql_type: Any) -> int:
    try:
        name = str(sql_type.compile(dialect=_numbering_dialect()))
    except Exception:  # noqa: BLE001 - a type without a name (NullType): the server infers it
        return 0
    if name == "TIMESTAMP WITH TIME ZONE":
        return 1184
    return _OIDS.get(name.split(" ")[0], 0)


@functools.cache
def _numbering_dialect() -> Any:
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    return PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


def numbered(store: Store, statement: Any) -> Numbered:
    """``statement`` compiled once with ``$n`` parameters (the psycopg dialect's SQL, casts included)."""
    found = store._numbered.get(statement)
    if found is None:
        compiled = statement.compile(dialect=_numbering_dialect())
        order = tuple(compiled.positiontup)
        types = tuple(_oid(compiled.binds[name].type) for name in order)
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        name = f"protect_loop_{next(store._numbering)}".encode()
        found = store._numbered[statement] = Numbered(name, str(compiled).encode(), order, types, defaults)
    return found


def _as_text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form, by its exact type (the most frequent first): nothing else reaches
    a hot statement, anything else is a TypeError. NUL becomes U+FFFD, as in RawConn._args."""
    kind = type(value)
    if kind is str:
        chars: str = value
        return (chars.replace("\x00", "\ufffd") if "\x00" in chars else chars).encode()
    if kind is int:
        return b"%d" % value
    if value is None:
        return None
    if kind is datetime:
        moment: datetime = value
        return moment.isoformat().encode()
    if kind is bool:
        return b"t" if value else b"f"
    raise TypeError(f"a hot statement's parameter of type {kind.__name__}")


class LoopDriver:
    """Runs a decision's steps on one PostgreSQL connection from the event loop (:meth:`Store.run_steps_on_loop`).

    A statement is prepared once per connection under its :class:`Numbered` name, sent with libpq's
    ``PQsendQueryPrepared`` and its answer read as the socket becomes readable; rows are decoded by
    psycopg's own loaders, so they are what a cursor would return."""

    def __init__(self, store: Store, conn: RawConn, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.conn, self.loop = store, conn, loop
        self.waiting = False  # a statement sent whose answer is not read yet

    async def drive(self, decision: Decision[T]) -> T:
        value: Any = None
        try:
            while True:
                try:
                    op = decision.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                if type(op) is Step:
                    value = await self._step(op)
                else:  # rare: a settings reload, a lock-out's own transaction, a batch
                    value = await self.loop.run_in_executor(None, self.conn._perform, op)
        finally:
            self.conn._end_transaction()  # (the cursor a thread's step opened is closed by give_back/discard)

    async def _step(self, step: Step) -> Any:
        statement = numbered(self.store, step.statement)
        conn = self.conn.conn
        pgconn = conn.pgconn
        self.conn.statements += 1
        prepared = _PREPARED_ON.get(conn)
        if prepared is None:
            prepared = _PREPARED_ON[conn] = set()
        values = {**statement.defaults, **step.params} if statement.defaults else step.params
        args = [_as_text(values[name]) for name in statement.order]
        for _ in range(2):
            if statement.name not in prepared:
                pgconn.send_prepare(statement.name, statement.sql, param_types=statement.types)
                await self._answer(pgconn)
                prepared.add(statement.name)
            pgconn.send_query_prepared(statement.name, args)
            try:
                answer = await self._answer(pgconn)
                break
            except _undefined_statement():
                # psycopg deallocates every prepared statement after a ROLLBACK on the connection (a thread's
                # decision that stopped in its transaction): prepare again; the EXECUTE ran nothing.
                prepared.clear()
        else:
            raise AssertionError("prepared twice")  # pragma: no cover
        fetch = step.fetch
        if fetch == "rowcount":
            return int(answer.command_tuples or 0)
        if fetch == "none":
            return None
        loader = _LOADERS.get(conn)
        if loader is None:
            from psycopg.adapt import Transformer

            loader = _LOADERS[conn] = Transformer(conn)
        loader.set_pgresult(answer)
        if fetch == "one":
            return loader.load_row(0, tuple) if answer.ntuples else None
        return [loader.load_row(i, tuple) for i in range(answer.ntuples)]

    async def _answer(self, pgconn: Any) -> Any:
        """The statement's result once all of it has come (a server error raised as psycopg raises it)."""
        from psycopg import errors, pq

        self.waiting = True
        while pgconn.flush():  # psycopg's connections are non-blocking: what the socket did not take yet
            await self._writable(pgconn.socket)
        answer = error = None
        while True:
            while pgconn.is_busy():
                await self._readable(pgconn.socket)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status == pq.ExecStatus.FATAL_ERROR:
                error = errors.error_from_result(result, encoding="utf-8")
            answer = result
        self.waiting = False
        if error is not None:
            raise error
        return answer

    async def _readable(self, fd: int) -> None:
        ready = self.loop.create_future()
        self.loop.add_reader(fd, _set_ready, ready)
        try:
            await ready
        finally:
            self.loop.remove_reader(fd)

    async def _writable(self, fd: int) -> None:
        ready = self.loop.create_future()
        self.loop.add_writer(fd, _set_ready, ready)
        try:
            await ready
        finally:
            self.loop.remove_writer(fd)


def _undefined_statement() -> type[Exception]:
    from psycopg import errors

    return errors.InvalidSqlStatementName


def _set_ready(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Per DB-API connection: the Numbered names prepared on it, and psycopg's loaders for its results.
_PREPARED_ON: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
_LOADERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


# ------------------------------------------------------------ hot decisions as steps
#
# A hot decision (services/totp.py, services/push.py) is a generator that yields what it needs from the
# database and gets each answer back (Store.run_steps drives it on a run_raw connection): the rules say what
# they read and write, and the store decides how it travels (on PostgreSQL a Batch is one round trip).


class Step(NamedTuple):
    """One statement, and what the decision gets back: ``fetch`` "one" (the first row or None), "all" (the
    rows), "rowcount" or "none". ``writes``: on SQLite, outside a transaction, it takes the write gate."""

    statement: Any
    params: dict[str, Any]
    fetch: str
    writes: bool = False


def read_one(statement: Any, **params: Any) -> Step:
    return Step(statement, params, "one")


def write_count(statement: Any, **params: Any) -> Step:
    """A write: its rowcount."""
    return Step(statement, params, "rowcount", writes=True)


def write_rows(statement: Any, **params: Any) -> Step:
    """A write with RETURNING: its rows."""
    return Step(statement, params, "all", writes=True)


def write_only(statement: Any, **params: Any) -> Step:
    return Step(statement, params, "none", writes=True)


class Mark(NamedTuple):
    sql: str


# BEGIN and COMMIT: on SQLite BEGIN IMMEDIATE under the write gate, held to COMMIT; a decision that stops
# between them (a refusal, an error) is rolled back. SYNC, in a Batch on PostgreSQL: the statements before
# it commit by themselves (their implicit transaction ends there) in the same round trip.
BEGIN, COMMIT, SYNC = Mark("BEGIN"), Mark("COMMIT"), Mark("")


class Batch(NamedTuple):
    """Steps sent together, their results in a list (None for a Mark): one round trip on PostgreSQL."""

    steps: tuple[Step | Mark, ...]


class Call(NamedTuple):
    """``work(conn)`` with the decision's :class:`RawConn` (a settings reload on a version change, a lock-out's
    durable transaction of its own): its result."""

    work: Callable[[RawConn], Any]


Op = Step | Batch | Mark | Call
Decision = Generator[Op, Any, T]


def _fetched(cursor: Any, fetch: str) -> Any:
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    if fetch == "rowcount":
        return int(cursor.rowcount)
    return None


def _read(cursor: Any, step: Step | Mark) -> Any:
    if cursor is None or type(step) is not Step:
        return None
    try:
        return _fetched(cursor, step.fetch)
    finally:
        cursor.close()


# Durability of an acknowledged write on SQLite (WAL mode). FULL syncs the WAL to disk at every commit, so a
# write the service answered 2xx survives a power cut or an OS crash, not only a crash of the process; NORMAL
# syncs at checkpoints only (a process crash loses nothing; a power cut can lose the last commits, never
# corrupt the file). The cost of FULL is one fsync per commit: bench/durability.py measures it.
SQLITE_SYNCHRONOUS_ENV = "PROTECT_SQLITE_SYNCHRONOUS"
SQLITE_SYNCHRONOUS_LEVELS = ("FULL", "NORMAL")  # the first is the default


# The hot routes' own connection (TOTP verify, push: replay marks, failure counts, rate-limit counts, push
# attempts) commits with NORMAL: safe against a crash of the process, and against power loss up to the last
# FULL commit of any other connection (the WAL sync takes the earlier frames with it). What a power cut could
# undo here is moot: a TOTP code (90 s at most) does not outlive a reboot. FULL on this connection halved the
# TOTP checks (bench/durability.py: about 3,400 against 1,400/s); every other write stays FULL.
HOT_ROUTES_SYNCHRONOUS = "NORMAL"
# The same trade on PostgreSQL: run_raw's connections (they write only what the SQLite one does) commit with
# synchronous_commit=off, so a commit returns once its WAL record is written, without waiting for the flush
# (the WAL writer flushes within 3 x wal_writer_delay, 600 ms by default). A crash of the database server can
# undo the hot routes' last commits (never half of one: the data stays consistent), and any durable commit
# (every other connection: admin writes, resets, lock-outs, audit events) flushes the WAL up to itself, so it
# takes the earlier hot-route commits with it. Each per-key and per-address rate-limit counter row is locked
# from its UPSERT to its commit: with the flush inside the commit, every check of one API key waited for the
# previous one's flush (196 TOTP checks/s with fsync on; bench/totp_verify.py).
HOT_ROUTES_SYNCHRONOUS_COMMIT = "off"


def sqlite_synchronous() -> str:
    """The ``PRAGMA synchronous`` level for the service's SQLite connections: FULL unless
    ``PROTECT_SQLITE_SYNCHRONOUS`` says NORMAL; any other value is a StoreError naming the variable."""
    raw = os.environ.get(SQLITE_SYNCHRONOUS_ENV, "").strip()
    level = raw.upper() or SQLITE_SYNCHRONOUS_LEVELS[0]
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        allowed = " or ".join(SQLITE_SYNCHRONOUS_LEVELS)
        raise StoreError(f"{SQLITE_SYNCHRONOUS_ENV}={raw!r} is not a synchronous level: use {allowed}")
    return level


def _use_wal(cursor: Any, attempts: int = 200) -> None:
    """Put the file in WAL mode (a property of the file, kept once set).

    Switching needs the file to itself, and SQLite answers "database is locked" at once, without waiting
    for the busy timeout, when other connections race to switch it too: processes opening a new file
    together (measured: 1 start in 60 of four at once failed). So: only when not WAL yet, and retried briefly.
    """
    import sqlite3
    import time

    for attempt in range(attempts):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.04 * attempt / attempts)


def _sqlite_engine(path: Path) -> Engine:
    synchronous = sqlite_synchronous()
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 30, "check_same_thread": False},
        # One connection per busy worker thread; SQLite serialises writers itself.
        # Parameters can hold hashes of keys and tokens: keep them out of error logs.
        hide_parameters=True,
        pool_size=8,
        max_overflow=32,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        _use_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Secrets at rest: deleted and overwritten content (a reset TOTP secret) is zeroed in the file, not left
        # in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _private_file(path: Path) -> None:
    """A new SQLite database is created 0600 in a folder created 0700 (SQLite gives its -wal and -shm files the
    database file's mode, and the lock file is made 0600). An existing folder or file keeps the mode its owner
    gave it: the service does not change permissions it did not set."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if str(path) == ":memory:" or path.exists():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass  # another process made it meanwhile
    except OSError:
        pass  # SQLite reports why it cannot open the file


def _has_nul(values: list[Any]) -> bool:
    return any(type(x) is str and "\x00" in x for x in values)


def _no_nul(value: object) -> object:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    engine = create_engine(
        url,
        connect_args=connect_args,
        hide_parameters=True,
        # Like SQLite's: one connection per busy worker thread (uvicorn's pool has 40).
        pool_size=8,
        max_overflow=32,
        # A connection that died with a database restart is replaced, not handed out.
        pool_pre_ping=True,
    )

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> Any:
        # PostgreSQL text cannot hold NUL (SQLite can). Stored text never has one (the models refuse
        # it), so a NUL can only come in a lookup (an id in a URL): U+FFFD keeps it a value that
        # matches nothing, as on SQLite, instead of an error.
        if isinstance(parameters, dict):
            if any(isinstance(v, str) and "\x00" in v for v in parameters.values()):
                parameters = {k: _no_nul(v) for k, v in parameters.items()}
        elif (
            isinstance(parameters, (list, tuple))
            and parameters
            and isinstance(parameters[0], dict)
            and any(isinstance(v, str) and "\x00" in v for p in parameters for v in p.values())
        ):
            parameters = [{k: _no_nul(v) for k, v in p.items()} for p in parameters]
        return statement, parameters

    return engine


HUGE_PAGES_FROM = 2**30  # shared_buffers from which huge pages are advised


def buffer_advice(conn: Connection, need: int | None = None, huge_from: int = HUGE_PAGES_FROM) -> str | None:
    """PostgreSQL: a warning when ``shared_buffers`` is smaller than ``need`` bytes (by default the users table
    with its indexes and TOAST, what a search reads); None: large enough, or SQLite (whose pages are the OS
    cache's). With 1,000,000 users (about 1 GB of them) under the 128 MB default, a search of a middling
    word read most of its ~15,000 pages from the OS one syscall at a time: 55-72 ms against 23-27 ms with
    the database's pages in shared buffers (``tanaka``, ``karen``; bench/api_search.py, 2026-12-03).

    Else, from ``huge_from`` bytes of it, when the server runs without huge pages (``huge_pages_status``,
    PostgreSQL 17+): each new connection then maps every buffer it reads one 4 kB page at a time, and a
    first search in a new process paid ~6,500 page faults, 57 ms against 21-28 ms with huge pages
    (``karen`` counted, 2026-12-04)."""
    if conn.dialect.name != "postgresql":
        return None
    row = conn.exec_driver_sql(
        "SELECT pg_size_bytes(current_setting('shared_buffers')), pg_total_relation_size('users'), "
        "current_setting('shared_buffers'), current_setting('huge_pages_status', true), "
        "current_setting('shared_memory_size_in_huge_pages', true)"
    ).one()
    buffers, users_bytes, shown = int(row[0]), int(row[1]), str(row[2])
    need = users_bytes if need is None else need
    if buffers < need:
        return (
            f"PostgreSQL shared_buffers is {shown}, less than the users table and its indexes "
            f"({need / 2**20:,.0f} MB): searches read their pages from the operating system, 2-3x slower at a "
            f"million users. PostgreSQL's guidance for a dedicated server is a quarter of its memory."
        )
    if buffers >= huge_from and row[3] == "off":
        return (
            f"PostgreSQL runs its {shown} of shared_buffers without huge pages: each new connection maps the "
            f"buffers it reads 4 kB at a time, which can double a new process's first searches. Reserve them on "
            f"the database's host (vm.nr_hugepages = {row[4]}, PostgreSQL's shared_memory_size_in_huge_pages) "
            f"and restart it."
        )
    return None


def _engine(target: DbTarget) -> Engine:
    if target.path is not None:
        _private_file(target.path)
        return _sqlite_engine(target.path)
    return _postgres_engine(target.url)


def connect_reason(exc: BaseException) -> str:
    """psycopg's connection error as a short reason ("Connection refused", "database ... does not exist")."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = lines[0] if lines else type(orig).__name__
    reason = re.sub(r"^connection (failed|is bad):\s*", "", reason)
    reason = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", reason)
    return reason.rstrip(".") or type(orig).__name__


def _connected(target: DbTarget) -> Engine:
    """An engine that has answered once, or CannotConnect/StoreError with one line."""
    engine = _engine(target)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        engine.dispose()
        if target.is_sqlite:
            raise StoreError(f"cannot open database {target}: {connect_reason(exc)}") from None
        raise CannotConnect(f"cannot connect to PostgreSQL at {target.server}: {connect_reason(exc)}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine


# ------------------------------------------------------------------ schema (Alembic)

MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config(conn: Connection) -> Any:  # an alembic Config
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def head_revision() -> str:
    """The revision this code needs (the newest migration)."""
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None  # the migrations folder ships with the code
    return head


@functools.cache
def known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(s.revision for s in ScriptDirectory.from_config(_alembic_config(None)).walk_revisions())  # type: ignore[arg-type]


@dataclass(frozen=True)
class SchemaState:
    revision: str | None  # None: an empty database (none of our tables)
    recorded: bool  # False: the revision was inferred (a database made before migrations)
    head: str

    @property
    def empty(self) -> bool:
        return self.revision is None

    @property
    def current(self) -> bool:
        return self.revision == self.head and self.recorded

    @property
    def known(self) -> bool:
        return self.revision is None or self.revision in known_revisions()


def schema_state(conn: Connection) -> SchemaState:
    """Where a database stands. A database made before migrations (our tables, no
    ``alembic_version``) is recognised by its columns: 0001, or 0002 when it already has
    the push-block columns (written by the in-place upgrade that preceded migrations)."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    head = head_revision()
    if "alembic_version" in tables:
        revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        if revision is not None:
            return SchemaState(revision, True, head)
    if not tables & set(metadata.tables):
        return SchemaState(None, True, head)
    columns = {c["name"] for c in inspector.get_columns("users")} if "users" in tables else set()
    return SchemaState("0002" if "push_blocked_until" in columns else "0001", False, head)


def _lock_schema(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")


def _upgrade(conn: Connection, state: SchemaState) -> None:
    from alembic import command

    config = _alembic_config(conn)
    if state.revision is not None and not state.recorded:
        command.stamp(config, state.revision)
    command.upgrade(config, "head")


def open_store(db: str | Path | DbTarget) -> Store:
    """Open the store at ``db`` (a SQLite path or a PostgreSQL URL) for serving.

    An empty database gets the schema through the migrations. A database behind the code is
    refused (SchemaBehind, naming ``protect-console db upgrade``): data is never migrated
    implicitly.
    """
    target = parse_db(db)
    engine = _connected(target)
    store = Store(engine, target)
    try:
        with store.write() as conn:
            _lock_schema(conn)
            state = schema_state(conn)
            if state.empty:
                _upgrade(conn, state)
            elif not state.known:
                raise SchemaUnknown(
                    f"the database {target} is at schema revision {state.revision}, which this version does not know "
                    f"(made by a newer release?): run that release, or a newer one"
                )
            elif not state.current:
                raise SchemaBehind(
                    f"the database {target} is behind this version (schema {state.revision}, needs {state.head}): "
                    f"run `protect-console db upgrade` with the same --db first"
                )
            _load_secret_keys(store, conn)
    except BaseException:
        store.dispose()
        raise
    return store


def _load_secret_keys(store: Store, conn: Connection) -> None:
    """The keys the database's TOTP secrets are sealed under, checked (secretbox.SecretKeyError names them)."""
    from . import secretbox

    secretbox.attach(store, conn)


def upgrade_database(db: str | Path | DbTarget) -> tuple[SchemaState, SchemaState]:
    """``protect-console db upgrade``: bring ``db`` to the code's schema. Safe to run again."""
    target = parse_db(db)
    engine = _connected(target)
    store = Store(engine, target)
    try:
        with store.write() as conn:
            _lock_schema(conn)
            before = schema_state(conn)
            if not before.known:
                raise SchemaUnknown(
                    f"the database {target} is at schema revision {before.revision}, which this version does not "
                    f"know (made by a newer release?): nothing changed"
                )
            if not before.current:
                _upgrade(conn, before)
            after = schema_state(conn)
    finally:
        store.dispose()
    return before, after


def database_state(db: str | Path | DbTarget) -> SchemaState:
    """``protect-console db current``: where ``db`` stands (nothing is changed)."""
    target = parse_db(db)
    engine = _connected(target)
    try:
        with engine.connect() as conn:
            return schema_state(conn)
    finally:
        engine.dispose()
