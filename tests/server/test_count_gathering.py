"""Search counts gathered before anyone searches (services/users.py, gather_counts), on both stores.

A serving process finds the words enough users have for their count to be stored, counts each in full and
stores it, so that the first search of such a word anywhere is answered from the stored count. Here the
directory is small and the threshold lowered to match: every substring of the names that at least
``MIN_ROWS`` users have must be stored, with the exact count, and a new process answers each without
counting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select

from console.server import search_index
from console.server.app import create_app, start_gathering_counts
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.store import Store, open_store, users
from tests.helpers import run_cli
from tests.server.test_search_counts import new_user, no_full_counts, rename, scan_total, search_total

MIN_ROWS = 25
FIELDS = tuple(user_service.SEARCH_FIELDS)


@pytest.fixture
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    seed_directory(store, 200, rng_seed=11)
    yield store
    store.dispose()


def stored_counts(store: Store) -> dict[str, int]:
    """word -> stored total, for the stored counts of one word over the default fields."""
    with store.read() as conn:
        rows = conn.exec_driver_sql(f"SELECT query, total FROM {search_index.COUNTS_TABLE}").all()
    found = {}
    for query, total in rows:
        key = json.loads(query)
        if isinstance(key, list) and len(key[0]) == 1 and key[1] == sorted(FIELDS):
            found[key[0][0]] = int(total)
    return found


def stored_versions(store: Store) -> dict[str, int]:
    with store.read() as conn:
        rows = conn.exec_driver_sql(f"SELECT query, version FROM {search_index.COUNTS_TABLE}").all()
    return {query: int(version) for query, version in rows if query != user_service.GATHERED}


def marker(store: Store) -> tuple[int, int] | None:
    with store.read() as conn:
        row = conn.execute(
            select(user_service._stored.c.version, user_service._stored.c.total).where(
                user_service._stored.c.query == user_service.GATHERED
            )
        ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def frequent_by_definition(store: Store) -> set[str]:
    """Every substring (3+ characters, no whitespace) that at least MIN_ROWS users have in a default field."""
    with store.read() as conn:
        rows = conn.execute(select(*(user_service.users.c[f"{f}_ci"] for f in FIELDS))).all()
    having: dict[str, int] = {}
    for names in rows:
        pieces = {
            name[i:j]
            for name in names
            for i in range(len(name))
            for j in range(i + user_service.SHORT, len(name) + 1)
            if not any(c.isspace() for c in name[i:j])
        }
        for piece in pieces:
            having[piece] = having.get(piece, 0) + 1
    return {piece for piece, n in having.items() if n >= MIN_ROWS}


def gather(store: Store, **kwargs) -> int | None:
    return user_service.gather_counts(store, min_rows=MIN_ROWS, pause=0, **kwargs)


def test_every_frequent_word_is_stored_with_its_exact_count(store, monkeypatch) -> None:
    expected = frequent_by_definition(store)
    assert len(expected) > 20  # the seed's domains and common names: enough to mean something
    stored = gather(store)
    counts = stored_counts(store)
    assert stored == len(counts)
    assert set(counts) == expected
    assert counts == {word: scan_total(store, word, FIELDS) for word in expected}
    assert marker(store) is not None and marker(store)[1] == stored
    # A process that never counted (its own counts emptied) answers each gathered word from the stored count.
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    with no_full_counts(monkeypatch):
        assert {word: search_total(store, word, FIELDS) for word in expected} == counts


def test_gathered_counts_stay_exact_after_changes(store, monkeypatch) -> None:
    gather(store)
    word = max(stored_counts(store).items(), key=lambda item: item[1])[0]
    mary = new_user(store, f"mary.{word}")
    rename(store, mary, username="someone.else", email="someone@else.test")
    new_user(store, f"{word}.twice", lastname=word)
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    with no_full_counts(monkeypatch):
        assert search_total(store, word, FIELDS) == scan_total(store, word, FIELDS)


def test_gathered_once_until_due_again(store, monkeypatch) -> None:
    first = gather(store)
    assert first
    assert gather(store) is None  # done at a version the log reaches well
    # Names changed GATHER_AGAIN times: due again; the log still reaches the counts stored: each brought
    # forward and stored again at the new version, none counted in full (only the words that fell short).
    monkeypatch.setattr(user_service, "GATHER_AGAIN", 2)
    before = stored_counts(store)
    someone = new_user(store, "gather.again", lastname="Example")
    rename(store, someone, username="gather.again.example")
    counted: list[str] = []
    count = user_service._count

    def counting(conn, s, where, *args):
        counted.append(s.words[0])
        return count(conn, s, where, *args)

    monkeypatch.setattr(user_service, "_count", counting)
    assert gather(store) == first
    assert counted and not set(counted) & set(before)
    assert marker(store) is not None and marker(store)[1] == first
    with store.read() as conn:
        now = search_index.version(conn)[1]
    assert set(stored_versions(store).values()) == {now}
    assert stored_counts(store) == {word: scan_total(store, word, FIELDS) for word in stored_counts(store)}
    # A bulk load (on PostgreSQL: more than LOG_STATEMENT_MAX users in one statement) moves the log's floor
    # past every stored count: due again, each counted again.
    seed_directory(store, search_index.LOG_STATEMENT_MAX + 1, rng_seed=12)
    again = gather(store)
    assert again
    assert stored_counts(store) == {word: scan_total(store, word, FIELDS) for word in frequent_by_definition(store)}


def test_one_process_gathers_at_a_time(store) -> None:
    now = 1_000_000_000.0
    with store.read() as conn:
        due = user_service.gathering_due(conn, now, MIN_ROWS)
    assert due is not None
    with store.write() as conn:
        assert user_service.claim_gathering(conn, due, now)
    with store.write() as conn:
        assert not user_service.claim_gathering(conn, due, now)  # the same state claimed twice: only once
    # Claimed by a process still at it: not due; a claim older than GATHER_CLAIM_SECONDS is taken over.
    assert gather(store, clock=lambda: now + 1) is None
    assert stored_counts(store) == {}
    assert gather(store, clock=lambda: now + user_service.GATHER_CLAIM_SECONDS + 1)
    assert marker(store) is not None and marker(store)[1] == len(stored_counts(store))


def test_too_few_users_gathers_nothing(new_db) -> None:
    store = open_store(new_db())
    try:
        seed_directory(store, MIN_ROWS - 1, rng_seed=3)
        assert gather(store) is None
        assert marker(store) is None and stored_counts(store) == {}
    finally:
        store.dispose()


def test_sampling_finds_the_words_most_users_have() -> None:
    """The mining alone, on a sample: what a sample shows often enough, and nothing else."""
    rows = [("ann.lee", "ann.lee@acme.example"), ("bob.lee", "bob@acme.example"), ("eve", "eve@other.test")]
    found = search_index.frequent_substrings(rows, 2, 3)
    pieces = {
        name[i:j] for names in rows for name in names for i in range(len(name)) for j in range(i + 3, len(name) + 1)
    }
    assert set(found) == {piece for piece in pieces if rows_with(rows, piece) >= 2}
    assert "acme.example" in found and ".lee" in found and "ann" not in found
    having = [rows_with(rows, piece) for piece in found]
    assert having == sorted(having, reverse=True)  # the most frequent first (their counts cost the most)
    assert not any(" " in piece for piece in search_index.frequent_substrings([("a bc d",)] * 3, 2, 3))


def rows_with(rows: list[tuple[str, ...]], piece: str) -> int:
    return sum(any(piece in name for name in names) for names in rows)


def test_a_serving_process_gathers_in_the_background(store, monkeypatch) -> None:
    """The thread every `serve` process starts (app.py, keep_counts_gathered): it gathers while the app serves."""
    monkeypatch.setattr(search_index, "STORED_MIN", MIN_ROWS)
    app = create_app(store)
    stop = start_gathering_counts(app)
    try:
        deadline = time.monotonic() + 60
        while (marker(store) is None or marker(store)[1] < 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the condition (the thread's work), not waiting a fixed time
    finally:
        stop.set()
    assert marker(store) is not None and marker(store)[1] == len(stored_counts(store)) > 0
    assert set(stored_counts(store)) == frequent_by_definition(store)


def test_the_cli_gathers_once(new_db, capsys, monkeypatch) -> None:
    """`protect-console db gather-counts`: what a serving process does, at once (after an import, say)."""
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 200, rng_seed=11)
        code, out, _ = run_cli(capsys, "db", "gather-counts", "--db", db, "--json")
        assert code == 0 and json.loads(out)["stored"] == 0  # 10,000 matches at the least: nothing kept here
        monkeypatch.setattr(search_index, "STORED_MIN", MIN_ROWS)
        code, out, _ = run_cli(capsys, "db", "gather-counts", "--db", db, "--json")
        assert code == 0
        assert json.loads(out)["stored"] == len(stored_counts(store)) > 0
        assert set(stored_counts(store)) == frequent_by_definition(store)
        code, out, _ = run_cli(capsys, "db", "gather-counts", "--db", db)
        assert code == 0 and "nothing to do" in out
    finally:
        store.dispose()


def test_a_word_everyone_has_is_left_out_of_a_count(store, monkeypatch) -> None:
    """Every seeded email holds ``example``: ``<word> example`` counts as ``<word>`` (both gathered), without
    counting; two words that each only some users have are counted in full."""
    everyone = scan_total(store, "", FIELDS)
    assert scan_total(store, "example", FIELDS) == everyone  # the premise
    gather(store)
    partial = sorted((n, w) for w, n in stored_counts(store).items() if n < everyone and w not in "example.com")
    (_, word), (_, other) = partial[0], partial[-1]
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())  # a process that never counted
    with no_full_counts(monkeypatch):
        assert search_total(store, f"{word} example", FIELDS) == scan_total(store, word, FIELDS)
        assert search_total(store, f"EXAMPLE {word}", FIELDS) == scan_total(store, f"example {word}", FIELDS)
        with pytest.raises(AssertionError, match="counted in full"):
            search_total(store, f"{word} {other}", FIELDS)
    assert search_total(store, f"{word} {other}", FIELDS) == scan_total(store, f"{word} {other}", FIELDS)
    # Once a user without the word is added, it is not everyone's: counted in full, and exact.
    new_user(store, "nobody.special", email="nobody@else.test")
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    assert search_total(store, f"{word} example", FIELDS) == scan_total(store, f"{word} example", FIELDS)


def search_page(store: Store, term: str, limit: int = 100) -> list[str]:
    with store.read() as conn:
        page = user_service.list_users(conn, Clock().now(), skip=0, limit=limit, search=term)
    return [u.username for u in page.results]


def scanned_page(store: Store, term: str, limit: int = 100) -> list[str]:
    """The page by definition: every user tested with the search's predicate, in its order (rank, username)."""
    s = user_service._parse_search(term, FIELDS)
    assert s is not None
    with store.read() as conn:
        rows = conn.execute(
            select(users.c.username).where(user_service._row_match(s)).order_by(user_service._rank(s), users.c.username)
        )
        return [name for (name,) in rows][:limit]


def test_a_word_everyone_has_is_left_out_of_the_index_read(store, monkeypatch) -> None:
    """SQLite: ``<word> example`` reads the FTS matches of ``<word>`` alone (``example``'s list is every user's),
    with the same page; once a user without ``example`` is added, both words again, and that user is not found."""
    gather(store)
    word = min((n, w) for w, n in stored_counts(store).items() if len(w) >= 3 and "example" not in w)[1]
    monkeypatch.setattr(user_service, "_COUNTS", search_index.VersionedCache[int]())
    matched: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def fts_queries(conn, cursor, statement, parameters, context, executemany) -> None:
        if "MATCH" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            matched.extend(p for p in values if isinstance(p, str) and p.startswith("{"))  # an FTS5 query

    term = f"{word} example"
    assert search_page(store, term) == scanned_page(store, term)
    if store.is_sqlite:
        assert matched and not any("example" in m for m in matched)
    new_user(store, f"x{word}.outside", email=f"{word}@elsewhere.test")  # has the word, not ``example``
    matched.clear()
    found = search_page(store, term, limit=10_000)
    assert f"x{word}.outside" not in found and found == scanned_page(store, term, limit=10_000)
    if store.is_sqlite:
        assert any("example" in m for m in matched)
    event.remove(store.engine, "before_cursor_execute", fts_queries)
