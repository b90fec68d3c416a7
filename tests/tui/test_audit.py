"""Audit screen: admin actions newest first, with full details on Enter, over the real service."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from console.client import ProtectClient
from console.tui.app import ProtectConsoleApp
from console.tui.audit_text import summarize, summarize_details
from console.tui.modals.audit_detail import AuditDetailScreen
from console.tui.screens.audit import AuditScreen
from console.tui.screens.settings import SettingsScreen
from tests.helpers import PIXEL, enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import (
    SIZE,
    SMALL,
    burst,
    console_app,
    footer_labels,
    open_screen,
    table_lines,
    table_loaded,
    toasts,
)


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
        await wait_for(lambda: app.screen.__class__.__name__ == "PromptScreen")
        await pilot.press("end", "backspace", "backspace", "9", "0", "enter")
        await wait_for(lambda: app.screen.__class__.__name__ == "ConfirmScreen")
        await pilot.press("y")
        await wait_for(lambda: settings_screen.settings.push.timeoutSeconds == 90)

        # ...and find it at the top of the audit log.
        screen = await open_audit(app, pilot)
        await wait_for(
            lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).action == "settings.update"
        )
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
        # The count names what it counts: these are mostly device events, not "admin actions".
        status = screen.status_text
        assert (
            status.startswith(f"events 1/{screen.table.total}")
            and "filter: none" in status
            and "newest first" in status
        )

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, AuditDetailScreen))
        head = str(app.screen.query_one("#audit-detail-head").content)
        assert f"thomas.thompson  (user {user.id})" in head
        await pilot.press("escape")


def test_summaries_of_the_other_shapes() -> None:
    at = datetime(2026, 11, 28, 9, 21, tzinfo=UTC)
    grace = summarize_details(
        {
            "before": {"pushStatus": "ENROLLED"},
            "after": {"pushStatus": "NOT_ENROLLED"},
            "removedDevice": "0123456789abcdef01234567",
            "graceUntil": "2026-12-01T09:21:21.718960",
        },
        "mfa.reset",
        at,
    )
    assert grace == "pushStatus: ENROLLED -> NOT_ENROLLED; removedDevice=01234567…; graceUntil=2026-12-01 09:21 UTC"
    assert summarize_details({"valid": False, "reason": "replayed"}, "totp.verify", at) == "code NOT valid: replayed"
    removed = summarize_details(
        {
            "before": {
                "id": "0123456789abcdef01234567",
                "device": {"make": "Apple", "model": "iPhone 13", "os": "iOS", "osVersion": "17.1"},
            },
            "after": None,
        },
        "device.unenroll",
        at,
    )
    assert removed == "removed Apple iPhone 13 (iOS 17.1); device 01234567…"
    same_day = summarize_details({"expiresAt": "2026-11-28T09:31:21.718960"}, "user.update", at)
    assert same_day == "expiresAt=09:31 UTC"


# ------------------------------------------------------------------ issue 6, second pass


def ready(modal) -> bool:
    """A modal that has taken focus (its Focus event handled): keys typed now reach it."""
    return modal.focused is not None and modal.focused.has_focus


def rows(screen: AuditScreen) -> list:
    table = screen.table
    return [table.row_at(i) for i in range(min(table.total or 0, table.page_size))]


async def test_kind_filter_separates_admin_actions_from_device_events_and_counts_what_it_shows(backend) -> None:
    """Item 13: `f` cycles all / admin actions / device events; the count names what it counts;
    Esc clears the filter, then goes back."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        for name in ("kind.one", "kind.two"):
            user = await new_user(admin, name)
            phone = await enrolled_device(admin, backend.url, user.id, PIXEL)
            await phone.aclose()
        admin_total = (await admin.audit(kind="admin", limit=1)).totalCount
        device_total = (await admin.audit(kind="device", limit=1)).totalCount
        every = (await admin.audit(limit=1)).totalCount
    assert admin_total and device_total and admin_total + device_total == every

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_audit(app, pilot)
        assert screen.status_text.startswith(f"events 1/{every}")

        burst(app, ["f"])
        await wait_for(lambda: screen.table.total == admin_total and table_loaded(screen.table))
        assert all(e.kind == "admin" for e in rows(screen))
        assert screen.status_text.startswith(f"admin actions 1/{admin_total}")
        assert "filter: admin actions" in screen.status_text
        await wait_for(lambda: "Kind: admin" in footer_labels(screen))  # the footer says it too

        burst(app, ["f"])
        await wait_for(lambda: screen.table.total == device_total and table_loaded(screen.table))
        events = rows(screen)
        assert events and all(e.kind == "device" and e.actor.startswith("user:") for e in events)
        assert screen.status_text.startswith(f"device events 1/{device_total}")
        assert "filter: device events" in screen.status_text

        burst(app, ["escape"])  # one level: the filter goes, the screen stays
        await wait_for(lambda: screen.table.total == every and table_loaded(screen.table))
        assert app.screen is screen and screen.filter.kind is None and "filter: none" in screen.status_text
        await wait_for(lambda: "Kind: all" in footer_labels(screen))
        burst(app, ["escape"])
        await wait_for(lambda: app.screen is not screen)


async def test_filter_by_actor_action_and_target(backend) -> None:
    """Item 13: `/` filters by actor, action (a prefix ending in `.`) and target, on the server."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        alice = await new_user(admin, "alice.filter")
        phone = await enrolled_device(admin, backend.url, alice.id, PIXEL)
        await phone.aclose()
        await new_user(admin, "bob.filter")
        expected = await admin.audit(actor="test-admin", action="enrollment.", target="alice.filter")
    assert expected.totalCount == 1

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_audit(app, pilot)
        burst(app, ["slash"])
        await wait_for(lambda: app.screen.__class__.__name__ == "PromptScreen" and ready(app.screen))
        burst(app, [*"actor:test-admin action:enrollment. target:alice.filter", "enter"])
        await wait_for(lambda: screen.filter.target == "alice.filter" and screen.table.total == 1)
        await wait_for(lambda: table_loaded(screen.table))
        event = screen.table.row_at(0)
        assert (event.actor, event.action, event.target) == ("test-admin", "enrollment.create", alice.id)
        status = screen.status_text
        assert "actor test-admin" in status and "action enrollment.*" in status and "target alice.filter" in status

        # A bare word is the target; an unknown field is refused, naming it.
        burst(app, ["slash"])
        await wait_for(lambda: app.screen.__class__.__name__ == "PromptScreen" and ready(app.screen))
        prompt_input = app.screen.query_one("#prompt-input")
        assert prompt_input.value == "actor:test-admin action:enrollment. target:alice.filter"  # the filter in force
        burst(app, ["ctrl+u"])
        await wait_for(lambda: prompt_input.value == "")
        burst(app, [*"who:me", "enter"])
        await wait_for(lambda: "who: not a filter" in str(app.screen.query_one("#prompt-error").content))
        burst(app, ["ctrl+u"])
        await wait_for(lambda: prompt_input.value == "")
        burst(app, [*"bob.filter", "enter"])
        await wait_for(lambda: app.screen is screen and screen.filter.target == "bob.filter")
        await wait_for(lambda: screen.table.total == 1 and table_loaded(screen.table))
        assert screen.table.row_at(0).action == "user.create" and screen.table.row_at(0).targetName == "bob.filter"


async def test_target_column_is_kept_at_80_columns(backend) -> None:
    """Item 9: whom an event was about stays on screen at 80 columns."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "target.narrow")
    app = console_app(backend)
    async with app.run_test(size=SMALL) as pilot:
        screen = await open_audit(app, pilot)
        await pilot.pause()
        lines = table_lines(screen.table)
        assert screen.table.shows("target") and "Target" in lines[0]
        assert "target.narrow" in lines[1] and "user.create" in lines[1]


async def test_started_during_an_outage_then_r_loads_everything(backend) -> None:
    """Item 7: the banner and `not loaded` (never `loading…` for ever); `r` after the service is back loads it."""

    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "outage.audit")
        every = (await admin.audit(limit=1)).totalCount
    backend.stop()
    app = console_app(backend, retries=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await wait_for(lambda: isinstance(app.screen, AuditScreen))
        screen: AuditScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: screen.error_visible and screen.load_failed, timeout=20)
        await pilot.pause()
        drawn = "\n".join(table_lines(screen.table))
        assert "loading…" not in drawn and "not loaded" in drawn
        assert "not loaded" in screen.status_text

        backend.restart()
        burst(app, ["r"])
        await wait_for(lambda: table_loaded(screen.table) and not screen.error_visible, timeout=20)
        await wait_for(lambda: screen.status_text.startswith(f"events 1/{every}"))
        assert screen.table.row_at(0).targetName == "outage.audit"
    await app.api.aclose()


async def test_open_user_on_an_event_about_settings_says_why_not(backend) -> None:
    """Item 11: `u` in an event's details where the target is not a user says why, instead of nothing."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        _settings, etag = await admin.get_settings()
        await admin.update_settings({"push": {"timeoutSeconds": 75}}, etag)
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_audit(app, pilot)
        assert screen.table.row_at(0).action == "settings.update"
        burst(app, ["enter"])
        await wait_for(lambda: isinstance(app.screen, AuditDetailScreen) and ready(app.screen))
        burst(app, ["u"])
        await wait_for(lambda: any("is not a user" in t for t in toasts(app)))
        assert isinstance(app.screen, AuditDetailScreen)
