"""Privacy: how many devices share diagnostics, and which devices opted out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from ...client import ApiError
from ...display import day
from ...models import PrivacyDevice, PrivacySummary
from ...safe_text import printable
from ..widgets.virtual_table import Column, TablePosition, VirtualTable
from .base import ConsoleScreen

# What the app collects, in the FAQ's words: admins answer this question from users.
COLLECTION_NOTE = (
    "Collected: diagnostic and usage data (troubleshooting, app improvement). Never collected: user "
    "information. Users opt out in the app under Settings > Privacy; opted-out devices' reports are "
    "counted and dropped, never stored."
)


def _opt_out_cell(device: PrivacyDevice) -> Text:
    if device.privacy.diagnosticsOptOut:
        return Text("opted out", style="bold")
    return Text("sharing")


def _device_cell(device: PrivacyDevice) -> str:
    return printable(f"{device.device.make} {device.device.model}")


def _os_cell(device: PrivacyDevice) -> str:
    return printable(f"{device.device.os} {device.device.osVersion}")


def _user_cell(device: PrivacyDevice) -> str:
    return printable(device.user.username or device.user.email)


def _changed_cell(device: PrivacyDevice) -> str:
    return day(device.privacy.updatedAt)


# Email (the user column already names the user) shows from about 102 columns; narrower,
# user and device shrink, and 80 columns still show everything else.
DEVICE_COLUMNS = [
    Column("optedOut", "Diagnostics", 11, _opt_out_cell),
    Column("user", "User", 22, _user_cell, min_width=14, flex=1, priority=1),
    Column("device", "Device", 22, _device_cell, min_width=14, flex=1),
    Column("os", "OS", 12, _os_cell, min_width=10),
    Column("app", "App", 8, lambda d: printable(d.device.appVersion), min_width=6, drop_rank=1),
    Column("changed", "Changed", 10, _changed_cell, drop_rank=2),
    Column("email", "Email", 30, lambda d: printable(d.user.email), flex=1, drop_rank=3),
]


def summary_text(summary: PrivacySummary) -> Text:
    """Two lines that each fit 80 columns: the devices and their opt-out share, then the reports."""
    share = (summary.optedOut / summary.devices * 100) if summary.devices else 0.0
    text = Text()
    text.append(f"{summary.devices:,}", style="bold")
    text.append(" devices · ")
    text.append(f"{summary.optedOut:,}", style="bold")
    text.append(f" opted out ({share:.1f}%) · {summary.optedIn:,} sharing\n")
    text.append(
        f"Diagnostics reports: {summary.diagnosticsStored:,} stored · "
        f"{summary.diagnosticsDropped:,} dropped (from opted-out devices)",
        style="dim",
    )
    return text


class PrivacyScreen(ConsoleScreen):
    """The diagnostics summary and a paged table of devices; `o` shows opted-out devices only."""

    DEFAULT_CSS = """
    PrivacyScreen #privacy-summary { padding: 0 1; height: auto; }
    PrivacyScreen #privacy-note { padding: 0 1; color: $text-muted; height: auto; }
    PrivacyScreen #privacy-filter-row { padding: 0 1; height: 1; }
    PrivacyScreen #privacy-filter { width: 1fr; height: 1; }
    PrivacyScreen #privacy-devices { height: 1fr; }
    """

    BINDINGS = [
        Binding("o", "toggle_opted_out", "Opted out: off", tooltip="Show only devices that opted out, or all"),
    ]

    AUTO_FOCUS = "#privacy-devices"
    TITLE = "Privacy"

    def __init__(self) -> None:
        super().__init__()
        self.opted_out_only = False
        self.summary: PrivacySummary | None = None
        self.device_total: int | None = None  # rows the table's last answer reported
        self.load_failed = False

    def compose_body(self) -> Iterable[Widget]:
        yield Static(Text("Loading privacy summary…"), id="privacy-summary")
        yield Static(Text(COLLECTION_NOTE), id="privacy-note")
        with Horizontal(id="privacy-filter-row"):
            yield TablePosition("#privacy-devices", "devices", id="privacy-position")
            yield Static(self._filter_text(), id="privacy-filter")
        yield VirtualTable(
            DEVICE_COLUMNS, self.fetch_devices, empty_text="No devices", id="privacy-devices", on_select=self._open_user
        )

    def on_mount(self) -> None:
        self.load_summary()

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#privacy-devices", VirtualTable)

    async def fetch_devices(self, skip: int, limit: int) -> tuple[int, list[Any]]:
        # Runs in the table's page worker; the filter is read when the page is asked for.
        page = await self.console_app.api.privacy_devices(
            opted_out=True if self.opted_out_only else None, skip=skip, limit=limit
        )
        return page.totalCount or 0, page.results  # counted: these requests never say count=false

    @work(exclusive=True, group="privacy-summary", exit_on_error=False)
    async def load_summary(self) -> None:
        try:
            summary = await self.console_app.api.privacy_summary()
        except ApiError as exc:
            if self.summary is None:
                self.query_one("#privacy-summary", Static).update(Text("Privacy summary not loaded (r retries)"))
            self.report_error(exc, retry=self.reload_data)
            return
        self.summary = summary
        self.query_one("#privacy-summary", Static).update(summary_text(summary))
        if not self.load_failed and self.table.total is not None:
            self.clear_error()
        self._update_filter_line()

    def action_toggle_opted_out(self) -> None:
        self.opted_out_only = not self.opted_out_only
        self.device_total = None
        self._update_filter_line()
        self.table.set_fetch(self.fetch_devices)
        self.load_summary()  # the counts the filter is compared against may have moved

    def reload_data(self) -> None:
        """`r`: the summary and the devices again, with the same filter (also after an outage)."""
        self.load_summary()
        self.table.reload()

    def escape_one_level(self) -> bool:
        # Esc shows every device again first (one level), then the frame goes back.
        if self.opted_out_only:
            self.action_toggle_opted_out()
            return True
        return super().escape_one_level()

    def _filter_text(self) -> Text:
        shown = "" if self.device_total is None else f"{self.device_total:,} "
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.opted_out_only:
            text.append(" · filter: opted out", style="bold yellow")
            text.append(f" · {shown}opted-out devices only (o or Esc shows all) · Enter opens the user")
        else:
            text.append(" · filter: none", style="bold")
            text.append(f" · all {shown}devices (o: opted-out only) · Enter opens the user")
        return text

    def _update_filter_line(self) -> None:
        self.relabel("toggle_opted_out", f"Opted out: {'on' if self.opted_out_only else 'off'}")
        position = self.query_one("#privacy-position", TablePosition)
        noun = "opted-out devices" if self.opted_out_only else "devices"
        if position.noun != noun:
            position.noun = noun
            position.update_position()
        self.query_one("#privacy-filter", Static).update(self._filter_text())

    @on(VirtualTable.Loaded, "#privacy-devices")
    def _devices_loaded(self, event: VirtualTable.Loaded) -> None:
        self.device_total = event.total
        self.load_failed = False
        if self.summary is not None:
            self.clear_error()  # both halves answered
        self._update_filter_line()

    @on(VirtualTable.LoadFailed, "#privacy-devices")
    def _devices_failed(self, event: VirtualTable.LoadFailed) -> None:
        self.load_failed = True
        self.report_error(event.error, retry=self.reload_data)
        self._update_filter_line()

    def _open_user(self, event: VirtualTable.RowSelected) -> None:
        self.console_app.open_user(event.row.user.id)
