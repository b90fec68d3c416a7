"""Issue 9 item 4: the API key lifecycle, on both stores.

Keys are listed (never the key or its hash), revoked (refused at once by another `serve` process), rotated,
expire, and service keys may be scoped to resources. The audit names the key that acted.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from console.models import Role
from console.server.services.common import digest
from tests.helpers import run_cli
from tests.serve_helpers import Served, client, create_user, enroll

KEYS = "/api/v2/protect/keys"
PUSH = "/api/v2/protect/push"
USERS = "/api/systemusers"
REVOKED = {"message": "invalid or revoked API key"}


async def issue(admin: httpx.AsyncClient, **body: object) -> dict:
    answer = await admin.post(KEYS, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def listed(admin: httpx.AsyncClient) -> dict[str, dict]:
    answer = await admin.get(KEYS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["totalCount"] == len(body["results"])
    return {k["id"]: k for k in body["results"]}


async def push_user(admin: httpx.AsyncClient, name: str) -> str:
    user = await create_user(admin, name)
    await enroll(admin, user["_id"])
    return user["_id"]


def wire(moment) -> str:
    return moment.isoformat() + "Z"


async def last_event(admin: httpx.AsyncClient, action: str) -> dict:
    events = (await admin.get("/api/v2/protect/audit", params={"action": action, "limit": 1})).json()["results"]
    assert events, f"no {action} event"
    return events[0]


async def test_the_key_is_shown_once_and_never_in_a_list(make_backend, capsys) -> None:
    b = make_backend(users=0)
    async with client(b.url, b.admin_key) as admin:
        made = await issue(admin, name="ci-bot", role="readonly")
        key, shown = made["key"], made["apiKey"]
        assert key.startswith("pc_") and shown["prefix"] == key[:8] and shown["status"] == "active"
        answers = [
            await admin.get(KEYS),
            await admin.get(f"{KEYS}/{shown['id']}"),
            await admin.get("/api/v2/protect/audit", params={"limit": 100}),
        ]
        for answer in answers:
            assert answer.status_code == 200
            assert key not in answer.text and key[8:] not in answer.text and digest(key) not in answer.text
        row = (await listed(admin))[shown["id"]]
        assert {k: row[k] for k in ("prefix", "name", "role", "status", "lastUsedAt", "expiresAt", "resources")} == {
            "prefix": key[:8],
            "name": "ci-bot",
            "role": "readonly",
            "status": "active",
            "lastUsedAt": None,
            "expiresAt": None,
            "resources": None,
        }
        assert "key" not in row and "keyHash" not in row
        code, out, _err = run_cli(capsys, "keys", "list", "--db", b.db, "--json")
        assert code == 0 and "ci-bot" in out and key not in out and key[8:] not in out and digest(key) not in out
        # Admin only: every other role is refused, and cannot make itself a key.
        for role in (Role.HELPDESK, Role.READONLY, Role.SERVICE):
            async with client(b.url, b.key(role, f"not-admin-{role.value}")) as other:
                for answer in (
                    await other.get(KEYS),
                    await other.post(KEYS, json={"name": "x", "role": "admin"}),
                    await other.post(f"{KEYS}/{shown['id']}/revoke"),
                ):
                    assert answer.status_code == 403 and "keys.manage" in answer.json()["message"], answer.text
        # Bad input names the field, and makes nothing: 422 when the schema says so, 400 for rules it cannot.
        before = len(await listed(admin))
        for body, status, field in (
            ({"name": " ", "role": "admin"}, 422, "name"),
            ({"name": "x", "role": "root"}, 422, "role"),
            ({"name": "x", "role": "service", "resources": []}, 422, "resources"),
            ({"name": "x", "role": "service", "resources": ["VPN", "\u3000"]}, 422, "resources"),
            ({"name": "x", "role": "admin", "resources": ["VPN"]}, 400, "resources"),
            ({"name": "x", "role": "admin", "expiresAt": "2001-01-01T00:00:00Z"}, 400, "expiresAt"),
            ({"name": "x", "role": "admin", "expiresAt": "9999-01-01T00:00:00Z"}, 400, "expiresAt"),
        ):
            answer = await admin.post(KEYS, json=body)
            assert answer.status_code == status and answer.json()["message"].startswith(field), (body, answer.text)
        assert len(await listed(admin)) == before
        assert (await admin.get(f"{KEYS}/nope")).status_code == 404


async def test_a_key_revoked_here_is_refused_by_another_process_on_its_next_request(make_backend, tmp_path) -> None:
    b = make_backend(users=0)
    other = Served(db=b.db, home=tmp_path / "other").start()  # one worker: its key cache is surely warm
    try:
        async with client(b.url, b.admin_key) as admin:
            user_id = await push_user(admin, "revoked.far")
            svc, reader = (
                await issue(admin, name="far-svc", role="service"),
                await issue(admin, name="far-reader", role="readonly"),
            )
            async with client(other.url, svc["key"]) as far_svc, client(other.url, reader["key"]) as far_reader:
                # The other process has both keys in use (the push route caches its key for a second).
                assert (await far_svc.post(PUSH, json={"userId": user_id, "resource": "a"})).status_code == 201
                assert (await far_reader.get(USERS)).status_code == 200
                for made in (svc, reader):
                    revoked = await admin.post(f"{KEYS}/{made['apiKey']['id']}/revoke")
                    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
                # The very next requests there, inside the cache's second: refused, nothing recorded.
                attempts = (await admin.get("/api/v2/protect/pushattempts", params={"userId": user_id})).json()
                answers = [
                    await far_svc.post(PUSH, json={"userId": user_id, "resource": "b"}),
                    await far_reader.get(USERS),
                ]
                assert [a.status_code for a in answers] == [401, 401] and all(a.json() == REVOKED for a in answers)
                again = (await admin.get("/api/v2/protect/pushattempts", params={"userId": user_id})).json()
                assert again["totalCount"] == attempts["totalCount"]
            event = await last_event(admin, "key.revoke")
            assert event["target"] == reader["apiKey"]["id"] and event["details"]["name"] == "far-reader"
            # Revoking again changes nothing and is not audited.
            assert (await admin.post(f"{KEYS}/{reader['apiKey']['id']}/revoke")).json()["status"] == "revoked"
            assert (await last_event(admin, "key.revoke"))["id"] == event["id"]
    finally:
        other.stop()


async def test_an_expired_key_is_refused_saying_it_expired(make_backend, manual_clock) -> None:
    b = make_backend(users=0, clock=manual_clock)
    async with client(b.url, b.admin_key) as admin:
        user_id = await push_user(admin, "expiring")
        ends = manual_clock.now() + timedelta(hours=1)
        svc = await issue(admin, name="short-svc", role="service", expiresAt=wire(ends))
        reader = await issue(admin, name="short-reader", role="readonly", expiresAt=wire(ends))
        assert reader["apiKey"]["expiresAt"].startswith(ends.isoformat()[:19])
        async with client(b.url, svc["key"]) as service, client(b.url, reader["key"]) as read:
            assert (await service.post(PUSH, json={"userId": user_id, "resource": "vpn"})).status_code == 201
            assert (await read.get(USERS)).status_code == 200
            manual_clock.advance(3600)
            answers = [await service.post(PUSH, json={"userId": user_id, "resource": "vpn2"}), await read.get(USERS)]
            for answer in answers:
                assert answer.status_code == 401, answer.text
                assert answer.json()["message"].startswith("API key expired at " + ends.isoformat()[:19]), answer.text
        shown = await listed(admin)
        assert (
            shown[svc["apiKey"]["id"]]["status"] == "expired" and shown[reader["apiKey"]["id"]]["status"] == "expired"
        )


async def test_a_scoped_service_key_may_push_only_for_its_resources(make_backend, capsys) -> None:
    b = make_backend(users=0)
    async with client(b.url, b.admin_key) as admin:
        user_id = await push_user(admin, "scoped")
        scoped = await issue(admin, name="vpn-only", role="service", resources=["VPN", "SSH"])
        assert scoped["apiKey"]["resources"] == ["VPN", "SSH"]
        code, out, err = run_cli(
            capsys, "keys", "create", "--db", b.db, "--name", "cli-vpn", "--role", "service", "--resource", "VPN"
        )
        assert code == 0, err
        cli_key = out.strip().splitlines()[-1]
        code, out, err = run_cli(
            capsys, "keys", "create", "--db", b.db, "--name", "x", "--role", "helpdesk", "--resource", "VPN"
        )
        assert code == 2 and "resource" in err
        for n, key in enumerate((scoped["key"], cli_key)):
            user_id = await push_user(admin, f"scoped{n}")  # a user each: the push cap counts per user
            async with client(b.url, key) as service:
                before = (await admin.get("/api/v2/protect/pushattempts", params={"userId": user_id})).json()
                refused = await service.post(PUSH, json={"userId": user_id, "resource": "Mail"})
                assert refused.status_code == 403 and "'Mail'" in refused.json()["message"], refused.text
                after = (await admin.get("/api/v2/protect/pushattempts", params={"userId": user_id})).json()
                assert after["totalCount"] == before["totalCount"]  # refused before admission: nothing recorded
                assert (await service.post(PUSH, json={"userId": user_id, "resource": "VPN"})).status_code == 201
        # The FastAPI route (a body longer than the fast path reads: it leaves the request to it) refuses it too.
        async with client(b.url, scoped["key"]) as service:
            padded = b'{"userId": "%s", "resource": "Mail"}' % user_id.encode() + b" " * 70_000
            refused = await service.post(PUSH, content=padded, headers={"content-type": "application/json"})
            assert refused.status_code == 403 and "'Mail'" in refused.json()["message"], refused.text


async def test_rotation_issues_a_new_key_and_retires_the_old(make_backend, manual_clock, capsys) -> None:
    b = make_backend(users=0, clock=manual_clock)
    async with client(b.url, b.admin_key) as admin:
        first = await issue(admin, name="rot", role="readonly")
        rotated = await admin.post(f"{KEYS}/{first['apiKey']['id']}/rotate")
        assert rotated.status_code == 201, rotated.text
        second = rotated.json()
        assert second["key"] != first["key"] and second["apiKey"]["name"] == "rot"
        assert second["apiKey"]["role"] == "readonly" and second["replaced"]["status"] == "revoked"
        async with client(b.url, first["key"]) as old, client(b.url, second["key"]) as new:
            assert (await old.get(USERS)).json() == REVOKED
            assert (await new.get(USERS)).status_code == 200
        event = await last_event(admin, "key.rotate")
        assert event["target"] == first["apiKey"]["id"] and event["details"]["newKeyId"] == second["apiKey"]["id"]
        # With a grace period the old key keeps working until it ends, then expires.
        graced = await admin.post(f"{KEYS}/{second['apiKey']['id']}/rotate", json={"graceSeconds": 600})
        assert graced.status_code == 201 and graced.json()["replaced"]["status"] == "active"
        async with client(b.url, second["key"]) as old, client(b.url, graced.json()["key"]) as new:
            assert (await old.get(USERS)).status_code == 200
            manual_clock.advance(601)
            assert "expired" in (await old.get(USERS)).json()["message"]
            assert (await new.get(USERS)).status_code == 200
        # A revoked key is not rotated (create makes a new one).
        refused = await admin.post(f"{KEYS}/{first['apiKey']['id']}/rotate")
        assert refused.status_code == 409 and "revoked" in refused.json()["message"]
        # The CLI: the new key alone on the last line, the old one refused from then on.
        cli_old = b.key(Role.READONLY, "rot-cli")
        code, out, err = run_cli(capsys, "keys", "rotate", "rot-cli", "--db", b.db, "--yes")
        assert code == 0, err
        cli_new = out.strip().splitlines()[-1]
        assert cli_new.startswith("pc_") and cli_new != cli_old and cli_old not in out
        async with client(b.url, cli_old) as old, client(b.url, cli_new) as new:
            assert (await old.get(USERS)).status_code == 401 and (await new.get(USERS)).status_code == 200


async def test_the_audit_actor_is_the_key_by_id_name_and_role(make_backend, manual_clock, capsys) -> None:
    b = make_backend(users=0, clock=manual_clock)
    async with client(b.url, b.admin_key) as admin:
        user = await create_user(admin, "actor.target")
        desk = await issue(admin, name="desk-anna", role="helpdesk")
        async with client(b.url, desk["key"]) as helpdesk:
            assert (await helpdesk.post(f"/api/v2/protect/users/{user['_id']}/enrollments")).status_code in (200, 201)
            # "last used": written on first use, not again within the minute, whatever the traffic.
            used = (await listed(admin))[desk["apiKey"]["id"]]["lastUsedAt"]
            assert used is not None and used.startswith(manual_clock.now().isoformat()[:19])
            manual_clock.advance(30)
            for _ in range(3):
                assert (await helpdesk.get(USERS)).status_code == 200
            assert (await listed(admin))[desk["apiKey"]["id"]]["lastUsedAt"] == used
        event = await last_event(admin, "enrollment.create")
        assert (event["actor"], event["actorKeyId"], event["actorRole"]) == (
            "desk-anna",
            desk["apiKey"]["id"],
            "helpdesk",
        )
        assert len(event["hash"]) == 64
        made = await last_event(admin, "key.create")
        assert made["target"] == desk["apiKey"]["id"] and made["actorRole"] == "admin" and made["actorKeyId"]
        # A change on the database host has no key: the actor says so.
        code, _, err = run_cli(capsys, "keys", "revoke", "desk-anna", "--db", b.db, "--yes")
        assert code == 0, err
        local = await last_event(admin, "key.revoke")
        assert (local["actor"], local["actorKeyId"], local["actorRole"]) == ("local cli", None, "admin")


async def test_device_settings_changes_are_audited_once(make_backend) -> None:
    b = make_backend(users=0)
    async with client(b.url, b.admin_key) as admin:
        user = await create_user(admin, "privacy.minded")
        token = await enroll(admin, user["_id"])
        async with client(b.url, Authorization=f"Bearer {token}") as phone:
            assert (await phone.put("/device/v1/settings", json={"diagnosticsOptOut": True})).status_code == 200
            event = await last_event(admin, "device.settings")
            assert (
                event["kind"] == "device" and event["actor"] == "user:privacy.minded" and event["target"] == user["_id"]
            )
            assert event["details"]["before"] == {"diagnosticsOptOut": False}
            assert event["details"]["after"] == {"diagnosticsOptOut": True}
            # The same again changes nothing and writes no event.
            assert (await phone.put("/device/v1/settings", json={"diagnosticsOptOut": True})).status_code == 200
            assert (await last_event(admin, "device.settings"))["id"] == event["id"]


@pytest.mark.parametrize("expires", ["0d", "soon", "2001-01-01"])
def test_keys_create_refuses_a_bad_expiry_naming_the_flag(make_backend, capsys, expires) -> None:
    b = make_backend(users=0)
    code, out, err = run_cli(
        capsys, "keys", "create", "--db", b.db, "--name", "x", "--role", "admin", "--expires", expires
    )
    assert code == 2 and "expires" in err and "pc_" not in out
