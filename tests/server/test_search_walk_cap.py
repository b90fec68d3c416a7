"""A search's walk along the username index stops after WALK_CAP names and reads the matches whole when the
page is still short (services/users.py, list_users), on both stores: every page, forwards and backwards, is
the same as without the cap. The cap is lowered to a few names here so that walks stop short all the time.

A search whose first page was read whole so is walked from where its matches begin next time (_walk_start),
until a user who matches is added or renamed in before that name: then the page is the scan's again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console.models import Role, SystemUserCreate, SystemUserUpdate
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.services.common import Principal
from console.server.store import Store, open_store

WORDS = ["example", "son", "mar", "ar", "example a"]  # dense enough at this size to be walked, several shapes


@pytest.fixture
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    seed_directory(store, 400, rng_seed=21)
    if not store.is_sqlite:
        with store.write() as conn:
            conn.exec_driver_sql("ANALYZE users")  # the statistics PostgreSQL's walks take their edge from
    yield store
    store.dispose()


def pages(store: Store, word: str, *, before: bool = False) -> list[list[str]]:
    """Every page of 7 of ``word``'s results, by cursor: forwards from the first, or backwards from the end."""
    found: list[list[str]] = []
    cursor: dict[str, str] = {"before": "end"} if before else {}
    while True:
        with store.read() as conn:
            page = user_service.list_users(conn, Clock().now(), skip=0, limit=7, search=word, **cursor)
        if not page.results:
            return found
        found.append([u.username for u in page.results])
        cursor = {"before": page.startCursor} if before else {"after": page.endCursor}
        if len(found) > 200:
            raise AssertionError("paging does not end")


def all_pages(store: Store) -> dict[tuple[str, bool], list[list[str]]]:
    user_service._WALK_STARTS = user_service.search_index.VersionedCache[str | None](256)
    user_service._NAME_BOUNDS.clear()
    user_service._first_pages_walk.cache_clear()
    return {(w, before): pages(store, w, before=before) for w in WORDS for before in (False, True)}


def test_capped_walks_give_the_same_pages(store, monkeypatch) -> None:
    monkeypatch.setattr(user_service, "WALK_FACTOR", 1 / 1000)  # walk every search (else few are walked here)
    monkeypatch.setattr(user_service, "FTS_WALK_MAX", 10**9)
    expected = all_pages(store)
    assert all(expected.values()) and sum(len(p) for p in expected.values()) > 20
    fell_short: list[object] = []
    read = user_service._Listing.read

    def reading(self, *args, **kwargs):
        fell_short.append(args[0])
        return read(self, *args, **kwargs)

    monkeypatch.setattr(user_service, "WALK_CAP", 10)
    monkeypatch.setattr(user_service, "WALK_CAP_FTS", 10)
    monkeypatch.setattr(user_service._Listing, "read", reading)
    assert all_pages(store) == expected
    assert fell_short  # the cap was reached and the matches read whole


ADMIN = Principal("k1", "test-admin", Role.ADMIN)
LATE = "quokka"  # nobody's name in the seed holds it; the users added with it are all named late


def add(store: Store, username: str, firstname: str = "Quokka") -> str:
    body = SystemUserCreate(
        username=username, email=f"{username}@late.example", firstname=firstname, lastname="Late", displayname="L"
    )
    return user_service.create_user(store, body, ADMIN, Clock().now()).id


def first_page(store: Store) -> list[str]:
    with store.read() as conn:
        page = user_service.list_users(conn, Clock().now(), skip=0, limit=7, search=LATE)
    return [u.username for u in page.results]


def scanned(store: Store) -> list[str]:
    """The first page in the search's own order (a username that starts with the word first, then by username),
    from every user: no index, no walk."""
    u = user_service.users.c
    with store.read() as conn:
        rows = conn.execute(user_service.select(u.username, u.username_ci, u.email_ci, u.firstname_ci, u.lastname_ci))
        found = [(0 if row[1].startswith(LATE) else 1, row[0]) for row in rows if any(LATE in f for f in row[1:])]
    return [name for _, name in sorted(found)][:7]


@pytest.fixture
def late(store, monkeypatch) -> list[object]:
    """Ten users named Quokka whose usernames come after the seed's, the cap lowered below the directory's
    size, and what list_users reads whole (each call of _Listing.read)."""
    for i in range(10):
        add(store, f"zz.late{i:02d}")
    if not store.is_sqlite:
        with store.write() as conn:
            conn.exec_driver_sql("ANALYZE users")  # the walk's edge: the added names in the statistics too
    monkeypatch.setattr(user_service, "WALK_FACTOR", 1 / 1000)
    monkeypatch.setattr(user_service, "FTS_WALK_MAX", 10**9)
    monkeypatch.setattr(user_service, "WALK_CAP", 50)
    monkeypatch.setattr(user_service, "WALK_CAP_FTS", 50)
    monkeypatch.setattr(user_service, "_WALK_STARTS", user_service.search_index.VersionedCache[str | None](256))
    user_service._NAME_BOUNDS.clear()
    user_service._first_pages_walk.cache_clear()
    read_whole: list[object] = []
    read = user_service._Listing.read

    def reading(self, *args, **kwargs):
        read_whole.append(args[0])
        return read(self, *args, **kwargs)

    monkeypatch.setattr(user_service._Listing, "read", reading)
    return read_whole


def test_a_late_search_is_walked_from_where_its_matches_begin(store, late) -> None:
    expected = scanned(store)
    assert expected == [f"zz.late{i:02d}" for i in range(7)]
    assert first_page(store) == expected
    assert len(late) == 1  # the capped walk fell short: read whole, and where the matches begin remembered
    for _ in range(3):
        assert first_page(store) == expected
    assert len(late) == 1  # walked from zz.late00, no more reads whole


def test_a_match_added_before_the_start_is_found(store, late) -> None:
    assert first_page(store) == first_page(store)  # the start is remembered
    reads = len(late)
    add(store, "aa.early")  # named before zz.late00: a walk from there would miss it
    assert first_page(store)[0] == "aa.early"
    assert first_page(store) == scanned(store)
    assert len(late) > reads
    rename_id = add(store, "ab.renamed", firstname="Other")
    assert first_page(store) == scanned(store)  # not a match: the start holds
    user_service.update_user(store, rename_id, SystemUserUpdate(firstname="Quokka"), ADMIN, Clock().now())
    assert first_page(store)[:2] == ["aa.early", "ab.renamed"]
    assert first_page(store) == scanned(store)


def test_a_walk_from_the_start_that_falls_short_reads_whole_from_then_on(store, late, monkeypatch) -> None:
    first_page(store)  # remembers zz.late00
    reads = len(late)
    monkeypatch.setattr(user_service, "WALK_CAP", 2)  # from zz.late00, 2 names hold 2 of the 7
    monkeypatch.setattr(user_service, "WALK_CAP_FTS", 2)
    # PostgreSQL's edge comes from the statistics' buckets, a few names each here: two names from the start.
    monkeypatch.setattr(user_service, "_pg_walk_edge", lambda conn, start, reverse: "zz.late01" if start else None)
    user_service._first_pages_walk.cache_clear()
    assert first_page(store) == scanned(store)
    assert len(late) == reads + 1
    assert first_page(store) == scanned(store)
    assert len(late) == reads + 2  # read whole at once, not walked first
    with store.read() as conn:
        search = user_service._parse_search(LATE, user_service.SEARCH_FIELDS)
        assert user_service._walk_start(conn, user_service._count_key(conn, search), search) is user_service.WHOLE
