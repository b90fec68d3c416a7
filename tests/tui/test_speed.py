"""Issue 8, the console's side: what makes it fast, asserted as behaviour (the timings are bench/'s).

The real app against the real service on loopback. What the console asks for is observed through its
client (a spy on ``ProtectClient.user_page``), never through a clock:
- scrolling down page by page asks after the previous page's cursor, never with a deep offset, and
  counts the directory once;
- the last page is fetched before End is pressed, so End paints the last user at once;
- an exact email, username or id typed into the search, into ``--user`` or into the palette opens
  that user by its unique index, even when the search also matches others;
- search typed in a burst asks the server once, for the last term;
- the page cache stays bounded however far the list is scrolled;
- the garbage collector is paused while the console starts and restored when the session ends.
"""

from __future__ import annotations

import gc

from textual.command import CommandPalette
from textual.widgets import Input

from console.client import ProtectClient
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from console.tui.startup import KEY_GC_THRESHOLDS, console_memory, settle_memory
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import new_user, wait_for
from tests.tui.tui_helpers import SIZE, burst, console_app, table_lines


class PageSpy:
    """Records every ``user_page`` call of the app's client (the keyword arguments it was given)."""

    def __init__(self, app) -> None:
        self.calls: list[dict] = []
        self.answers: list = []
        api = app.api
        original = api.user_page

        async def spy(**kwargs):
            self.calls.append(kwargs)
            answer = await original(**kwargs)
            self.answers.append(answer)
            return answer

        api.user_page = spy  # type: ignore[method-assign]

    @property
    def cursors(self) -> bool:
        return any(answer.cursors for answer in self.answers)


async def users_table(app) -> VirtualTable:
    await wait_for(lambda: isinstance(app.screen, UsersScreen))
    table = app.screen.query_one("#users-table", VirtualTable)
    await wait_for(lambda: table.total is not None and table.row_at(0) is not None)
    return table


async def settled(app, pilot) -> None:
    """Until no page request is left to start or to answer."""
    table = app.screen.query_one("#users-table", VirtualTable)
    await wait_for(lambda: not table._inflight and not table._wanted and not table._request_scheduled)
    await pilot.pause()
    await wait_for(lambda: not table._inflight and not table._wanted and not table._request_scheduled)


async def test_scrolling_down_page_by_page_asks_after_cursors_and_counts_once(make_backend) -> None:
    backend = make_backend(users=1_200)
    app = console_app(backend)
    spy = PageSpy(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        for _ in range(4 * 100 // table._body_height + 1):  # four pages, a screen at a time
            await pilot.press("pagedown")
        await settled(app, pilot)
        assert table.cursor_row >= 400
        first, *rest = spy.calls
        assert first.get("skip", 0) == 0 and first.get("count", True)  # the first page counts, once
        assert rest and not any(call.get("count", True) for call in rest)
        if spy.cursors:
            # Every later page is asked after the page above it or before the end: no OFFSET at depth.
            assert all(call.get("after") or call.get("before") for call in rest)
            assert all(call.get("skip", 0) == 0 for call in rest)
        else:  # an older server: skip/limit, as before
            assert all(call.get("after") is None and call.get("before") is None for call in rest)
        # What is drawn is the directory in order, no gap or repeat at the page edges.
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            top = int(table.scroll_offset.y)
            expected = await admin.list_users(skip=top, limit=table._body_height, sort="username")
        assert [table.row_at(top + i).id for i in range(len(expected.results))] == [u.id for u in expected.results]


async def test_end_paints_the_last_user_at_once_from_the_prefetched_last_page(backend) -> None:
    app = console_app(backend)
    spy = PageSpy(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        await settled(app, pilot)
        last = table.total - 1
        assert table.row_at(last) is not None  # fetched before any key asked for it
        asked = len(spy.calls)
        await pilot.press("end")
        assert table.cursor_row == last
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            expected = (await admin.list_users(skip=last, limit=1, sort="username")).results[0]
        assert table.row_at(last).id == expected.id
        lines = table_lines(table)
        assert any(expected.username[:18] in line for line in lines) and not any("loading" in line for line in lines)
        assert all(call.get("skip", 0) < 100 or call.get("before") for call in spy.calls[asked:])


async def test_an_exact_username_in_the_search_opens_that_user_though_others_match(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        exact = await new_user(admin, "wei.speedy9")
        await new_user(admin, "wei.speedy99")
        await new_user(admin, "wei.speedy999")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_table(app)
        burst(app, ["slash", *"wei.speedy9", "enter", "down"])  # typed ahead: Down goes to the user's screen
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == exact.id
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        table = app.screen.query_one("#users-table", VirtualTable)
        await wait_for(lambda: table.total == 3)  # the search itself found all three


async def test_an_exact_email_or_id_in_the_search_opens_that_user(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        by_email = await new_user(admin, "ella.emailjump")
        by_id = await new_user(admin, "ivan.idjump")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_table(app)
        burst(app, ["slash", *"Ella.EmailJump@test.example", "enter"])
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == by_email.id
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        search = app.screen.query_one("#users-search", Input)
        burst(app, ["slash", *(["backspace"] * 40), *by_id.id, "enter"])  # an id is no search hit at all
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == by_id.id
        assert search.value == by_id.id


async def test_a_term_that_is_no_exact_key_still_opens_only_a_single_match(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "nora.twin1")
        await new_user(admin, "nora.twin2")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        burst(app, ["slash", *"nora.twin", "enter"])
        await wait_for(lambda: table.total == 2 and table.row_at(1) is not None)
        # Every worker done (wait_for_complete raises when an exclusive worker is superseded meanwhile).
        await wait_for(lambda: not any(w.is_running for w in app.workers), timeout=20)
        await pilot.pause()
        assert isinstance(app.screen, UsersScreen) and table.has_focus  # nothing opened


async def test_user_flag_with_an_email_in_other_case_opens_the_detail(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "uma.flagcase")
    app = console_app(backend, open_user="UMA.FlagCase@Test.Example")
    async with app.run_test(size=SIZE):
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == user.id


async def test_palette_opens_an_exact_email_or_username_with_one_enter(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "pia.palettejump")
        await new_user(admin, "pia.palettejump2")  # the search matches both
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_table(app)
        await wait_for(lambda: app.whoami is not None)
        for text in ("PIA.PaletteJump@test.example", "pia.palettejump"):
            burst(app, ["ctrl+p", *text])
            await wait_for(lambda: isinstance(app.screen, CommandPalette))
            await wait_for(lambda: palette_first_line(app).startswith("Open user pia.palettejump "))
            await pilot.press("enter")  # one Enter: the exact user, not just a highlight among the hits
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
            assert app.screen.user.id == user.id
            assert not any(isinstance(screen, CommandPalette) for screen in app.screen_stack)
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, UsersScreen))


def palette_first_line(app) -> str:
    from textual.command import CommandList

    try:
        options = app.screen.query_one(CommandList)
        return str(options.get_option_at_index(0).prompt) if options.option_count else ""
    except Exception:  # noqa: BLE001 - not open or not composed yet
        return ""


async def test_search_typed_in_a_burst_asks_once_for_the_last_term(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        target = await new_user(admin, "quentin.burstsearch")
    app = console_app(backend)
    spy = PageSpy(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        asked = len(spy.calls)
        burst(app, ["slash", *"quentin.burst"])
        await wait_for(lambda: table.total == 1 and table.row_at(0) is not None)
        assert table.row_at(0).id == target.id
        await settled(app, pilot)
        searches = [call for call in spy.calls[asked:] if call.get("search")]
        assert searches and {call["search"] for call in searches} == {"quentin.burst"}
        assert searches[0].get("count", True)  # a new search is counted (once)


async def test_the_page_cache_stays_bounded_after_scrolling_far(make_backend) -> None:
    backend = make_backend(users=2_500)
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        table.max_pages = 6
        for target in range(0, 2_500, 150):
            table.cursor_row = target
            await wait_for(lambda target=target: table.row_at(target) is not None)
        await settled(app, pilot)
        assert len(table.pages_held) <= table.max_pages
        assert len(table._ahead) <= table.max_ahead
        assert len(table._line_cache) <= 4 * table._body_height + 8
        assert len(app.screen.devices) <= app.screen.devices.maxsize


async def test_after_a_new_sort_the_last_rows_are_asked_beside_the_first_page(backend) -> None:
    app = console_app(backend)
    spy = PageSpy(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await users_table(app)
        await settled(app, pilot)
        if not spy.cursors:
            return  # an older server: nothing to ask "before the end" of (covered by the fallback tests)
        asked = len(spy.calls)
        await pilot.press("S")  # reverse: a new query
        await wait_for(lambda: table.total is not None and table.row_at(0) is not None)
        await settled(app, pilot)
        new = spy.calls[asked:]
        assert new[0].get("count", True) or new[1].get("count", True)
        assert any(call.get("before") == "end" and not call.get("count", True) for call in new[:2])
        last = table.total - 1
        assert table.row_at(last) is not None
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            expected = (await admin.list_users(skip=last, limit=1, sort="-username")).results[0]
        await pilot.press("end")
        assert table.row_at(table.cursor_row).id == expected.id


def test_a_console_session_pauses_the_collector_until_settled_and_restores_it_after() -> None:
    before = gc.get_threshold()
    assert gc.isenabled()
    with console_memory():
        assert not gc.isenabled()  # the imports and the first screen run without cyclic collections
        settle_memory()
        assert gc.isenabled()
        assert gc.get_threshold() == KEY_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up's objects are out of later collections
    assert gc.isenabled()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
