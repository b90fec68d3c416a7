"""The footer: the keys that work now, where the focus is, fitted to the terminal's width.

Under a modal (a confirmation, a prompt) the footer of the screen underneath is the one on view, so it
shows the modal's keys (y/n/Esc), never the screen's own (U/T/R...) that do not work while it is open.
Keys whose action cannot act now (check_action False, or None: greyed) are left out rather than dimmed:
dim colour alone is not enough (with NO_COLOR it is grey 244 against 248).
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

COMPACT_BELOW = 120  # columns: less padding between keys below this

# When the keys do not fit, these go first, in this order: the palette key is also on the
# header's tab line, and `?` / `q` work everywhere and are listed in help. Then `r` and Esc, which
# work on every screen too (the user screen's seven actions need the whole of 80 columns).
DROP_ORDER: tuple[str, ...] = (
    "copy_user_id",
    "copy_user_email",
    "delete_user",  # the user screen's rare keys: in help and the palette
    "command_palette",
    "quit",
    "help",
    "reload",
    "escape",
)


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
        self._watched_modal: Screen[Any] | None = None
        self.shown_keys: list[str] = []  # what the last compose kept (tests read it)
        self.source: Screen[Any] | None = None  # whose keys the last compose showed
        self._recompose_pending = False
        self._composed: tuple[object, ...] = ()  # the signature of what the last compose showed
        self._planned: tuple[Screen[Any], list[Widget]] | None = None

    def _available(self) -> int:
        return self.size.width or self.app.size.width

    def key_source(self) -> Screen[Any]:
        """The screen whose keys are shown: a modal open over this footer's screen, else the screen."""
        screen = self.screen
        try:
            stack = self.app.screen_stack
        except Exception:  # noqa: BLE001 - no stack (shutting down)
            return screen
        if screen in stack:
            above = stack[stack.index(screen) + 1 :]
            if above and isinstance(above[-1], ModalScreen) and all(isinstance(s, ModalScreen) for s in above):
                return above[-1]
        return screen

    def _footer_keys(self, source: Screen[Any]) -> list[Widget]:
        """Textual's Footer.compose for ``source``, with only the keys that work now."""
        active_bindings = source.active_bindings
        items: list[Widget] = []
        seen: set[str] = set()
        for _node, binding, enabled, tooltip in active_bindings.values():
            if not binding.show or not enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            key = FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                tooltip=tooltip,
            )
            # Born in the footer's mode: a FooterKey starts compact, and the binding flipping it on
            # mount restyled every key once more (the bulk of a recompose's CSS work).
            key.set_reactive(FooterKey.compact, self.compact)
            key.set_class(self.compact, "-compact", update=False)
            items.append(key.data_bind(compact=Footer.compact))
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            found = active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
            if found is not None and found.enabled:
                binding = found.binding
                items.append(
                    FooterKey(
                        binding.key,
                        self.app.get_key_display(binding),
                        binding.description,
                        binding.action,
                        classes="-command-palette",
                        tooltip=binding.tooltip or binding.description,
                    )
                )
        return items

    def _plan(self) -> tuple[Screen[Any], list[Widget]]:
        """Whose keys to show, and the keys that fit (the palette's and the rare ones dropped first)."""
        source = self.key_source()
        items: list[Widget] = self._footer_keys(source)
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
        return source, items

    def _signature(self, source: Screen[Any], items: list[Widget]) -> tuple[object, ...]:
        """What a compose with these keys would show: equal signatures, equal footers."""
        keys = tuple(
            (item.key, item.key_display, item.description, item.action, item.tooltip, item.classes)
            for item in items
            if isinstance(item, FooterKey)
        )
        return id(source), self.compact, keys

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        source, items = self._planned or self._plan()
        self._planned = None
        self.source = source
        self._composed = self._signature(source, items)
        self.shown_keys = [item.key for item in items if isinstance(item, FooterKey)]
        yield from items

    def on_mount(self) -> None:
        # (Textual also runs Footer.on_mount: handlers run for every class in the MRO.)
        self._fit_width()
        self.app.screen_change_signal.subscribe(self, self._screen_changed)

    def _screen_changed(self, _screen: Screen[Any]) -> None:
        """A screen was pushed or popped: follow a modal over ours (its keys, as its focus moves)."""
        if not self.is_attached:
            return
        source = self.key_source()
        modal = source if source is not self.screen else None
        if modal is not None and modal is not self._watched_modal:
            modal.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self._watched_modal = modal
        if source is not self.source:
            self._bindings_ready = True
            self._recompose_soon()

    def bindings_changed(self, screen: Screen[Any]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.key_source():
            self._recompose_soon()

    def _recompose_soon(self) -> None:
        # Bindings change in bursts at start-up (focus, whoami, the first rows): one recompose after
        # the refresh, with the state as it is then, instead of one per change (each mounts every key).
        if self._recompose_pending:
            return
        self._recompose_pending = True
        # On the footer's own queue: call_after_refresh queues on the screen in front at that moment, and a
        # modal closing then (Stop attack confirmed) took the callback with it, leaving the footer stale for good.
        self.call_later(self._recompose_now)

    async def _recompose_now(self) -> None:
        self._recompose_pending = False
        if not self.is_attached:
            return
        # Bindings are often "updated" to what they were (start-up sends four updates; two change nothing):
        # a recompose mounts every key again, ~8 ms, so only when the keys on view would change.
        if self._bindings_ready:
            plan = self._plan()
            if self._signature(*plan) == self._composed:
                return
            self._planned = plan  # compose takes these keys rather than building them again
        await self.recompose()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_width()

    def _fit_width(self) -> None:
        width = self._available()
        if width == self._laid_out_for:
            return
        self._laid_out_for = width
        self.compact = width < COMPACT_BELOW
        if self._bindings_ready and self.is_attached:
            self._recompose_soon()
