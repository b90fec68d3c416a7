"""Users screen and the shell: the real app against the real service on loopback."""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import Input

from console.client import ProtectClient
from console.models import EnrollmentStatus, SystemUserUpdate
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.help import HelpScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import MFA_FILTERS, UsersScreen
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import SIZE, console_app, detail_ready, table_lines, text_of, toasts


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
        # The position and the count, as k9s shows them (`users 37/20,000`).
        await wait_for(lambda: str(count.content) == f"users 1/{table.total:,}")
        assert len(table.pages_held) == 1  # one page of 100, not the directory
        header = table_lines(table)[0]
        # At 100 columns who it is reads whole; Device, WebAuthn and Last used make room (they return
        # when wider: identity columns get width first, issue 6 item 9).
        for label in ("Username", "Name", "Email", "State", "Push", "TOTP"):
            assert label in header
        assert "WebAuthn" not in header and "Last used" not in header and "Device" not in header


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
            await pilot.press("enter")  # exactly one match: Enter in the search box opens it
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
            assert any("unenrolled" in message for message in toasts(app))
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
    async with ProtectClient(backend.url, backend.admin_key) as admin, app.run_test(size=SIZE) as pilot:
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
        assert set(table.pages_held) <= {0, (last - table.size.height) // 100, last // 100}


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
        assert ("/", "Search") in app.screen.screen_keys
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        for key, mode in (("2", "activity"), ("3", "settings"), ("4", "privacy"), ("5", "audit"), ("1", "users")):
            await pilot.press(key)
            await wait_for(lambda mode=mode: app.current_mode == mode)
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


# ---------------------------------------------------------------- issue 6, second pass (lists)
import base64  # noqa: E402

from console.tui.widgets.virtual_table import RowDetailsScreen  # noqa: E402
from tests.tui.tui_helpers import SMALL, burst  # noqa: E402


async def test_identity_columns_read_whole_at_80_columns_and_right_arrow_brings_the_rest(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "aagnieszka.anderson", first="Agnieszka", last="Anderson", display="Agnieszka Anderson")
    app = console_app(backend)
    async with app.run_test(size=SMALL) as pilot:
        table = await users_ready(app)
        await pilot.pause()
        lines = table_lines(table)
        assert lines[0].startswith("Username") and "Email" in lines[0]
        assert "Name" not in lines[0]  # Name gives way first: the username says who it is
        assert "aagnieszka.anderson" in lines[1] and "aagnieszka.anderson@test.example" in lines[1]
        for index in table.visible_rows():
            user = table.row_at(index)
            line = lines[index - int(table.scroll_offset.y) + 1]
            if len(user.username) <= 20:
                assert user.username + " " in line, line  # whole, not `agnieszka.ande…`
            if len(user.email) <= 32:
                assert user.email in line, line
        # → scrolls sideways a column at a time, the header along with the rows.
        await pilot.press("right")
        await wait_for(lambda: table.first_column == 1)
        await pilot.pause()
        lines = table_lines(table)
        assert lines[0].startswith("Name") and "Username" not in lines[0]
        assert "Agnieszka Anderson" in lines[1]
        await pilot.press("left")
        await wait_for(lambda: table.first_column == 0)
        await pilot.pause()
        assert table_lines(table)[0].startswith("Username")
        # i: the whole highlighted row.
        await pilot.press("i")
        await wait_for(lambda: isinstance(app.screen, RowDetailsScreen))
        text = app.screen.text()  # type: ignore[attr-defined]
        for expected in (
            "Username: aagnieszka.anderson",
            "Name: Agnieszka Anderson",
            "Email: aagnieszka.anderson@test.example",
            f"Id: {table.row_at(0).id}",
        ):
            assert expected in text, text
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))


async def test_s_cycles_only_through_sortable_columns_on_screen(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SMALL) as pilot:
        table = await users_ready(app)
        screen: UsersScreen = app.screen  # type: ignore[assignment]
        await pilot.pause()
        assert not table.shows("name") and not table.shows("webauthn")
        seen = []
        for _ in range(6):
            await pilot.press("s")
            seen.append(screen.sort_key)
            assert table.shows(screen.sort_key)
        assert seen == ["email", "state", "push", "totp", "username", "email"]
        # Wider, Name is on screen and `s` reaches it (it sorts by last name, then first name).
        await pilot.resize_terminal(100, 30)
        await wait_for(lambda: table.shows("name"))
        await pilot.press("s", "s", "s", "s", "s")  # email -> state -> push -> totp -> username -> name
        assert screen.sort_key == "name"
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            first = (await admin.list_users(sort="lastname", limit=1)).results[0]
        await wait_for(lambda: table.row_at(0) is not None and table.row_at(0).id == first.id)
        assert "Name ▲" in table_lines(table)[0]


async def test_c_copies_the_email_and_shift_c_the_id_with_osc52(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "aaron.copyme")  # first by username
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        assert table.row_at(0).id == user.id
        written: list[str] = []
        driver_write = app._driver.write

        def capture(data: str) -> None:
            written.append(data)
            driver_write(data)

        app._driver.write = capture  # type: ignore[method-assign]
        await pilot.press("c")
        await wait_for(lambda: app.clipboard == "aaron.copyme@test.example")
        assert f"\x1b]52;c;{base64.b64encode(b'aaron.copyme@test.example').decode()}\a" in "".join(written)
        assert any("aaron.copyme@test.example" in message for message in toasts(app))
        await pilot.press("C")
        await wait_for(lambda: app.clipboard == user.id)
        assert f"\x1b]52;c;{base64.b64encode(user.id.encode()).decode()}\a" in "".join(written)


async def test_enter_in_the_search_with_one_match_opens_it_typed_ahead(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "yolanda.onlyone")
        await new_user(admin, "yvette.twin1")
        await new_user(admin, "yvette.twin2")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        burst(app, ["slash", *"yolanda.only", "enter"])  # one burst, as tmux send-keys delivers it
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == user.id
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        # Two matches: Enter goes to the results instead, nothing opens.
        search = app.screen.query_one("#users-search", Input)
        burst(app, ["slash", *(["backspace"] * 20), *"yvette.twin", "enter"])
        await wait_for(lambda: table.total == 2 and table.row_at(1) is not None)
        await pilot.pause()
        assert table.has_focus and isinstance(app.screen, UsersScreen)
        assert search.value == "yvette.twin"


async def test_esc_clears_the_search_then_leaves_the_box_then_goes_back_one_level(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        screen: UsersScreen = app.screen  # type: ignore[assignment]
        search = screen.query_one("#users-search", Input)
        everyone = table.total
        count = screen.query_one("#users-count")
        burst(app, ["slash", *"zzzz-nobody"])
        await wait_for(lambda: table.total == 0)
        await wait_for(lambda: str(count.content) == "users 0 match")
        burst(app, ["escape"])  # 1: clears the text (and the search), focus stays in the box
        await wait_for(lambda: search.value == "" and table.total == everyone)
        assert search.has_focus and screen.search_term == ""
        burst(app, ["escape"])  # 2: back to the table
        await wait_for(lambda: table.has_focus)
        assert isinstance(app.screen, UsersScreen)
        # A search left applied with Enter: Esc on the table clears it before anything else.
        burst(app, ["slash", *"zzzz", "enter"])
        await wait_for(lambda: screen.search_term == "zzzz" and table.has_focus and table.total == 0)
        await pilot.press("c")  # nobody to copy from: it says so (item 11), never nothing
        await wait_for(lambda: any("No user highlighted" in message for message in toasts(app)))
        assert app.clipboard == ""
        burst(app, ["escape"])
        await wait_for(lambda: screen.search_term == "" and table.total == everyone)
        assert isinstance(app.screen, UsersScreen) and table.has_focus
        # From a user's screen, Esc goes back to Users only (not past it).
        burst(app, ["enter"])
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        burst(app, ["escape"])
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        assert app.current_mode == "users" and app.is_running


async def test_count_shows_the_cursor_position(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        count = app.screen.query_one("#users-count")
        total = table.total
        await wait_for(lambda: str(count.content) == f"users 1/{total:,}")
        burst(app, ["j", "j", "down", "k"])
        await wait_for(lambda: table.cursor_row == 2)
        await wait_for(lambda: str(count.content) == f"users 3/{total:,}")
        burst(app, ["pagedown"])
        await wait_for(lambda: table.cursor_row > 2)
        await wait_for(lambda: str(count.content) == f"users {table.cursor_row + 1}/{total:,}")
        await pilot.press("end")
        await wait_for(lambda: str(count.content) == f"users {total:,}/{total:,}")


async def test_totp_column_reads_locked_after_too_many_wrong_codes(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "aaron.guessed")  # first by username
        phone = await enrolled_device(admin, backend.url, user.id)
        await phone.enroll_totp()
        await phone.aclose()
        for _ in range(3):
            await admin.verify_totp(user.id, "000000")
        app = console_app(backend)
        async with app.run_test(size=SIZE) as pilot:
            table = await users_ready(app)
            assert table.row_at(0).id == user.id
            await pilot.pause()
            totp_at = table_lines(table)[0].index("TOTP")
            assert table_lines(table)[1][totp_at:].startswith("✓ 3/5")  # counting towards the lock
            for _ in range(2):
                await admin.verify_totp(user.id, "000000")
            await pilot.press("r")
            await wait_for(lambda: table.row_at(0) is not None and table.row_at(0).totpLock.locked)
            await pilot.pause()
            row = table_lines(table)[1]
            assert row[totp_at:].startswith("locked")
            spans = table._render_row(0).spans  # spelled out and coloured
            assert any("red" in str(span.style) for span in spans)
            await pilot.press("i")
            await wait_for(lambda: isinstance(app.screen, RowDetailsScreen))
            assert "TOTP: locked (5 of 5 failures" in app.screen.text()  # type: ignore[attr-defined]


async def test_started_while_the_service_is_down_then_r_loads_users_fully(backend) -> None:
    backend.stop()
    app = console_app(backend, retries=1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        screen: UsersScreen = app.screen  # type: ignore[assignment]
        table = screen.query_one("#users-table", VirtualTable)
        count = screen.query_one("#users-count")
        await wait_for(lambda: screen.error_visible and table.load_failed, timeout=30)
        await wait_for(lambda: not any(w.is_running for w in app.workers), timeout=30)  # whoami failed too
        assert str(count.content) == "users: not loaded"
        backend.restart()
        await pilot.press("r")
        await wait_for(lambda: table.total == backend.seed_report["users"] and table.row_at(0) is not None, timeout=30)
        await wait_for(lambda: str(count.content) == f"users 1/{table.total:,}")
        await wait_for(lambda: not screen.error_visible and app.whoami is not None)
        await pilot.press("end")  # every page loads, not just the first
        await wait_for(lambda: table.row_at(table.total - 1) is not None)
    await app.api.aclose()


async def test_r_reloads_and_the_highlight_stays_on_the_same_user(backend) -> None:
    app = console_app(backend)
    async with ProtectClient(backend.url, backend.admin_key) as admin, app.run_test(size=SIZE) as pilot:
        table = await users_ready(app)
        total = table.total
        burst(app, ["j", "j", "j", "j", "j"])
        await wait_for(lambda: table.cursor_row == 5)
        chosen = table.row_at(5)
        await new_user(admin, "aaaa.newcomer")  # sorts first: everyone moves down a row
        await pilot.press("r")
        await wait_for(lambda: table.total == total + 1)
        await wait_for(lambda: table.row_at(table.cursor_row).id == chosen.id)
        assert table.cursor_row == 6
        # Open that user, something changes meanwhile, come back: still the same user.
        burst(app, ["enter"])
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == chosen.id
        await new_user(admin, "aaaa.another")
        burst(app, ["escape"])
        await wait_for(lambda: isinstance(app.screen, UsersScreen) and table.total == total + 2)
        await wait_for(
            lambda: table.row_at(table.cursor_row) is not None and table.row_at(table.cursor_row).id == chosen.id
        )
        assert table.cursor_row == 7
