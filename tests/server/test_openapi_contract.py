"""Issue 9 item 1: the OpenAPI document describes the service, and no input gives a 500.

A bounded schemathesis run (every operation, all phases, all checks, deterministic generation) against
the real service on 127.0.0.1, on both stores; then the specific findings of the issue, one test each.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from console.models import EMAIL_PATTERN, USERNAME_PATTERN, Role, SystemUserCreate
from console.server.app import create_app
from console.server.limits import API_PREFIX
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key, find_keys
from console.server.store import open_store
from tests.conftest import STORES, _stores
from tests.serve_helpers import IPHONE

pytestmark = pytest.mark.parametrize("store_kind", [s for s in STORES if s in _stores()], indirect=True, scope="module")

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = 10  # per operation and phase: about 20 s a store on two busy cores
# 400, 412 and 428 answer requests the schema cannot judge: a cursor from another listing, a stale or
# missing If-Match, an enrolment code that is not (any more) valid. Every other refusal of a schema-valid
# request is a mismatch between the document and the service.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "428", "429"]

[parameters]
"path.key_id" = "{victim}"
# A user with a device, so that pushes and TOTP checks get past "no such user".
"body.userId" = "{user}"
"""


@dataclass
class Served:
    url: str
    admin_key: str
    victim: str  # the id of an admin key the stateful phase may revoke and rotate
    device_token: str
    user: str  # the id of the user with that device


@pytest.fixture(scope="module")
def served(new_db) -> Iterator[Served]:
    store = open_store(new_db())
    seed_directory(store, 20, rng_seed=7)
    admin_key = create_key(store, "contract-admin", Role.ADMIN)
    # The stateful phase revokes and rotates whatever keys it can name: give it one to spend.
    create_key(store, "schemathesis-victim", Role.ADMIN)
    server = ServerThread(create_app(store))
    url = server.start()
    try:
        with httpx.Client(base_url=url, headers={"x-api-key": admin_key}, timeout=30) as http:
            user = http.get("/api/systemusers", params={"limit": 1}).json()["results"][0]
            code = http.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
            enrolled = http.post("/device/v1/enroll", json={"code": code, "name": "phone", "device": IPHONE})
            assert enrolled.status_code == 201, enrolled.text
        yield Served(
            url, admin_key, find_keys(store, "schemathesis-victim")[0].id, enrolled.json()["token"], user["_id"]
        )
    finally:
        server.stop()
        store.dispose()


def test_schemathesis_finds_no_failure_over_every_operation(served, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(victim=served.victim, user=served.user))
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{served.url}/openapi.json",
        "-H",
        f"x-api-key:{served.admin_key}",
        "-H",
        f"Authorization:Bearer {served.device_token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--no-color",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.out").write_text(output)
    operations = len([m for ops in httpx.get(f"{served.url}/openapi.json").json()["paths"].values() for m in ops])
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested.group(1)) == operations, output[-3000:]
    assert run.returncode == 0, output[output.find("FAILURES") :][:6000] or output[-6000:]


# ------------------------------------------------------------------ what the document says


RATE_LIMITED = {"POST /api/v2/protect/totp/verify", "POST /api/v2/protect/push", "POST /device/v1/enroll"}


def test_every_operation_documents_its_error_statuses_with_the_message_body(served) -> None:
    schema = httpx.get(f"{served.url}/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if "operations" not in operation["tags"]:
                assert {"413", "503"} <= set(responses), where
            # 429 where a rate limit or a push refusal can answer it, and only there.
            assert ("429" in responses) == (where in RATE_LIMITED), where
            if operation.get("security") and {} not in operation["security"]:
                assert "401" in responses, where
            if "{" in path:
                assert "404" in responses, where
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, where
            for status, response in responses.items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
                    assert "message" in body["required"], (where, status)


def test_every_api_path_takes_an_api_key_so_the_key_is_checked_before_the_body(served) -> None:
    """limits.RequestGuard checks x-api-key on every /api/ request with a body: true only if every route
    there takes one (and no route elsewhere does)."""
    schema = httpx.get(f"{served.url}/openapi.json").json()
    api_key_schemes = {
        name
        for name, s in schema["components"]["securitySchemes"].items()
        if s["type"] == "apiKey" and s["name"] == "x-api-key"
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            schemes = {name for requirement in operation.get("security", []) for name in requirement}
            required = {} not in operation.get("security", [{}])
            assert (path.startswith(API_PREFIX)) == bool(schemes & api_key_schemes and required), f"{method} {path}"


@pytest.mark.parametrize(
    ("username", "email", "valid"),
    [
        ("0", "000", False),
        ("0", "a@b.c", True),
        ("a b", "a@b.co", False),
        ("a\x1c", "a@b.co", False),
        ("ada", "ada@example", False),
        ("ada", "a b@example.com", False),
        ("ada", "ada@b@c.d", True),
        ("é", "é@é.é", True),
    ],
)
def test_the_schema_patterns_and_the_validation_agree(served, username: str, email: str, valid: bool) -> None:
    by_schema = bool(re.fullmatch(USERNAME_PATTERN, username) and re.fullmatch(EMAIL_PATTERN, email))
    properties = httpx.get(f"{served.url}/openapi.json").json()["components"]["schemas"]["SystemUserCreate"][
        "properties"
    ]
    assert properties["username"]["pattern"] == USERNAME_PATTERN and properties["email"]["pattern"] == EMAIL_PATTERN
    try:
        SystemUserCreate(username=username, email=email)
        by_model = True
    except ValueError:
        by_model = False
    assert by_schema == by_model == valid
    answer = httpx.post(
        f"{served.url}/api/systemusers",
        json={"username": username, "email": email},
        headers={"x-api-key": served.admin_key},
    )
    assert answer.status_code in ((201, 409) if valid else (422,)), answer.text  # 409: taken, so it validated


# ------------------------------------------------------------------ refusals, not 500s


@pytest.mark.parametrize("since", ["0.5", "1700000000", "true", "yesterday", "2026-13-01T00:00:00Z"])
@pytest.mark.parametrize("path", ["/api/v2/protect/pushattempts", "/api/v2/protect/pushstats"])
def test_since_of_the_wrong_type_is_refused_naming_it(served, path: str, since: str) -> None:
    answer = httpx.get(f"{served.url}{path}", params={"since": since}, headers={"x-api-key": served.admin_key})
    assert answer.status_code == 422 and "since" in answer.json()["message"], answer.text


def _raw_json(text: str) -> bytes:
    """JSON with lone surrogates as ``\\udXXX`` escapes (valid JSON, not valid Unicode)."""
    return text.encode("ascii")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/search/systemusers", r'{"filter": {"username": "\ud800"}}', "filter"),
        ("/api/search/systemusers", r'{"filter": {"username": {"$eq": "a\udfff"}}}', "filter"),
        ("/api/search/systemusers", r'{"searchFilter": {"searchTerm": "\ud800"}}', "searchFilter.searchTerm"),
        ("/api/systemusers", r'{"username": "ada\ud800", "email": "ada@example.com"}', "username"),
        ("/api/systemusers", r'{"username": "ada", "email": "ada@example.com", "lastname": "\udc00"}', "lastname"),
        ("/api/v2/protect/push", r'{"userId": "u", "resource": "VPN\ud800"}', "resource"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(served, path: str, body: str, field: str) -> None:
    answer = httpx.post(
        f"{served.url}{path}",
        content=_raw_json(body),
        headers={"x-api-key": served.admin_key, "content-type": "application/json"},
    )
    assert answer.status_code == 422 and field in answer.json()["message"], answer.text


@pytest.mark.parametrize(
    "query", ["search=%ED%A0%80", "filter=username:$eq:%ED%A0%80", "limit=5&sort=%ED%A0%80", "search=%FF"]
)
def test_a_lone_surrogate_in_a_query_is_refused_naming_the_parameter(served, query: str) -> None:
    answer = httpx.get(f"{served.url}/api/systemusers?{query}", headers={"x-api-key": served.admin_key})
    name = query.rpartition("&")[2].partition("=")[0]
    assert answer.status_code == 422 and f"{name} (query)" in answer.json()["message"], answer.text
    assert answer.json()["errors"][0]["field"] == f"{name} (query)"


def test_a_body_that_is_not_utf8_is_refused_as_invalid_json(served) -> None:
    answer = httpx.put(
        f"{served.url}/api/systemusers/nobody",
        content=b'{"firstname": "\xff\xfe"}',
        headers={"x-api-key": served.admin_key, "content-type": "application/json"},
    )
    assert answer.status_code == 422 and "request body" in answer.json()["message"], answer.text


def test_405_names_every_method_of_the_path(served) -> None:
    answer = httpx.request(
        "OPTIONS", f"{served.url}/api/v2/protect/users/x/push/block", headers={"x-api-key": served.admin_key}
    )
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"POST", "DELETE"}
