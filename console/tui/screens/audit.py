"""Audit: every admin-API change, newest first, with its before/after on Enter."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from ...display import local_text
from ...models import AuditEvent
from ...safe_text import printable
from ..audit_text import summarize, target_text
from ..modals.audit_detail import AuditDetailScreen
from ..modals.prompt import PromptScreen
from ..widgets.virtual_table import Column, TablePosition, VirtualTable
from .base import ConsoleScreen


def _when(event: AuditEvent) -> str:
    # To the minute: the order is the table's, and the seconds are in the detail view (Enter).
    return local_text(event.at, "%m-%d %H:%M")


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
    values: dict[str, str | None] = dict.fromkeys(FILTER_FIELDS)
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
        yield VirtualTable(
            AUDIT_COLUMNS, self.fetch_events, empty_text="No events", id="audit-events", on_select=self._open
        )

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#audit-events", VirtualTable)

    async def fetch_events(self, skip: int, limit: int) -> tuple[int, list[Any]]:
        f = self.filter  # read when the page is asked for: a new filter starts a new query
        page = await self.console_app.api.audit(
            skip=skip, limit=limit, actor=f.actor, action=f.action, target=f.target, kind=f.kind
        )
        return page.totalCount or 0, page.results  # counted: these requests never say count=false

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
        self.relabel("cycle_kind", f"Kind: {f.kind or 'all'}")
        self.relabel("filter", "Filter: on" if (f.actor or f.action or f.target) else "Filter")
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

    def _open(self, event: VirtualTable.RowSelected) -> None:
        self.app.push_screen(AuditDetailScreen(event.row))
