"""User detail: what it shows and what its actions do to the real service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input

from console.client import Conflict, DeviceClient, ProtectClient
from console.models import (
    BOMBING_THRESHOLD,
    BOMBING_WINDOW,
    ROLE_PERMISSIONS,
    DeviceInfo,
    EnrollmentStatus,
    MfaEnrollment,
    Permission,
    PushAttempt,
    PushEndpoint,
    PushStats,
    PushStatus,
    Role,
    SystemUser,
    TotpLockState,
)
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.enrollment import EnrollmentCodeScreen
from console.tui.modals.prompt import PromptScreen
from console.tui.screens.user_detail import UserDetailScreen, troubleshooting_hints
from console.tui.widgets.footer import ConsoleFooter
from console.tui.widgets.qr import QrCode
from tests.helpers import IPHONE, PIXEL, enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import SIZE, SMALL, console_app, detail_ready, text_of, toasts

ACTION_KEYS = {"U": "unenroll", "T": "reset_totp", "R": "reset_mfa", "E": "enroll_code", "V": "verify"}
DEVICE_ACTIONS = {"deactivate_device", "activate_device"}  # both on `A`, admins only (devices.write)


async def fully_enrolled_user(admin: ProtectClient, url: str, name: str, device: DeviceInfo = IPHONE):
    """A user with a push device and TOTP on that device, enrolled through the device API."""
    user = await new_user(admin, name)
    phone = await enrolled_device(admin, url, user.id, device)
    totp = await phone.enroll_totp()
    await phone.aclose()
    return user, pyotp.parse_uri(totp.otpauthUri)


async def palette_prompts(app: ProtectConsoleApp, pilot) -> list[str]:
    """Open the command palette on the current screen and read what it offers before typing."""
    screen = app.screen
    await pilot.press("ctrl+p")
    await wait_for(lambda: isinstance(app.screen, CommandPalette))
    options = app.screen.query_one(CommandList)
    await wait_for(
        lambda: any("Go to Audit" in str(options.get_option_at_index(i).prompt) for i in range(options.option_count))
    )
    prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
    await pilot.press("escape")
    await wait_for(lambda: app.screen is screen)
    return prompts


def shown_actions(screen: UserDetailScreen) -> set[str]:
    return {active.binding.action for active in screen.active_bindings.values()} & set(ACTION_KEYS.values())


async def test_detail_shows_profile_mfa_device_attempts(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "dora.detail", PIXEL)
        await admin.create_push(user.id, "Payroll", app="Workday", location="Lyon, FR", ip="192.0.2.7")
    app = console_app(backend, open_user="dora.detail")
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        assert "dora.detail" in text_of(screen, "#detail-profile")
        mfa = text_of(screen, "#detail-mfa")
        assert "Push" in mfa and "TOTP" in mfa and "enrolled" in mfa
        device = text_of(screen, "#detail-device")
        for expected in ("Google Pixel 8", "Android 14", "2.6.0", "Biometric", "Diagnostics"):
            assert expected in device
        attempts = text_of(screen, "#detail-attempts")
        assert "Payroll" in attempts and "Workday" in attempts and "Lyon, FR" in attempts and "pending" in attempts
        hints = text_of(screen, "#detail-hints")
        assert "Android" in hints and "Biometric is off" in hints
        assert shown_actions(screen) == set(ACTION_KEYS.values())
        offered = "\n".join(await palette_prompts(app, pilot))
        for action in ("Unenroll", "Reset TOTP", "Reset MFA", "Enroll code", "Verify"):
            assert f"User: {action}" in offered


async def test_reset_totp_confirms_then_the_server_shows_not_enrolled(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "tom.totp")
        assert (await admin.get_user(user.id)).mfaEnrollment.totpStatus == EnrollmentStatus.ENROLLED
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            await pilot.press("T")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")  # cancel first: nothing may change
            await wait_for(lambda: app.screen is screen)
            assert (await admin.get_user(user.id)).mfaEnrollment.totpStatus == EnrollmentStatus.ENROLLED
            await pilot.press("T")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(lambda: screen.user.mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED)
            assert (await admin.get_user(user.id)).mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED
            assert any("TOTP reset" in message for message in toasts(app))
            # Nothing left to reset: the key is out of the footer and says why when pressed.
            assert "reset_totp" not in shown_actions(screen)
            assert screen.action_unavailable("reset_totp") == "TOTP is not enrolled: nothing to reset."
            await pilot.press("T")
            await wait_for(lambda: any("nothing to reset" in message for message in toasts(app)))
            assert app.screen is screen


async def test_reset_all_mfa_asks_for_grace_days(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "greta.grace")
        app = console_app(backend, open_user=user.username)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            await pilot.press("R")
            await wait_for(lambda: isinstance(app.screen, PromptScreen))
            field = app.screen.query_one(Input)
            await pilot.press("end", *(["backspace"] * len(field.value)), "9", "9", "9", "enter")
            assert "0 to 365" in text_of(app.screen, "#prompt-error")  # refused, field named
            await pilot.press("backspace", "backspace", "backspace", "3", "enter")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            assert "3 days" in text_of(app.screen, "#confirm-body")
            await pilot.press("y")
            await wait_for(lambda: screen.device is None and screen.user.mfa.exclusion)
            after = await admin.get_user(user.id)
            assert after.mfaEnrollment.pushStatus == EnrollmentStatus.NOT_ENROLLED
            assert after.mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED
            assert after.mfa.exclusion and after.mfa.exclusionUntil is not None
            left = after.mfa.exclusionUntil - datetime.now(UTC)
            assert timedelta(days=2, hours=23) < left <= timedelta(days=3, minutes=1)
            assert await admin.push_endpoints(user.id) == []


async def test_enrollment_code_is_shown_with_a_qr_and_works_on_a_device(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "eric.enroll")
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            await detail_ready(app, pilot)
            await pilot.press("E")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(lambda: isinstance(app.screen, EnrollmentCodeScreen))
            code = app.screen.code
            assert code.code in text_of(app.screen, "#enroll-code")
            qr = app.screen.query_one(QrCode)
            assert qr.data == code.uri
            qr_lines = text_of(app.screen, "#enroll-qr").splitlines()
            assert len(qr_lines) >= 10 and set("".join(qr_lines)) <= set(" ▀▄█")
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        # The code the console showed enrolls a real device.
        async with DeviceClient(backend.url) as phone:
            await phone.enroll(code.code, "New phone", IPHONE)
        assert len(await admin.push_endpoints(user.id)) == 1


async def test_verify_caller_with_the_code_they_read_out(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, totp = await fully_enrolled_user(admin, backend.url, "vera.verify")
    app = console_app(backend, open_user=user.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        await pilot.press("V")
        await wait_for(lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"12ab")  # letters are refused by the field
        assert app.screen.query_one(Input).value == "12"
        await pilot.press("enter")
        assert "6 digits" in text_of(app.screen, "#prompt-error")
        await pilot.press("backspace", "backspace", *totp.now(), "enter")
        await wait_for(lambda: screen.caller_check is not None)
        assert "✓ valid" in screen.caller_check.plain
        assert any("VALID" in message for message in toasts(app))
        wrong = f"{(int(totp.now()) + 500000) % 1000000:06d}"
        await pilot.press("V")
        await wait_for(lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*wrong, "enter")
        await wait_for(lambda: "NOT valid" in screen.caller_check.plain)


@pytest.mark.parametrize("how", ["readonly-profile", "readonly-role"])
async def test_read_only_hides_every_changing_action(backend, how: str) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, f"rita.{how}")
        before = await admin.get_user(user.id)
        key = backend.admin_key if how == "readonly-profile" else backend.key(Role.READONLY)
        app = console_app(backend, key, readonly=how == "readonly-profile", open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            assert screen.device is not None  # there is something one could unenroll
            assert shown_actions(screen) == set()
            footer_keys = {active.binding.key for active in screen.active_bindings.values()}
            assert not footer_keys & (set(ACTION_KEYS) | {"A"})
            assert not {active.binding.action for active in screen.active_bindings.values()} & DEVICE_ACTIONS
            for key_name in [*ACTION_KEYS, "A"]:
                await pilot.press(key_name)
                await pilot.pause()
                assert app.screen is screen  # no confirmation, no prompt
            offered = "\n".join(await palette_prompts(app, pilot))
            assert "Go to Users" in offered
            for action in ("Unenroll", "Reset TOTP", "Reset MFA", "Enroll code", "Verify", "push device"):
                assert action not in offered
            header = text_of(screen, "#console-header")
            assert "READ-ONLY" in header
            if how == "readonly-role":
                assert "role: readonly" in header
        after = await admin.get_user(user.id)
        assert after.mfaEnrollment == before.mfaEnrollment
        endpoints = await admin.push_endpoints(user.id)
        assert len(endpoints) == 1 and endpoints[0].state == "active"


async def test_helpdesk_sees_support_actions(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "hank.helpdesk")
    app = console_app(backend, backend.key(Role.HELPDESK), open_user=user.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        assert shown_actions(screen) == set(ACTION_KEYS.values())
        # Turning a device off and on needs devices.write, which the help desk does not have.
        active = screen.active_bindings
        assert "A" not in active and not {b.binding.action for b in active.values()} & DEVICE_ACTIONS
        await pilot.press("A")
        await wait_for(lambda: any("helpdesk cannot deactivate the push device" in message for message in toasts(app)))
        assert app.screen is screen
        offered = "\n".join(await palette_prompts(app, pilot))
        assert "Deactivate the push device" not in offered and "Activate the push device" not in offered
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        assert (await admin.push_endpoints(user.id))[0].state == "active"


async def test_admin_deactivates_and_reactivates_the_push_device(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "dana.device", PIXEL)
    service = ProtectClient(backend.url, backend.key(Role.SERVICE))
    app = console_app(backend, open_user=user.username)
    async with ProtectClient(backend.url, backend.admin_key) as admin, service, app.run_test(size=SMALL) as pilot:
        screen = await detail_ready(app, pilot)
        assert screen.active_bindings["A"].binding.action == "deactivate_device"
        assert "A" in screen.query_one(ConsoleFooter).shown_keys  # fits at 80 columns with the others
        offered = "\n".join(await palette_prompts(app, pilot))
        assert "User: Deactivate the push device" in offered

        # The confirmation names the user and the device and says what happens; n changes nothing.
        await pilot.press("A")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        question = text_of(app.screen, "#confirm-title")
        body = " ".join(text_of(app.screen, "#confirm-body").split())
        assert "Deactivate the push device of" in question and "dana.device" in question
        assert "Google Pixel 8 (Android 14)" in body
        assert "Deactivate: pushes to this device are refused until reactivated" in body
        await pilot.press("n")
        await wait_for(lambda: app.screen is screen)
        assert (await admin.push_endpoints(user.id))[0].state == "active"

        await pilot.press("A")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: screen.device is not None and screen.device.state == "inactive")
        assert (await admin.push_endpoints(user.id))[0].state == "inactive"
        assert any("deactivated" in message and "dana.device" in message for message in toasts(app))
        with pytest.raises(Conflict):  # the server refuses pushes to the user now
            await service.create_push(user.id, "VPN")
        await pilot.pause()
        assert "Device is inactive" in text_of(screen, "#detail-hints")
        assert screen.active_bindings["A"].binding.action == "activate_device"  # the footer says what A does now

        await pilot.press("A")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "Activate the push device of" in text_of(app.screen, "#confirm-title")
        await pilot.press("y")
        await wait_for(lambda: screen.device is not None and screen.device.state == "active")
        assert (await admin.push_endpoints(user.id))[0].state == "active"
        assert any("activated" in message and "deactivated" not in message for message in toasts(app))
        assert (await service.create_push(user.id, "VPN")).id  # pushes flow again


async def test_seeded_push_bombing_victim_gets_the_warning(backend) -> None:
    victim = backend.seed_report["bombingVictim"]
    app = console_app(backend, open_user=victim)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        assert "Possible push bombing" in text_of(screen, "#detail-hints")
        assert "denied FRAUD" in text_of(screen, "#detail-attempts")  # fraud reports flagged, in plain letters


def _user(**enrollment: EnrollmentStatus) -> SystemUser:
    return SystemUser(
        _id="a" * 24,
        username="u",
        email="u@x.example",
        created=datetime.now(UTC),
        mfaEnrollment=MfaEnrollment(**enrollment),
    )


def _device(os: str, version: str) -> PushEndpoint:
    info = DeviceInfo(make="X", model="Y", os=os, osVersion=version, appVersion="1.0", uvEnabled=True)
    return PushEndpoint(id="d", name="n", state="active", enrollmentDate=datetime.now(UTC), device=info)


def _attempt(status: PushStatus, minutes_ago: int) -> PushAttempt:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return PushAttempt(id="p", userId="u", resource="VPN", status=status, createdAt=at, expiresAt=at)


@pytest.mark.parametrize(
    ("os", "version", "unsupported"),
    [("iOS", "12.5", True), ("iOS", "13.0", False), ("Android", "7.1", True), ("Android", "8", False)],
)
def test_hint_flags_unsupported_os(os: str, version: str, unsupported: bool) -> None:
    hints = troubleshooting_hints(
        _user(pushStatus=EnrollmentStatus.ENROLLED), _device(os, version), [], datetime.now(UTC)
    )
    assert any("unsupported" in text for _style, text in hints) is unsupported


def _stats(blocked: int, denied: int, fraud: int = 0) -> PushStats:
    now = datetime.now(UTC)
    return PushStats(
        userId="u", since=now - BOMBING_WINDOW, total=blocked + denied, blocked=blocked, denied=denied, fraud=fraud
    )


def test_hints_for_expiring_pushes_and_bombing() -> None:
    now = datetime.now(UTC)
    user = _user(pushStatus=EnrollmentStatus.ENROLLED)
    expiring = [_attempt(PushStatus.EXPIRED, 5), _attempt(PushStatus.EXPIRED, 50), _attempt(PushStatus.APPROVED, 90)]
    texts = [t for _s, t in troubleshooting_hints(user, _device("iOS", "17"), expiring, now, _stats(0, 0))]
    assert any("clock" in t and "notifications" in t for t in texts)
    assert not any("push bombing" in t for t in texts)
    # The figures are the server's aggregate over the window, against the shared threshold.
    bombing = _stats(BOMBING_THRESHOLD - 1, 1, fraud=2)
    texts = [t for _s, t in troubleshooting_hints(user, _device("iOS", "17"), expiring, now, bombing)]
    assert any(f"push bombing: {BOMBING_THRESHOLD} blocked or denied attempts in the last hour" in t for t in texts)
    assert any("reported 2 push(es) as fraud" in t for t in texts)
    assert not any("clock" in t for t in texts)  # unanswered pushes are the attack, not the phone
    texts = [
        t for _s, t in troubleshooting_hints(user, _device("iOS", "17"), [], now, _stats(BOMBING_THRESHOLD - 1, 0))
    ]
    assert not any("push bombing" in t for t in texts)
    # Many refused attempts in the list but none in the window (long ago): not an ongoing attack.
    old = [_attempt(PushStatus.BLOCKED, 120 + m) for m in range(10)]
    texts = [t for _s, t in troubleshooting_hints(user, _device("iOS", "17"), old, now, _stats(0, 0))]
    assert not any("push bombing" in t for t in texts)


def test_hints_name_only_keys_the_role_has() -> None:
    """Item 14: a helpdesk key is never told to press A (devices.write) or L; a readonly key no key at all."""
    now = datetime.now(UTC)
    user = _user(pushStatus=EnrollmentStatus.ENROLLED, totpStatus=EnrollmentStatus.ENROLLED)
    user.account_locked = True
    user.totpLock = TotpLockState(failures=5, maxFailures=5, locked=True)
    inactive = _device("iOS", "17").model_copy(update={"state": "inactive"})
    for role in (Role.ADMIN, Role.HELPDESK, Role.READONLY):
        granted = ROLE_PERMISSIONS[role]
        texts = " ".join(
            t for _s, t in troubleshooting_hints(user, inactive, [], now, _stats(8, 2), granted.__contains__)
        )
        keys = {
            "(A)": Permission.DEVICES_WRITE,
            "(E": Permission.ENROLL,
            "(R)": Permission.MFA_RESET,
            "(T)": Permission.TOTP_RESET,
            "(X)": Permission.PUSH_BLOCK,
            "L unlocks": Permission.USERS_WRITE,
        }
        for key, permission in keys.items():
            assert (key in texts) == (permission in granted), (role, key, texts)
        if role == Role.READONLY:
            assert "Ask an admin or the help desk to stop the attack" in texts


def test_qr_half_blocks_carry_exactly_the_qr_modules() -> None:
    import segno

    from console.tui.widgets.qr import qr_text

    uri = "protect://enroll?code=ABCD-1234&host=127.0.0.1"
    lines = qr_text(uri).plain.splitlines()
    top = {"█": True, "▀": True, "▄": False, " ": False}
    bottom = {"█": True, "▀": False, "▄": True, " ": False}
    light: list[list[bool]] = []
    for line in lines:
        light.append([top[c] for c in line])
        light.append([bottom[c] for c in line])
    expected = [[not dark for dark in row] for row in segno.make(uri, error="l", micro=False).matrix_iter(border=2)]
    assert light[: len(expected)] == expected
    assert all(all(row) for row in light[len(expected) :])  # only light padding after the code
