"""Push rules 1-5: one device per user, the atomic cap, server-clock expiry, verification, fraud."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

import httpx
import pytest

from console.client import ApiError, DeviceClient, ProtectClient, RateLimited, Unauthorized, ValidationFailed
from console.models import DeviceInfo, Role
from console.server.clock import ManualClock
from tests.helpers import IPHONE, PIXEL, enrolled_device, new_user

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.fixture
async def admin(backend: Backend) -> AsyncIterator[ProtectClient]:
    async with ProtectClient(backend.url, backend.admin_key) as api:
        yield api


@pytest.fixture
async def service(backend: Backend) -> AsyncIterator[ProtectClient]:
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as api:
        yield api


async def set_settings(api: ProtectClient, change: dict[str, Any]) -> None:
    _, etag = await api.get_settings()
    await api.update_settings(change, etag)


async def test_enrolling_a_new_device_unenrolls_the_old_one(
    backend: Backend, admin: ProtectClient, service: ProtectClient
) -> None:
    user = await new_user(admin, "rule1")
    old = await enrolled_device(admin, backend.url, user.id, IPHONE)
    pending = await service.create_push(user.id, "VPN")

    new = await enrolled_device(admin, backend.url, user.id, PIXEL)

    endpoints = await admin.push_endpoints(user.id)
    assert [e.device.model for e in endpoints] == ["Pixel 8"]
    with pytest.raises(Unauthorized):
        await old.pushes()
    assert (await admin.get_push(pending.id)).status == "expired"  # cancelled with the old device
    assert await new.pushes() == []
    actions = [(e.action, e.target) for e in (await admin.audit(limit=20)).results]
    assert ("device.replace", user.id) in actions
    await old.aclose()
    await new.aclose()


async def test_push_cap_admits_exactly_one_of_32_concurrent_requests(backend: Backend, admin: ProtectClient) -> None:
    user = await new_user(admin, "rule2")
    phone = await enrolled_device(admin, backend.url, user.id)
    key = backend.key(Role.SERVICE)
    body = {"userId": user.id, "resource": "VPN", "context": {"app": "test"}}

    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": key}, timeout=30) as http:
        responses = await asyncio.gather(*(http.post("/api/v2/protect/push", json=body) for _ in range(32)))

    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1 and codes.count(429) == 31, codes
    refused = next(r for r in responses if r.status_code == 429).json()
    assert refused["retryAfter"] >= 1 and "concurrent" in refused["message"]
    blocked = await admin.push_attempts(user_id=user.id, status="blocked")
    assert blocked.totalCount == 31

    # The cap frees when the attempt is answered.
    (pending,) = await phone.pushes()
    await phone.respond(pending.id, "approve", user_verified=True)
    async with ProtectClient(backend.url, key) as svc:
        second = await svc.create_push(user.id, "VPN")
        assert second.status == "pending"
        # Another resource has its own budget.
        assert (await svc.create_push(user.id, "Salesforce")).status == "pending"
        with pytest.raises(RateLimited):
            await svc.create_push(user.id, "VPN")
        # Raising max takes effect on the next request.
        await set_settings(admin, {"push": {"concurrentLimit": {"max": 3}}})
        await svc.create_push(user.id, "VPN")
        await svc.create_push(user.id, "VPN")
        with pytest.raises(RateLimited):
            await svc.create_push(user.id, "VPN")
    await phone.aclose()


async def test_expiry_is_decided_by_the_server_clock(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    async with (
        ProtectClient(backend.url, backend.admin_key) as admin,
        ProtectClient(backend.url, backend.key(Role.SERVICE)) as svc,
    ):
        user = await new_user(admin, "rule3")
        phone = await enrolled_device(admin, backend.url, user.id)
        attempt = await svc.create_push(user.id, "VPN")
        manual_clock.advance(61)  # default timeout is 60 s
        assert await phone.pushes() == []  # no longer offered
        with pytest.raises(ApiError) as refused:
            await phone.respond(attempt.id, "approve", user_verified=True)
        assert refused.value.status == 409 and "expired" in refused.value.message
        assert (await svc.get_push(attempt.id)).status == "expired"
        # An expired attempt no longer counts against the cap.
        assert (await svc.create_push(user.id, "VPN")).status == "pending"
        # Inside the window, a second one is refused.
        with pytest.raises(RateLimited):
            await svc.create_push(user.id, "VPN")
        await phone.aclose()


async def test_require_user_verification_refuses_unverified_approval(
    backend: Backend, admin: ProtectClient, service: ProtectClient
) -> None:
    await set_settings(admin, {"push": {"requireUserVerification": True}})
    user = await new_user(admin, "rule4")
    phone = await enrolled_device(admin, backend.url, user.id)
    attempt = await service.create_push(user.id, "VPN")
    with pytest.raises(ValidationFailed) as refused:
        await phone.respond(attempt.id, "approve", user_verified=False)
    assert "userVerified" in refused.value.message
    assert (await service.get_push(attempt.id)).status == "pending"
    answered = await phone.respond(attempt.id, "approve", user_verified=True)
    assert answered.status == "approved"
    await phone.aclose()


async def test_deny_with_report_fraud_marks_the_attempt(
    backend: Backend, admin: ProtectClient, service: ProtectClient
) -> None:
    user = await new_user(admin, "rule5")
    phone = await enrolled_device(admin, backend.url, user.id)
    first = await service.create_push(user.id, "VPN")
    denied = await phone.respond(first.id, "deny", report_fraud=True)
    assert denied.status == "denied" and denied.fraud is True
    second = await service.create_push(user.id, "VPN")
    plain = await phone.respond(second.id, "deny")
    assert plain.fraud is False
    with pytest.raises(ApiError) as again:
        await phone.respond(second.id, "approve")
    assert again.value.status == 409
    await phone.aclose()


async def test_lost_notifications_are_still_fetched(
    backend: Backend, admin: ProtectClient, service: ProtectClient
) -> None:
    user = await new_user(admin, "lost")
    phone = await enrolled_device(admin, backend.url, user.id)
    ids = {(await service.create_push(user.id, r)).id for r in ("VPN", "GitHub")}
    assert {p.id for p in await phone.pushes()} == ids
    await phone.aclose()


async def test_old_operating_systems_cannot_enroll(backend: Backend, admin: ProtectClient) -> None:
    user = await new_user(admin, "oldphone")
    old: tuple[tuple[Literal["iOS", "Android"], str, str], ...] = (
        ("iOS", "12.5.7", "iOS 13"),
        ("Android", "7.1", "Android 8"),
    )
    for os_name, version, minimum in old:
        code = await admin.create_enrollment(user.id)
        device = DeviceInfo(make="X", model="Old", os=os_name, osVersion=version, appVersion="2.0")
        async with DeviceClient(backend.url) as phone:
            with pytest.raises(ValidationFailed) as refused:
                await phone.enroll(code.code, "old", device)
        assert minimum in refused.value.message
    assert await admin.push_endpoints(user.id) == []


async def test_enrollment_codes_are_one_time_and_expire(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "codes")
        code = await admin.create_enrollment(user.id)
        assert (await admin.get_user(user.id)).mfaEnrollment.pushStatus == "PENDING_ACTIVATION"
        async with DeviceClient(backend.url) as phone:
            await phone.enroll(code.code, "phone", IPHONE)
            with pytest.raises(ApiError) as reused:
                await phone.enroll(code.code, "phone", IPHONE)
            assert reused.value.status == 400 and "code" in reused.value.message
            late = await admin.create_enrollment(user.id)
            manual_clock.advance(11 * 60)
            with pytest.raises(ApiError) as expired:
                await phone.enroll(late.code, "phone", IPHONE)
            assert "expired" in expired.value.message


async def test_push_to_user_without_device_is_a_clear_conflict(
    backend: Backend, admin: ProtectClient, service: ProtectClient
) -> None:
    user = await new_user(admin, "nodevice")
    with pytest.raises(ApiError) as refused:
        await service.create_push(user.id, "VPN")
    assert refused.value.status == 409 and "push device" in refused.value.message
