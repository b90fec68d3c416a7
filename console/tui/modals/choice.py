"""A confirmation with more than one way to go ahead."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from .base import ConsoleModal, literal


class ChoiceScreen(ConsoleModal[str | None]):
    """A confirmation with more than one way to go ahead. Cancel has focus; ``n``/Esc cancel; each
    choice has its own key (``y`` for the plain one). Dismisses with the chosen key, or None."""

    BINDINGS = [Binding("n", "cancel", "No"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str | Text, body: str | Text, choices: list[tuple[str, str]]) -> None:
        """``choices``: (key, button label) pairs, e.g. ``[("d", "Deactivate first (d)"), ("y", "Code only (y)")]``."""
        super().__init__()
        self._title = literal(title)
        self._body = literal(body)
        self._choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="card -warning"):
            yield Static(self._title, id="choice-title", classes="card-title", markup=False)
            yield Static(self._body, id="choice-body", markup=False)
            with Horizontal(id="choice-buttons", classes="card-buttons"):
                yield Button("Cancel (n)", id="cancel")
                for key, label in self._choices:
                    yield Button(label, id=f"choice-{key}", variant="error")

    def on_key(self, event: events.Key) -> None:
        for key, _label in self._choices:
            if event.key == key:
                event.stop()
                self.dismiss(key)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id or ""
        self.dismiss(button.removeprefix("choice-") if button.startswith("choice-") else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
