"""Audit screen: admin actions newest first, with full details on Enter, over the real service."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from console.client import ProtectClient
from console.tui.app import ProtectConsoleApp
from console.tui.screens.audit import AuditDetailScreen, AuditScreen, summarize, summarize_details
from console.tui.screens.settings import SettingsScreen

from .helpers import PIXEL, enrolled_device, new_user, wait_for
from .tui_helpers import SIZE, console_app, open_screen, table_lines, table_loaded


async def open_audit(app: ProtectConsoleApp, pilot) -> AuditScreen:
    return await open_screen(app, pilot, "5", AuditScreen, lambda s: table_loaded(s.table))


async def test_audit_shows_a_settings_change_made_in_the_console(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        # Change the push timeout through the Settings screen...
        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, SettingsScreen) and app.screen.settings is not None)
        await wait_for(lambda: app.whoami is not None)
        settings_screen: SettingsScreen = app.screen  # type: ignore[assignment]
        settings_screen.query_one("#settings-list").focus()
        while settings_screen.focused_spec() is None or settings_screen.focused_spec().key != "push.timeoutSeconds":
            await pilot.press("down")
        await pilot.press("e")
        await wait_for(lambda: app.screen.__class__.__name__ == "SettingEditor")
        await pilot.press("end", "backspace", "backspace", "9", "0", "enter")
        await wait_for(lambda: app.screen.__class__.__name__ == "ConfirmScreen")
        await pilot.press("y")
        await wait_for(lambda: settings_screen.settings.push.timeoutSeconds == 90)

        # ...and find it at the top of the audit log.
        screen = await open_audit(app, pilot)
        await wait_for(lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).action == "settings.update")
        event = screen.table.row_at(0)
        assert event.actor == "test-admin"
        top = table_lines(screen.table)[1]
        assert "test-admin" in top and "settings.update" in top
        assert "push.timeoutSeconds: 60 -> 90" in summarize_details(event.details)

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, AuditDetailScreen))
        body = str(app.screen.query_one("#audit-detail-text").content)
        assert "push.timeoutSeconds: 60 -> 90" in body
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, AuditScreen))


async def test_newest_first_and_hostile_details_render_literally(backend) -> None:
    hostile = "[@click=app.quit]Mallory[/] \x1b]0;owned\x07 \u202eevil"
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "first-one")
        mallory = await new_user(admin, "mallory", display=hostile)
        expected_total = (await admin.audit(limit=1)).totalCount

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_audit(app, pilot)
        assert screen.table.total == expected_total
        events = [screen.table.row_at(i) for i in range(min(expected_total, 20))]
        assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
        assert events[0].action == "user.create" and events[0].target == mallory.id
        lines = "\n".join(table_lines(screen.table))
        assert "\x1b" not in lines and "\x07" not in lines and "\u202e" not in lines

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, AuditDetailScreen))
        body = str(app.screen.query_one("#audit-detail-text").content)
        assert "[@click=app.quit]Mallory[/]" in body
        assert "\x1b" not in body and "\x07" not in body and "\u202e" not in body
        await pilot.click("#audit-detail-text")  # a click on the literal "[@click=...]" must not quit
        await pilot.pause()
        assert app.is_running
        # The target is the new user: `u` opens their detail screen.
        await pilot.press("u")
        await wait_for(lambda: app.screen.__class__.__name__ == "UserDetailScreen")


async def test_device_events_read_as_people_say_them(backend) -> None:
    """Username in Target, model and OS first, times as ``HH:MM UTC``: no raw ISO stamps or leading ids."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "thomas.thompson")
        phone = await enrolled_device(admin, backend.url, user.id, PIXEL)
        await phone.aclose()

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_audit(app, pilot)
        events = [screen.table.row_at(i) for i in range(3)]
        assert [e.action for e in events] == ["device.enroll", "enrollment.create", "user.create"]
        enroll, code, _create = events
        assert enroll.targetName == "thomas.thompson" and enroll.target == user.id
        assert enroll.actor == "user:thomas.thompson"
        assert summarize(enroll).startswith("Pixel 8, Android 14; device ")
        code_summary = summarize(code)
        assert re.fullmatch(r"expires \d\d:\d\d UTC \(10m\)", code_summary), code_summary

        lines = table_lines(screen.table)
        assert "Target" in lines[0] and lines[0].index("Target") < lines[0].index("Details")
        row = lines[1]
        assert "user:thomas.thompson" in row  # the actor is not cut at 100 columns
        assert "thomas.thompson " in row.split("device.enroll", 1)[1]  # the target, by name
        assert "Pixel 8, Android 14" in row and user.id not in row
        assert not re.search(r"\d{4}-\d\d-\d\dT", "\n".join(lines)), "no raw ISO timestamps"
        status = str(screen.query_one("#audit-status").content)
        assert " admin actions · newest first" in status

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, AuditDetailScreen))
        head = str(app.screen.query_one("#audit-detail-head").content)
        assert f"thomas.thompson  (user {user.id})" in head
        await pilot.press("escape")


def test_summaries_of_the_other_shapes() -> None:
    at = datetime(2026, 11, 28, 9, 21, tzinfo=timezone.utc)
    grace = summarize_details(
        {"before": {"pushStatus": "ENROLLED"}, "after": {"pushStatus": "NOT_ENROLLED"},
         "removedDevice": "0123456789abcdef01234567", "graceUntil": "2026-12-01T09:21:21.718960"},
        "mfa.reset", at,
    )
    assert grace == "pushStatus: ENROLLED -> NOT_ENROLLED; removedDevice=01234567…; graceUntil=2026-12-01 09:21 UTC"
    assert summarize_details({"valid": False, "reason": "replayed"}, "totp.verify", at) == "code NOT valid: replayed"
    removed = summarize_details(
        {"before": {"id": "0123456789abcdef01234567", "device": {"make": "Apple", "model": "iPhone 13", "os": "iOS",
                                                              "osVersion": "17.1"}}, "after": None},
        "device.unenroll", at,
    )
    assert removed == "removed Apple iPhone 13 (iOS 17.1); device 01234567…"
    same_day = summarize_details({"expiresAt": "2026-11-28T09:31:21.718960"}, "user.update", at)
    assert same_day == "expiresAt=09:31 UTC"
