"""The one place a screen shows that the backend failed, with how to retry."""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.widgets import Static

from ...client import BackendUnavailable, Forbidden, Unauthorized
from ...safe_text import printable


def describe_error(error: BaseException) -> str:
    """A one-line, cleaned explanation of ``error`` for a person at the console."""
    message = printable(str(error), max_length=300) or type(error).__name__
    if isinstance(error, BackendUnavailable):
        return f"Backend unavailable: {message}"
    if isinstance(error, Unauthorized):
        return f"API key refused: {message}"
    if isinstance(error, Forbidden):
        return f"Not allowed for this key: {message}"
    return message


# Cells of message shown: with the retry hint this stays within the banner's three lines at
# 80 columns (word wrapping included), so "press r to retry" is never the part cut off.
SHOWN_CELLS = 160


class ErrorBanner(Static):
    """Hidden until :meth:`show`; the text is literal (server messages are untrusted)."""

    DEFAULT_CSS = """
    ErrorBanner { display: none; height: auto; max-height: 3; background: $error 30%; color: $text; padding: 0 1; }
    ErrorBanner.-visible { display: block; }
    """

    def __init__(self, *, id: str | None = "error-banner") -> None:
        super().__init__("", id=id, markup=False)
        self.message = ""

    def show(self, error: BaseException, *, can_retry: bool = True) -> None:
        self.message = describe_error(error)
        text = Text("✗ ", style="bold", end="")  # not ⚠: terminals draw it as a wide emoji or not at all
        shown = self.message
        if cell_len(shown) > SHOWN_CELLS:
            shown = set_cell_size(shown, SHOWN_CELLS - 1) + "…"
        text.append(shown)
        if can_retry:
            text.append("  — press r to retry", style="bold")
        self.update(text)
        self.add_class("-visible")

    def hide(self) -> None:
        self.message = ""
        self.remove_class("-visible")

    @property
    def visible(self) -> bool:
        return self.has_class("-visible")
