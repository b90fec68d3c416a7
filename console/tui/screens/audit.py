"""Audit: every admin-API change, newest first, with its before/after on Enter."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from ...client import USER_ID_RE
from ...models import AuditEvent
from ...safe_text import printable
from ..widgets.virtual_table import Column, VirtualTable
from .base import ConsoleScreen


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"push": {"timeoutSeconds": 60}}`` -> ``{"push.timeoutSeconds": 60}``."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value} if prefix else {}


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def change_lines(details: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each changed value, from either shape the server writes:
    ``{"changes": {key: {"before", "after"}}}`` or ``{"before": ..., "after": ...}``."""
    changes = details.get("changes")
    if isinstance(changes, dict) and changes and all(
        isinstance(c, dict) and ("before" in c or "after" in c) for c in changes.values()
    ):
        return [f"{key}: {_short(c.get('before'))} -> {_short(c.get('after'))}" for key, c in changes.items()]
    if "before" not in details and "after" not in details:
        return []
    before, after = details.get("before"), details.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        old = _flatten(before if isinstance(before, dict) else {})
        new = _flatten(after if isinstance(after, dict) else {})
        return [
            f"{key}: {_short(old.get(key, '-'))} -> {_short(new.get(key, '-'))}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
    return [f"{_short(before)} -> {_short(after)}"]


def summarize_details(details: dict[str, Any]) -> str:
    """One line: what changed (``key: old -> new``), then any other details as ``key=value``."""
    parts = change_lines(details)
    skip = ("changes", "before", "after") if parts else ()
    rest = {k: v for k, v in details.items() if k not in skip}
    parts.extend(f"{key}={_short(value)}" for key, value in _flatten(rest).items())
    return printable("; ".join(parts))


def _when(event: AuditEvent) -> str:
    return event.at.astimezone().strftime("%m-%d %H:%M:%S")


# Details is what people read: it takes most spare room. Target (an id, also in the detail view
# on Enter) shows from about 101 columns.
AUDIT_COLUMNS = [
    Column("at", "Time", 14, _when),
    Column("actor", "Actor", 16, lambda e: printable(e.actor), min_width=12, flex=1),
    Column("action", "Action", 18, lambda e: printable(e.action), min_width=16),
    Column("details", "Details", 44, lambda e: summarize_details(e.details), min_width=30, flex=3),
    Column("target", "Target", 24, lambda e: printable(e.target), drop_rank=1),
]


def pretty_json(value: Any) -> Text:
    """Indented JSON as literal text; every line cleaned (JSON escapes C0 controls, not bidi marks)."""
    dumped = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    return Text("\n".join(printable(line) for line in dumped.splitlines()))


class AuditDetailScreen(ModalScreen[None]):
    """The whole event: who, what, on what, and its details (before/after) in full."""

    DEFAULT_CSS = """
    AuditDetailScreen { align: center middle; }
    AuditDetailScreen > Vertical {
        width: 90%; max-width: 100; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    AuditDetailScreen #audit-detail-head { height: auto; margin-bottom: 1; }
    AuditDetailScreen #audit-detail-body { height: 1fr; }
    AuditDetailScreen #audit-detail-hint { height: 1; color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
        Binding("u", "open_user", "Open user"),
    ]

    def __init__(self, event: AuditEvent) -> None:
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        event = self.event
        head = Text()
        head.append(f"Audit event #{event.id}\n", style="bold")
        for label, value in (
            ("When", event.at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")),
            ("Actor", event.actor),
            ("Action", event.action),
            ("Target", event.target),
        ):
            head.append(f"{label:<7}", style="dim")
            head.append(printable(value))
            head.append("\n")
        head.rstrip()
        body = Text()
        changes = change_lines(event.details)
        if changes:
            body.append("Changes:\n", style="bold")
            for line in changes:
                body.append(f"  {printable(line)}\n")
            body.append("\n")
        body.append("Details:\n", style="bold")
        body.append_text(pretty_json(event.details))
        with Vertical():
            yield Static(head, id="audit-detail-head")
            with VerticalScroll(id="audit-detail-body"):
                yield Static(body, id="audit-detail-text")
            hint = "Esc closes · arrows scroll" + (" · u opens the user" if self.target_user_id else "")
            yield Static(Text(hint), id="audit-detail-hint")

    def on_mount(self) -> None:
        self.query_one("#audit-detail-body").focus()

    @property
    def target_user_id(self) -> str | None:
        """The target when it is a user id (most admin actions are on a user)."""
        return self.event.target if USER_ID_RE.match(self.event.target) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_user":
            return self.target_user_id is not None
        return True

    def action_close(self) -> None:
        self.dismiss(None)

    def action_open_user(self) -> None:
        user_id = self.target_user_id
        if user_id is not None:
            self.dismiss(None)
            self.app.open_user(user_id)


class AuditScreen(ConsoleScreen):
    """Admin actions in a paged table; Enter shows one event in full."""

    DEFAULT_CSS = """
    AuditScreen #audit-status { padding: 0 1; height: 1; }
    AuditScreen #audit-events { height: 1fr; }
    """

    BINDINGS = [Binding("r", "reload", "Reload")]

    AUTO_FOCUS = "#audit-events"
    TITLE = "Audit"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(Text("Loading audit log…"), id="audit-status")
        yield VirtualTable(AUDIT_COLUMNS, self.fetch_events, empty_text="No admin actions yet", id="audit-events")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#audit-events", VirtualTable)

    async def fetch_events(self, skip: int, limit: int) -> tuple[int, list[Any]]:
        page = await self.app.api.audit(skip=skip, limit=limit)
        return page.totalCount, page.results

    def on_screen_resume(self) -> None:
        # Coming back from another screen, where the admin may just have changed something.
        if self.table.total is not None:
            self.table.reload()

    def reload_data(self) -> None:
        self.table.reload()

    def action_reload(self) -> None:
        # `r` is the banner's retry too (this binding replaces the base screen's).
        if self.error_visible:
            self.action_retry()
        else:
            self.reload_data()

    @on(VirtualTable.Loaded, "#audit-events")
    def _loaded(self, event: VirtualTable.Loaded) -> None:
        self.clear_error()
        status = Text()
        status.append(f"{event.total:,} admin actions", style="bold")
        status.append(" newest first · Enter shows the details · r reloads", style="dim")
        self.query_one("#audit-status", Static).update(status)

    @on(VirtualTable.LoadFailed, "#audit-events")
    def _failed(self, event: VirtualTable.LoadFailed) -> None:
        self.report_error(event.error, retry=self.reload_data)

    @on(VirtualTable.RowSelected, "#audit-events")
    def _open(self, event: VirtualTable.RowSelected) -> None:
        self.app.push_screen(AuditDetailScreen(event.row))
