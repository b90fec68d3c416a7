"""The frame every console screen shares: header, error banner, body, footer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static


class ConsoleScreen(Screen):
    """Subclasses implement ``compose_body``; errors go to ``report_error``.

    Contract used by every screen module:
    - ``self.app.api``: the :class:`console.client.ProtectClient`
    - ``self.app.can(permission) -> bool``: whether the key's role (and the
      profile's read-only flag) allows a changing action
    - ``self.report_error(exc, retry)``: show the error banner with a retry
    - ``self.clear_error()``: hide it after a success
    """

    def compose(self) -> ComposeResult:
        yield Static("Protect Console", id="console-header", markup=False)
        yield Static("", id="error-banner", markup=False)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        return []

    def report_error(self, exc: BaseException, retry: Callable[[], object] | None = None) -> None:
        banner = self.query_one("#error-banner", Static)
        banner.update(str(exc))
        banner.display = True

    def clear_error(self) -> None:
        self.query_one("#error-banner", Static).display = False
