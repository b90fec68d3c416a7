"""What the seed's bulk load must guarantee, on both stores (conftest runs ``test_seed*`` on SQLite and PostgreSQL).

The same directory for a given seed as ever (and whichever process makes the rows), every index of
the migrated schema there and usable afterwards, a re-seed on top of existing users, and search
finding the seeded users through the API.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime

import pytest
from sqlalchemy import DateTime, select, text

from console.client import ProtectClient
from console.server import seed
from console.server.clock import ManualClock
from console.server.store import (
    Store,
    devices,
    diagnostics,
    include_in_schema_compare,
    metadata,
    open_store,
    push_attempts,
    users,
)
from tests.server.test_store_migrations import schema_differences

SEEDED = (users, devices, push_attempts, diagnostics)
SECRET = {"totp_secret", "token_hash"}  # random on every run: only whether there is one is compared
NOW = datetime(2026, 11, 30, 9, 15, 0, 250_000)
# seed_directory(300 users, rng_seed=7) at NOW, as the seed made it before the bulk load (commit 6d0960b).
FINGERPRINT_300_7 = "176e2f46ea688f8355e34467106b13ea2a6cab9a9035aaf76f1b3ee816a26c0c"
# Columns added since (migration 0007's lock-out state): not in the digest; a seed leaves them at their defaults.
ADDED_SINCE = {"totp_failure_at": None, "totp_locked_until": None, "totp_lockouts": 0}


def fingerprint(store: Store) -> str:
    """A digest of every seeded row (in id order), with the secrets as present/absent."""
    digest = hashlib.sha256()
    with store.read() as conn:
        for table in SEEDED:
            columns = [
                c
                for c in table.c
                if not (table is diagnostics and c.name == "id") and not (table is users and c.name in ADDED_SINCE)
            ]
            order = [table.c.id] if table is not diagnostics else [table.c.device_id, table.c.received_at]
            for row in conn.execute(select(*columns).order_by(*order)):
                values = [(v is not None) if c.name in SECRET else v for c, v in zip(columns, row, strict=True)]
                digest.update(repr((table.name, values)).encode())
    return digest.hexdigest()


def seeded(db: str, users_count: int, rng_seed: int) -> tuple[Store, dict]:
    store = open_store(db)
    return store, seed.seed_directory(store, users_count, rng_seed=rng_seed, clock=ManualClock(NOW))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 60, 64, 255, 256, 99_998])
def test_the_draw_helpers_make_exactly_the_draws_of_random(n: int) -> None:
    sequence = list(range(n))
    ours, plain = random.Random(n), random.Random(n)
    pick, ranged, below = seed._picker(ours, sequence), seed._ranged(ours, -3, n - 3), seed._ranged(ours, 0, n)
    for _ in range(300):
        assert pick() == plain.choice(sequence)
        assert ranged() == plain.randrange(-3, n - 3)
        assert below() == plain.randrange(n)
    assert ours.getstate() == plain.getstate()


@pytest.mark.parametrize("apart", [False, True], ids=["in-process", "child-process"])
def test_a_seed_gives_the_directory_it_always_gave(new_db, monkeypatch, apart: bool) -> None:
    # The child process takes over from APART_FROM users; a low bar runs it on a small directory.
    monkeypatch.setattr(seed, "APART_FROM", 1 if apart else 10**9)
    store, report = seeded(new_db(), 300, 7)
    try:
        assert (report["users"], report["devices"], report["pushAttempts"], report["diagnosticsReports"]) == (
            300,
            182,
            494,
            51,
        )
        assert fingerprint(store) == FINGERPRINT_300_7
        with store.read() as conn:
            added = conn.execute(select(*(users.c[name] for name in ADDED_SINCE)).distinct()).all()
        assert added == [tuple(ADDED_SINCE.values())]
    finally:
        store.dispose()


def index_names(store: Store) -> set[str]:
    """The database's own indexes (and, on SQLite, the search index's tables and triggers)."""
    with store.read() as conn:
        if store.is_sqlite:
            query = "SELECT type || ':' || name FROM sqlite_master WHERE type IN ('index', 'trigger', 'table')"
        else:
            query = "SELECT 'index:' || indexname FROM pg_indexes WHERE schemaname = current_schema()"
        return {name for (name,) in conn.exec_driver_sql(query)}


def assert_indexes_usable(store: Store) -> None:
    """Every declared index of the seeded tables that the database has is valid and answers a lookup."""
    with store.read() as conn:
        present = {name.partition(":")[2] for name in index_names(store)}
        declared = [ix for table in SEEDED for ix in table.indexes if ix.name in present]
        assert {ix.name for ix in declared} >= {"ux_users_username_ci", "ux_users_email_ci", "ix_push_cap"}
        if store.is_sqlite:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"  # indexes hold exactly the rows
            for ix in declared:
                first = next(iter(ix.columns))
                plan = conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN SELECT 1 FROM {ix.table.name} INDEXED BY {ix.name} WHERE {first.name} = ?",
                    ("x",),
                ).all()
                assert any(ix.name in row[-1] for row in plan), (ix.name, plan)
            return
        invalid = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE NOT (i.indisvalid AND i.indisready AND i.indislive)"
        ).all()
        assert invalid == []
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = " ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN SELECT id FROM users WHERE username_ci = 'x'"))
        assert "ux_users_username_ci" in plan, plan
        if "ix_users_search_trgm" in present:
            plan = " ".join(
                r[0] for r in conn.exec_driver_sql("EXPLAIN SELECT id FROM users WHERE lastname_ci LIKE '%%arci%%'")
            )  # psycopg's %%
            assert "ix_users_search_trgm" in plan, plan


def test_after_a_bulk_seed_the_schema_and_every_index_are_as_migrated(new_db) -> None:
    db = new_db()
    store = open_store(db)
    try:
        before = index_names(store)
        report = seed.seed_directory(store, 400, rng_seed=2)
        assert report["users"] == 400
        assert index_names(store) == before
        assert schema_differences(db) == []
        assert_indexes_usable(store)
    finally:
        store.dispose()


def test_sqlite_timestamps_are_stored_as_sqlalchemy_stores_them(new_db, store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("PostgreSQL stores timestamps as timestamps")
    store, _ = seeded(new_db(), 50, 3)
    try:
        with store.read() as conn:
            processor = DateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
            for table, column in ((users, "created"), (devices, "enrolled_at"), (push_attempts, "responded_at")):
                raw = conn.exec_driver_sql(f"SELECT {column} FROM {table.name} WHERE {column} IS NOT NULL").scalars()
                parsed = conn.execute(select(table.c[column]).where(table.c[column].is_not(None))).scalars()
                assert list(raw) == [processor(value) for value in parsed]
    finally:
        store.dispose()


async def found(api: ProtectClient, term: str) -> set[str]:
    return {u.username for u in (await api.search_users(term, limit=100)).results}


async def test_a_reseed_on_top_adds_users_and_search_finds_every_round(make_backend) -> None:
    backend = make_backend(users=300, seed=5)
    async with ProtectClient(backend.url, backend.admin_key) as api:
        first = (await api.list_users(limit=40)).results
        # Doubling the directory: a bulk load over existing users (indexes dropped and rebuilt).
        again = seed.seed_directory(backend.store, 300, rng_seed=5)
        # A small addition: rows go through the live indexes (and the search index's own upkeep).
        small = seed.seed_directory(backend.store, 25, rng_seed=5)
        assert (again["users"], small["users"]) == (300, 25)
        everyone = (await api.list_users(limit=1)).totalCount
        assert everyone == 625
        usernames: list[str] = []
        for skip in range(0, everyone, 100):
            usernames += [u.username for u in (await api.list_users(skip=skip, limit=100, sort="created")).results]
        assert len(usernames) == len(set(usernames)) == 625  # re-seeds pick unused usernames
        with backend.store.read() as conn:
            newest = conn.execute(select(users.c.username).order_by(users.c.id)).scalars().all()
        latest = [u for u in newest if u not in {f.username for f in first}]
        for user in [*first[:5], next(u for u in (await api.list_users(limit=100, sort="-created")).results)]:
            assert user.username in await found(api, user.username[1:]), user.username
            assert user.username in await found(api, user.lastname[1:5] if len(user.lastname) > 4 else user.lastname)
        for username in latest[-5:]:
            assert username in await found(api, username[1:]), username
    assert_indexes_usable(backend.store)
    assert schema_differences(backend.db) == []


async def test_search_finds_seeded_users_by_any_name_field(make_backend) -> None:
    backend = make_backend(users=500, seed=9)
    async with ProtectClient(backend.url, backend.admin_key) as api:
        sample = (await api.list_users(limit=100, sort="-created")).results[::20]
        for user in sample:
            assert user.username in await found(api, user.username), user.username
            assert user.username in await found(api, user.email.split("@")[0][1:]), user.email
            if len(user.lastname) >= 3:
                page = await api.search_users(user.lastname.casefold(), limit=1)
                assert page.totalCount >= 1 and page.results


@pytest.mark.parametrize("apart", [False, True], ids=["in-process", "child-process"])
def test_a_failed_bulk_load_leaves_the_database_as_it_was(new_db, monkeypatch, apart: bool) -> None:
    monkeypatch.setattr(seed, "APART_FROM", 1 if apart else 10**9)
    store, _ = seeded(new_db(), 40, 1)
    try:
        before, indexes = fingerprint(store), index_names(store)
        insert, calls = seed._insert, []

        def failing(conn, batch):
            calls.append(batch.table.name)
            if batch.table is push_attempts:
                raise RuntimeError("disk full")
            insert(conn, batch)

        monkeypatch.setattr(seed, "_insert", failing)
        with pytest.raises(RuntimeError, match="disk full"):
            seed.seed_directory(store, 200, rng_seed=1)  # doubles the directory: a bulk load
        assert "users" in calls
        assert fingerprint(store) == before  # one transaction: indexes, search index and rows as they were
        assert index_names(store) == indexes
        assert_indexes_usable(store)
    finally:
        store.dispose()


def test_a_failed_first_load_leaves_the_database_empty_and_usable_and_a_second_try_works(new_db, monkeypatch) -> None:
    """SQLite's first load (no users yet) runs with the rollback journal in memory, not the WAL: a failure
    still rolls back, and the file is back in WAL mode afterwards, whether the load failed or not."""
    monkeypatch.setattr(seed, "APART_FROM", 10**9)
    store = open_store(new_db())
    try:
        before, indexes = fingerprint(store), index_names(store)
        insert, journals = seed._insert, []

        def failing(conn, batch):
            if conn.dialect.name == "sqlite":
                journals.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
            if batch.table is push_attempts:
                raise RuntimeError("disk full")
            insert(conn, batch)

        monkeypatch.setattr(seed, "_insert", failing)
        with pytest.raises(RuntimeError, match="disk full"):
            seed.seed_directory(store, 200, rng_seed=1)
        assert fingerprint(store) == before and index_names(store) == indexes
        assert_indexes_usable(store)
        if store.is_sqlite:
            assert set(journals) == {"memory"}
        monkeypatch.setattr(seed, "_insert", insert)
        assert seed.seed_directory(store, 200, rng_seed=1)["users"] == 200
        assert_indexes_usable(store)
        if store.is_sqlite:
            with store.read() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.dispose()


def test_a_bad_user_count_is_refused_before_anything_is_written(new_db) -> None:
    store = open_store(new_db())
    try:
        with pytest.raises(ValueError, match="users"):
            seed.seed_directory(store, -1)
        assert seed.seed_directory(store, 0)["users"] == 0
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 0
        include = include_in_schema_compare(store.engine.dialect.name)  # this store's declared indexes
        declared = {ix.name for ix in metadata.tables["users"].indexes if include(ix, ix.name, "index", False, None)}
        assert declared <= {n.partition(":")[2] for n in index_names(store)} | {"ix_users_search_trgm"}
    finally:
        store.dispose()
