"""Activity: push attempts as they happen, and who may be under a push-bombing attack."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import OptionList, Static

from ... import display
from ...client import ApiError
from ...display import clock, push_status_text, since
from ...models import BOMBING_THRESHOLD, BOMBING_WINDOW, Permission, PushAttempt, PushBlock, PushStatus
from ...safe_text import printable
from ..modals.confirm import ConfirmScreen
from ..modals.stop_attack import StopAttackChoice, StopAttackScreen
from ..widgets.bombing_panel import BombingPanel, Suspect, block_text
from ..widgets.virtual_table import Column, TablePosition, VirtualTable
from .base import ConsoleScreen

STATUS_FILTERS: tuple[str | None, ...] = (None, *(s.value for s in PushStatus))

SUSPECTS_LIMIT = 50  # the panel lists the most hostile users first; more than this is said, not shown


def status_text(attempt: PushAttempt) -> Text:
    return push_status_text(attempt.status, fraud=attempt.fraud)


def _when(at: datetime) -> str:
    return clock(at, time="%H:%M:%S", other_day="%m-%d %H:%M")


# Who first, and whole: the user column never shrinks below 22 cells (two users who share a long
# first name still read apart at 80 columns). Narrower than about 106 columns the other text
# columns shrink and IP goes, so 80 columns show user, time, status, resource, location and app.
ATTEMPT_COLUMNS = [
    Column("user", "User", 22, lambda a: printable(a.username or a.userId), flex=1),
    Column("createdAt", "Time", 11, lambda a: _when(a.createdAt)),
    Column("status", "Status", 12, status_text),  # "denied FRAUD", whole
    Column("resource", "Resource", 16, lambda a: printable(a.resource), min_width=9, flex=1),
    Column("location", "Location", 14, lambda a: printable(a.context.location or ""), min_width=9, flex=1),
    Column("app", "App", 14, lambda a: printable(a.context.app or ""), min_width=10, flex=1, drop_rank=1),
    Column("ip", "IP", 15, lambda a: printable(a.context.ip or ""), drop_rank=2),
]


class AttemptsTable(VirtualTable):
    """The attempts, newest first, as a live feed: the highlight follows its attempt across refreshes
    (by id, the table's own mechanism), and while the view is at the top it stays there, so new
    attempts show up above the highlighted one instead of scrolling out of sight."""

    def reload(self, fetch: Any = None) -> None:
        at_top = int(self.scroll_offset.y) == 0
        super().reload(fetch)
        anchor = getattr(self, "_anchor", None)
        if at_top and anchor is not None:
            key, index, _screen_line, pages = anchor
            # No screen line to hold: the cursor moves down with its row; the view only
            # scrolls if the row would leave it.
            self._anchor = (key, index, None, pages)


class ActivityScreen(ConsoleScreen):
    """Newest push attempts, refreshed every few seconds (`p` pauses), plus the push-bombing panel.

    The highlight follows the attempt, not the row number: new attempts arrive on top at every
    refresh, and Enter must open the user of the attempt the admin is looking at.
    """

    DEFAULT_CSS = """
    ActivityScreen #activity-status-row { height: 1; padding: 0 1; }
    ActivityScreen #activity-status { width: 1fr; height: 1; }
    ActivityScreen #activity-attempts { height: 1fr; }
    """

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("f", "cycle_filter", "Status: all", tooltip="Cycle the status filter"),
        Binding("b", "focus_bombing", "Bombing panel"),
        Binding("X", "stop_attack", "Stop attack"),
    ]

    ACTION_PERMISSIONS: ClassVar[dict[str, Permission]] = {"stop_attack": Permission.PUSH_BLOCK}

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
        self.load_failed = False  # the last answer for the attempts was an error
        self._table_pending_since: float | None = None
        self._refresh_timer: Timer | None = None
        self._age_timer: Timer | None = None
        self._visible = False

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="activity-status-row"):
            yield TablePosition("#activity-attempts", "attempts", id="activity-position")
            yield Static(Text("Loading push attempts…"), id="activity-status")
        yield AttemptsTable(
            ATTEMPT_COLUMNS,
            self.fetch_attempts,
            empty_text="No push attempts",
            id="activity-attempts",
            on_select=self._open_attempt_user,
        )
        yield BombingPanel(id="bombing-panel")

    def on_mount(self) -> None:
        self._table_pending_since = time.monotonic()  # the table loads its first page on mount
        self._refresh_timer = self.set_interval(self.REFRESH_SECONDS, self._tick, pause=True)
        self._age_timer = self.set_interval(1.0, self._update_status_line, pause=True)
        self._visible = True
        self._resume_timers()
        self.scan_for_bombing()
        self.watch(self.app, "whoami", self._permissions_known, init=False)

    def _permissions_known(self, *_: object) -> None:
        panel = self.panel
        panel.can_stop = self.console_app.can(Permission.PUSH_BLOCK)
        if panel.checked:
            panel.show_suspects(panel.suspects)

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
        page = await self.console_app.api.push_attempts(status=self.status_filter, skip=skip, limit=limit)
        return page.totalCount or 0, page.results  # counted: these requests never say count=false

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
        """`r`: the attempts and the push-bombing panel, now (also after an outage)."""
        self._start_refresh()

    @work(exclusive=True, group="activity-bombing", exit_on_error=False)
    async def scan_for_bombing(self) -> None:
        """The server's per-user aggregate over the bombing window: the same figures as the user's screen."""
        start = display.now() - BOMBING_WINDOW
        try:
            page = await self.console_app.api.push_suspects(
                since=start, min_hostile=BOMBING_THRESHOLD, limit=SUSPECTS_LIMIT
            )
        except ApiError as exc:
            self.panel.show_problem(f"not checked ({exc})")
            self.report_error(exc, retry=self.reload_data)
            return
        suspects = [Suspect.from_stats(stats) for stats in page.results]
        self.panel.can_stop = self.console_app.can(Permission.PUSH_BLOCK)  # hints name `X` only for keys that have it
        self.panel.show_suspects(suspects, partial=(page.totalCount or 0) > len(suspects))
        self._label_stop_key()  # `b` and `X` depend on what the panel lists (relabel refreshes the bindings)

    @on(VirtualTable.Loaded, "#activity-attempts")
    def _attempts_loaded(self, event: VirtualTable.Loaded) -> None:
        self._table_pending_since = None
        self.load_failed = False
        self.updated_at = time.monotonic()
        self.clear_error()
        self._update_status_line()

    @on(VirtualTable.LoadFailed, "#activity-attempts")
    def _attempts_failed(self, event: VirtualTable.LoadFailed) -> None:
        self._table_pending_since = None
        self.load_failed = True
        self.report_error(event.error, retry=self.reload_data)
        self._update_status_line()

    # -------------------------------------------------------- status line
    def _update_status_line(self) -> None:
        """After the position (``attempts 3/1,234``): the filter, the age of the data, the refresh state."""
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.load_failed and self.table.total is None:
            line.append(" · not loaded (r retries)", style="bold")
        line.append(f" · {self.status_filter or 'all'} (f)", style="dim")
        if self.updated_at is not None:
            line.append(f" · updated {since(display.now() - timedelta(seconds=time.monotonic() - self.updated_at))}")
        if self.paused:
            line.append(" · PAUSED (p resumes)", style="bold yellow")
        else:
            line.append(f" · every {self.REFRESH_SECONDS:g}s (p pauses)", style="dim")
        self.query_one("#activity-status", Static).update(line)

    @property
    def status_text(self) -> str:
        """The status line as plain text, position first (``attempts 1/1,234 · all (f) · …``)."""
        position = self.query_one("#activity-position", TablePosition)
        return f"{position.label}{self.query_one('#activity-status', Static).content}"

    # -------------------------------------------------------- keys that cannot act
    def action_unavailable(self, action: str) -> str | None:
        """Why ``action`` cannot act now (the frame hides its key and toasts this), or None."""
        if action == "focus_bombing":
            return self._panel_reason()
        if action == "stop_attack":
            reason = super().action_unavailable(action)  # the role and the profile first
            if reason:
                return reason
            if self.focused is not self.panel.option_list:
                return self._panel_reason() or "Stop attack: press b, then highlight a user in the push-bombing panel."
            if self.panel.highlighted_suspect is None:
                return "Stop attack: no user highlighted in the push-bombing panel."
            return None
        return super().action_unavailable(action)

    def _panel_reason(self) -> str | None:
        panel = self.panel
        if not panel.checked:
            return f"Push bombing: {panel.problem}." if panel.problem else "Still checking for push bombing."
        if not panel.suspects:
            return f"No users with {BOMBING_THRESHOLD}+ blocked or denied pushes in the {panel.window_label}."
        return None

    def _refuse(self, action: str) -> bool:
        """Say why ``action`` cannot act (when the frame has not already), and whether it cannot."""
        reason = self.action_unavailable(action)
        if reason:
            self.notify(reason, markup=False)
        return bool(reason)

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
        self.relabel("cycle_filter", f"Status: {self.status_filter or 'all'}")
        self._table_pending_since = time.monotonic()
        self.table.set_fetch(self.fetch_attempts)
        self._update_status_line()

    def action_focus_bombing(self) -> None:
        if self._refuse("focus_bombing"):
            return
        self.panel.focus_list()

    def action_stop_attack(self) -> None:
        """`X`: Stop attack on the highlighted suspect (one confirmation), or Lift block when it was stopped.

        The question is pushed here, not from a worker, so a `y` typed right after `X` answers it.
        """
        if self._refuse("stop_attack"):
            return
        suspect = self.panel.highlighted_suspect
        if suspect is None:
            return
        label = printable(suspect.username or suspect.user_id, max_length=60)
        if suspect.block is not None:
            question = Text("Lift the push block on ")
            question.append(label, style="bold")
            question.append("?")
            body = Text(f"Now: {block_text(suspect.block)}.\nNew pushes reach the user's device again at once.")

            def lift(yes: bool | None) -> None:
                if yes:
                    self.lift_block(suspect, label)

            self.app.push_screen(ConfirmScreen(question, body, confirm_label="Lift block (y)"), lift)
            return
        question = Text("Stop the push attack on ")
        question.append(label, style="bold")
        question.append("?")
        body = Text(
            f"Cancels the pending pushes and refuses new ones until the block ends or is lifted (X again). "
            f"In the {self.panel.window_label}: {suspect.blocked} blocked, {suspect.denied} denied"
            + (f", the last at {clock(suspect.last, zone=True)}" if suspect.last else "")
            + "."
        )

        def stop(choice: StopAttackChoice | None) -> None:
            if choice is not None:
                self.stop_attack(suspect, label, choice)

        self.app.push_screen(StopAttackScreen(question, body), stop)

    @work(exclusive=True, group="activity-stop", exit_on_error=False)
    async def stop_attack(self, suspect: Suspect, label: str, choice: StopAttackChoice) -> None:
        try:
            result = await self.console_app.api.block_push(
                suspect.user_id,
                minutes=choice.minutes,
                cancel_pending=choice.cancel_pending,
                require_user_verification=choice.require_user_verification,
            )
        except ApiError as exc:
            self.notify(f"Stop attack failed: {printable(str(exc), max_length=200)}", severity="error", markup=False)
            return
        me = self.console_app.whoami
        block = PushBlock(blockedUntil=result.blockedUntil, blockedBy=me.name if me else "you", blockedAt=display.now())
        self.panel.mark_stopped(suspect.user_id, block)
        extra = "; biometric approval required from now on" if choice.require_user_verification else ""
        self.notify(
            f"Attack on {label} stopped: new pushes refused until {clock(result.blockedUntil, zone=True)}; "
            f"{result.cancelled} pending push(es) cancelled{extra}.",
            title="Done",
            markup=False,
        )
        self._label_stop_key()
        self.scan_for_bombing()  # the server's word on it

    @work(exclusive=True, group="activity-stop", exit_on_error=False)
    async def lift_block(self, suspect: Suspect, label: str) -> None:
        try:
            lifted = await self.console_app.api.lift_push_block(suspect.user_id)
        except ApiError as exc:
            self.notify(f"Lift block failed: {printable(str(exc), max_length=200)}", severity="error", markup=False)
            return
        self.panel.mark_stopped(suspect.user_id, None)
        message = f"Push block lifted for {label}." if lifted.lifted else f"{label} had no push block in force."
        self.notify(message, title="Done", markup=False)
        self._label_stop_key()
        self.scan_for_bombing()

    def escape_one_level(self) -> bool:
        # Esc in the bombing panel: back to the attempts (one level), at once for keys typed ahead.
        if self.focused is not None and self.focused is not self.table:
            self.set_focus(self.table)
            return True
        return super().escape_one_level()

    @on(BombingPanel.Leave)
    def _leave_panel(self, event: BombingPanel.Leave) -> None:
        event.stop()
        self.set_focus(self.table)

    @on(OptionList.OptionHighlighted, "#bombing-list")
    def _suspect_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._label_stop_key()

    def _label_stop_key(self) -> None:
        """`X` says what it will do to the highlighted user: stop their attack, or lift the stop. Called when the
        highlight moves and whenever the listed suspects change (a stop or a lift keeps the highlight where it is)."""
        suspect = self.panel.highlighted_suspect
        self.relabel("stop_attack", "Lift block" if suspect is not None and suspect.stopped else "Stop attack")

    @on(BombingPanel.UserChosen)
    def _open_suspect(self, event: BombingPanel.UserChosen) -> None:
        self.console_app.open_user(event.user_id)

    def _open_attempt_user(self, event: VirtualTable.RowSelected) -> None:
        self.console_app.open_user(event.row.userId)
