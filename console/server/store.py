"""The service's store: SQLAlchemy Core tables on SQLite (WAL) today, PostgreSQL later.

Only portable SQL is used: expression indexes on lower(), CASE, LIKE with an
explicit ESCAPE, ``SELECT ... FOR UPDATE`` (dropped by SQLite, honoured by
PostgreSQL). On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so
that read-check-write sequences (the push cap, TOTP replay) are serialised.
All timestamps are naive UTC.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
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
    bindparam,
    create_engine,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

ID = String(24)

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("firstname", Text, nullable=False, default=""),
    Column("lastname", Text, nullable=False, default=""),
    Column("displayname", Text, nullable=False, default=""),
    # Case-folded copies for search and uniqueness: SQLite's lower() only knows ASCII.
    Column("username_ci", Text, nullable=False),
    Column("email_ci", Text, nullable=False),
    Column("firstname_ci", Text, nullable=False, default=""),
    Column("lastname_ci", Text, nullable=False, default=""),
    Column("displayname_ci", Text, nullable=False, default=""),
    # Sort keys (see sort_key): accent- and case-folded, kept in step with the names by folded().
    Column("firstname_sort", Text, nullable=False, default=""),
    Column("lastname_sort", Text, nullable=False, default=""),
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
)
Index("ux_users_username_ci", users.c.username_ci, unique=True)
Index("ux_users_email_ci", users.c.email_ci, unique=True)
# (column, id) pairs match the list's ORDER BY ..., id so paging walks an index.
Index("ix_users_username_id", users.c.username, users.c.id)
Index("ix_users_created_id", users.c.created, users.c.id)
Index("ix_users_push_status", users.c.push_status)
Index("ix_users_totp_status", users.c.totp_status)
Index("ix_users_lastname_sort", users.c.lastname_sort, users.c.firstname_sort, users.c.id)
Index("ix_users_firstname_sort", users.c.firstname_sort, users.c.lastname_sort, users.c.id)
Index("ix_users_push_blocked", users.c.push_blocked_until)

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
    Column("id", Integer, primary_key=True, autoincrement=True),
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
Index("ix_push_cap", push_attempts.c.user_id, push_attempts.c.resource, push_attempts.c.status, push_attempts.c.expires_at)
Index("ix_push_user_created", push_attempts.c.user_id, push_attempts.c.created_at)
Index("ix_push_created", push_attempts.c.created_at)
Index("ix_push_status_created", push_attempts.c.status, push_attempts.c.created_at)

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
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
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


SEARCHABLE = ("username", "email", "firstname", "lastname", "displayname")
SORTABLE_NAMES = ("firstname", "lastname")

# Letters that NFKD does not decompose into a base letter plus marks (Ł, ø, đ...).
_TRANSLIT = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "đ": "d", "Đ": "D",
                           "ı": "i", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "TH"})


def sort_key(text: str) -> str:
    """A name as it sorts: accents folded (NFKD without combining marks) and case folded.

    ``Ó Briain`` -> ``o briain`` (among the Os), ``Müller`` -> ``muller``.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def folded(values: dict) -> dict:
    """The derived columns (case-folded search copies, name sort keys) for whichever fields ``values`` sets."""
    derived = {f"{k}_ci": str(values[k]).casefold() for k in SEARCHABLE if k in values and values[k] is not None}
    derived.update(
        {f"{k}_sort": sort_key(str(values[k])) for k in SORTABLE_NAMES if k in values and values[k] is not None}
    )
    return derived


class Store:
    """A database handle: ``read()`` and ``write()`` give transactional connections."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the write lock from the start."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_engine(path: Path) -> Engine:
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
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def open_store(path: str | Path) -> Store:
    """Open (creating if needed) the SQLite store at ``path``."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(_sqlite_engine(path))
    with store.write() as conn:
        metadata.create_all(conn)
        upgrade(conn)
    return store


def _literal_default(column: Column) -> str:
    value = column.default.arg if column.default is not None else None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def upgrade(conn: Connection) -> list[str]:
    """Bring a database made by an earlier version up to these tables, in place (SQLite).

    ``create_all`` makes missing tables but never changes existing ones, so: add missing
    columns (backfilling the name sort keys), create missing indexes, and rebuild
    ``push_attempts`` without its old cascade to ``users`` (attempt history outlives a
    deleted user). Returns what was done, for logs and tests.
    """
    done: list[str] = []
    inspector = inspect(conn)
    for table in (users, push_attempts, audit):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in have]
        for column in missing:
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(conn.dialect)}"
            if not column.nullable:
                ddl += f" NOT NULL DEFAULT {_literal_default(column)}"
            conn.exec_driver_sql(ddl)
            done.append(f"{table.name}.{column.name}")
        if table is users and {"firstname_sort", "lastname_sort"} & {c.name for c in missing}:
            rows = conn.execute(select(users.c.id, users.c.firstname, users.c.lastname)).all()
            if rows:
                conn.execute(
                    update(users).where(users.c.id == bindparam("uid")).values(
                        firstname_sort=bindparam("fs"), lastname_sort=bindparam("ls")
                    ),
                    [{"uid": r.id, "fs": sort_key(r.firstname), "ls": sort_key(r.lastname)} for r in rows],
                )
    if any(fk.get("referred_table") == "users" for fk in inspector.get_foreign_keys(push_attempts.name)):
        conn.exec_driver_sql("ALTER TABLE push_attempts RENAME TO push_attempts_old")
        for index in inspector.get_indexes("push_attempts_old"):
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index['name']}")
        push_attempts.create(conn)
        names = ", ".join(c.name for c in push_attempts.columns)
        conn.exec_driver_sql(f"INSERT INTO push_attempts ({names}) SELECT {names} FROM push_attempts_old")
        conn.exec_driver_sql("DROP TABLE push_attempts_old")
        done.append("push_attempts without the cascade to users")
    for table in (users, push_attempts, audit):
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    return done
