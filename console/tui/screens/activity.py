"""Activity: push attempts as they happen, and who may be under a push-bombing attack."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static

from ...client import ApiError
from ...models import PushAttempt, PushStatus
from ...safe_text import printable
from ..formatting import PUSH_STATUS_STYLES, push_status_text
from ..widgets.bombing_panel import BombingPanel, tally_suspects
from ..widgets.virtual_table import Column, VirtualTable
from .base import ConsoleScreen

# Colours live in formatting (one source of truth); kept under this name for older imports.
STATUS_STYLES = PUSH_STATUS_STYLES

STATUS_FILTERS: tuple[str | None, ...] = (None, *(s.value for s in PushStatus))

BOMBING_WINDOW = timedelta(hours=1)
BOMBING_PAGE_SIZE = 100
BOMBING_MAX_PAGES = 3  # per status: bounded, the panel must never walk the whole history


def status_text(attempt: PushAttempt) -> Text:
    return push_status_text(attempt.status, fraud=attempt.fraud)


def _when(at: datetime) -> str:
    local = at.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M")


# Preferred widths fill about 106 columns; narrower, the text columns shrink and IP goes first
# (below ~89 columns), so 80 columns show time, status, user, resource, location and app.
ATTEMPT_COLUMNS = [
    Column("createdAt", "Time", 11, lambda a: _when(a.createdAt)),
    Column("status", "Status", 12, status_text, min_width=10),  # "denied FRAUD"
    Column("user", "User", 16, lambda a: printable(a.username or a.userId), min_width=12, flex=1),
    Column("resource", "Resource", 16, lambda a: printable(a.resource), min_width=10, flex=1),
    Column("location", "Location", 14, lambda a: printable(a.context.location or ""), min_width=10, flex=1),
    Column("app", "App", 14, lambda a: printable(a.context.app or ""), min_width=10, flex=1, drop_rank=1),
    Column("ip", "IP", 15, lambda a: printable(a.context.ip or ""), drop_rank=2),
]


def age_text(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    return f"{seconds // 60}m ago"


class ActivityScreen(ConsoleScreen):
    """Newest push attempts, refreshed every few seconds (`p` pauses), plus the push-bombing panel."""

    DEFAULT_CSS = """
    ActivityScreen #activity-status { padding: 0 1; height: 1; }
    ActivityScreen #activity-attempts { height: 1fr; }
    """

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("f", "cycle_filter", "Status filter"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("b", "focus_bombing", "Bombing panel"),
    ]

    AUTO_FOCUS = "#activity-attempts"
    TITLE = "Activity"

    REFRESH_SECONDS = 5.0  # class attribute so tests can run the loop faster
    STALE_LOAD_SECONDS = 30.0  # a reload that never answered stops blocking new ones after this

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.status_filter: str | None = None
        self.updated_at: float | None = None  # monotonic time of the last answer
        self.refreshes = 0  # refresh cycles started (tests check that pausing stops them)
        self._table_pending_since: float | None = None
        self._refresh_timer: Timer | None = None
        self._age_timer: Timer | None = None
        self._visible = False

    def compose_body(self) -> Iterable[Widget]:
        yield Static(Text("Loading push attempts…"), id="activity-status")
        yield VirtualTable(ATTEMPT_COLUMNS, self.fetch_attempts, empty_text="No push attempts", id="activity-attempts")
        yield BombingPanel(id="bombing-panel")

    def on_mount(self) -> None:
        self._table_pending_since = time.monotonic()  # the table loads its first page on mount
        self._refresh_timer = self.set_interval(self.REFRESH_SECONDS, self._tick, pause=True)
        self._age_timer = self.set_interval(1.0, self._update_status_line, pause=True)
        self._visible = True
        self._resume_timers()
        self.scan_for_bombing()

    # -------------------------------------------------------- visibility
    def on_screen_suspend(self) -> None:
        # Another mode or a modal is in front: no polling nobody looks at.
        self._visible = False
        self._pause_timers()

    def on_screen_resume(self) -> None:
        was_visible, self._visible = self._visible, True
        if was_visible:
            return
        self._resume_timers()  # the refresh timer only if the admin has not paused it
        stale = self.updated_at is None or time.monotonic() - self.updated_at >= self.REFRESH_SECONDS
        if stale and not self.paused:
            self._tick()

    def _pause_timers(self) -> None:
        for timer in (self._refresh_timer, self._age_timer):
            if timer is not None:
                timer.pause()

    def _resume_timers(self) -> None:
        if self._refresh_timer is not None and not self.paused:
            self._refresh_timer.resume()
        if self._age_timer is not None:
            self._age_timer.resume()

    # -------------------------------------------------------- loading
    @property
    def table(self) -> VirtualTable:
        return self.query_one("#activity-attempts", VirtualTable)

    @property
    def panel(self) -> BombingPanel:
        return self.query_one("#bombing-panel", BombingPanel)

    async def fetch_attempts(self, skip: int, limit: int) -> tuple[int, list[Any]]:
        page = await self.app.api.push_attempts(status=self.status_filter, skip=skip, limit=limit)
        return page.totalCount, page.results

    def _busy(self) -> bool:
        """A refresh still in flight: the next tick is skipped rather than stacked on top."""
        scanning = any(w.group == "activity-bombing" and w.is_running for w in self.workers)
        pending = self._table_pending_since is not None and (
            time.monotonic() - self._table_pending_since < self.STALE_LOAD_SECONDS
        )
        return scanning or pending

    def _tick(self) -> None:
        if self.paused or not self._visible or self._busy():
            return
        self._start_refresh()

    def _start_refresh(self) -> None:
        self.refreshes += 1
        self._table_pending_since = time.monotonic()
        self.table.reload()
        self.scan_for_bombing()

    def reload_data(self) -> None:
        self._start_refresh()

    def action_refresh_now(self) -> None:
        # `r` is the banner's retry too (this binding replaces the base screen's).
        if self.error_visible:
            self.action_retry()
        else:
            self.reload_data()

    @work(exclusive=True, group="activity-bombing", exit_on_error=False)
    async def scan_for_bombing(self) -> None:
        """Blocked and denied attempts of the last hour, a few pages at most, tallied per user."""
        since = datetime.now(timezone.utc) - BOMBING_WINDOW
        attempts: list[PushAttempt] = []
        partial = False
        try:
            for status in (PushStatus.BLOCKED, PushStatus.DENIED):
                for page_number in range(BOMBING_MAX_PAGES):
                    page = await self.app.api.push_attempts(
                        status=status.value, since=since, skip=page_number * BOMBING_PAGE_SIZE, limit=BOMBING_PAGE_SIZE
                    )
                    attempts.extend(page.results)
                    if (page_number + 1) * BOMBING_PAGE_SIZE >= page.totalCount or not page.results:
                        break
                else:
                    partial = True
        except ApiError as exc:
            self.panel.show_problem(f"not checked ({exc})")
            self.report_error(exc, retry=self.reload_data)
            return
        self.panel.show_suspects(tally_suspects(attempts), partial=partial)

    @on(VirtualTable.Loaded, "#activity-attempts")
    def _attempts_loaded(self, event: VirtualTable.Loaded) -> None:
        self._table_pending_since = None
        self.updated_at = time.monotonic()
        self.clear_error()
        self._update_status_line()

    @on(VirtualTable.LoadFailed, "#activity-attempts")
    def _attempts_failed(self, event: VirtualTable.LoadFailed) -> None:
        self._table_pending_since = None
        self.report_error(event.error, retry=self.reload_data)
        self._update_status_line()

    # -------------------------------------------------------- status line
    def _update_status_line(self) -> None:
        line = Text()
        total = self.table.total
        if total is not None:
            line.append(f"{total:,} attempts", style="bold")
        else:
            line.append("Loading push attempts…")
        line.append(f" · {self.status_filter or 'all'} (f)", style="dim")
        if self.updated_at is not None:
            line.append(f" · updated {age_text(time.monotonic() - self.updated_at)}")
        if self.paused:
            line.append(" · PAUSED (p resumes)", style="bold yellow")
        else:
            line.append(f" · every {self.REFRESH_SECONDS:g}s (p pauses)", style="dim")
        self.query_one("#activity-status", Static).update(line)

    # -------------------------------------------------------- actions
    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if self._refresh_timer is not None:
            if self.paused:
                self._refresh_timer.pause()
            else:
                self._refresh_timer.reset()
                self._refresh_timer.resume()
                self._tick()  # catch up at once rather than one interval later
        self._update_status_line()

    def action_cycle_filter(self) -> None:
        index = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(index + 1) % len(STATUS_FILTERS)]
        self._table_pending_since = time.monotonic()
        self.table.set_fetch(self.fetch_attempts)
        self._update_status_line()

    def action_focus_bombing(self) -> None:
        if not self.panel.focus_list():
            self.notify("No users with many blocked or denied pushes in the last hour.", markup=False)

    @on(BombingPanel.UserChosen)
    def _open_suspect(self, event: BombingPanel.UserChosen) -> None:
        self.app.open_user(event.user_id)

    @on(VirtualTable.RowSelected, "#activity-attempts")
    def _open_attempt_user(self, event: VirtualTable.RowSelected) -> None:
        self.app.open_user(event.row.userId)
