"""A small modal asking for one value (grace days, a caller's 6-digit code)."""

from __future__ import annotations

from contextlib import suppress

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.css.query import NoMatches
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from ...safe_text import printable

Check = Callable[[str], str | None]  # value -> error message naming the field, or None when valid


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the typed value, or None on Esc/Cancel. Enter submits when valid."""

    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical {
        width: 64; max-width: 100%; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    PromptScreen #prompt-title { text-style: bold; margin-bottom: 1; }
    PromptScreen #prompt-error { color: $error; height: auto; }
    PromptScreen #prompt-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    PromptScreen Button { margin-left: 2; }
    """

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
    ) -> None:
        super().__init__()
        self._title = title if isinstance(title, Text) else Text(printable(title))
        self._label = label if isinstance(label, Text) else Text(printable(label))
        self._value = value
        self._placeholder = placeholder
        self._check = check
        self._restrict = restrict
        self._max_length = max_length
        self._submit_label = submit_label

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self._title, id="prompt-title", markup=False)
            yield Static(self._label, id="prompt-label", markup=False)
            yield Input(
                self._value,
                placeholder=self._placeholder,
                restrict=self._restrict,
                max_length=self._max_length,
                id="prompt-input",
            )
            yield Static("", id="prompt-error", markup=False)
            with Horizontal(id="prompt-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._submit_label, id="submit", variant="primary")

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one(Input).focus()

    def _submit(self) -> None:
        value = self.query_one(Input).value.strip()
        problem = self._check(value) if self._check else None
        if problem:
            self.query_one("#prompt-error", Static).update(Text(problem))
            return
        self.dismiss(value)

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
    if not value.isdigit() or not 0 <= int(value) <= 365:
        return "grace days: enter a whole number from 0 to 365 (0 or empty = no grace period)"
    return None


def check_totp_code(value: str) -> str | None:
    if len(value) != 6 or not value.isdigit():
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


class ChoiceScreen(ModalScreen[str | None]):
    """A confirmation with more than one way to go ahead. Cancel has focus; ``n``/Esc cancel; each
    choice has its own key (``y`` for the plain one). Dismisses with the chosen key, or None."""

    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical {
        width: 72; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    ChoiceScreen #choice-title { text-style: bold; margin-bottom: 1; }
    ChoiceScreen #choice-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    ChoiceScreen Button { margin-left: 1; }
    """

    BINDINGS = [Binding("n", "cancel", "No"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str | Text, body: str | Text, choices: list[tuple[str, str]]) -> None:
        """``choices``: (key, button label) pairs, e.g. ``[("d", "Deactivate first (d)"), ("y", "Code only (y)")]``."""
        super().__init__()
        self._title = title if isinstance(title, Text) else Text(printable(title))
        self._body = body if isinstance(body, Text) else Text(printable(body))
        self._choices = choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self._title, id="choice-title", markup=False)
            yield Static(self._body, id="choice-body", markup=False)
            with Horizontal(id="choice-buttons"):
                yield Button("Cancel (n)", id="cancel")
                for key, label in self._choices:
                    yield Button(label, id=f"choice-{key}", variant="error")

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one("#cancel", Button).focus()

    def on_key(self, event) -> None:  # noqa: ANN001 - textual.events.Key
        for key, _label in self._choices:
            if event.key == key:
                event.stop()
                self.dismiss(key)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id or ""
        self.dismiss(button.removeprefix("choice-") if button.startswith("choice-") else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class StopAttackChoice:
    minutes: int
    cancel_pending: bool
    require_user_verification: bool


MAX_BLOCK_MINUTES = 1440


def check_block_minutes(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= MAX_BLOCK_MINUTES:
        return f"minutes: enter a whole number from 1 to {MAX_BLOCK_MINUTES}"
    return None


class StopAttackScreen(ModalScreen[StopAttackChoice | None]):
    """Stop a push attack on one user: how long to block, cancel pending, require biometric.

    Cancel has focus (so ``y`` confirms and ``n``/Esc cancel, as in every confirmation); Tab reaches
    the minutes and the two switches."""

    DEFAULT_CSS = """
    StopAttackScreen { align: center middle; }
    StopAttackScreen > Vertical {
        width: 72; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    StopAttackScreen #stop-title { text-style: bold; margin-bottom: 1; }
    StopAttackScreen #stop-minutes-row { height: auto; }
    StopAttackScreen #stop-minutes-label { width: auto; padding: 1 1 0 0; }
    StopAttackScreen #stop-minutes { width: 10; }
    StopAttackScreen #stop-error { color: $error; height: auto; }
    StopAttackScreen #stop-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    StopAttackScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("y", "confirm", "Stop attack"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: Text, body: Text, *, minutes: int = 15, biometric_already: bool = False) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._minutes = minutes
        self._biometric_already = biometric_already

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self._title, id="stop-title", markup=False)
            yield Static(self._body, id="stop-body", markup=False)
            with Horizontal(id="stop-minutes-row"):
                yield Static("Block new pushes for (minutes):", id="stop-minutes-label", markup=False)
                yield Input(str(self._minutes), restrict=r"[0-9]*", max_length=4, id="stop-minutes")
            yield Checkbox("Cancel pending pushes now", True, id="stop-cancel-pending")
            label = (
                "Require biometric approval (already required for this user)"
                if self._biometric_already
                else "Require biometric approval for this user from now on"
            )
            yield Checkbox(label, self._biometric_already, id="stop-biometric", disabled=self._biometric_already)
            yield Static("", id="stop-error", markup=False)
            with Horizontal(id="stop-buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button("Stop attack (y)", id="confirm", variant="error")

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one("#cancel", Button).focus()

    def _choice(self) -> StopAttackChoice | None:
        value = self.query_one("#stop-minutes", Input).value.strip()
        problem = check_block_minutes(value)
        if problem:
            self.query_one("#stop-error", Static).update(Text(problem))
            return None
        return StopAttackChoice(
            minutes=int(value),
            cancel_pending=self.query_one("#stop-cancel-pending", Checkbox).value,
            require_user_verification=self.query_one("#stop-biometric", Checkbox).value and not self._biometric_already,
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(None)

    def action_confirm(self) -> None:
        choice = self._choice()
        if choice is not None:
            self.dismiss(choice)

    def action_cancel(self) -> None:
        self.dismiss(None)


def type_to_confirm_prompt(title: Text, explanation: str, expected: str, *, submit_label: str) -> PromptScreen:
    """A prompt that only goes ahead when ``expected`` (e.g. the username) is typed exactly."""

    def check(value: str) -> str | None:
        if value != expected:
            return f"type {expected} exactly to go ahead (Esc cancels)"
        return None

    return PromptScreen(title, explanation, placeholder=expected, check=check, submit_label=submit_label)
