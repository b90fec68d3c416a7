"""A table over a paged API: only the rows on screen are fetched and drawn.

Why not ``DataTable``: it measures every cell as rows are added (100k rows
freeze the UI for ~30 s) and wants every row in memory. This widget uses the
Line API: ``virtual_size`` comes from the API's ``totalCount``, ``render_line``
draws one row from an LRU cache of pages, and a miss shows a "loading…"
placeholder while one worker per missing page fetches it. Column widths come
from the column definitions and the widget's width only (:func:`fit_columns`,
recomputed on resize), so nothing is ever measured over the data.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ...safe_text import printable

PageFetcher = Callable[[int, int], Awaitable[tuple[int, list[Any]]]]
"""``(skip, limit) -> (totalCount, rows)``."""

_PAGE_GROUP = "virtual-table-pages"
_SEPARATOR = " "
_LOADING = Text("loading…", style="dim italic")
_FAILED = Text("not loaded (r retries)", style="dim")


@dataclass(frozen=True)
class Column:
    key: str  # id, also used for sort requests
    label: str
    width: int  # preferred cell width: cells are padded/cropped, never measured over the data
    render: Callable[[Any], str | Text]  # row -> cell; a str is cleaned and shown literally
    sortable: bool = False
    # The optional fields below let a table fit its widget instead of scrolling sideways.
    # Their defaults keep a column at exactly ``width``, always shown.
    min_width: int | None = None  # may shrink down to this when space is short (None: never shrinks)
    flex: int = 0  # share of spare width it grows by (0: never grows)
    drop_rank: int = 0  # 0: always shown; else hidden when even the minimum widths do not fit, highest first

    @property
    def narrowest(self) -> int:
        if self.min_width is None:
            return self.width
        return max(1, min(self.min_width, self.width))


def fit_columns(columns: list[Column], available: int) -> list[tuple[Column, int]]:
    """Which columns to show, and how wide, in ``available`` cells. O(columns), no data involved.

    1. Hide droppable columns (highest ``drop_rank`` first, rightmost on ties) until the
       minimum widths fit.
    2. If the preferred widths leave room, share it among ``flex`` columns; if they do
       not fit, shrink columns towards their ``min_width`` in proportion to how far each
       may shrink. Should even that not fit (a very narrow terminal), the table scrolls.
    """
    sep = len(_SEPARATOR)

    def span(widths: list[int]) -> int:
        return sum(widths) + sep * max(0, len(widths) - 1)

    shown = list(columns)
    while span([c.narrowest for c in shown]) > available:
        droppable = [(c.drop_rank, index) for index, c in enumerate(shown) if c.drop_rank > 0]
        if not droppable:
            break
        del shown[max(droppable)[1]]
    widths = [c.width for c in shown]
    spare = available - span(widths)
    if spare > 0:
        weights = [c.flex for c in shown]
        total_flex = sum(weights)
        if total_flex:
            grown = [spare * weight // total_flex for weight in weights]
            left = spare - sum(grown)
            for index, weight in enumerate(weights):  # rounding leftovers, one cell each, left to right
                if left <= 0:
                    break
                if weight:
                    grown[index] += 1
                    left -= 1
            widths = [w + g for w, g in zip(widths, grown)]
    elif spare < 0:
        slack = [c.width - c.narrowest for c in shown]
        total_slack = sum(slack)
        deficit = min(-spare, total_slack)
        if deficit:
            cuts = [deficit * s // total_slack for s in slack]
            left = deficit - sum(cuts)
            for index in sorted(range(len(shown)), key=lambda i: -(slack[i] - cuts[i])):
                if left <= 0:
                    break
                if cuts[index] < slack[index]:
                    cuts[index] += 1
                    left -= 1
            widths = [w - c for w, c in zip(widths, cuts)]
    return list(zip(shown, widths))


def _safe_cell(value: str | Text) -> Text:
    """A cell as literal Text with control characters replaced (``printable`` is 1:1, spans survive)."""
    if isinstance(value, Text):
        plain = value.plain
        cleaned = printable(plain)
        if cleaned == plain:
            return value
        return Text(cleaned, style=value.style, spans=list(value.spans), end="")
    return Text(printable(value), end="")


def _fit(text: Text, width: int) -> Text:
    """Pad or crop ``text`` to exactly ``width`` cells (wide characters counted as two)."""
    length = cell_len(text.plain)
    if length == width:
        return text
    if length < width:
        padded = text.copy()
        padded.append(" " * (width - length))
        return padded
    # Crop with an ellipsis; set_cell_size never splits a wide character.
    cropped = Text(set_cell_size(text.plain, max(0, width - 1)) + "…", style=text.style, end="")
    for span in text.spans:
        if span.start < len(cropped.plain):
            cropped.spans.append(span)
    return cropped


class VirtualTable(ScrollView, can_focus=True):
    """Rows from a :data:`PageFetcher`, fetched a page at a time as they scroll into view."""

    COMPONENT_CLASSES = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--placeholder",
    }

    DEFAULT_CSS = """
    VirtualTable { height: 1fr; background: $surface; scrollbar-size-vertical: 1; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $panel; color: $text; }
    VirtualTable > .virtual-table--cursor { background: $boost; text-style: bold; }
    VirtualTable:focus > .virtual-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    VirtualTable > .virtual-table--placeholder { color: $text-muted; }
    """

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, init=False)

    # ------------------------------------------------------------ messages
    class _TableMessage(Message):
        """A message about one table; ``control`` lets ``@on(..., "#id")`` select it."""

        def __init__(self, table: "VirtualTable") -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> "VirtualTable":
            return self.table

    class RowHighlighted(_TableMessage):
        def __init__(self, table: "VirtualTable", index: int, row: Any) -> None:
            super().__init__(table)
            self.index = index
            self.row = row

    class RowSelected(_TableMessage):
        def __init__(self, table: "VirtualTable", index: int, row: Any) -> None:
            super().__init__(table)
            self.index = index
            self.row = row

    class Loaded(_TableMessage):
        def __init__(self, table: "VirtualTable", total: int) -> None:
            super().__init__(table)
            self.total = total

    class LoadFailed(_TableMessage):
        def __init__(self, table: "VirtualTable", error: BaseException) -> None:
            super().__init__(table)
            self.error = error

    class ColumnsChanged(_TableMessage):
        """The set of shown columns changed (the widget was resized); ``keys`` are the shown ones."""

        def __init__(self, table: "VirtualTable", keys: tuple[str, ...]) -> None:
            super().__init__(table)
            self.keys = keys

    # ------------------------------------------------------------ set-up
    def __init__(
        self,
        columns: list[Column],
        fetch: PageFetcher | None = None,
        *,
        page_size: int = 100,
        empty_text: str = "No rows",
        max_pages: int = 64,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self.page_size = max(1, page_size)
        self.empty_text = empty_text
        self.max_pages = max(2, max_pages)
        self.sort_key: str | None = None
        self.sort_descending = False
        self._fetch = fetch
        self._total: int | None = None
        self._generation = 0  # bumped by set_fetch/reload: answers from older generations are stale
        self._pages: OrderedDict[int, list[Any]] = OrderedDict()  # LRU, most recent last
        self._page_generation: dict[int, int] = {}
        self._inflight: set[int] = set()
        self._failed: set[int] = set()
        self._wanted: set[int] = set()
        self._request_scheduled = False
        # Laid out for one width at a time; until the widget knows its width, at preferred widths.
        self._layout: list[tuple[Column, int]] = [(c, c.width) for c in self.columns]
        self._layout_width: int | None = None
        self._row_width = self._span(self._layout)
        self._update_virtual_size()

    def on_mount(self) -> None:
        super().on_mount()
        if self._fetch is not None:
            self._want(0)

    # ------------------------------------------------------------ public API
    @property
    def total(self) -> int | None:
        """Rows the last answer said exist, or None before the first answer."""
        return self._total

    def set_fetch(self, fetch: PageFetcher) -> None:
        """A new query: forget every cached row, put the cursor on the first row and load."""
        self._fetch = fetch
        self._generation += 1
        self.workers.cancel_group(self, _PAGE_GROUP)
        self._pages.clear()
        self._page_generation.clear()
        self._inflight.clear()
        self._failed.clear()
        self._total = None
        self._update_virtual_size()
        self.set_reactive(VirtualTable.cursor_row, 0)
        self.scroll_to(0, 0, animate=False, immediate=True)
        self._want(0)
        self.refresh()

    def reload(self) -> None:
        """Fetch the visible rows again, keeping the cursor; old rows stay on screen until replaced."""
        if self._fetch is None:
            return
        self._generation += 1
        self.workers.cancel_group(self, _PAGE_GROUP)
        self._inflight.clear()
        self._failed.clear()
        # Keep only the visible pages (shown stale until the new answer lands).
        visible = set(self._visible_pages()) | {0}
        for page in list(self._pages):
            if page not in visible:
                del self._pages[page]
                self._page_generation.pop(page, None)
        for page in sorted(visible):
            self._want(page)
        self.refresh()

    def row_at(self, index: int) -> Any | None:
        """The cached row at ``index``, or None if it is not loaded."""
        if index < 0:
            return None
        rows = self._pages.get(index // self.page_size)
        if rows is None:
            return None
        offset = index % self.page_size
        return rows[offset] if offset < len(rows) else None

    def set_sort(self, key: str | None, descending: bool = False) -> None:
        """Show the sort indicator on ``key``'s header (the caller re-queries with :meth:`set_fetch`)."""
        self.sort_key = key
        self.sort_descending = descending
        self.refresh_line(self.scroll_offset.y)  # the header is always screen line 0

    @property
    def shown_columns(self) -> tuple[str, ...]:
        """Keys of the columns on screen at the current width, left to right."""
        return tuple(column.key for column, _width in self._layout)

    def shows(self, key: str) -> bool:
        return any(column.key == key for column, _width in self._layout)

    def visible_rows(self) -> range:
        """Indexes of the rows currently on screen (for lazy per-row extras)."""
        first = int(self.scroll_offset.y)
        total = self._total or 0
        return range(first, min(total, first + self._body_height))

    # ------------------------------------------------------------ paging
    def _update_virtual_size(self) -> None:
        rows = self._total if self._total is not None else 1
        # +1 for the header line, which is drawn on screen line 0 whatever the scroll.
        self.virtual_size = Size(self._row_width, max(rows, 1) + 1)

    @property
    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _visible_pages(self) -> range:
        first = int(self.scroll_offset.y)
        last = first + self._body_height - 1
        return range(first // self.page_size, last // self.page_size + 1)

    def _want(self, page: int) -> None:
        """Ask for ``page`` once: requests are batched and never duplicated while in flight."""
        if self._fetch is None or page < 0 or page in self._inflight or page in self._failed:
            return
        if page in self._pages and self._page_generation.get(page) == self._generation:
            return
        self._wanted.add(page)
        if not self._request_scheduled:
            self._request_scheduled = True
            self.call_later(self._start_requests)

    def _start_requests(self) -> None:
        self._request_scheduled = False
        wanted, self._wanted = self._wanted, set()
        visible = set(self._visible_pages())
        for page in sorted(wanted):
            if page in self._inflight or self._fetch is None:
                continue
            # A page that scrolled away before its turn is not worth a request.
            if page not in visible and page != 0 and self._total is not None:
                continue
            self._inflight.add(page)
            self.run_worker(
                self._load_page(page, self._generation, self._fetch),
                group=_PAGE_GROUP,
                exit_on_error=False,
                description=f"page {page}",
            )

    async def _load_page(self, page: int, generation: int, fetch: PageFetcher) -> None:
        try:
            total, rows = await fetch(page * self.page_size, self.page_size)
        except Exception as error:  # noqa: BLE001 - any failure is shown, never raised into the app
            if generation == self._generation:
                self._inflight.discard(page)
                self._failed.add(page)
                self.refresh()
                self.post_message(self.LoadFailed(self, error))
            return
        if generation != self._generation:
            return  # an answer to an older query or reload: drop it
        self._inflight.discard(page)
        self._store_page(page, list(rows))
        total_changed = total != self._total
        self._total = total
        if total_changed:
            self._update_virtual_size()
            if self.cursor_row >= max(total, 1):
                self.cursor_row = max(0, total - 1)
        self.refresh()
        self.post_message(self.Loaded(self, total))
        if page == self.cursor_row // self.page_size:
            self._post_highlighted()

    def _store_page(self, page: int, rows: list[Any]) -> None:
        self._pages[page] = rows
        self._pages.move_to_end(page)
        self._page_generation[page] = self._generation
        # Evict the least recently drawn pages, never one that is on screen.
        visible = set(self._visible_pages())
        for old in list(self._pages):
            if len(self._pages) <= self.max_pages:
                break
            if old not in visible:
                del self._pages[old]
                self._page_generation.pop(old, None)

    # ------------------------------------------------------------ layout
    @staticmethod
    def _span(layout: list[tuple[Column, int]]) -> int:
        return sum(width for _column, width in layout) + len(_SEPARATOR) * max(0, len(layout) - 1)

    def _relayout(self) -> bool:
        """Fit the columns to the current width (cheap; does nothing if the width is unchanged)."""
        width = self.scrollable_content_region.width
        if width <= 0 or width == self._layout_width:
            return False
        self._layout_width = width
        before = self.shown_columns
        self._layout = fit_columns(self.columns, width)
        row_width = self._span(self._layout)
        if row_width != self._row_width:
            self._row_width = row_width
            self._update_virtual_size()
        if self.shown_columns != before:
            # Created in the table's own turn: made here (often inside the compositor's render), the
            # message's sender would be the screen, and bubbling would stop there.
            self.call_later(self._post_columns_changed)
        return True

    def _post_columns_changed(self) -> None:
        self.post_message(self.ColumnsChanged(self, self.shown_columns))

    def on_resize(self, event: events.Resize) -> None:
        if self._relayout():
            self.refresh()

    # ------------------------------------------------------------ drawing
    def render_line(self, y: int) -> Strip:
        # A scrollbar appearing narrows the content without a Resize: catch it here (an int compare).
        if self._relayout():
            self.call_after_refresh(self.refresh)  # lines already drawn used the old widths
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            line = self._render_header()
        else:
            line = self._render_row(scroll_y + y - 1)
        if line is None:
            return Strip.blank(width, base)
        strip = Strip(line.render(self.app.console), cell_length=None)
        strip = strip.apply_style(base) if base else strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _render_header(self) -> Text:
        style = self.get_component_rich_style("virtual-table--header")
        cells: list[Text] = []
        for column, width in self._layout:
            label = column.label
            if column.key == self.sort_key:
                label = f"{label} {'▼' if self.sort_descending else '▲'}"
            cells.append(_fit(Text(label, end=""), width))
        line = Text(_SEPARATOR, end="").join(cells)
        line.stylize(style)
        return self._full_width(line, style)

    def _render_row(self, index: int) -> Text | None:
        total = self._total
        if total is None:
            if index != 0:
                return None
            return self._placeholder(_LOADING)
        if total == 0:
            return self._placeholder(Text(self.empty_text, end="")) if index == 0 else None
        if index >= total:
            return None
        page = index // self.page_size
        rows = self._pages.get(page)
        if rows is None or self._page_generation.get(page) != self._generation:
            self._want(page)
        if rows is None:
            return self._placeholder(_FAILED if page in self._failed else _LOADING, cursor=index == self.cursor_row)
        self._pages.move_to_end(page)
        offset = index % self.page_size
        if offset >= len(rows):
            return self._placeholder(_LOADING, cursor=index == self.cursor_row)
        row = rows[offset]
        cells: list[Text] = []
        for column, width in self._layout:  # only the shown columns are rendered
            try:
                value = column.render(row)
            except Exception:  # noqa: BLE001 - one odd row must not take the table down
                value = "?"
            cells.append(_fit(_safe_cell(value if value is not None else ""), width))
        line = Text(_SEPARATOR, end="").join(cells)
        if index == self.cursor_row:
            style = self.get_component_rich_style("virtual-table--cursor")
            line.stylize(style)
            return self._full_width(line, style)
        return line

    def _placeholder(self, text: Text, *, cursor: bool = False) -> Text:
        style = self.get_component_rich_style("virtual-table--placeholder")
        line = text.copy()
        line.stylize(style)
        if cursor:
            cursor_style = self.get_component_rich_style("virtual-table--cursor")
            line.stylize(cursor_style)
            return self._full_width(line, cursor_style)
        return line

    def _full_width(self, line: Text, style: Style) -> Text:
        """Extend a styled line (header, cursor) across the whole widget."""
        width = max(self._row_width, self.scrollable_content_region.width)
        missing = width - cell_len(line.plain)
        if missing > 0:
            line.append(" " * missing, style)
        return line

    # ------------------------------------------------------------ cursor
    def validate_cursor_row(self, value: int) -> int:
        total = self._total or 0
        return max(0, min(value, total - 1)) if total else 0

    def watch_cursor_row(self, old: int, new: int) -> None:
        # Only the two changed lines are repainted, not the viewport.
        self._refresh_row(old)
        self._refresh_row(new)
        self._scroll_to_cursor()
        self._post_highlighted()

    def _refresh_row(self, index: int) -> None:
        screen_y = index - int(self.scroll_offset.y) + 1
        if 1 <= screen_y <= self._body_height:
            self.refresh(Region(0, screen_y, self.size.width, 1))

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_offset.y)
        height = self._body_height
        row = self.cursor_row
        # force: right after the first page lands the scrollbar is not laid out yet, and
        # without it Textual ignores the scroll (seen as a flaky jump to the end).
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True, force=True)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True, force=True)

    def _post_highlighted(self) -> None:
        if self._total:
            self.post_message(self.RowHighlighted(self, self.cursor_row, self.row_at(self.cursor_row)))

    def on_focus(self) -> None:
        self._refresh_row(self.cursor_row)

    def on_blur(self) -> None:
        self._refresh_row(self.cursor_row)

    # ------------------------------------------------------------ actions
    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_page_up(self) -> None:
        self.cursor_row -= self._body_height

    def action_page_down(self) -> None:
        self.cursor_row += self._body_height

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = (self._total or 1) - 1

    def action_scroll_left(self) -> None:
        self.scroll_to(x=max(0, self.scroll_offset.x - 8), animate=False, immediate=True)

    def action_scroll_right(self) -> None:
        self.scroll_to(x=self.scroll_offset.x + 8, animate=False, immediate=True)

    def action_select(self) -> None:
        if not self._total:
            return
        row = self.row_at(self.cursor_row)
        if row is not None:
            self.post_message(self.RowSelected(self, self.cursor_row, row))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1 or not self._total:
            return
        index = int(self.scroll_offset.y) + event.y - 1
        if index >= self._total:
            return
        if index == self.cursor_row and event.chain >= 2:
            self.action_select()
        self.cursor_row = index
