"""Console start with a warm start, as `protect-console` runs it: the first screen's requests go out
before the UI loads, and the first frame needs no request of the console's own.

The CLI begins a :class:`WarmStart` with ``first_requests()`` and ``follow=next_requests`` before
Textual is imported; these tests do the same against the real service, then run the app.
"""

from __future__ import annotations

from console.client import WarmStart
from console.config import ConnectionProfile
from console.tui.app import ProtectConsoleApp
from console.tui.screens.users import UsersScreen
from console.tui.startup import USERS_PAGE_SIZE, first_requests, next_requests
from console.tui.widgets.error_banner import ErrorBanner
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import wait_for
from tests.tui.tui_helpers import SIZE

BENCH_SIZE = (140, 40)  # bench/console_start.py's window: tall enough for the table to prefetch the second page
JOIN = 30.0  # seconds: the warm start's requests to a local service (a guard, not a measure)


def warm_app(backend, warm: WarmStart | None) -> ProtectConsoleApp:
    profile = ConnectionProfile("test", backend.url, backend.admin_key)
    return ProtectConsoleApp(profile, warm=warm)


async def test_the_first_screen_uses_every_early_answer(make_backend) -> None:
    total = 4 * USERS_PAGE_SIZE + 50  # a next page, and a last page (of 50) far enough to be asked by before=end
    backend = make_backend(users=total)
    warm = WarmStart.begin(backend.url, backend.admin_key, first_requests(), follow=next_requests)
    assert warm is not None
    warm._thread.join(JOIN)  # all answered before the app starts, as while Textual imports
    assert len(warm._sends) == 4  # whoami, the first page, then the next page and the last one
    assert all(answer.done() and answer.exception() is None for _key, answer in warm._sends)

    app = warm_app(backend, warm)
    assert app.whoami is not None  # taken while the app is built: the first screen composes with it
    async with app.run_test(size=BENCH_SIZE):
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        table = app.screen.query_one("#users-table", VirtualTable)
        await wait_for(lambda: table.total == total and table.row_at(0) is not None)
        # The table's own first requests (first page, its prefetch of the next and the last) were
        # exactly these: every early answer is taken. If this fails, the table now asks otherwise:
        # make startup.next_requests ask what it asks.
        try:
            await wait_for(lambda: not warm._answers, timeout=5)
        except AssertionError:
            raise AssertionError(f"unused: {list(warm._answers)} held {table.pages_held}") from None


async def test_a_small_directory_asks_for_no_more_pages_early(make_backend) -> None:
    backend = make_backend(users=USERS_PAGE_SIZE - 1)
    warm = WarmStart.begin(backend.url, backend.admin_key, first_requests(), follow=next_requests)
    assert warm is not None
    warm._thread.join(JOIN)
    assert len(warm._sends) == 2  # one page holds them all


async def test_backend_down_at_start_shows_the_error_and_recovers(backend) -> None:
    backend.stop()
    warm = WarmStart.begin(backend.url, backend.admin_key, first_requests(), follow=next_requests)
    assert warm is not None
    warm._thread.join(JOIN)
    app = warm_app(backend, warm)
    assert app.whoami is None  # the early answer failed: asked again in the usual way
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        users: UsersScreen = app.screen  # type: ignore[assignment]
        banner = users.query_one(ErrorBanner)
        await wait_for(lambda: banner.showing, timeout=30)
        assert "Backend unavailable" in banner.message
        backend.restart()
        users.query_one(VirtualTable).focus()
        await pilot.press("r")
        table = users.query_one(VirtualTable)
        await wait_for(lambda: not banner.showing and table.row_at(0) is not None, timeout=30)
        await wait_for(lambda: app.whoami is not None, timeout=30)
        assert app.is_running
