"""Small display helpers shared by the console's screens: ages, statuses, user labels.

Everything returned here is already safe: untrusted values pass through
``printable`` and come back as plain ``str`` (to be shown literally) or ``Text``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from rich.text import Text

from ..models import EnrollmentStatus, PushStatus, SystemUser
from ..safe_text import printable

# Symbol + word, so the status still reads under NO_COLOR.
_ENROLLMENT_LOOK: dict[str, tuple[str, str]] = {
    EnrollmentStatus.ENROLLED: ("✓ enrolled", "green"),
    EnrollmentStatus.NOT_ENROLLED: ("· none", "dim"),
    EnrollmentStatus.DISABLED: ("✗ disabled", "dim"),
    EnrollmentStatus.PENDING_ACTIVATION: ("… pending", "yellow"),
    EnrollmentStatus.ENROLLMENT_EXPIRED: ("! expired", "red"),
    EnrollmentStatus.IN_ENROLLMENT: ("… grace", "yellow"),
    EnrollmentStatus.PRE_ENROLLMENT: ("… pre-enroll", "yellow"),
}

# The one place push statuses get their colour (Activity, User detail, the push-bombing panel):
# colour says it at a glance; the word is always there, so it still reads under NO_COLOR.
PUSH_STATUS_STYLES: dict[str, str] = {
    PushStatus.APPROVED: "green",
    PushStatus.DENIED: "red",
    PushStatus.BLOCKED: "bold magenta",
    PushStatus.EXPIRED: "dim",
    PushStatus.PENDING: "yellow",
}
# Appended to a status the user reported as fraud: a plain word (a flag symbol is missing from
# many terminal fonts), in capitals so it stands out under NO_COLOR too.
FRAUD_MARK = " FRAUD"
FRAUD_STYLE = "bold red"


def enrollment_text(status: EnrollmentStatus | str) -> Text:
    label, style = _ENROLLMENT_LOOK.get(str(status), (printable(status).lower(), ""))
    return Text(label, style=style, end="")


# Short forms for narrow table columns (7 cells).
_ENROLLMENT_SHORT: dict[str, str] = {
    EnrollmentStatus.ENROLLED: "✓ yes",
    EnrollmentStatus.NOT_ENROLLED: "·",
    EnrollmentStatus.DISABLED: "✗ off",
    EnrollmentStatus.PENDING_ACTIVATION: "… pend",
    EnrollmentStatus.ENROLLMENT_EXPIRED: "! exp",
    EnrollmentStatus.IN_ENROLLMENT: "… grace",
    EnrollmentStatus.PRE_ENROLLMENT: "… pre",
}


def enrollment_short(status: EnrollmentStatus | str) -> Text:
    _label, style = _ENROLLMENT_LOOK.get(str(status), ("", ""))
    return Text(_ENROLLMENT_SHORT.get(str(status), printable(status).lower()), style=style, end="")


def push_status_text(status: PushStatus | str, *, fraud: bool = False) -> Text:
    """``denied``, or ``denied FRAUD`` when the user reported it; styled by :data:`PUSH_STATUS_STYLES`."""
    text = Text(printable(status), style=PUSH_STATUS_STYLES.get(str(status), ""), end="")
    if fraud:
        text.append(FRAUD_MARK, style=FRAUD_STYLE)
    return text


def user_name(user: SystemUser) -> str:
    """The person's name as the directory has it (cleaned), or ''."""
    full = user.displayname or f"{user.firstname} {user.lastname}".strip()
    return printable(full)


def user_label(user: SystemUser, max_length: int = 60) -> str:
    """``Name (username)`` for titles, confirmations and toasts: cleaned and cropped."""
    name = user_name(user)
    username = printable(user.username, max_length=max_length)
    if name and name != username:
        return f"{printable(name, max_length=max_length)} ({username})"
    return username


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """A compact age like ``5m ago``; '' for None."""
    if when is None:
        return ""
    now = now or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = int((now - when).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m"
    elif seconds < 86400:
        text = f"{seconds // 3600}h"
    elif seconds < 86400 * 60:
        text = f"{seconds // 86400}d"
    else:
        return when.strftime("%Y-%m-%d")
    return f"in {text}" if future else f"{text} ago"


def short_age(when: datetime | None, now: datetime | None = None) -> str:
    """Like :func:`ago` but at most 8 cells (``5m ago``, ``Sep 2025``), for narrow table columns."""
    text = ago(when, now)
    if len(text) > 8 and when is not None:
        return when.strftime("%b %Y")
    return text


def stamp(when: datetime | None) -> str:
    """A local date and time to the minute; '' for None."""
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone().strftime("%Y-%m-%d %H:%M")
    except (OverflowError, ValueError):  # e.g. 9999-12-31 seen from east of UTC
        return when.strftime("%Y-%m-%d %H:%M UTC")


def _local(when: datetime) -> datetime | None:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone()
    except (OverflowError, ValueError):
        return None


def stamp_zone(when: datetime | None) -> str:
    """Like :func:`stamp`, with the zone it is in (``2026-12-02 14:05 CET``): for modals and toasts,
    where a bare time could be read in the wrong zone."""
    if when is None:
        return ""
    local = _local(when)
    if local is None:
        return stamp(when)  # already says UTC
    return f"{local.strftime('%Y-%m-%d %H:%M')} {local.tzname() or local.strftime('%z')}"


def clock_zone(when: datetime | None, now: datetime | None = None) -> str:
    """A local time with its zone, the date only when it is not today: ``14:05 CET``, ``Dec 03 14:05 CET``."""
    if when is None:
        return ""
    local = _local(when)
    if local is None:
        return stamp(when)
    today = _local(now or datetime.now(timezone.utc))
    zone = local.tzname() or local.strftime("%z")
    if today is not None and local.date() == today.date():
        return f"{local.strftime('%H:%M')} {zone}"
    return f"{local.strftime('%b %d %H:%M')} {zone}"
