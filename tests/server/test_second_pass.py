"""Issue 6, service side: stop attack, unlock/delete, push stats, totpLock, name sort, audit filters, no-ops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from console.client import (
    BadRequest,
    DeviceClient,
    Forbidden,
    NotFound,
    ProtectClient,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from console.models import BOMBING_THRESHOLD, BOMBING_WINDOW, PushStatus, Role, SystemUserUpdate
from console.server.app import create_app
from console.server.store import head_revision, sort_key
from tests.helpers import IPHONE, enrolled_device, new_user

BLOCK = "/api/v2/protect/users/{}/push/block"


async def audit_total(api: ProtectClient) -> int:
    return (await api.audit(limit=1)).totalCount


async def push(http: httpx.AsyncClient, user_id: str, resource: str = "VPN") -> httpx.Response:
    return await http.post("/api/v2/protect/push", json={"userId": user_id, "resource": resource})


@pytest.fixture
async def admin(backend):
    async with ProtectClient(backend.url, backend.admin_key) as api:
        yield api


# ------------------------------------------------------------------ item 17: stop attack


async def test_stop_attack_cancels_pending_refuses_new_pushes_with_429_and_is_lifted(make_backend, manual_clock):
    backend = make_backend(users=0, clock=manual_clock)
    desk_key = backend.key(Role.HELPDESK, "desk-anna")
    async with (
        ProtectClient(backend.url, backend.admin_key) as admin,
        ProtectClient(backend.url, desk_key) as desk,
        httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.key(Role.SERVICE)}) as svc,
    ):
        user = await new_user(admin, "victim")
        bystander = await new_user(admin, "bystander")
        phone = await enrolled_device(admin, backend.url, user.id)
        other_phone = await enrolled_device(admin, backend.url, bystander.id)
        pending = [(await push(svc, user.id, r)).json()["id"] for r in ("VPN", "GitHub")]
        assert (await push(svc, bystander.id)).status_code == 201
        assert (await admin.get_user(user.id)).pushBlock is None

        result = await desk.block_push(user.id, minutes=15)  # helpdesk may stop an attack

        until = manual_clock.now().replace(tzinfo=UTC) + timedelta(minutes=15)
        assert result.cancelled == 2 and result.blockedUntil == until
        assert await phone.pushes() == []
        assert {(await admin.get_push(a)).status for a in pending} == {PushStatus.EXPIRED}
        shown = await admin.get_user(user.id)
        assert shown.pushBlock is not None and shown.pushBlock.blockedUntil == until
        assert shown.pushBlock.blockedBy == "desk-anna" and shown.requireUserVerification is False

        # The resource-facing API refuses with the block's end, and the refusal is kept as evidence.
        manual_clock.advance(60)
        refused = await push(svc, user.id)
        assert refused.status_code == 429
        body = refused.json()
        assert body["blockedUntil"] == until.isoformat() and until.isoformat() in body["message"]
        assert body["retryAfter"] == 14 * 60 == int(refused.headers["retry-after"])
        blocked = await admin.push_attempts(user_id=user.id, status="blocked")
        assert blocked.totalCount == 1 and blocked.results[0].resource == "VPN"
        assert (await push(svc, bystander.id, "GitHub")).status_code == 201  # only that user is blocked

        event = (await admin.audit(limit=1, action="push.block")).results[0]
        assert event.actor == "desk-anna" and event.target == user.id and event.kind == "admin"
        assert event.details["before"] == {"pushBlock": None, "requireUserVerification": False}
        assert event.details["after"]["pushBlock"]["blockedUntil"] == until.isoformat()
        assert event.details["cancelled"] == 2

        lifted = await desk.lift_push_block(user.id)
        assert lifted.lifted is True
        assert (await admin.get_user(user.id)).pushBlock is None
        assert (await push(svc, user.id)).status_code == 201  # admitted after the lift
        unblock = (await admin.audit(limit=1)).results[0]
        assert unblock.action == "push.unblock" and unblock.details["after"] == {"pushBlock": None}
        # Lifting again changes nothing and writes nothing.
        events = await audit_total(admin)
        assert (await desk.lift_push_block(user.id)).lifted is False
        assert await audit_total(admin) == events
        await phone.aclose()
        await other_phone.aclose()


async def test_a_block_ends_by_the_server_clock(make_backend, manual_clock):
    backend = make_backend(users=0, clock=manual_clock)
    async with (
        ProtectClient(backend.url, backend.admin_key) as admin,
        httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.key(Role.SERVICE)}) as svc,
    ):
        user = await new_user(admin, "shortblock")
        phone = await enrolled_device(admin, backend.url, user.id)
        await admin.block_push(user.id, minutes=1, cancel_pending=False)
        assert (await push(svc, user.id)).status_code == 429
        manual_clock.advance(59)
        assert (await admin.get_user(user.id)).pushBlock is not None
        manual_clock.advance(1)
        assert (await admin.get_user(user.id)).pushBlock is None
        assert (await admin.push_stats(user.id)).pushBlock is None
        assert (await push(svc, user.id)).status_code == 201
        events = await audit_total(admin)
        assert (await admin.lift_push_block(user.id)).lifted is False  # it had already ended
        assert await audit_total(admin) == events
        await phone.aclose()


async def test_stop_attack_roles_and_bad_bodies(backend, admin):
    user = await new_user(admin, "blockroles")
    async with (
        ProtectClient(backend.url, backend.key(Role.READONLY)) as readonly,
        ProtectClient(backend.url, backend.key(Role.SERVICE)) as service,
    ):
        for api in (readonly, service):
            with pytest.raises(Forbidden) as refused:
                await api.block_push(user.id)
            assert "push.block" in refused.value.message
            with pytest.raises(Forbidden):
                await api.lift_push_block(user.id)
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        for body, field in (
            ({"minutes": 0}, "minutes"),
            ({"minutes": 1441}, "minutes"),
            ({"forever": True}, "forever"),
        ):
            response = await http.post(BLOCK.format(user.id), json=body)
            assert response.status_code == 422 and field in response.json()["message"]
        assert (await http.post(BLOCK.format("f" * 24), json={})).status_code == 404
        assert (await http.delete(BLOCK.format("f" * 24))).status_code == 404
        defaults = await http.post(BLOCK.format(user.id))  # no body: the defaults (15 minutes, cancel pending)
        assert defaults.status_code == 200 and defaults.json()["cancelled"] == 0
    assert (await admin.get_user(user.id)).pushBlock is not None


async def test_per_user_verification_refuses_unverified_approvals_for_that_user_only(backend, admin):
    user = await new_user(admin, "needsbio")
    other = await new_user(admin, "nobio")
    phone = await enrolled_device(admin, backend.url, user.id)
    other_phone = await enrolled_device(admin, backend.url, other.id)
    await admin.block_push(user.id, minutes=1, require_user_verification=True)
    assert (await admin.get_user(user.id)).requireUserVerification is True
    assert (await admin.get_user(other.id)).requireUserVerification is False
    await admin.lift_push_block(user.id)
    assert (await admin.get_user(user.id)).requireUserVerification is True  # "from now on": the lift keeps it
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as svc:
        attempt = await svc.create_push(user.id, "VPN")
        with pytest.raises(ValidationFailed) as refused:
            await phone.respond(attempt.id, "approve", user_verified=False)
        assert "userVerified" in refused.value.message
        assert (await phone.respond(attempt.id, "approve", user_verified=True)).status == "approved"
        theirs = await svc.create_push(other.id, "VPN")
        assert (await other_phone.respond(theirs.id, "approve", user_verified=False)).status == "approved"
        # A later block without the option does not switch it off; a PUT does, audited.
        await admin.block_push(user.id, minutes=1)
        assert (await admin.get_user(user.id)).requireUserVerification is True
        await admin.lift_push_block(user.id)
        off = await admin.update_user(user.id, SystemUserUpdate(requireUserVerification=False))
        assert off.requireUserVerification is False
        event = (await admin.audit(limit=1)).results[0]
        assert event.action == "user.update" and event.details == {
            "before": {"requireUserVerification": True},
            "after": {"requireUserVerification": False},
        }
        again = await svc.create_push(user.id, "VPN")
        assert (await phone.respond(again.id, "approve", user_verified=False)).status == "approved"
    await phone.aclose()
    await other_phone.aclose()


# ------------------------------------------------------------------ item 17b: unlock and delete


async def test_unlock_clears_account_locked_once_audited_admin_only(backend, admin):
    user = await new_user(admin, "lockedout")
    await admin.update_user(user.id, SystemUserUpdate(account_locked=True))
    async with ProtectClient(backend.url, backend.key(Role.HELPDESK)) as desk:
        with pytest.raises(Forbidden):
            await desk.unlock_user(user.id)
    events = await audit_total(admin)
    unlocked = await admin.unlock_user(user.id)
    assert unlocked.id == user.id and unlocked.account_locked is False
    assert (await admin.get_user(user.id)).account_locked is False
    event = (await admin.audit(limit=1)).results[0]
    assert (event.action, event.target, event.actor) == ("user.unlock", user.id, "test-admin")
    assert event.details == {"before": {"account_locked": True}, "after": {"account_locked": False}}
    assert await audit_total(admin) == events + 1
    assert (await admin.unlock_user(user.id)).account_locked is False  # already unlocked: no event
    assert await audit_total(admin) == events + 1
    with pytest.raises(NotFound):
        await admin.unlock_user("f" * 24)


async def test_delete_removes_device_codes_and_pending_pushes_but_keeps_attempts_and_audit(backend, admin):
    user = await new_user(admin, "leaver")
    phone = await enrolled_device(admin, backend.url, user.id)
    await admin.create_enrollment(user.id)  # a live code, to be removed too
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as svc:
        answered = await svc.create_push(user.id, "GitHub")
        await phone.respond(answered.id, "deny", report_fraud=True)
        pending = await svc.create_push(user.id, "VPN")
    async with ProtectClient(backend.url, backend.key(Role.HELPDESK)) as desk:
        with pytest.raises(Forbidden):
            await desk.delete_user(user.id)

    deleted = await admin.delete_user(user.id)

    assert deleted.id == user.id and deleted.username == "leaver"
    assert deleted.mfaEnrollment.pushStatus == "ENROLLED"  # the user as it was
    with pytest.raises(NotFound):
        await admin.get_user(user.id)
    with pytest.raises(NotFound):
        await admin.delete_user(user.id)
    with pytest.raises(Unauthorized):
        await phone.pushes()  # the device went with the user
    attempts = await admin.push_attempts(user_id=user.id)
    assert attempts.totalCount == 2 and {a.username for a in attempts.results} == {"leaver"}
    assert {a.id: a.status for a in attempts.results} == {answered.id: "denied", pending.id: "expired"}
    stats = await admin.push_stats(user.id, since=datetime.now(UTC) - timedelta(hours=1))
    assert (stats.username, stats.total, stats.denied, stats.expired, stats.fraud) == ("leaver", 2, 1, 1, 1)
    # The trail keeps every event about them, still named, and still found by their username.
    trail = await admin.audit(target="leaver", limit=100)
    actions = [e.action for e in trail.results]
    assert actions[0] == "user.delete" and {"user.create", "enrollment.create", "device.enroll"} <= set(actions)
    assert {e.targetName for e in trail.results} == {"leaver"} and trail.totalCount == len(actions)
    delete_event = trail.results[0]
    assert delete_event.actor == "test-admin" and delete_event.details["before"]["username"] == "leaver"
    assert delete_event.details["after"] is None and delete_event.details["removedEnrollmentCodes"] == 1
    assert delete_event.details["removedDevice"] is not None and delete_event.details["cancelledPushes"] == 1
    assert (await admin.audit(target=user.id, limit=100)).totalCount == trail.totalCount
    # The username is free again.
    assert (await new_user(admin, "leaver")).id != user.id
    await phone.aclose()


async def test_delete_with_enrolment_code_only_removes_it(backend, admin):
    user = await new_user(admin, "pendingleaver")
    code = await admin.create_enrollment(user.id)
    await admin.delete_user(user.id)
    async with DeviceClient(backend.url) as phone:
        with pytest.raises(BadRequest) as refused:
            await phone.enroll(code.code, "phone", IPHONE)
        assert "code" in refused.value.message
    event = (await admin.audit(limit=1)).results[0]
    assert event.action == "user.delete" and event.details["removedEnrollmentCodes"] == 1


# ------------------------------------------------------------------ item 8: push stats


def _count(attempts) -> dict:
    counts = {s.value: 0 for s in PushStatus}
    for a in attempts:
        counts[a.status.value] += 1
    return counts


async def all_attempts(api: ProtectClient, user_id: str, since: datetime) -> list:
    found: list = []
    while True:
        page = await api.push_attempts(user_id=user_id, since=since, skip=len(found), limit=100)
        found.extend(page.results)
        if len(found) >= page.totalCount or not page.results:
            return found


async def test_push_stats_agree_with_the_raw_attempts(backend, admin):
    victim = backend.seed_report["bombingVictim"]
    since = datetime.now(UTC) - BOMBING_WINDOW
    raw = await all_attempts(admin, victim, since)
    stats = await admin.push_stats(victim, since=since)
    counts = _count(raw)
    assert stats.total == len(raw) >= 48 > 0
    assert (stats.approved, stats.denied, stats.blocked, stats.expired, stats.pending) == (
        counts["approved"],
        counts["denied"],
        counts["blocked"],
        counts["expired"],
        counts["pending"],
    )
    assert stats.fraud == sum(a.fraud for a in raw)
    assert set(stats.resources) == {a.resource for a in raw} and stats.resources[0] == "VPN"
    assert stats.lastAttemptAt == max(a.createdAt for a in raw)
    assert stats.hostile == counts["blocked"] + counts["denied"] >= BOMBING_THRESHOLD
    assert stats.since == since
    # The default window is the bombing window; the suspects list is the same aggregate.
    assert (await admin.push_stats(victim)).total == stats.total
    suspects = await admin.push_suspects(since=since)
    row = next(s for s in suspects.results if s.userId == victim)
    assert row.model_dump() == stats.model_dump()
    hostility = [s.hostile for s in suspects.results]
    assert hostility == sorted(hostility, reverse=True) and all(h >= BOMBING_THRESHOLD for h in hostility)
    assert suspects.totalCount == len(suspects.results)
    # Every user's window, summed, is every attempt in the window.
    everyone = await admin.push_suspects(since=since, min_hostile=0, limit=100)
    if everyone.totalCount <= 100:
        assert sum(s.total for s in everyone.results) == (await admin.push_attempts(since=since, limit=1)).totalCount


async def test_push_suspects_include_blocked_users_and_live_counts(make_backend, manual_clock):
    backend = make_backend(users=0, clock=manual_clock)
    async with (
        ProtectClient(backend.url, backend.admin_key) as admin,
        ProtectClient(backend.url, backend.key(Role.SERVICE)) as svc,
    ):
        quiet = await new_user(admin, "quiet")
        loud = await new_user(admin, "loud")
        phone = await enrolled_device(admin, backend.url, loud.id)
        quiet_phone = await enrolled_device(admin, backend.url, quiet.id)
        first = await svc.create_push(loud.id, "VPN")
        for _ in range(BOMBING_THRESHOLD):
            with pytest.raises(RateLimited):
                await svc.create_push(loud.id, "VPN")
        stats = await admin.push_stats(loud.id)
        assert (stats.total, stats.pending, stats.blocked, stats.hostile) == (6, 1, 5, 5)
        manual_clock.advance(61)  # the pending one is past its time: it counts as expired now
        stats = await admin.push_stats(loud.id)
        assert (stats.pending, stats.expired) == (0, 1)
        assert (await admin.get_push(first.id)).status == "expired"
        assert [s.userId for s in (await admin.push_suspects()).results] == [loud.id]
        await admin.block_push(quiet.id, minutes=1440)  # no attempts at all, but a block in force
        suspects = await admin.push_suspects()
        assert [s.userId for s in suspects.results] == [loud.id, quiet.id] and suspects.totalCount == 2
        assert suspects.results[1].total == 0 and suspects.results[1].pushBlock is not None
        assert suspects.results[1].username == "quiet" and suspects.results[1].lastAttemptAt is None
        assert (await admin.push_suspects(min_hostile=6)).totalCount == 1
        manual_clock.advance(BOMBING_WINDOW.total_seconds())  # the attack leaves the window
        assert [s.userId for s in (await admin.push_suspects()).results] == [quiet.id]
        with pytest.raises(NotFound):
            await admin.push_stats("f" * 24)
        await phone.aclose()
        await quiet_phone.aclose()


# ------------------------------------------------------------------ item 6c: totpLock


async def test_totp_lock_state_is_in_every_user_answer(backend, admin):
    user = await new_user(admin, "guesser.totplock")
    phone = await enrolled_device(admin, backend.url, user.id)
    await phone.enroll_totp()
    fresh = await admin.get_user(user.id)
    assert (fresh.totpLock.failures, fresh.totpLock.maxFailures, fresh.totpLock.locked) == (0, 5, False)
    for _ in range(3):
        assert (await admin.verify_totp(user.id, "000000")).valid is False
    listed = (await admin.list_users(filters=[f"_id:$eq:{user.id}"])).results[0]
    searched = (await admin.search_users("guesser.totplock")).results[0]
    shown = await admin.get_user(user.id)
    for answer in (listed, searched, shown):
        assert answer.totpLock.model_dump() == {
            "failures": 3,
            "maxFailures": 5,
            "locked": False,
            "lockedUntil": None,
            "lockouts": 0,
        }
    for _ in range(2):
        await admin.verify_totp(user.id, "000000")
    lock = (await admin.get_user(user.id)).totpLock
    assert (lock.failures, lock.maxFailures, lock.locked, lock.lockouts) == (5, 5, True, 1) and lock.lockedUntil
    assert "locked" in (await admin.verify_totp(user.id, "000000")).reason
    # Issue 9: a lock-out in force is temporary and ends at lockedUntil (or a reset), whatever the setting
    # is changed to meanwhile; the setting in force is what is shown.
    _, etag = await admin.get_settings()
    await admin.update_settings({"totp": {"maxFailures": 8}}, etag)
    lock = (await admin.get_user(user.id)).totpLock
    assert (lock.failures, lock.maxFailures, lock.locked) == (5, 8, True)
    reset = await admin.reset_totp(user.id)
    assert reset.changed is True
    assert (await admin.get_user(user.id)).totpLock.model_dump() == {
        "failures": 0,
        "maxFailures": 8,
        "locked": False,
        "lockedUntil": None,
        "lockouts": 0,
    }
    await phone.aclose()


# ------------------------------------------------------------------ item 10: name sort


NAMES = [  # (first, last) in the order sort=lastname must give
    ("Ana", "de la Cruz"),
    ("Zoë", "Dubois"),
    ("Aoife", "Ó Briain"),
    ("cian", "Ó Briain"),
    ("Ciara", "O'Brien"),
    ("Bea", "Oakley"),
    ("Lars", "Öberg"),
    ("Wei", "Zhou"),
]


async def test_sort_by_last_then_first_name_folds_accents_and_case(backend, admin):
    created = {}
    for first, last in reversed(NAMES):  # created in reverse, so creation order cannot explain the result
        name = f"sortcase.{sort_key(first)}.{len(created)}"
        created[(first, last)] = (await new_user(admin, name, first=first, last=last)).id
    expected = [created[n] for n in NAMES]

    async def order(sort: str) -> list[str]:
        return [u.id for u in (await admin.list_users(search="sortcase.", sort=sort, limit=100)).results]

    assert await order("lastname") == expected
    assert await order("-lastname") == expected[::-1]
    by_first = sorted(NAMES, key=lambda n: (sort_key(n[0]), sort_key(n[1])))
    assert by_first[:3] == [("Ana", "de la Cruz"), ("Aoife", "Ó Briain"), ("Bea", "Oakley")]
    assert await order("firstname") == [created[n] for n in by_first]
    search = await admin.search_users("sortcase.")
    assert search.totalCount == len(NAMES)
    # Renaming keeps the sort key in step.
    await admin.update_user(created[("Wei", "Zhou")], SystemUserUpdate(lastname="Ávila"))
    assert (await order("lastname"))[0] == created[("Wei", "Zhou")]


async def test_the_seeded_directory_pages_in_folded_name_order(backend, admin):
    seen = []
    total = 1
    while len(seen) < total:
        page = await admin.list_users(sort="lastname", skip=len(seen), limit=100)
        total = page.totalCount
        seen.extend(page.results)
    keys = [(sort_key(u.lastname), sort_key(u.firstname), u.id) for u in seen]
    assert keys == sorted(keys) and len({u.id for u in seen}) == total
    # The seed has Ó Briain, Öberg-like accents and Yılmaz: Ó Briain sits among the Os, not after Z.
    obriain = [i for i, u in enumerate(seen) if u.lastname == "Ó Briain"]
    assert obriain, "the seeded directory should hold an Ó Briain"
    after = [sort_key(u.lastname)[0] for u in seen[obriain[-1] + 1 :]]
    assert after and set(after) <= set("opqrstuvwxyz") and "y" in after


# ------------------------------------------------------------------ item 13: audit filters


async def test_audit_filters_by_actor_action_target_and_kind(backend, admin):
    desk_key = backend.key(Role.HELPDESK, "desk-bo")
    user = await new_user(admin, "audited.filters")
    other = await new_user(admin, "audited.other")
    phone = await enrolled_device(admin, backend.url, user.id)  # device.enroll by user:audited.filters
    await phone.enroll_totp()  # totp.enroll by the device
    async with ProtectClient(backend.url, desk_key) as desk:
        await desk.block_push(user.id)
        await desk.lift_push_block(user.id)
        await desk.block_push(other.id)
    by_desk = await admin.audit(actor="desk-bo", limit=100)
    assert [e.action for e in by_desk.results] == ["push.block", "push.unblock", "push.block"]
    assert by_desk.totalCount == 3
    pushes = await admin.audit(action="push.", limit=100)
    assert {e.action for e in pushes.results} == {"push.block", "push.unblock"} and pushes.totalCount == 3
    assert (await admin.audit(action="push.block", limit=100)).totalCount == 2
    assert (await admin.audit(action="push", limit=100)).totalCount == 0  # exact unless it ends with "."
    for target in (user.id, "audited.filters", "AUDITED.FILTERS"):
        found = await admin.audit(target=target, limit=100)
        assert {e.target for e in found.results} == {user.id}
        assert {"user.create", "enrollment.create", "device.enroll", "totp.enroll", "push.block"} <= {
            e.action for e in found.results
        }
    devices = await admin.audit(kind="device", limit=100)
    assert devices.results and all(e.kind == "device" and e.actor.startswith("user:") for e in devices.results)
    admins = await admin.audit(kind="admin", limit=100)
    assert admins.results and all(e.kind == "admin" and not e.actor.startswith("user:") for e in admins.results)
    everything = await admin.audit(limit=1)
    assert devices.totalCount + admins.totalCount == everything.totalCount
    combined = await admin.audit(target=user.id, kind="device", limit=100)
    assert {e.action for e in combined.results} == {"device.enroll", "totp.enroll"}
    assert (await admin.audit(actor="user:audited.filters", limit=100)).totalCount == 2
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        response = await http.get("/api/v2/protect/audit", params={"kind": "robot"})
        assert response.status_code == 422 and "kind" in response.json()["message"]
        odd = await http.get("/api/v2/protect/audit", params={"action": "%.", "target": "%", "actor": "' OR 1=1 --"})
        assert odd.status_code == 200 and odd.json()["totalCount"] == 0
    await phone.aclose()


# ------------------------------------------------------------------ item 18: no-ops are not audited


async def test_changes_that_change_nothing_write_no_audit_event(backend, admin):
    user = await new_user(admin, "noop")
    events = await audit_total(admin)

    totp = await admin.reset_totp(user.id)  # no TOTP to reset
    assert totp.changed is False and totp.totpStatus == "NOT_ENROLLED"
    reset = await admin.reset_mfa(user.id)  # nothing to remove, no grace
    assert reset.mfaEnrollment.overallStatus == "NOT_ENROLLED"
    await admin.unlock_user(user.id)
    assert (await admin.lift_push_block(user.id)).lifted is False
    await admin.update_user(user.id, SystemUserUpdate(lastname="User", firstname="Test"))  # the values it has
    assert await audit_total(admin) == events

    phone = await enrolled_device(admin, backend.url, user.id)
    (endpoint,) = await admin.push_endpoints(user.id)
    events = await audit_total(admin)
    await admin.update_push_endpoint(user.id, endpoint.id, state="active", name=endpoint.name)
    assert await audit_total(admin) == events
    await admin.update_push_endpoint(user.id, endpoint.id, state="inactive")
    assert await audit_total(admin) == events + 1
    assert (await admin.audit(limit=1)).results[0].details["after"] == {"state": "inactive"}

    # Real changes are still audited, once each.
    await admin.reset_mfa(user.id)  # removes the device
    assert await audit_total(admin) == events + 2
    await admin.reset_mfa(user.id)  # nothing left: no event
    assert await audit_total(admin) == events + 2
    await admin.reset_mfa(user.id, grace_days=3)  # starts a grace period: a change
    assert await audit_total(admin) == events + 3
    await admin.reset_mfa(user.id)  # ends it: a change
    assert await audit_total(admin) == events + 4
    await phone.aclose()


async def test_totp_reset_with_totp_changes_and_audits(backend, admin):
    user = await new_user(admin, "hastotp")
    phone = await enrolled_device(admin, backend.url, user.id)
    await phone.enroll_totp()
    events = await audit_total(admin)
    assert (await admin.reset_totp(user.id)).changed is True
    assert await audit_total(admin) == events + 1
    assert (await admin.reset_totp(user.id)).changed is False
    assert await audit_total(admin) == events + 1
    await phone.aclose()


# ------------------------------------------------------------------ roles and the OpenAPI document


@pytest.mark.parametrize(
    ("role", "may_block", "may_delete"),
    [
        (Role.ADMIN, True, True),
        (Role.HELPDESK, True, False),
        (Role.READONLY, False, False),
        (Role.SERVICE, False, False),
    ],
)
async def test_new_routes_role_matrix(backend, admin, role, may_block, may_delete):
    user = await new_user(admin, f"matrix2-{role.value}")
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.key(role)}) as http:
        reads = [
            await http.get(f"/api/v2/protect/users/{user.id}/pushstats"),
            await http.get("/api/v2/protect/pushstats"),
            await http.get("/api/v2/protect/audit", params={"kind": "admin"}),
        ]
        assert all((r.status_code == 200) == (role != Role.SERVICE) for r in reads), [r.text for r in reads]
        block = await http.post(BLOCK.format(user.id), json={"minutes": 5})
        lift = await http.delete(BLOCK.format(user.id))
        assert (block.status_code, lift.status_code) == ((200, 200) if may_block else (403, 403))
        unlock = await http.post(f"/api/systemusers/{user.id}/unlock")
        delete = await http.delete(f"/api/systemusers/{user.id}")
        assert (unlock.status_code, delete.status_code) == ((200, 200) if may_delete else (403, 403))
        for refused in (r for r in (block, lift, unlock, delete) if r.status_code == 403):
            assert role.value in refused.json()["message"]


def test_openapi_describes_the_new_routes_truthfully(tmp_path):
    spec = create_app(tmp_path / "o.db").openapi()
    paths = spec["paths"]
    # 503: every route answers it while the database is down; 413 too, before any body is read (errors.document_errors).
    expected = {
        ("/api/v2/protect/users/{user_id}/push/block", "post"): (
            {"200", "401", "403", "404", "422", "413", "503"},
            "helpdesk",
        ),
        ("/api/v2/protect/users/{user_id}/push/block", "delete"): (
            {"200", "401", "403", "404", "422", "413", "503"},
            "helpdesk",
        ),
        ("/api/v2/protect/users/{user_id}/pushstats", "get"): (
            {"200", "400", "401", "403", "404", "422", "413", "503"},
            "Role",
        ),
        ("/api/v2/protect/pushstats", "get"): ({"200", "400", "401", "403", "422", "413", "503"}, "Role"),
        ("/api/v2/protect/audit", "get"): ({"200", "400", "401", "403", "422", "413", "503"}, "Role"),
        ("/api/systemusers/{user_id}/unlock", "post"): ({"200", "401", "403", "404", "422", "413", "503"}, "admin"),
        ("/api/systemusers/{user_id}", "delete"): ({"200", "401", "403", "404", "422", "413", "503"}, "admin"),
        ("/api/v2/protect/users/{user_id}/totp/reset", "post"): (
            {"200", "401", "403", "404", "422", "413", "503"},
            "helpdesk",
        ),
        ("/api/v2/protect/push", "post"): ({"201", "401", "403", "404", "409", "422", "413", "429", "503"}, "service"),
    }
    # Every error status is our envelope (FastAPI's own 422 schema is replaced: the handler sends ValidationErrorBody).
    for (path, method), (statuses, role) in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, (path, method, set(operation["responses"]))
        assert role in operation["description"], (path, method)
        for status in statuses - {"200", "201"}:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            body = "ValidationErrorBody" if status == "422" else "ErrorBody"
            assert schema == {"$ref": f"#/components/schemas/{body}"}, (path, method, status)
    block = paths["/api/v2/protect/users/{user_id}/push/block"]["post"]
    assert "#/components/schemas/PushBlockRequest" in str(block["requestBody"]["content"]["application/json"])
    assert block["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PushBlockResult"
    }
    assert "blockedUntil" in spec["components"]["schemas"]["ErrorBody"]["properties"]
    audit_params = {p["name"] for p in paths["/api/v2/protect/audit"]["get"]["parameters"]}
    assert {"actor", "action", "target", "kind"} <= audit_params
    user_schema = spec["components"]["schemas"]["SystemUser"]["properties"]
    assert {"totpLock", "pushBlock", "requireUserVerification"} <= set(user_schema)


# ------------------------------------------------------------------ existing database files


def test_a_database_from_the_first_version_is_upgraded_in_place(tmp_path):
    """A file made before migrations (no alembic_version) is refused by open_store (serve, demo) and
    brought up by ``db upgrade``: new columns are added, sort keys filled, history kept."""
    from sqlalchemy import text

    from console.server.clock import Clock
    from console.server.seed import seed_directory
    from console.server.services import users as user_service
    from console.server.services.common import Principal
    from console.server.store import SchemaBehind, open_store, upgrade_database

    path = tmp_path / "old.db"
    store = open_store(path)
    report = seed_directory(store, 40, rng_seed=3)
    with store.write() as conn:  # make it look like the first version's file
        for name in (
            "ix_users_lastname_sort",
            "ix_users_firstname_sort",
            "ix_users_push_blocked",
            "ix_audit_target_id",
            "ix_audit_actor_id",
            "ix_audit_action_id",
            "ix_audit_kind_id",
        ):
            conn.execute(text(f"DROP INDEX {name}"))
        for table, column in (
            ("users", "firstname_sort"),
            ("users", "lastname_sort"),
            ("users", "push_blocked_until"),
            ("users", "push_blocked_by"),
            ("users", "push_blocked_at"),
            ("users", "require_user_verification"),
            ("audit", "kind"),
            ("audit", "target_name"),
        ):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'push_attempts'")).scalar_one()
        old_ddl = (
            ddl.replace("push_attempts", "push_attempts_v1")
            .replace("\tusername TEXT, \n", "")
            .replace(
                "user_id VARCHAR(24) NOT NULL,", "user_id VARCHAR(24) NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
            )
        )
        assert "CASCADE" in old_ddl and "username" not in old_ddl, old_ddl
        conn.execute(text(old_ddl))
        conn.execute(
            text(
                "INSERT INTO push_attempts_v1 SELECT id, user_id, device_id, resource, status, fraud, "
                "user_verified, created_at, expires_at, responded_at, app, location, ip FROM push_attempts"
            )
        )
        conn.execute(text("DROP TABLE push_attempts"))
        conn.execute(text("ALTER TABLE push_attempts_v1 RENAME TO push_attempts"))
        conn.execute(text("DROP TABLE alembic_version"))  # made before migrations
    store.dispose()

    with pytest.raises(SchemaBehind, match="protect-console db upgrade"):
        open_store(path)  # never migrated implicitly
    before, after = upgrade_database(path)
    assert (before.revision, before.recorded, after.revision, after.recorded) == ("0001", False, head_revision(), True)
    store = open_store(path)
    try:
        now = Clock().now()
        with store.read() as conn:
            listed = user_service.list_users(conn, now, skip=0, limit=100, sort="lastname").results
            attempts = conn.execute(text("SELECT count(*) FROM push_attempts")).scalar_one()
        assert len(listed) == 40
        keys = [(sort_key(u.lastname), sort_key(u.firstname), u.id) for u in listed]
        assert keys == sorted(keys)
        victim = report["bombingVictim"]
        user_service.delete_user(store, victim, Principal("k", "test-admin", Role.ADMIN), now)
        with store.read() as conn:
            kept = conn.execute(
                text("SELECT count(*), min(username) FROM push_attempts WHERE user_id = :u"), {"u": victim}
            ).one()
            assert conn.execute(text("SELECT count(*) FROM push_attempts")).scalar_one() == attempts
        assert kept[0] >= 48 and kept[1]
    finally:
        store.dispose()
