"""Migration 0012 (room on the users table's pages, PostgreSQL): up with data, down and up again, on both stores."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from console.server.seed import seed_directory
from console.server.store import USERS_FILLFACTOR, Store, _alembic_config, _connected, open_store, parse_db


def _raw(db: str) -> Store:
    target = parse_db(db)
    return Store(_connected(target), target)


def _migrate(db: str, action: str, revision: str) -> None:
    store = _raw(db)
    try:
        with store.write() as conn:
            getattr(command, action)(_alembic_config(conn), revision)
    finally:
        store.dispose()


def _state(db: str) -> tuple[str, list[tuple], list[str] | None]:
    """(revision, every user's id and TOTP state, users' storage options on PostgreSQL)."""
    store = _raw(db)
    try:
        with store.read() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            users = [
                tuple(r) for r in conn.execute(text("SELECT id, totp_secret, totp_last_step FROM users ORDER BY id"))
            ]
            options = None
            if not store.is_sqlite:
                options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'users'")).scalar()
        return revision, users, options
    finally:
        store.dispose()


def test_0012_upgrades_a_table_with_users_and_downgrades(new_db) -> None:
    db = new_db(migrated=False)
    _migrate(db, "upgrade", "0011")
    store = _raw(db)
    try:
        seed_directory(store, 30)
    finally:
        store.dispose()
    revision, users, options = _state(db)
    assert (revision, len(users), options) == ("0011", 30, None)

    _migrate(db, "upgrade", "0012")  # on PostgreSQL: the table rewritten with room on its pages
    after = _state(db)
    assert after[:2] == ("0012", users)
    sqlite = parse_db(db).is_sqlite
    assert after[2] == (None if sqlite else [f"fillfactor={USERS_FILLFACTOR}"])

    _migrate(db, "downgrade", "0011")
    assert _state(db) == ("0011", users, None)

    _migrate(db, "upgrade", "0012")
    assert _state(db)[:2] == ("0012", users)
    _migrate(db, "upgrade", "head")
    open_store(db).dispose()  # the code accepts the schema it leaves
