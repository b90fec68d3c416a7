"""One reusable confirmation modal for every changing action."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from .base import ConsoleModal, literal


class ConfirmScreen(ConsoleModal[bool]):
    """Ask before a change. Cancel has focus; ``y`` confirms, ``n``/Esc cancels.

    ``title`` and ``body`` may be :class:`rich.text.Text` (already safe) or plain
    strings, which are cleaned and shown literally (never parsed as markup).
    """

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str | Text, body: str | Text = "", *, confirm_label: str = "Yes (y)") -> None:
        super().__init__()
        self._title = literal(title)
        self._body = literal(body)
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="card -warning"):
            yield Static(self._title, id="confirm-title", classes="card-title", markup=False)
            if self._body.plain:
                yield Static(self._body, id="confirm-body", markup=False)
            with Horizontal(id="confirm-buttons", classes="card-buttons"):
                yield Button("Cancel (n)", id="cancel", variant="default")
                yield Button(self._confirm_label, id="confirm", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
