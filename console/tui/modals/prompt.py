"""A small modal asking for one value (grace days, a caller's 6-digit code, a username to type back)."""

from __future__ import annotations

import re
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from ...models import GRACE_DAYS_MAX, TOTP_CODE_PATTERN
from ...safe_text import printable
from .base import ConsoleModal, literal

Check = Callable[[str], str | None]  # value -> error message naming the field, or None when valid


class PromptScreen(ConsoleModal[str | None]):
    """Dismisses with the typed value, or None on Esc/Cancel. Enter submits when valid."""

    AUTO_FOCUS = "Input"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str | Text,
        label: str | Text,
        *,
        value: str = "",
        placeholder: str = "",
        check: Check | None = None,
        restrict: str | None = None,
        max_length: int = 0,
        submit_label: str = "OK",
        check_as_typed: bool = False,
    ) -> None:
        super().__init__()
        self._check_as_typed = check_as_typed  # the problem shows while typing, not only on Enter
        self._title = literal(title)
        self._label = literal(label)
        self._value = value
        self._placeholder = placeholder
        self._check = check
        self._restrict = restrict
        self._max_length = max_length
        self._submit_label = submit_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="card"):
            yield Static(self._title, id="prompt-title", classes="card-title", markup=False)
            yield Static(self._label, id="prompt-label", markup=False)
            yield Input(
                self._value,
                placeholder=self._placeholder,
                restrict=self._restrict,
                max_length=self._max_length,
                id="prompt-input",
            )
            yield Static("", id="prompt-error", classes="card-error", markup=False)
            with Horizontal(id="prompt-buttons", classes="card-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._submit_label, id="submit", variant="primary")

    def _submit(self) -> None:
        value = self.query_one(Input).value.strip()
        problem = self._check(value) if self._check else None
        if problem:
            self.query_one("#prompt-error", Static).update(Text(problem))
            return
        self.dismiss(value)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._check_as_typed and self._check is not None:
            self.query_one("#prompt-error", Static).update(Text(self._check(event.value.strip()) or ""))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "submit":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def check_grace_days(value: str) -> str | None:
    if value == "":
        return None  # no grace period
    if not value.isdigit() or not 0 <= int(value) <= GRACE_DAYS_MAX:
        return f"grace days: enter a whole number from 0 to {GRACE_DAYS_MAX} (0 or empty = no grace period)"
    return None


def check_totp_code(value: str) -> str | None:
    if not re.fullmatch(TOTP_CODE_PATTERN, value):
        return "code: enter the 6 digits the caller reads out"
    return None


def grace_days_prompt(user_label: str) -> PromptScreen:
    title = Text("Reset all MFA for ")
    title.append(user_label, style="bold")
    return PromptScreen(
        title,
        "Grace period in days: the user may log in without MFA while re-enrolling (0 or empty = none).",
        value="7",
        check=check_grace_days,
        restrict=r"[0-9]*",
        max_length=3,
        submit_label="Next",
    )


def totp_code_prompt(user_label: str, warning: str = "") -> PromptScreen:
    """``warning``: how close the user is to the TOTP lock-out (a wrong code counts toward it)."""
    title = Text("Verify caller ")
    title.append(user_label, style="bold")
    label = Text("Type the 6-digit code the caller reads from their authenticator app.")
    if warning:
        label.append("\n" + printable(warning), style="bold yellow")
    return PromptScreen(
        title,
        label,
        placeholder="123456",
        check=check_totp_code,
        restrict=r"[0-9]*",
        max_length=6,
        submit_label="Verify",
    )


def type_to_confirm_prompt(title: Text, explanation: str, expected: str, *, submit_label: str) -> PromptScreen:
    """A prompt that only goes ahead when ``expected`` (e.g. the username) is typed exactly."""

    def check(value: str) -> str | None:
        if value != expected:
            return f"type {expected} exactly to go ahead (Esc cancels)"
        return None

    return PromptScreen(title, explanation, placeholder=expected, check=check, submit_label=submit_label)
