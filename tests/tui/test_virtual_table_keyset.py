"""VirtualTable over keyset paging (issue 8 item 2), against an in-test source that speaks the wire
contract: ``after``/``before`` a cursor (``before=end``), ``skip`` counted from the cursor, ``count``.

The source records every request, so the tests prove what the table asks for (cursors, never a deep
offset when scrolling page by page, no counting once the total is known, the last page fetched before
End is pressed) without a clock. Timings are bench/ material.
"""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult

from console.tui.widgets.virtual_table import (
    END,
    Column,
    PageAnswer,
    PageRequest,
    VirtualTable,
    cursor_fetcher,
)
from tests.tui.test_virtual_table import screen_text, wait_for


class KeysetSource:
    """Rows 0..total-1 in order; a cursor names a row (opaque to the table: ``c<n>``)."""

    def __init__(self, total: int, *, cursors: bool = True) -> None:
        self.total = total
        self.cursors = cursors
        self.requests: list[PageRequest] = []
        self.gate: asyncio.Event | None = None
        cursor_fetcher(self)  # takes a PageRequest, not (skip, limit)

    @staticmethod
    def _row(n: int) -> dict:
        return {"id": n, "name": f"user{n}"}

    async def __call__(self, request: PageRequest) -> PageAnswer:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if not self.cursors:  # an older server: cursors and count ignored, plain skip/limit
            rows = list(range(request.skip, min(request.skip + request.limit, self.total)))
            return PageAnswer(self.total, [self._row(n) for n in rows])
        if request.after is not None:
            first = int(request.after[1:]) + 1 + request.offset
            rows = list(range(first, min(first + request.limit, self.total)))
        elif request.before is not None:
            stop = self.total if request.before == END else int(request.before[1:])
            stop -= request.offset
            rows = list(range(max(0, stop - request.limit), max(0, stop)))
        else:
            rows = list(range(request.skip, min(request.skip + request.limit, self.total)))
        return PageAnswer(
            self.total if request.count else None,
            [self._row(n) for n in rows],
            f"c{rows[0]}" if rows else None,
            f"c{rows[-1]}" if rows else None,
            cursors=True,
        )


COLUMNS = [Column("n", "#", 8, lambda r: str(r["id"])), Column("name", "Name", 20, lambda r: r["name"])]


class KeysetApp(App):
    def __init__(self, source: KeysetSource, *, prefetch: bool = True) -> None:
        super().__init__()
        self.source = source
        self.prefetch = prefetch

    def compose(self) -> ComposeResult:
        yield VirtualTable(COLUMNS, self.source, page_size=100, prefetch=self.prefetch)


async def settle(app: App, pilot) -> None:
    """Until no page request is left to start or answer."""
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def rows_shown_are_consecutive(app: App, first: int, count: int) -> bool:
    text = screen_text(app)
    return all(f"user{n} " in text or text.rstrip().endswith(f"user{n}") for n in range(first, first + count))


async def test_scrolling_down_page_by_page_asks_after_cursors_and_never_counts_or_walks_again() -> None:
    source = KeysetSource(100_000)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 100_000)
        for _ in range(40):  # about five pages of 100 rows, a screen at a time
            await pilot.press("pagedown")
        await settle(app, pilot)
        assert table.cursor_row > 500
        first, *rest = source.requests
        assert first == PageRequest(0, 100, count=True)  # the first page counts the directory, once
        assert rest and all(not r.count for r in rest)
        # Every other page is asked relative to a cursor: after the page above it, or the last page
        # before the end (prefetched so End repaints at once). Nothing walks: no offset at depth.
        assert all(r.after is not None or r.before == END for r in rest)
        assert all(r.walk == 0 for r in rest)
        downward = [r for r in rest if r.after is not None]
        assert [r.skip for r in downward] == sorted(r.skip for r in downward)
        assert len({r.skip for r in source.requests}) == len(source.requests)  # never a page twice
        assert rows_shown_are_consecutive(app, int(table.scroll_offset.y), 5)


async def test_the_last_page_is_in_the_cache_before_end_is_pressed() -> None:
    source = KeysetSource(1_000_000)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 1_000_000)
        await settle(app, pilot)
        assert PageRequest(999_900, 100, before=END, count=False) in source.requests
        asked = len(source.requests)
        table.action_last()  # what End does; the row is there the moment the key is handled
        assert table.cursor_row == 999_999 and table.row_at(999_999) == {"id": 999_999, "name": "user999999"}
        await pilot.pause()
        assert "user999999" in screen_text(app) and "loading" not in screen_text(app)
        table.action_first()
        assert table.row_at(0) is not None
        await settle(app, pilot)
        assert all(r.before == END or r.after is not None or r.skip == 0 for r in source.requests[asked:])


async def test_a_short_last_page_is_asked_with_before_end_and_its_exact_size() -> None:
    source = KeysetSource(1_234)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 1_234)
        await settle(app, pilot)
        assert PageRequest(1_200, 34, before=END, count=False) in source.requests
        await pilot.press("end")
        assert "user1233" in screen_text(app)
        # The screen above the short last page came from the page before it, asked before its start.
        assert any(r.before == "c1200" for r in source.requests)


async def test_a_jump_walks_from_the_nearest_known_cursor_not_from_the_top() -> None:
    source = KeysetSource(1_000_000)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 1_000_000)
        await settle(app, pilot)
        asked = len(source.requests)
        table.cursor_row = 654_321
        await wait_for(pilot, lambda: table.row_at(654_321) is not None)
        jump = next(r for r in source.requests[asked:] if r.skip == 654_300)
        # Nearer the end than the top: back from the end's cursor, a third of the walk of OFFSET 654300.
        assert jump.before is not None and jump.walk < 654_300 and not jump.count
        assert table.row_at(654_321) == {"id": 654_321, "name": "user654321"}
        await settle(app, pilot)
        # Then its neighbours come after/before its own cursors: no walk at all.
        later = [r for r in source.requests[asked:] if r is not jump]
        assert later and all(r.walk == 0 for r in later)


async def test_scrolling_back_up_after_eviction_asks_before_the_page_below() -> None:
    source = KeysetSource(100_000)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.max_pages = 3
        table.max_ahead = 2
        table.focus()
        await wait_for(pilot, lambda: table.total == 100_000)
        for target in range(100, 1_300, 100):
            table.cursor_row = target
            await wait_for(pilot, lambda target=target: table.row_at(target) is not None)
        await settle(app, pilot)
        assert 0 not in table.pages_held and 5 not in table.pages_held  # evicted
        asked = len(source.requests)
        table.cursor_row = 550
        await wait_for(pilot, lambda: table.row_at(550) is not None)
        again = [r for r in source.requests[asked:] if r.skip == 500]
        assert again and (again[0].before == "c600" or again[0].after == "c499") and again[0].walk == 0


async def test_page_cache_stays_bounded_while_scrolling_a_long_way() -> None:
    source = KeysetSource(200_000)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 200_000)
        for target in range(0, 100_001, 400):  # 100k rows, four pages a step
            table.cursor_row = target
            await wait_for(pilot, lambda target=target: table.row_at(target) is not None)
        await settle(app, pilot)
        assert len(table.pages_held) <= table.max_pages
        assert len(table._ahead) <= table.max_ahead
        assert len(table._cursors) <= 4 * table.max_pages + 64


async def test_an_older_server_without_cursors_is_paged_with_skip_and_limit() -> None:
    source = KeysetSource(5_000, cursors=False)
    app = KeysetApp(source)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await wait_for(pilot, lambda: table.total == 5_000)
        await pilot.press("end")
        await wait_for(pilot, lambda: table.row_at(4_999) is not None)
        for _ in range(3):
            await pilot.press("pageup")
        await settle(app, pilot)
        assert all(r.after is None and r.before is None for r in source.requests)
        assert "user4999" not in screen_text(app) or table.cursor_row == 4_999
        assert table.row_at(table.cursor_row) == {"id": table.cursor_row, "name": f"user{table.cursor_row}"}


async def test_a_new_query_forgets_the_cursors_and_counts_again() -> None:
    first = KeysetSource(3_000)
    app = KeysetApp(first)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        await wait_for(pilot, lambda: table.total == 3_000)
        await settle(app, pilot)
        second = KeysetSource(700)
        table.set_fetch(second)
        await wait_for(pilot, lambda: table.total == 700)
        await settle(app, pilot)
        assert PageRequest(0, 100, count=True) in second.requests[:2]  # the new query is counted
        # Beside it, the last rows, not counted: End after a new sort or filter has its page at once.
        assert PageRequest(0, 100, before=END, count=False) in second.requests[:2]
        assert table.row_at(699) == {"id": 699, "name": "user699"}
        assert all(not (r.after or "").startswith("c2") for r in second.requests)  # no cursor of the old query
        table.reload()
        await settle(app, pilot)
        recount = [r for r in second.requests[1:] if r.skip == 0]
        assert recount and recount[-1].count  # a reload counts again, with the first page
