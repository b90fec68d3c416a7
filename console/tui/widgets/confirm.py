"""One reusable confirmation modal for every changing action."""

from __future__ import annotations

from contextlib import suppress

from rich.text import Text
from textual.css.query import NoMatches
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from ...safe_text import printable


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a change. Cancel has focus; ``y`` confirms, ``n``/Esc cancels.

    ``title`` and ``body`` may be :class:`rich.text.Text` (already safe) or plain
    strings, which are cleaned and shown literally (never parsed as markup).
    """

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen #confirm-title { text-style: bold; margin-bottom: 1; }
    ConfirmScreen #confirm-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str | Text, body: str | Text = "", *, confirm_label: str = "Yes (y)") -> None:
        super().__init__()
        self._title = title if isinstance(title, Text) else Text(printable(title))
        self._body = body if isinstance(body, Text) else Text(printable(body))
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self._title, id="confirm-title", markup=False)
            if self._body.plain:
                yield Static(self._body, id="confirm-body", markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel (n)", id="cancel", variant="default")
                yield Button(self._confirm_label, id="confirm", variant="error")

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
