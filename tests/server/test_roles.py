"""Rule 8: the role matrix over every operation x role, and the audit trail of every admin-API change."""

from __future__ import annotations

import httpx
import pytest

from console.client import ProtectClient
from console.models import ROLE_PERMISSIONS, Permission, Role
from tests.helpers import enrolled_device, new_user

P = Permission
ANY_KEY: tuple[Permission, ...] = ()  # admitted for every role's key (whoami)
# Every operation of the OpenAPI document but the operations endpoints and the device app's routes (no role
# is checked there): the permissions that admit it (any of them; who holds each comes from ROLE_PERMISSIONS),
# method, path exactly as the document names it, body. Path parameters and {role} are filled in per role.
# Order matters for the roles that may call everything: a push before the block, renames and unenrolment
# before the MFA reset, the key's rotation before its revocation, the user's deletion last.
MATRIX: list[tuple[tuple[Permission, ...], str, str, dict | None]] = [
    (ANY_KEY, "GET", "/api/v2/protect/whoami", None),
    ((P.READ,), "GET", "/api/systemusers", None),
    ((P.READ,), "POST", "/api/search/systemusers", {"searchFilter": {"searchTerm": "a"}}),
    ((P.READ,), "GET", "/api/systemusers/{user_id}", None),
    ((P.USERS_WRITE,), "POST", "/api/systemusers", {"username": "r-{role}", "email": "r-{role}@x.example"}),
    ((P.USERS_WRITE,), "PUT", "/api/systemusers/{user_id}", {"lastname": "Changed"}),
    ((P.USERS_WRITE,), "POST", "/api/systemusers/{user_id}/unlock", None),
    ((P.READ,), "GET", "/api/v2/users/{user_id}/pushendpoints", None),
    ((P.READ,), "GET", "/api/v2/users/{user_id}/pushendpoints/{endpoint_id}", None),
    ((P.DEVICES_WRITE,), "PATCH", "/api/v2/users/{user_id}/pushendpoints/{endpoint_id}", {"name": "renamed"}),
    ((P.READ,), "GET", "/api/v2/protect/settings", None),
    ((P.SETTINGS_WRITE,), "PATCH", "/api/v2/protect/settings", {"totp": {"maxFailures": 6}}),
    ((P.ENROLL,), "POST", "/api/v2/protect/users/{user_id}/enrollments", None),
    ((P.READ,), "GET", "/api/v2/protect/privacy/summary", None),
    ((P.READ,), "GET", "/api/v2/protect/privacy/devices", None),
    ((P.READ,), "GET", "/api/v2/protect/pushattempts", None),
    ((P.READ,), "GET", "/api/v2/protect/audit", None),
    ((P.PUSH_CREATE,), "POST", "/api/v2/protect/push", {"userId": "{user_id}", "resource": "role-{role}"}),
    ((P.PUSH_CREATE, P.READ), "GET", "/api/v2/protect/push/{attempt_id}", None),
    ((P.READ,), "GET", "/api/v2/protect/users/{user_id}/pushstats", None),
    ((P.READ,), "GET", "/api/v2/protect/pushstats", None),
    ((P.PUSH_BLOCK,), "POST", "/api/v2/protect/users/{user_id}/push/block", {"minutes": 5}),
    ((P.PUSH_BLOCK,), "DELETE", "/api/v2/protect/users/{user_id}/push/block", None),
    ((P.TOTP_VERIFY,), "POST", "/api/v2/protect/totp/verify", {"userId": "{user_id}", "code": "123456"}),
    ((P.TOTP_RESET,), "POST", "/api/v2/protect/users/{user_id}/totp/reset", None),
    ((P.KEYS_MANAGE,), "GET", "/api/v2/protect/keys", None),
    ((P.KEYS_MANAGE,), "POST", "/api/v2/protect/keys", {"name": "made-by-{role}", "role": "readonly"}),
    ((P.KEYS_MANAGE,), "GET", "/api/v2/protect/keys/{key_id}", None),
    ((P.KEYS_MANAGE,), "POST", "/api/v2/protect/keys/{key_id}/rotate", None),
    ((P.KEYS_MANAGE,), "POST", "/api/v2/protect/keys/{key_id}/revoke", None),
    ((P.DEVICES_UNENROLL,), "DELETE", "/api/v2/users/{user_id}/pushendpoints/{endpoint_id}", None),
    ((P.MFA_RESET,), "POST", "/api/systemusers/{user_id}/resetmfa", {"exclusion": False}),
    ((P.USERS_WRITE,), "DELETE", "/api/systemusers/{user_id}", None),
]
# Not in the matrix: the load balancer's and Prometheus's operations (tests/server/test_ops_health.py) and the device
# app's routes, which take a device token instead of an API key.
OPERATIONS_ENDPOINTS = {("GET", "/healthz"), ("GET", "/metrics")}
DEVICE_ROUTES = "/device/"


def fill(value, **names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}
    return value


def admitted(role: Role, permissions: tuple[Permission, ...]) -> bool:
    return not permissions or any(p in ROLE_PERMISSIONS[role] for p in permissions)


def test_the_matrix_covers_every_operation_of_the_openapi_document(backend):
    documented = {
        (method.upper(), path)
        for path, operations in backend.server.app.openapi()["paths"].items()
        for method in operations
        if not path.startswith(DEVICE_ROUTES)
    } - OPERATIONS_ENDPOINTS
    listed = [(method, path) for _, method, path, _ in MATRIX]
    assert len(listed) == len(set(listed)), "an operation is listed twice"
    assert documented - set(listed) == set(), "operations missing from the role matrix"
    assert set(listed) - documented == set(), "the matrix lists operations the service does not have"


async def _subjects(backend, admin: ProtectClient, role: Role) -> tuple[dict[str, str], object]:
    """The path parameters for ``role``'s run: a user with a push device, a push attempt, a throwaway key."""
    user = await new_user(admin, f"matrix-{role.value}")
    phone = await enrolled_device(admin, backend.url, user.id)
    (endpoint,) = await admin.push_endpoints(user.id)
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        attempt = await http.post("/api/v2/protect/push", json={"userId": user.id, "resource": "setup"})
        assert attempt.status_code == 201, attempt.text
        key = await http.post("/api/v2/protect/keys", json={"name": f"throwaway-{role.value}", "role": "readonly"})
        assert key.status_code == 201, key.text
    names = {
        "user_id": user.id,
        "endpoint_id": endpoint.id,
        "attempt_id": attempt.json()["id"],
        "key_id": key.json()["apiKey"]["id"],
        "role": role.value,
    }
    return names, phone


@pytest.mark.parametrize("role", list(Role))
async def test_role_matrix(backend, role):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        names, phone = await _subjects(backend, admin, role)
        key = backend.key(role)
        async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": key}) as http:
            for permissions, method, path, body in MATRIX:
                headers = {}
                if method == "PATCH" and path.endswith("/settings"):
                    headers["If-Match"] = (await admin.get_settings())[1]
                response = await http.request(method, fill(path, **names), json=fill(body, **names), headers=headers)
                if admitted(role, permissions):
                    assert 200 <= response.status_code < 300, (role, method, path, response.text)
                else:
                    assert response.status_code == 403, (role, method, path, response.text)
                    assert role.value in response.json()["message"]
            whoami = (await http.get("/api/v2/protect/whoami")).json()
            assert whoami["role"] == role.value and set(whoami["permissions"]) == set(ROLE_PERMISSIONS[role])
        await phone.aclose()


async def test_every_operation_refuses_a_missing_or_unknown_key_with_401(backend):
    names = {
        "user_id": "0123456789abcdef01234567",
        "endpoint_id": "0123456789abcdef01234567",
        "attempt_id": "0123456789abcdef01234567",
        "key_id": "k",
        "role": "nobody",
    }
    async with httpx.AsyncClient(base_url=backend.url) as http:
        for _, method, path, body in MATRIX:
            url, json_body = fill(path, **names), fill(body, **names)
            for headers, why in (({}, "missing"), ({"x-api-key": "pc_wrong"}, "invalid")):
                response = await http.request(method, url, json=json_body, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert why in response.json()["message"], (method, path, response.text)


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
