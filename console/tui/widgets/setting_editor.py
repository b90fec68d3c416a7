"""A modal that asks for one whole-number setting, checked against its allowed range."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Failure, ValidationResult, Validator
from textual.widgets import Button, Input, Static


def check_setting_value(key: str, raw: str, minimum: int, maximum: int) -> tuple[int | None, str]:
    """``(value, "")`` when ``raw`` is a whole number in range, else ``(None, message naming the field)``."""
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        return None, f"{key} must be a whole number from {minimum} to {maximum}"
    if not minimum <= value <= maximum:
        return None, f"{key} must be from {minimum} to {maximum} (got {value})"
    return value, ""


class _InRange(Validator):
    """Lets the Input mark itself invalid while typing (red border), with our wording."""

    def __init__(self, key: str, minimum: int, maximum: int) -> None:
        super().__init__()
        self.key, self.minimum, self.maximum = key, minimum, maximum

    def validate(self, value: str) -> ValidationResult:
        _, message = check_setting_value(self.key, value, self.minimum, self.maximum)
        return self.success() if not message else ValidationResult.failure([Failure(self, value, message)])


class SettingEditor(ModalScreen[int | None]):
    """Edit one integer setting. Enter saves (only a valid value), Esc cancels (returns None)."""

    DEFAULT_CSS = """
    SettingEditor { align: center middle; }
    SettingEditor > Vertical {
        width: 64; max-width: 100%; height: auto; border: thick $primary; background: $surface; padding: 1 2;
    }
    SettingEditor #editor-title { text-style: bold; }
    SettingEditor #editor-range { color: $text-muted; margin-bottom: 1; }
    SettingEditor #editor-error { color: $error; height: auto; min-height: 1; }
    SettingEditor #editor-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    SettingEditor Button { margin-left: 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, label: str, key: str, current: int, minimum: int, maximum: int, unit: str = "") -> None:
        super().__init__()
        self.label = label
        self.key = key
        self.current = current
        self.minimum = minimum
        self.maximum = maximum
        self.unit = unit

    def compose(self) -> ComposeResult:
        unit = f" {self.unit}" if self.unit else ""
        with Vertical():
            yield Static(Text(self.label), id="editor-title")
            yield Static(
                Text(f"{self.key}: now {self.current}{unit}; allowed {self.minimum}-{self.maximum}{unit}"),
                id="editor-range",
            )
            yield Input(
                value=str(self.current),
                type="integer",
                validators=[_InRange(self.key, self.minimum, self.maximum)],
                validate_on=["changed", "submitted"],
                id="editor-input",
            )
            yield Static("", id="editor-error", markup=False)
            with Horizontal(id="editor-buttons"):
                yield Button("Cancel (Esc)", id="editor-cancel")
                yield Button("Save (Enter)", id="editor-save", variant="primary")

    def on_mount(self) -> None:
        field = self.query_one("#editor-input", Input)
        field.focus()
        field.select_all()

    @on(Input.Changed, "#editor-input")
    def _show_problem(self, event: Input.Changed) -> None:
        _, message = check_setting_value(self.key, event.value, self.minimum, self.maximum)
        self.query_one("#editor-error", Static).update(Text(message))

    @on(Input.Submitted, "#editor-input")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "editor-save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        raw = self.query_one("#editor-input", Input).value
        value, message = check_setting_value(self.key, raw, self.minimum, self.maximum)
        if value is None:
            self.query_one("#editor-error", Static).update(Text(message))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
