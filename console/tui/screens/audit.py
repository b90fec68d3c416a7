"""Audit: every admin-API change, newest first, with its before/after on Enter."""

from __future__ import annotations

from contextlib import suppress

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual import on, work
from textual.css.query import NoMatches
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from ...client import USER_ID_RE
from ...models import AuditEvent
from ...safe_text import printable
from ..widgets.prompt import PromptScreen
from ..widgets.virtual_table import Column, TablePosition, VirtualTable
from .base import ConsoleScreen, console_app_of


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"push": {"timeoutSeconds": 60}}`` -> ``{"push.timeoutSeconds": 60}``."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value} if prefix else {}


_ISO_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")


def _as_time(value: Any) -> datetime | None:
    """An ISO timestamp in the details (the server writes naive ones in UTC), else None."""
    if not isinstance(value, str) or not _ISO_TIME_RE.fullmatch(value):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def compact_time(when: datetime, at: datetime | None = None) -> str:
    """``09:38 UTC`` on the event's own day, else ``2026-12-05 09:38 UTC``: the same for every reader."""
    utc = when.astimezone(timezone.utc)
    if at is not None and utc.date() == at.astimezone(timezone.utc).date():
        return utc.strftime("%H:%M UTC")
    return utc.strftime("%Y-%m-%d %H:%M UTC")


def short_id(value: Any) -> str:
    """A 24-hex id cut to its first 8 digits (enough to tell apart; the full one is on Enter)."""
    text = str(value)
    return f"{text[:8]}…" if USER_ID_RE.match(text) else text


def _span(seconds: float) -> str:
    """``45s``, ``10m``, ``3h``, ``7d``: rounded, a length of time at a glance."""
    if seconds < 90:
        return f"{round(seconds)}s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)}m"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)}h"
    return f"{round(seconds / 86400)}d"


def _short(value: Any, at: datetime | None = None, *, short_ids: bool = False) -> str:
    when = _as_time(value)
    if when is not None:
        return compact_time(when, at)
    if isinstance(value, str):
        return short_id(value) if short_ids else value
    return json.dumps(value, ensure_ascii=False, default=str)


def change_lines(details: dict[str, Any], at: datetime | None = None, *, short_ids: bool = False) -> list[str]:
    """``key: old -> new`` for each changed value, from either shape the server writes:
    ``{"changes": {key: {"before", "after"}}}`` or ``{"before": ..., "after": ...}``."""

    def show(value: Any) -> str:
        return _short(value, at, short_ids=short_ids)

    changes = details.get("changes")
    if isinstance(changes, dict) and changes and all(
        isinstance(c, dict) and ("before" in c or "after" in c) for c in changes.values()
    ):
        return [f"{key}: {show(c.get('before'))} -> {show(c.get('after'))}" for key, c in changes.items()]
    if "before" not in details and "after" not in details:
        return []
    before, after = details.get("before"), details.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        old = _flatten(before if isinstance(before, dict) else {})
        new = _flatten(after if isinstance(after, dict) else {})
        return [
            f"{key}: {show(old.get(key, '-'))} -> {show(new.get(key, '-'))}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
    return [f"{show(before)} -> {show(after)}"]


def _device_words(device: dict[str, Any]) -> str:
    """``Apple iPhone 13 (iOS 17.1)`` from a push endpoint's ``device`` object."""
    name = " ".join(str(device.get(k) or "").strip() for k in ("make", "model")).strip()
    system = " ".join(str(device.get(k) or "").strip() for k in ("os", "osVersion")).strip()
    return f"{name} ({system})" if name and system else name or system


def _action_summary(action: str, details: dict[str, Any], at: datetime | None) -> list[str] | None:
    """The human part first for the actions people look up most; None: use the generic summary."""
    before, after = details.get("before"), details.get("after")
    if action == "device.enroll" and isinstance(after, dict):
        # Model and OS are what a caller can confirm ("yes, my Galaxy"); the new id comes last.
        what = ", ".join(str(after[k]) for k in ("model", "os") if after.get(k))
        parts = [what] if what else []
        if after.get("device"):
            parts.append(f"device {short_id(after['device'])}")
        return parts
    if action == "device.replace" and isinstance(before, str) and isinstance(after, str):
        return [f"device {short_id(before)} replaced by {short_id(after)}"]
    if action == "device.unenroll" and isinstance(before, dict):
        device = before.get("device")
        parts = [f"removed {_device_words(device)}" if isinstance(device, dict) else "removed the push device"]
        if before.get("id"):
            parts.append(f"device {short_id(before['id'])}")
        return parts
    if action == "enrollment.create":
        expires = _as_time(details.get("expiresAt"))
        if expires is None:
            return None
        # The time first: at 80 columns the cell is about 26 cells wide.
        valid = f" ({_span((expires - at).total_seconds())})" if at and expires > at else ""
        return [f"expires {compact_time(expires, at)}{valid}"]
    if action == "totp.verify" and "valid" in details:
        if details.get("valid"):
            return ["code valid"]
        reason = details.get("reason")
        return [f"code NOT valid: {reason}" if reason else "code NOT valid"]
    return None


def summarize_details(details: dict[str, Any], action: str = "", at: datetime | None = None) -> str:
    """One line: what changed (``key: old -> new``), then any other details as ``key=value``.

    Times read as ``09:38 UTC`` and ids as their first 8 digits: the full event is on Enter.
    """
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    special = _action_summary(action, details, at) if action else None
    if special is not None:
        return printable("; ".join(special))
    parts = change_lines(details, at, short_ids=True)
    skip = ("changes", "before", "after") if parts else ()
    rest = {k: v for k, v in details.items() if k not in skip}
    parts.extend(
        f"{key}={_short(value, at, short_ids=True)}" for key, value in _flatten(rest).items() if value is not None
    )
    return printable("; ".join(parts))


def summarize(event: AuditEvent) -> str:
    return summarize_details(event.details, event.action, event.at)


def target_text(event: AuditEvent) -> str:
    """The username when the target is a user (the server joins it), else the raw target."""
    return printable(event.targetName or event.target)


def _when(event: AuditEvent) -> str:
    # To the minute: the order is the table's, and the seconds are in the detail view (Enter).
    return event.at.astimezone().strftime("%m-%d %H:%M")


# Who did what to whom, then the details. Target (whom: a username) keeps its width longest and
# is never dropped, so 80 columns still say who an event was about; Details gives way first, then
# Actor and Action shrink a little. Everything is in the detail view on Enter.
AUDIT_COLUMNS = [
    Column("at", "Time", 11, _when),
    Column("actor", "Actor", 22, lambda e: printable(e.actor), min_width=16, flex=1, priority=1),
    Column("action", "Action", 17, lambda e: printable(e.action), min_width=13, priority=1),
    Column("target", "Target", 18, target_text, min_width=14, flex=1, priority=2),
    Column("details", "Details", 44, summarize, min_width=16, flex=3),
]

# `f` cycles these: every event, what API keys did (admin actions), what users' apps did (device events).
KINDS: tuple[str | None, ...] = (None, "admin", "device")
KIND_NOUNS = {None: "events", "admin": "admin actions", "device": "device events"}
FILTER_FIELDS = ("actor", "action", "target")


@dataclass(frozen=True)
class AuditFilter:
    """What the audit table shows: the server's filters (``client.audit``)."""

    kind: str | None = None
    actor: str | None = None
    action: str | None = None  # exact, or a prefix when it ends with "." (``push.``)
    target: str | None = None  # a user id or username

    @property
    def active(self) -> bool:
        return any((self.kind, self.actor, self.action, self.target))

    @property
    def noun(self) -> str:
        return KIND_NOUNS.get(self.kind, "events")

    def terms(self) -> str:
        """``actor:desk-anna action:push.`` (the text the `/` prompt reads back)."""
        return " ".join(f"{name}:{getattr(self, name)}" for name in FILTER_FIELDS if getattr(self, name))

    def describe(self) -> str:
        """``device events · actor desk-anna · action push.*``, or ``all events``."""
        parts = [self.noun if self.kind else "all events"]
        for name in FILTER_FIELDS:
            value = getattr(self, name)
            if value:
                shown = f"{value}*" if name == "action" and value.endswith(".") else value
                parts.append(f"{name} {printable(shown, max_length=40)}")
        return " · ".join(parts)


def parse_filter(text: str, current: AuditFilter) -> AuditFilter | str:
    """``actor:NAME action:ACTION target:USER`` (any of them; a bare word is the target) -> a filter
    keeping ``current``'s kind, or an error message naming the field."""
    values: dict[str, str | None] = {name: None for name in FILTER_FIELDS}
    for word in text.split():
        name, sep, value = word.partition(":")
        if not sep:
            name, value = "target", word
        name = name.lower()
        if name not in values:
            return f"{name}: not a filter (use actor:, action: or target:)"
        if not value:
            return f"{name}: give a value after the colon"
        if values[name] is not None:
            return f"{name}: given twice"
        values[name] = value
    return replace(current, **values)


def relabel(node: Any, action: str, description: str) -> None:
    """Give ``action``'s binding on ``node`` a new footer label (the filter in force), for this node only."""
    bindings = node._bindings.key_to_bindings
    for key, found in list(bindings.items()):
        if any(b.action == action for b in found):
            # A new list: the class's merged bindings are shared by every instance.
            bindings[key] = [dataclasses.replace(b, description=description) if b.action == action else b for b in found]
    node.refresh_bindings()


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
        target = Text(printable(event.targetName or event.target))
        if event.targetName:
            # The name for people; the id for matching against logs and other tools.
            target.append(f"  (user {printable(event.target)})", style="dim")
        for label, value in (
            ("When", Text(event.at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))),
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
        with Vertical():
            yield Static(head, id="audit-detail-head")
            with VerticalScroll(id="audit-detail-body"):
                yield Static(body, id="audit-detail-text")
            hint = "Esc closes · arrows scroll" + (" · u opens the user" if self.target_user_id else "")
            yield Static(Text(hint), id="audit-detail-hint")

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one("#audit-detail-body").focus()

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


class AuditScreen(ConsoleScreen):
    """The audit log in a paged table, newest first; Enter shows one event in full.

    `f` cycles all events / admin actions (an API key did it) / device events (a user's app did it);
    `/` filters by actor, action and target (on the server); Esc clears the filters, then goes back.
    The status line counts what the table shows and says which filter is on.
    """

    DEFAULT_CSS = """
    AuditScreen #audit-status-row { height: 1; padding: 0 1; }
    AuditScreen #audit-status { width: 1fr; height: 1; }
    AuditScreen #audit-events { height: 1fr; }
    """

    BINDINGS = [
        Binding("f", "cycle_kind", "Kind: all", tooltip="Show all events, admin actions or device events"),
        Binding("slash", "filter", "Filter", tooltip="Filter by actor, action and target"),
    ]

    AUTO_FOCUS = "#audit-events"
    TITLE = "Audit"

    def __init__(self) -> None:
        super().__init__()
        self.filter = AuditFilter()
        self.load_failed = False

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="audit-status-row"):
            yield TablePosition("#audit-events", self.filter.noun, id="audit-position")
            yield Static(Text("Loading audit log…"), id="audit-status")
        yield VirtualTable(AUDIT_COLUMNS, self.fetch_events, empty_text="No events", id="audit-events")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#audit-events", VirtualTable)

    async def fetch_events(self, skip: int, limit: int) -> tuple[int, list[Any]]:
        f = self.filter  # read when the page is asked for: a new filter starts a new query
        page = await self.console_app.api.audit(
            skip=skip, limit=limit, actor=f.actor, action=f.action, target=f.target, kind=f.kind
        )
        return page.totalCount, page.results

    def on_screen_resume(self) -> None:
        # Coming back from another screen, where the admin may just have changed something.
        if self.table.total is not None:
            self.table.reload()

    def reload_data(self) -> None:
        """`r`: the events again, with the same filter (also after an outage)."""
        self.table.reload()

    # ------------------------------------------------------------ filters
    def set_filter(self, new: AuditFilter) -> None:
        if new == self.filter:
            return
        self.filter = new
        self.table.set_fetch(self.fetch_events)
        self._update_status(None)
        self.refresh_bindings()

    def action_cycle_kind(self) -> None:
        index = KINDS.index(self.filter.kind) if self.filter.kind in KINDS else 0
        self.set_filter(replace(self.filter, kind=KINDS[(index + 1) % len(KINDS)]))

    def action_filter(self) -> None:
        self.ask_filter()

    @work(exclusive=True, group="audit-filter", exit_on_error=False)
    async def ask_filter(self) -> None:
        current = self.filter

        def check(text: str) -> str | None:
            parsed = parse_filter(text, current)
            return parsed if isinstance(parsed, str) else None

        answer = await self.ask(
            PromptScreen(
                "Filter the audit log",
                "actor:NAME  action:ACTION (push. = every push.* action)  target:USER (id or username; a bare "
                "word is the target). Empty shows every actor, action and target.",
                value=current.terms(),
                placeholder="actor:desk-anna action:push. target:jane.doe",
                check=check,
                max_length=300,
                submit_label="Filter",
            )
        )
        if answer is None:
            return
        parsed = parse_filter(answer, self.filter)
        if isinstance(parsed, AuditFilter):
            self.set_filter(parsed)

    def escape_one_level(self) -> bool:
        # Esc clears the filters first (one level), then the frame goes back.
        if self.filter.active:
            self.set_filter(AuditFilter())
            return True
        return super().escape_one_level()

    # ------------------------------------------------------------ status
    def _update_status(self, total: int | None) -> None:
        """The position names what is counted (``admin actions 3/57``); then which filter is on."""
        f = self.filter
        relabel(self, "cycle_kind", f"Kind: {f.kind or 'all'}")
        relabel(self, "filter", "Filter: on" if (f.actor or f.action or f.target) else "Filter")
        position = self.query_one("#audit-position", TablePosition)
        if position.noun != f.noun:
            position.noun = f.noun
            position.update_position()
        status = Text(no_wrap=True, overflow="ellipsis")
        if f.active:
            status.append(" · filter: ", style="dim")
            status.append(f.describe(), style="bold yellow")
            status.append(" (Esc clears)", style="dim")
        else:
            status.append(" · filter: none (f admin/device, / actor/action/target)", style="dim")
        status.append(" · newest first · Enter details", style="dim")
        self.query_one("#audit-status", Static).update(status)

    @property
    def status_text(self) -> str:
        """The whole status line as plain text (position first), for tests and the palette."""
        position = self.query_one("#audit-position", TablePosition)
        return f"{position.label}{self.query_one('#audit-status', Static).content}"

    @on(VirtualTable.Loaded, "#audit-events")
    def _loaded(self, event: VirtualTable.Loaded) -> None:
        self.load_failed = False
        self.clear_error()
        self._update_status(event.total)

    @on(VirtualTable.LoadFailed, "#audit-events")
    def _failed(self, event: VirtualTable.LoadFailed) -> None:
        self.load_failed = True
        self.report_error(event.error, retry=self.reload_data)
        self._update_status(self.table.total)

    @on(VirtualTable.RowSelected, "#audit-events")
    def _open(self, event: VirtualTable.RowSelected) -> None:
        self.app.push_screen(AuditDetailScreen(event.row))
