"""The user screen, issue 6: keys typed ahead, reload and refresh, TOTP lock-out, server push stats, keys that
say why, role-aware hints, lost phone, Stop attack / Lift block, unlock, delete, copy.

Everything against the real service (``backend``) and the real app; key flows are typed without pauses
(``burst`` queues them as a terminal delivers typed-ahead input).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from textual.widgets import Input

from console.client import ApiError, NotFound, ProtectClient
from console.display import clock_zone, user_label
from console.models import EnrollmentStatus, Role, SystemUser
from console.tui.modals.choice import ChoiceScreen
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.enrollment import EnrollmentCodeScreen
from console.tui.modals.prompt import PromptScreen
from console.tui.modals.stop_attack import StopAttackScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from tests.helpers import IPHONE, enrolled_device, new_user, wait_for
from tests.tui.test_detail import fully_enrolled_user, palette_prompts
from tests.tui.tui_helpers import (
    SIZE,
    SMALL,
    burst,
    console_app,
    detail_ready,
    footer_keys_shown,
    open_screen,
    table_loaded,
    text_of,
    toasts,
)


def toasted(app, *words: str) -> bool:
    return any(all(word in message for word in words) for message in toasts(app))


async def modal(app, cls: type, timeout: float = 10) -> None:
    """Wait until ``cls`` is on top and laid out (its question drawn)."""
    await wait_for(
        lambda: isinstance(app.screen, cls) and app.screen.is_mounted and bool(_title(app).strip()), timeout=timeout
    )


def _title(app) -> str:
    try:
        return title_of(app)
    except Exception:  # noqa: BLE001 - not composed yet
        return ""


def title_of(app) -> str:
    """The modal's question (confirm, choice, prompt or stop-attack), as plain text."""
    for selector in ("#confirm-title", "#choice-title", "#prompt-title", "#stop-title"):
        if app.screen.query(selector):
            return text_of(app.screen, selector)
    raise AssertionError(f"no modal title on {type(app.screen).__name__}")


def body_of(app) -> str:
    for selector in ("#confirm-body", "#choice-body", "#prompt-label", "#stop-body"):
        if app.screen.query(selector):
            return " ".join(text_of(app.screen, selector).split())
    raise AssertionError(f"no modal body on {type(app.screen).__name__}")


async def first_user(backend, username: str) -> SystemUser:
    """A user with a push device and TOTP whose username sorts first in the Users list."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, username)
        return user


# ------------------------------------------------------------------ item 2: keys typed ahead


@pytest.mark.parametrize(
    ("key", "asked", "question"),
    [
        ("U", ConfirmScreen, "Unenroll the push device of"),
        ("T", ConfirmScreen, "Reset TOTP for"),
        ("R", PromptScreen, "Reset all MFA for"),
        ("X", StopAttackScreen, "Stop the push attack on"),
    ],
)
async def test_enter_and_an_action_key_typed_ahead_from_users_act_on_that_user(backend, key, asked, question) -> None:
    """`Enter U` in one read on the Users list: the key is not dropped; the question names the opened user."""
    user = await first_user(backend, "aaaa.first")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users = await open_screen(app, pilot, None, UsersScreen, lambda s: table_loaded(s.table))
        await wait_for(lambda: app.whoami is not None)
        assert users.table.row_at(0).username == user.username
        burst(app, ["enter", key])
        await modal(app, asked, timeout=20)
        assert question in title_of(app) and user.username in title_of(app)
        assert isinstance(app.screen_stack[-2], UserDetailScreen) and app.screen_stack[-2].user.id == user.id
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))


async def test_an_action_key_before_the_user_loads_waits_for_it(backend) -> None:
    """The screen opened with the key already typed (before whoami and the user answered): it acts once both are in."""
    user = await first_user(backend, "wanda.wait")
    app = console_app(backend, open_user=user.username)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen), interval=0.001)
        burst(app, ["U"])
        await modal(app, ConfirmScreen, timeout=20)
        assert "Unenroll the push device of" in title_of(app) and "wanda.wait" in title_of(app)
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        assert app.screen.pending_action is None


async def test_a_key_for_a_user_that_does_not_load_says_why(backend) -> None:
    app = console_app(backend, open_user="nobody@nowhere.example")
    async with app.run_test(size=SIZE):
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen), interval=0.001)
        burst(app, ["T"])
        try:
            # Waiting for the user when the key came, or after the lookup failed: either way it says why.
            await wait_for(
                lambda: (
                    toasted(app, "Not done", "reset TOTP", "user not found")
                    or toasted(app, "did not load", "nobody@nowhere.example")
                ),
                timeout=20,
            )
        except AssertionError:
            raise AssertionError(
                f"toasts: {toasts(app)}; screen {app.screen!r}; error {app.screen.error_visible}"
            ) from None
        assert isinstance(app.screen, UserDetailScreen)


# ------------------------------------------------------------------ item 6: reload and refresh


async def test_r_reloads_the_user_screen(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "rolf.reload")
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            assert "none" in text_of(screen, "#detail-attempts")
            await admin.create_enrollment(user.id)  # push enrollment now pending
            loads = screen.loads
            await pilot.press("r")
            await wait_for(lambda: screen.loads > loads)
            assert screen.user.mfaEnrollment.pushStatus == EnrollmentStatus.PENDING_ACTIVATION
            await pilot.pause()
            assert "pending" in text_of(screen, "#detail-mfa")


async def test_the_user_screen_refreshes_itself_but_not_under_a_modal_and_keeps_its_place(backend, monkeypatch) -> None:
    monkeypatch.setattr(UserDetailScreen, "REFRESH_SECONDS", 0.2)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, _totp = await fully_enrolled_user(admin, backend.url, "fresh.fritz")
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SMALL) as pilot:
            screen = await detail_ready(app, pilot)
            # New attempts show up by themselves.
            await admin.create_push(user.id, "Payroll", app="Workday")
            await wait_for(lambda: "Payroll" in text_of(screen, "#detail-attempts"))
            # The admin's place in the body stays put across refreshes.
            body = screen.query_one("#detail-body")
            await pilot.press("end")
            await wait_for(lambda: body.scroll_y > 0)
            place = body.scroll_y
            loads = screen.loads
            await wait_for(lambda: screen.loads >= loads + 2)
            await pilot.pause()
            assert body.scroll_y == place
            # Under a modal: no refresh (ticks pass, nothing is loaded).
            await pilot.press("T")
            await modal(app, ConfirmScreen)
            await wait_for(lambda: not any(w.group == "detail-load" and w.is_running for w in screen.workers))
            loads, ticks = screen.loads, screen.refresh_ticks
            await wait_for(lambda: screen.refresh_ticks >= ticks + 3)
            assert screen.loads == loads
            await pilot.press("n")
            await wait_for(lambda: screen.loads > loads)  # and it resumes


# ------------------------------------------------------------------ item 6c: TOTP lock-out


async def test_totp_failures_and_lock_show_and_v_warns_before_a_wrong_code_counts(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user, totp = await fully_enrolled_user(admin, backend.url, "lena.lock")
        wrong = f"{(int(totp.now()) + 500000) % 1000000:06d}"
        for _ in range(2):
            assert not (await admin.verify_totp(user.id, wrong)).valid
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            max_failures = screen.user.totpLock.maxFailures
            assert f"2 of {max_failures} failures" in " ".join(text_of(screen, "#detail-mfa").split())
            await pilot.press("V")
            await modal(app, PromptScreen)
            assert "lena.lock" in title_of(app)
            assert f"2 of {max_failures} failures so far: a wrong code now counts toward the lock-out" in body_of(app)
            await pilot.press(*wrong, "enter")
            await wait_for(lambda: screen.user.totpLock.failures == 3)
            # Locked by more wrong codes elsewhere: the screen says so, and V offers T instead.
            while not (await admin.get_user(user.id)).totpLock.locked:
                await admin.verify_totp(user.id, wrong)
            await pilot.press("r")
            await wait_for(lambda: screen.user.totpLock.locked)
            await pilot.pause()
            assert f"locked ({max_failures} of {max_failures} failures)" in " ".join(
                text_of(screen, "#detail-mfa").split()
            )
            assert "TOTP is locked" in text_of(screen, "#detail-hints")
            await pilot.press("V")
            await modal(app, ConfirmScreen)
            assert "TOTP is locked for" in title_of(app) and "Reset TOTP instead" in title_of(app)
            await pilot.press("y")
            await wait_for(lambda: screen.user.mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED)
            after = await admin.get_user(user.id)
            assert after.totpLock.failures == 0 and not after.totpLock.locked


# ------------------------------------------------------------------ item 8: the server's figures


async def test_push_bombing_figures_are_the_servers_aggregate(backend) -> None:
    victim = backend.seed_report["bombingVictim"]
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        stats = await admin.push_stats(victim)
    assert stats.total > 15  # more than the screen lists: the counts cannot come from the list
    app = console_app(backend, open_user=victim)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        heading = " ".join(text_of(screen, "#detail-attempts").split())
        assert f"{stats.total} total, {stats.blocked} blocked, {stats.denied} denied" in heading
        hints = " ".join(text_of(screen, "#detail-hints").split())
        assert f"{stats.hostile} blocked or denied attempts in the last hour" in hints


# ------------------------------------------------------------------ item 11: keys say why


async def test_keys_that_cannot_act_say_why(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "nadia.nothing")
    app = console_app(backend, open_user=user.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        shown = {active.binding.action for active in screen.active_bindings.values()}
        assert not shown & {"unenroll", "reset_totp", "verify", "deactivate_device", "unlock", "lift_block"}
        for key, reason in [
            ("U", "No push device to unenroll"),
            ("T", "TOTP is not enrolled"),
            ("V", "TOTP is not enrolled"),
            ("A", "No push device"),
            ("L", "not locked"),
        ]:
            await pilot.press(key)
            await wait_for(lambda reason=reason: toasted(app, reason))
            assert app.screen is screen
    helpdesk = console_app(backend, backend.key(Role.HELPDESK, "desk-hana"), open_user=user.id)
    async with helpdesk.run_test(size=SIZE) as pilot:
        screen = await detail_ready(helpdesk, pilot)
        burst(helpdesk, ["D"])
        await wait_for(lambda: toasted(helpdesk, "helpdesk cannot delete the user"))
        assert helpdesk.screen is screen


# ------------------------------------------------------------------ item 14: reset all MFA says what


async def test_reset_all_mfa_lists_what_the_user_has_and_what_is_kept(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        page = await admin.list_users(
            filters=["mfaEnrollment.webAuthnStatus:$eq:ENROLLED", "mfaEnrollment.totpStatus:$eq:NOT_ENROLLED"], limit=1
        )
        user = page.results[0]
        for device in await admin.push_endpoints(user.id):
            await admin.unenroll_device(user.id, device.id)
        phone = await enrolled_device(admin, backend.url, user.id, IPHONE)  # a device, no TOTP
        await phone.aclose()
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            await detail_ready(app, pilot)
            burst(app, ["R"])
            await modal(app, PromptScreen)
            burst(app, ["enter"])  # 7 days of grace, the default
            await modal(app, ConfirmScreen)
            body = body_of(app)
            assert "Removes: push device Apple iPhone 15" in body and "TOTP" not in body
            assert "Kept: WebAuthn" in body
            assert "(until 20" in body and clock_zone(datetime.now(UTC)).split()[-1] in body  # zone shown
            burst(app, ["y"])
            await wait_for(
                lambda: toasted(app, "All MFA reset for", "removed push device Apple iPhone 15", "kept WebAuthn")
            )
            after = await admin.get_user(user.id)
            assert after.mfaEnrollment.webAuthnStatus == EnrollmentStatus.ENROLLED
            assert after.mfaEnrollment.pushStatus == EnrollmentStatus.NOT_ENROLLED


# ------------------------------------------------------------------ item 16b: lost phone


async def test_enroll_on_an_active_device_offers_to_deactivate_it_first(backend) -> None:
    user = await first_user(backend, "lost.phone")
    app = console_app(backend, open_user=user.id)
    async with ProtectClient(backend.url, backend.admin_key) as admin, app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        burst(app, ["E"])
        await modal(app, ChoiceScreen)
        assert "lost.phone" in title_of(app)
        assert "still ACTIVE" in body_of(app) and "keeps approving" in body_of(app)
        assert app.screen.focused.id == "cancel"
        burst(app, ["d"])
        await wait_for(lambda: isinstance(app.screen, EnrollmentCodeScreen))
        assert (await admin.push_endpoints(user.id))[0].state == "inactive"
        await wait_for(lambda: "Expires 20" in text_of(app.screen, "#enroll-expires"))
        expires = " ".join(text_of(app.screen, "#enroll-expires").split())
        assert clock_zone(datetime.now(UTC)).split()[-1] in expires
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen)
    helpdesk = console_app(backend, backend.key(Role.HELPDESK), open_user=user.id)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await admin.update_push_endpoint(user.id, (await admin.push_endpoints(user.id))[0].id, state="active")
    async with helpdesk.run_test(size=SIZE) as pilot:
        await detail_ready(helpdesk, pilot)
        burst(helpdesk, ["E"])
        await modal(helpdesk, ConfirmScreen)
        assert "ask an admin to deactivate it" in body_of(helpdesk) and "stop an attack with X" in body_of(helpdesk)
        burst(helpdesk, ["n"])
        await wait_for(lambda: isinstance(helpdesk.screen, UserDetailScreen))


# ------------------------------------------------------------------ item 17: Stop attack / Lift block


async def test_stop_attack_then_lift_block_as_the_help_desk(backend) -> None:
    user = await first_user(backend, "sam.storm")
    key = backend.key(Role.HELPDESK, "desk-anna")
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        pending = await admin.create_push(user.id, "VPN")
        app = console_app(backend, key, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            assert screen.active_bindings["X"].binding.action == "stop_attack"
            burst(app, ["X"])
            await modal(app, StopAttackScreen)
            assert "Stop the push attack on" in title_of(app) and "sam.storm" in title_of(app)
            assert app.screen.focused.id == "cancel"
            minutes = app.screen.query_one("#stop-minutes", Input)
            assert minutes.value == "15"
            burst(app, ["n"])  # cancel: nothing happens
            await wait_for(lambda: app.screen is screen)
            assert (await admin.get_user(user.id)).pushBlock is None
            burst(app, ["X"])
            await modal(app, StopAttackScreen)
            burst(app, ["y"])
            await wait_for(lambda: screen.user.pushBlock is not None)
            block = (await admin.get_user(user.id)).pushBlock
            assert block is not None and block.blockedBy == "desk-anna"
            assert (await admin.get_push(pending.id)).status != "pending"  # cancelled
            await pilot.pause()
            shown = f"push blocked until {clock_zone(block.blockedUntil)} by desk-anna"
            assert shown in text_of(screen, "#detail-title")
            await wait_for(
                lambda: toasted(app, "Push attack on", "sam.storm", "stopped", clock_zone(block.blockedUntil))
            )
            with pytest.raises(ApiError):
                await admin.create_push(user.id, "VPN")  # refused while blocked
            # X is now Lift block.
            assert screen.active_bindings["X"].binding.action == "lift_block"
            burst(app, ["X"])
            await modal(app, ConfirmScreen)
            assert "Lift the push block on" in title_of(app) and "desk-anna" in body_of(app)
            burst(app, ["y"])
            await wait_for(lambda: screen.user.pushBlock is None)
            assert (await admin.get_user(user.id)).pushBlock is None
            assert (await admin.create_push(user.id, "VPN")).id


# ------------------------------------------------------------------ item 17b: unlock, delete


async def test_unlock_a_locked_account(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = (await admin.list_users(filters=["account_locked:$eq:true"], limit=1)).results[0]
        app = console_app(backend, open_user=user.id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await detail_ready(app, pilot)
            assert "LOCKED" in text_of(screen, "#detail-title")
            burst(app, ["L"])
            await modal(app, ConfirmScreen)
            assert "Unlock the account of" in title_of(app) and printable_name(user) in title_of(app)
            burst(app, ["y"])
            await wait_for(lambda: not screen.user.account_locked)
            assert not (await admin.get_user(user.id)).account_locked
            await wait_for(lambda: toasted(app, "unlocked"))


def printable_name(user: SystemUser) -> str:
    return user_label(user)


async def test_delete_asks_to_type_the_username_then_closes_the_screen(backend) -> None:
    user = await first_user(backend, "aaab.delete")
    app = console_app(backend)
    async with ProtectClient(backend.url, backend.admin_key) as admin, app.run_test(size=SIZE) as pilot:
        await open_screen(app, pilot, None, UsersScreen, lambda s: table_loaded(s.table))
        await wait_for(lambda: app.whoami is not None)
        burst(app, ["enter", "D"])
        await modal(app, PromptScreen, timeout=20)
        assert "Delete the user" in title_of(app) and "aaab.delete" in title_of(app)
        assert "Type the username aaab.delete" in body_of(app)
        burst(app, ["escape"])  # Esc is safe
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        assert (await admin.get_user(user.id)).username == "aaab.delete"
        burst(app, ["D"])
        await modal(app, PromptScreen)
        burst(app, [*"aaab", "enter"])  # not the whole username: refused, still asking
        await wait_for(lambda: "exactly" in text_of(app.screen, "#prompt-error"))
        burst(app, [*".delete", "enter"])
        await wait_for(lambda: isinstance(app.screen, UsersScreen), timeout=20)
        await wait_for(lambda: toasted(app, "Deleted user", "aaab.delete", "audit and push history kept"))
        with pytest.raises(NotFound):
            await admin.get_user(user.id)


# ------------------------------------------------------------------ item 9: copy


async def test_c_and_shift_c_copy_email_and_id_with_osc52(backend) -> None:
    user = await first_user(backend, "cora.copy")
    app = console_app(backend, open_user=user.id)
    written: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await detail_ready(app, pilot)
        original = app._driver.write
        app._driver.write = lambda data: (written.append(data), original(data))[1]  # type: ignore[method-assign]
        burst(app, ["c"])
        await wait_for(lambda: app.clipboard == user.email)
        await wait_for(lambda: toasted(app, "Copied the email", user.email))
        burst(app, ["C"])
        await wait_for(lambda: app.clipboard == user.id)
        await wait_for(lambda: toasted(app, "Copied the id", user.id))
    assert any(data.startswith("\x1b]52;c;") for data in written)


# ------------------------------------------------------------------ the footer at 80 columns


async def test_every_action_key_fits_the_footer_at_80_columns(backend) -> None:
    """Stop attack (X) and the device key (A) are not pushed off the edge at 80 columns: the keys that
    work on every screen (palette, q, ?, r, Esc) give way first."""
    user = await first_user(backend, "fiona.footer")
    app = console_app(backend, open_user=user.id)
    async with app.run_test(size=SMALL) as pilot:
        screen = await detail_ready(app, pilot)
        await pilot.pause()
        keys = {key.key: key.region for key in footer_keys_shown(screen)}
        for key in ("U", "T", "R", "E", "V", "A", "X"):
            assert key in keys and keys[key].right <= SMALL[0], (key, keys)
        assert all(region.right <= SMALL[0] for region in keys.values())
    # Wider, Delete shows too (the copy keys give way first); the palette always lists all three.
    app = console_app(backend, open_user=user.id)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await detail_ready(app, pilot)
        await pilot.pause()
        keys = {key.key: key.region for key in footer_keys_shown(screen)}
        assert "D" in keys and all(region.right <= 160 for region in keys.values())
        offered = "\n".join(await palette_prompts(app, pilot))
        for words in ("User: Delete the user", "User: Copy the email", "User: Copy the user id"):
            assert words in offered


# ------------------------------------------------------------------ untrusted text in the new modals


async def test_hostile_names_in_the_new_modals_are_shown_literally(backend) -> None:
    from console.models import SystemUserUpdate

    user = await first_user(backend, "hostile.hal")
    evil = "[@click=app.quit]Hal[/]\x1b]0;pwn\x07\u202e"
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await admin.update_user(user.id, SystemUserUpdate(displayname=evil))
    app = console_app(backend, backend.key(Role.ADMIN, "[b]desk[/b]\x1b[31m"), open_user=user.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await detail_ready(app, pilot)
        for key, cls in [("X", StopAttackScreen), ("E", ChoiceScreen), ("D", PromptScreen)]:
            burst(app, [key])
            await modal(app, cls)
            shown = title_of(app) + body_of(app)
            assert "[@click=app.quit]Hal[/]" in shown and "\x1b" not in shown and "\u202e" not in shown
            burst(app, ["escape"])
            await wait_for(lambda: app.screen is screen)
        burst(app, ["X"])
        await modal(app, StopAttackScreen)
        burst(app, ["y"])
        await wait_for(lambda: screen.user.pushBlock is not None)
        await pilot.pause()
        title = text_of(screen, "#detail-title")
        assert "by [b]desk[/b]" in title and "\x1b" not in title
        assert app.is_running
