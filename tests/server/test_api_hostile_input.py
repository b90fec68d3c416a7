"""QA: hostile and boundary input on the admin, resource and device APIs, over real loopback.

What must hold: never a 500, a 4xx whose message names the field, and nothing half-written
(each refusal is followed by a read that shows the state unchanged). Tests whose docstring says
"Was a bug" failed when written (as strict xfails) and guard the fix now.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from datetime import timedelta, timezone

import httpx
import pytest

from console.models import Role

HOSTILE = "[@click=app.quit]x[/]\x1b]0;pwn\x07\u202eevil\u202c 👩‍💻 e\u0301"


@pytest.fixture(scope="module")
def backend(new_db):  # overrides conftest's per-test backend for speed
    """One real service for the whole module (same parts as conftest's): every test here only adds
    uniquely named users and devices, and reads what it wrote, so they can share it."""
    from types import SimpleNamespace

    from console.server.app import create_app
    from console.server.runner import ServerThread
    from console.server.seed import seed_directory
    from console.server.services.keys import create_key
    from console.server.store import open_store

    store = open_store(new_db())  # SQLite or PostgreSQL (conftest's store_kind)
    seed_directory(store, 300, rng_seed=7)
    server = ServerThread(create_app(store))
    server.start()
    yield SimpleNamespace(
        url=server.url,
        store=store,
        admin_key=create_key(store, "qa-admin", Role.ADMIN),
        key=lambda role, name=None: create_key(store, name or f"qa-{Role(role).value}", Role(role)),
    )
    server.stop()
    store.dispose()


@pytest.fixture(scope="module")
def http(backend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as client:
        yield client


def refused(response: httpx.Response, status: int | tuple[int, ...], *names: str) -> str:
    """A clean refusal: the status, a JSON ``message``, naming each of ``names``."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    message = response.json()["message"]
    for name in names:
        assert name in message, (name, message)
    return message


def all_users(http: httpx.Client) -> list[dict]:
    users: list[dict] = []
    while True:
        page = http.get("/api/systemusers", params={"skip": len(users), "limit": 100}).json()
        users.extend(page["results"])
        if len(users) >= page["totalCount"] or not page["results"]:
            return users


def audit_total(http: httpx.Client) -> int:
    return http.get("/api/v2/protect/audit", params={"limit": 1}).json()["totalCount"]


def create(http: httpx.Client, username: str, **fields: str) -> dict:
    body = {"username": username, "email": f"{zlib.crc32(username.encode())}@qa.example", **fields}
    response = http.post("/api/systemusers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def raw_json(text: str) -> bytes:
    """JSON bytes that may carry lone surrogates (as ``\\udXXX`` escapes, which is valid JSON)."""
    return text.encode("ascii")


# ------------------------------------------------------------------ names: unicode edge cases

NAME_FIELDS = ("firstname", "lastname", "displayname")
ACCEPTED_NAMES = {
    "ascii-1024": "a" * 1024,
    "astral-1024": "😀" * 1024,  # 1,024 characters, 2,048 UTF-16 units, 4,096 UTF-8 bytes
    "combining-1024": "e" + "\u0301" * 1023,  # one glyph, 1,024 code points
    "cjk-rtl-mix": "界" * 500 + "שלום" * 100 + "مرحبا" * 20 + "x" * 24,
    "bidi-controls": ("\u202e\u2066\u200f" * 341) + "z",
    "zwj-bom-nbsp": "\ufeff\u200d\u00a0\u2028" * 256,
    "markup-and-escapes": HOSTILE,
}


@pytest.mark.parametrize("value", list(ACCEPTED_NAMES.values()), ids=list(ACCEPTED_NAMES))
def test_any_unicode_up_to_1024_characters_round_trips_exactly(http, value) -> None:
    assert len(value) <= 1024
    user = create(
        http,
        f"uni{len(value)}x{zlib.crc32(value.encode()) % 10**6}",
        firstname=value,
        lastname=value,
        displayname=value,
    )
    again = http.get(f"/api/systemusers/{user['_id']}").json()
    for field in NAME_FIELDS:
        assert again[field] == value  # stored and served byte for byte: data is data
    changed = http.put(f"/api/systemusers/{user['_id']}", json={"displayname": value[::-1]})
    assert changed.status_code == 200 and changed.json()["displayname"] == value[::-1]


@pytest.mark.parametrize("field", NAME_FIELDS)
def test_1025_characters_nul_and_lone_surrogates_are_refused_naming_the_field_and_nothing_is_written(
    http, field
) -> None:
    user = create(http, f"bound-{field}", firstname="Keep", lastname="Keep", displayname="Keep")
    before_users = http.get("/api/systemusers", params={"limit": 1}).json()["totalCount"]
    before_audit = audit_total(http)
    for bad in ("b" * 1025, "😀" * 1025, "ok\x00nul"):
        refused(
            http.post("/api/systemusers", json={"username": f"new-{field}", "email": "n@qa.example", field: bad}),
            422,
            field,
        )
        # A valid field next to the bad one must not be applied either.
        refused(http.put(f"/api/systemusers/{user['_id']}", json={"state": "SUSPENDED", field: bad}), 422, field)
    lone = raw_json(f'{{"username": "sur-{field}", "email": "s@qa.example", "{field}": "x\\ud800y"}}')
    refused(http.post("/api/systemusers", content=lone, headers={"content-type": "application/json"}), 422, field)
    lone_put = raw_json(f'{{"state": "SUSPENDED", "{field}": "\\udfff"}}')
    refused(
        http.put(f"/api/systemusers/{user['_id']}", content=lone_put, headers={"content-type": "application/json"}),
        422,
        field,
    )

    after = http.get(f"/api/systemusers/{user['_id']}").json()
    assert (after["state"], after[field]) == ("ACTIVATED", "Keep")
    assert http.get("/api/systemusers", params={"limit": 1}).json()["totalCount"] == before_users
    assert audit_total(http) == before_audit


def test_username_and_email_rules_name_the_field(http) -> None:
    for username in ("", " ", "two words", "tab\there", "nl\nx", "x" * 1025, "nul\x00"):
        refused(http.post("/api/systemusers", json={"username": username, "email": "u@qa.example"}), 422, "username")
    for email in ("", "no-at", "@qa.example", "a@nodot", "a b@qa.example", "x" * 250 + "@q.ex"):
        refused(http.post("/api/systemusers", json={"username": "okname", "email": email}), 422, "email")
    taken = create(http, "Taken.Name")
    # Case-insensitive uniqueness (including Unicode case folding), and a 409 leaves the rest unchanged.
    refused(http.post("/api/systemusers", json={"username": "TAKEN.name", "email": "t2@qa.example"}), 409, "username")
    other = create(http, "strasse.user")
    refused(
        http.put(f"/api/systemusers/{other['_id']}", json={"firstname": "Changed", "username": "taken.NAME"}),
        409,
        "username",
    )
    refused(http.post("/api/systemusers", json={"username": "STRASSE.USER", "email": "s2@qa.example"}), 409, "username")
    assert http.get(f"/api/systemusers/{other['_id']}").json()["firstname"] == ""
    assert taken["username"] == "Taken.Name"


# ------------------------------------------------------------------ list: skip, limit, filter, sort, search


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"skip": -1}, "skip"),
        ({"skip": "1.5"}, "skip"),
        ({"skip": "1e3"}, "skip"),
        ({"skip": 10**30}, "skip"),
        ({"skip": "NaN"}, "skip"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "０１"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"sort": "username " * 60}, "sort"),
        ({"search": "s" * 1025}, "search"),
    ],
)
def test_paging_and_length_bounds_are_422_naming_the_parameter(http, params, field) -> None:
    refused(http.get("/api/systemusers", params=params), 422, field)


def test_skip_past_the_end_and_at_the_cap(http) -> None:
    total = http.get("/api/systemusers", params={"limit": 1}).json()["totalCount"]
    for skip in (total, total + 1, 10_000_000):
        page = http.get("/api/systemusers", params={"skip": skip, "limit": 100}).json()
        assert page == {"totalCount": total, "results": []}


@pytest.mark.parametrize(
    ("flt", "names"),
    [
        ("a:$eq:", ("'a'",)),
        (":$eq:x", (":$eq:x",)),
        ("username", ("username",)),
        ("username:$eq", ("username:$eq",)),
        ("username:$like:x", ("$like", "username")),
        ("username:eq:x", ("'eq'",)),
        ("password:$eq:x", ("password",)),
        ("mfaEnrollment:$eq:ENROLLED", ("mfaEnrollment",)),
        ("mfaEnrollment.foo:$eq:x", ("mfaEnrollment.foo",)),
        ("state:$eq:activated", ("state", "activated")),
        ("account_locked:$eq:yes", ("account_locked", "yes")),
        ("mfaEnrollment.pushStatus:$eq:enrolled", ("mfaEnrollment.pushStatus",)),
        ("created:$gt:now", ("created", "now")),
        ("created:$gt:2024-13-01", ("created",)),
        ("created:$gt:2024-01-01T00:00:00+25:00", ("created",)),
        (f"username:$x{HOSTILE}:y", ("username",)),
    ],
)
def test_bad_filters_are_400_naming_the_field_or_operator(http, flt, names) -> None:
    message = refused(http.get("/api/systemusers", params={"filter": flt}), 400, *names)
    assert "\x1b" not in message and "\x07" not in message


def test_filter_values_may_hold_colons_and_filters_and(http) -> None:
    colon = create(http, "a:b:c")
    page = http.get("/api/systemusers", params={"filter": "username:$eq:a:b:c"}).json()
    assert [u["_id"] for u in page["results"]] == [colon["_id"]]
    # Repeated filters are ANDed, also on the same field.
    both = http.get(
        "/api/systemusers", params=[("filter", "username:$eq:a:b:c"), ("filter", "username:$ne:a:b:c")]
    ).json()
    assert both["totalCount"] == 0
    empty = http.get("/api/systemusers", params={"filter": "username:$eq:"}).json()
    assert empty["totalCount"] == 0


@pytest.mark.parametrize(
    "offset", [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-9, minutes=-30), timedelta(hours=14)]
)
def test_created_filter_honours_timezone_offsets(http, offset) -> None:
    from datetime import datetime

    user = create(http, f"tz{int(offset.total_seconds())}")
    created = datetime.fromisoformat(user["created"].replace("Z", "+00:00"))
    local = created.astimezone(timezone(offset)).isoformat()

    def count(op: str) -> int:
        params = [("filter", f"_id:$eq:{user['_id']}"), ("filter", f"created:{op}:{local}")]
        return http.get("/api/systemusers", params=params).json()["totalCount"]

    assert (count("$eq"), count("$gte"), count("$lte"), count("$gt"), count("$lt"), count("$ne")) == (1, 1, 1, 0, 0, 0)


@pytest.mark.parametrize(
    "sort",
    [
        "username username",
        "-username -username",
        "---username",
        "+username",
        "username,email",
        "created -created",
        "mfaEnrollment.pushStatus -mfaEnrollment.overallStatus state account_locked totp_enabled _id email lastname",
    ],
)
def test_odd_but_valid_sorts_page_without_overlap(http, sort) -> None:
    seen: list[str] = []
    total = 1
    while len(seen) < total:
        page = http.get("/api/systemusers", params={"sort": sort, "skip": len(seen), "limit": 100}).json()
        total = page["totalCount"]
        seen.extend(u["_id"] for u in page["results"])
        assert page["results"]
    assert len(seen) == len(set(seen)) == total  # a stable tiebreak: no row twice, none lost


@pytest.mark.parametrize("sort", ["nope", "-", "- username", "password", f"username {HOSTILE}"])
def test_unknown_sort_fields_are_400_naming_them(http, sort) -> None:
    refused(http.get("/api/systemusers", params={"sort": sort}), 400, "sort field")


SEARCH_TERMS = [
    "%",
    "_",
    "\\",
    "'",
    '"',
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    "%%",
    "\\%",
    "_n",
    "a%",
    "%a",
    "[",
    "*",
    ".*",
    "ANTHONY",
    "ß",
    "İ",
    "e\u0301",
    "\u202e",
    "😀",
    "pct%",
    "under_",
    "back\\",
]


def test_search_metacharacters_are_literal(http) -> None:
    for username in ("pct%sign", "under_score", "back\\slash", "quote'o", 'dq"x', "star*x"):
        create(http, username, firstname="Meta")
    users = all_users(http)
    for term in SEARCH_TERMS:
        folded = term.casefold()
        expected = {
            u["_id"]
            for u in users
            if any(folded in (u[f] or "").casefold() for f in ("username", "email", "firstname", "lastname"))
        }
        got = http.get("/api/systemusers", params={"search": term, "limit": 100}).json()
        assert {u["_id"] for u in got["results"]} == expected and got["totalCount"] == len(expected), term
        body = {"searchFilter": {"searchTerm": term}}
        posted = http.post("/api/search/systemusers", params={"limit": 100}, json=body).json()
        assert {u["_id"] for u in posted["results"]} == expected, term
    assert http.get("/api/systemusers", params={"limit": 1}).json()["totalCount"] == len(users)  # nothing dropped


def test_nul_in_search_matches_nothing_or_is_refused(http) -> None:
    """Was a bug (fixed in f27db3a): SQLite cut the LIKE pattern at the NUL, so '\\x00' matched everyone."""
    total = http.get("/api/systemusers", params={"limit": 1}).json()["totalCount"]
    for term in ("\x00", "a\x00zzzz-no-such-user"):
        response = http.get("/api/systemusers", params={"search": term})
        assert (response.status_code == 400 and "search" in response.json()["message"]) or (
            response.status_code == 200 and response.json()["totalCount"] == 0
        ), (term, response.status_code, response.json().get("totalCount"), total)
        posted = http.post("/api/search/systemusers", json={"searchFilter": {"searchTerm": term}})
        assert posted.status_code == 400 or posted.json()["totalCount"] == 0, (term, posted.json().get("totalCount"))


def test_a_thousand_repeated_filters_are_refused_not_500(http) -> None:
    """Was a bug (fixed in 9df99cd): ~1,000 ANDed filters exceeded SQLite's expression depth -> 500."""
    refused(http.get("/api/systemusers", params=[("filter", "state:$ne:STAGED")] * 1001), 400, "filter")
    assert http.get("/api/systemusers", params=[("filter", "state:$ne:STAGED")] * 64).status_code == 200


def test_a_thousand_search_fields_are_refused_not_500(http) -> None:
    """Was a bug (fixed in 9df99cd): one LIKE per listed field, ~1,000 of them -> 500."""
    response = http.post(
        "/api/search/systemusers", json={"searchFilter": {"searchTerm": "a", "fields": ["username"] * 1000}}
    )
    refused(response, 422, "searchFilter.fields")
    fields = ["username", "username", "email", "email", "lastname"]  # duplicates within the cap: counted once
    dup = http.post("/api/search/systemusers", json={"searchFilter": {"searchTerm": "a", "fields": fields}})
    plain = http.post(
        "/api/search/systemusers",
        json={"searchFilter": {"searchTerm": "a", "fields": ["username", "email", "lastname"]}},
    )
    assert dup.status_code == 200 and dup.json() == plain.json()


def test_search_body_odd_shapes_are_refused_not_500(http) -> None:
    cases = [
        ({"filter": {"and": "x"}}, 400, "filter"),
        ({"filter": {"and": [1]}}, 400, "filter"),
        ({"filter": {"nope": 1}}, 400, "nope"),
        ({"filter": {"username": {"$regex": "a"}}}, 400, "$regex"),
        ({"filter": {"account_locked": None}}, 400, "account_locked"),
        ({"filter": {"created": {"$gt": [1]}}}, 400, "created"),
        ({"filter": "username"}, 422, "filter"),
        ({"searchFilter": {"fields": ["password"]}}, 422, "searchFilter.fields"),
        ({"searchFilter": {"searchTerm": 5}}, 422, "searchFilter.searchTerm"),
        ({"searchFilter": {"searchTerm": "x" * 1025}}, 422, "searchFilter.searchTerm"),
        ({"extra": 1}, 422, "extra"),
    ]
    for body, status, name in cases:
        refused(http.post("/api/search/systemusers", json=body), status, name)
    lone = raw_json('{"searchFilter": {"searchTerm": "\\ud800"}}')
    refused(
        http.post("/api/search/systemusers", content=lone, headers={"content-type": "application/json"}),
        422,
        "searchTerm",
    )
    # Deep nesting of objects is fine (and past the parser's limit it is a 400, not a crash).
    for depth in (50, 500, 5000):
        body = '{"filter":' + '{"and":' * depth + "{}" + "}" * depth + "}"
        response = http.post("/api/search/systemusers", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (200, 400), (depth, response.status_code)


def test_deeply_nested_filter_lists_are_refused_not_500(http) -> None:
    """Was a bug (fixed in f27db3a): RecursionError -> 500 at about 500 nested lists."""
    for depth in (600, 20):
        body = '{"filter":{"and":' + "[" * depth + "{}" + "]" * depth + "}}"
        response = http.post("/api/search/systemusers", content=body, headers={"content-type": "application/json"})
        refused(response, 400, "filter")


@pytest.mark.parametrize("flt", ["totp_enabled:$gt:false", "account_locked:$lt:true", "totp_enabled:$lte:true"])
def test_ordering_operators_on_boolean_fields_are_not_500(http, flt) -> None:
    """Was a bug (fixed in f27db3a): SQLAlchemy's ArgumentError -> 500."""
    field, op, _value = flt.split(":")
    refused(http.get("/api/systemusers", params={"filter": flt}), 400, field, op)
    refused(http.post("/api/search/systemusers", json={"filter": {field: {op: True}}}), 400, field, op)


@pytest.mark.parametrize(
    ("where", "name"),
    [("filter", "created"), ("search-body", "created"), ("since", "since"), ("exclusionUntil", "exclusionUntil")],
)
def test_extreme_dates_with_offsets_are_refused_not_500(http, where, name) -> None:
    """Was a bug (fixed in f27db3a): OverflowError in clock.from_wire -> 500 on all four paths."""
    low, high = "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"
    user = http.get("/api/systemusers", params={"limit": 1}).json()["results"][0]
    before = http.get(f"/api/systemusers/{user['_id']}").json()
    for value in (low, high):
        if where == "filter":
            response = http.get("/api/systemusers", params={"filter": f"created:$gt:{value}"})
        elif where == "search-body":
            response = http.post("/api/search/systemusers", json={"filter": {"created": {"$gt": value}}})
        elif where == "since":
            response = http.get("/api/v2/protect/pushattempts", params={"since": value})
        else:
            response = http.post(
                f"/api/systemusers/{user['_id']}/resetmfa", json={"exclusion": True, "exclusionUntil": value}
            )
        refused(response, 400, name)
    if where == "exclusionUntil":
        assert http.get(f"/api/systemusers/{user['_id']}").json()["mfaEnrollment"] == before["mfaEnrollment"]


# ------------------------------------------------------------------ bodies, content types, ids


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/xml",
        None,
        "application/json; charset=utf-16",
    ],
)
def test_wrong_content_types_are_422_not_500(http, content_type) -> None:
    user = http.get("/api/systemusers", params={"limit": 1}).json()["results"][0]
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"firstname": "ViaWrongType"}).encode()
    for method, path in (
        ("PUT", f"/api/systemusers/{user['_id']}"),
        ("POST", "/api/systemusers"),
        ("POST", "/api/search/systemusers"),
        ("PATCH", "/api/v2/protect/settings"),
    ):
        response = http.request(method, path, content=body, headers={**headers, "If-Match": "*"})
        assert 400 <= response.status_code < 500 or response.status_code == 200, (
            method,
            content_type,
            response.status_code,
        )
        assert response.json()["message"] if response.status_code >= 400 else True


def test_put_with_empty_or_null_body(http) -> None:
    user = http.get("/api/systemusers", params={"limit": 1}).json()["results"][0]
    audit = audit_total(http)
    refused(http.put(f"/api/systemusers/{user['_id']}"), 422, "request body")
    refused(
        http.put(f"/api/systemusers/{user['_id']}", content=b"", headers={"content-type": "application/json"}),
        422,
        "request body",
    )
    refused(
        http.put(f"/api/systemusers/{user['_id']}", content=b"[]", headers={"content-type": "application/json"}),
        422,
        "request body",
    )
    refused(
        http.put(f"/api/systemusers/{user['_id']}", content=b"{", headers={"content-type": "application/json"}),
        (400, 422),
    )
    refused(http.put(f"/api/systemusers/{user['_id']}", json={"_id": "0" * 24}), 422, "_id")
    refused(http.put(f"/api/systemusers/{user['_id']}", json={"totp_enabled": True}), 422, "totp_enabled")
    unchanged = http.put(f"/api/systemusers/{user['_id']}", json={})
    assert unchanged.status_code == 200 and unchanged.json() == http.get(f"/api/systemusers/{user['_id']}").json()
    assert audit_total(http) == audit  # no change, no audit event


BAD_IDS = {
    "short": "x",
    "zeros": "0" * 24,
    "non-hex": "Z" * 24,
    "space": "%20",
    "3000-chars": "a" * 3000,
    "nul": "%00",
    "lone-surrogate-bytes": "%ED%A0%80",
    "rlo": "%E2%80%AE",
    "traversal": "..%2F..%2Fetc",
    "sql": "1;DROP TABLE users",
}


@pytest.mark.parametrize("bad_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_ids_of_the_wrong_shape_are_404_on_every_user_route(http, bad_id) -> None:
    for method, path, body in (
        ("GET", "/api/systemusers/{}", None),
        ("PUT", "/api/systemusers/{}", {"firstname": "x"}),
        ("POST", "/api/systemusers/{}/resetmfa", {}),
        ("GET", "/api/v2/users/{}/pushendpoints", None),
        ("GET", "/api/v2/users/{}/pushendpoints/abc", None),
        ("DELETE", "/api/v2/users/{}/pushendpoints/abc", None),
        ("PATCH", "/api/v2/users/{}/pushendpoints/abc", {"name": "n"}),
        ("POST", "/api/v2/protect/users/{}/totp/reset", None),
        ("POST", "/api/v2/protect/users/{}/enrollments", None),
    ):
        response = http.request(method, path.format(bad_id), json=body)
        assert response.status_code == 404, (method, path, bad_id, response.status_code, response.text[:100])
        assert response.json()["message"]
    for path, params in (
        ("/api/v2/protect/pushattempts", {"userId": "\u202e\x1b"}),
        ("/api/v2/protect/push/" + bad_id, None),
    ):
        assert http.get(path, params=params).status_code in (200, 404)


# ------------------------------------------------------------------ settings: If-Match


def test_if_match_oddities(http) -> None:
    def etag() -> str:
        return http.get("/api/v2/protect/settings").headers["etag"]

    def settings() -> dict:
        return http.get("/api/v2/protect/settings").json()

    change = {"totp": {"maxFailures": 7}}
    original, audit = settings(), audit_total(http)
    refused(http.patch("/api/v2/protect/settings", json=change), 428, "If-Match")
    refused(http.patch("/api/v2/protect/settings", json=change, headers={"If-Match": ""}), 428, "If-Match")
    for garbage in (
        "garbage",
        '"settings-999"',
        "settings-0",
        f"W/W/{etag()}",
        f"{etag()}x",
        '"*"',
        "W/*",
        "\u202eevil 👩".encode(),
        HOSTILE.encode(),
    ):
        try:
            response = http.patch("/api/v2/protect/settings", json=change, headers={"If-Match": garbage})
        except httpx.LocalProtocolError:
            continue  # not sendable as a header at all
        refused(response, 412)
    assert settings() == original and audit_total(http) == audit  # nothing written by any refusal

    # A stale ETag after a real change.
    stale = etag()
    assert http.patch("/api/v2/protect/settings", json=change, headers={"If-Match": stale}).status_code == 200
    refused(http.patch("/api/v2/protect/settings", json={"totp": {"maxFailures": 9}}, headers={"If-Match": stale}), 412)
    assert settings()["totp"]["maxFailures"] == 7
    # `*` means "whatever the current version is".
    assert (
        http.patch("/api/v2/protect/settings", json={"totp": {"maxFailures": 8}}, headers={"If-Match": "*"}).status_code
        == 200
    )
    # Out-of-range values name the field and change nothing, even with a good ETag.
    for body, name in (
        ({"push": {"concurrentLimit": {"max": 11}}}, "push.concurrentLimit.max"),
        ({"push": {"concurrentLimit": {"max": 0}}}, "push.concurrentLimit.max"),
        ({"push": {"concurrentLimit": {"max": 2.5}}}, "push.concurrentLimit.max"),
        ({"push": {"timeoutSeconds": 29}}, "push.timeoutSeconds"),
        ({"push": {"timeoutSeconds": 10**40}}, "push.timeoutSeconds"),
        ({"totp": {"maxFailures": -1}}, "totp.maxFailures"),
        ({"push": {"timeoutSeconds": 60, "nope": 1}}, "push.nope"),
        ({"push": []}, "push"),
    ):
        before = settings()
        refused(http.patch("/api/v2/protect/settings", json=body, headers={"If-Match": etag()}), 422, name)
        assert settings() == before


# ------------------------------------------------------------------ device and resource APIs


def enrolled(http: httpx.Client, url: str, username: str) -> tuple[dict, str]:
    user = create(http, username)
    code = http.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
    device = {"make": "Apple", "model": "iPhone", "os": "iOS", "osVersion": "17.0", "appVersion": "2.6.0"}
    response = httpx.post(f"{url}/device/v1/enroll", json={"code": code, "name": "n", "device": device})
    assert response.status_code == 201, response.text
    return user, response.json()["token"]


@pytest.mark.parametrize(
    ("os_name", "version", "accepted"),
    [
        ("iOS", "13", True),
        ("iOS", "13.", True),
        ("iOS", "12.9", False),
        ("iOS", "13abc", False),
        ("iOS", ".13", False),
        ("iOS", "-13", False),
        ("iOS", "+13", False),
        ("iOS", " 13", False),
        ("Android", "8", True),
        ("Android", "7.1.2", False),
        ("Android", "9" * 32, True),
        ("iOS", "⑬", False),
        ("iOS", "1_3", False),
    ],
)
def test_device_os_version_rule_names_the_field(http, backend, os_name, version, accepted) -> None:
    user = create(http, f"os-{os_name}-{zlib.crc32(version.encode())}")
    code = http.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
    device = {"make": "M", "model": "X", "os": os_name, "osVersion": version, "appVersion": "1"}
    response = httpx.post(f"{backend.url}/device/v1/enroll", json={"code": code, "name": "n", "device": device})
    if accepted:
        assert response.status_code == 201, response.text
    else:
        refused(response, 422, "device.osVersion")
        assert http.get(f"/api/v2/users/{user['_id']}/pushendpoints").json() == []


@pytest.mark.parametrize("version", ["²", "¹³", "13²", "١٣", "०13"])
def test_non_ascii_digit_os_versions_are_refused_not_500(http, backend, version) -> None:
    """Was a bug (fixed in f27db3a): str.isdigit() admitted '²', which int() refused -> 500."""
    user = create(http, f"sup-{zlib.crc32(version.encode())}")
    code = http.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
    device = {"make": "M", "model": "X", "os": "iOS", "osVersion": version, "appVersion": "1"}
    response = httpx.post(f"{backend.url}/device/v1/enroll", json={"code": code, "name": "n", "device": device})
    assert response.status_code == 422 and "osVersion" in response.json()["message"], response.status_code


def test_device_api_hostile_input(http, backend) -> None:
    _user, token = enrolled(http, backend.url, "device.hostile")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=backend.url, headers=auth, timeout=30) as phone:
        refused(phone.post("/device/v1/pushes/nope/respond", json={"decision": "approve"}), 404)
        refused(phone.post("/device/v1/pushes/nope/respond", json={"decision": "maybe"}), 422, "decision")
        refused(phone.post("/device/v1/pushes/nope/respond", json={"decision": "deny", "extra": 1}), 422, "extra")
        refused(phone.put("/device/v1/settings", json={"diagnosticsOptOut": "perhaps"}), 422, "diagnosticsOptOut")
        refused(phone.post("/device/v1/diagnostics", json=[1, 2]), 422, "request body")
        refused(phone.post("/device/v1/diagnostics", json={"blob": "x" * 70_000}), 422, "diagnostics")
        deep = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
        assert phone.post(
            "/device/v1/diagnostics", content=deep, headers={"content-type": "application/json"}
        ).status_code in (400, 422)
        assert phone.post("/device/v1/diagnostics", json={"ok": HOSTILE}).status_code == 202
    for header in (
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer " + "x" * 8000},
        {"Authorization": "Bearer pd_" + token[3:][::-1]},
    ):
        refused(httpx.get(f"{backend.url}/device/v1/pushes", headers=header), 401)
    for body, name in (
        ({"code": "", "name": "n", "device": {}}, "code"),
        ({"code": "x" * 65, "name": "n"}, "code"),
        (
            {
                "code": "AAAA-BBBB-CCCC-DDDD",
                "name": "n",
                "device": {"make": "M", "model": "X", "os": "Windows", "osVersion": "11", "appVersion": "1"},
            },
            "device.os",
        ),
    ):
        refused(httpx.post(f"{backend.url}/device/v1/enroll", json=body), 422, name)


@pytest.mark.parametrize("body", ['{"x": "\\ud800"}', '{"\\udfff": 1}'])
def test_diagnostics_with_lone_surrogates_are_refused_not_500(http, backend, body) -> None:
    """Was a bug (fixed in f27db3a): UnicodeEncodeError on .encode() -> 500."""
    _user, token = enrolled(http, backend.url, f"diag-{zlib.crc32(body.encode())}")
    response = httpx.post(
        f"{backend.url}/device/v1/diagnostics",
        content=raw_json(body),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert response.status_code in (202, 400, 422), response.status_code


def test_resource_api_hostile_input(http, backend) -> None:
    user, _token = enrolled(http, backend.url, "resource.hostile")
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.key(Role.SERVICE)}, timeout=30) as svc:
        total = http.get("/api/v2/protect/pushattempts", params={"userId": user["_id"]}).json()["totalCount"]
        for body, name in (
            ({"userId": user["_id"], "resource": "r" * 1025}, "resource"),
            ({"userId": user["_id"], "resource": ""}, "resource"),
            ({"userId": user["_id"], "resource": "nul\x00"}, "resource"),
            ({"userId": "u" * 65, "resource": "r"}, "userId"),
            ({"userId": user["_id"], "resource": "r", "context": {"ip": "1" * 65}}, "context.ip"),
            ({"userId": user["_id"], "resource": "r", "context": {"app": 5}}, "context.app"),
            ({"userId": user["_id"], "resource": "r", "context": {"location": "l" * 1025}}, "context.location"),
            ({"userId": user["_id"], "resource": "r", "context": {"os": "x"}}, "context.os"),
        ):
            refused(svc.post("/api/v2/protect/push", json=body), 422, name)
        assert http.get("/api/v2/protect/pushattempts", params={"userId": user["_id"]}).json()["totalCount"] == total
        refused(svc.post("/api/v2/protect/push", json={"userId": "0" * 24, "resource": "r"}), 404)
        for code in ("12345", "1234567", "１２３４５６", "٠١٢٣٤٥", "123456\n", " 123456", "12345a"):
            refused(svc.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": code}), 422, "code")
        refused(svc.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": 123456}), 422, "code")
        # A well-formed request with hostile text is accepted and stored as data.
        created = svc.post(
            "/api/v2/protect/push", json={"userId": user["_id"], "resource": HOSTILE, "context": {"app": HOSTILE}}
        )
        assert created.status_code == 201
        stored = http.get(f"/api/v2/protect/push/{created.json()['id']}").json()
        assert stored["resource"] == HOSTILE and stored["context"]["app"] == HOSTILE


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"exclusion": True, "exclusionDays": 0}, "exclusionDays"),
        ({"exclusion": True, "exclusionDays": 366}, "exclusionDays"),
        ({"exclusion": True, "exclusionDays": 1.5}, "exclusionDays"),
        ({"exclusion": True, "exclusionDays": "x"}, "exclusionDays"),
        (
            {"exclusion": True, "exclusionDays": 2, "exclusionUntil": "2999-01-01T00:00:00Z"},
            "exclusionDays or exclusionUntil",
        ),
        ({"exclusion": True, "exclusionUntil": "2000-01-01T00:00:00Z"}, "exclusionUntil"),
        ({"exclusion": True, "exclusionUntil": "soon"}, "exclusionUntil"),
        ({"exclusion": "perhaps"}, "exclusion"),
        ({"grace": 3}, "grace"),
    ],
)
def test_resetmfa_refusals_name_the_field_and_remove_nothing(http, backend, body, name) -> None:
    user, token = enrolled(http, backend.url, f"reset-{zlib.crc32(json.dumps(body).encode())}")
    refused(http.post(f"/api/systemusers/{user['_id']}/resetmfa", json=body), (400, 422), name)
    assert len(http.get(f"/api/v2/users/{user['_id']}/pushendpoints").json()) == 1
    assert httpx.get(f"{backend.url}/device/v1/pushes", headers={"Authorization": f"Bearer {token}"}).status_code == 200
