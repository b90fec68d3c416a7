"""The user directory: envelope, paging, sort, filters, search, create/update, resets."""

from __future__ import annotations

import httpx
import pytest

from console.client import Conflict, NotFound, ProtectClient
from console.models import SystemUserUpdate
from tests.helpers import enrolled_device, new_user


@pytest.fixture
async def admin(backend):
    async with ProtectClient(backend.url, backend.admin_key) as api:
        yield api


@pytest.fixture
async def http(backend):
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as client:
        yield client


async def test_pages_cover_the_directory_without_overlap(backend, admin):
    seen: list[str] = []
    total = None
    for skip in range(0, 1000, 100):
        page = await admin.list_users(skip=skip, limit=100, sort="-created")
        total = page.totalCount
        seen.extend(u.id for u in page.results)
        if len(page.results) < 100:
            break
    assert total == backend.seed_report["users"] == len(seen) == len(set(seen))


async def test_sort_and_filters(admin):
    page = await admin.list_users(limit=50, sort="-created")
    created = [u.created for u in page.results]
    assert created == sorted(created, reverse=True)
    push = await admin.list_users(limit=100, filters=["mfaEnrollment.pushStatus:$eq:ENROLLED", "state:$eq:ACTIVATED"])
    assert push.totalCount > 0
    assert all(u.mfaEnrollment.pushStatus == "ENROLLED" and u.state == "ACTIVATED" for u in push.results)
    none = await admin.list_users(limit=100, filters=["mfaEnrollment.overallStatus:$ne:ENROLLED"])
    assert all(u.mfaEnrollment.overallStatus != "ENROLLED" for u in none.results)
    everyone = await admin.list_users(limit=1)
    assert push.totalCount < everyone.totalCount
    totp = await admin.list_users(limit=100, filters=["totp_enabled:$eq:true"])
    assert totp.results and all(u.totp_enabled for u in totp.results)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"filter": "nosuch:$eq:1"}, "nosuch"),
        ({"filter": "state:$like:x"}, "$like"),
        ({"filter": "state:$eq:HAPPY"}, "HAPPY"),
        ({"filter": "created:$gt:yesterday"}, "created"),
        ({"filter": "justtext"}, "justtext"),
        ({"sort": "-shoesize"}, "shoesize"),
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"skip": -1}, "skip"),
    ],
)
async def test_bad_list_parameters_name_the_problem(http, params, named):
    response = await http.get("/api/systemusers", params=params)
    assert response.status_code in (400, 422)
    assert named in response.json()["message"]


async def test_search_is_case_insensitive_with_prefix_matches_first(admin):
    target = await new_user(admin, "zyxwvut.search", first="Ünïcode", last="Searchable")
    await new_user(admin, "other.zyxwvut")
    page = await admin.search_users("ZYXWVUT")
    assert [u.username for u in page.results][:2] == ["zyxwvut.search", "other.zyxwvut"]
    by_name = await admin.search_users("ünïcode", fields=["firstname"])
    assert [u.id for u in by_name.results] == [target.id]
    # LIKE wildcards in the term are literal.
    assert (await admin.search_users("%")).totalCount == 0
    filtered = await admin.search_users("zyxwvut", filter={"username": {"$eq": "other.zyxwvut"}})
    assert [u.username for u in filtered.results] == ["other.zyxwvut"]


async def test_create_update_and_conflicts(admin, http):
    user = await new_user(admin, "newbie")
    assert user.state == "ACTIVATED" and len(user.id) == 24
    with pytest.raises(Conflict) as taken:
        await new_user(admin, "NEWBIE")
    assert "username" in taken.value.message
    response = await http.post("/api/systemusers", json={"username": "x1", "email": "NEWBIE@test.example"})
    assert response.status_code == 409 and "email" in response.json()["message"]
    for body, field in (
        ({"username": "x2", "email": "not-an-email"}, "email"),
        ({"username": "x3", "email": "x3@test.example", "shoe": 1}, "shoe"),
        ({"username": "x4", "email": "x4@test.example", "firstname": "a\x00b"}, "firstname"),
        ({"username": "x5", "email": "x5@test.example", "displayname": "n" * 1025}, "displayname"),
        ({"email": "x6@test.example"}, "username"),
    ):
        response = await http.post("/api/systemusers", json=body)
        assert response.status_code == 422 and field in response.json()["message"], (body, response.text)
    # Any Unicode up to 1,024 characters is a valid name.
    long_name = "ب" * 1000 + "😀" * 24
    updated = await admin.update_user(
        user.id, SystemUserUpdate(displayname=long_name, state="SUSPENDED", account_locked=True)
    )
    assert updated.displayname == long_name and updated.state == "SUSPENDED" and updated.account_locked
    event = next(e for e in (await admin.audit(limit=10)).results if e.action == "user.update")
    assert event.details["before"]["state"] == "ACTIVATED" and event.details["after"]["state"] == "SUSPENDED"
    with pytest.raises(NotFound):
        await admin.get_user("f" * 24)


async def test_reset_mfa_removes_device_and_totp_and_starts_grace(backend, admin):
    user = await new_user(admin, "resetme")
    phone = await enrolled_device(admin, backend.url, user.id)
    await phone.enroll_totp()
    before = await admin.get_user(user.id)
    assert before.mfaEnrollment.pushStatus == "ENROLLED" and before.mfaEnrollment.totpStatus == "ENROLLED"

    after = await admin.reset_mfa(user.id, grace_days=5)
    assert after.mfaEnrollment.pushStatus == "NOT_ENROLLED"
    assert after.mfaEnrollment.totpStatus == "NOT_ENROLLED"
    assert after.mfaEnrollment.overallStatus == "IN_ENROLLMENT"
    assert after.mfa.exclusion and after.mfa.exclusionUntil is not None
    assert await admin.push_endpoints(user.id) == []
    event = next(e for e in (await admin.audit(limit=10)).results if e.action == "mfa.reset")
    assert event.target == user.id and event.actor == "test-admin"
    assert (
        event.details["before"]["pushStatus"] == "ENROLLED" and event.details["after"]["pushStatus"] == "NOT_ENROLLED"
    )
    await phone.aclose()


async def test_reset_mfa_rejects_bad_grace_periods(admin, http):
    user = await new_user(admin, "badgrace")
    for body, field in (
        ({"exclusion": True, "exclusionDays": 0}, "exclusionDays"),
        ({"exclusion": True, "exclusionUntil": "2001-01-01T00:00:00Z"}, "exclusionUntil"),
        ({"exclusion": True, "exclusionDays": 3, "exclusionUntil": "2099-01-01T00:00:00Z"}, "not both"),
    ):
        response = await http.post(f"/api/systemusers/{user.id}/resetmfa", json=body)
        assert response.status_code in (400, 422) and field in response.json()["message"], response.text
    assert (await admin.audit(limit=5)).results[0].action == "user.create"  # nothing half-written


async def test_unenroll_and_patch_push_endpoint(backend, admin, http):
    user = await new_user(admin, "unenroll")
    phone = await enrolled_device(admin, backend.url, user.id)
    (endpoint,) = await admin.push_endpoints(user.id)
    renamed = await admin.update_push_endpoint(user.id, endpoint.id, name="Work phone", state="inactive")
    assert renamed.name == "Work phone" and renamed.state == "inactive"
    response = await http.patch(f"/api/v2/users/{user.id}/pushendpoints/{endpoint.id}", json={"device": {"model": "x"}})
    assert response.status_code == 422 and "device" in response.json()["message"]
    removed = await admin.unenroll_device(user.id, endpoint.id)
    assert removed.id == endpoint.id
    assert await admin.push_endpoints(user.id) == []
    assert (await admin.get_user(user.id)).mfaEnrollment.pushStatus == "NOT_ENROLLED"
    with pytest.raises(NotFound):
        await admin.unenroll_device(user.id, endpoint.id)
    await phone.aclose()
