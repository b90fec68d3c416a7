"""Users: the whole directory in a virtual table, searched, filtered and sorted on the server."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Static

from ...client import ApiError
from ...models import EnrollmentStatus, PushEndpoint, SystemUser
from ...safe_text import printable
from ..formatting import enrollment_short, short_age, user_name
from ..widgets.virtual_table import Column, VirtualTable
from .base import ConsoleScreen

SEARCH_DEBOUNCE = 0.2  # seconds of quiet typing before the server is asked
DEVICE_DEBOUNCE = 0.3  # seconds the view must rest before device details are fetched
DEVICE_CONCURRENCY = 4


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

# column key -> server sort field; the order is the `s` cycle.
SORT_FIELDS: dict[str, str] = {
    "username": "username",
    "name": "lastname",
    "email": "email",
    "state": "state",
    "push": "mfaEnrollment.pushStatus",
    "totp": "mfaEnrollment.totpStatus",
    "webauthn": "mfaEnrollment.webAuthnStatus",
}


class DeviceCache:
    """Push devices of recently shown users (None = the user has none), bounded."""

    def __init__(self, size: int = 2000) -> None:
        self._items: OrderedDict[str, PushEndpoint | None] = OrderedDict()
        self._size = size

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._items

    def get(self, user_id: str) -> PushEndpoint | None:
        return self._items.get(user_id)

    def put(self, user_id: str, device: PushEndpoint | None) -> None:
        self._items[user_id] = device
        self._items.move_to_end(user_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._items.pop(user_id, None)


class UsersScreen(ConsoleScreen):
    TITLE = "Users"
    # Without this Textual may focus the first focusable widget (the search box) after
    # on_mount has focused the table, and keys meant for the table go into the search.
    AUTO_FOCUS = "#users-table"

    BINDINGS = [
        Binding("slash", "focus_search", "Search"),
        Binding("f", "cycle_filter", "MFA filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse"),
        Binding("escape", "leave_search", "Back", show=False),
        Binding("down", "results", "Results", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.search_term = ""
        self.filter_index = 0
        self.sort_key = "username"
        self.sort_descending = False
        self.devices = DeviceCache()

    # ------------------------------------------------------------ layout
    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="users-toolbar"):
            yield Input(placeholder="/ search username, name or email", id="users-search")
            yield Static("", id="users-filter", markup=False)
            yield Static("", id="users-count", markup=False)
        yield VirtualTable(self._columns(), None, page_size=100, empty_text="No users match", id="users-table")

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
            style = {"ACTIVATED": "", "SUSPENDED": "red", "STAGED": "yellow"}.get(user.state, "")
            return Text(printable(user.state).lower(), style=style, end="")

        # Preferred widths fill about 128 columns. Narrower, the flexible columns shrink towards their
        # minimum and the least needed go: WebAuthn below ~113 columns, Last used below ~104, Device
        # below ~94, so nothing scrolls sideways. Wider, Name, Email and Device grow.
        return [
            Column("username", "Username", 16, lambda u: u.username, sortable=True, min_width=14, flex=1),
            Column("name", "Name", 16, user_name, sortable=True, min_width=14, flex=1),
            Column("email", "Email", 24, lambda u: u.email, sortable=True, min_width=20, flex=2),
            Column("state", "State", 9, state, sortable=True),
            Column("push", "Push", 7, lambda u: enrollment_short(u.mfaEnrollment.pushStatus), sortable=True),
            Column("totp", "TOTP", 7, lambda u: enrollment_short(u.mfaEnrollment.totpStatus), sortable=True),
            Column(
                "webauthn", "WebAuthn", 8, lambda u: enrollment_short(u.mfaEnrollment.webAuthnStatus),
                sortable=True, drop_rank=3,
            ),
            Column("device", "Device", 22, device, min_width=16, flex=1, drop_rank=1),
            Column("last_used", "Last used", 9, last_used, drop_rank=2),
        ]

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#users-table", VirtualTable)

    def on_mount(self) -> None:
        self._update_toolbar()
        self.watch(self.table, "scroll_y", self._schedule_devices, init=False)
        self.table.focus()
        self.requery()

    # ------------------------------------------------------------ querying
    def requery(self) -> None:
        """Point the table at the current search, filter and sort (a fresh query)."""
        api = self.app.api  # type: ignore[attr-defined]
        term = self.search_term or None
        filters = list(MFA_FILTERS[self.filter_index].filters)
        field = SORT_FIELDS[self.sort_key]
        sort = f"-{field}" if self.sort_descending else field

        async def fetch(skip: int, limit: int) -> tuple[int, list[SystemUser]]:
            page = await api.list_users(skip=skip, limit=limit, sort=sort, filters=filters, search=term)
            return page.totalCount, page.results

        self.table.set_sort(self.sort_key, self.sort_descending)
        self.table.set_fetch(fetch)
        self._update_toolbar()

    def reload_data(self) -> None:
        self.table.reload()

    def on_screen_resume(self) -> None:
        # Back from a user's detail: what we changed there should show here.
        if self.table.total is not None:
            self.devices = DeviceCache()
            self.table.reload()

    @on(VirtualTable.Loaded, "#users-table")
    def _loaded(self, event: VirtualTable.Loaded) -> None:
        self.clear_error()
        self._update_toolbar()
        self._schedule_devices()

    @on(VirtualTable.LoadFailed, "#users-table")
    def _load_failed(self, event: VirtualTable.LoadFailed) -> None:
        self.report_error(event.error, self.table.reload)
        if self.table.total is None:
            self.query_one("#users-count", Static).update(Text("not loaded", style="dim"))

    @on(VirtualTable.ColumnsChanged, "#users-table")
    def _columns_changed(self, event: VirtualTable.ColumnsChanged) -> None:
        self._schedule_devices()  # widened: the device columns may have just appeared

    @on(VirtualTable.RowSelected, "#users-table")
    def _open(self, event: VirtualTable.RowSelected) -> None:
        self.app.open_user(event.row.id)  # type: ignore[attr-defined]

    def _update_toolbar(self) -> None:
        mfa = MFA_FILTERS[self.filter_index].label
        arrow = "▼" if self.sort_descending else "▲"
        # Short: the keys (f, s, S) are in the footer, and at 80 columns the search box needs the room.
        self.query_one("#users-filter", Static).update(Text(f"MFA: {mfa} · by {self.sort_key} {arrow}"))
        total = self.table.total
        if total is None:
            count = "loading…"
        else:
            count = f"{total:,} user{'s' if total != 1 else ''}"
            if self.search_term or self.filter_index:
                count += " match"
        self.query_one("#users-count", Static).update(Text(count))

    # ------------------------------------------------------------ search
    @on(Input.Changed, "#users-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self._debounced_search(event.value.strip())

    @work(exclusive=True, group="users-search", exit_on_error=False)
    async def _debounced_search(self, term: str) -> None:
        # A newer keystroke cancels this worker while it sleeps: only the last term is sent,
        # and the table drops answers to older queries.
        await asyncio.sleep(SEARCH_DEBOUNCE)
        if term != self.search_term:
            self.search_term = term
            self.requery()

    @on(Input.Submitted, "#users-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        term = event.value.strip()
        if term != self.search_term:
            self.workers.cancel_group(self, "users-search")
            self.search_term = term
            self.requery()
        self.table.focus()

    def action_focus_search(self) -> None:
        self.query_one("#users-search", Input).focus()

    def action_leave_search(self) -> None:
        search = self.query_one("#users-search", Input)
        if search.has_focus:
            self.table.focus()
        else:
            self.app.action_back()  # type: ignore[attr-defined]

    def action_results(self) -> None:
        self.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "results":
            return self.query_one("#users-search", Input).has_focus
        return super().check_action(action, parameters)

    # ------------------------------------------------------------ filter/sort
    def action_cycle_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(MFA_FILTERS)
        self.requery()

    def action_cycle_sort(self) -> None:
        keys = list(SORT_FIELDS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
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
        api = self.app.api  # type: ignore[attr-defined]
        gate = asyncio.Semaphore(DEVICE_CONCURRENCY)

        async def one(user_id: str) -> None:
            async with gate:
                endpoints = await api.push_endpoints(user_id)
            self.devices.put(user_id, endpoints[0] if endpoints else None)

        try:
            await asyncio.gather(*(one(user_id) for user_id in wanted))
        except ApiError:
            return  # the table's own load reports a dead backend; device columns just stay blank
        finally:
            table.refresh()


def _has_push(user: SystemUser) -> bool:
    return user.mfaEnrollment.pushStatus in (EnrollmentStatus.ENROLLED, EnrollmentStatus.PENDING_ACTIVATION)
