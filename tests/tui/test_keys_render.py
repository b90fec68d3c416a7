"""The table's cheaper repaint per key draws exactly what Textual's own path draws.

VirtualTable hands the compositor its cached row strips (render_lines) with neighbouring cells of one
style merged; TablePosition keeps its widest width while the total stays; a re-query keeps the
scroll extent until its total is known. These check that what is drawn does not change, only the work.
"""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.strip import Strip

from console.tui.widgets.virtual_table import Column, TablePosition, VirtualTable


class Source:
    def __init__(self, total: int) -> None:
        self.total = total
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self, skip: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("backend down")
        return self.total, [{"n": i, "name": f"user{i}\x1b[31m"} for i in range(skip, min(skip + limit, self.total))]


def state(row: dict[str, Any]) -> Text:
    return Text("locked", style="bold red", end="") if row["n"] % 3 == 0 else Text("active", end="")


def mixed(row: dict[str, Any]) -> Text:
    text = Text("a", end="")
    text.append(f"b{row['n'] % 7}", style="yellow")
    return text


COLUMNS = [
    Column("n", "#", 8, lambda r: str(r["n"]), sortable=True),
    Column("name", "Name", 20, lambda r: r["name"], min_width=10, flex=1),
    Column("state", "State", 8, state),
    Column("mixed", "Mixed", 6, mixed),
    Column("wide", "Wide", 30, lambda r: "x" * 40, drop_rank=1),
]


class TableApp(App[None]):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        yield TablePosition("#rows", "rows", id="position")
        yield VirtualTable(COLUMNS, self.source, page_size=50, prefetch=True, id="rows")


async def wait_for(pilot: Any, condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.01)


def drawn(strips: list[Strip]) -> list[list[tuple[str, Any]]]:
    return [[(segment.text, segment.style) for segment in strip.simplify()] for strip in strips]


def same_as_textual(table: VirtualTable) -> None:
    region = Region(0, 0, table.region.width, table.region.height)
    ours = table.render_lines(region)
    table._styles_cache.clear()
    textual = super(VirtualTable, table).render_lines(region)
    assert drawn(ours) == drawn(textual)
    part = Region(3, 1, max(1, table.region.width - 9), table.region.height - 2)
    assert drawn(table.render_lines(part)) == drawn(super(VirtualTable, table).render_lines(part))


async def test_the_lines_handed_to_the_compositor_are_textuals_own() -> None:
    app = TableApp(Source(10_000))
    async with app.run_test(size=(90, 16)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.row_at(0) is not None)
        await pilot.pause()
        same_as_textual(table)
        for keys in (["down"] * 3, ["down"] * 15, ["pagedown"], ["end"], ["pageup"], ["home"]):
            await pilot.press(*keys)
            await wait_for(pilot, lambda: table.row_at(table.cursor_row) is not None)
            await pilot.pause()
            same_as_textual(table)
        table.blur()
        await pilot.pause()
        same_as_textual(table)


async def test_a_row_of_plain_cells_is_one_segment_and_no_neighbours_share_a_style() -> None:
    app = TableApp(Source(100))
    async with app.run_test(size=(90, 16)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.row_at(5) is not None)
        base = table.rich_style
        for index in range(10):
            segments = table._row_segments(table.row_at(index), base)
            assert all(a.style != b.style for a, b in pairwise(segments))
            text = "".join(segment.text for segment in segments)
            assert "\x1b" not in text and text.startswith(str(index))  # untrusted text stays data
        # Row 1: `#`, name, `active` and the mixed cell's plain part are one segment; its yellow part another.
        assert len(table._row_segments(table.row_at(1), base)) <= 3


async def test_the_position_keeps_its_widest_width_until_the_total_changes() -> None:
    source = Source(10_000)
    app = TableApp(source)
    async with app.run_test(size=(90, 16)) as pilot:
        table = app.query_one(VirtualTable)
        position = app.query_one(TablePosition)
        table.focus()
        await wait_for(pilot, lambda: str(position.content) == "rows 1/10,000")
        await pilot.pause()
        narrow = position.region.width
        await pilot.press("end")
        await wait_for(pilot, lambda: str(position.content) == "rows 10,000/10,000")
        await pilot.pause()
        wide = position.region.width
        assert wide > narrow
        await pilot.press("home")
        await wait_for(pilot, lambda: str(position.content) == "rows 1/10,000")  # the text is the label alone
        await pilot.pause()
        assert position.region.width == wide
        table.set_fetch(Source(5))  # another total: the label's own width again
        await wait_for(pilot, lambda: str(position.content) == "rows 1/5")
        await pilot.pause()
        assert position.region.width < narrow


async def test_a_requery_keeps_the_extent_until_its_total_is_known() -> None:
    source = Source(10_000)
    app = TableApp(source)
    async with app.run_test(size=(90, 16)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 10_000)
        assert table.virtual_size.height == 10_001
        slow = Source(10_000)
        slow.gate = asyncio.Event()
        table.set_fetch(slow)
        await pilot.pause()
        assert table.total is None and table.virtual_size.height == 10_001
        slow.gate.set()
        await wait_for(pilot, lambda: table.total == 10_000 and table.row_at(0) is not None)
        assert table.virtual_size.height == 10_001
        broken = Source(10_000)
        broken.fail = True
        table.set_fetch(broken)
        await wait_for(pilot, lambda: table.load_failed)
        assert table.virtual_size.height == 2  # nothing to scroll through
