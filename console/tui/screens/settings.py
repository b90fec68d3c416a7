"""Settings: the push and TOTP policy, each value with its range and what it means."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ...client import ApiError, BackendUnavailable, PreconditionFailed
from ...models import SETTING_RANGES, Permission, ProtectSettings
from ...safe_text import printable
from ..modals.confirm import ConfirmScreen
from ..widgets.setting_editor import SettingEditor
from .base import ConsoleScreen


@dataclass(frozen=True)
class SettingSpec:
    """One editable value: where it lives in the settings document and how to explain it."""

    key: str  # dotted path, e.g. "push.concurrentLimit.max"
    label: str
    meaning: str  # plain words, drawn from the Protect FAQ
    unit: str = ""

    @property
    def is_bool(self) -> bool:
        return self.key not in SETTING_RANGES

    @property
    def range(self) -> tuple[int, int] | None:
        return SETTING_RANGES.get(self.key)

    def value(self, settings: ProtectSettings) -> Any:
        node: Any = settings
        for part in self.key.split("."):
            node = getattr(node, part)
        return node

    def patch(self, value: Any) -> dict[str, Any]:
        """The smallest PATCH body that sets only this value."""
        body: Any = value
        for part in reversed(self.key.split(".")):
            body = {part: body}
        return body

    def show(self, value: Any) -> str:
        if self.is_bool:
            return "on" if value else "off"
        return f"{value} {self.unit}".strip()

    def allowed(self) -> str:
        if self.range is None:
            return "on / off"
        low, high = self.range
        return f"{low}-{high} {self.unit}".strip()


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "push.concurrentLimit.enabled",
        "Limit concurrent push attempts",
        "On: Protect blocks extra push notifications for the same resource while earlier ones are "
        "still pending, which protects users against push bombing. Off: no limit.",
    ),
    SettingSpec(
        "push.concurrentLimit.max",
        "Max concurrent push attempts",
        "Against fraudulent push attempts, Protect blocks more than this many notifications per "
        "user and resource within the timeout period. The user can try again after the timeout, "
        "or after approving or denying the first request.",
        "per resource",
    ),
    SettingSpec(
        "push.maxPendingPerUser",
        "Max pending pushes per user",
        "However the resource is named, Protect blocks more than this many pending notifications per user "
        "across all resources: varying the resource does not get past the limit above.",
        "per user",
    ),
    SettingSpec(
        "push.timeoutSeconds",
        "Push timeout",
        "How long a user has to answer a push notification (sixty seconds by default); after that "
        "it expires. If a phone's clock is not set automatically, notifications may arrive expired.",
        "seconds",
    ),
    SettingSpec(
        "push.requireUserVerification",
        "Require biometric",
        "Approvals must be confirmed with biometrics (Touch ID, Face ID) or the device passcode. "
        "Recommended against push bombing: an accidental tap is not enough to approve.",
    ),
    SettingSpec(
        "totp.maxFailures",
        "TOTP max failures",
        "Wrong verification (TOTP) codes within 15 minutes before the user's TOTP is locked: for 1 minute, "
        "then 5, 15 and 60 minutes on repeated lock-outs. A good code does not clear the count; a TOTP reset "
        "by an admin unlocks at once.",
        "codes",
    ),
    SettingSpec(
        "rateLimits.totpVerifyPerMinute",
        "TOTP checks rate limit",
        "TOTP checks each API key, and each client address, may make per minute (all service processes "
        "together); more are refused with 429 until the minute ends.",
        "per minute",
    ),
    SettingSpec(
        "rateLimits.pushPerMinute",
        "Push requests rate limit",
        "Push requests each API key, and each client address, may make per minute; more are refused with 429.",
        "per minute",
    ),
    SettingSpec(
        "rateLimits.enrollPerMinute",
        "Device enrolment rate limit",
        "Device enrolments each client address may attempt per minute (against guessing enrolment codes); "
        "more are refused with 429.",
        "per minute",
    ),
)


def setting_prompt(spec: SettingSpec, settings: ProtectSettings | None) -> Text:
    """A multi-line option: label, value and range on the first line, the meaning below."""
    value = spec.show(spec.value(settings)) if settings is not None else "…"
    line = Text()
    line.append(f"{spec.label:<32}", style="bold")
    line.append(f"{value:<18}", style="bold")
    line.append(f"allowed {spec.allowed()}", style="dim")
    line.append("\n")
    line.append(spec.meaning)
    line.append(f" ({spec.key})", style="dim italic")
    return line


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
        *(Binding(key, f"move('{action}')", show=False) for key, action in (
            ("j,down", "cursor_down"), ("k,up", "cursor_up"), ("pagedown", "page_down"), ("pageup", "page_up"),
            ("home", "first"), ("end", "last"),
        )),
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
        return bool(self.app.can(Permission.SETTINGS_WRITE))

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
            settings, etag = await self.app.api.get_settings()
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

    def focused_spec(self) -> SettingSpec | None:
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
    async def edit_setting(self, spec: SettingSpec) -> None:
        assert self.settings is not None
        old = spec.value(self.settings)
        etag = self.etag  # the version the admin is looking at: a change since then is a 412
        if spec.is_bool:
            new: Any = not old
        else:
            low, high = spec.range  # type: ignore[misc]
            new = await self.ask(SettingEditor(spec.label, spec.key, old, low, high, spec.unit))
            if new is None or new == old:
                return
        body = Text()
        body.append(f"{spec.key}\n", style="dim")
        body.append(f"{spec.show(old)} -> {spec.show(new)}", style="bold")
        if not await self.ask(ConfirmScreen(f"Change {spec.label}?", body, confirm_label="Change (y)")):
            return
        try:
            settings, new_etag = await self.app.api.update_settings(spec.patch(new), etag)
        except PreconditionFailed:
            message = f"{spec.label} not changed: the settings were changed by someone else. Reloaded; check and edit again."
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
