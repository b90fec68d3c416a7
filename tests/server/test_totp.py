"""Rule 6: TOTP through the app, with a one-step window, no replay and a lock-out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import httpx
import pyotp

from console.client import ProtectClient
from console.models import Role
from console.server.clock import ManualClock
from console.server.services.totp import STEP_SECONDS, current_step
from tests.helpers import enrolled_device, new_user

if TYPE_CHECKING:
    from tests.conftest import Backend


def code_at(uri: str, step: int) -> str:
    return pyotp.parse_uri(uri).generate_otp(step)


async def set_settings(api: ProtectClient, change: dict[str, Any]) -> None:
    _, etag = await api.get_settings()
    await api.update_settings(change, etag)


async def test_window_replay_and_enrolment_replacing_the_secret(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    async with (
        ProtectClient(backend.url, backend.admin_key) as admin,
        ProtectClient(backend.url, backend.key(Role.SERVICE)) as svc,
    ):
        user = await new_user(admin, "totp")
        phone = await enrolled_device(admin, backend.url, user.id)
        uri = (await phone.enroll_totp()).otpauthUri
        assert (await admin.get_user(user.id)).mfaEnrollment.totpStatus == "ENROLLED"
        step = current_step(manual_clock.now())

        assert (await svc.verify_totp(user.id, code_at(uri, step - 2))).valid is False  # outside the window
        assert (await svc.verify_totp(user.id, code_at(uri, step - 1))).valid is True  # one step behind
        replay = await svc.verify_totp(user.id, code_at(uri, step - 1))
        assert replay.valid is False and "already used" in str(replay.reason)
        assert (await svc.verify_totp(user.id, code_at(uri, step))).valid is True
        assert (await svc.verify_totp(user.id, code_at(uri, step - 1))).valid is False  # before the last accepted
        assert (await svc.verify_totp(user.id, code_at(uri, step + 1))).valid is True  # one step ahead
        assert (await svc.verify_totp(user.id, code_at(uri, step + 2))).valid is False

        # Enrolling again replaces the secret: the old one's next code no longer works.
        manual_clock.advance(3 * STEP_SECONDS)
        new_uri = (await phone.enroll_totp()).otpauthUri
        assert new_uri != uri
        step = current_step(manual_clock.now())
        old_code, new_code = code_at(uri, step), code_at(new_uri, step)
        if old_code != new_code:
            assert (await svc.verify_totp(user.id, old_code)).valid is False
        assert (await svc.verify_totp(user.id, new_code)).valid is True
        await phone.aclose()


async def test_lockout_after_max_failures_until_admin_reset(backend: Backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await set_settings(admin, {"totp": {"maxFailures": 3}})
        user = await new_user(admin, "locked")
        phone = await enrolled_device(admin, backend.url, user.id)
        uri = (await phone.enroll_totp()).otpauthUri
        good = cast(pyotp.TOTP, pyotp.parse_uri(uri)).now()
        bad = "000000" if good != "000000" else "111111"
        for _ in range(3):
            assert (await admin.verify_totp(user.id, bad)).valid is False
        locked = await admin.verify_totp(user.id, good)
        assert locked.valid is False and "reset" in str(locked.reason)

        result = await admin.reset_totp(user.id)
        assert result.totpStatus == "NOT_ENROLLED"
        uri = (await phone.enroll_totp()).otpauthUri
        assert (await admin.verify_totp(user.id, cast(pyotp.TOTP, pyotp.parse_uri(uri)).now())).valid is True
        # The support desk's check is audited; the code itself is not recorded.
        events = (await admin.audit(limit=50)).results
        checks = [e for e in events if e.action == "totp.verify"]
        assert checks and all("code" not in e.details for e in checks)
        await phone.aclose()


async def test_totp_secret_never_leaves_the_server_after_enrolment(backend: Backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "secretive")
        phone = await enrolled_device(admin, backend.url, user.id)
        secret = pyotp.parse_uri((await phone.enroll_totp()).otpauthUri).secret
        async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
            bodies = [
                (await http.get(f"/api/systemusers/{user.id}")).text,
                (await http.get("/api/systemusers", params={"limit": 100})).text,
                (await http.get("/api/v2/protect/audit", params={"limit": 100})).text,
                (await http.get(f"/api/v2/users/{user.id}/pushendpoints")).text,
                (await http.get("/openapi.json")).text,
            ]
        assert all(secret not in body for body in bodies)
        assert "totp_secret" not in json.dumps(bodies)
        await phone.aclose()


async def test_verify_rejects_malformed_codes_with_the_field_named(backend: Backend) -> None:
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        response = await http.post("/api/v2/protect/totp/verify", json={"userId": "x", "code": "12ab56"})
        assert response.status_code == 422 and "code" in response.json()["message"]
        response = await http.post("/api/v2/protect/totp/verify", json={"userId": "0" * 24, "code": "123456"})
        assert response.status_code == 404
