"""A QR code drawn with half-block characters (the enrollment modal shows one)."""

from __future__ import annotations

import segno
from rich.style import Style
from rich.text import Text
from textual.widgets import Static

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
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(_BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return Text("\n".join(lines), style=_QR_STYLE, no_wrap=True, end="")


class QrCode(Static):
    """A QR code of some text (never parsed as markup)."""

    DEFAULT_CSS = """
    QrCode { width: auto; height: auto; }
    """

    def __init__(self, data: str, *, id: str | None = None) -> None:
        super().__init__(qr_text(data), id=id, markup=False)
        self.data = data
