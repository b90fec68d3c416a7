"""Indexed users search on both stores: the words, the order, the index kept in step, the plans.

Runs on SQLite (FTS5 trigram index) and PostgreSQL (pg_trgm) through conftest's ``store_kind``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select, text

from console.models import Role, SystemUserCreate, SystemUserUpdate
from console.server import search_index
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.services.common import Principal
from console.server.store import Store, folded, open_store, users

ADMIN = Principal("k1", "test-admin", Role.ADMIN)
DEFAULT_FIELDS = ("username", "email", "firstname", "lastname")


@pytest.fixture(scope="module")
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    seed_directory(store, 300, rng_seed=11)
    now = Clock().now()
    for username, first, last, display, email in (
        ("mgarcia.x", "Mary", "Garcia", "Mary Garcia", "mg@search.example"),
        ("Mixed.Case", "Zoë", "Ærøskøbing", "Zoë Æ", "Zoe.Mixed@Search.example"),
        ("ab@search.example", "Edge", "Case", "An email-shaped username", "edge@search.example"),
        ("strasse", "Groß", "Straße", "Groß Straße", "gross@search.example"),
        ("quote", "O'Neil", 'D"Arcy', "100% real_name", "pct@search.example"),
    ):
        user_service.create_user(
            store,
            SystemUserCreate(username=username, email=email, firstname=first, lastname=last, displayname=display),
            ADMIN,
            now,
        )
    yield store
    store.dispose()


def everyone(store: Store) -> list[dict]:
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(users))]


def search(store: Store, term: str, fields=DEFAULT_FIELDS, limit: int = 100, **kw):
    with store.read() as conn:
        return user_service.list_users(
            conn, Clock().now(), skip=kw.pop("skip", 0), limit=limit, search=term, search_fields=list(fields), **kw
        )


def every_page(store: Store, term: str, fields=DEFAULT_FIELDS) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = search(store, term, fields, limit=37, after=after)
        ids.extend(u.id for u in page.results)
        if not page.results:
            return ids
        after = page.endCursor


def oracle(store: Store, term: str, fields=DEFAULT_FIELDS) -> list[str]:
    """What the search must answer, computed in Python: ids in search order."""
    folded_term = term.casefold()
    words = folded_term.split() or [folded_term]
    exact = folded_term.strip() or folded_term

    def matches(u: dict) -> bool:
        for w in words:
            if len(words) > 1 and len(w) < 3:
                if not any(u[f"{f}_ci"].startswith(w) for f in fields):
                    return False
            elif not any(w in u[f"{f}_ci"] for f in fields):
                return False
        return True

    def rank(u: dict) -> int:
        if u["username_ci"] == exact or u["email_ci"] == exact:
            return 0
        return 1 if u["username_ci"].startswith(words[0]) else 2

    found = [u for u in everyone(store) if matches(u)]
    return [u["id"] for u in sorted(found, key=lambda u: (rank(u), u["username"], u["id"]))]


TERMS = [
    "mar",
    "MAR",
    "garcia",
    "Mary Garcia",
    "mary g",
    "Mary G",
    "ar",
    "a",
    "mary ga",
    "mary rc",
    "zoë",
    "mixed",
    "ab@search.example",
    "search.example",
    "Zoe.Mixed@Search.example",
    "ß",
    "strasse",
    "groß",
    "o'neil",
    'd"arcy',
    "100%",
    "real_",
    "%",
    "_",
    "\\",
    "nobody-matches-this",
    "  ",
    "e.c",
    "  lee  ",
    "wei lee",
    "j s",
    "smith johnson",
]


@pytest.mark.parametrize("fields", [DEFAULT_FIELDS, ("displayname",), ("email", "lastname")])
def test_results_order_and_total_equal_the_rule_for_every_kind_of_query(store, fields) -> None:
    for term in TERMS:
        expected = oracle(store, term, fields)
        page = search(store, term, fields, limit=100)
        assert page.totalCount == len(expected), term
        assert [u.id for u in page.results] == expected[:100], term
        assert every_page(store, term, fields) == expected, term


def test_every_word_must_match_some_field(store) -> None:
    for term in ("Mary Garcia", "mary g", "Mary G", "garcia MARY", "mary ga"):
        assert "mgarcia.x" in [u.username for u in search(store, term).results], term
    by_display = search(store, "Mary Garcia", fields=["displayname"])
    assert "mgarcia.x" in [u.username for u in by_display.results]
    # A short word is a prefix of a field, not a substring: 'rc' is inside Garcia but starts nothing.
    assert "mgarcia.x" not in [u.username for u in search(store, "mary rc").results]
    assert search(store, "mary nobody-has-this").totalCount == 0


def test_an_exact_username_or_email_comes_first(store) -> None:
    assert search(store, "ab@search.example").results[0].username == "ab@search.example"
    assert search(store, "EDGE@search.example").results[0].username == "ab@search.example"
    assert search(store, "mg@search.example").results[0].username == "mgarcia.x"
    assert search(store, "Mixed.Case").results[0].username == "Mixed.Case"


@pytest.mark.parametrize("factor", [0, 10**12], ids=["walk", "sort"])
def test_both_plans_give_the_same_pages(store, monkeypatch, factor) -> None:
    """The walk along the username index (dense matches) and the read-all-and-sort plan (sparse ones)."""
    monkeypatch.setattr(user_service, "WALK_FACTOR", factor)
    for term in ("a", "ar", "mar", "e", "Mary G", "ab@search.example", "mixed", "ß"):
        expected = oracle(store, term)
        first = search(store, term, limit=100)
        assert [u.id for u in first.results] == expected[:100] and first.totalCount == len(expected), term
        filtered = search(store, term, limit=100, conditions=[("state", "$eq", "ACTIVATED")])
        assert (
            filtered.totalCount == sum(u.state == "ACTIVATED" for u in search(store, term, limit=100).results)
            or len(expected) > 100
        ), term
        assert every_page(store, term) == expected, term
        assert [u.id for u in search(store, term, limit=5, skip=3).results] == expected[3:8], term


def test_case_variants_cover_every_username_that_folds_to_the_prefix() -> None:
    assert sorted(user_service._case_variants("ab")) == ["AB", "Ab", "aB", "ab"]
    assert set(user_service._case_variants("ss", cap=50)) >= {"ss", "SS", "ß", "ẞ", "ſs", "ſſ"}
    assert user_service._case_variants("abcdefgh") is None  # too many: the group is read whole instead
    for name in ("Straße", "STRASSE", "ſtrasse", "straẞe"):
        assert any(name.startswith(v) for v in user_service._case_variants("stras", cap=1000)), name


def fts_consistent(store: Store) -> None:
    if store.is_sqlite:
        with store.write() as conn:  # raises when the index and the users table disagree
            conn.exec_driver_sql("INSERT INTO users_search(users_search, rank) VALUES ('integrity-check', 1)")


def test_the_index_follows_create_update_rename_and_delete(store) -> None:
    now = Clock().now()
    user = user_service.create_user(
        store,
        SystemUserCreate(
            username="qqzzyy.one",
            email="qqzzyy@search.example",
            firstname="Quincy",
            lastname="Zzyzx",
            displayname="Quincy Zzyzx",
        ),
        ADMIN,
        now,
    )
    assert [u.id for u in search(store, "zzyzx").results] == [user.id]
    user_service.update_user(store, user.id, SystemUserUpdate(lastname="Wxyvut"), ADMIN, now)
    assert search(store, "zzyzx").totalCount == 0
    assert [u.id for u in search(store, "wxyvut").results] == [user.id]
    user_service.update_user(store, user.id, SystemUserUpdate(username="renamed.qqq"), ADMIN, now)
    assert search(store, "qqzzyy.one").totalCount == 0
    assert [u.id for u in search(store, "renamed.qq").results] == [user.id]
    assert [u.id for u in search(store, "quincy renamed").results] == [user.id]
    fts_consistent(store)
    user_service.delete_user(store, user.id, ADMIN, now)
    assert search(store, "wxyvut").totalCount == 0 and search(store, "renamed.qq").totalCount == 0
    fts_consistent(store)


def test_a_bulk_load_between_the_hooks_is_indexed_after(new_db) -> None:
    store = open_store(new_db())
    try:
        now = Clock().now()
        rows = []
        for i in range(50):
            row = {
                "id": f"{i:024x}",
                "username": f"bulk.loaded{i}",
                "email": f"bulk{i}@search.example",
                "firstname": "Bulk",
                "lastname": f"Loaded{i}",
                "displayname": "Bulk Loaded",
                "created": now,
            }
            rows.append(row | folded(row))
        with store.write() as conn:
            search_index.drop_for_bulk_load(conn)
            conn.execute(insert(users), rows)
            search_index.restore_after_bulk_load(conn)
        assert search(store, "bulk.load").totalCount == 50
        assert [u.username for u in search(store, "loaded17").results] == ["bulk.loaded17"]
        fts_consistent(store)
        # Maintained row by row again afterwards.
        user_service.update_user(store, rows[0]["id"], SystemUserUpdate(firstname="Changed"), ADMIN, now)
        assert search(store, "bulk changed").totalCount == 1
        fts_consistent(store)
    finally:
        store.dispose()


def plan_of(store: Store, query) -> str:
    with store.read() as conn:
        if store.is_sqlite:
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            return "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # a small table: ask whether it *can*
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))


def test_searches_and_exact_lookups_read_indexes(store) -> None:
    def match(term: str, fields=DEFAULT_FIELDS):
        with store.read() as conn:
            return user_service._index_match(conn, user_service._parse_search(term, fields))

    words = select(func.count()).select_from(users).where(match("garcia"))
    both = select(func.count()).select_from(users).where(match("mary g"))
    short_only = select(func.count()).select_from(users).where(match("ma g", ("firstname", "lastname")))
    by_email = select(users.c.id).where(users.c.email_ci == "mg@search.example")
    by_username = select(users.c.id).where(users.c.username_ci == "mgarcia.x")
    by_id = select(users.c.id).where(users.c.id == "0" * 24)
    if store.is_sqlite:
        assert "users_search VIRTUAL TABLE" in plan_of(store, words)
        assert "users_search VIRTUAL TABLE" in plan_of(store, both)
        plan = plan_of(store, short_only)
        assert "ix_users_firstname_ci" in plan and "ix_users_lastname_ci" in plan, plan
    else:
        assert "ix_users_search_trgm" in plan_of(store, words)
        plan = plan_of(store, short_only)
        assert "ix_users_firstname_ci" in plan and "ix_users_lastname_ci" in plan, plan
    assert "ux_users_email_ci" in plan_of(store, by_email)
    assert "ux_users_username_ci" in plan_of(store, by_username)
    plan = plan_of(store, by_id)
    assert "pk" in plan.lower() or "autoindex" in plan.lower(), plan
    # The filters an exact jump uses go through the same indexes.
    with store.read() as conn:
        page = user_service.list_users(
            conn, Clock().now(), skip=0, limit=1, conditions=[("email", "$eq", "MG@search.example")]
        )
    assert [u.username for u in page.results] == ["mgarcia.x"]


def test_the_fts_count_equals_a_scan(store) -> None:
    """The count read from the index alone is the count of LIKE matches (the old full scan)."""
    with store.read() as conn:
        for term in ("mar", "garcia", "search.example", "e.c", "100%", "real_", "straße", "zoë æ"):
            s = user_service._parse_search(term, DEFAULT_FIELDS)
            scan = conn.execute(select(func.count()).select_from(users).where(user_service._row_match(s))).scalar_one()
            assert user_service._count(conn, s, []) == scan, term


def test_a_repeated_count_is_kept_until_a_name_changes_in_any_process(new_db, monkeypatch) -> None:
    """Exact counts of unfiltered searches are reused by the names' version; a change made through
    another store (another process's connection, SQL that skips the service) makes them stale."""
    db = new_db()
    ours, theirs = open_store(db), open_store(db)
    try:
        now = Clock().now()
        for i in range(6):
            user_service.create_user(
                ours,
                SystemUserCreate(
                    username=f"kept.{i}",
                    email=f"kept{i}@tally.example",
                    firstname="Kept",
                    lastname=f"Count{i}",
                    displayname=f"Kept Count{i}",
                ),
                ADMIN,
                now,
            )

        def version() -> tuple[str, int]:
            with ours.read() as conn:
                return search_index.version(conn)

        assert search(ours, "count").totalCount == 6 and search(ours, "kept count3").totalCount == 1
        assert search(ours, "", limit=1).totalCount == 6
        uncounted = pytest.raises(AssertionError, match="counted")

        def no_counting(*_args, **_kwargs):
            raise AssertionError("counted")

        with monkeypatch.context() as m:  # a repeat is answered without counting
            m.setattr(user_service, "_count", no_counting)
            m.setattr(user_service, "_fts_rows", no_counting)
            assert search(ours, "count").totalCount == 6
            assert search(ours, "", limit=1).totalCount == 6
            with uncounted:  # a filter: counted each time (statuses depend on the clock)
                search(ours, "count", conditions=[("state", "$eq", "ACTIVATED")])
        before = version()
        with theirs.write() as conn:  # not a name: the counts stand
            conn.execute(users.update().where(users.c.username == "kept.0").values(totp_failures=3))
        assert version() == before
        with theirs.write() as conn:  # a rename behind the service's back, in another store
            conn.execute(
                users.update()
                .where(users.c.username == "kept.0")
                .values(lastname="Other", **folded({"lastname": "Other"}))
            )
        assert version()[1] > before[1] and version()[0] == before[0]
        assert search(ours, "count").totalCount == 5 and search(ours, "kept count0").totalCount == 0
        with theirs.write() as conn:
            conn.execute(users.delete().where(users.c.username == "kept.1"))
        assert search(ours, "count").totalCount == 4 and search(ours, "", limit=1).totalCount == 5
        seed_directory(theirs, 10, rng_seed=3)  # rows through the live indexes (a small re-seed)
        assert search(ours, "", limit=1).totalCount == 15
        seed_directory(theirs, 40, rng_seed=4)  # a bulk load: the version moves once, at its end
        assert search(ours, "", limit=1).totalCount == 55
        assert search(ours, "count").totalCount == 4
    finally:
        ours.dispose()
        theirs.dispose()
    one, two = open_store(new_db()), open_store(new_db())
    try:  # two new databases at the same version (on PostgreSQL copies of one template): counts kept apart
        with one.read() as a, two.read() as b:
            assert search_index.version(a)[1] == search_index.version(b)[1]
            assert user_service._count_key(a, None) != user_service._count_key(b, None)
    finally:
        one.dispose()
        two.dispose()
