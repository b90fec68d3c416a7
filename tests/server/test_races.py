"""QA: races on the real service over loopback (uvicorn's thread pool + SQLite WAL).

Each test fires many identical requests at once and then checks the one invariant that
matters, both in the answers and with a follow-up read.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest

from console.models import Role
from console.server.services.totp import current_step

N = 24
IPHONE = {
    "make": "Apple",
    "model": "iPhone 15",
    "os": "iOS",
    "osVersion": "17.4",
    "appVersion": "2.6.0",
    "uvEnabled": True,
}


async def create_user(http: httpx.AsyncClient, name: str) -> dict:
    response = await http.post("/api/systemusers", json={"username": name, "email": f"{name}@race.example"})
    assert response.status_code == 201, response.text
    return response.json()


async def enroll(http: httpx.AsyncClient, user_id: str) -> str:
    code = (await http.post(f"/api/v2/protect/users/{user_id}/enrollments")).json()["code"]
    response = await http.post("/device/v1/enroll", json={"code": code, "name": "phone", "device": IPHONE})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture
async def admin(backend):
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=60) as http:
        yield http


async def test_one_totp_code_raced_n_times_is_accepted_exactly_once(make_backend, manual_clock) -> None:
    backend = make_backend(users=0, clock=manual_clock)  # a frozen clock: the code cannot roll over mid-race
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=60) as http:
        user = await create_user(http, "totp.race")
        token = await enroll(http, user["_id"])
        uri = (await http.post("/device/v1/totp", headers={"Authorization": f"Bearer {token}"})).json()["otpauthUri"]
        secret = parse_qs(urlparse(uri).query)["secret"][0]
        code = pyotp.TOTP(secret).generate_otp(current_step(manual_clock.now()))
        service = {"x-api-key": backend.key(Role.SERVICE)}
        helpdesk = {"x-api-key": backend.key(Role.HELPDESK)}
        # Half from a login flow (service), half from the support desk (helpdesk): the same code, at once.
        answers = await asyncio.gather(
            *(
                http.post(
                    "/api/v2/protect/totp/verify",
                    json={"userId": user["_id"], "code": code},
                    headers=service if i % 2 else helpdesk,
                )
                for i in range(N)
            )
        )
        assert {a.status_code for a in answers} == {200}
        results = [a.json() for a in answers]
        assert sum(r["valid"] for r in results) == 1, results
        assert all(r["reason"] == "code was already used" for r in results if not r["valid"]), results
        again = await http.post(
            "/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": code}, headers=service
        )
        assert again.json()["valid"] is False  # still spent


async def test_replays_of_an_accepted_code_do_not_lock_the_user_out(make_backend, manual_clock) -> None:
    """Was a bug (fixed in f27db3a): every rejected code counted toward the lock-out, replays included, so a
    double-submitted correct code (or the race above) locked the user's TOTP right after they logged in."""
    backend = make_backend(users=0, clock=manual_clock)
    async with (
        httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.key(Role.SERVICE)}, timeout=60) as svc,
        httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=60) as http,
    ):
        user = await create_user(http, "replay.lock")
        token = await enroll(http, user["_id"])
        uri = (await http.post("/device/v1/totp", headers={"Authorization": f"Bearer {token}"})).json()["otpauthUri"]
        totp = pyotp.parse_uri(uri)
        code = totp.generate_otp(current_step(manual_clock.now()))
        assert (await svc.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": code})).json()[
            "valid"
        ]
        for _ in range(6):  # the same good code, sent again (sequentially: no race needed)
            await svc.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": code})
        manual_clock.advance(30)
        following = totp.generate_otp(current_step(manual_clock.now()))
        answer = (await svc.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": following})).json()
        assert answer == {"valid": True, "reason": None}, answer


async def test_wrong_codes_raced_count_up_to_the_lockout_and_no_further(make_backend, manual_clock) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=60) as http:
        user = await create_user(http, "lock.race")
        token = await enroll(http, user["_id"])
        uri = (await http.post("/device/v1/totp", headers={"Authorization": f"Bearer {token}"})).json()["otpauthUri"]
        totp = pyotp.parse_uri(uri)
        good = totp.generate_otp(current_step(manual_clock.now()))
        wrong = f"{(int(good) + 1) % 1_000_000:06d}"
        answers = await asyncio.gather(
            *(http.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": wrong}) for _ in range(N))
        )
        assert all(a.status_code == 200 and a.json()["valid"] is False for a in answers)
        locked = (await http.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": good})).json()
        assert locked["valid"] is False and "locked" in locked["reason"]
        assert (await http.post(f"/api/v2/protect/users/{user['_id']}/totp/reset")).status_code == 200


async def test_one_enrollment_code_raced_n_times_enrolls_exactly_one_device(admin) -> None:
    user = await create_user(admin, "enroll.race")
    code = (await admin.post(f"/api/v2/protect/users/{user['_id']}/enrollments")).json()["code"]
    answers = await asyncio.gather(
        *(
            admin.post("/device/v1/enroll", json={"code": code, "name": f"phone {i}", "device": IPHONE})
            for i in range(N)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [400] * (N - 1), statuses
    assert all("code" in a.json()["message"] for a in answers if a.status_code == 400)
    devices = (await admin.get(f"/api/v2/users/{user['_id']}/pushendpoints")).json()
    winner = next(a.json() for a in answers if a.status_code == 201)
    assert [d["id"] for d in devices] == [winner["deviceId"]]
    # Only the winner's token works.
    tokens = [winner["token"]]
    assert (await admin.get("/device/v1/pushes", headers={"Authorization": f"Bearer {tokens[0]}"})).status_code == 200


async def test_settings_patched_n_times_with_one_etag_exactly_one_wins(admin) -> None:
    read = await admin.get("/api/v2/protect/settings")
    etag, before = read.headers["etag"], read.json()
    audit_before = (await admin.get("/api/v2/protect/audit", params={"limit": 1})).json()["totalCount"]
    answers = await asyncio.gather(
        *(
            admin.patch(
                "/api/v2/protect/settings", json={"push": {"timeoutSeconds": 31 + i}}, headers={"If-Match": etag}
            )
            for i in range(N)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [412] * (N - 1), statuses
    winner = next(a for a in answers if a.status_code == 200)
    after = await admin.get("/api/v2/protect/settings")
    assert after.json() == winner.json() and after.json()["push"]["timeoutSeconds"] != before["push"]["timeoutSeconds"]
    assert after.headers["etag"] == winner.headers["etag"] != etag
    audit_after = (await admin.get("/api/v2/protect/audit", params={"limit": 1})).json()["totalCount"]
    assert audit_after == audit_before + 1  # one change, one audit event; refusals leave no trace


async def test_resetmfa_raced_against_enrollment_leaves_a_consistent_user(admin) -> None:
    user = await create_user(admin, "reset.race")
    outcomes = set()
    for _ in range(8):
        code = (await admin.post(f"/api/v2/protect/users/{user['_id']}/enrollments")).json()["code"]
        reset, enrolled = await asyncio.gather(
            admin.post(f"/api/systemusers/{user['_id']}/resetmfa", json={"exclusion": True, "exclusionDays": 3}),
            admin.post("/device/v1/enroll", json={"code": code, "name": "phone", "device": IPHONE}),
        )
        assert reset.status_code == 200 and enrolled.status_code in (201, 400), (reset.status_code, enrolled.text)
        devices = (await admin.get(f"/api/v2/users/{user['_id']}/pushendpoints")).json()
        state = (await admin.get(f"/api/systemusers/{user['_id']}")).json()["mfaEnrollment"]["pushStatus"]
        # Whatever the order: a device exists exactly when push is ENROLLED, and a token works only then.
        assert (len(devices) == 1) == (state == "ENROLLED"), (devices, state)
        if enrolled.status_code == 201:
            token_works = (
                await admin.get("/device/v1/pushes", headers={"Authorization": f"Bearer {enrolled.json()['token']}"})
            ).status_code
            assert (token_works == 200) == (len(devices) == 1)
        outcomes.add((enrolled.status_code, len(devices)))
        if devices:
            await admin.delete(f"/api/v2/users/{user['_id']}/pushendpoints/{devices[0]['id']}")
    assert outcomes <= {(201, 0), (201, 1), (400, 0)}


async def test_same_username_in_different_case_raced_creates_exactly_one(admin) -> None:
    names = ["Race.Case", "race.case", "RACE.CASE", "rAcE.cAsE"] * (N // 4)
    answers = await asyncio.gather(
        *(
            admin.post("/api/systemusers", json={"username": name, "email": f"rc{i}@race.example"})
            for i, name in enumerate(names)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (N - 1), statuses
    found = (await admin.get("/api/systemusers", params={"filter": "username:$eq:race.case"})).json()
    assert found["totalCount"] == 1


async def test_unenroll_raced_n_times_removes_once_and_audits_once(admin) -> None:
    user = await create_user(admin, "unenroll.race")
    await enroll(admin, user["_id"])
    device = (await admin.get(f"/api/v2/users/{user['_id']}/pushendpoints")).json()[0]
    audit_before = (await admin.get("/api/v2/protect/audit", params={"limit": 1})).json()["totalCount"]
    answers = await asyncio.gather(
        *(admin.delete(f"/api/v2/users/{user['_id']}/pushendpoints/{device['id']}") for _ in range(N))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [404] * (N - 1), statuses
    audit_after = (await admin.get("/api/v2/protect/audit", params={"limit": 1})).json()["totalCount"]
    assert audit_after == audit_before + 1
