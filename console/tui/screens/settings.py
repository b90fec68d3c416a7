"""Settings: the push and TOTP policy, each value with its range and what it means (models.SETTINGS)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ...client import ApiError, BackendUnavailable, PreconditionFailed
from ...models import SETTINGS, Permission, ProtectSettings, Setting
from ...safe_text import printable
from ..modals.confirm import ConfirmScreen
from ..modals.prompt import PromptScreen
from .base import ConsoleScreen


def allowed(setting: Setting) -> str:
    """``on / off``, or the range with its unit (``30-300 seconds``)."""
    if setting.range is None:
        return "on / off"
    low, high = setting.range
    return f"{low}-{high} {setting.unit}".strip()


def setting_prompt(setting: Setting, settings: ProtectSettings | None) -> Text:
    """A multi-line option: label, value and range on the first line, the meaning below."""
    value = setting.show(setting.read(settings)) if settings is not None else "…"
    line = Text()
    line.append(f"{setting.label:<32}", style="bold")
    line.append(f"{value:<18}", style="bold")
    line.append(f"allowed {allowed(setting)}", style="dim")
    line.append("\n")
    line.append(setting.meaning)
    line.append(f" ({setting.key})", style="dim italic")
    return line


def value_prompt(setting: Setting, current: int) -> PromptScreen:
    """Asks for a new whole number for ``setting``; only a value in its range gets through."""
    assert setting.range is not None
    high = setting.range[1]

    def check(text: str) -> str | None:
        return setting.check(text)[1] or None

    return PromptScreen(
        setting.label,
        f"{setting.key}: now {setting.show(current)}; allowed {allowed(setting)}",
        value=str(current),
        check=check,
        restrict=r"[0-9]*",
        max_length=len(str(high)),
        submit_label="Save",
        check_as_typed=True,  # a range is easy to overshoot: say so before Enter
    )


class SettingsList(OptionList):
    """The settings, one option each: the arrows, j/k, PgUp/PgDn and Home/End move, as on every list."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]


class SettingsScreen(ConsoleScreen):
    """Read the settings with their ETag; `e` (or Enter) edits the highlighted value behind a confirmation.

    Keys typed ahead count: `3 j j e` typed in one burst, before the values have loaded, edits the
    third setting once they are in (the list starts highlighted on the first one, so `j` moves at once).
    """

    DEFAULT_CSS = """
    SettingsScreen #settings-title { text-style: bold; padding: 0 1; }
    SettingsScreen #settings-status { padding: 0 1; color: $text-muted; height: auto; }
    SettingsScreen #settings-list { height: 1fr; border: none; padding: 0 1; }
    """

    BINDINGS = [
        Binding("e", "edit", "Edit", tooltip="Edit the highlighted setting"),
        # The list's own keys, on the screen too: typed ahead right after `3`, they arrive before the
        # new screen has given the list the focus, and must still move it.
        *(
            Binding(key, f"move('{action}')", show=False)
            for key, action in (
                ("j,down", "cursor_down"),
                ("k,up", "cursor_up"),
                ("pagedown", "page_down"),
                ("pageup", "page_up"),
                ("home", "first"),
                ("end", "last"),
            )
        ),
    ]
    ACTION_PERMISSIONS = {"edit": Permission.SETTINGS_WRITE}

    AUTO_FOCUS = "#settings-list"
    TITLE = "Settings"

    def __init__(self) -> None:
        super().__init__()
        self.settings: ProtectSettings | None = None
        self.etag = ""
        self.notice: Text | None = None  # outcome of the last edit, kept across reloads
        self._edit_when_loaded = False  # `e` typed before the values arrived

    def compose_body(self) -> Iterable[Widget]:
        yield Static(Text("Settings: push and TOTP policy"), id="settings-title")
        yield Static(Text("Loading settings…"), id="settings-status")
        yield SettingsList(*(Option(setting_prompt(spec, None), id=spec.key) for spec in SETTINGS), id="settings-list")

    def on_mount(self) -> None:
        # Highlighted from the start: `j` typed before the values load moves to the second setting.
        self.query_one("#settings-list", OptionList).highlighted = 0
        # Whether editing is allowed is known only once whoami answers.
        self.watch(self.app, "whoami", self._update_hint, init=False)
        self.load_settings()

    def on_screen_resume(self) -> None:
        # Fresh values when the admin comes back, but not while an edit holds the ETag it read.
        if self.settings is not None and not self._editing():
            self.load_settings()

    # ------------------------------------------------------------ permission
    def can_edit(self) -> bool:
        return self.console_app.can(Permission.SETTINGS_WRITE)

    def action_unavailable(self, action: str) -> str | None:
        if action == "edit":
            reason = super().action_unavailable(action)  # read-only profile, role, permissions loading
            if reason is not None:
                return reason
            if self.settings is None and self.error_visible:
                return "The settings are not loaded (r reloads)."
            if self._editing():
                return "An edit is already open."
            return None  # still loading: `e` waits for the values (see action_edit)
        return super().action_unavailable(action)

    # ----------------------------------------------------------------- load
    def reload_data(self) -> None:
        self.load_settings()

    @work(exclusive=True, group="settings-load", exit_on_error=False)
    async def load_settings(self) -> None:
        options = self.query_one("#settings-list", OptionList)
        options.loading = self.settings is None
        try:
            settings, etag = await self.console_app.api.get_settings()
        except ApiError as exc:
            self._edit_when_loaded = False  # an `e` typed before a failed load is not kept for later
            self.report_error(exc, retry=self.load_settings)
            self.query_one("#settings-status", Static).update(Text(f"Could not load settings: {printable(exc)}"))
            return
        finally:
            options.loading = False
        self.clear_error()
        self._show(settings, etag)
        if self._edit_when_loaded:
            self._edit_when_loaded = False
            self.action_edit()

    def _show(self, settings: ProtectSettings, etag: str) -> None:
        self.settings, self.etag = settings, etag
        options = self.query_one("#settings-list", OptionList)
        for spec in SETTINGS:
            options.replace_option_prompt(spec.key, setting_prompt(spec, settings))
        if options.highlighted is None:
            options.highlighted = 0  # `e` works straight away, without an arrow key first
        self._update_hint()
        self.refresh_bindings()

    def _update_hint(self, *_: object) -> None:
        if self.settings is None:
            return
        if self.can_edit():
            hint = "e or Enter edits the highlighted value (you confirm old -> new)."
        else:
            hint = "Read-only: this key or profile cannot change settings."
        text = Text(hint)
        if self.notice is not None:
            text.append("\n")
            text.append_text(self.notice)
        self.query_one("#settings-status", Static).update(text)

    def _status(self, notice: Text) -> None:
        self.notice = notice
        self._update_hint()

    def action_move(self, action: str) -> None:
        options = self.query_one("#settings-list", OptionList)
        self.set_focus(options)
        getattr(options, f"action_{action}")()

    # ----------------------------------------------------------------- edit
    def _editing(self) -> bool:
        return any(w.group == "settings-edit" and w.is_running for w in self.workers)

    def focused_spec(self) -> Setting | None:
        index = self.query_one("#settings-list", OptionList).highlighted
        return SETTINGS[index] if index is not None and 0 <= index < len(SETTINGS) else None

    def action_edit(self) -> None:
        reason = self.action_unavailable("edit")
        if reason is not None:
            self.notify(reason, title="Not now", severity="warning", markup=False)
            return
        if self.settings is None:
            self._edit_when_loaded = True  # typed ahead: edit the highlighted setting once the values are in
            return
        spec = self.focused_spec()
        if spec is not None:
            self.edit_setting(spec)

    @on(OptionList.OptionSelected, "#settings-list")
    def _enter(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_edit()  # Enter edits too; on a read-only key it says why not

    @work(exclusive=True, group="settings-edit", exit_on_error=False)
    async def edit_setting(self, spec: Setting) -> None:
        assert self.settings is not None
        old = spec.read(self.settings)
        etag = self.etag  # the version the admin is looking at: a change since then is a 412
        new: Any
        if spec.is_bool:
            new = not old
        else:
            typed = await self.ask(value_prompt(spec, old))
            new = spec.check(typed)[0] if typed is not None else None
            if new is None or new == old:
                return
        body = Text()
        body.append(f"{spec.key}\n", style="dim")
        body.append(f"{spec.show(old)} -> {spec.show(new)}", style="bold")
        if not await self.ask(ConfirmScreen(f"Change {spec.label}?", body, confirm_label="Change (y)")):
            return
        try:
            settings, new_etag = await self.console_app.api.update_settings(spec.patch(new), etag)
        except PreconditionFailed:
            message = (
                f"{spec.label} not changed: the settings were changed by someone else. Reloaded; check and edit again."
            )
            self.notify(message, severity="warning", markup=False)
            self._status(Text(message, style="bold"))
            self.load_settings()
            return
        except BackendUnavailable as exc:
            self.report_error(exc, retry=self.load_settings)
            return
        except ApiError as exc:
            message = f"{spec.label} not changed: {printable(exc)}"
            self.notify(message, severity="error", markup=False)
            self._status(Text(message, style="bold"))
            return
        self.clear_error()
        self._show(settings, new_etag)
        message = f"{spec.label}: {spec.show(old)} -> {spec.show(new)}"
        self.notify(message, title="Setting changed", markup=False)
        self._status(Text(f"Saved. {message}"))
