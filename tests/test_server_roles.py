"""Rule 8: the role matrix, and the audit trail of every admin-API change."""

from __future__ import annotations

import httpx
import pytest

from console.client import ProtectClient
from console.models import ROLE_PERMISSIONS, Permission, Role

from .helpers import enrolled_device, new_user

P = Permission
# (permission that admits the call, method, path, body); {u} user id, {d} device id
CALLS = [
    (P.READ, "GET", "/api/systemusers", None),
    (P.READ, "POST", "/api/search/systemusers", {"searchFilter": {"searchTerm": "a"}}),
    (P.READ, "GET", "/api/systemusers/{u}", None),
    (P.USERS_WRITE, "POST", "/api/systemusers", {"username": "r-{role}", "email": "r-{role}@x.example"}),
    (P.USERS_WRITE, "PUT", "/api/systemusers/{u}", {"lastname": "Changed"}),
    (P.READ, "GET", "/api/v2/users/{u}/pushendpoints", None),
    (P.READ, "GET", "/api/v2/users/{u}/pushendpoints/{d}", None),
    (P.DEVICES_WRITE, "PATCH", "/api/v2/users/{u}/pushendpoints/{d}", {"name": "renamed"}),
    (P.READ, "GET", "/api/v2/protect/settings", None),
    (P.SETTINGS_WRITE, "PATCH", "/api/v2/protect/settings", {"totp": {"maxFailures": 6}}),
    (P.ENROLL, "POST", "/api/v2/protect/users/{u}/enrollments", None),
    (P.READ, "GET", "/api/v2/protect/privacy/summary", None),
    (P.READ, "GET", "/api/v2/protect/privacy/devices", None),
    (P.READ, "GET", "/api/v2/protect/pushattempts", None),
    (P.READ, "GET", "/api/v2/protect/audit", None),
    (P.PUSH_CREATE, "POST", "/api/v2/protect/push", {"userId": "{u}", "resource": "role-{role}"}),
    (P.TOTP_VERIFY, "POST", "/api/v2/protect/totp/verify", {"userId": "{u}", "code": "123456"}),
    (P.TOTP_RESET, "POST", "/api/v2/protect/users/{u}/totp/reset", None),
    (P.DEVICES_UNENROLL, "DELETE", "/api/v2/users/{u}/pushendpoints/{d}", None),
    (P.MFA_RESET, "POST", "/api/systemusers/{u}/resetmfa", {"exclusion": False}),
]


def fill(value, **names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", list(Role))
async def test_role_matrix(backend, role):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, f"matrix-{role.value}")
        phone = await enrolled_device(admin, backend.url, user.id)
        (endpoint,) = await admin.push_endpoints(user.id)
        key = backend.key(role)
        granted = ROLE_PERMISSIONS[role]
        async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": key}) as http:
            for permission, method, path, body in CALLS:
                headers = {}
                if method == "PATCH" and "settings" in path:
                    headers["If-Match"] = (await admin.get_settings())[1]
                names = {"u": user.id, "d": endpoint.id, "role": role.value}
                response = await http.request(
                    method, fill(path, **names), json=fill(body, **names), headers=headers
                )
                if permission in granted:
                    assert response.status_code < 400, (role, method, path, response.text)
                else:
                    assert response.status_code == 403, (role, method, path, response.text)
                    assert role.value in response.json()["message"]
            whoami = (await http.get("/api/v2/protect/whoami")).json()
            assert whoami["role"] == role.value and set(whoami["permissions"]) == {p.value for p in granted}
        await phone.aclose()


async def test_missing_and_bad_keys_are_401(backend):
    async with httpx.AsyncClient(base_url=backend.url) as http:
        assert (await http.get("/api/systemusers")).status_code == 401
        response = await http.get("/api/systemusers", headers={"x-api-key": "pc_wrong"})
        assert response.status_code == 401 and "invalid" in response.json()["message"]


async def test_every_change_is_audited_with_key_action_target_and_before_after(backend):
    key = backend.key(Role.HELPDESK, "desk-anna")
    async with ProtectClient(backend.url, backend.admin_key) as admin, ProtectClient(backend.url, key) as desk:
        user = await new_user(admin, "audited")
        phone = await enrolled_device(admin, backend.url, user.id)
        await phone.enroll_totp()  # a TOTP reset without TOTP changes nothing and is not audited
        (endpoint,) = await admin.push_endpoints(user.id)
        await desk.unenroll_device(user.id, endpoint.id)
        await desk.reset_totp(user.id)
        await desk.reset_mfa(user.id, grace_days=2)
        _, etag = await admin.get_settings()
        await admin.update_settings({"push": {"timeoutSeconds": 90}}, etag)
        events = (await admin.audit(limit=20)).results
        by_action = {e.action: e for e in events}
        for action in ("device.unenroll", "totp.reset", "mfa.reset"):
            assert by_action[action].actor == "desk-anna" and by_action[action].target == user.id
            assert by_action[action].targetName == "audited"
            assert "before" in by_action[action].details and "after" in by_action[action].details
        change = by_action["settings.update"].details["changes"]["push.timeoutSeconds"]
        assert change == {"before": 60, "after": 90} and by_action["settings.update"].actor == "test-admin"
        assert by_action["user.create"].actor == "test-admin"
        await phone.aclose()
