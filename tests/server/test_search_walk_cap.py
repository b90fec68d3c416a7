"""A search's walk along the username index stops after WALK_CAP names and reads the matches whole when the
page is still short (services/users.py, list_users), on both stores: every page, forwards and backwards, is
the same as without the cap. The cap is lowered to a few names here so that walks stop short all the time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
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
    user_service._WALKS_SHORT = user_service.search_index.RecentSet(256)
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
