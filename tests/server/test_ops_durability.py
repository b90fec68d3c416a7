"""Durability (issue 9 item 7): every write `serve` acknowledged survives a kill -9 of all its processes.

Writers create users and change them through the API of a real `serve --workers 2`, recording each write
answered 2xx; the whole process group is killed with SIGKILL while writes are in flight; a new `serve`
on the same database must show every acknowledged write, and on SQLite the file must pass
``PRAGMA integrity_check``. The audit chain must still verify (no half-written event).

What this cannot test: kill -9 stops the processes, not the machine. Whatever a process handed the OS
(SQLite's WAL in the page cache; PostgreSQL's server is not killed at all) survives it at any
``synchronous`` level, so this shows that the service acknowledges only committed writes and leaves a
consistent database after an abrupt stop, not that a write survives a power cut. That is what SQLite's
``synchronous=FULL`` (the default, checked below) is for, and what bench/durability.py prices.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from console.server.services.audit import ChainReport, verify_chain
from console.server.store import SQLITE_SYNCHRONOUS_ENV, StoreError, open_store
from tests.serve_helpers import Served, client

WRITERS = 8
KILL_AFTER = 60  # acknowledged writes before the kill; the writers' next requests are in flight when it lands


async def _writer(
    http: httpx.AsyncClient, n: int, created: dict[str, str], renamed: dict[str, int], enough: asyncio.Event
) -> None:
    """Create a user, then rename it over and over (lastname ``v<i>``), until the service stops answering.

    ``created``: user id -> username of each acknowledged creation; ``renamed``: user id -> the highest
    ``i`` acknowledged, which is also how many renames were (one at a time, in order). Any answer that
    arrives must be a success: the service is up until the kill."""
    user_id = ""
    for i in range(10_000):
        try:
            if not user_id:
                name = f"durable.w{n}"
                response = await http.post("/api/systemusers", json={"username": name, "email": f"{name}@ops.example"})
                assert response.status_code == 201, response.text
                user_id = response.json()["_id"]
                created[user_id] = name
            else:
                response = await http.put(f"/api/systemusers/{user_id}", json={"lastname": f"v{i}"})
                assert response.status_code == 200, response.text
                renamed[user_id] = i
        except httpx.TransportError:
            return  # the kill: this request's fate is unknown, and nothing after it was sent
        if _acknowledged(created, renamed) >= KILL_AFTER:
            enough.set()
    raise AssertionError("the writers were never stopped")


def _acknowledged(created: dict[str, str], renamed: dict[str, int]) -> int:
    return len(created) + sum(renamed.values())


def _audit_chain(db: str) -> ChainReport:
    store = open_store(db)
    try:
        with store.read() as conn:
            return verify_chain(conn)
    finally:
        store.dispose()


async def test_acknowledged_writes_survive_kill_9_of_the_whole_service(
    new_db: Callable[..., str], store_kind: str, tmp_path: Path
) -> None:
    db = new_db()
    first = Served(db=db, home=tmp_path / "before", workers=2).start()
    created: dict[str, str] = {}
    renamed: dict[str, int] = {}
    try:
        assert first.key, first.stdout_lines
        async with client(first.url, first.key) as http:
            enough = asyncio.Event()
            writers = [asyncio.create_task(_writer(http, n, created, renamed, enough)) for n in range(WRITERS)]
            reached = asyncio.create_task(enough.wait())
            done, _ = await asyncio.wait([reached, *writers], timeout=120, return_when=asyncio.FIRST_COMPLETED)
            reached.cancel()
            for task in done - {reached}:
                task.result()  # a writer that failed says why
            assert enough.is_set(), "the writers did not reach the kill point"
            assert first.proc is not None
            os.killpg(first.proc.pid, signal.SIGKILL)  # serve and its workers, mid-stream
            await asyncio.gather(*writers)
    finally:
        first.stop()
    assert len(created) == WRITERS and _acknowledged(created, renamed) >= KILL_AFTER

    if store_kind == "sqlite":
        with closing(sqlite3.connect(db)) as conn:  # what a restart finds: the file and WAL as the kill left them
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    again = Served(db=db, home=tmp_path / "after").start()
    try:
        async with client(again.url, first.key) as http:
            for user_id, name in created.items():
                response = await http.get(f"/api/systemusers/{user_id}")
                assert response.status_code == 200, (user_id, response.text)
                user = response.json()
                assert user["username"] == name
                if user_id in renamed:  # the last acknowledged rename, or one after it that committed unanswered
                    assert int(user["lastname"].removeprefix("v")) >= renamed[user_id], (user, renamed[user_id])
            # Every acknowledged change left its audit event, and the chain is whole.
            events = (await http.get("/api/v2/protect/audit", params={"action": "user.", "limit": 100})).json()
            assert events["totalCount"] >= _acknowledged(created, renamed)
    finally:
        again.stop()
    chain = _audit_chain(db)
    assert chain.ok, chain.problem


def test_sqlite_acknowledges_a_write_only_once_it_is_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """synchronous=FULL by default (the WAL is synced at every commit); NORMAL only when asked for."""

    def level(name: str) -> int:
        store = open_store(tmp_path / name)
        try:
            with store.read() as conn:
                return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
        finally:
            store.dispose()

    monkeypatch.delenv(SQLITE_SYNCHRONOUS_ENV, raising=False)
    assert level("default.db") == 2  # FULL
    monkeypatch.setenv(SQLITE_SYNCHRONOUS_ENV, "normal")
    assert level("normal.db") == 1
    monkeypatch.setenv(SQLITE_SYNCHRONOUS_ENV, "off")
    with pytest.raises(StoreError, match=f"{SQLITE_SYNCHRONOUS_ENV}='off' .*FULL or NORMAL"):
        level("refused.db")


async def test_only_the_login_routes_connection_commits_normal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot routes' own connection (the event loop's, store.run_raw) is NORMAL; the pool's stay FULL."""
    monkeypatch.delenv(SQLITE_SYNCHRONOUS_ENV, raising=False)
    store = open_store(tmp_path / "hot.db")
    try:
        hot = store.run_raw(lambda conn: conn.conn.execute("PRAGMA synchronous").fetchone()[0])
        with store.write() as conn:
            other = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        assert (hot, other) == (1, 2)  # NORMAL, FULL
    finally:
        store.dispose()


async def test_the_login_routes_connections_commit_without_waiting_for_the_flush_the_others_wait(
    new_db: Callable[..., str], store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot routes' connections (store.run_raw: replay marks, failure counts, rate counts, push attempts) trade
    durability against a power cut (SQLite NORMAL) or a database crash (PostgreSQL synchronous_commit=off, set
    for the session); every other connection keeps the server's setting, so lock-outs, resets, admin writes
    and audit events stay durable (the lock-out is written on such a connection: services/totp._lock_out)."""
    monkeypatch.delenv(SQLITE_SYNCHRONOUS_ENV, raising=False)
    store = open_store(new_db())
    try:
        if store_kind == "sqlite":
            hot = store.run_raw(lambda conn: conn.conn.execute("PRAGMA synchronous").fetchone()[0])
            with store.write() as conn:
                other = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            assert (hot, other) == (1, 2)  # NORMAL, FULL
        else:
            query = "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
            hot = store.run_raw(lambda conn: tuple(conn.conn.execute(query).fetchone()))
            with store.write() as conn:
                setting, source = conn.exec_driver_sql(query).one()
            assert hot == ("off", "session")
            # The server's own setting (the tests' server has it off server-wide: hence the source, not the value).
            assert source != "session", (setting, source)
    finally:
        store.dispose()
