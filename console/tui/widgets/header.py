"""The console header: who is connected where, with what role, and the screen tabs."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...safe_text import printable
from ..tabs import TABS

_SEP = " · "


class ConsoleHeader(Static):
    """Exactly two lines, each cropped with an ellipsis, never wrapped:

    ``[🔒 READ-ONLY] Protect Console › Screen · role: admin · profile @ URL · key: name``
    `` 1 Users  2 Activity  3 Settings  4 Privacy  5 Audit   ? help · ^p palette``

    Most important first, so an 80-column terminal crops only the key's name and the
    end of the URL. Reads the app's ``profile``, ``whoami`` and ``current_mode``;
    updates when ``whoami`` arrives (it is fetched in a worker after start-up).
    """

    DEFAULT_CSS = """
    ConsoleHeader {
        height: 2; background: $panel; color: $text; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def __init__(self, title: str = "", *, id: str | None = "console-header") -> None:
        super().__init__("", id=id, markup=False)
        self.screen_title = title

    def on_mount(self) -> None:
        self.watch(self.app, "whoami", self._refresh_text, init=False)
        self._refresh_text()

    def _refresh_text(self, *_: object) -> None:
        self.update(self.build_text())

    def identity_line(self) -> Text:
        app = self.app
        profile = getattr(app, "profile", None)
        whoami = getattr(app, "whoami", None)
        line = Text(end="")
        if bool(getattr(app, "readonly", False)):
            line.append("🔒 READ-ONLY", style="bold reverse")
            line.append(" ")
        line.append("Protect Console", style="bold")
        if self.screen_title:
            line.append(f" › {self.screen_title}", style="bold")
        line.append(_SEP, style="dim")
        if whoami is None:
            line.append("role: …", style="dim")
        else:
            line.append("role: ")
            line.append(printable(whoami.role), style="bold")
        if profile is not None:
            line.append(_SEP, style="dim")
            line.append(printable(profile.name, max_length=24), style="italic")
            line.append(" @ ")
            line.append(printable(profile.url, max_length=64))
        if whoami is not None and whoami.name:
            line.append(_SEP, style="dim")
            line.append(f"key: {printable(whoami.name, max_length=32)}", style="dim")
        return line

    def tabs_line(self) -> Text:
        current = getattr(self.app, "current_mode", "")
        line = Text(end="")
        for tab in TABS:
            style = "bold reverse" if tab.mode == current else "dim"
            line.append(f" {tab.key} {tab.label} ", style=style)
        line.append("   ? help · ^p palette", style="dim")
        return line

    def build_text(self) -> Text:
        # Two lines; the CSS (text-wrap: nowrap) crops each one on its own with an ellipsis.
        line = self.identity_line()
        line.append("\n")
        line.append_text(self.tabs_line())
        return line
