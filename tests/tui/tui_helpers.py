"""What the console's Pilot tests share: an app on the real backend, waiting for a screen, reading what is drawn.

API-side helpers (users, devices, ``wait_for``) live in :mod:`tests.helpers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from textual.geometry import Region
from textual.screen import Screen
from textual.widget import Widget

from console.client import ProtectClient
from console.config import ConnectionProfile
from console.tui.app import ProtectConsoleApp
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import wait_for

SIZE = (100, 30)
SMALL = (80, 24)

S = TypeVar("S", bound=Screen)


def console_app(
    backend,
    key: str | None = None,
    *,
    readonly: bool = False,
    open_user: str | None = None,
    name: str = "test",
    retries: int | None = None,
) -> ProtectConsoleApp:
    """The console against ``backend`` with ``key`` (the admin key by default), as the CLI builds it.

    ``retries``: the real client with fewer read retries (outage tests: a shorter outage to wait out)."""
    profile = ConnectionProfile(name, backend.url, key or backend.admin_key, readonly=readonly)
    client = None if retries is None else ProtectClient(profile.url, profile.api_key, retries=retries)
    return ProtectConsoleApp(profile, open_user=open_user, client=client)


async def open_screen(
    app: ProtectConsoleApp, pilot, key: str | None, screen_class: type[S], ready: Callable[[S], object] = lambda s: True
) -> S:
    """Press ``key`` (a number key; None: already on the way), wait for ``screen_class`` and until ``ready(screen)``."""
    if key is not None:
        await pilot.press(key)
    await wait_for(lambda: isinstance(app.screen, screen_class))
    screen: S = app.screen  # type: ignore[assignment]
    await wait_for(lambda: bool(ready(screen)))
    return screen


def table_loaded(table: VirtualTable) -> bool:
    """The table knows its total and has its first row (or is empty)."""
    return table.total is not None and (table.total == 0 or table.row_at(0) is not None)


async def detail_ready(app: ProtectConsoleApp, pilot) -> UserDetailScreen:
    """The user detail screen with its user loaded and the key's permissions known."""
    await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
    await wait_for(lambda: app.whoami is not None)
    await pilot.pause()  # let the loaded sections lay out before reading them
    return app.screen  # type: ignore[return-value]


def table_lines(table: VirtualTable) -> list[str]:
    """Every line a virtual table draws (header included), as plain text."""
    return ["".join(segment.text for segment in table.render_line(y)) for y in range(table.size.height)]


def drawn_lines(widget: Widget) -> list[str]:
    """What the widget draws, line by line, as plain text (padding included)."""
    width, height = widget.outer_size  # `size` alone would crop the line's end
    strips = widget.render_lines(Region(0, 0, width, height))
    return ["".join(segment.text for segment in strip) for strip in strips]


def text_of(screen: Screen, selector: str) -> str:
    """What the widget at ``selector`` draws, as plain text (Rich renderables included)."""
    widget = screen.query_one(selector)
    strips = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def toasts(app, severity: str | None = None) -> list[str]:
    """The messages of the toasts (notifications) the app has shown and still holds, oldest first;
    ``severity`` (``"error"``...): only those. The one place tests read Textual's private list."""
    return [n.message for n in app._notifications if severity is None or n.severity == severity]


def footer_keys_shown(screen: Screen) -> list[Any]:
    """The FooterKey widgets the screen's footer shows (Textual keeps the class in a private module:
    imported here only)."""
    from textual.widgets._footer import FooterKey

    return list(screen.query(FooterKey))


def footer_labels(screen: Screen) -> list[str]:
    """The descriptions the screen's footer shows, in order."""
    return [key.description for key in footer_keys_shown(screen)]


def burst(app, keys: list[str]) -> None:
    """Queue ``keys`` as a terminal delivers typed-ahead input: all at once, without waiting for the app
    between them (``pilot.press`` waits for idle after every key, which no typist does)."""
    import unicodedata

    from textual import events
    from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key

    for key in keys:
        if len(key) == 1 and not key.isalnum():
            key = _character_to_key(key)
        try:
            char = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
        except KeyError:
            char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)
