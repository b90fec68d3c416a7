"""`?`: the keys that work right now, on this screen, for this key's role."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from ..tabs import TABS
from ..widgets.virtual_table import VirtualTable
from .base import ConsoleModal

GLOBAL_KEYS: list[tuple[str, str]] = [
    *((tab.key, f"{tab.label}: its list (whatever was opened over it closes)") for tab in TABS),
    ("r", "Reload this screen (after an error: retry, the key's role included)"),
    ("ctrl+p", "Command palette: this screen's actions, the screens, and user lookup by email or username"),
    ("?", "This help"),
    ("Esc", "Back one level: search or panel -> the list, then the previous screen, then Users"),
    ("q", "Quit"),
]

TABLE_KEYS: list[tuple[str, str]] = [
    ("↑ ↓ / j k", "Move"),
    ("PgUp PgDn Home End", "Page, first, last"),
    ("← →", "Scroll sideways (only on terminals too narrow for the columns)"),
    ("Enter", "Open"),
]

# Screens without a table (settings list, user detail): only moving and scrolling.
SCROLL_KEYS: list[tuple[str, str]] = [
    ("↑ ↓", "Move / scroll"),
    ("PgUp PgDn Home End", "Page, top, bottom"),
]


def _keys_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, show_header=False, padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, description in rows:
        table.add_row(Text(key), Text(description))
    return table


class HelpScreen(ConsoleModal[None]):
    AUTO_FOCUS = None  # the app's: the first focusable widget

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        # The bindings the screen underneath offers right now (check_action already applied).
        self.screen_keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        for _key, active in under.active_bindings.items():
            binding = active.binding
            if active.node is not under or not active.enabled or not binding.show or not binding.description:
                continue
            if binding.action in seen:
                continue
            seen.add(binding.action)
            self.screen_keys.append((under.app.get_key_display(binding), binding.tooltip or binding.description))
        self._title = getattr(under, "TITLE", "") or "Screen"
        self._has_table = bool(under.query(VirtualTable))  # table keys only where there is a table

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="card"):
            if self.screen_keys:
                yield Static(_keys_table(f"{self._title} keys", self.screen_keys), markup=False)
            if self._has_table:
                yield Static(_keys_table("Tables", TABLE_KEYS), markup=False)
            else:
                yield Static(_keys_table("Moving", SCROLL_KEYS), markup=False)
            yield Static(_keys_table("Everywhere", GLOBAL_KEYS), markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
