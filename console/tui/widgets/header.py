"""The console header: who is connected where, with what role, and the screen tabs."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...safe_text import printable

# (key, mode, label): the number keys that switch screens.
TABS: list[tuple[str, str, str]] = [
    ("1", "users", "Users"),
    ("2", "activity", "Activity"),
    ("3", "settings", "Settings"),
    ("4", "privacy", "Privacy"),
    ("5", "audit", "Audit"),
]


class ConsoleHeader(Static):
    """Two lines: ``Protect Console · profile · URL · role · lock`` and the tabs.

    Reads the app's ``profile``, ``whoami`` and ``current_mode``; updates when
    ``whoami`` arrives (it is fetched in a worker after start-up).
    """

    DEFAULT_CSS = """
    ConsoleHeader { height: 2; background: $panel; color: $text; padding: 0 1; }
    """

    def __init__(self, title: str = "", *, id: str | None = "console-header") -> None:
        super().__init__("", id=id, markup=False)
        self.screen_title = title

    def on_mount(self) -> None:
        self.watch(self.app, "whoami", self._refresh_text, init=False)
        self._refresh_text()

    def _refresh_text(self, *_: object) -> None:
        self.update(self.build_text())

    def build_text(self) -> Text:
        app = self.app
        profile = getattr(app, "profile", None)
        whoami = getattr(app, "whoami", None)
        readonly = bool(getattr(app, "readonly", False))
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        if readonly:
            line.append("🔒 READ-ONLY ", style="bold reverse")
            line.append(" ")
        line.append("Protect Console", style="bold")
        if self.screen_title:
            line.append(f" › {self.screen_title}", style="bold")
        # Role before the URL: at 80 columns the URL is what gets cropped.
        line.append("  ")
        if whoami is None:
            line.append("role: …", style="dim")
        else:
            line.append("role: ")
            line.append(printable(whoami.role), style="bold")
            line.append(f" ({printable(whoami.name, max_length=24)})", style="dim")
        if profile is not None:
            line.append("  ")
            line.append(printable(profile.name, max_length=24), style="italic")
            line.append(" @ ")
            line.append(printable(profile.url, max_length=48))
        line.append("\n")
        current = getattr(app, "current_mode", "")
        for key, mode, label in TABS:
            style = "bold reverse" if mode == current else "dim"
            line.append(f" {key} {label} ", style=style)
            line.append(" ")
        line.append("  ? help  ^p commands", style="dim")
        return line

