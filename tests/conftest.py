"""Shared fixtures: a real Protect service on 127.0.0.1 over a real SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from console.models import Role
from console.server.app import create_app
from console.server.clock import Clock, ManualClock
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key
from console.server.store import Store, open_store

SEED_USERS = 300
SEED = 7


@dataclass
class Backend:
    """A running service. ``stop``/``restart`` simulate an outage on the same port."""

    db_path: Path
    store: Store
    clock: Clock
    server: ServerThread
    admin_key: str = ""
    seed_report: dict = field(default_factory=dict)

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
def make_backend(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(*, users: int = SEED_USERS, clock: Clock | None = None, seed: int = SEED) -> Backend:
        clock = clock or Clock()
        db_path = tmp_path / f"protect-{len(started)}.db"
        store = open_store(db_path)
        report = seed_directory(store, users, rng_seed=seed, clock=clock) if users else {}
        server = ServerThread(create_app(store, clock=clock))
        server.start()
        backend = Backend(db_path=db_path, store=store, clock=clock, server=server, seed_report=report)
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
