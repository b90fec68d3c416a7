"""Issue 9 item 3: throttled guessing, against the real service on both stores.

Rate limits (per API key and per client address, counted in the database so every process and
instance shares them) answer 429 with ``Retry-After``; TOTP lock-outs are temporary with a growing
back-off (1, 5, 15, 60 minutes), audited and counted in /metrics; failures are counted in a sliding
window a good code does not reset; a service key cannot tell an unknown user from one without TOTP;
and the per-user push cap holds across resources. Time is the service's injectable clock
(``ManualClock``) wherever the test drives it; other addresses are other loopback addresses
(127.0.0.2, ...), which Linux routes to the service on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

import httpx
import pyotp
import pytest
from textual.widgets import OptionList

from console.models import Role
from console.server.app import create_app
from console.server.clock import ManualClock
from console.server.runner import ServerThread
from console.server.services.keys import create_key
from console.server.services.lockout import BACKOFF
from console.server.services.totp import current_step
from console.server.store import open_store
from console.tui.modals.confirm import ConfirmScreen
from tests.helpers import wait_for
from tests.serve_helpers import (
    IPHONE,
    Served,
    client,
    create_user,
    enroll,
    enroll_totp,
    enrollment_code,
    metric_value,
)
from tests.tui.test_settings import highlight, open_settings, status_of, type_value
from tests.tui.tui_helpers import SIZE, console_app

if TYPE_CHECKING:
    from tests.conftest import Backend

VERIFY = "/api/v2/protect/totp/verify"
PUSH = "/api/v2/protect/push"
ENROLL = "/device/v1/enroll"
NO_TOTP = {"valid": False, "reason": "TOTP is not enrolled for this user"}
UNKNOWN = "0" * 24


def client_from(url: str, key: str, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (a loopback address other than 127.0.0.1)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    headers = {"x-api-key": key} if key else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=60, transport=transport)


async def change_settings(http: httpx.AsyncClient, change: dict[str, Any]) -> None:
    got = await http.get("/api/v2/protect/settings")
    answer = await http.patch("/api/v2/protect/settings", json=change, headers={"if-match": got.headers["etag"]})
    assert answer.status_code == 200, answer.text


def seconds_left_in_minute(clock: ManualClock) -> int:
    epoch = int(clock.now().replace(tzinfo=UTC).timestamp())
    return 60 - epoch % 60


def code_at(totp: pyotp.TOTP, clock: ManualClock) -> str:
    return totp.generate_otp(current_step(clock.now()))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def totp_user(admin: httpx.AsyncClient, name: str) -> tuple[dict[str, Any], pyotp.TOTP]:
    user = await create_user(admin, name)
    return user, await enroll_totp(admin, await enroll(admin, user["_id"]))


# ------------------------------------------------------------------ rate limits


async def test_totp_checks_are_limited_per_key_and_per_address_with_retry_after(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    key_a, key_b = backend.key(Role.SERVICE, "limit-a"), backend.key(Role.SERVICE, "limit-b")
    body = {"userId": UNKNOWN, "code": "123456"}  # answered without a lock-out to reach
    async with client(backend.url, backend.admin_key) as admin:
        await change_settings(admin, {"rateLimits": {"totpVerifyPerMinute": 10}})
        async with (
            client(backend.url, key_a) as a_here,
            client_from(backend.url, key_a, "127.0.0.2") as a_there,
            client(backend.url, key_b) as b_here,
            client_from(backend.url, key_b, "127.0.0.3") as b_there,
        ):
            answers = [await a_here.post(VERIFY, json=body) for _ in range(10)]
            assert [a.status_code for a in answers] == [200] * 10 and all(a.json() == NO_TOTP for a in answers)
            refused = await a_here.post(VERIFY, json=body)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == str(seconds_left_in_minute(manual_clock))
            assert "this API key" in refused.json()["message"] and "limit 10" in refused.json()["message"]
            # The key's limit holds from another address; the address's limit holds for another key.
            elsewhere = await a_there.post(VERIFY, json=body)
            assert elsewhere.status_code == 429 and "this API key" in elsewhere.json()["message"], elsewhere.text
            same_address = await b_here.post(VERIFY, json=body)
            assert same_address.status_code == 429, same_address.text
            assert "this client address" in same_address.json()["message"]
            assert int(same_address.headers["retry-after"]) >= 1
            # Another key from another address is not affected.
            assert (await b_there.post(VERIFY, json=body)).json() == NO_TOTP
            # After Retry-After seconds (a new minute) the key may check again.
            manual_clock.advance(int(refused.headers["retry-after"]))
            assert (await a_here.post(VERIFY, json=body)).json() == NO_TOTP
        metrics = (await admin.get("/metrics")).text
        assert metric_value(metrics, "protect_rate_limited_total", route="totp", subject="key") >= 2
        assert metric_value(metrics, "protect_rate_limited_total", route="totp", subject="address") >= 1
        assert metric_value(metrics, "protect_http_requests_total", method="POST", route=VERIFY, status="429") >= 3


async def test_push_creation_and_device_enrolment_are_rate_limited(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    svc = backend.key(Role.SERVICE, "push-limit")
    async with client(backend.url, backend.admin_key) as admin, client(backend.url, svc) as service:
        await change_settings(admin, {"rateLimits": {"pushPerMinute": 10, "enrollPerMinute": 2}})
        user = await create_user(admin, "no.device")
        # Refused requests count as well (409: no device), so a key cannot probe past the limit.
        answers = [await service.post(PUSH, json={"userId": user["_id"], "resource": f"r{i}"}) for i in range(10)]
        assert {a.status_code for a in answers} == {409}, [a.text for a in answers]
        refused = await service.post(PUSH, json={"userId": user["_id"], "resource": "vpn"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == str(
            seconds_left_in_minute(manual_clock)
        )
        assert "push requests" in refused.json()["message"]
        # Enrolment: wrong codes count toward the address's limit.
        bad = {"code": "AAAA-BBBB-CCCC", "name": "phone", "device": IPHONE}
        async with client(backend.url) as device:
            assert [(await device.post(ENROLL, json=bad)).status_code for _ in range(2)] == [400, 400]
            code = await enrollment_code(admin, user["_id"])
            limited = await device.post(ENROLL, json={**bad, "code": code})
            assert limited.status_code == 429 and "device enrolments" in limited.json()["message"], limited.text
            assert int(limited.headers["retry-after"]) == seconds_left_in_minute(manual_clock)
        # The code was not spent by the refused request: from another address it enrols.
        async with client_from(backend.url, "", "127.0.0.2") as other_device:
            assert (await other_device.post(ENROLL, json={**bad, "code": code})).status_code == 201


async def test_limits_are_shared_by_two_app_instances_on_one_database(new_db: Callable[..., str]) -> None:
    """Two instances of the app, each with its own store (connections, caches) on the same database."""
    db = new_db()
    clock = ManualClock()
    stores = [open_store(db), open_store(db)]
    servers = [ServerThread(create_app(store, clock=clock)) for store in stores]
    for server in servers:
        server.start()
    try:
        admin_key = create_key(stores[0], "shared-admin", Role.ADMIN)
        svc = create_key(stores[0], "shared-svc", Role.SERVICE)
        async with (
            client(servers[0].url, admin_key) as admin,
            client(servers[0].url, svc) as one,
            client(servers[1].url, svc) as two,
        ):
            await change_settings(admin, {"rateLimits": {"totpVerifyPerMinute": 10}})
            body = {"userId": UNKNOWN, "code": "123456"}
            answers = await asyncio.gather(*((one, two)[i % 2].post(VERIFY, json=body) for i in range(16)))
            assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 6, [a.text for a in answers]
    finally:
        for server in servers:
            server.stop()
        for store in stores:
            store.dispose()


async def test_limits_are_shared_by_serve_workers_and_another_instance(
    new_db: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`serve --workers 2` (two processes) and an app in this process, on one database and the real clock."""
    db = new_db()
    store = open_store(db)
    here = ServerThread(create_app(store))
    here.start()
    there = Served(db=db, home=tmp_path_factory.mktemp("throttle-serve"), workers=2)
    try:
        there.start()
        admin_key = create_key(store, "procs-admin", Role.ADMIN)
        async with client(here.url, admin_key) as admin:
            await change_settings(admin, {"rateLimits": {"totpVerifyPerMinute": 10}})
        for _ in range(3):  # a burst that straddles a minute's edge is counted in two windows: try again
            svc = create_key(store, f"procs-svc-{time.monotonic_ns()}", Role.SERVICE)
            minute = int(time.time()) // 60
            entry = [client(here.url, svc), client(there.url, svc)]
            try:
                answers = [
                    await entry[i % 2].post(VERIFY, json={"userId": UNKNOWN, "code": "123456"}) for i in range(14)
                ]
            finally:
                for c in entry:
                    await c.aclose()
            if int(time.time()) // 60 == minute:
                break
        else:
            pytest.fail("three bursts in a row straddled a minute's edge")
        # Ten allowed in all, whichever process answered; every later one refused by both.
        assert [a.status_code for a in answers] == [200] * 10 + [429] * 4, [a.text for a in answers]
        assert all("this API key" in a.json()["message"] for a in answers[10:])
    finally:
        there.stop()
        here.stop()
        store.dispose()


# ------------------------------------------------------------------ lock-out


async def test_lockout_is_temporary_grows_on_repeat_and_is_audited_and_counted(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    svc = backend.key(Role.SERVICE, "lockout-svc")
    async with client(backend.url, backend.admin_key) as admin, client(backend.url, svc) as service:
        user, totp = await totp_user(admin, "lock.backoff")
        uid = user["_id"]
        before = metric_value((await admin.get("/metrics")).text, "protect_totp_lockouts_total")
        for round_, backoff in enumerate([*BACKOFF, BACKOFF[-1]], start=1):
            for _ in range(5):
                answer = await service.post(VERIFY, json={"userId": uid, "code": wrong(code_at(totp, manual_clock))})
                assert answer.json() == {"valid": False, "reason": "code does not match"}, answer.text
            locked = (await service.post(VERIFY, json={"userId": uid, "code": code_at(totp, manual_clock)})).json()
            assert locked["valid"] is False and "locked until" in locked["reason"], locked
            lock = (await admin.get(f"/api/systemusers/{uid}")).json()["totpLock"]
            assert lock["locked"] and lock["lockouts"] == round_ and lock["failures"] == 5, lock
            # Still locked a second before the back-off ends; the right code is accepted when it has.
            manual_clock.advance(backoff.total_seconds() - 1)
            assert (await service.post(VERIFY, json={"userId": uid, "code": code_at(totp, manual_clock)})).json()[
                "valid"
            ] is False
            manual_clock.advance(1)
            accepted = await service.post(VERIFY, json={"userId": uid, "code": code_at(totp, manual_clock)})
            assert accepted.json() == {"valid": True, "reason": None}, (round_, accepted.text)
            manual_clock.advance(30)  # the next round's codes are of a new step
        events = (await admin.get("/api/v2/protect/audit", params={"action": "totp.lockout", "limit": 10})).json()
        assert events["totalCount"] == 5
        minutes = [e["details"]["minutes"] for e in reversed(events["results"])]
        assert minutes == [1, 5, 15, 60, 60]
        assert all(e["target"] == uid for e in events["results"])
        after = metric_value((await admin.get("/metrics")).text, "protect_totp_lockouts_total")
        assert after - before == 5
        # The admin's TOTP reset clears the lock-out and its history at once.
        for _ in range(5):
            await service.post(VERIFY, json={"userId": uid, "code": wrong(code_at(totp, manual_clock))})
        assert (await admin.get(f"/api/systemusers/{uid}")).json()["totpLock"]["locked"] is True
        assert (await admin.post(f"/api/v2/protect/users/{uid}/totp/reset")).status_code == 200
        lock = (await admin.get(f"/api/systemusers/{uid}")).json()["totpLock"]
        assert lock == {"failures": 0, "maxFailures": 5, "locked": False, "lockedUntil": None, "lockouts": 0}


async def test_a_good_code_does_not_reset_the_failure_window_which_slides(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    svc = backend.key(Role.SERVICE, "window-svc")
    async with client(backend.url, backend.admin_key) as admin, client(backend.url, svc) as service:
        user, totp = await totp_user(admin, "lock.window")
        uid = user["_id"]

        async def check(code: str) -> dict[str, Any]:
            answer: dict[str, Any] = (await service.post(VERIFY, json={"userId": uid, "code": code})).json()
            return answer

        for _ in range(4):
            assert (await check(wrong(code_at(totp, manual_clock))))["valid"] is False
        assert (await check(code_at(totp, manual_clock)))["valid"] is True  # a real login
        assert (await admin.get(f"/api/systemusers/{uid}")).json()["totpLock"]["failures"] == 4
        manual_clock.advance(60)
        assert (await check(wrong(code_at(totp, manual_clock))))["reason"] == "code does not match"
        # The fifth wrong code in the window locks, the real login in between notwithstanding.
        assert "locked until" in (await check(code_at(totp, manual_clock)))["reason"]
        # The window slides: wrong codes 15 minutes apart never add up to a lock-out.
        manual_clock.advance(BACKOFF[0].total_seconds())
        for _ in range(6):
            manual_clock.advance(15 * 60)
            assert (await check(wrong(code_at(totp, manual_clock))))["reason"] == "code does not match"
        lock = (await admin.get(f"/api/systemusers/{uid}")).json()["totpLock"]
        assert lock["failures"] == 1 and not lock["locked"], lock


async def test_the_support_desks_audited_check_locks_out_too(
    make_backend: Callable[..., Backend], manual_clock: ManualClock
) -> None:
    backend = make_backend(users=0, clock=manual_clock)
    desk = backend.key(Role.HELPDESK, "desk")
    async with client(backend.url, backend.admin_key) as admin, client(backend.url, desk) as helpdesk:
        user, totp = await totp_user(admin, "lock.desk")
        for _ in range(5):
            await helpdesk.post(VERIFY, json={"userId": user["_id"], "code": wrong(code_at(totp, manual_clock))})
        locked = (await helpdesk.post(VERIFY, json={"userId": user["_id"], "code": code_at(totp, manual_clock)})).json()
        assert locked["valid"] is False and "locked until" in locked["reason"]
        events = (await admin.get("/api/v2/protect/audit", params={"action": "totp.lockout"})).json()
        assert events["totalCount"] == 1 and events["results"][0]["actor"] == "desk"


# ------------------------------------------------------------------ no enumeration


async def test_service_keys_cannot_tell_an_unknown_user_from_one_without_totp(
    make_backend: Callable[..., Backend],
) -> None:
    backend = make_backend(users=0)
    svc, desk = backend.key(Role.SERVICE, "enum-svc"), backend.key(Role.HELPDESK, "enum-desk")
    async with client(backend.url, backend.admin_key) as admin:
        plain = await create_user(admin, "no.totp")
    body_unknown, body_plain = {"userId": UNKNOWN, "code": "123456"}, {"userId": plain["_id"], "code": "123456"}
    async with client(backend.url, svc) as service:
        unknown, without = await service.post(VERIFY, json=body_unknown), await service.post(VERIFY, json=body_plain)
        assert (
            (unknown.status_code, unknown.content)
            == (without.status_code, without.content)
            == (200, b'{"valid":false,"reason":"TOTP is not enrolled for this user"}')
        )
    for key in (desk, backend.admin_key):  # the support desk and admins keep the detailed answer
        async with client(backend.url, key) as detailed:
            unknown, without = (
                await detailed.post(VERIFY, json=body_unknown),
                await detailed.post(VERIFY, json=body_plain),
            )
            assert unknown.status_code == 404 and "not found" in unknown.json()["message"]
            assert without.status_code == 200 and without.json() == NO_TOTP


# ------------------------------------------------------------------ per-user push cap


async def test_the_per_user_push_cap_holds_across_resources_under_concurrency(
    make_backend: Callable[..., Backend],
) -> None:
    backend = make_backend(users=0)
    svc = backend.key(Role.SERVICE, "cap-svc")
    async with client(backend.url, backend.admin_key) as admin, client(backend.url, svc) as service:
        await change_settings(admin, {"push": {"concurrentLimit": {"enabled": True, "max": 3}, "maxPendingPerUser": 3}})
        user = await create_user(admin, "cap.user")
        await enroll(admin, user["_id"])
        answers = await asyncio.gather(
            *(service.post(PUSH, json={"userId": user["_id"], "resource": f"app-{i}"}) for i in range(20))
        )
        assert sorted(a.status_code for a in answers) == [201] * 3 + [429] * 17, [a.text for a in answers]
        refusals = [a for a in answers if a.status_code == 429]
        assert all("across all resources (limit 3)" in a.json()["message"] for a in refusals)
        assert all(int(a.headers["retry-after"]) >= 1 for a in refusals)
        pending = (
            await admin.get("/api/v2/protect/pushattempts", params={"userId": user["_id"], "status": "pending"})
        ).json()
        assert pending["totalCount"] == 3
        metrics = (await admin.get("/metrics")).text
        assert metric_value(metrics, "protect_push_attempts_total", outcome="blocked_user_cap") >= 17
        # Raised, the cap lets exactly the difference through.
        await change_settings(admin, {"push": {"maxPendingPerUser": 4}})
        more = [await service.post(PUSH, json={"userId": user["_id"], "resource": f"more-{i}"}) for i in range(2)]
        assert [a.status_code for a in more] == [201, 429]


async def test_the_per_user_cap_is_shown_and_edited_in_the_consoles_settings(
    make_backend: Callable[..., Backend],
) -> None:
    backend = make_backend(users=0)
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        shown = " ".join(str(option.prompt) for option in screen.query_one("#settings-list", OptionList).options)
        assert "Max pending pushes per user" in shown and "allowed 1-50 per user" in shown
        await highlight(screen, pilot, "push.maxPendingPerUser")
        await pilot.press("e")
        await type_value(app, pilot, "2")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: screen.settings is not None and screen.settings.push.maxPendingPerUser == 2)
        assert "Saved" in status_of(screen)
    async with client(backend.url, backend.admin_key) as admin:
        assert (await admin.get("/api/v2/protect/settings")).json()["push"]["maxPendingPerUser"] == 2
