"""What every console modal shares: a card centred over its screen (styled once in ``app.tcss``), the
widget that has focus when it opens, and literal text."""

from __future__ import annotations

from contextlib import suppress
from typing import ClassVar, TypeVar

from rich.text import Text
from textual.css.query import NoMatches
from textual.screen import ModalScreen

from ...safe_text import printable

ResultT = TypeVar("ResultT")


class ConsoleModal(ModalScreen[ResultT]):
    """Compose one container with ``classes="card"`` (add ``-warning`` for a question before a change);
    its title ``card-title``, a problem line ``card-error``, the buttons row ``card-buttons``."""

    # What has focus on opening: Cancel, so `y` must be meant. Textual focuses it as the card is composed,
    # before any key typed ahead is read (the first focusable widget, an Input, took those keys before).
    AUTO_FOCUS: ClassVar[str | None] = "#cancel"

    def on_mount(self) -> None:
        # Again on mount: composing focuses nothing while the terminal does not have the focus.
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        if self.AUTO_FOCUS and self.focused is None:
            with suppress(NoMatches):
                self.query_one(self.AUTO_FOCUS).focus()


def literal(value: str | Text) -> Text:
    """``value`` as shown: a Text as given (already safe), a string cleaned and never parsed as markup."""
    return value if isinstance(value, Text) else Text(printable(value))
