"""Migrations on both stores: the schema comes only from Alembic, upgrades keep the data.

Runs on SQLite and on PostgreSQL (conftest's ``store_kind``/``new_db``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from console.models import Role
from console.server import secretbox
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.services.audit import record
from console.server.services.common import Principal
from console.server.services.devices import create_enrollment_code
from console.server.services.keys import create_key
from console.server.store import (
    SchemaBehind,
    SchemaUnknown,
    Store,
    _alembic_config,
    _connected,
    database_state,
    head_revision,
    include_in_schema_compare,
    metadata,
    open_store,
    parse_db,
    sort_key,
    upgrade_database,
)
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
ADMIN = Principal("k1", "test-admin", Role.ADMIN)
# The tables of the first migration, parents first.
HEAD = "0013"
TABLES_0001 = ("users", "devices", "diagnostics", "enrollment_codes", "push_attempts", "settings", "api_keys", "audit")


def raw_store(db: str) -> Store:
    """A connection to ``db`` without any schema check (to build old databases)."""
    target = parse_db(db)
    return Store(_connected(target), target)


def migrate_to(db: str, revision: str) -> None:
    store = raw_store(db)
    try:
        with store.write() as conn:
            command.upgrade(_alembic_config(conn), revision)
    finally:
        store.dispose()


def revision_of(db: str) -> str | None:
    return database_state(db).revision


def schema_differences(db: str) -> list:
    store = raw_store(db)
    try:
        with store.read() as conn:
            # One store's own indexes and the search index's FTS5 tables are not compared.
            for_this_dialect = include_in_schema_compare(conn.dialect.name)
            context = MigrationContext.configure(conn, opts={"include_object": for_this_dialect})
            return compare_metadata(context, metadata)
    finally:
        store.dispose()


def rows(store: Store, name: str, columns: list[str]) -> list[tuple]:
    with store.read() as conn:
        order = "code_hash" if name == "enrollment_codes" else "id"
        return [tuple(r) for r in conn.execute(text(f"SELECT {', '.join(columns)} FROM {name} ORDER BY {order}"))]


def columns_of(store: Store, name: str) -> list[str]:
    with store.read() as conn:
        return [c["name"] for c in inspect(conn).get_columns(name)]


def test_an_empty_database_gets_the_whole_schema_from_the_migrations(new_db) -> None:
    db = new_db(migrated=False)
    store = open_store(db)  # what serve and demo do
    store.dispose()
    assert revision_of(db) == head_revision() == HEAD
    assert database_state(db).recorded
    assert schema_differences(db) == []  # store.metadata is exactly what the migrations made


def test_db_upgrade_creates_then_is_a_no_op_and_db_current_says_where_it_stands(new_db, capsys, store_kind) -> None:
    db = new_db(migrated=False)
    if store_kind == "sqlite":
        Path(db).touch()  # an empty file is an empty SQLite database (a missing one is "no database")
    code, out, err = run_cli(capsys, "db", "current", "--db", db)
    assert code == 0 and "empty" in out, (out, err)
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", db)
    assert code == 0 and f"Created the schema (revision {HEAD})" in out, (out, err)
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", db)
    assert code == 0 and "nothing to do" in out, (out, err)
    code, out, err = run_cli(capsys, "db", "current", "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out) | {"db": None} == {
        "db": None,
        "revision": HEAD,
        "head": HEAD,
        "upToDate": True,
        "recorded": True,
    }
    assert schema_differences(db) == []


def plain_secret(store: Store, user_id: str, stored: str | None) -> str | None:
    return None if stored is None else secretbox.reveal(store, user_id, stored)


def make_first_version_database(new_db) -> tuple[str, Store]:
    """A database at migration 0001 holding the data of a seeded current one (0001's columns of it).

    Returns (the 0001 database, the seeded source store to compare with)."""
    source = open_store(new_db())
    now = Clock().now()
    seed_directory(source, 60, rng_seed=5)
    for first, last in (("Øyvind", "Ó Briain"), ("Zoë", "Łukasiewicz"), ("ann", "van der Berg")):
        user_service.create_user(
            source,
            user_service.SystemUserCreate(
                username=f"{first}.{last}".replace(" ", "").lower(),
                email=f"{sort_key(first)}@example.org",
                firstname=first,
                lastname=last,
                displayname=f"{first} {last}",
            ),
            ADMIN,
            now,
        )
    create_key(source, "ci", Role.HELPDESK)
    with source.read() as conn:
        some_user = conn.execute(text("SELECT id FROM users ORDER BY id")).scalar()
    create_enrollment_code(source, some_user, ADMIN, now, "http://127.0.0.1:1")
    with source.write() as conn:
        record(conn, ADMIN, "settings.update", "settings", {"x": 1}, now)
        conn.execute(text("INSERT INTO settings (id, doc, version) VALUES (1, '{}', 3)"))

    old = new_db(migrated=False)
    migrate_to(old, "0001")
    target = raw_store(old)
    try:
        with source.read() as src, target.write() as dst:
            for name in TABLES_0001:
                cols = [c["name"] for c in inspect(dst).get_columns(name)]
                data = [dict(r._mapping) for r in src.execute(text(f"SELECT {', '.join(cols)} FROM {name}"))]
                if name == "users":  # a first-version database held TOTP secrets in plain text (0006 seals them)
                    data = [row | {"totp_secret": plain_secret(source, row["id"], row["totp_secret"])} for row in data]
                if data:
                    dst.execute(
                        text(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                        data,
                    )
            if dst.dialect.name == "postgresql":  # inserted ids: move the sequences past them
                for name in ("audit", "diagnostics"):
                    dst.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"(SELECT coalesce(max(id), 1) FROM {name}))"
                        )
                    )
    finally:
        target.dispose()
    return old, source


def test_a_first_version_database_with_data_is_refused_by_serve_then_upgraded_intact(new_db) -> None:
    old, source = make_first_version_database(new_db)
    try:
        before_store = raw_store(old)
        old_columns = {name: columns_of(before_store, name) for name in TABLES_0001}
        before = {name: rows(before_store, name, old_columns[name]) for name in TABLES_0001}
        before_store.dispose()
        assert len(before["users"]) == 63 and before["push_attempts"] and before["audit"] and before["api_keys"]

        with pytest.raises(SchemaBehind, match=rf"schema 0001, needs {HEAD}\): run `protect-console db upgrade`"):
            open_store(old)
        assert revision_of(old) == "0001"  # refused, and nothing changed

        first, last = upgrade_database(old)
        assert (first.revision, last.revision) == ("0001", HEAD)
        assert schema_differences(old) == []
        store = open_store(old)
    finally:
        source.dispose()
    try:
        for name in TABLES_0001:  # every row of every table, every first-version column, unchanged
            assert before[name], f"{name} is empty: the test would prove nothing"
            after = rows(store, name, old_columns[name])
            if name == "users":  # the secrets sealed by 0006: the same secrets once opened
                at = old_columns[name].index("totp_secret")
                assert all(r[at] is None or r[at].startswith("v1:") for r in after)
                after = [(*r[:at], plain_secret(store, r[0], r[at]), *r[at + 1 :]) for r in after]
            assert after == before[name], name
        with store.read() as conn:
            names = conn.execute(text("SELECT firstname, lastname, firstname_sort, lastname_sort FROM users")).all()
            assert all(fs == sort_key(f) and ls == sort_key(last) for f, last, fs, ls in names)
            assert conn.execute(text("SELECT DISTINCT kind FROM audit")).scalars().all() == ["admin"]
            assert conn.execute(text("SELECT count(*) FROM users WHERE require_user_verification")).scalar_one() == 0
            listed = user_service.list_users(conn, Clock().now(), skip=0, limit=200, sort="lastname").results
        keys = [(sort_key(u.lastname), sort_key(u.firstname), u.id) for u in listed]
        assert keys == sorted(keys) and len(keys) == 63
        assert [u.lastname for u in listed].index("Ó Briain") < [u.lastname for u in listed].index("van der Berg")
        # 0002 dropped the cascade: deleting a user keeps their push history.
        with store.read() as conn:
            victim, attempts = conn.execute(
                text("SELECT user_id, count(*) FROM push_attempts GROUP BY user_id ORDER BY count(*) DESC, user_id")
            ).first()
        user_service.delete_user(store, victim, ADMIN, Clock().now())
        with store.read() as conn:
            kept = conn.execute(text("SELECT count(*) FROM push_attempts WHERE user_id = :u"), {"u": victim}).scalar()
        assert kept == attempts
        # New rows still get ids after the old ones.
        user_service.create_user(
            store,
            user_service.SystemUserCreate(
                username="after.upgrade", email="after@example.org", firstname="A", lastname="U", displayname="A U"
            ),
            ADMIN,
            Clock().now(),
        )
    finally:
        store.dispose()


def test_serve_refuses_a_database_behind_the_code_with_one_line(new_db, tmp_path) -> None:
    old = new_db(migrated=False)
    migrate_to(old, "0001")
    result = subprocess.run(
        [sys.executable, "-m", "console", "serve", "--db", old, "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "protect-console db upgrade" in lines[0] and "0001" in lines[0]
    assert result.stdout == ""  # no key printed: nothing was written
    assert revision_of(old) == "0001"


def test_a_database_from_a_newer_release_is_refused_and_not_touched(new_db, capsys) -> None:
    db = new_db()
    store = raw_store(db)
    with store.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    store.dispose()
    with pytest.raises(SchemaUnknown, match="f00d"):
        open_store(db)
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", db)
    assert code == 1 and "f00d" in err and "nothing changed" in err, (out, err)
    assert revision_of(db) == "f00d"


def test_processes_starting_together_on_an_empty_database_create_the_schema_once(new_db) -> None:
    db = new_db(migrated=False)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_store(db).dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert revision_of(db) == HEAD and schema_differences(db) == []


def test_db_current_on_a_missing_file_creates_nothing(tmp_path, capsys, store_kind) -> None:
    if store_kind != "sqlite":
        pytest.skip("a SQLite file")
    code, _out, err = run_cli(capsys, "db", "current", "--db", str(tmp_path / "nope" / "x.db"))
    assert code == 1 and "no database at" in err
    assert list(tmp_path.iterdir()) == []


def test_a_current_database_made_before_migrations_is_recorded_not_changed(new_db, capsys) -> None:
    """Files written by the release just before migrations already have 0002's columns: recognised as 0002
    (not 0001, whose migration would fail on them) and brought to the head."""
    db = new_db()
    store = open_store(db)
    seed_directory(store, 20, rng_seed=2)
    with store.write() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    users_before = rows(store, "users", columns_of(store, "users"))
    store.dispose()
    with pytest.raises(SchemaBehind):
        open_store(db)
    code, out, err = run_cli(capsys, "db", "current", "--db", db)
    assert code == 0 and "schema 0002, made before migrations" in out and "db upgrade" in out, (out, err)
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", db)
    assert code == 0 and f"(made before migrations) from schema 0002 to {HEAD}" in out, (out, err)
    store = open_store(db)
    try:
        assert rows(store, "users", columns_of(store, "users")) == users_before
    finally:
        store.dispose()


def test_names_and_audit_fields_order_by_code_point_on_both_stores(new_db, store_kind) -> None:
    """Migration 0003: on PostgreSQL these columns collate "C" (SQLite's order), whatever the server's locale."""
    store = open_store(new_db())
    try:
        now = Clock().now()
        for i, last in enumerate(("Vanberg", "van der Berg", "Zed", "alpha", "_under", "Éclair", "van-dam")):
            user_service.create_user(
                store,
                user_service.SystemUserCreate(
                    username=f"u{i}", email=f"u{i}@example.org", firstname="F", lastname=last, displayname=last
                ),
                ADMIN,
                now,
            )
        with store.read() as conn:
            listed = [u.lastname for u in user_service.list_users(conn, now, skip=0, limit=50, sort="lastname").results]
            if store_kind == "postgresql":
                collations = conn.execute(
                    text(
                        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                        "WHERE table_name IN ('users', 'audit') AND data_type IN ('text', 'character varying') "
                        "AND column_name NOT IN ('id', 'state', 'totp_secret', 'totp_status', 'push_status', "
                        "'webauthn_status', 'push_blocked_by', 'details', 'kind', 'target_name')"
                    )
                ).all()
                assert collations and all(c == "C" for _, _, c in collations), collations
        assert listed == sorted(listed, key=lambda n: (sort_key(n), sort_key("F")))
        assert listed.index("van der Berg") < listed.index("van-dam") < listed.index("Vanberg")
    finally:
        store.dispose()


def test_substring_search_can_use_the_trigram_index_on_postgresql(new_db, store_kind) -> None:
    """Migration 0004: the users search (LIKE '%term%' over the folded columns) reads a pg_trgm GIN index."""
    if store_kind != "postgresql":
        pytest.skip("a PostgreSQL index (SQLite scans)")
    from sqlalchemy import func, or_, select

    from console.server.store import users

    store = open_store(new_db())
    try:
        seed_directory(store, 300, rng_seed=4)
        with store.read() as conn:
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # a small table: ask whether it *can*
            fields = ("username", "email", "firstname", "lastname")
            query = (
                select(func.count())
                .select_from(users)
                .where(or_(*(users.c[f"{f}_ci"].like("%mar%", escape="\\") for f in fields)))
            )
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            expected = conn.execute(query).scalar_one()
            listed = user_service.list_users(conn, Clock().now(), skip=0, limit=500, search="MAR")
        assert "ix_users_search_trgm" in plan, plan
        assert listed.totalCount == expected > 0
    finally:
        store.dispose()
