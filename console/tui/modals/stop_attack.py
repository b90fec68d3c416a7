"""Stop a push attack on one user: how long to block, cancel pending, require biometric."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Static

from ...models import BLOCK_MINUTES, BLOCK_MINUTES_DEFAULT
from .base import ConsoleModal


@dataclass(frozen=True)
class StopAttackChoice:
    minutes: int
    cancel_pending: bool
    require_user_verification: bool


def check_block_minutes(value: str) -> str | None:
    low, high = BLOCK_MINUTES
    if not value.isdigit() or not low <= int(value) <= high:
        return f"minutes: enter a whole number from {low} to {high}"
    return None


class StopAttackScreen(ConsoleModal[StopAttackChoice | None]):
    """Stop a push attack on one user: how long to block, cancel pending, require biometric.

    Cancel has focus (so ``y`` confirms and ``n``/Esc cancel, as in every confirmation); Tab reaches
    the minutes and the two switches."""

    BINDINGS = [
        Binding("y", "confirm", "Stop attack"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, title: Text, body: Text, *, minutes: int = BLOCK_MINUTES_DEFAULT, biometric_already: bool = False
    ) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._minutes = minutes
        self._biometric_already = biometric_already

    def compose(self) -> ComposeResult:
        with Vertical(classes="card -warning"):
            yield Static(self._title, id="stop-title", classes="card-title", markup=False)
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
            yield Static("", id="stop-error", classes="card-error", markup=False)
            with Horizontal(id="stop-buttons", classes="card-buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button("Stop attack (y)", id="confirm", variant="error")

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
