"""A QR code drawn with half-block characters, and the modal that shows an enrollment code."""

from __future__ import annotations

import segno
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from ...models import EnrollmentCode
from ...safe_text import printable
from ..formatting import stamp_zone

# Light modules are drawn as foreground blocks, white on black: correct with
# colour, and still correct under NO_COLOR on the usual dark terminal.
_QR_STYLE = Style(color="white", bgcolor="black")
_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_text(data: str, *, border: int = 2) -> Text:
    """``data`` as a QR code, two modules per character cell vertically."""
    qr = segno.make(data, error="l", micro=False)
    rows = [[not bool(dark) for dark in row] for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([True] * len(rows[0]))  # pad with a light row
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2]):
        lines.append("".join(_BLOCKS[(t, b)] for t, b in zip(top, bottom)))
    return Text("\n".join(lines), style=_QR_STYLE, no_wrap=True, end="")


class QrCode(Static):
    """A QR code of some text (never parsed as markup)."""

    DEFAULT_CSS = """
    QrCode { width: auto; height: auto; }
    """

    def __init__(self, data: str, *, id: str | None = None) -> None:
        super().__init__(qr_text(data), id=id, markup=False)
        self.data = data


class EnrollmentCodeScreen(ModalScreen[None]):
    """The one-time enrollment code, its QR code and when it expires.

    The QR code sits left of the text, so the whole code fits an 80x24 terminal without
    scrolling (a QR code half off screen cannot be scanned); below ``SIDE_BY_SIDE`` columns
    the text goes under the code instead.
    """

    SIDE_BY_SIDE = 78  # columns

    DEFAULT_CSS = """
    EnrollmentCodeScreen { align: center middle; }
    EnrollmentCodeScreen > VerticalScroll {
        width: auto; min-width: 50; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    EnrollmentCodeScreen #enroll-layout { width: auto; height: auto; }
    EnrollmentCodeScreen #enroll-text { width: 32; height: auto; padding-left: 2; }
    EnrollmentCodeScreen.-stacked #enroll-layout { layout: vertical; }
    EnrollmentCodeScreen.-stacked #enroll-text { width: auto; max-width: 60; padding-left: 0; }
    EnrollmentCodeScreen #enroll-code { text-style: bold; margin: 1 0; }
    EnrollmentCodeScreen #enroll-uri { margin-top: 1; }
    EnrollmentCodeScreen Button { margin-top: 1; }
    """

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, user_label: str, code: EnrollmentCode) -> None:
        super().__init__()
        self.user_label = user_label
        self.code = code

    def compose(self) -> ComposeResult:
        title = Text("Enrollment code for ")
        title.append(self.user_label, style="bold")
        with VerticalScroll():
            with Horizontal(id="enroll-layout"):
                yield QrCode(self.code.uri, id="enroll-qr")
                with Vertical(id="enroll-text"):
                    yield Static(title, markup=False)
                    yield Static(Text(f"Code: {printable(self.code.code)}"), id="enroll-code", markup=False)
                    yield Static(
                        Text(f"Expires {stamp_zone(self.code.expiresAt)}. Scan the code with the Protect app."),
                        id="enroll-expires",
                        markup=False,
                    )
                    yield Static(Text(printable(self.code.uri), style="dim"), id="enroll-uri", markup=False)
                    yield Button("Close", id="close", variant="primary")

    def on_mount(self) -> None:
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        self.set_class(self.app.size.width < self.SIDE_BY_SIDE, "-stacked")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
