"""A serving process warms up before it listens (app.warm_up): it answers exactly as a process that did not,
and the warm-up leaves nothing behind (no count stored in the database or kept in the process, no walk kept)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import event
from sqlalchemy.engine import default

from console.server import search_index
from console.server.app import create_app, warm_up
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.store import Store, buffer_advice, open_store

# Dense and sparse words (walked and read whole), a word of 5+ letters (no case variants walked), one
# nobody has, 1-2 characters, several words, an exact username, five fields, a reversed page.
SEARCHES: list[dict[str, object]] = [
    {"search": "son"},
    {"search": "mar"},
    {"search": "example"},
    {"search": "Garcia"},
    {"search": "zqxjzqxj"},
    {"search": "ma"},
    {"search": "mary g"},
    {"search": "tally.warm"},
    {"search": "tally", "search_fields": ["username", "email", "firstname", "lastname", "displayname"]},
    {"search": "son", "before": "end"},
]

CHILD = """
import json, sys
from console.server.app import create_app, warm_up
from console.server.clock import Clock
from console.server.services import users as user_service
from console.server.store import open_store
from tests.server.test_warm_up import SEARCHES
store = open_store(sys.argv[1])
app = create_app(store)
if sys.argv[2] == "warm":
    warm_up(app)
pages = []
with store.read() as conn:
    for search in SEARCHES:
        page = user_service.list_users(conn, Clock().now(), skip=0, limit=7, **search)
        following = None
        if page.endCursor and "before" not in search:
            following = user_service.list_users(conn, Clock().now(), skip=0, limit=7, after=page.endCursor, **search)
        pages.append([page.totalCount, [u.id for u in page.results], following and [u.id for u in following.results]])
print(json.dumps(pages))
store.dispose()
"""


@pytest.fixture
def db(new_db) -> str:
    db = new_db()
    store = open_store(db)
    seed_directory(store, 300, rng_seed=11)
    with store.write() as conn:
        conn.exec_driver_sql(
            "UPDATE users SET username = 'tally.warm', username_ci = 'tally.warm' "
            "WHERE id = (SELECT min(id) FROM users)"
        )
    store.dispose()
    return db


def pages_in_a_new_process(db: str, mode: str) -> list:
    child = subprocess.run([sys.executable, "-c", CHILD, db, mode], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def test_a_warmed_process_answers_as_a_cold_one(db) -> None:
    cold = pages_in_a_new_process(db, "cold")
    assert pages_in_a_new_process(db, "warm") == cold
    assert any(total and total > 7 for total, _, _ in cold)  # pages that walk, not only small answers
    assert [total for total, _, _ in cold][SEARCHES.index({"search": "zqxjzqxj"})] == 0


def stored_counts(store: Store) -> list:
    with store.read() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {search_index.COUNTS_TABLE} ORDER BY query")]


@pytest.mark.parametrize("users", [0, 120])
def test_warming_up_keeps_and_stores_nothing(new_db, monkeypatch, users) -> None:
    store = open_store(new_db())
    try:
        if users:
            seed_directory(store, users, rng_seed=5)
        monkeypatch.setattr(search_index, "STORED_MIN", 0)  # every count a search makes would be stored
        monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
        user_service._first_pages_walk.cache_clear()
        before = stored_counts(store)
        warm_up(create_app(store))
        assert stored_counts(store) == before
        assert not user_service._COUNTS._kept
        assert user_service._first_pages_walk.cache_info().currsize == 0
    finally:
        store.dispose()


# First searches of each shape warm_up compiles: one word (1 character to many), two, a word and a prefix, a word
# every user has beside another, words spelt with diacritics (their parameters typed as any other word's).
FIRST_SEARCHES = [
    "example",
    "m",
    "k",
    "ma",
    "son",
    "garcia",
    "mary g",
    "ó briain",
    "zoë",
    "maria example",
    "son example",
    "tally warm",
    "kowalski maria",
    "qqxz",
]


@pytest.mark.parametrize("limit", [1, 100])
def test_after_warming_up_a_first_search_compiles_no_statement(db, limit, monkeypatch) -> None:
    """Whether the page is walked (dense: ``limit=1`` of 300) or read whole, counted or counted already: every
    statement these searches run was compiled by the warm-up (SQLAlchemy's cache, by shape). The words of 1-2
    characters have stored counts, as the gathering stores them for common ones (counting them reads every user:
    no warm-up runs that)."""
    stored_min = search_index.STORED_MIN
    monkeypatch.setattr(search_index, "STORED_MIN", 0)
    gathered = open_store(db)
    try:
        with gathered.read() as conn:
            for search in ("m", "k", "ma"):
                user_service.list_users(conn, Clock().now(), skip=0, limit=1, search=search)
    finally:
        gathered.dispose()
    monkeypatch.setattr(search_index, "STORED_MIN", stored_min)
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())  # a new process's
    store = open_store(db)
    try:
        warm_up(create_app(store))
        compiled: list[str] = []

        @event.listens_for(store.engine, "before_cursor_execute")
        def note(conn, cursor, statement, params, context, executemany) -> None:
            if context is not None and context.compiled is not None and context.cache_hit == default.CACHE_MISS:
                compiled.append(statement)

        totals = []
        with store.read() as conn:
            for search in FIRST_SEARCHES:
                page = user_service.list_users(conn, Clock().now(), skip=0, limit=limit, search=search)
                totals.append(page.totalCount)
        assert compiled == [], "\n\n".join(compiled)
        assert totals[0] == 300 and any(t and 1 < t < 300 for t in totals)  # dense and sparse both ran
    finally:
        store.dispose()


def test_the_walk_shapes_cover_the_common_numbers_of_case_variants() -> None:
    """One warm word per common number of username ranges a word's walk reads (more than 16 are walked as one)."""
    counts = [len(user_service._case_variants(w) or [w]) for w in user_service._walk_shapes()]
    assert counts == list(user_service.WARM_VARIANTS)
    for word in ("example", "garcia", "mar", "son", "anna", "amy", "ann1", "ab12"):  # names, digits
        variants = user_service._case_variants(word)
        assert (len(variants) if variants else 1) in user_service.WARM_VARIANTS


def test_shared_buffers_without_huge_pages_are_named(new_db) -> None:
    """PostgreSQL 17+: large shared_buffers without huge pages get advice naming vm.nr_hugepages and the number
    the server needs; with huge pages in use (or below the size from which they are advised), none."""
    store = open_store(new_db())
    try:
        with store.read() as conn:
            status = None if store.is_sqlite else conn.exec_driver_sql("SHOW huge_pages_status").scalar()
            needed = None if store.is_sqlite else conn.exec_driver_sql("SHOW shared_memory_size_in_huge_pages").scalar()
            advice = buffer_advice(conn, need=1, huge_from=1)
            assert buffer_advice(conn, need=1, huge_from=2**50) is None
        if status == "off":
            assert advice is not None and f"vm.nr_hugepages = {needed}" in advice
        else:
            assert advice is None  # SQLite, or huge pages in use
    finally:
        store.dispose()


def test_a_small_postgresql_buffer_cache_is_named_at_warm_up(new_db, caplog) -> None:
    """PostgreSQL: shared_buffers smaller than what a search reads gets a warning (store.buffer_advice) naming the
    setting and its value; the tests' small directory fits, so warm-up says nothing. SQLite has no such cache."""
    store = open_store(new_db())
    try:
        with store.read() as conn:
            shown = None if store.is_sqlite else conn.exec_driver_sql("SHOW shared_buffers").scalar()
            too_small = buffer_advice(conn, need=2**50)
            assert buffer_advice(conn, need=1) is None
        if store.is_sqlite:
            assert too_small is None
        else:
            assert too_small is not None and f"shared_buffers is {shown}" in too_small
        with caplog.at_level("WARNING"):
            warm_up(create_app(store))
        assert "shared_buffers" not in caplog.text
    finally:
        store.dispose()
