"""The console's screens, in tab order: the one list the header, the number keys, help and the palette read."""

from __future__ import annotations

from typing import NamedTuple


class Tab(NamedTuple):
    key: str  # the number key that shows it
    mode: str  # the app mode (one screen stack per mode)
    label: str  # header tab, help and palette wording
    module: str  # console.tui.screens.<module>, imported on first use (keeps start-up light)
    screen_class: str


TABS: tuple[Tab, ...] = (
    Tab("1", "users", "Users", "users", "UsersScreen"),
    Tab("2", "activity", "Activity", "activity", "ActivityScreen"),
    Tab("3", "settings", "Settings", "settings", "SettingsScreen"),
    Tab("4", "privacy", "Privacy", "privacy", "PrivacyScreen"),
    Tab("5", "audit", "Audit", "audit", "AuditScreen"),
)

# The screen the console opens on, and where Esc ends up.
HOME = TABS[0].mode
