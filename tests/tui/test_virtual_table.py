"""VirtualTable: a generic widget, so it is tested over an in-test async page source.

The source records every (skip, limit) it is asked for, so the tests can prove
the table only fetches what is on screen and never asks twice for a page.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from rich.text import Text
from textual.app import App, ComposeResult

from console.tui.widgets.virtual_table import Column, VirtualTable


class RowSource:
    """An API stand-in over a list: counts requests, can be slowed down or broken."""

    def __init__(self, total: int, *, fail: bool = False) -> None:
        self.total = total
        self.calls: list[tuple[int, int]] = []
        self.fail = fail
        self.gate: asyncio.Event | None = None

    async def __call__(self, skip: int, limit: int) -> tuple[int, list[dict]]:
        self.calls.append((skip, limit))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("backend down")
        rows = [{"n": i, "name": f"user{i}"} for i in range(skip, min(skip + limit, self.total))]
        return self.total, rows


COLUMNS = [
    Column("n", "#", 8, lambda r: str(r["n"]), sortable=True),
    Column("name", "Name", 20, lambda r: r["name"]),
]


class TableApp(App):
    def __init__(self, source, columns=COLUMNS) -> None:
        super().__init__()
        self.source = source
        self.columns = columns
        self.messages: list = []

    def compose(self) -> ComposeResult:
        yield VirtualTable(self.columns, self.source, page_size=100, empty_text="Nothing here")

    def on_virtual_table_row_selected(self, message: VirtualTable.RowSelected) -> None:
        self.messages.append(message)

    def on_virtual_table_load_failed(self, message: VirtualTable.LoadFailed) -> None:
        self.messages.append(message)


def screen_text(app: App) -> str:
    """The visible text of the app's screen, line by line."""
    table = app.query_one(VirtualTable)
    lines = []
    for y in range(table.size.height):
        lines.append("".join(segment.text for segment in table.render_line(y)))
    return "\n".join(lines)


async def wait_for(pilot, condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.01)


async def test_million_rows_only_visible_pages_fetched() -> None:
    source = RowSource(1_000_000)
    app = TableApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 1_000_000)
        await app.workers.wait_for_complete()
        assert source.calls == [(0, 100)]
        assert table.virtual_size.height == 1_000_001  # rows + header
        await pilot.press("end")
        await wait_for(pilot, lambda: table.row_at(999_999) is not None)
        assert table.cursor_row == 999_999
        assert (999_900, 100) in source.calls
        assert len(source.calls) == 2  # the first page and the last, nothing in between
        assert "user999999" in screen_text(app)
        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_row == 0
        assert len(source.calls) == 2  # page 0 still cached


async def test_cursor_moves_are_cheap_at_a_million_rows() -> None:
    """What makes moves cheap, asserted without a clock (timings: bench/virtual_table.py).

    Moves inside a cached page fetch nothing; a jump anywhere fetches exactly the one page it lands
    on (two pages in all), and the rows drawn never depend on the million rows behind them.
    """
    source = RowSource(1_000_000)
    app = TableApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.row_at(0) is not None)
        for _ in range(20):
            table.action_cursor_down()
            await pilot.pause()
        assert table.cursor_row == 20
        assert source.calls == [(0, 100)]  # twenty moves, no request
        table.cursor_row = 654_321
        await wait_for(pilot, lambda: table.row_at(654_321) is not None)
        await app.workers.wait_for_complete()
        assert source.calls == [(0, 100), (654_300, 100)]  # a jump fetches exactly the page it shows
        assert len(table.pages_held) == 2
        assert "user654321" in screen_text(app)


async def test_no_duplicate_requests_while_a_page_is_in_flight() -> None:
    source = RowSource(500)
    source.gate = asyncio.Event()
    app = TableApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        # Many repaints while the first page is pending must not ask again.
        for _ in range(5):
            table.refresh()
            await pilot.pause()
        assert "loading…" in screen_text(app)
        assert source.calls == [(0, 100)]
        source.gate.set()
        await wait_for(pilot, lambda: table.total == 500)
        assert source.calls == [(0, 100)]
        assert "user0" in screen_text(app)


async def test_header_shows_labels_and_sort_indicator() -> None:
    app = TableApp(RowSource(3))
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 3)
        header = screen_text(app).splitlines()[0]
        assert header.startswith("#") and "Name" in header
        table.set_sort("name", descending=True)
        await pilot.pause()
        assert "Name ▼" in screen_text(app).splitlines()[0]


async def test_enter_selects_the_cursor_row_and_keys_move() -> None:
    app = TableApp(RowSource(250))
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 250)
        await pilot.press("j", "j", "down", "k")
        assert table.cursor_row == 2
        await pilot.press("pagedown")
        assert table.cursor_row == 2 + table.size.height - 1
        await pilot.press("enter")
        await pilot.pause()
        selected = [m for m in app.messages if isinstance(m, VirtualTable.RowSelected)]
        assert selected and selected[-1].index == table.cursor_row
        assert selected[-1].row["n"] == table.cursor_row


async def test_set_fetch_resets_and_reload_keeps_cursor() -> None:
    first = RowSource(300)
    app = TableApp(first)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 300)
        await pilot.press("down", "down", "down")
        table.reload()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.cursor_row == 3
        assert first.calls.count((0, 100)) == 2
        second = RowSource(7)
        table.set_fetch(second)
        await wait_for(pilot, lambda: table.total == 7)
        assert table.cursor_row == 0
        assert second.calls == [(0, 100)]


async def test_empty_and_failing_sources() -> None:
    app = TableApp(RowSource(0))
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 0)
        assert "Nothing here" in screen_text(app)
        broken = RowSource(10, fail=True)
        table.set_fetch(broken)
        await wait_for(pilot, lambda: any(isinstance(m, VirtualTable.LoadFailed) for m in app.messages))
        assert app.is_running
        assert broken.calls == [(0, 100)]  # a failed page is not hammered on every repaint
        table.refresh()
        await pilot.pause()
        assert broken.calls == [(0, 100)]
        broken.fail = False
        table.reload()
        await wait_for(pilot, lambda: table.total == 10)
        assert "user8" in screen_text(app)


@pytest.mark.parametrize(
    "hostile",
    ["[@click=app.quit]x[/]", "[/x]", "Mallory[/]", "\x1b]0;pwn\x07evil", "界" * 30 + "x", "שלום\u202eabc", "👩‍💻🔥"],
)
async def test_cells_are_literal_fixed_width_and_control_free(hostile: str) -> None:
    columns = [
        Column("name", "Name", 12, lambda r: r["name"]),
        Column("styled", "Styled", 12, lambda r: Text(r["name"], style="bold")),
        Column("n", "#", 4, lambda r: str(r["n"])),
    ]

    async def fetch(skip: int, limit: int):
        return 1, [{"n": 7, "name": hostile}]

    app = TableApp(fetch, columns)
    async with app.run_test(size=(60, 8)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 1)
        line = table.render_line(1)
        text = "".join(segment.text for segment in line)
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        if hostile.startswith("["):
            assert hostile[:10] in text  # literal, not parsed as markup
        # Fixed widths: the third column starts at the same cell whatever the names hold.
        from rich.cells import cell_len

        assert cell_len(text[: text.index(" 7")]) == 12 + 1 + 12
        assert app.is_running


async def test_a_late_answer_to_an_older_query_is_discarded() -> None:
    app = TableApp(RowSource(5))
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 5)

        class Uncancellable(RowSource):
            # Stands for a request already answered by the server when the next query starts.
            async def __call__(self, skip, limit):
                try:
                    return await super().__call__(skip, limit)
                except asyncio.CancelledError:
                    return await super().__call__(skip, limit)

        stale = Uncancellable(50)
        stale.gate = asyncio.Event()
        table.set_fetch(stale)
        await wait_for(pilot, lambda: stale.calls == [(0, 100)])
        fresh = RowSource(3)
        table.set_fetch(fresh)
        await wait_for(pilot, lambda: table.total == 3)
        stale.gate.set()
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert table.total == 3
        assert "user49" not in screen_text(app) and "user2" in screen_text(app)


async def test_page_cache_is_bounded() -> None:
    source = RowSource(100_000)
    app = TableApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.max_pages = 4
        table.focus()
        await wait_for(pilot, lambda: table.total == 100_000)
        for target in (5_000, 20_000, 40_000, 60_000, 80_000, 99_999):
            table.cursor_row = target
            await wait_for(pilot, lambda target=target: table.row_at(target) is not None)
        assert len(table.pages_held) <= 4
        assert table.row_at(99_999) is not None
        assert len(source.calls) == len(set(source.calls))  # never the same page twice in flight


# ---------------------------------------------------------------- fitting columns to the width
from console.tui.widgets.virtual_table import fit_columns  # noqa: E402


def _widths(layout) -> dict[str, int]:
    return {column.key: width for column, width in layout}


def test_plain_columns_keep_their_widths_whatever_the_space() -> None:
    # The original API (no min_width/flex/drop_rank): exactly as before, wide or narrow.
    assert _widths(fit_columns(COLUMNS, 200)) == {"n": 8, "name": 20}
    assert _widths(fit_columns(COLUMNS, 10)) == {"n": 8, "name": 20}


FLEXIBLE = [
    Column("id", "Id", 6, str),
    Column("name", "Name", 20, str, min_width=10, flex=1),
    Column("email", "Email", 30, str, min_width=16, flex=2),
    Column("extra", "Extra", 12, str, drop_rank=1),
    Column("more", "More", 10, str, drop_rank=2),
]


def _span(layout) -> int:
    return sum(width for _column, width in layout) + len(layout) - 1


def test_spare_width_goes_to_flex_columns_by_weight() -> None:
    layout = fit_columns(FLEXIBLE, 100)  # preferred: 6+20+30+12+10 + 4 separators = 82
    widths = _widths(layout)
    assert _span(layout) == 100
    assert widths["id"] == 6 and widths["extra"] == 12 and widths["more"] == 10
    assert widths["email"] - 30 == 2 * (widths["name"] - 20)  # 18 spare cells: 6 to name, 12 to email


def test_short_space_shrinks_towards_minimums_then_drops_by_rank() -> None:
    # Preferred 82 cells; minimums 6+10+16+12+10 + 4 separators = 58.
    assert _widths(fit_columns(FLEXIBLE, 70)) == {"id": 6, "name": 15, "email": 23, "extra": 12, "more": 10}
    assert list(_widths(fit_columns(FLEXIBLE, 50))) == ["id", "name", "email", "extra"]  # highest rank first
    assert _widths(fit_columns(FLEXIBLE, 36)) == {"id": 6, "name": 11, "email": 17}
    # Below the minimums of the columns that are never dropped: minimums, and the table scrolls.
    assert _widths(fit_columns(FLEXIBLE, 20)) == {"id": 6, "name": 10, "email": 16}


RESIZE_COLUMNS = [
    Column("id", "Id", 6, lambda r: str(r["n"])),
    Column("name", "Name", 20, lambda r: r["name"], min_width=10, flex=1),
    Column("email", "Email", 30, lambda r: f"{r['name']}@example.com", min_width=16, flex=2),
    Column("extra", "Extra", 12, lambda r: "x", drop_rank=1),
    Column("more", "More", 10, lambda r: "y", drop_rank=2),
]


class ResizeApp(TableApp):
    def on_virtual_table_columns_changed(self, message: VirtualTable.ColumnsChanged) -> None:
        self.messages.append(message)


async def test_resizing_refits_columns_without_sideways_scrolling() -> None:
    app = ResizeApp(RowSource(500), RESIZE_COLUMNS)
    async with app.run_test(size=(120, 12)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 500)
        await pilot.pause()
        expected = {
            120: ("id", "name", "email", "extra", "more"),
            52: ("id", "name", "email", "extra"),
            40: ("id", "name", "email"),
            100: ("id", "name", "email", "extra", "more"),
        }
        for width, keys in expected.items():
            await pilot.resize_terminal(width, 12)
            await wait_for(pilot, lambda keys=keys: table.shown_columns == keys)
            await pilot.pause()
            content = table.scrollable_content_region.width
            assert table.virtual_size.width == content  # flex columns fill the row exactly: no sideways scroll
            assert not table.show_horizontal_scrollbar
            lines = screen_text(app).splitlines()
            for key in keys:
                assert next(c.label for c in RESIZE_COLUMNS if c.key == key) in lines[0]
            assert "user1@example.com" in lines[2]
        changed = [m.keys for m in app.messages if isinstance(m, VirtualTable.ColumnsChanged)]
        assert changed[-3:] == [expected[52], expected[40], expected[100]]


# ---------------------------------------------------------------- keeping the highlighted row across reloads
class ShiftingSource:
    """Rows with ids, newest first: ``arrive(n)`` puts n new rows on top, as new push attempts do."""

    def __init__(self, total: int) -> None:
        self.ids = list(range(total, 0, -1))
        self.next_id = total + 1
        self.calls: list[tuple[int, int]] = []

    def arrive(self, count: int) -> None:
        fresh = list(range(self.next_id + count - 1, self.next_id - 1, -1))
        self.next_id += count
        self.ids = fresh + self.ids

    async def __call__(self, skip: int, limit: int) -> tuple[int, list[dict]]:
        self.calls.append((skip, limit))
        return len(self.ids), [{"id": i, "name": f"row{i}"} for i in self.ids[skip : skip + limit]]


async def test_reload_keeps_the_highlight_on_the_same_row_by_id() -> None:
    source = ShiftingSource(1_000)
    app = TableApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 1_000)
        await pilot.press("down", "down", "down", "down", "down")  # typed straight on, no pauses in between
        highlighted = table.row_at(table.cursor_row)["id"]
        line = table.cursor_row - int(table.scroll_offset.y)
        source.arrive(3)  # three rows arrive above the highlighted one
        table.reload()
        await wait_for(pilot, lambda: table.total == 1_003)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.row_at(table.cursor_row)["id"] == highlighted
        assert table.cursor_row == 5 + 3
        assert table.cursor_row - int(table.scroll_offset.y) == line  # on the same screen line
        assert f"row{highlighted}" in screen_text(app).splitlines()[line + 1]

        # Across a page boundary: the row moved from page 0 to page 1 and is still followed.
        table.cursor_row = 98
        await pilot.pause()
        highlighted = table.row_at(98)["id"]
        source.arrive(5)
        table.reload()
        await wait_for(pilot, lambda: table.total == 1_008)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.cursor_row == 103 and table.row_at(103)["id"] == highlighted

        # Enter after a reload opens the row that was highlighted, not whatever is now at its index.
        await pilot.press("enter")
        await pilot.pause()
        selected = [m for m in app.messages if isinstance(m, VirtualTable.RowSelected)]
        assert selected[-1].row["id"] == highlighted


async def test_reload_keeps_the_index_when_the_row_is_gone_and_a_user_move_wins() -> None:
    source = ShiftingSource(300)
    app = TableApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 300)
        table.cursor_row = 10
        await pilot.pause()
        gone = table.row_at(10)["id"]
        source.ids.remove(gone)
        table.reload()
        await wait_for(pilot, lambda: table.total == 299)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.cursor_row == 10  # the row is gone: the index stays
        assert table._anchor is None

        # A key pressed while the reload is answered is the user's choice: the table does not pull it back.
        slow = ShiftingSource(300)
        slow_gate = asyncio.Event()

        async def gated(skip: int, limit: int):
            await slow_gate.wait()
            return await slow(skip, limit)

        table.reload(gated)
        await pilot.press("down", "down")
        slow_gate.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.cursor_row == 12


async def test_set_fetch_keep_cursor_is_a_complete_requery_that_keeps_the_row() -> None:
    source = ShiftingSource(500)
    app = TableApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 500)
        table.cursor_row = 250
        await wait_for(pilot, lambda: table.row_at(250) is not None)
        highlighted = table.row_at(250)["id"]
        fresh = ShiftingSource(500)
        fresh.arrive(2)
        table.set_fetch(fresh, keep_cursor=True)
        await wait_for(pilot, lambda: table.total == 502)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.row_at(table.cursor_row)["id"] == highlighted and table.cursor_row == 252
        assert (0, 100) in fresh.calls  # the total and first page are asked again too


# ---------------------------------------------------------------- position, sideways scrolling, row details
from textual.widgets import Static  # noqa: E402

from console.tui.widgets.virtual_table import RowDetailsScreen, TablePosition  # noqa: E402


class PositionApp(TableApp):
    def compose(self) -> ComposeResult:
        yield TablePosition("#rows", "rows", id="position")
        yield VirtualTable(self.columns, self.source, page_size=100, id="rows")


async def test_table_position_shows_the_cursor_row_and_the_count() -> None:
    source = RowSource(20_000)
    app = PositionApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        position = app.query_one(TablePosition)
        table.focus()
        await wait_for(pilot, lambda: table.total == 20_000)
        await wait_for(pilot, lambda: str(position.content) == "rows 1/20,000")
        await pilot.press("j", "j", "j", "end")
        await wait_for(pilot, lambda: str(position.content) == "rows 20,000/20,000")
        await pilot.press("home", "down")
        await wait_for(pilot, lambda: str(position.content) == "rows 2/20,000")
        position.suffix = " match"
        assert str(position.content) == "rows 2/20,000 match"
        table.set_fetch(RowSource(0))
        await wait_for(pilot, lambda: str(position.content) == "rows 0 match")
        table.set_fetch(RowSource(5, fail=True))
        await wait_for(pilot, lambda: str(position.content) == "rows: not loaded")


WIDE = [
    Column("user", "User", 14, lambda r: r["name"], priority=1),
    Column("mail", "Mail", 24, lambda r: f"{r['name']}@example.com", priority=1),
    Column("a", "Alpha", 10, lambda r: "alpha", drop_rank=1),
    Column("b", "Beta", 10, lambda r: "beta", drop_rank=2),
    Column("c", "Gamma", 10, lambda r: "gamma", drop_rank=3),
]


async def test_right_and_left_scroll_hidden_columns_in_with_the_header() -> None:
    app = ResizeApp(RowSource(50), WIDE)
    async with app.run_test(size=(52, 10)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 50)
        await pilot.pause()
        assert table.shown_columns == ("user", "mail", "a")
        assert table.hidden_right
        await pilot.press("right", "right")  # typed on: both count
        await wait_for(pilot, lambda: table.first_column == 2)
        await pilot.pause()
        assert table.shown_columns == ("a", "b", "c")
        header = screen_text(app).splitlines()[0]
        assert header.startswith("Alpha") and "Gamma" in header and "User" not in header  # the header moved too
        assert "gamma" in screen_text(app).splitlines()[1]
        assert not table.hidden_right
        await pilot.press("right")  # nothing more to the right: stays
        assert table.first_column == 2
        await pilot.press("left", "left", "left")
        await wait_for(pilot, lambda: table.first_column == 0)
        await pilot.pause()
        assert table.shown_columns == ("user", "mail", "a")
        assert screen_text(app).splitlines()[0].startswith("User")
        assert not table.show_horizontal_scrollbar  # columns move, not a half-cut cell offset
        changed = [m.keys for m in app.messages if isinstance(m, VirtualTable.ColumnsChanged)]
        assert ("a", "b", "c") in changed


def test_higher_priority_columns_shrink_last() -> None:
    columns = [
        Column("user", "User", 20, str, min_width=12, priority=1),
        Column("name", "Name", 20, str, min_width=8),
        Column("mail", "Mail", 30, str, min_width=16, priority=1),
    ]
    # Preferred 72; at 60 the 12 cells come from Name alone (it may give 12).
    assert _widths(fit_columns(columns, 60)) == {"user": 20, "name": 8, "mail": 30}
    # At 50 Name is at its minimum and the identity columns share the rest of the cut.
    widths = _widths(fit_columns(columns, 50))
    assert widths["name"] == 8 and widths["user"] + widths["mail"] == 40
    assert widths["user"] >= 12 and widths["mail"] >= 16


async def test_i_shows_the_whole_row_uncropped_and_literal() -> None:
    long_name = "agnieszka.andersson-kowalczyk[/]\x1b]0;x\x07"

    async def fetch(skip: int, limit: int):
        return 2, [{"n": 0, "name": long_name}, {"n": 1, "name": "short"}]

    columns = [Column("n", "#", 3, lambda r: str(r["n"])), Column("name", "Name", 10, lambda r: r["name"])]
    app = TableApp(fetch, columns)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 2)
        assert "agnieszka.andersson" not in screen_text(app)  # cropped in the table
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, RowDetailsScreen))
        details: RowDetailsScreen = app.screen  # type: ignore[assignment]
        assert "Name: agnieszka.andersson-kowalczyk[/]" in details.text()
        assert "\x1b" not in details.text() and "\x07" not in details.text()
        await pilot.pause()
        body = details.query_one("#row-details-body", Static)
        drawn = "".join(s.text for strip in body.render_lines(body.region.reset_offset) for s in strip)
        assert "agnieszka.andersson-kowalczyk[/]" in drawn
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, RowDetailsScreen))
        assert app.is_running
