"""Keys typed ahead of the rows they act on are never lost and act on the rows then in view.

A re-sort (`S`) forgets the old order: until the new order's total is in, End, PgDn or Down had no
rows to move over and landed on row 1. A search typed in the box and then Down/Enter must act on the
final term's results, not on the list shown before the term was sent. Keys are queued all at once
(``burst``), as a terminal delivers them; the service's answers are held at a gate until every key has
been handled, so the keys always come before the rows (as they do over SSH, where that is most likely).
"""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Input

from console.client import ProtectClient
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import wait_for
from tests.tui.tui_helpers import SIZE, burst, console_app

USERS = 450  # five pages of 100: End, PgDn and the pages between are not all the first page


class AnswerGate:
    """Holds the answers of the app's client to ``user_page`` while closed (the real service answers)."""

    def __init__(self, app) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0
        api = app.api
        original = api.user_page

        async def gated(**kwargs):
            answer = await original(**kwargs)
            self.waiting += 1
            try:
                await self.open.wait()
            finally:
                self.waiting -= 1
            return answer

        api.user_page = gated  # type: ignore[method-assign]


async def ready_table(app, pilot) -> VirtualTable:
    await wait_for(lambda: isinstance(app.screen, UsersScreen))
    table = app.screen.query_one("#users-table", VirtualTable)
    await wait_for(lambda: table.total is not None and table.row_at(0) is not None)
    await wait_for(lambda: not table._inflight and not table._wanted and not table._request_scheduled)
    await pilot.pause()
    return table


async def expected_at(backend, index: int, sort: str) -> str:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        return (await admin.list_users(skip=index, limit=1, sort=sort)).results[0].id


async def keys_before_the_answers(app, pilot, gate: AnswerGate, keys: list[str]) -> None:
    """Send ``keys`` back to back; the answers they cause wait until every key has been handled."""
    gate.open.clear()
    burst(app, keys)
    await wait_for(lambda: gate.waiting > 0)  # the new order's first answer is in, held back
    await pilot.pause()
    await pilot.pause()
    gate.open.set()


@pytest.fixture
def big_backend(make_backend):
    return make_backend(users=USERS)


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        (["S", "end"], lambda total, height: total - 1),
        (["S", "pagedown"], lambda total, height: height),
        (["S", "down"], lambda total, height: 1),
        (["S", "down", "down", "down"], lambda total, height: 3),
        (["S", "end", "up", "up"], lambda total, height: total - 3),
        (["S", "pagedown", "pagedown", "up"], lambda total, height: 2 * height - 1),
        (["end", "S", "down"], lambda total, height: 1),  # a re-sort starts the new order at its first row
    ],
    ids=["end", "pgdn", "down", "down3", "end-up2", "pgdn2-up", "end-then-resort-down"],
)
async def test_a_move_typed_right_after_a_resort_lands_where_it_would_after_the_rows(big_backend, keys, where) -> None:
    app = console_app(big_backend)
    gate = AnswerGate(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await ready_table(app, pilot)
        await keys_before_the_answers(app, pilot, gate, keys)
        await wait_for(lambda: table.total is not None and table.row_at(table.cursor_row) is not None)
        assert table.total == USERS
        index = where(table.total, table._body_height)
        assert table.cursor_row == index
        assert table.position() == (index + 1, USERS)
        screen = app.screen
        assert isinstance(screen, UsersScreen)
        assert screen.highlighted_user().id == await expected_at(big_backend, index, "-username")
        top = int(table.scroll_offset.y)
        assert top <= index < top + table._body_height  # the highlighted row is on screen


async def test_enter_typed_right_after_a_resort_and_end_opens_the_last_user_of_the_new_order(big_backend) -> None:
    app = console_app(big_backend)
    gate = AnswerGate(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready_table(app, pilot)
        await keys_before_the_answers(app, pilot, gate, ["S", "end", "enter"])
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        assert app.screen.user.id == await expected_at(big_backend, USERS - 1, "-username")


async def test_a_search_typed_then_down_and_enter_opens_the_row_of_the_final_results(big_backend) -> None:
    async with ProtectClient(big_backend.url, big_backend.admin_key) as admin:
        found = await admin.list_users(skip=0, limit=5, sort="username", search="son")
    assert found.totalCount >= 3
    app = console_app(big_backend)
    gate = AnswerGate(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready_table(app, pilot)
        await keys_before_the_answers(app, pilot, gate, ["slash", *"son", "down", "enter"])
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        # Down leaves the box for the results (their first row), Enter opens the row it lands on.
        assert app.screen.user.id == found.results[0].id


async def test_a_search_typed_then_down_lands_on_the_final_results(big_backend) -> None:
    async with ProtectClient(big_backend.url, big_backend.admin_key) as admin:
        found = await admin.list_users(skip=0, limit=5, sort="username", search="son")
    app = console_app(big_backend)
    gate = AnswerGate(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await ready_table(app, pilot)
        await keys_before_the_answers(app, pilot, gate, ["slash", *"son", "down", "down", "down"])
        await wait_for(lambda: table.total == found.totalCount and table.row_at(table.cursor_row) is not None)
        screen = app.screen
        assert isinstance(screen, UsersScreen)
        assert screen.query_one("#users-search", Input).value == "son"
        assert screen.focused is table
        assert table.cursor_row == 2
        assert screen.highlighted_user().id == found.results[2].id


async def test_keys_typed_after_the_enter_that_opens_a_user_act_on_that_users_screen(big_backend) -> None:
    """Down, Enter, D with no pause: the deletion is asked about on the detail screen of the user Enter opened
    (D waits there for the user to load), never dropped and never taken by the list behind it."""
    from textual.widgets import Static

    from console.tui.modals.prompt import PromptScreen

    app = console_app(big_backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready_table(app, pilot)
        burst(app, ["down", "enter", "D"])
        await wait_for(lambda: isinstance(app.screen, PromptScreen))
        question, detail, below = app.screen, app.screen_stack[-2], app.screen_stack[-3]
        assert isinstance(detail, UserDetailScreen) and isinstance(below, UsersScreen)
        second = await expected_at(big_backend, 1, "username")
        assert detail.user is not None and detail.user.id == second
        assert any(detail.user.username in str(w.render()) for w in question.query(Static))
        await pilot.press("escape")
        await wait_for(lambda: app.screen is detail)
