"""Settings with ETag/If-Match, ranges named in errors."""

from __future__ import annotations

import httpx
import pytest

from console.client import PreconditionFailed, ProtectClient


async def test_stale_etag_is_refused_and_nothing_changes(backend):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        settings, etag = await admin.get_settings()
        assert settings.push.concurrentLimit.max == 1 and settings.push.timeoutSeconds == 60
        updated, new_etag = await admin.update_settings({"push": {"concurrentLimit": {"max": 4}}}, etag)
        assert updated.push.concurrentLimit.max == 4 and updated.push.concurrentLimit.enabled is True
        assert new_etag != etag
        with pytest.raises(PreconditionFailed) as stale:
            await admin.update_settings({"push": {"concurrentLimit": {"max": 2}}}, etag)
        assert "someone else" in stale.value.message
        assert (await admin.get_settings())[0].push.concurrentLimit.max == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"push": {"concurrentLimit": {"max": 0}}}, "push.concurrentLimit.max"),
        ({"push": {"concurrentLimit": {"max": 11}}}, "push.concurrentLimit.max"),
        ({"push": {"timeoutSeconds": 29}}, "push.timeoutSeconds"),
        ({"push": {"timeoutSeconds": 301}}, "push.timeoutSeconds"),
        ({"totp": {"maxFailures": "many"}}, "totp.maxFailures"),
        ({"push": {"colour": "red"}}, "push.colour"),
    ],
)
async def test_out_of_range_values_name_the_field(backend, body, field):
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        etag = (await http.get("/api/v2/protect/settings")).headers["etag"]
        response = await http.patch("/api/v2/protect/settings", json=body, headers={"If-Match": etag})
        assert response.status_code == 422 and field in response.json()["message"]
        assert (await http.get("/api/v2/protect/settings")).headers["etag"] == etag


async def test_if_match_is_required(backend):
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        response = await http.patch("/api/v2/protect/settings", json={"totp": {"maxFailures": 3}})
        assert response.status_code == 428 and "If-Match" in response.json()["message"]


async def test_a_change_that_changes_nothing_keeps_the_version(backend):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        settings, etag = await admin.get_settings()
        same, same_etag = await admin.update_settings({"push": {"timeoutSeconds": settings.push.timeoutSeconds}}, etag)
        assert same_etag == etag and same == settings
        assert not [e for e in (await admin.audit(limit=10)).results if e.action == "settings.update"]
