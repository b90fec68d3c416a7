"""Settings screen: the real app against the real service on loopback."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList

from console.client import ProtectClient, RateLimited
from console.models import SETTING, Role
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.prompt import PromptScreen
from console.tui.screens.settings import SETTINGS, SettingsScreen
from console.tui.screens.users import UsersScreen
from tests.helpers import enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import SIZE, burst, console_app, open_screen, toasts


async def open_settings(app: ProtectConsoleApp, pilot) -> SettingsScreen:
    screen = await open_screen(app, pilot, "3", SettingsScreen, lambda s: s.settings is not None)
    await wait_for(lambda: app.whoami is not None)
    return screen


async def highlight(screen: SettingsScreen, pilot, key: str) -> None:
    """Move the highlight with the arrow keys, as an admin would."""
    options = screen.query_one("#settings-list", OptionList)
    options.focus()
    target = [spec.key for spec in SETTINGS].index(key)
    if options.highlighted is None:
        await pilot.press("down")
    while options.highlighted != target:
        await pilot.press("down" if options.highlighted < target else "up")


async def type_value(app: ProtectConsoleApp, pilot, value: str) -> None:
    await wait_for(lambda: isinstance(app.screen, PromptScreen))
    field = app.screen.query_one("#prompt-input")
    await pilot.press("end", *(["backspace"] * len(field.value)), *value)
    assert field.value == value


def status_of(screen: SettingsScreen) -> str:
    return str(screen.query_one("#settings-status").content)


async def test_change_max_concurrent_push_attempts_changes_the_server_and_the_push_cap(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        assert screen.settings.push.concurrentLimit.max == 1
        await highlight(screen, pilot, "push.concurrentLimit.max")
        await pilot.press("e")
        await type_value(app, pilot, "2")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        confirm_text = " ".join(str(w.content) for w in app.screen.query("Static"))
        assert "1 per resource -> 2 per resource" in confirm_text
        await pilot.press("y")
        await wait_for(lambda: screen.settings.push.concurrentLimit.max == 2)
        assert "Saved" in status_of(screen)

    # A separate client sees the change...
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        settings, _ = await admin.get_settings()
        assert settings.push.concurrentLimit.max == 2
        user = await new_user(admin, "cap-check")
        phone = await enrolled_device(admin, backend.url, user.id)
        await phone.aclose()
    # ...and the push cap now admits two pending attempts per resource, not three.
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as service:
        first = await service.create_push(user.id, "vpn")
        second = await service.create_push(user.id, "vpn")
        assert first.status == second.status == "pending"
        with pytest.raises(RateLimited):
            await service.create_push(user.id, "vpn")


async def test_bool_setting_toggles_after_confirmation_and_cancel_changes_nothing(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        await highlight(screen, pilot, "push.requireUserVerification")
        await pilot.press("e")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # cancel: nothing is sent
        await wait_for(lambda: isinstance(app.screen, SettingsScreen))
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            assert (await admin.get_settings())[0].push.requireUserVerification is False
        await pilot.press("e")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: screen.settings.push.requireUserVerification is True)
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            assert (await admin.get_settings())[0].push.requireUserVerification is True


async def test_editor_refuses_out_of_range_values_naming_the_field(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        await highlight(screen, pilot, "push.timeoutSeconds")
        await pilot.press("e")
        await type_value(app, pilot, "301")
        # Said while typing, before Enter, and cleared once the value is back in range.
        await wait_for(lambda: "300" in str(app.screen.query_one("#prompt-error").content))
        await pilot.press("backspace", "0")
        await wait_for(lambda: str(app.screen.query_one("#prompt-error").content) == "")
        await pilot.press("backspace", "1")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen), "an out-of-range value must not be accepted"
        error = str(app.screen.query_one("#prompt-error").content)
        assert "push.timeoutSeconds" in error and "30" in error and "300" in error
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, SettingsScreen))
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        assert (await admin.get_settings())[0].push.timeoutSeconds == 60


def test_check_setting_value() -> None:
    max_failures = SETTING["totp.maxFailures"]  # 1..20
    assert max_failures.check(" 7 ") == (7, "")
    assert max_failures.check("0")[0] is None
    assert "totp.maxFailures" in max_failures.check("x")[1]


async def test_a_concurrent_change_is_reported_and_reloaded(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        # Someone else changes the settings after the screen read them.
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            _, etag = await admin.get_settings()
            await admin.update_settings({"push": {"timeoutSeconds": 90}}, etag)
        assert screen.settings.push.timeoutSeconds == 60  # the screen still shows what it read
        await highlight(screen, pilot, "push.concurrentLimit.max")
        await pilot.press("e")
        await type_value(app, pilot, "3")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: "changed by someone else" in status_of(screen))
        assert any("changed by someone else" in message for message in toasts(app))
        # Reloaded: the other admin's change is on screen, ours was not applied.
        await wait_for(lambda: screen.settings.push.timeoutSeconds == 90)
        assert screen.settings.push.concurrentLimit.max == 1
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        settings, _ = await admin.get_settings()
        assert settings.push.concurrentLimit.max == 1 and settings.push.timeoutSeconds == 90


@pytest.mark.parametrize("role", [Role.READONLY, Role.HELPDESK])
async def test_keys_without_settings_write_cannot_edit(backend, role: Role) -> None:
    app = console_app(backend, backend.key(role))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        assert screen.check_action("edit", ()) is False  # hidden from the footer
        assert "e" not in {b.key for b in screen.active_bindings.values() if b.binding.action == "edit"}
        await highlight(screen, pilot, "push.concurrentLimit.max")
        await pilot.press("e")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen), "no editor or confirmation may open"
        assert "Read-only" in status_of(screen)


async def test_readonly_profile_cannot_edit_even_with_an_admin_key(backend) -> None:
    app = console_app(backend, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        await highlight(screen, pilot, "push.timeoutSeconds")
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        assert screen.check_action("edit", ()) is False


async def test_dead_backend_shows_the_banner_and_recovers(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        backend.stop()
        await pilot.press("r")
        await wait_for(lambda: screen.error_visible, timeout=15)
        backend.restart()
        await pilot.press("r")  # the banner's retry
        await wait_for(lambda: not screen.error_visible, timeout=15)
        assert screen.settings is not None


# ---------------------------------------------------------------- issue 6: moving and editing typed ahead


def editor_key(app: ProtectConsoleApp) -> str:
    """The setting the open value prompt edits (its label starts with the key); "" until the prompt is built."""
    labels = app.screen.query("#prompt-label")
    return str(labels.first().content).split(":", 1)[0] if labels else ""


async def close_editor(app: ProtectConsoleApp, pilot) -> None:
    await pilot.press("escape")
    await wait_for(lambda: isinstance(app.screen, SettingsScreen))


async def test_j_k_and_page_keys_move_and_e_edits_the_highlighted_setting_typed_ahead(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen) and app.whoami is not None)
        # One burst straight from Users, before Settings has loaded its values: 3, down twice, edit.
        burst(app, ["3", "j", "j", "e"])
        await wait_for(lambda: isinstance(app.screen, PromptScreen) and bool(app.screen.query("#prompt-label")))
        assert editor_key(app) == "push.maxPendingPerUser"  # the third setting, not the first
        # Each burst below starts on the list (a key typed into the editor's box belongs to the box).
        await close_editor(app, pilot)
        burst(app, ["k", "e"])
        await wait_for(lambda: isinstance(app.screen, PromptScreen) and editor_key(app) == "push.concurrentLimit.max")
        await close_editor(app, pilot)
        burst(app, ["end", "e"])
        await wait_for(lambda: isinstance(app.screen, PromptScreen) and editor_key(app) == "rateLimits.enrollPerMinute")
        await close_editor(app, pilot)
        burst(app, ["home", "down", "down", "down", "down", "enter"])  # Enter edits too (a bool: confirm)
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "Require biometric" in str(app.screen.query_one("#confirm-title").content)
        burst(app, ["n", "pagedown", "pageup", "j", "e"])  # the confirmation has no text box: typed on
        # (nine settings since issue 9: a page up from the end lands on the second, j on the third)
        await wait_for(lambda: isinstance(app.screen, PromptScreen) and editor_key(app) == "push.maxPendingPerUser")
        assert isinstance(app.screen.query_one("#prompt-input"), Input)
        burst(app, ["escape"])
        await wait_for(lambda: isinstance(app.screen, SettingsScreen))
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        settings, _ = await admin.get_settings()
        assert settings.push.requireUserVerification is False  # `n` changed nothing


async def test_e_and_enter_on_a_read_only_profile_say_why(backend) -> None:
    app = console_app(backend, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_settings(app, pilot)
        reason = screen.action_unavailable("edit")
        assert reason is not None and "Read-only profile" in reason
        await pilot.press("j", "e")
        await wait_for(lambda: any("Read-only profile" in message for message in toasts(app)))
        app.clear_notifications()
        await pilot.press("enter")
        await wait_for(lambda: any("Read-only profile" in message for message in toasts(app)))
        assert isinstance(app.screen, SettingsScreen)
