"""The console's display helpers: they live in :mod:`console.display`, shared with the CLI.

Kept so that the screens' imports keep working while they move to ``console.display``.
"""

from __future__ import annotations

from ..display import (
    FRAUD_MARK,
    FRAUD_STYLE,
    PUSH_STATUS_STYLES,
    ago,
    clock_zone,
    enrollment_short,
    enrollment_text,
    push_status_text,
    short_age,
    stamp,
    stamp_zone,
    user_label,
    user_name,
)

__all__ = [
    "FRAUD_MARK",
    "FRAUD_STYLE",
    "PUSH_STATUS_STYLES",
    "ago",
    "clock_zone",
    "enrollment_short",
    "enrollment_text",
    "push_status_text",
    "short_age",
    "stamp",
    "stamp_zone",
    "user_label",
    "user_name",
]
