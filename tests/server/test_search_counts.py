"""Exact search counts brought forward through the change log (migration 0011), on both stores.

A process keeps the exact count of an unfiltered search with the names' version; after adds, renames and
deletes (by this process, another store, another process, concurrent writers) it moves the count by the
logged changes that match, instead of counting again. Every total here is checked against a full scan
of the users with the search's own predicate, while counting in full is made to fail where the log must
answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select, text

from console.models import Role, SystemUserCreate, SystemUserUpdate
from console.server import search_index
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.services.common import Principal
from console.server.store import Store, folded, open_store, users

ADMIN = Principal("k1", "test-admin", Role.ADMIN)
ALL_FIELDS = ("username", "email", "firstname", "lastname", "displayname")
# (words, fields): common and rare substrings, a near-universal word, 1-2 characters alone and after a
# word, several words, a case-folded word (ß -> ss), no search (the directory's total), all five fields.
QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("son", ALL_FIELDS[:4]),
    ("mar", ALL_FIELDS[:4]),
    ("example", ALL_FIELDS[:4]),
    ("a", ALL_FIELDS[:4]),
    ("ma", ALL_FIELDS[:4]),
    ("mary g", ALL_FIELDS[:4]),
    ("Tally Count", ALL_FIELDS[:4]),
    ("STRASSE", ALL_FIELDS),
    ("100%_", ALL_FIELDS),
    ("", ALL_FIELDS[:4]),
    ("tally", ALL_FIELDS),
]


def search_total(store: Store, term: str, fields: tuple[str, ...]) -> int:
    with store.read() as conn:
        page = user_service.list_users(
            conn, Clock().now(), skip=0, limit=5, search=term or None, search_fields=list(fields)
        )
    assert page.totalCount is not None
    return page.totalCount


def scan_total(store: Store, term: str, fields: tuple[str, ...]) -> int:
    """The count by definition: every user tested with the search's predicate (no index, no kept count)."""
    s = user_service._parse_search(term or None, fields)
    match = [] if s is None else [user_service._row_match(s)]
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(users).where(*match)).scalar_one()


def totals_in_one_snapshot(store: Store, term: str, fields: tuple[str, ...]) -> list[int]:
    """The search's total and the scan's, read in one snapshot: writers run meanwhile, and a user added
    between two separate reads would make them differ with both right."""
    with store.read() as conn:
        if not store.is_sqlite:  # SQLite's read transaction is one snapshot already
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        page = user_service.list_users(
            conn, Clock().now(), skip=0, limit=5, search=term or None, search_fields=list(fields)
        )
        s = user_service._parse_search(term or None, fields)
        match = [] if s is None else [user_service._row_match(s)]
        scanned = conn.execute(select(func.count()).select_from(users).where(*match)).scalar_one()
    assert page.totalCount is not None
    return [page.totalCount, scanned]


@contextmanager
def no_full_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Counting the matches in full fails: a total can only come from a kept count and the log."""

    def counted(*_args, **_kwargs):
        raise AssertionError("counted in full")

    fts_rows = user_service._fts_rows

    def fts_counted(conn, s):  # with prefix words it is only the plan's upper bound, not the count
        assert s.prefix_words, "counted in full"
        return fts_rows(conn, s)

    with monkeypatch.context() as m:
        m.setattr(user_service, "_count", counted)
        m.setattr(user_service, "_fts_rows", fts_counted)
        m.setattr(user_service._Listing, "read", _read_without_total)
        yield


_plain_read = user_service._Listing.read


def _read_without_total(self, *args, counted: bool = False, **kwargs):
    assert not counted, "counted in full"
    return _plain_read(self, *args, **kwargs)


def assert_exact(store: Store, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Every query's total equals the scan; with ``monkeypatch``, without counting in full."""
    expected = {q: scan_total(store, *q) for q in QUERIES}
    if monkeypatch is None:
        got = {q: search_total(store, *q) for q in QUERIES}
    else:
        with no_full_counts(monkeypatch):
            got = {q: search_total(store, *q) for q in QUERIES}
    assert got == expected


def new_user(store: Store, name: str, **names: str) -> str:
    body = {
        "username": name,
        "email": f"{name}@tally.example",
        "firstname": "Tally",
        "lastname": "Count",
        "displayname": f"Tally {name}",
    } | names
    return user_service.create_user(store, SystemUserCreate(**body), ADMIN, Clock().now()).id


def rename(store: Store, user_id: str, **names: str) -> None:
    user_service.update_user(store, user_id, SystemUserUpdate(**names), ADMIN, Clock().now())


def delete(store: Store, user_id: str) -> None:
    user_service.delete_user(store, user_id, ADMIN, Clock().now())


@pytest.fixture
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    seed_directory(store, 120, rng_seed=5)
    yield store
    store.dispose()


def test_counts_come_forward_exactly_through_adds_renames_and_deletes(store, monkeypatch) -> None:
    assert_exact(store)  # counted in full once, and kept
    now = Clock().now()
    mary = new_user(store, "mary.tally", firstname="Mary", lastname="Garçon")
    gross = new_user(store, "gross.tally", lastname="Groß", displayname="Groß Straße")
    pct = new_user(store, "pct.tally", displayname="100%_ real")
    assert_exact(store, monkeypatch)
    rename(store, mary, lastname="Marsonne")  # into more matches
    rename(store, gross, displayname="Nothing Here", lastname="Plain")  # out of ß -> ss
    rename(store, pct, username="PCT.Tally.Upper", email="PCT@Tally.Example")  # case folded
    assert_exact(store, monkeypatch)
    delete(store, mary)
    rename(store, gross, displayname="STRASSE again")
    assert_exact(store, monkeypatch)
    user_service.update_user(store, pct, SystemUserUpdate(requireUserVerification=True), ADMIN, now)  # no name
    with store.write() as conn:  # SQL behind the service: many rows in one statement, one version
        conn.execute(
            users.update()
            .where(users.c.username_ci.like("%tally%"))
            .values(firstname="Marson", **folded({"firstname": "Marson"}))
        )
    assert_exact(store, monkeypatch)
    with store.write() as conn:
        conn.execute(users.delete().where(users.c.email_ci.like("%@tally.example")))
    assert_exact(store, monkeypatch)


def test_a_count_the_log_cannot_reach_is_counted_again(store, monkeypatch) -> None:
    assert_exact(store)
    seed_directory(store, 150, rng_seed=6)  # a bulk load: not logged, the floor moves past every kept count
    with pytest.raises(AssertionError, match="counted in full"):
        assert_exact(store, monkeypatch)
    assert_exact(store)
    assert_exact(store, monkeypatch)
    # Pruning: the log keeps LOG_KEEP versions. Versions without changes are harmless to skip: jump to
    # just before a prune, then change a name, which prunes the log and moves the floor past the counts.
    with store.read() as conn:
        at = search_index.version(conn)[1]
    with store.write() as conn:
        conn.exec_driver_sql(
            f"UPDATE {search_index.VERSION_TABLE} SET version = "
            f"{search_index.LOG_KEEP + search_index.LOG_PRUNE_EVERY * (at // search_index.LOG_PRUNE_EVERY + 1) - 1}"
        )
    new_user(store, "after.prune")
    with store.read() as conn:
        floor = conn.exec_driver_sql(f"SELECT floor FROM {search_index.VERSION_TABLE}").scalar_one()
        oldest = conn.exec_driver_sql(f"SELECT min(version) FROM {search_index.LOG_TABLE}").scalar_one()
    assert floor > at and (oldest is None or oldest > floor)
    with pytest.raises(AssertionError, match="counted in full"):
        assert_exact(store, monkeypatch)
    assert_exact(store)
    new_user(store, "after.prune.two")
    assert_exact(store, monkeypatch)


def test_a_change_committed_while_counting_is_not_counted_twice(new_db, monkeypatch) -> None:
    """A full count whose statements may see a change newer than the version read before it is not kept
    under that version (the log would add the change again)."""
    db = new_db()
    ours, theirs = open_store(db), open_store(db)
    try:
        seed_directory(ours, 50, rng_seed=7)
        racing = iter(range(3))

        def with_a_change_meanwhile(counting):
            def count(*args, **kwargs):
                for i in racing:  # the first counts only: a change commits after the version was read
                    new_user(theirs, f"racer{i}", lastname="Sonata")
                    break
                return counting(*args, **kwargs)

            return count

        with monkeypatch.context() as m:
            m.setattr(user_service, "_count", with_a_change_meanwhile(user_service._count))
            m.setattr(user_service, "_fts_rows", with_a_change_meanwhile(user_service._fts_rows))
            for q in QUERIES:
                search_total(ours, *q)
        assert next(racing, None) is None
        assert_exact(ours)
        new_user(theirs, "racer.after", lastname="Sonata")
        assert_exact(ours, monkeypatch)
    finally:
        ours.dispose()
        theirs.dispose()


CHILD = """
import json, sys
from console.server.store import open_store
from tests.server.test_search_counts import QUERIES, new_user, rename, delete, totals_in_one_snapshot
store = open_store(sys.argv[1])
made = [new_user(store, f"child.{i}", lastname="Sonnet") for i in range(6)]
totals = [totals_in_one_snapshot(store, *q) for q in QUERIES]
for user_id in made[:3]:
    rename(store, user_id, firstname="Marsh", displayname="Child Marsh")
for user_id in made[3:5]:
    delete(store, user_id)
totals += [totals_in_one_snapshot(store, *q) for q in QUERIES]
print(json.dumps(totals))
store.dispose()
"""


def test_counts_stay_exact_with_concurrent_writers_and_another_process(new_db, monkeypatch) -> None:
    db = new_db()
    ours, theirs = open_store(db), open_store(db)
    try:
        seed_directory(ours, 80, rng_seed=8)
        assert_exact(ours)  # kept by this process

        def writer(store: Store, tag: str) -> None:
            made = []
            for i in range(12):
                made.append(new_user(store, f"{tag}.{i}", lastname="Mason" if i % 2 else "Count"))
                if i % 3 == 2:
                    rename(store, made[-2], displayname=f"Renamed Sonar {tag}", email=f"{tag}{i}@elsewhere.example")
                if i % 4 == 3:
                    delete(store, made.pop(0))

        def reader() -> None:  # brings counts forward (and keeps them) while the writers write
            for _ in range(6):
                for q in QUERIES:
                    search_total(ours, *q)

        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with ThreadPoolExecutor(4) as pool:
            running = [pool.submit(writer, ours, "w1"), pool.submit(writer, theirs, "w2")]
            running += [pool.submit(reader), pool.submit(reader)]
            for future in running:
                future.result()  # raises what the thread raised
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        for got, expected in json.loads(out):  # the other process's totals were exact too
            assert got == expected
        assert_exact(ours, monkeypatch)  # every kept count came forward exactly, without counting again
        with ours.read() as conn:  # the log is written in the writers' transactions: one version each
            versions = conn.execute(
                text(f"SELECT count(DISTINCT version), count(*) FROM {search_index.LOG_TABLE}")
            ).one()
        assert versions[0] > 0 and versions[1] >= versions[0]
    finally:
        ours.dispose()
        theirs.dispose()


def test_a_process_that_never_counted_takes_a_stored_count_forward(new_db, monkeypatch) -> None:
    """Large counts are stored in the database with their version; a process that has not counted a search
    (a new one: its own counts emptied here, or another process) brings the stored count forward instead."""
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 120, rng_seed=5)
        stored_counts_come_forward(db, store, monkeypatch)
    finally:
        store.dispose()


def stored_counts_come_forward(db: str, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "STORED_MIN", 0)  # store every count (the real floor is 10,000 matches)
    assert_exact(store)  # counted in full, kept and stored
    with store.read() as conn:
        stored = conn.exec_driver_sql(f"SELECT count(*) FROM {search_index.COUNTS_TABLE}").scalar_one()
    assert stored == len(QUERIES)
    mary = new_user(store, "mary.stored", lastname="Sonnenberg")
    rename(store, mary, username="STRASSE.stored")
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())  # a process that never counted
    assert_exact(store, monkeypatch)
    child = subprocess.run(
        [sys.executable, "-c", STORED_CHILD, db],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == [scan_total(store, *q) for q in QUERIES]
    # A stored count the log cannot reach (a bulk load moved the floor), or another database's (epoch), is
    # not taken: counted again.
    seed_directory(store, 200, rng_seed=9)
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    with pytest.raises(AssertionError, match="counted in full"):
        assert_exact(store, monkeypatch)
    assert_exact(store)
    with store.write() as conn:
        conn.exec_driver_sql(f"UPDATE {search_index.VERSION_TABLE} SET epoch = 'another database'")
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    with pytest.raises(AssertionError, match="counted in full"):
        assert_exact(store, monkeypatch)
    assert_exact(store)


STORED_CHILD = """
import json, sys
import pytest
from console.server.store import open_store
from tests.server.test_search_counts import QUERIES, no_full_counts, search_total
store = open_store(sys.argv[1])
with pytest.MonkeyPatch.context() as m, no_full_counts(m):  # a new process: every total from the stored counts
    print(json.dumps([search_total(store, *q) for q in QUERIES]))
store.dispose()
"""


def test_a_statement_too_large_to_log_moves_the_floor(new_db, monkeypatch) -> None:
    """PostgreSQL logs a statement's rows from its transition table, up to LOG_STATEMENT_MAX; a larger one (a
    COPY of a re-seed) moves the floor instead, and kept counts are counted again. SQLite logs row by row."""
    store = open_store(new_db())
    try:
        seed_directory(store, search_index.LOG_STATEMENT_MAX + 100, rng_seed=12)
        assert_exact(store)
        # Fewer users than held: not a bulk load, the rows go through the live triggers in one statement each batch.
        seed_directory(store, search_index.LOG_STATEMENT_MAX + 1, rng_seed=13)
        if store.is_sqlite:
            assert_exact(store, monkeypatch)
        else:
            with pytest.raises(AssertionError, match="counted in full"):
                assert_exact(store, monkeypatch)
            assert_exact(store)
        assert_exact(store, monkeypatch)
    finally:
        store.dispose()
