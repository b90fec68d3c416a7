"""The one place a screen shows that the backend failed, with how to retry."""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.widgets import Static

from ...client import BackendUnavailable, Forbidden, Unauthorized
from ...config import ENV_API_KEY
from ...safe_text import printable


def key_refused(profile: object | None) -> str:
    """A refused API key (401): which profile, where its key came from, and how to give another one."""
    if profile is None:
        return f"API key refused (401): set a valid key in {ENV_API_KEY} and restart the console."
    name = printable(str(getattr(profile, "name", "")), max_length=24)
    source = printable(str(getattr(profile, "key_source", "") or ""), max_length=48)
    came = f" (key from {source})" if source else ""
    return (
        f"API key refused (401) for profile {name!r}{came}: put a valid key in {ENV_API_KEY}, or in "
        f"api_key_env / api_key_command of [profiles.{name}] in config.toml, and restart."
    )


def describe_error(error: BaseException, profile: object | None = None) -> str:
    """A one-line, cleaned explanation of ``error`` for a person at the console."""
    message = printable(str(error), max_length=300) or type(error).__name__
    if isinstance(error, BackendUnavailable):
        return f"Backend unavailable: {message}"
    if isinstance(error, Unauthorized):
        return key_refused(profile)
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

    def show(self, error: BaseException, *, can_retry: bool = True, profile: object | None = None) -> None:
        self.message = describe_error(error, profile)
        text = Text("✗ ", style="bold", end="")  # not ⚠: terminals draw it as a wide emoji or not at all
        shown = self.message
        if isinstance(error, Unauthorized):
            # The whole fix must show (it fits three lines at 80 columns); retrying the same key cannot help.
            can_retry = False
        elif cell_len(shown) > SHOWN_CELLS:
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
    def showing(self) -> bool:
        return self.has_class("-visible")
