"""Users screen and the shell: the real app against the real service on loopback."""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import Input

from console.client import ProtectClient
from console.models import EnrollmentStatus, SystemUserUpdate
from console.tui.app import ProtectConsoleApp
from console.tui.screens.help import HelpScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import MFA_FILTERS, UsersScreen
from console.tui.widgets.confirm import ConfirmScreen
from console.tui.widgets.virtual_table import VirtualTable

from .helpers import enrolled_device, new_user, wait_for
from .tui_helpers import SIZE, console_app, detail_ready, table_lines, text_of


async def users_ready(app: ProtectConsoleApp) -> VirtualTable:
    await wait_for(lambda: isinstance(app.screen, UsersScreen))
    table = app.screen.query_one("#users-table", VirtualTable)
    await wait_for(lambda: table.total is not None and table.row_at(0) is not None)
    await wait_for(lambda: app.whoami is not None)
    return table


async def test_first_rows_show_with_the_total_and_only_one_page_fetched(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE):
        table = await users_ready(app)
        assert table.total == backend.seed_report["users"] + 0  # the seeded directory, counted by the server
        count = app.screen.query_one("#users-count")
        await wait_for(lambda: f"{table.total:,} users" in str(count.content))
        assert len(table._pages) == 1  # one page of 100, not the directory
        header = table_lines(table)[0]
        # At 100 columns the device shows; WebAuthn and Last used make room (they return when wider).
        for label in ("Username", "Name", "Email", "State", "Push", "TOTP", "Device"):
            assert label in header
        assert "WebAuthn" not in header and "Last used" not in header


async def test_search_open_and_unenroll_removes_the_device_on_the_server(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "zelda.quartz", first="Zelda", last="Quartz", display="Zelda Quartz")
        phone = await enrolled_device(admin, backend.url, user.id)
        await phone.aclose()
        assert len(await admin.push_endpoints(user.id)) == 1

        app = console_app(backend)
        async with app.run_test(size=SIZE) as pilot:
            table = await users_ready(app)
            await pilot.press("slash")
            assert app.screen.query_one("#users-search", Input).has_focus
            await pilot.press(*"zelda.qu")
            await wait_for(lambda: table.total == 1 and table.row_at(0) is not None)
            assert table.row_at(0).id == user.id
            await pilot.press("enter")  # search -> results
            assert table.has_focus
            await pilot.press("enter")  # row -> detail
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
            detail: UserDetailScreen = app.screen  # type: ignore[assignment]
            assert detail.device is not None and detail.user.id == user.id
            await pilot.press("U")
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            assert "Zelda Quartz" in str(app.screen.query_one("#confirm-title").content)
            assert app.screen.focused is not None and app.screen.focused.id == "cancel"
            await pilot.press("y")
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.device is None)
            assert await admin.push_endpoints(user.id) == []
            assert any("unenrolled" in n.message for n in app._notifications)
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, UsersScreen))


async def test_search_is_debounced_and_only_the_last_term_counts(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        target = await new_user(admin, "quincy.vanterpool")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        screen: UsersScreen = app.screen  # type: ignore[assignment]
        await pilot.press("slash", *"quincy.v")
        # Typing is answered immediately; the server query waits for a pause in typing.
        await wait_for(lambda: screen.search_term == "quincy.v")
        await wait_for(lambda: table.total == 1 and table.row_at(0) is not None)
        assert table.row_at(0).id == target.id
        await pilot.press(*(["backspace"] * len("quincy.v")), *"zzzz-nobody")
        await wait_for(lambda: table.total == 0)
        assert "No users match" in "\n".join(table_lines(table))


async def test_filter_by_mfa_status_and_sort_by_column(backend) -> None:
    app = console_app(backend)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        async with app.run_test(size=SIZE) as pilot:
            table = await users_ready(app)
            await pilot.press("f")  # all -> push enrolled
            assert MFA_FILTERS[1].label == "push enrolled"
            expected = await admin.list_users(filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"], limit=1)
            await wait_for(lambda: table.total == expected.totalCount and table.row_at(0) is not None)
            assert expected.totalCount < backend.seed_report["users"]
            for index in table.visible_rows():
                row = table.row_at(index)
                assert row is not None and row.mfaEnrollment.pushStatus == EnrollmentStatus.ENROLLED
            assert "push enrolled" in str(app.screen.query_one("#users-filter").content)

            await pilot.press("s")  # username -> name (lastname)
            first_by_lastname = (
                await admin.list_users(filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"], sort="lastname", limit=1)
            ).results[0]
            await wait_for(lambda: table.row_at(0) is not None and table.row_at(0).id == first_by_lastname.id)
            assert "Name ▲" in table_lines(table)[0]

            await pilot.press("S")  # reverse
            last_by_lastname = (
                await admin.list_users(filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"], sort="-lastname", limit=1)
            ).results[0]
            await wait_for(lambda: table.row_at(0) is not None and table.row_at(0).id == last_by_lastname.id)
            assert "Name ▼" in table_lines(table)[0]


async def test_scrolling_to_the_end_fetches_only_the_pages_shown(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        await pilot.press("end")
        last = table.total - 1
        await wait_for(lambda: table.row_at(last) is not None)
        assert table.cursor_row == last
        # The first page and the last page(s) on screen, nothing in between.
        assert set(table._pages) <= {0, (last - table.size.height) // 100, last // 100}


async def test_open_user_flag_opens_the_detail_straight_away(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "olga.direct")
    app = console_app(backend, open_user=user.email)
    async with app.run_test(size=SIZE):
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == user.id


async def test_palette_looks_up_a_user_on_the_server_and_lists_actions(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "paloma.lookup")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_ready(app)
        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette))
        palette: CommandPalette = app.screen  # type: ignore[assignment]
        from textual.command import SearchIcon

        await pilot.pause()
        assert not emoji_like(palette.query_one(SearchIcon).icon)  # not Textual's 🔎: no font needed
        await pilot.press(*"paloma.look")

        def hit_texts() -> list[str]:
            from textual.command import CommandList

            options = palette.query_one(CommandList)
            return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

        await wait_for(lambda: any("Open user paloma.lookup" in text for text in hit_texts()))
        # Walk to the user hit and open it.
        texts = hit_texts()
        for _ in range(texts.index(next(t for t in texts if "Open user paloma.lookup" in t))):
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == user.id


async def test_number_keys_switch_screens_and_help_lists_the_screen_keys(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_ready(app)
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen))
        assert ("/", "Search") in app.screen._screen_keys
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        for key, mode in (("2", "activity"), ("3", "settings"), ("4", "privacy"), ("5", "audit"), ("1", "users")):
            await pilot.press(key)
            await wait_for(lambda: app.current_mode == mode)
        assert isinstance(app.screen, UsersScreen)


async def test_usable_at_80x24(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await users_ready(app)
        assert table.size.height >= 15  # header, tabs, toolbar and footer leave room for rows
        lines = table_lines(table)
        assert "Username" in lines[0] and "Email" in lines[0]
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.is_running


def emoji_like(text: str) -> set[str]:
    """Characters many terminal fonts lack or draw two cells wide: emoji and pictographs."""
    return {ch for ch in text if ord(ch) >= 0x1F000 or 0x2600 <= ord(ch) <= 0x26FF}


async def test_locked_account_reads_locked_in_plain_letters(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "lara.locked")
        await admin.update_user(user.id, SystemUserUpdate(account_locked=True))
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        await pilot.press("slash", *"lara.locked", "enter")
        await wait_for(lambda: table.total == 1 and table.row_at(0) is not None and table.row_at(0).id == user.id)
        row = table_lines(table)[1]
        assert "locked" in row and not emoji_like(row)
        await pilot.press("enter")
        screen = await detail_ready(app, pilot)
        title = text_of(screen, "#detail-title")
        assert "LOCKED" in title and not emoji_like(title + text_of(screen, "#detail-profile"))
