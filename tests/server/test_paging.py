"""Keyset paging of the users list and search on both stores: cursors walk exactly what skip/limit walks.

Runs on SQLite and PostgreSQL through conftest's ``store_kind``; the wire tests use the real service.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from console.models import Role, SystemUserCreate
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services import users as user_service
from console.server.services.common import Principal
from console.server.store import Store, open_store

ADMIN = Principal("k1", "test-admin", Role.ADMIN)
SORTS = [
    None,
    "username",
    "-username",
    "email",
    "firstname",
    "-firstname",
    "lastname",
    "-lastname",
    "displayname",
    "created",
    "-created",
    "state",
    "account_locked",
    "-totp_enabled",
    "mfaEnrollment.overallStatus",
    "-mfaEnrollment.pushStatus",
    "mfaEnrollment.totpStatus",
    "_id",
    "created -username",
    "state -lastname email",
]


@pytest.fixture(scope="module")
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    seed_directory(store, 240, rng_seed=3)
    now = Clock().now()
    # Ties on every name sort key, and mixed case: the id tiebreak must carry the cursor.
    for i in range(6):
        user_service.create_user(
            store,
            SystemUserCreate(
                username=f"Tie.{i}",
                email=f"tie{i}@paging.example",
                firstname="Same",
                lastname="Same",
                displayname="Same Same",
            ),
            ADMIN,
            now,
        )
    yield store
    store.dispose()


def page(store: Store, **kw):
    with store.read() as conn:
        return user_service.list_users(conn, Clock().now(), **{"skip": 0, "limit": 100, **kw})


def offset_walk(store: Store, **kw) -> list[str]:
    ids: list[str] = []
    while True:
        got = page(store, skip=len(ids), limit=53, **kw)
        ids.extend(u.id for u in got.results)
        if len(got.results) < 53:
            return ids


def forward_walk(store: Store, **kw) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        got = page(store, limit=53, after=after, count=False, **kw)
        assert got.totalCount is None
        ids.extend(u.id for u in got.results)
        if not got.results:
            assert got.startCursor is None and got.endCursor is None
            return ids
        after = got.endCursor


def backward_walk(store: Store, **kw) -> list[str]:
    ids: list[str] = []
    before = "end"
    while True:
        got = page(store, limit=53, before=before, **kw)
        ids[:0] = [u.id for u in got.results]
        if not got.results:
            return ids
        before = got.startCursor


@pytest.mark.parametrize("sort", SORTS)
def test_keyset_walks_forward_and_backward_equal_the_offset_walk(store, sort) -> None:
    expected = offset_walk(store, sort=sort)
    assert len(expected) == len(set(expected)) == page(store, limit=1).totalCount
    assert forward_walk(store, sort=sort) == expected
    assert backward_walk(store, sort=sort) == expected


@pytest.mark.parametrize(
    ("search", "sort"),
    [
        ("ar", None),
        ("mar", None),
        ("e", None),
        ("same", None),
        ("same s", None),
        ("ar", "-created"),
        ("same", "lastname"),
    ],
)
@pytest.mark.parametrize("factor", [0, 10**12], ids=["walk", "sort"])
def test_keyset_walks_of_a_search_equal_its_offset_walk(store, monkeypatch, search, sort, factor) -> None:
    monkeypatch.setattr(user_service, "WALK_FACTOR", factor)
    kw = {"search": search, "sort": sort, "conditions": [("state", "$ne", "SUSPENDED")]}
    expected = offset_walk(store, **kw)
    assert expected and forward_walk(store, **kw) == expected
    assert backward_walk(store, **kw) == expected


def test_skip_counts_from_the_cursor_and_the_total_is_the_whole_listing(store) -> None:
    everyone = offset_walk(store, sort="lastname")
    first = page(store, sort="lastname", limit=10)
    assert first.totalCount == len(everyone)
    jumped = page(store, sort="lastname", limit=10, after=first.endCursor, skip=20)
    assert [u.id for u in jumped.results] == everyone[30:40] and jumped.totalCount == len(everyone)
    back = page(store, sort="lastname", limit=10, before=jumped.startCursor, skip=5)
    assert [u.id for u in back.results] == everyone[15:25]
    last = page(store, sort="lastname", limit=10, before="end")
    assert [u.id for u in last.results] == everyone[-10:]
    assert page(store, sort="lastname", limit=10, after=last.endCursor).results == []


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"after": "not-a-cursor"}, "after"),
        ({"before": "%%%"}, "before"),
        ({"after": base64.urlsafe_b64encode(b'{"k": [1], "f": "x"}').decode()}, "after"),
        ({"after": base64.urlsafe_b64encode(b"[]").decode()}, "after"),
    ],
)
def test_a_malformed_cursor_is_400_naming_the_parameter(store, kw, named) -> None:
    with pytest.raises(user_service.ApiProblem) as refused:
        page(store, **kw)
    assert refused.value.status == 400 and named in refused.value.message


def test_a_cursor_from_another_listing_is_400(store) -> None:
    cursor = page(store, sort="lastname", limit=5).endCursor
    for other in (
        {"sort": "firstname"},
        {"sort": "lastname", "search": "a"},
        {"sort": "lastname", "conditions": [("state", "$eq", "ACTIVATED")]},
    ):
        with pytest.raises(user_service.ApiProblem) as refused:
            page(store, after=cursor, **other)
        assert refused.value.status == 400 and "after" in refused.value.message
    doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert set(doc) == {"k", "f"} and doc["k"][-1]  # sort key values and the id, and the listing's fingerprint


def plan(store: Store, sql_of) -> str:
    with store.read() as conn:
        if not store.is_sqlite:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        query = sql_of(conn)
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if store.is_sqlite:
            return "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))


@pytest.mark.parametrize(
    ("sort", "index"),
    [
        (None, "ix_users_username_id"),
        ("-created", "ix_users_created_id"),
        ("lastname", "ix_users_lastname_sort"),
        ("-firstname", "ix_users_firstname_sort"),
    ],
)
def test_a_deep_keyset_page_seeks_the_sort_index(store, sort, index) -> None:
    """The page after a cursor starts where the cursor is in the index: no rows before it are read."""
    cursor = page(store, sort=sort, skip=200, limit=1).startCursor

    def query(conn):
        now = Clock().now()
        keys = (
            user_service._sort_keys(sort, now)
            if sort
            else [user_service.Key(user_service.users.c.username), user_service.Key(user_service.users.c.id)]
        )
        listing = user_service._Listing(conn, now, keys, [], "")
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["k"]
        values = [user_service.paging._unwire(v) for v in values]
        return listing.select(user_service.beyond(keys, values)).order_by(*(k.order() for k in keys)).limit(10)

    text_plan = plan(store, query)
    assert index in text_plan, text_plan
    if store.is_sqlite:
        assert "SEARCH" in text_plan and "TEMP B-TREE" not in text_plan, text_plan
    else:
        assert "Index Cond" in text_plan and "Sort" not in text_plan, text_plan


@pytest.fixture
def http(make_backend) -> Iterator[httpx.Client]:
    backend = make_backend(users=120)
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as client:
        yield client


def test_the_wire_pages_by_cursor_on_list_and_search(http) -> None:
    first = http.get("/api/systemusers", params={"limit": 50, "sort": "-created"}).json()
    assert first["totalCount"] == 120 and first["startCursor"] and first["endCursor"]
    rest = http.get(
        "/api/systemusers", params={"limit": 100, "sort": "-created", "after": first["endCursor"], "count": "false"}
    ).json()
    assert rest["totalCount"] is None and len(rest["results"]) == 70
    offset = http.get("/api/systemusers", params={"limit": 100, "skip": 50, "sort": "-created"}).json()
    assert rest["results"] == offset["results"]
    last = http.get("/api/systemusers", params={"limit": 7, "before": "end"}).json()
    everyone = http.get("/api/systemusers", params={"limit": 100, "skip": 113}).json()
    assert last["results"] == everyone["results"]

    body = {"searchFilter": {"searchTerm": "a", "fields": ["username", "lastname"]}}
    found = http.post("/api/search/systemusers", params={"limit": 10}, json=body).json()
    more = http.post("/api/search/systemusers", params={"limit": 10, "after": found["endCursor"]}, json=body).json()
    skipped = http.post("/api/search/systemusers", params={"limit": 10, "skip": 10}, json=body).json()
    assert more["results"] == skipped["results"] and more["totalCount"] == found["totalCount"]


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("GET", {"after": "garbage"}, "after"),
        ("GET", {"before": "garbage"}, "before"),
        ("GET", {"after": "x", "before": "y"}, "after"),
        ("POST", {"after": "garbage"}, "after"),
        ("GET", {"count": "maybe"}, "count"),
    ],
)
def test_bad_cursors_on_the_wire_are_400_naming_the_parameter(http, method, params, named) -> None:
    if method == "GET":
        response = http.get("/api/systemusers", params=params)
    else:
        response = http.post("/api/search/systemusers", params=params, json={"searchFilter": {"searchTerm": "a"}})
    assert response.status_code in (400, 422) and named in response.json()["message"], response.text
    sorted_cursor = http.get("/api/systemusers", params={"limit": 1, "sort": "lastname"}).json()["endCursor"]
    other = http.get("/api/systemusers", params={"limit": 1, "sort": "firstname", "after": sorted_cursor})
    assert other.status_code == 400 and "after" in other.json()["message"]


def test_openapi_describes_the_paging_parameters_and_fields(http) -> None:
    spec = http.get("/openapi.json").json()
    for path, method in (("/api/systemusers", "get"), ("/api/search/systemusers", "post")):
        params = {p["name"]: p for p in spec["paths"][path][method]["parameters"]}
        assert {"after", "before", "count", "skip", "limit"} <= set(params), path
        assert "end" in params["before"]["description"] and "null" in params["count"]["description"]
    pages = [s for name, s in spec["components"]["schemas"].items() if name.startswith("Page_SystemUser")]
    assert pages and {"startCursor", "endCursor", "totalCount"} <= set(pages[0]["properties"])


def wire_walks(http: httpx.Client, path: str, params: dict) -> tuple[list, list, list]:
    """(offset walk, forward cursor walk, backward cursor walk) of a list endpoint's ids."""
    offset: list = []
    while True:
        got = http.get(path, params={**params, "limit": 37, "skip": len(offset)}).json()
        offset.extend(r["id"] for r in got["results"])
        if len(got["results"]) < 37:
            break
    forward: list = []
    cursor = None
    while True:
        got = http.get(
            path, params={**params, "limit": 37, "count": "false", **({"after": cursor} if cursor else {})}
        ).json()
        assert got["totalCount"] is None
        forward.extend(r["id"] for r in got["results"])
        if not got["results"]:
            break
        cursor = got["endCursor"]
    backward: list = []
    cursor = "end"
    while True:
        got = http.get(path, params={**params, "limit": 37, "before": cursor}).json()
        backward[:0] = [r["id"] for r in got["results"]]
        if not got["results"]:
            break
        cursor = got["startCursor"]
    return offset, forward, backward


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v2/protect/pushattempts", {}),
        ("/api/v2/protect/pushattempts", {"status": "approved"}),
        ("/api/v2/protect/audit", {}),
        ("/api/v2/protect/audit", {"action": "user."}),
    ],
)
def test_push_attempts_and_audit_page_by_cursor_too(http, path, params) -> None:
    for i in range(45):  # audit events to page through
        http.post("/api/systemusers", json={"username": f"audited{i}", "email": f"audited{i}@paging.example"})
    offset, forward, backward = wire_walks(http, path, params)
    assert len(offset) > 40 and len(set(offset)) == len(offset)
    assert forward == offset and backward == offset
    cursor = http.get(path, params={"limit": 2}).json()["endCursor"]
    wrong = http.get(
        path,
        params={"limit": 2, "after": cursor, "actor": "someone-else"}
        if path.endswith("audit")
        else {"limit": 2, "after": cursor, "status": "denied"},
    )
    assert wrong.status_code == 400 and "after" in wrong.json()["message"]
