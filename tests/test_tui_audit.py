"""Audit screen: admin actions newest first, with full details on Enter, over the real service."""

from __future__ import annotations

from .helpers import new_user, wait_for

from console.client import ProtectClient
from console.config import ConnectionProfile
from console.tui.app import ProtectConsoleApp
from console.tui.screens.audit import AuditDetailScreen, AuditScreen, summarize_details
from console.tui.screens.settings import SettingsScreen
from console.tui.widgets.virtual_table import VirtualTable

SIZE = (100, 30)


def table_lines(table: VirtualTable) -> list[str]:
    return ["".join(s.text for s in table.render_line(y)) for y in range(table.size.height)]


async def open_audit(app: ProtectConsoleApp, pilot) -> AuditScreen:
    await pilot.press("5")
    await wait_for(lambda: isinstance(app.screen, AuditScreen))
    screen: AuditScreen = app.screen  # type: ignore[assignment]
    await wait_for(lambda: screen.table.total is not None and screen.table.row_at(0) is not None)
    return screen


async def test_audit_shows_a_settings_change_made_in_the_console(backend) -> None:
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
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

    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
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
