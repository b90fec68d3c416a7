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

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from math import ceil
from typing import Any, Self, cast
from weakref import WeakSet

from rich.cells import cell_len, set_cell_size
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Vertical, VerticalScroll
from textual.filter import LineFilter
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from ...client import CURSOR_END
from ...safe_text import printable
from ..startup import collect_while_idle

PageFetcher = Callable[[int, int], Awaitable[tuple[int, list[Any]]]]
"""``(skip, limit) -> (totalCount, rows)``: plain offset paging (any list API)."""

END = CURSOR_END
"""``before=END``: the last rows of the listing (the wire contract's ``before=end``)."""


@dataclass(frozen=True)
class PageRequest:
    """What the table asks a :data:`CursorFetcher` for: the rows ``skip .. skip+limit-1`` of the list.

    With ``after`` the server walks ``offset`` rows on from the row that cursor names; with
    ``before`` (a cursor or :data:`END`) it answers the ``limit`` rows that end ``offset`` rows
    before it, in the list's order. Without either it is plain ``skip``/``limit``. ``count``:
    whether the total must be counted (not once it is known: counting a million rows costs).
    """

    skip: int
    limit: int
    after: str | None = None
    before: str | None = None
    offset: int = 0
    count: bool = True

    @property
    def walk(self) -> int:
        """Rows the server steps over to answer (what a request costs at depth)."""
        return self.offset if (self.after or self.before) else self.skip


@dataclass
class PageAnswer:
    """A :data:`CursorFetcher`'s answer. ``total`` is None when it was not counted; ``cursors``
    says whether the source speaks cursors at all (an older server does not: skip/limit only)."""

    total: int | None
    rows: list[Any]
    start_cursor: str | None = None
    end_cursor: str | None = None
    cursors: bool = False


CursorFetcher = Callable[[PageRequest], Awaitable[PageAnswer]]
"""``PageRequest -> PageAnswer``: keyset paging; mark it with :func:`cursor_fetcher`."""


def cursor_fetcher(fetch: CursorFetcher) -> CursorFetcher:
    """Mark ``fetch`` as taking a :class:`PageRequest` (a plain :data:`PageFetcher` takes skip, limit)."""
    vars(fetch)["takes_page_request"] = True  # a function attribute (vars: typed, where the dot form is not)
    return fetch


async def _ask(fetch: PageFetcher | CursorFetcher, request: PageRequest) -> PageAnswer:
    if getattr(fetch, "takes_page_request", False):
        return await cast(CursorFetcher, fetch)(request)
    total, rows = await cast(PageFetcher, fetch)(request.skip, request.limit)
    return PageAnswer(total, list(rows))


RowKey = Callable[[Any], Hashable | None]
"""row -> its identity (kept highlighted across reloads), or None when it has none."""

RowDetails = Callable[[Any], list[tuple[str, "str | Text"]]]
"""row -> ``(label, value)`` lines for the row-details modal."""


def default_row_key(row: Any) -> Hashable | None:
    """A row's ``id`` attribute (API models) or ``"id"`` key (mappings), else None."""
    if isinstance(row, Mapping):
        value = row.get("id")
    else:
        value = getattr(row, "id", None)
    return value if isinstance(value, Hashable) else None


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
    # Higher keeps its width longer: when space is short, lower-priority columns shrink to their minimum
    # first (identity columns such as username and email get a higher priority, so they stay readable).
    priority: int = 0

    @property
    def narrowest(self) -> int:
        if self.min_width is None:
            return self.width
        return max(1, min(self.min_width, self.width))


def fit_columns(columns: list[Column], available: int, *, roomy: bool = False) -> list[tuple[Column, int]]:
    """Which columns to show, and how wide, in ``available`` cells. O(columns), no data involved.

    1. Hide droppable columns (highest ``drop_rank`` first, rightmost on ties) until the
       minimum widths fit (preferred widths for columns with a ``priority``) (``roomy``: until the preferred widths fit, and never the first
       column; used when the table is scrolled sideways to bring that column in whole).
    2. If the preferred widths leave room, share it among ``flex`` columns; if they do
       not fit, shrink columns towards their ``min_width`` in proportion to how far each
       may shrink. Should even that not fit (a very narrow terminal), the table scrolls.
    """
    sep = len(_SEPARATOR)

    def span(widths: list[int]) -> int:
        return sum(widths) + sep * max(0, len(widths) - 1)

    # A column with a priority is never squeezed below its preferred width to make room for a
    # droppable one: the droppable one goes first.
    shown = list(columns)
    while span([c.width if roomy or c.priority > 0 else c.narrowest for c in shown]) > available:
        droppable = [
            (c.drop_rank, index) for index, c in enumerate(shown) if c.drop_rank > 0 and not (roomy and index == 0)
        ]
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
            widths = [w + g for w, g in zip(widths, grown, strict=True)]
    elif spare < 0:
        deficit = -spare
        # Lowest priority first; within one priority, in proportion to how far each may shrink.
        for level in sorted({c.priority for c in shown}):
            if deficit <= 0:
                break
            members = [i for i, c in enumerate(shown) if c.priority == level]
            slack = {i: widths[i] - shown[i].narrowest for i in members}
            total_slack = sum(slack.values())
            cut_total = min(deficit, total_slack)
            if not cut_total:
                continue
            cuts = {i: cut_total * slack[i] // total_slack for i in members}
            left = cut_total - sum(cuts.values())
            for index in sorted(members, key=lambda i: -(slack[i] - cuts[i])):
                if left <= 0:
                    break
                if cuts[index] < slack[index]:
                    cuts[index] += 1
                    left -= 1
            for index in members:
                widths[index] -= cuts[index]
            deficit -= cut_total
    return list(zip(shown, widths, strict=True))


# Drawing ahead: a PgDn or End paints a screen of rows not drawn yet (36 at 140x40, ~0.2 ms each,
# most of its frame). Once no frame has been painted for DRAW_AHEAD_AFTER seconds (the keys rest),
# the rows the next key most likely shows are drawn into the line cache, DRAW_AHEAD_STEP rows per
# turn of the event loop, so a key arriving meanwhile waits ~1-2 ms at most; the cache keeps
# LINES_KEPT_SCREENS screens of lines (the view, the next and the previous screen, the last).
DRAW_AHEAD_AFTER = 0.03
DRAW_AHEAD_STEP = 8
LINES_KEPT_SCREENS = 4


def _safe_cell(value: str | Text) -> Text:
    """A cell as literal Text with control characters replaced (``printable`` is 1:1, spans survive)."""
    if isinstance(value, Text):
        plain = value.plain
        cleaned = printable(plain)
        if cleaned == plain:
            return value
        return Text(cleaned, style=value.style, spans=list(value.spans), end="")
    return Text(printable(value), end="")


def _fit_plain(plain: str, width: int) -> str:
    """:func:`_fit` for an unstyled string: exactly ``width`` cells."""
    # ASCII after printable() has no control characters left: one cell each (most names and emails).
    length = len(plain) if plain.isascii() else cell_len(plain)
    if length == width:
        return plain
    if length < width:
        return plain + " " * (width - length)
    return set_cell_size(plain, max(0, width - 1)) + "…"


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


class _TableScrollBar(ScrollBar):
    """A vertical scrollbar that hands back the lines it drew while its thumb stays on the same cells.

    Over a million rows the thumb moves one eighth of a cell every few thousand rows, but Textual's
    scrollbar redraws all its lines at every scroll (its position changed), through Rich and the
    styles cache: a third of the console's CPU for a PgDn. Returning the same Strips also lets the
    compositor's own caches on them hit.
    """

    _drawn: tuple[tuple[object, ...], list[Strip]] | None = None
    _line_key: tuple[object, ...] = ()
    _line_strips: dict[Segment, Strip] = {}

    def _thumb(self) -> tuple[int, int] | None:
        """Where ScrollBarRender puts the thumb, in eighths of a cell (None: no thumb)."""
        window = ceil(self.window_size if self.window_size < self.window_virtual_size else 0)
        virtual = ceil(self.window_virtual_size)
        size = self.size.height if self.vertical else self.size.width
        if not (window and size and virtual and size != virtual):
            return None
        thumb = max(1, window / (virtual / size))
        start = int((size - thumb) * (self.position / (virtual - window)) * len(ScrollBarRender.VERTICAL_BARS))
        return start, start + ceil(thumb * len(ScrollBarRender.VERTICAL_BARS))

    def render_lines(self, crop: Region) -> list[Strip]:
        if self.renderer is not ScrollBarRender:
            return super().render_lines(crop)
        parent = self.parent
        styles = parent.styles if isinstance(parent, Widget) else None
        key = (
            crop,
            self.size,
            self._thumb(),
            self.thickness,
            self.grabbed is not None,
            self.mouse_over,
            # what ScrollBar.render reads for its colours
            None if styles is None else (styles.scrollbar_background, styles.scrollbar_color),
            None if styles is None else (styles.scrollbar_background_hover, styles.scrollbar_color_hover),
            None if styles is None else (styles.scrollbar_background_active, styles.scrollbar_color_active),
            None if not isinstance(parent, Widget) else parent.background_colors,
            self.screen.styles.scrollbar_color,
        )
        drawn = self._drawn
        if drawn is not None and drawn[0] == key:
            return drawn[1]
        # The thumb moved (End, Home, a long scroll): the bar has only a few kinds of line (track above,
        # track below, thumb, its eighth-cell ends), each drawn once through Textual and then reused.
        lines = self._bar_segments() if crop == Region(0, 0, *self.size) else None
        if self._line_key != key[1:2] + key[3:]:  # all but the crop and the thumb
            self._line_key = key[1:2] + key[3:]
            self._line_strips = {}
        known = self._line_strips
        strips: list[Strip] | None = None
        if lines is not None:
            found = [known.get(segment) for segment in lines]
            if all(strip is not None for strip in found):
                strips = cast(list[Strip], found)
        if strips is None:
            strips = super().render_lines(crop)
            if lines is not None and len(lines) == len(strips) and len(known) < 64:
                known.update(zip(lines, strips, strict=True))
        self._drawn = (key, strips)
        return strips

    def _bar_segments(self) -> list[Segment] | None:
        """The segment of each line of the bar, as ScrollBarRender makes them (None: not that case)."""
        if not self.vertical or self.screen.styles.scrollbar_color.a == 0:
            return None
        bar = self.render()
        if not isinstance(bar, ScrollBarRender):
            return None
        style = bar.style if isinstance(bar.style, Style) else self.app.console.get_style(bar.style)
        segments = bar.render_bar(
            size=self.size.height,
            window_size=bar.window_size,
            virtual_size=bar.virtual_size,
            position=bar.position,
            vertical=True,
            thickness=self.size.width,
            back_color=style.bgcolor or RichColor.parse("#555555"),
            bar_color=style.color or RichColor.parse("bright_magenta"),
        )
        return [segment for segment in segments.segments if segment.text != "\n"]


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
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
        Binding("enter", "select", "Open", show=False),
        Binding("i", "row_details", "Row details"),
    ]

    # repaint=False: a move repaints the two lines that changed (watch_cursor_row), not the whole table.
    cursor_row: reactive[int] = reactive(0, init=False, repaint=False)
    # Mirrors of the load state for watchers such as :class:`TablePosition` (no repaint of their own).
    row_count: reactive[int | None] = reactive(None, init=False, repaint=False)
    load_failed: reactive[bool] = reactive(False, init=False, repaint=False)

    # ------------------------------------------------------------ messages
    class _TableMessage(Message):
        """A message about one table; ``control`` lets ``@on(..., "#id")`` select it."""

        def __init__(self, table: VirtualTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> VirtualTable:
            return self.table

    class RowHighlighted(_TableMessage):
        def __init__(self, table: VirtualTable, index: int, row: Any) -> None:
            super().__init__(table)
            self.index = index
            self.row = row

    class RowSelected(_TableMessage):
        def __init__(self, table: VirtualTable, index: int, row: Any) -> None:
            super().__init__(table)
            self.index = index
            self.row = row

    class Loaded(_TableMessage):
        """A page was answered. ``shown``: it is on screen (False for one fetched ahead of the view)."""

        def __init__(self, table: VirtualTable, total: int, shown: bool = True) -> None:
            super().__init__(table)
            self.total = total
            self.shown = shown

    class LoadFailed(_TableMessage):
        def __init__(self, table: VirtualTable, error: BaseException) -> None:
            super().__init__(table)
            self.error = error

    class ColumnsChanged(_TableMessage):
        """The set of shown columns changed (the widget was resized); ``keys`` are the shown ones."""

        def __init__(self, table: VirtualTable, keys: tuple[str, ...]) -> None:
            super().__init__(table)
            self.keys = keys

    # ------------------------------------------------------------ set-up
    def __init__(
        self,
        columns: list[Column],
        fetch: PageFetcher | CursorFetcher | None = None,
        *,
        page_size: int = 100,
        empty_text: str = "No rows",
        max_pages: int = 32,  # 3,200 rows of 100: ~90 screens to scroll back through; ~3 KB a user model
        prefetch: bool = False,
        row_key: RowKey | None = default_row_key,
        details: RowDetails | None = None,
        details_title: Callable[[Any], str] | None = None,
        on_select: Callable[[VirtualTable.RowSelected], object] | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        # Enter's handler, called while the key is handled (not by message, which the next typed-ahead key
        # would overtake): a screen it pushes is on top before that key is routed, so `Enter V` asks for
        # the code on the user Enter opened. Without one, RowSelected is posted.
        self._on_select = on_select
        self.columns = list(columns)
        self.page_size = max(1, page_size)
        self.empty_text = empty_text
        self.max_pages = max(2, max_pages)
        # Prefetch: the pages just above and below the view and the last page are asked for before a
        # key needs them, so Down/PgDn/End repaint from the cache (one frame) instead of "loading…".
        self.prefetch = prefetch
        self.prefetch_end = True  # with prefetch: the last page too (End), not only the view's neighbours
        self.max_ahead = 8  # prefetched pages not drawn yet (kept apart from the LRU of drawn pages)
        self.sort_key: str | None = None
        self.sort_descending = False
        self._fetch = fetch
        self.row_key = row_key  # None: reloads keep the cursor's index only
        self._details = details
        self._details_title = details_title
        self._total: int | None = None
        # The highlighted row's identity while a reload is answered: (key, old index, screen line, pages to look in).
        self._anchor: tuple[Hashable, int, int | None, frozenset[int]] | None = None
        self._moving = False  # the table itself moves the cursor (an anchor found): not the user
        self.first_column = 0  # columns scrolled off to the left with the right arrow
        self._generation = 0  # bumped by set_fetch/reload: answers from older generations are stale
        self._pages: OrderedDict[int, list[Any]] = OrderedDict()  # LRU, most recent last
        self._ahead: OrderedDict[int, list[Any]] = OrderedDict()  # prefetched, not drawn yet; oldest first
        self._page_generation: dict[int, int] = {}
        # Keyset paging: (start, end) cursors of pages seen in this query (tiny, kept after the rows
        # are evicted, so scrolling back asks "after"/"before" a neighbour instead of a deep skip).
        self._cursors: OrderedDict[int, tuple[str | None, str | None]] = OrderedDict()
        self._keyset = False  # the source answered with cursors (kept across queries: same server)
        self._tail: tuple[int, PageAnswer] | None = None  # (generation, the last rows) until the total is known
        self._recount = False  # a reload: count again with the first page
        self._inflight: set[int] = set()
        self._failed: set[int] = set()
        self._wanted: set[int] = set()
        self._request_scheduled = False  # a call to _start_requests is on its way (soon, or after the frame)
        self._request_soon = False  # ... and it is the soon one (a page on screen is wanted)
        # Keys typed ahead of the rows they act on (a move before a new query's total is in, Enter on a
        # row still loading), in order: replayed as the answers land, never dropped for being early.
        self._held: list[Callable[[], None]] = []
        self._replaying = False
        self._query_coming = False  # hold_keys(): every key waits for the query its owner is about to set
        # Laid out for one width at a time; until the widget knows its width, at preferred widths.
        self._layout: list[tuple[Column, int]] = [(c, c.width) for c in self.columns]
        self._layout_version = 0  # bumped whenever _layout changes: cached lines drawn before are stale
        # Drawn lines of rows on and near the screen: index -> (row object, layout version, Strip).
        # Scrolling a line or a screen back redraws from here; a full refresh() clears it (new data,
        # device details, a clock), and the cursor's line is never cached.
        self._line_cache: OrderedDict[int, tuple[Any, int, Strip]] = OrderedDict()
        # Rows drawn ahead into that cache once the keys rest (see _schedule_draw_ahead).
        self._draw_ahead_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._draw_ahead_queue: list[int] = []
        self._finish: tuple[int, Style, tuple[LineFilter, ...], Color] | None = None
        self._header_cache: tuple[tuple[int, str | None, bool, int], Strip] | None = None
        self._base_style: Style | None = None
        self._layout_width: int | None = None
        self._row_width = self._span(self._layout)
        self._virtual_rows = 1  # rows the virtual size counts (the last known total)
        self._update_virtual_size()
        self._followers: WeakSet[Widget] = WeakSet()  # labels painted with the rows (TablePosition)
        self._view_key: tuple[Size, bool, bool] | None = None
        self._cell_styles: dict[tuple[str | Style, Style | None], Style | None] = {}  # (cell style, base) -> combined
        self._view_size = (0, 0)
        self._frame_view: tuple[int, int] | None = None  # _view() while render_lines runs

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """Textual's vertical scrollbar, as :class:`_TableScrollBar` (created on first use, as Textual does)."""
        if self._vertical_scrollbar is not None:
            return self._vertical_scrollbar
        self._vertical_scrollbar = scroll_bar = _TableScrollBar(
            vertical=True, name="vertical", thickness=self.scrollbar_size_vertical
        )
        scroll_bar.display = False
        self.app._start_widget(self, scroll_bar)
        return scroll_bar

    def on_unmount(self) -> None:
        if self._draw_ahead_handle is not None:
            self._draw_ahead_handle.cancel()
            self._draw_ahead_handle = None

    def on_mount(self) -> None:
        super().on_mount()  # type: ignore[no-untyped-call]  # Textual's ScrollView.on_mount is unannotated
        if self._fetch is not None:
            self._want(0)

    # ------------------------------------------------------------ public API
    @property
    def total(self) -> int | None:
        """Rows the last answer said exist, or None before the first answer."""
        return self._total

    def add_follower(self, widget: Widget) -> None:
        """Repaint ``widget`` (a label about the rows) in the same frame as the rows a key moves."""
        self._followers.add(widget)

    @property
    def pages_held(self) -> list[int]:
        """The numbers of the pages held in memory, least recently used first."""
        return list(self._pages)

    def set_fetch(self, fetch: PageFetcher | CursorFetcher, *, keep_cursor: bool = False) -> None:
        """A new query: forget every cached row, put the cursor on the first row and load.

        ``keep_cursor=True`` is a complete re-query of the same list instead (see :meth:`reload`).
        """
        if keep_cursor:
            self.reload(fetch)
            return
        self._fetch = fetch
        self._anchor = None
        if self._query_coming:  # the keys held were typed for this query (see hold_keys)
            self._query_coming = False
        else:
            self._held.clear()  # keys typed before this query acted on the old one (the cursor starts at row 1)
        self._generation += 1
        self.workers.cancel_group(self, _PAGE_GROUP)
        self._pages.clear()
        self._ahead.clear()
        self._page_generation.clear()
        self._cursors.clear()
        self._tail = None
        self._recount = False
        self._inflight.clear()
        self._failed.clear()
        self._set_total(None)
        self.load_failed = False
        self._update_virtual_size()
        self.set_reactive(VirtualTable.cursor_row, 0)
        self.scroll_to(0, 0, animate=False, immediate=True)
        self._want(0)
        if self.prefetch and self.prefetch_end and self._keyset:
            # A server that pages by cursor answers "the last rows" without the total: asked beside the
            # first page, so End after a new sort or filter is in the cache as soon as the total is.
            # A callable, not a coroutine: a worker cancelled before it starts leaves no un-awaited coroutine.
            self.run_worker(
                partial(self._load_tail, self._generation, fetch),  # type: ignore[arg-type]
                group=_PAGE_GROUP,
                exit_on_error=False,
                description="last rows",
            )
        self.refresh()

    def reload(self, fetch: PageFetcher | CursorFetcher | None = None) -> None:
        """Fetch the total and the rows on screen again (with ``fetch``, a new source for the same list).

        The highlight stays on the same row, found by :attr:`row_key` in the pages loaded around the
        cursor (a row that moved, e.g. because newer rows arrived above it, is followed, on the same
        screen line); if it is gone, the cursor keeps its index. Old rows stay on screen until replaced.
        """
        if fetch is not None:
            self._fetch = fetch
        if self._fetch is None:
            return
        self._generation += 1
        self._held.clear()
        self.workers.cancel_group(self, _PAGE_GROUP)
        self._inflight.clear()
        self._failed.clear()
        self._ahead.clear()
        self._recount = True  # the total is counted again, with the first page
        # Rows may have come or gone above any page: a cursor still names its row, but no longer the
        # row at a page's edge. Pages are asked by position (and cursors collected) afresh.
        self._cursors.clear()
        self.load_failed = False
        cursor_page, offset = divmod(self.cursor_row, self.page_size)
        # The highlighted row is looked for in its page, and in the next or previous one when it is
        # within a screen of that page's edge (rows arriving above push it down; one extra request
        # per reload only then).
        around = {cursor_page}
        reach = self._body_height
        if offset < reach:
            around.add(cursor_page - 1)
        if offset >= self.page_size - reach:
            around.add(cursor_page + 1)
        if self._total is not None:
            around = {page for page in around if 0 <= page * self.page_size < self._total}
        else:
            around = {0}
        self._anchor = None
        row = self.row_at(self.cursor_row) if self._total else None
        key = self._key_of(row) if row is not None else None
        if key is not None:
            screen_line = self.cursor_row - int(self.scroll_offset.y)
            self._anchor = (key, self.cursor_row, screen_line, frozenset(around))
        # Keep only the visible pages (shown stale until the new answer lands).
        wanted = set(self._visible_pages()) | {0} | around
        for page in list(self._pages):
            if page not in wanted:
                del self._pages[page]
                self._page_generation.pop(page, None)
        for page in sorted(wanted):
            self._want(page)
        self.refresh()

    def hold_keys(self) -> None:
        """Hold the keys that move or open, in order, for a query about to be set: until the next
        :meth:`set_fetch` has its rows, or :meth:`release_keys` (no new query after all)."""
        self._query_coming = True

    def release_keys(self) -> None:
        """No new query is coming after :meth:`hold_keys`: the held keys act on the rows there are."""
        if self._query_coming:
            self._query_coming = False
            self._replay_held()

    def row_at(self, index: int) -> Any | None:
        """The cached row at ``index``, or None if it is not loaded."""
        if index < 0:
            return None
        page = index // self.page_size
        rows = self._pages.get(page)
        if rows is None:
            rows = self._ahead.get(page)
            if rows is None or self._page_generation.get(page) != self._generation:
                return None
        offset = index % self.page_size
        return rows[offset] if offset < len(rows) else None

    def set_sort(self, key: str | None, descending: bool = False) -> None:
        """Show the sort indicator on ``key``'s header (the caller re-queries with :meth:`set_fetch`)."""
        self.sort_key = key
        self.sort_descending = descending
        self.refresh_line(self.scroll_offset.y)  # the header is always screen line 0

    def position(self) -> tuple[int, int] | None:
        """``(cursor row counted from 1, total)`` once the total is known (``(0, 0)`` when empty)."""
        if self._total is None:
            return None
        return (self.cursor_row + 1 if self._total else 0), self._total

    def position_label(self, noun: str, suffix: str = "") -> str:
        """``users 37/20,000`` (k9s style): what :class:`TablePosition` shows."""
        where = self.position()
        if where is None:
            return f"{noun}: not loaded" if self.load_failed else f"{noun}: loading…"
        index, total = where
        if not total:
            return f"{noun} 0{suffix}"
        return f"{noun} {index:,}/{total:,}{suffix}"

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
    def _key_of(self, row: Any) -> Hashable | None:
        if self.row_key is None:
            return None
        try:
            return self.row_key(row)
        except Exception:  # noqa: BLE001 - an odd row just is not followed
            return None

    def _set_total(self, total: int | None) -> None:
        self._total = total
        self.row_count = total

    def _update_virtual_size(self) -> None:
        # While a new query's total is unknown the extent stays as it was: a re-sort or a filter of
        # the same list (mostly the same count) then changes no size. Each size change lays out the
        # whole screen and hides and shows the scrollbar, which re-fits the columns: four layouts,
        # 60-150 ms on a busy machine, in the frames after `S` (End or PgDn waited for them).
        if self._total is not None:
            self._virtual_rows = self._total
        rows = self._virtual_rows
        # +1 for the header line, which is drawn on screen line 0 whatever the scroll.
        self.virtual_size = Size(self._row_width, max(rows, 1) + 1)

    def _view(self) -> tuple[int, int]:
        """(width, height) of the scrolled content area: ``scrollable_content_region``'s size, kept.

        That property looks the widget up in the screen's compositor on every read; a repaint read
        it several times per line (about a tenth of a PgDn's time). It only changes with the
        widget's size, its scrollbars or its styles.
        """
        if self._frame_view is not None:
            return self._frame_view
        key = (self.outer_size, self.show_vertical_scrollbar, self.show_horizontal_scrollbar)
        if key != self._view_key:
            gutter = self.gutter
            size = key[0]
            self._view_size = (max(0, size.width - gutter.width), max(0, size.height - gutter.height))
            self._view_key = key
        return self._view_size

    @property
    def _body_height(self) -> int:
        return max(1, self._view()[1] - 1)

    def _visible_pages(self) -> range:
        first = int(self.scroll_offset.y)
        last = first + self._body_height - 1
        return range(first // self.page_size, last // self.page_size + 1)

    def _want(self, page: int) -> None:
        """Ask for ``page`` once: requests are batched and never duplicated while in flight."""
        if self._fetch is None or page < 0 or page in self._inflight or page in self._failed:
            return
        if self._page_generation.get(page) == self._generation and (page in self._pages or page in self._ahead):
            return
        self._wanted.add(page)
        if page in self._visible_pages():
            if not self._request_soon:
                self._request_scheduled = self._request_soon = True
                self.call_later(self._start_requests)
        elif not self._request_scheduled:
            # Only pages fetched ahead: asked for once this frame is painted, so that a quick answer (and
            # its parsing) never lands between a key and its frame (End: 9.3 ms of console CPU per key
            # on SQLite, where answers come back within the frame, against 6.7 on PostgreSQL).
            self._request_scheduled = True
            self.call_after_refresh(self._start_requests)

    def _start_requests(self) -> None:
        self._request_scheduled = self._request_soon = False
        wanted, self._wanted = self._wanted, set()
        visible = set(self._visible_pages())
        ahead = self._prefetch_pages()
        # Pages on screen first: a page fetched ahead then waits for its neighbour's cursor.
        for page in sorted(wanted, key=lambda p: (p not in visible, p)):
            if page in self._inflight or self._fetch is None:
                continue
            # A page that scrolled away before its turn is not worth a request (unless a reload
            # looks for the highlighted row in it, or it is one the keys may need next).
            anchor_pages = self._anchor[3] if self._anchor is not None else frozenset()
            if page not in visible and page != 0 and self._total is not None and page not in anchor_pages:
                if page not in ahead:
                    continue
                if self._keyset and (page - 1 in self._inflight or page + 1 in self._inflight):
                    continue  # asked once its neighbour's cursor is in: after/before it, no walk at all
            request = self._plan(page)
            self._inflight.add(page)
            self.run_worker(
                partial(self._load_page, page, self._generation, self._fetch, request),  # type: ignore[arg-type]
                group=_PAGE_GROUP,
                exit_on_error=False,
                description=f"page {page}",
            )

    def _plan(self, page: int) -> PageRequest:
        """The cheapest request for ``page``: after/before a neighbour's cursor, else from the nearest
        known cursor (or the end), else plain skip/limit (the first page, or a source without cursors)."""
        size = self.page_size
        skip = page * size
        total = self._total
        count = total is None or (page == 0 and self._recount)
        plain = PageRequest(skip, size, count=count)
        if page == 0 or not self._keyset:
            return plain
        before_page = self._cursors.get(page - 1)
        if before_page is not None and before_page[1]:
            return PageRequest(skip, size, after=before_page[1], count=count)
        after_page = self._cursors.get(page + 1)
        if after_page is not None and after_page[0]:
            return PageRequest(skip, size, before=after_page[0], count=count)
        if total is not None and skip < total and page == (total - 1) // size:
            return PageRequest(skip, total - skip, before=END, count=count)
        best = plain
        for known, (start, end) in self._cursors.items():
            if known < page and end:
                candidate = PageRequest(skip, size, after=end, offset=(page - known - 1) * size, count=count)
            elif known > page and start:
                candidate = PageRequest(skip, size, before=start, offset=(known - page - 1) * size, count=count)
            else:
                continue
            if candidate.walk < best.walk:
                best = candidate
        if total is not None and total - skip - size >= 0:
            candidate = PageRequest(skip, size, before=END, offset=total - skip - size, count=count)
            if candidate.walk < best.walk:
                best = candidate
        return best

    def _prefetch_pages(self) -> set[int]:
        """Pages the next keys may show: a few screens above and below the view, and the last page(s)."""
        total = self._total
        if not self.prefetch or not total or self._recount:
            return set()  # (a reload: once the total is counted again, the last page is where it says)
        size = self.page_size
        height = self._body_height
        top = int(self.scroll_offset.y)
        margin = 3 * height  # PgDn moves a screen: two or three in a row still land in the cache
        first = max(0, top - margin)
        last = min(total - 1, top + height - 1 + margin)
        pages = set(range(first // size, last // size + 1))
        # End and Home repaint at once from anywhere: the first page, the last, and the one before
        # the last when the last holds less than a screen.
        pages.add(0)
        if self.prefetch_end:
            pages.add((total - 1) // size)
            pages.add(max(0, total - height) // size)
        return pages

    def _prefetch(self) -> None:
        for page in self._prefetch_pages():
            self._want(page)

    async def _load_tail(self, generation: int, fetch: PageFetcher | CursorFetcher) -> None:
        try:
            answer = await _ask(fetch, PageRequest(0, self.page_size, before=END, count=False))
        except Exception:  # noqa: BLE001 - only a head start: the page is asked for again as usual
            return
        if generation == self._generation and answer.cursors:
            self._tail = (generation, answer)
            self._place_tail()

    def _place_tail(self) -> None:
        """Keep the last page out of the early "last rows" answer, once the total says where it starts."""
        if self._tail is None or self._total is None or self._tail[0] != self._generation:
            return
        answer = self._tail[1]
        self._tail = None
        total, size = self._total, self.page_size
        last = (total - 1) // size if total else 0
        count = total - last * size
        if last == 0 or len(answer.rows) < count:
            return  # one page in all, or the list changed meanwhile: the usual request does it
        if self._page_generation.get(last) == self._generation and (last in self._pages or last in self._ahead):
            return
        # Kept even while the usual request for that page is in flight (prefetch asks for it once the
        # total is known): End then paints from here instead of waiting for that second answer.
        rows = list(answer.rows[-count:])
        self._cursors[last] = (answer.start_cursor if count == len(answer.rows) else None, answer.end_cursor)
        self._wanted.discard(last)
        if self._store_page(last, rows):
            self.refresh()  # End was pressed before it came: its rows replace "loading…" now
        self._replay_held()  # Enter typed on the last row before it came

    async def _load_page(
        self, page: int, generation: int, fetch: PageFetcher | CursorFetcher, request: PageRequest
    ) -> None:
        try:
            answer = await _ask(fetch, request)
        except Exception as error:  # noqa: BLE001 - any failure is shown, never raised into the app
            if generation == self._generation:
                self._inflight.discard(page)
                self._failed.add(page)
                self.load_failed = True
                self._replay_held()  # what waited for this page acts on what there is (or nothing)
                if self._total is None:  # nothing to scroll through: no extent kept from the last query
                    self._virtual_rows = 1
                    self._update_virtual_size()
                self._settle_anchor()
                self.refresh()
                self.post_message(self.LoadFailed(self, error))
            return
        if generation != self._generation:
            return  # an answer to an older query or reload: drop it
        self._inflight.discard(page)
        rows = list(answer.rows)
        total = answer.total
        if total is None:
            # Not counted (the total was known): unchanged, unless this answer proves it wrong.
            total = self._total if self._total is not None else request.skip + len(rows)
            if len(rows) < request.limit and request.before is None:
                total = request.skip + len(rows)
        elif request.count:
            self._recount = False
        if rows and not answer.cursors:
            self._keyset = False  # an older server (or source): skip/limit only
        if answer.cursors:
            self._keyset = True
            if rows:
                self._cursors[page] = (answer.start_cursor, answer.end_cursor)
                self._cursors.move_to_end(page)
                while len(self._cursors) > 4 * self.max_pages + 64:
                    self._cursors.popitem(last=False)
        shown = self._store_page(page, rows)
        total_changed = total != self._total
        self._set_total(total)
        self._place_tail()
        self.load_failed = bool(self._failed)
        if total_changed:
            self._update_virtual_size()
            if self.cursor_row >= max(total, 1):
                self._move_cursor(max(0, total - 1))
        moved = self._settle_anchor()
        moved = self._replay_held() or moved
        if shown or total_changed or moved:
            self.refresh()  # a page fetched ahead of the view is drawn when it scrolls in
        self.post_message(self.Loaded(self, total, shown or total_changed or moved))
        if not moved and page == self.cursor_row // self.page_size:
            self._post_highlighted()
        if self.prefetch:
            self._prefetch()  # sent now (answered while this one paints), parsed when they arrive

    def _settle_anchor(self) -> bool:
        """After a reload's answer: put the cursor back on the highlighted row if it is found.

        Returns whether the cursor moved. Gives up (the index stays) once every page it looks in
        has answered without that row.
        """
        anchor = self._anchor
        if anchor is None:
            return False
        key, _old_index, screen_line, pages = anchor
        fresh = [p for p in sorted(pages) if p in self._pages and self._page_generation.get(p) == self._generation]
        for page in fresh:
            for offset, row in enumerate(self._pages[page]):
                if self._key_of(row) == key:
                    self._anchor = None
                    index = page * self.page_size + offset
                    if index == self.cursor_row:
                        return False
                    self._move_cursor(index, screen_line)
                    return True
        if all(p in self._failed or p in fresh for p in pages) or self._total == 0:
            self._anchor = None
        return False

    def _move_cursor(self, index: int, screen_line: int | None = None) -> None:
        """Move the cursor for the table's own reasons (not the user's), optionally on ``screen_line``."""
        self._moving = True
        try:
            if screen_line is not None:
                top = max(0, index - max(0, min(screen_line, self._body_height - 1)))
                self.scroll_to(y=top, animate=False, immediate=True, force=True)
            self.cursor_row = index
        finally:
            self._moving = False

    def _store_page(self, page: int, rows: list[Any]) -> bool:
        """Keep a fetched page; returns whether it is on screen. One fetched ahead of the view waits
        in a small buffer of its own, so prefetching never evicts pages the user has looked at."""
        self._page_generation[page] = self._generation
        visible = set(self._visible_pages())
        if page in visible or page in self._pages or not self.prefetch:
            self._ahead.pop(page, None)
            self._keep_drawn(page, rows, visible)
            return page in visible
        self._ahead[page] = rows
        self._ahead.move_to_end(page)
        if len(self._ahead) > self.max_ahead:
            pinned = self._prefetch_pages()
            for old in list(self._ahead):
                if len(self._ahead) <= self.max_ahead:
                    break
                if old not in pinned:
                    del self._ahead[old]
        return False

    def _keep_drawn(self, page: int, rows: list[Any], visible: set[int]) -> None:
        self._pages[page] = rows
        self._pages.move_to_end(page)
        # Evict the least recently drawn pages, never one that is on screen.
        for old in list(self._pages):
            if len(self._pages) <= self.max_pages:
                break
            if old not in visible:
                del self._pages[old]
                if old not in self._ahead:
                    self._page_generation.pop(old, None)

    # ------------------------------------------------------------ layout
    @staticmethod
    def _span(layout: list[tuple[Column, int]]) -> int:
        return sum(width for _column, width in layout) + len(_SEPARATOR) * max(0, len(layout) - 1)

    def _relayout(self, force: bool = False) -> bool:
        """Fit the columns to the current width (cheap; does nothing if the width is unchanged)."""
        width = self._view()[0]
        if width <= 0 or (width == self._layout_width and not force):
            return False
        self._layout_width = width
        before = self.shown_columns
        self.first_column = max(0, min(self.first_column, len(self.columns) - 1))
        self._layout = fit_columns(self.columns[self.first_column :], width, roomy=self.first_column > 0)
        self._layout_version += 1
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
    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Self:
        if not regions:
            self._line_cache.clear()  # a full repaint is asked for because something shown changed
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._view_key = None  # a gutter or scrollbar size may have changed
        self._cell_styles.clear()
        self._base_style = None
        self._header_cache = None
        self._line_cache.clear()

    def render_lines(self, crop: Region) -> list[Strip]:
        """The lines in ``crop``, each the *same* Strip object as long as its row is unchanged.

        Textual's styles cache wraps every line it renders in a new Strip, so the line filter
        (truecolour), the compositor's cut and the escape sequences were all redone for every row on
        screen at each scroll, although only one row was new (a Down that scrolls: 38 rows). With no
        border, padding, outline, tint, hatch or opacity that wrapping changes nothing, and returning
        our cached strip lets those steps hit the caches Textual keeps on each Strip. Anything else
        takes Textual's own path.
        """
        self._frame_view = None
        self._frame_view = self._view()  # read once per frame, not several times per line
        try:
            return self._render_lines(crop)
        finally:
            self._frame_view = None
            self._schedule_draw_ahead()

    def _render_lines(self, crop: Region) -> list[Strip]:
        styles = self.styles
        if (
            self._border_title is not None
            or self._border_subtitle is not None
            or any(styles.gutter)
            or any(edge for edge, _color in styles.outline)
            or styles.tint.a
            or self.opacity != 1.0
            or styles.text_opacity != 1.0
            or (styles.has_rule("hatch") and styles.hatch != "none")
        ):
            return super().render_lines(crop)
        width = self.region.width
        base_background, background = self.background_colors
        fill = self._styles_cache.get_inner_outer(base_background, background)[0].rich_style  # as Textual pads
        filters = self.get_line_filters()
        self._finish = (width, fill, tuple(filters), background)  # for the rows drawn ahead (_warm)
        strips: list[Strip] = []
        for y in crop.line_range:
            strip = self.render_line(y).adjust_cell_length(width, fill)
            for line_filter in filters:
                strip = strip.apply_filter(line_filter, background)
            strips.append(strip)
        if crop.column_span != (0, width):
            x1, x2 = crop.column_span
            strips = [strip.crop(x1, x2) for strip in strips]
        return strips

    def render_line(self, y: int) -> Strip:
        # A scrollbar appearing narrows the content without a Resize: catch it here (an int compare).
        if self._relayout():
            self.call_after_refresh(self.refresh)  # lines already drawn used the old widths
        scroll_x, scroll_y = self.scroll_offset
        width = self._view()[0]
        base = self._base_style
        if base is None:
            base = self._base_style = self.rich_style
        strip = self._header_strip(base) if y == 0 else self._row_strip(int(scroll_y) + y - 1, base)
        if strip is None:
            return Strip.blank(width, base)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _text_strip(self, line: Text, base: Style) -> Strip:
        strip = Strip(line.render(self.app.console), cell_length=None)
        return strip.apply_style(base) if base else strip

    def _header_strip(self, base: Style) -> Strip:
        key = (self._layout_version, self.sort_key, self.sort_descending, self._view()[0])
        if self._header_cache is not None and self._header_cache[0] == key:
            return self._header_cache[1]
        strip = self._text_strip(self._render_header(), base)
        self._header_cache = (key, strip)
        return strip

    def _page_rows(self, page: int) -> list[Any] | None:
        """The rows of ``page`` to draw (None while missing); a missing or stale page is asked for."""
        rows = self._pages.get(page)
        if rows is None and page in self._ahead:
            rows = self._ahead.pop(page)  # fetched ahead, now on screen: it joins the drawn pages
            self._keep_drawn(page, rows, set(self._visible_pages()))
        if rows is None or self._page_generation.get(page) != self._generation:
            self._want(page)
        return rows

    def _row_strip(self, index: int, base: Style) -> Strip | None:
        """Row ``index`` drawn (from the line cache when it is unchanged), a placeholder, or None."""
        total = self._total
        if total is None or total == 0 or index >= total or index < 0:
            line = self._render_row(index)
            return None if line is None else self._text_strip(line, base)
        page = index // self.page_size
        rows = self._page_rows(page)
        cursor = index == self.cursor_row
        offset = index % self.page_size
        if rows is None or offset >= len(rows):
            failed = rows is None and page in self._failed
            return self._text_strip(self._placeholder(_FAILED if failed else _LOADING, cursor=cursor), base)
        self._pages.move_to_end(page)
        row = rows[offset]
        if not cursor:
            return self._plain_row_strip(index, row, base)
        segments = self._row_segments(row, base)
        length = self._row_width
        style = self.get_component_rich_style("virtual-table--cursor")
        segments = list(Segment.apply_style(segments, post_style=style))
        full = max(length, self._view()[0])
        if full > length:
            segments.append(Segment(" " * (full - length), base + style if base else style))
            length = full
        return Strip(segments, length)

    def _cached_line(self, index: int, row: Any) -> Strip | None:
        """Row ``index``'s line from the line cache, if drawn from this very row in the current layout."""
        cached = self._line_cache.get(index)
        return cached[2] if cached is not None and cached[0] is row and cached[1] == self._layout_version else None

    def _plain_row_strip(self, index: int, row: Any, base: Style) -> Strip:
        """Row ``index`` (not the cursor's) from the line cache, drawn and kept there on a miss."""
        cached = self._cached_line(index, row)
        if cached is not None:
            self._line_cache.move_to_end(index)
            return cached
        strip = Strip(self._row_segments(row, base), self._row_width)
        self._line_cache[index] = (row, self._layout_version, strip)
        if len(self._line_cache) > LINES_KEPT_SCREENS * self._body_height + 8:
            self._line_cache.popitem(last=False)
        return strip

    # ------------------------------------------------------------ drawing ahead, while keys rest
    def _schedule_draw_ahead(self) -> None:
        """(Re)start the wait for the keys to rest; called as the rows are painted."""
        if self._draw_ahead_handle is not None:
            self._draw_ahead_handle.cancel()
        self._draw_ahead_queue = []
        # The event loop's own timer, not a Textual one: this runs at every frame (a handle, no task).
        self._draw_ahead_handle = asyncio.get_running_loop().call_later(DRAW_AHEAD_AFTER, self._draw_ahead_start)

    def _draw_ahead_targets(self) -> list[int]:
        """Rows the next key most likely shows, nearest first: a line down and up, the next screen
        (PgDn), the last (End) and the previous one (PgUp). With the view's own lines that is the
        line cache's LINES_KEPT_SCREENS screens, so none of them pushes another out."""
        total = self._total or 0
        top = int(self.scroll_offset.y)
        height = self._body_height
        order = [top + height, top - 1, *range(top + height + 1, top + 2 * height)]
        order += range(max(0, total - height), total)
        order += range(top - 2, top - height - 1, -1)
        return [index for index in order if 0 <= index < total and not top <= index < top + height]

    def _warm(self, strip: Strip, base: Style) -> None:
        """Take a row drawn ahead through what the frame showing it will do, as the last frame did:
        render_line's crop, _render_lines' padding and filters, the compositor's cut at the other
        widgets' edges (the scrollbar's) and the escape sequences. Each step keeps its result on the
        Strip it was given, so that frame finds them done (half of a PgDn's frame otherwise). Should
        anything differ by then (a scroll sideways, a new style), those caches simply miss."""
        finish = self._finish
        if finish is None:
            return
        width, fill, filters, background = finish
        scroll_x = int(self.scroll_offset.x)
        line = strip.crop_extend(scroll_x, scroll_x + self._view()[0], base).adjust_cell_length(width, fill)
        for line_filter in filters:
            line = line.apply_filter(line_filter, background)
        # Only what the compositor has worked out already (its own properties would work it out and
        # keep it, from a map that may be about to change).
        compositor = self.screen._compositor
        visible, lines_cuts = compositor._visible_widgets, compositor._cuts
        geometry = None if visible is None or lines_cuts is None else visible.get(self)
        if lines_cuts is None or geometry is None:
            return
        region = geometry[0].intersection(geometry[1])
        if region.height < 2 or region.y + 1 >= len(lines_cuts):
            return
        first, last = region.column_span
        cuts = [cut for cut in lines_cuts[region.y + 1] if last >= cut >= first]  # a row's screen line
        console = self.app.console
        for piece in line.divide([cut - region.x for cut in cuts[1:]]):
            piece.render(console)

    def _draw_ahead_start(self) -> None:
        self._draw_ahead_handle = None
        if not self.is_attached or not self._total or self._layout_width is None or self._base_style is None:
            return
        self._draw_ahead_queue = self._draw_ahead_targets()
        self._draw_ahead_step()  # (and then the collector, when its turn is near)

    def _draw_ahead_step(self) -> None:
        """Draw a few rows into the line cache, then yield to the event loop (a key waits one step at most)."""
        self._draw_ahead_handle = None
        queue = self._draw_ahead_queue
        base = self._base_style
        if base is None or not self.is_attached:
            return
        drawn = 0
        while queue and drawn < DRAW_AHEAD_STEP:
            index = queue.pop(0)
            row = self.row_at(index)  # only rows already fetched: drawing ahead never asks for a page
            if row is None or index == self.cursor_row:
                continue
            if self._cached_line(index, row) is not None:
                continue
            self._warm(self._plain_row_strip(index, row, base), base)
            drawn += 1
        if queue:
            self._draw_ahead_handle = asyncio.get_running_loop().call_soon(self._draw_ahead_step)
        elif not self.app.is_headless:  # a terminal session (tests run many apps to a process)
            collect_while_idle()

    def _row_segments(self, row: Any, base: Style | None = None) -> list[Segment]:
        """One row as segments, each cell exactly its width: no Rich Text built for plain cells.

        ``base`` (the widget's own style) is built into each segment's style here, rather than
        applied to the finished line as a second Strip (a Strip costs more than the segments).
        Neighbouring cells of one style (most of a row, separators included) make one segment:
        Textual writes every segment as its own escape sequence (~45 bytes of colour each), and
        the compositor, its filters and the terminal pay per segment too (a scrolled 140x40
        screen was ~29 KB, 17 segments a row)."""
        console = self.app.console
        segments: list[Segment] = []
        if not base:
            base = None
        styles = self._cell_styles
        run: list[str] = []  # texts of the run in ``run_style``, not yet a segment
        run_style: Style | None = base

        def add(text: str, style: Style | None) -> None:
            nonlocal run_style
            if style is not run_style and style != run_style:
                if run:
                    segments.append(Segment("".join(run), run_style))
                    run.clear()
                run_style = style
            run.append(text)

        first = True
        for column, width in self._layout:  # only the shown columns are rendered
            if not first:
                add(_SEPARATOR, base)
            first = False
            try:
                value = column.render(row)
            except Exception:  # noqa: BLE001 - one odd row must not take the table down
                value = "?"
            if value is None:
                value = ""
            if isinstance(value, Text):
                if value.spans:  # styled parts: Rich does the work (rare)
                    cell = _fit(_safe_cell(value), width).render(console)
                    for segment in cell if base is None else Segment.apply_style(cell, base):
                        add(segment.text, segment.style)
                    continue
                key = (value.style, base)
                combined = styles.get(key)
                if combined is None and key not in styles:
                    style = console.get_style(value.style) if isinstance(value.style, str) else value.style
                    if base is not None:
                        combined = base + style if style else base
                    else:
                        combined = style or None
                    if len(styles) > 256:
                        styles.clear()
                    styles[key] = combined
                add(_fit_plain(printable(value.plain), width), combined)
            else:
                add(_fit_plain(printable(value), width), base)
        if run:
            segments.append(Segment("".join(run), run_style))
        return segments

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
        """Row ``index`` as Rich Text (placeholders, and what a test reads); the screen draws rows
        through :meth:`_row_strip`, which builds the same cells as segments, and caches them."""
        total = self._total
        if total is None:
            if index != 0:
                return None
            # The first page failed: say so (beside the error banner), not "loading…" for ever.
            return self._placeholder(_FAILED if 0 in self._failed else _LOADING)
        if total == 0:
            return self._placeholder(Text(self.empty_text, end="")) if index == 0 else None
        if index >= total:
            return None
        page = index // self.page_size
        rows = self._page_rows(page)
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
                value = column.render(row)  # a render callable written without types may still answer None
            except Exception:  # noqa: BLE001 - one odd row must not take the table down
                value = "?"
            cells.append(_fit(_safe_cell(value if value is not None else ""), width))  # type: ignore[redundant-expr]
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
        width = max(self._row_width, self._view()[0])
        missing = width - cell_len(line.plain)
        if missing > 0:
            line.append(" " * missing, style)
        return line

    # ------------------------------------------------------------ cursor
    def validate_cursor_row(self, value: int) -> int:
        total = self._total or 0
        return max(0, min(value, total - 1)) if total else 0

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.prefetch and self._total:
            self._prefetch()  # the pages around the new view are asked for (cheap when they are cached)

    def watch_cursor_row(self, old: int, new: int) -> None:
        if not self._moving:
            self._anchor = None  # the user moved while a reload was answered: their move wins
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

    def _paint_together(self) -> None:
        """Hand this move's repaints to the screen now: the rows, the scrollbar and the position label.

        Textual passes a widget's repaint to its screen when that widget's own message queue next
        goes idle, and the screen paints as soon as the first one arrives: a PgDn drew the rows in
        one frame and `users 37/20,000` in a second one, after the first had been rendered (two
        frames per key, measured in tmux). Handed over together here, they make one frame.
        """
        for widget in (self, self._vertical_scrollbar, *self._followers):
            if widget is not None:
                widget._check_refresh()

    # ------------------------------------------------------------ actions
    def _move_to(self, index: int) -> None:
        self.cursor_row = index
        self._paint_together()

    def _waits(self, action: Callable[[], None]) -> bool:
        """Whether ``action`` (a key's) must wait for rows still being fetched to act as the typist meant.

        A move needs the total (before it, every index is clamped to row 1: End after a re-sort landed
        there); Enter needs the highlighted row itself. A page that failed makes nothing wait: the key
        acts on what there is, as it would once the error shows.
        """
        if self._query_coming:
            return True
        if self._fetch is None:
            return False
        if self._total is None:
            return 0 not in self._failed
        if action == self.action_select and self._total:
            page = self.cursor_row // self.page_size
            if self.row_at(self.cursor_row) is None and page not in self._failed:
                self._want(page)
                return True
        return False

    def _held_back(self, action: Callable[[], None]) -> bool:
        """Queue ``action`` behind the keys already waiting, or when it must wait itself; True when queued."""
        if self._replaying or not (self._held or self._waits(action)):
            return False
        self._held.append(action)
        return True

    def _replay_held(self) -> bool:
        """Run the keys typed ahead whose rows are in, in order; returns whether any ran."""
        ran = False
        while self._held and not self._waits(self._held[0]):
            action = self._held.pop(0)
            self._replaying = True
            try:
                action()
            finally:
                self._replaying = False
            ran = True
        return ran

    def action_cursor_up(self) -> None:
        if not self._held_back(self.action_cursor_up):
            self._move_to(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        if not self._held_back(self.action_cursor_down):
            self._move_to(self.cursor_row + 1)

    def action_page_up(self) -> None:
        if not self._held_back(self.action_page_up):
            self._move_to(self.cursor_row - self._body_height)

    def action_page_down(self) -> None:
        if not self._held_back(self.action_page_down):
            self._move_to(self.cursor_row + self._body_height)

    def action_first(self) -> None:
        if not self._held_back(self.action_first):
            self._move_to(0)

    def action_last(self) -> None:
        if not self._held_back(self.action_last):
            self._move_to((self._total or 1) - 1)

    @property
    def hidden_right(self) -> bool:
        """Some column right of the shown ones is hidden (the right arrow brings it in)."""
        shown = set(self.shown_columns)
        return any(c.key not in shown for c in self.columns[self.first_column :])

    def action_scroll_left(self) -> None:
        """Back towards the first column: a column at a time (or cells, on a table wider than the widget)."""
        if self.scroll_offset.x > 0:
            self.scroll_to(x=max(0, self.scroll_offset.x - 8), animate=False, immediate=True)
        elif self.first_column > 0:
            self.first_column -= 1
            self._scrolled_columns()

    def action_scroll_right(self) -> None:
        """Hide the leftmost column so that columns dropped for width come in, header included."""
        if self._row_width > self._view()[0]:
            self.scroll_to(x=self.scroll_offset.x + 8, animate=False, immediate=True)
        elif self.hidden_right and self.first_column < len(self.columns) - 1:
            self.first_column += 1
            self._scrolled_columns()

    def _scrolled_columns(self) -> None:
        self.scroll_to(x=0, animate=False, immediate=True)
        self._relayout(force=True)
        self.refresh()

    def action_row_details(self) -> None:
        """The whole highlighted row in a modal: every column, uncropped."""
        row = self.row_at(self.cursor_row) if self._total else None
        if row is None:
            self.app.notify("No row to show yet", severity="warning", markup=False)
            return
        if self._details is not None:
            lines = self._details(row)
        else:
            lines = []
            for column in self.columns:
                try:
                    value = column.render(row)  # a render callable written without types may still answer None
                except Exception:  # noqa: BLE001
                    value = "?"
                lines.append((column.label, value if value is not None else ""))  # type: ignore[redundant-expr]
        title = self._details_title(row) if self._details_title is not None else "Row details"
        self.app.push_screen(RowDetailsScreen(title, lines))

    def action_select(self) -> None:
        if self._held_back(self.action_select) or not self._total:
            return
        row = self.row_at(self.cursor_row)
        if row is None:
            return
        selected = self.RowSelected(self, self.cursor_row, row)
        if self._on_select is not None:
            self._on_select(selected)
        else:
            self.post_message(selected)

    def on_click(self, event: events.Click) -> None:
        if event.y < 1 or not self._total:
            return
        index = int(self.scroll_offset.y) + event.y - 1
        if index >= self._total:
            return
        if index == self.cursor_row and event.chain >= 2:
            self.action_select()
        self._move_to(index)


class RowDetailsScreen(ModalScreen[None]):
    """One row, every field whole (nothing cropped), as ``label  value`` lines. Esc, i, q or Enter closes."""

    DEFAULT_CSS = """
    RowDetailsScreen { align: center middle; }
    RowDetailsScreen > Vertical {
        width: 90; max-width: 100%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    RowDetailsScreen #row-details-title { text-style: bold; }
    RowDetailsScreen VerticalScroll { height: auto; max-height: 100%; }
    RowDetailsScreen #row-details-hint { color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape,i,q,enter", "close", "Close"),
    ]

    def __init__(self, title: str, lines: list[tuple[str, str | Text]]) -> None:
        super().__init__()
        self.title_text = printable(title)
        self.lines = [(printable(label), _safe_cell(value)) for label, value in lines]

    def compose(self) -> ComposeResult:
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in self.lines:
            grid.add_row(Text(label, end=""), value)
        with Vertical():
            yield Static(Text(self.title_text), id="row-details-title")
            with VerticalScroll():
                yield Static(grid, id="row-details-body")
            yield Static(Text("Esc closes"), id="row-details-hint")

    def text(self) -> str:
        """Every line as plain text (for tests and screen readers)."""
        return "\n".join(f"{label}: {value.plain}" for label, value in self.lines)

    def action_close(self) -> None:
        self.dismiss(None)


class TablePosition(Static):
    """``users 37/20,000``: the cursor's row and the row count of a :class:`VirtualTable`, kept current.

    ``table`` is a selector of the table on the same screen; ``suffix`` (e.g. `` match``) can be
    changed at any time. Any screen can put one where it shows its count.
    """

    DEFAULT_CSS = "TablePosition { width: auto; }"

    def __init__(
        self, table: str, noun: str, *, suffix: str = "", id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("", markup=False, id=id, classes=classes)
        self._selector = table
        self._shown_width = -1
        self._shown: tuple[str, str] | None = None
        self._css_min_width = 0
        self._held = 0  # the widest position shown since the total changed, kept by a min-width
        self._width_total: int | None = None
        self.noun = noun
        self._suffix = suffix
        self._table: VirtualTable | None = None

    @property
    def suffix(self) -> str:
        return self._suffix

    @suffix.setter
    def suffix(self, value: str) -> None:
        if value != self._suffix:
            self._suffix = value
            self.update_position()

    def on_mount(self) -> None:
        minimum = self.styles.min_width
        self._css_min_width = (minimum.cells or 0) if minimum is not None and minimum.is_cells else 0
        self.call_after_refresh(self._bind)

    def _bind(self) -> None:
        table = self.screen.query_one(self._selector, VirtualTable)
        self._table = table
        table.add_follower(self)  # repainted in the same frame as the rows a key moves
        self.watch(table, "cursor_row", self.update_position, init=False)
        self.watch(table, "row_count", self.update_position, init=False)
        self.watch(table, "load_failed", self.update_position)

    def update_position(self, *_: object) -> None:
        if self._table is None:
            return
        label = self._table.position_label(self.noun, self._suffix)
        style = "dim" if self._table.total is None else ""
        if (label, style) == self._shown:
            return  # unchanged (a page landed, the toolbar was refreshed): no repaint
        self._shown = (label, style)
        # A cursor move changes digits, rarely the width: only a new width needs a layout pass
        # (one per key re-laid and repainted the whole screen, several frames' worth of work). While
        # the total stays the same the widget keeps the widest position it has shown (a min-width set
        # with the growth, in the same layout pass): End, Home and the re-sorts between lay out once,
        # not per key (End from row 1 of a million: 10-20 ms of layout and a whole-screen repaint).
        # "loading…" and "not loaded" are shown at their own width and set no minimum.
        total = self._table.total
        layout = False
        if total is not None and total != self._width_total:
            self._width_total = total
            if self._held:  # another total: the positions' own widths again
                self._held = 0
                self.styles.min_width = None  # (the stylesheet's minimum)
        width = cell_len(label)
        if total is not None and width > self._held and self._shown_width >= 0:
            self._held = width
            self.styles.min_width = max(width + self.styles.gutter.width, self._css_min_width)
        target = max(width, self._held)  # the content width the widget is laid out for
        if target != self._shown_width:
            self._shown_width = target
            layout = True
        self.update(Text(label, style=style), layout=layout)

    @property
    def label(self) -> str:
        return self._table.position_label(self.noun, self._suffix) if self._table is not None else ""
