"""Hostile data and a hostile network: names that are markup or escapes, a backend that dies.

The names are created through the real admin API (users edit their names in
the portal; any Unicode up to 1,024 characters is valid) and must show up
literally everywhere, with every control character replaced, crashing nothing.
"""

from __future__ import annotations

from textual.command import CommandList, CommandPalette

from console.client import ProtectClient
from console.models import DeviceInfo, SystemUserCreate
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from console.tui.widgets.error_banner import ErrorBanner
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import enrolled_device, wait_for
from tests.tui.tui_helpers import SIZE, console_app, table_lines, toasts

OSC_TITLE = "\x1b]0;pwn\x07"
ANSI_RED = "\x1b[31mred\x1b[0m"
CONTROL = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066")

# (username, displayname): usernames may not hold spaces or control characters; names may hold anything.
HOSTILE_USERS = [
    ("[@click=app.quit]x[/]", "[@click=app.quit]Click me[/]"),
    ("[/x]", "[/x]"),
    ("mallory", "Mallory[/]"),
    ("osc-title", f"Osc{OSC_TITLE}Title {ANSI_RED}"),
    ("long-name", "Ω[/]" * 256),  # 1,024 characters
    ("rtl", "\u202eevil\u202c שלום مرحبا"),
    ("emoji", "👩‍💻🔥🏳️‍🌈 Emoji 界"),
]
HOSTILE_DEVICE = DeviceInfo(
    make="[bold]Evil",
    model=f"Phone[/]{OSC_TITLE}[@click=app.quit]x[/]",
    os="iOS",
    osVersion="17.1",
    appVersion="2.6.0",
    uvEnabled=True,
)


def assert_clean_screen(app: ProtectConsoleApp) -> str:
    """Everything on screen, exported: no control character may reach the terminal."""
    screen = app.export_screenshot()
    for bad in CONTROL:
        assert bad not in screen, repr(bad)
    assert app.is_running
    return screen


def table_text(table: VirtualTable) -> str:
    return "\n".join(table_lines(table))


async def create_hostile_directory(admin: ProtectClient, url: str) -> dict[str, str]:
    ids = {}
    for index, (username, display) in enumerate(HOSTILE_USERS):
        user = await admin.create_user(
            SystemUserCreate(
                username=username,
                email=f"hostile{index}@test.example",
                firstname=display,
                lastname=display,
                displayname=display,
            )
        )
        ids[username] = user.id
    phone = await enrolled_device(admin, url, ids["osc-title"], HOSTILE_DEVICE)
    await phone.aclose()
    await admin.create_push(
        ids["osc-title"], f"VPN[/]{OSC_TITLE}", app="[@click=app.quit]App[/]", location="Mallory[/]"
    )
    return ids


async def test_hostile_names_render_literally_everywhere(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        ids = await create_hostile_directory(admin, backend.url)
        app = console_app(backend)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(lambda: isinstance(app.screen, UsersScreen))
            users: UsersScreen = app.screen  # type: ignore[assignment]
            table = users.query_one(VirtualTable)
            await wait_for(lambda: app.whoami is not None and table.total is not None)

            # Table: search on the server, every row literal and free of control characters.
            await pilot.press("slash", *"hostile", "enter")
            await wait_for(lambda: table.total == len(HOSTILE_USERS) and table.row_at(0) is not None)
            await pilot.pause()
            text = table_text(table)
            for bad in CONTROL:
                assert bad not in text
            assert "[/x]" in text and "Mallory[/]" in text and "[@click=app.qu" in text
            assert "Osc\ufffd]0;pwn\ufffd" in text  # the escape is visible as data, not obeyed
            assert_clean_screen(app)

            # Clicking a cell whose text is `[@click=app.quit]…` must not run anything.
            row = next(i for i in table.visible_rows() if table.row_at(i).username.startswith("[@click"))
            await pilot.click(VirtualTable, offset=(3, row - int(table.scroll_offset.y) + 1))
            await pilot.click(VirtualTable, offset=(20, row - int(table.scroll_offset.y) + 1))
            await pilot.pause()
            assert app.is_running

            # Detail of every hostile user, the 1,024-character one included.
            for username in ids:
                app.open_user(ids[username])
                await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
                await pilot.pause()
                shown = assert_clean_screen(app)
                if username == "[/x]":
                    assert "[/x]" in shown
                await pilot.press("escape")
                await wait_for(lambda: isinstance(app.screen, UsersScreen))

            # The confirmation modal and the toast for the user with the hostile device.
            app.open_user(ids["osc-title"])
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.device is not None)
            await pilot.pause()
            detail_text = assert_clean_screen(app)
            assert "Phone[/]" in detail_text and "[bold]Evil" in detail_text
            await pilot.press("U")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.pause()
            modal = assert_clean_screen(app)
            assert "Phone[/]\ufffd]0;pwn\ufffd[@click=app.quit]x[/]" in modal
            await pilot.press("y")
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.device is None)
            await pilot.pause()
            shown = toasts(app)
            assert any("Osc\ufffd]0;pwn\ufffdTitle" in message for message in shown)
            assert all(not any(bad in message for bad in CONTROL) for message in shown)
            assert_clean_screen(app)
            assert await admin.push_endpoints(ids["osc-title"]) == []
            await pilot.press("escape")

            # The palette's user lookup shows the names as data too.
            await wait_for(lambda: isinstance(app.screen, UsersScreen))
            await pilot.press("ctrl+p")
            await wait_for(lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*"hostile")
            palette = app.screen

            def prompts() -> list[str]:
                options = palette.query_one(CommandList)
                return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

            await wait_for(lambda: sum("Open user" in p for p in prompts()) >= 5)
            listed = "\n".join(prompts())
            assert "[@click=app.quit]x[/]" in listed and "Mallory[/]" in listed
            for bad in CONTROL:
                assert bad not in listed
            await pilot.pause()
            assert_clean_screen(app)
            await pilot.press("escape")
            assert app.is_running


async def test_backend_stopped_mid_session_shows_the_banner_and_recovers(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        target = (await admin.list_users(filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"], limit=1)).results[0]
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        users: UsersScreen = app.screen  # type: ignore[assignment]
        table = users.query_one(VirtualTable)
        await wait_for(lambda: app.whoami is not None and table.row_at(0) is not None)
        banner = users.query_one(ErrorBanner)
        assert not banner.showing

        backend.stop()
        await pilot.press("slash", *"zz", "enter")  # a new query while the backend is down
        await wait_for(lambda: banner.showing, timeout=20)
        assert "Backend unavailable" in banner.message
        assert "reload" in {a.binding.action for a in users.active_bindings.values()}  # `r` reloads (and retries)
        assert app.is_running and isinstance(app.screen, UsersScreen)

        # A detail opened while down shows the banner too; a change fails cleanly, nothing crashes.
        app.open_user(target.id)
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        detail: UserDetailScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: detail.error_visible, timeout=20)
        assert detail.user is None and app.is_running

        backend.restart()
        await pilot.press("r")
        await wait_for(lambda: detail.user is not None and not detail.error_visible, timeout=20)
        assert detail.user.id == target.id and detail.device is not None

        # Now the backend dies during a change: the failure is reported, the server is unchanged.
        backend.stop()
        await pilot.press("U")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: detail.error_visible, timeout=20)
        assert any("Unenroll failed" in message for message in toasts(app, "error"))
        backend.restart()
        await pilot.press("r")
        await wait_for(lambda: not detail.error_visible and detail.device is not None, timeout=20)

        # Back on the list: `r` retries the failed query.
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        table.focus()
        await pilot.press("r")
        await wait_for(lambda: not banner.showing and table.total is not None, timeout=20)
        assert app.is_running
