"""The footer: the screen's keys, fitted to the terminal's width instead of running off its edge."""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

COMPACT_BELOW = 120  # columns: less padding between keys below this

# When the keys do not fit, these go first, in this order: the palette key is also on the
# header's tab line, and `?` / `q` work everywhere and are listed in help.
DROP_ORDER: tuple[str, ...] = ("command_palette", "quit", "help")


def key_width(key: FooterKey, compact: bool) -> int:
    """Cells one FooterKey takes, from Textual's footer CSS (padding, margins, the palette's border)."""
    width = cell_len(key.key_display)
    if key.description:
        width += 1 + cell_len(key.description)
    palette = key.has_class("-command-palette")
    if compact:
        return width + 1  # margin-right 1; the palette: border-left 1, no padding
    return width + 2 + (2 if palette else 0)  # padding around the key and after the description


class ConsoleFooter(Footer):
    """A Footer that goes compact below :data:`COMPACT_BELOW` columns and leaves out the
    keys in :data:`DROP_ORDER` (in turn) when the screen's own keys would not fit otherwise,
    so the keys that matter on this screen are never the ones pushed off the right edge."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._laid_out_for = 0
        self.shown_keys: list[str] = []  # what the last compose kept (tests read it)

    def _available(self) -> int:
        return self.size.width or self.app.size.width

    def compose(self) -> ComposeResult:
        items: list[Widget] = list(super().compose())
        available = self._available()
        compact = self.compact

        def total() -> int:
            cells = sum(key_width(item, compact) if isinstance(item, FooterKey) else 0 for item in items)
            # The last key's right margin may fall off the edge: only the keys themselves must fit.
            return cells - 1 if compact and cells else cells

        for action in DROP_ORDER:
            if total() <= available:
                break
            for item in items:
                if not isinstance(item, FooterKey):
                    continue
                name = "command_palette" if item.has_class("-command-palette") else item.action
                if name == action or name == f"app.{action}":
                    items.remove(item)
                    break
        self.shown_keys = [item.key for item in items if isinstance(item, FooterKey)]
        yield from items

    def on_mount(self) -> None:
        # (Textual also runs Footer.on_mount: handlers run for every class in the MRO.)
        self._fit_width()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_width()

    def _fit_width(self) -> None:
        width = self._available()
        if width == self._laid_out_for:
            return
        self._laid_out_for = width
        self.compact = width < COMPACT_BELOW
        if self._bindings_ready and self.is_attached:
            self.call_after_refresh(self.recompose)
