"""Issue 9 item 5: the audit trail is hash-chained, on both stores.

`protect-console audit verify` accepts an intact chain and names the first broken event when one is edited,
deleted or moved, or when events are cut off the end; appends from two processes at once keep one chain;
migration 0009 chains the events a database already has.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import text

from console.models import Role
from console.server.clock import Clock
from console.server.services.audit import verify_chain
from console.server.services.keys import create_key
from console.server.store import open_store
from tests.helpers import run_cli
from tests.serve_helpers import Served, client, create_user
from tests.server.test_store_migrations import migrate_to, raw_store

AUDIT = "/api/v2/protect/audit"


async def some_history(url: str, key: str, prefix: str, users: int = 4, settings: bool = True) -> None:
    """Audited changes of several kinds."""
    async with client(url, key) as admin:
        for n in range(users):
            user = await create_user(admin, f"{prefix}{n}")
            assert (await admin.put(f"/api/systemusers/{user['_id']}", json={"lastname": f"L{n}"})).status_code == 200
        if not settings:
            return
        got = await admin.get("/api/v2/protect/settings")
        changed = await admin.patch(
            "/api/v2/protect/settings", json={"push": {"timeoutSeconds": 75}}, headers={"if-match": got.headers["etag"]}
        )
        assert changed.status_code == 200, changed.text


def verify(capsys, db: str) -> tuple[int, str]:
    code, out, err = run_cli(capsys, "audit", "verify", "--db", db)
    return code, out + err


def event_ids(store) -> list[int]:
    with store.read() as conn:
        return list(conn.execute(text("SELECT id FROM audit ORDER BY id")).scalars())


@pytest.fixture
def chained(make_backend, capsys):
    """A service with some audited history whose chain verifies."""
    b = make_backend(users=0)
    asyncio.run(some_history(b.url, b.admin_key, "chain."))
    code, said = verify(capsys, b.db)
    assert code == 0 and "intact" in said, said
    return b


async def test_an_intact_chain_verifies_and_the_api_shows_each_hash(chained, capsys) -> None:
    b = chained
    with b.store.read() as conn:
        report = verify_chain(conn)
        stored = dict(conn.execute(text("SELECT id, hash FROM audit")).all())
    assert report.ok and report.checked == len(stored) >= 9
    async with client(b.url, b.admin_key) as admin:
        shown = (await admin.get(AUDIT, params={"limit": 100})).json()["results"]
    assert {e["id"]: e["hash"] for e in shown} == stored
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["hash"]) for e in shown)
    code, out, _err = run_cli(capsys, "audit", "verify", "--db", b.db, "--json")
    assert code == 0 and '"ok": true' in out and f'"checked": {len(stored)}' in out


def test_an_edited_event_is_named(chained, capsys) -> None:
    ids = event_ids(chained.store)
    victim = ids[3]
    with chained.store.write() as conn:
        conn.execute(
            text("UPDATE audit SET details = :d WHERE id = :i"), {"d": '{"after":{"lastname":"Forged"}}', "i": victim}
        )
    code, said = verify(capsys, chained.db)
    assert code == 1 and f"broken at event {victim}:" in said and "do not match its hash" in said, said


def test_an_edited_actor_with_its_hash_recomputed_breaks_the_next_link(chained, capsys) -> None:
    """Rewriting an event and its own hash is not enough: the next event's link no longer matches."""
    from sqlalchemy import select

    from console.server.services.audit import event_hash
    from console.server.store import audit

    ids = event_ids(chained.store)
    victim = ids[2]
    with chained.store.write() as conn:
        row = conn.execute(select(audit).where(audit.c.id == victim)).one()
        forged = {**row._mapping, "actor": "somebody-else"}
        conn.execute(
            text("UPDATE audit SET actor = :a, hash = :h WHERE id = :i"),
            {"a": "somebody-else", "h": event_hash(forged, row.prev_hash), "i": victim},
        )
    code, said = verify(capsys, chained.db)
    assert code == 1 and f"broken at event {ids[3]}:" in said and f"event {victim}'s hash" in said, said


def test_a_deleted_event_is_named_by_the_one_after_it(chained, capsys) -> None:
    ids = event_ids(chained.store)
    with chained.store.write() as conn:
        conn.execute(text("DELETE FROM audit WHERE id = :i"), {"i": ids[4]})
    code, said = verify(capsys, chained.db)
    assert code == 1 and f"broken at event {ids[5]}:" in said and "deleted" in said, said


def test_reordered_events_are_named(chained, capsys) -> None:
    """Two events swap places (all their columns, hashes included): the first of them no longer links."""
    ids = event_ids(chained.store)
    first, second = ids[2], ids[3]
    columns = "at, actor, actor_key_id, actor_role, action, target, details, kind, prev_hash, hash"
    with chained.store.write() as conn:
        a = conn.execute(text(f"SELECT {columns} FROM audit WHERE id = :i"), {"i": first}).one()._mapping
        b = conn.execute(text(f"SELECT {columns} FROM audit WHERE id = :i"), {"i": second}).one()._mapping
        sets = ", ".join(f"{c} = :{c}" for c in a)
        conn.execute(text(f"UPDATE audit SET {sets} WHERE id = :row"), {**b, "row": first})
        conn.execute(text(f"UPDATE audit SET {sets} WHERE id = :row"), {**a, "row": second})
    code, said = verify(capsys, chained.db)
    assert code == 1 and f"broken at event {first}:" in said, said


def test_events_cut_off_the_end_are_noticed(chained, capsys) -> None:
    ids = event_ids(chained.store)
    with chained.store.write() as conn:
        conn.execute(text("DELETE FROM audit WHERE id >= :i"), {"i": ids[-2]})
    code, said = verify(capsys, chained.db)
    assert code == 1 and f"broken at event {ids[-1]}:" in said and "at the end were deleted" in said, said


async def test_appends_from_two_processes_at_once_keep_one_chain(make_backend, tmp_path, capsys) -> None:
    b = make_backend(users=0)
    other = Served(db=b.db, home=tmp_path / "other", workers=2).start()
    done = asyncio.Event()
    verified: list = []

    def verify_once():
        with b.store.read() as conn:
            return verify_chain(conn)

    async def verify_meanwhile() -> None:
        """Verifying while events are appended never sees a broken chain (one snapshot per verification)."""
        while not done.is_set():
            verified.append(await asyncio.to_thread(verify_once))

    async def writers() -> None:
        try:
            await asyncio.gather(
                *(
                    some_history(url, b.admin_key, f"race{n}.{side}.", users=3, settings=False)
                    for n in range(3)
                    for side, url in (("a", b.url), ("b", other.url))
                )
            )
        finally:
            done.set()

    try:
        await asyncio.gather(writers(), verify_meanwhile())
    finally:
        other.stop()
    assert verified and [r.problem for r in verified if not r.ok] == []
    with b.store.read() as conn:
        report = verify_chain(conn)
        count = conn.execute(text("SELECT count(*) FROM audit")).scalar()
    assert report.ok, report.problem
    assert report.checked == count >= 6 * (3 + 3)  # 6 writers x (3 creates + 3 updates), and the admin key's creation
    code, said = verify(capsys, b.db)
    assert code == 0, said


def test_migration_0009_chains_the_events_a_database_already_has(new_db, capsys) -> None:
    db = new_db(migrated=False)
    migrate_to(db, "0008")
    store = raw_store(db)
    try:
        with store.write() as conn:
            now = Clock().now()
            for n in range(5):
                conn.execute(
                    text(
                        "INSERT INTO audit (at, actor, action, target, details, kind, actor_key_id, actor_role) "
                        "VALUES (:at, 'old-admin', 'user.update', :t, :d, 'admin', NULL, NULL)"
                    ),
                    {"at": now, "t": f"user{n}", "d": f'{{"n":{n}}}'},
                )
    finally:
        store.dispose()
    migrate_to(db, "head")  # through 0009 (the chain) and any migration after it: the CLI needs the head
    code, said = verify(capsys, db)
    assert code == 0 and "5 events" in said, said
    # And new events go on from there.
    upgraded = open_store(db)
    try:
        create_key(upgraded, "after-upgrade", Role.ADMIN)
        with upgraded.read() as conn:
            report = verify_chain(conn)
        assert report.ok and report.checked == 6
        with upgraded.write() as conn:
            conn.execute(text("UPDATE audit SET target = 'someone' WHERE target = 'user0'"))
        with upgraded.read() as conn:
            assert verify_chain(conn).broken_id == min(event_ids(upgraded))
    finally:
        upgraded.dispose()


def test_record_is_the_single_entry_point_of_audit_events() -> None:
    """Every service writes events through audit.record (which chains them), never by inserting itself."""
    from pathlib import Path

    services = Path(__file__).resolve().parents[2] / "console" / "server"
    offenders = [
        p.name
        for p in services.rglob("*.py")
        if p.name != "audit.py" and "migrations" not in p.parts and re.search(r"insert\(\s*audit\b", p.read_text())
    ]
    assert offenders == []
