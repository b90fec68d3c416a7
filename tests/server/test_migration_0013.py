"""Migration 0013 (the folded usernames' index with the names and ids, SQLite): up with data, down and up again."""

from __future__ import annotations

from sqlalchemy import inspect

from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.store import open_store, parse_db
from tests.server.test_migration_0012 import _migrate, _raw, _state

INDEX = "ix_users_username_ci_order"


def _indexes(db: str) -> set[str]:
    store = _raw(db)
    try:
        with store.read() as conn:
            return {i["name"] for i in inspect(conn).get_indexes("users")}
    finally:
        store.dispose()


def _search(db: str, word: str) -> list[str]:
    store = open_store(db)
    try:
        with store.read() as conn:
            page = user_service.list_users(conn, user_service.datetime.now(), skip=0, limit=50, search=word)
        return [u.username for u in page.results]
    finally:
        store.dispose()


def test_0013_upgrades_with_users_and_downgrades(new_db) -> None:
    db = new_db(migrated=False)
    _migrate(db, "upgrade", "0012")
    store = _raw(db)
    try:
        seed_directory(store, 60, rng_seed=4)
    finally:
        store.dispose()
    revision, users, _ = _state(db)
    assert revision == "0012" and INDEX not in _indexes(db)

    _migrate(db, "upgrade", "0013")
    assert _state(db)[:2] == ("0013", users)
    assert (INDEX in _indexes(db)) == parse_db(db).is_sqlite  # PostgreSQL: nothing to do
    found = _search(db, users and "a")

    _migrate(db, "downgrade", "0012")
    assert _state(db)[:2] == ("0012", users) and INDEX not in _indexes(db)
    _migrate(db, "upgrade", "head")
    assert _search(db, "a") == found and found  # the same results with the index as without
