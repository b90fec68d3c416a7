"""Users: the whole directory in a virtual table, searched, filtered and sorted on the server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Horizontal
from textual.screen import UPDATE_PERIOD
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Static

from ...client import ApiError, user_key_kind
from ...display import (
    enrollment_short,
    enrollment_text,
    short_age,
    stamp_zone,
    user_label,
    user_name,
    user_state_text,
)
from ...models import EnrollmentStatus, PushEndpoint, SystemUser
from ...safe_text import printable
from ..frame_timer import FrameTimer, frame_timer
from ..startup import USERS_DEFAULT_SORT, USERS_PAGE_SIZE
from ..widgets.virtual_table import (
    Column,
    CursorFetcher,
    PageAnswer,
    PageRequest,
    TablePosition,
    VirtualTable,
    cursor_fetcher,
)
from .base import ConsoleScreen

# Seconds of quiet typing before the server is asked: long enough to fold a burst of keys (a paste,
# tmux send-keys, a fast typist) into one query, short enough that the answer paints within ~¼ s
# of the last key now that search is indexed. Older queries are cancelled, in flight included.
SEARCH_DEBOUNCE = 0.05
# A search of one or two characters alone is the one the server cannot index (it scans every user,
# most of a second at a million): it waits until the typist has clearly stopped at it.
SHORT_SEARCH_DEBOUNCE = 0.4
SHORT_SEARCH = 2
DEVICE_DEBOUNCE = 0.3  # seconds the view must rest before device details are fetched
DEVICE_CONCURRENCY = 4
DEVICES_KEPT = 2000  # push devices of the users shown most recently (None: the user has none)


@dataclass(frozen=True)
class MfaFilter:
    label: str
    filters: tuple[str, ...]


MFA_FILTERS: list[MfaFilter] = [
    MfaFilter("all", ()),
    MfaFilter("push enrolled", ("mfaEnrollment.pushStatus:$eq:ENROLLED",)),
    MfaFilter("TOTP enrolled", ("mfaEnrollment.totpStatus:$eq:ENROLLED",)),
    MfaFilter("WebAuthn enrolled", ("mfaEnrollment.webAuthnStatus:$eq:ENROLLED",)),
    MfaFilter("no MFA", ("mfaEnrollment.overallStatus:$eq:NOT_ENROLLED",)),
    MfaFilter("in enrollment", ("mfaEnrollment.overallStatus:$eq:IN_ENROLLMENT",)),
    MfaFilter("push pending", ("mfaEnrollment.pushStatus:$eq:PENDING_ACTIVATION",)),
]

# column key -> server sort field; the order is the `s` cycle (over the columns shown at the current width).
# "name" sorts by last name, then first name, accent- and case-folded on the server (`Ó Briain` among the Os).
SORT_FIELDS: dict[str, str] = {
    "username": "username",
    "name": "lastname",
    "email": "email",
    "state": "state",
    "push": "mfaEnrollment.pushStatus",
    "totp": "mfaEnrollment.totpStatus",
    "webauthn": "mfaEnrollment.webAuthnStatus",
}


class UsersScreen(ConsoleScreen):
    TITLE = "Users"
    # Without this Textual may focus the first focusable widget (the search box) after
    # on_mount has focused the table, and keys meant for the table go into the search.
    AUTO_FOCUS = "#users-table"

    BINDINGS = [
        # A priority binding runs as the key is read, before the keys typed after it are passed on:
        # `/zelda` typed in one burst lands whole in the box, in order.
        Binding("slash", "focus_search", "Search", priority=True),
        Binding("f", "cycle_filter", "MFA filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse"),
        Binding("c", "copy_email", "Copy email", tooltip="Copy the highlighted user's email (OSC 52)"),
        Binding("C", "copy_id", "Copy id", show=False, tooltip="Copy the highlighted user's id (OSC 52)"),
        Binding("down", "results", "Results", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.search_term = ""
        self.filter_index = 0
        self.sort_key = USERS_DEFAULT_SORT
        self.sort_descending = False
        self.devices: LRUCache[str, PushEndpoint | None] = LRUCache(DEVICES_KEPT)
        self._open_single = False  # Enter in the search box: open the user if the answer has exactly one
        self._enter_term: str | None = None  # the term Enter was pressed on, until a user opens for it
        self._had_users = False
        self._frame_timer: FrameTimer | None = None
        self._toolbar_text = ""  # what the filter/sort label shows (set again only when it changes)

    @property
    def _update_timer(self) -> Timer:
        # Paced from the last frame, not Textual's grid (see frame_timer): a key that follows a
        # page landing or a label change by a few ms no longer waits 17-33 ms to start its frame.
        timer = self._frame_timer
        if timer is None:
            timer = self._frame_timer = frame_timer(self, UPDATE_PERIOD, self._on_timer_update, "screen_update")
        return timer

    # ------------------------------------------------------------ layout
    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="users-toolbar"):
            yield Input(placeholder="/ search username, name or email", id="users-search")
            yield Static("", id="users-filter", markup=False)
            yield TablePosition("#users-table", "users", id="users-count")
        yield VirtualTable(
            self._columns(),
            None,
            page_size=USERS_PAGE_SIZE,
            empty_text="No users match",
            id="users-table",
            prefetch=True,
            details=self._details,
            details_title=lambda user: user_label(user),
            on_select=self._open,
        )

    def _columns(self) -> list[Column]:
        def device(user: SystemUser) -> str:
            found = self.devices.get(user.id)
            if found is None:
                return "…" if user.id not in self.devices and _has_push(user) else ""
            return f"{found.device.make} {found.device.model}"

        def last_used(user: SystemUser) -> str:
            found = self.devices.get(user.id)
            return short_age(found.lastUsedDate) if found else ""

        def state(user: SystemUser) -> Text:
            if user.account_locked:
                return Text("locked", style="bold red", end="")  # a word, not an emoji: no font needed
            return user_state_text(user.state)

        # Who it is comes first: Username, Name and Email (priority 1) keep their preferred width and
        # the least needed columns go as the terminal narrows: WebAuthn below ~132 columns, Last used
        # below ~123, Device below ~115, Name below ~99. At 80 columns `agnieszka.anderson` and
        # `agnieszka.anderson@example.com` read whole; → brings the rest in, `i` shows the whole row.
        # Wider, Email, Username, Name and Device grow.
        return [
            Column("username", "Username", 20, lambda u: u.username, sortable=True, min_width=18, flex=1, priority=1),
            Column("name", "Name", 18, user_name, sortable=True, min_width=10, flex=1, drop_rank=1, priority=1),
            Column("email", "Email", 32, lambda u: u.email, sortable=True, min_width=28, flex=2, priority=1),
            Column("state", "State", 9, state, sortable=True),
            Column("push", "Push", 7, lambda u: enrollment_short(u.mfaEnrollment.pushStatus), sortable=True),
            Column("totp", "TOTP", 7, totp_short, sortable=True),
            Column(
                "webauthn",
                "WebAuthn",
                8,
                lambda u: enrollment_short(u.mfaEnrollment.webAuthnStatus),
                sortable=True,
                drop_rank=4,
            ),
            Column("device", "Device", 22, device, min_width=15, flex=1, drop_rank=2),
            Column("last_used", "Last used", 9, last_used, drop_rank=3),
        ]

    def _details(self, user: SystemUser) -> list[tuple[str, str | Text]]:
        """Every field of one user, whole, for the row-details modal (`i`)."""
        lines: list[tuple[str, str | Text]] = [
            ("Username", user.username),
            ("Name", user_name(user)),
            ("Email", user.email),
            ("Id", user.id),
            ("State", ("locked, " if user.account_locked else "") + printable(user.state).lower()),
            ("Push", enrollment_text(user.mfaEnrollment.pushStatus)),
            ("TOTP", totp_long(user)),
            ("WebAuthn", enrollment_text(user.mfaEnrollment.webAuthnStatus)),
        ]
        found = self.devices.get(user.id)
        if found is not None:
            lines.append(("Device", f"{found.device.make} {found.device.model}"))
            lines.append(("Last used", short_age(found.lastUsedDate) or "never"))
        if user.pushBlock is not None:
            block = user.pushBlock
            lines.append(("Push block", f"until {stamp_zone(block.blockedUntil)} by {block.blockedBy}"))
        lines.append(("Created", stamp_zone(user.created)))
        return lines

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#users-table", VirtualTable)

    def on_mount(self) -> None:
        self._update_toolbar()
        self.watch(self.table, "scroll_y", self._schedule_devices, init=False)
        self.watch(self.table, "cursor_row", self._highlight_moved, init=False)
        self.table.focus()
        self.requery()

    # ------------------------------------------------------------ querying
    def _fetcher(self) -> CursorFetcher:
        """A page source for the current search, filter and sort (the client is looked up per call)."""
        term = self.search_term or None
        filters = list(MFA_FILTERS[self.filter_index].filters)
        field = SORT_FIELDS[self.sort_key]
        sort = f"-{field}" if self.sort_descending else field

        @cursor_fetcher
        async def fetch(request: PageRequest) -> PageAnswer:
            api = self.console_app.api
            skip = request.offset if (request.after or request.before) else request.skip
            page = await api.user_page(
                skip=skip,
                limit=request.limit,
                sort=sort,
                filters=filters,
                search=term,
                after=request.after,
                before=request.before,
                count=request.count,
            )
            return PageAnswer(page.total, page.results, page.start_cursor, page.end_cursor, page.cursors)

        return fetch

    def requery(self) -> None:
        """Point the table at the current search, filter and sort (a fresh query, cursor on the first row)."""
        self.table.set_sort(self.sort_key, self.sort_descending)
        # A search's last page is rarely wanted and costs a second search on the server while the
        # admin may still be typing: only the directory's own listing fetches its end ahead.
        self.table.prefetch_end = not self.search_term
        self.table.set_fetch(self._fetcher())
        self._update_toolbar()

    def reload_data(self) -> None:
        """`r`: a complete re-query (count, rows, devices) that keeps the highlight on the same user.

        Works from any state, a first load that never succeeded (started while the service was
        down) included: nothing of the failed attempt is reused.
        """
        self.devices = LRUCache(DEVICES_KEPT)
        self.table.set_sort(self.sort_key, self.sort_descending)
        self.table.set_fetch(self._fetcher(), keep_cursor=True)
        self._update_toolbar()

    def on_screen_resume(self) -> None:
        # Back from a user's detail: what we changed there shows here, and the highlight stays on that user.
        if self.table.total is not None or self.table.load_failed:
            self.reload_data()

    @on(VirtualTable.Loaded, "#users-table")
    def _loaded(self, event: VirtualTable.Loaded) -> None:
        self.clear_error()
        self._highlight_moved()
        if event.shown:  # not for pages fetched ahead: nothing on screen changed
            self._update_toolbar()
            self._schedule_devices()
        if self._open_single and self.table.total is not None and self.table.row_at(0) is not None:
            self._finish_search_enter()

    @on(VirtualTable.LoadFailed, "#users-table")
    def _load_failed(self, event: VirtualTable.LoadFailed) -> None:
        self._open_single = False
        self.report_error(event.error, self.reload_data)

    def _highlight_moved(self, *_: object) -> None:
        # c / C act on the highlighted user: the footer changes only when the table starts or stops
        # having users, not when the cursor lands on a row still loading (PgDn, End). That flicker
        # recomposed the footer twice per such key, each a layout of the whole screen (~10-25 ms).
        has_users = self._has_users()
        if has_users != self._had_users:
            self._had_users = has_users
            self.refresh_bindings()

    def _has_users(self) -> bool:
        return bool(self.table.total)

    @on(VirtualTable.ColumnsChanged, "#users-table")
    def _columns_changed(self, event: VirtualTable.ColumnsChanged) -> None:
        self._schedule_devices()  # widened: the device columns may have just appeared

    def _open(self, event: VirtualTable.RowSelected) -> None:
        self.console_app.open_user(event.row.id)

    def _update_toolbar(self) -> None:
        mfa = MFA_FILTERS[self.filter_index].label
        arrow = "▼" if self.sort_descending else "▲"
        # Short: the keys (f, s, S) are in the footer, and at 80 columns the search box needs the room.
        text = f"MFA: {mfa} · by {self.sort_key} {arrow}"
        if text != self._toolbar_text:
            # Called for every page that lands on screen: re-setting the same text laid out the whole
            # screen each time (10-30 ms, in the frames right after a sort, when End or PgDn come).
            # A new text of the same width (▲ to ▼) needs a repaint only.
            width = cell_len(text)
            self.query_one("#users-filter", Static).update(Text(text), layout=width != cell_len(self._toolbar_text))
            self._toolbar_text = text
        # `users 37/20,000` (k9s style): the highlighted row and the count, kept current by the widget.
        filtered = bool(self.search_term or self.filter_index)
        self.query_one("#users-count", TablePosition).suffix = " match" if filtered else ""

    # ------------------------------------------------------------ search
    @on(Input.Changed, "#users-search")
    def _search_changed(self, event: Input.Changed) -> None:
        if event.value != self.query_one("#users-search", Input).value:
            return  # a step the box has already moved past (keys typed ahead): only its value now counts
        term = event.value.strip()
        if term != self.search_term:
            self._open_single = False  # a different search than the one Enter was pressed on
            self._enter_term = None
        self._debounced_search(term)

    @work(exclusive=True, group="users-search", exit_on_error=False)
    async def _debounced_search(self, term: str) -> None:
        # A newer keystroke cancels this worker while it sleeps: only the last term is sent,
        # and the table drops answers to older queries.
        short = 0 < len(term) <= SHORT_SEARCH
        await asyncio.sleep(SHORT_SEARCH_DEBOUNCE if short else SEARCH_DEBOUNCE)
        if term != self.search_term:
            self.search_term = term
            self.requery()

    @on(Input.Submitted, "#users-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box: with exactly one match, open that user; else go to the results.

        Typed ahead (`/ zelda.qu Enter` in one burst) the answer is not in yet: the table takes the
        focus at once (keys typed next go to it) and the user opens when the answer has one row.
        """
        event.stop()
        # The box's value now, not the event's: typed ahead, Enter's binding can run before the letters
        # typed just before it reached the box (they are in the box by the time this is handled).
        term = self._search_now()
        self.set_focus(self.table)  # now, not after the keys already typed
        self._open_single = True
        self._enter_term = term
        if user_key_kind(term) is not None:
            # An exact id, email or username opens that user straight from its unique index, however
            # many users the search also matches; anything else falls back to the search's one match.
            self._open_exact(term)
        if self.table.total is not None and (self.table.total != 1 or self.table.row_at(0) is not None):
            self._finish_search_enter()

    def _finish_search_enter(self) -> None:
        self._open_single = False
        table = self.table
        if not self.is_current or table.total != 1 or self.search_term == "" or self._enter_term is None:
            return  # left meanwhile, or not exactly one match, or opened already: the results have the focus
        user = table.row_at(0)
        if user is not None:
            self._enter_term = None
            self.console_app.open_user(user.id)

    def _search_now(self) -> str:
        """Query the box's term now, not after the debounce: the keys typed after Enter or Down act on
        its results (the table holds them until they are in), not on the list shown before. Returns it."""
        term = self.query_one("#users-search", Input).value.strip()
        if term != self.search_term:
            self.workers.cancel_group(self, "users-search")
            self.search_term = term
            self.requery()
        return term

    @work(exclusive=True, group="users-exact", exit_on_error=False)
    async def _open_exact(self, term: str) -> None:
        try:
            user = await self.console_app.api.lookup_user(term)
        except ApiError:
            return  # the search itself reports a dead backend
        # Only for the Enter it answers: not after another search, Esc, or the single match opening it.
        if user is None or self._enter_term != term or self.search_term != term or not self.is_current:
            return
        self._enter_term = None
        self._open_single = False
        self.console_app.open_user(user.id)

    def action_focus_search(self) -> None:
        search = self.query_one("#users-search", Input)
        if self.focused is search:
            search.insert_text_at_cursor("/")  # the binding has priority: `/` typed in the box is text
            return
        # At once (Widget.focus waits a turn): the keys typed right after `/` must land in the box.
        self.set_focus(search)

    def _clear_search(self) -> None:
        self._open_single = False
        self._enter_term = None
        self.workers.cancel_group(self, "users-search")
        self.workers.cancel_group(self, "users-exact")
        search = self.query_one("#users-search", Input)
        with search.prevent(Input.Changed):
            search.value = ""
        if self.search_term:
            self.search_term = ""
            self.requery()

    def escape_one_level(self) -> bool:
        """Esc, a level at a time: the search text, then the search box's focus, then the search
        still filtering the table; then the frame goes back."""
        search = self.query_one("#users-search", Input)
        if search.has_focus:
            if search.value:
                self._clear_search()
            else:
                self.set_focus(self.table)
            return True
        if self.search_term:
            self._clear_search()
            return True
        return super().escape_one_level()

    def action_results(self) -> None:
        """Down in the search box: to the results of what it holds.

        The app runs this binding as the key arrives, before the letters typed just before it are in
        the box (they wait in the box's own queue): the term is read after them, and the keys typed
        meanwhile (Down, Enter) wait in the table for those results. Typed ahead, Enter here used to
        open a user of the list shown before the term was sent.
        """
        self.table.hold_keys()
        self.query_one("#users-search", Input).call_later(self._results_after_typing)
        self.set_focus(self.table)

    def _results_after_typing(self) -> None:
        self._search_now()
        self.table.release_keys()  # (after a new query, the held keys wait for its rows instead)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "results":
            # The focus now, not `has_focus`: that is set when the box handles its Focus event, after the
            # letters typed ahead of this Down (which then slipped through to the old list's rows).
            return self.focused is self.query_one("#users-search", Input)
        return super().check_action(action, parameters)

    # ------------------------------------------------------------ copy
    def highlighted_user(self) -> SystemUser | None:
        table = self.table
        return table.row_at(table.cursor_row) if table.total else None

    def action_unavailable(self, action: str) -> str | None:
        if action in ("copy_email", "copy_id") and not self._has_users():
            return "No user highlighted to copy from yet."
        return super().action_unavailable(action)

    def _copy(self, what: str, value: str) -> None:
        user = self.highlighted_user()
        if user is None:
            self.notify("No user highlighted to copy from yet.", severity="warning", markup=False)
            return
        self.app.copy_to_clipboard(value)
        self.notify(f"Copied {what} of {user_label(user)}: {printable(value)}", title="Copied", markup=False)

    def action_copy_email(self) -> None:
        user = self.highlighted_user()
        self._copy("the email", user.email if user else "")

    def action_copy_id(self) -> None:
        user = self.highlighted_user()
        self._copy("the id", user.id if user else "")

    # ------------------------------------------------------------ filter/sort
    def action_cycle_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(MFA_FILTERS)
        self.requery()

    def sort_choices(self) -> list[str]:
        """The sortable columns on screen at the current width, in `s` order."""
        return [key for key in SORT_FIELDS if self.table.shows(key)] or list(SORT_FIELDS)[:1]

    def action_cycle_sort(self) -> None:
        keys = self.sort_choices()
        if self.sort_key in keys:
            self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        else:
            self.sort_key = keys[0]
        self.sort_descending = False
        self.requery()

    def action_reverse_sort(self) -> None:
        self.sort_descending = not self.sort_descending
        self.requery()

    # ------------------------------------------------------------ devices
    def _schedule_devices(self, *_: object) -> None:
        self._load_visible_devices()

    @work(exclusive=True, group="users-devices", exit_on_error=False)
    async def _load_visible_devices(self) -> None:
        """Device make/model for the rows on screen only, once the view rests."""
        await asyncio.sleep(DEVICE_DEBOUNCE)
        table = self.table
        if not (table.shows("device") or table.shows("last_used")):
            return  # a narrow terminal hides both columns: no request per row for nothing
        wanted: list[str] = []
        for index in table.visible_rows():
            user = table.row_at(index)
            if user is not None and _has_push(user) and user.id not in self.devices:
                wanted.append(user.id)
        if not wanted:
            return
        api = self.console_app.api
        gate = asyncio.Semaphore(DEVICE_CONCURRENCY)

        async def one(user_id: str) -> None:
            async with gate:
                endpoints = await api.push_endpoints(user_id)
            self.devices.discard(user_id)  # LRUCache.set keeps an existing value
            self.devices.set(user_id, endpoints[0] if endpoints else None)

        try:
            await asyncio.gather(*(one(user_id) for user_id in wanted))
        except ApiError:
            return  # the table's own load reports a dead backend; device columns just stay blank
        finally:
            table.refresh()


def totp_short(user: SystemUser) -> Text:
    """The TOTP cell: `locked` spelled out (and red) once the wrong codes reached the limit, `✓ 3/5`
    while wrong codes count towards it, else the enrolment status."""
    lock = user.totpLock
    if lock.locked:
        return Text("locked", style="bold red", end="")
    cell = enrollment_short(user.mfaEnrollment.totpStatus)
    if lock.failures:
        cell = Text(f"{cell.plain.split(' ')[0]} {lock.failures}/{lock.maxFailures}", style="yellow", end="")
    return cell


def totp_long(user: SystemUser) -> Text:
    lock = user.totpLock
    text = enrollment_text(user.mfaEnrollment.totpStatus)
    if lock.locked:
        return Text(
            f"locked ({lock.failures} of {lock.maxFailures} failures; a TOTP reset unlocks it)",
            style="bold red",
            end="",
        )
    if lock.failures:
        text.append(f", {lock.failures} of {lock.maxFailures} failures", style="yellow")
    return text


def _has_push(user: SystemUser) -> bool:
    return user.mfaEnrollment.pushStatus in (EnrollmentStatus.ENROLLED, EnrollmentStatus.PENDING_ACTIVATION)
