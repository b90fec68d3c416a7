"""One audit event in full: who, what, on what, and its details (before/after)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from ...client import USER_ID_RE
from ...display import stamp_seconds_zone
from ...models import AuditEvent
from ...safe_text import printable
from ..audit_text import change_lines, pretty_json, summarize
from ..screens.base import console_app_of
from .base import ConsoleModal


class AuditDetailScreen(ConsoleModal[None]):
    """The whole event: who, what, on what, and its details (before/after) in full."""

    AUTO_FOCUS = "#audit-detail-body"

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
        target = Text(printable(event.targetName or event.target))
        if event.targetName:
            # The name for people; the id for matching against logs and other tools.
            target.append(f"  (user {printable(event.target)})", style="dim")
        for label, value in (
            ("When", Text(stamp_seconds_zone(event.at))),
            ("Actor", Text(printable(event.actor))),
            ("Action", Text(printable(event.action))),
            ("Target", target),
            ("Kind", Text("device event (the user's app)" if event.kind == "device" else "admin action (an API key)")),
        ):
            head.append(f"{label:<7}", style="dim")
            head.append_text(value)
            head.append("\n")
        head.rstrip()
        body = Text()
        summary = summarize(event)
        if summary:
            body.append("Summary:\n", style="bold")
            body.append(f"  {summary}\n\n")
        changes = change_lines(event.details, event.at)
        if changes:
            body.append("Changes:\n", style="bold")
            for line in changes:
                body.append(f"  {printable(line)}\n")
            body.append("\n")
        body.append("Details:\n", style="bold")
        body.append_text(pretty_json(event.details))
        with Vertical(classes="card"):
            yield Static(head, id="audit-detail-head")
            with VerticalScroll(id="audit-detail-body"):
                yield Static(body, id="audit-detail-text")
            hint = "Esc closes · arrows scroll" + (" · u opens the user" if self.target_user_id else "")
            yield Static(Text(hint), id="audit-detail-hint")

    @property
    def target_user_id(self) -> str | None:
        """The target when it is a user id (most admin actions are on a user)."""
        return self.event.target if USER_ID_RE.match(self.event.target) else None

    def action_unavailable(self, action: str) -> str | None:
        """Why ``action`` cannot act on this event (the frame toasts it on the key), or None."""
        if action == "open_user" and self.target_user_id is None:
            target = printable(self.event.targetName or self.event.target, max_length=40)
            return f"Open user: this event's target ({target}) is not a user."
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Hidden from the footer while it cannot act; `u` then says why instead of nothing.
        return self.action_unavailable(action) is None

    def action_close(self) -> None:
        self.dismiss(None)

    def action_open_user(self) -> None:
        user_id = self.target_user_id
        if user_id is not None:
            self.dismiss(None)
            console_app_of(self).open_user(user_id)
