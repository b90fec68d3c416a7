"""The one-time enrollment code, its QR code and when it expires."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static

from ...display import stamp_zone
from ...models import EnrollmentCode
from ...safe_text import printable
from ..widgets.qr import QrCode
from .base import ConsoleModal


class EnrollmentCodeScreen(ConsoleModal[None]):
    """The one-time enrollment code, its QR code and when it expires.

    The QR code sits left of the text, so the whole code fits an 80x24 terminal without
    scrolling (a QR code half off screen cannot be scanned); below ``SIDE_BY_SIDE`` columns
    the text goes under the code instead.
    """

    SIDE_BY_SIDE = 78  # columns
    AUTO_FOCUS = None  # the app's: the first focusable widget
    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, user_label: str, code: EnrollmentCode) -> None:
        super().__init__()
        self.user_label = user_label
        self.code = code

    def compose(self) -> ComposeResult:
        title = Text("Enrollment code for ")
        title.append(self.user_label, style="bold")
        with VerticalScroll(classes="card"), Horizontal(id="enroll-layout"):
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
