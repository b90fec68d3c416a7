"""How the CLI and the console show things: statuses (words and colours), the facts people read
(minimum OS, the push-bombing window) and times, in one zone policy.

Rich only (loaded on first use), never Textual: the CLI imports this without loading the console.
Untrusted values pass through ``printable``; what comes back is plain ``str`` (to show literally)
or ``Text``.

Zone policy. A time a person reads on their own screen (tables, the user screen, modals, toasts)
is in the local zone of the machine showing it, and names the zone wherever a bare time could be
read in the wrong one (modals, toasts). A time that is copied and compared between people and
machines (CLI output, JSON, the audit trail's details) is in UTC and says so (``Z`` or ``UTC``).
Naive datetimes are UTC (the service writes them so). Every relative time ("5m ago", "today")
reads the clock through :func:`now`, so a test freezes them all by patching that one function.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .models import BOMBING_WINDOW, MIN_OS_MAJOR, EnrollmentStatus, PushStatus, SystemUser, UserState
from .safe_text import printable

if TYPE_CHECKING:
    from rich.text import Text

# ------------------------------------------------------------------ statuses

# Colour says it at a glance; the word is always there, so it still reads under NO_COLOR.
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

# Symbol + word, so the status still reads under NO_COLOR; the short form fits 7 cells.
_ENROLLMENT_LOOK: dict[str, tuple[str, str, str]] = {
    EnrollmentStatus.ENROLLED: ("✓ enrolled", "✓ yes", "green"),
    EnrollmentStatus.NOT_ENROLLED: ("· none", "·", "dim"),
    EnrollmentStatus.DISABLED: ("✗ disabled", "✗ off", "dim"),
    EnrollmentStatus.PENDING_ACTIVATION: ("… pending", "… pend", "yellow"),
    EnrollmentStatus.ENROLLMENT_EXPIRED: ("! expired", "! exp", "red"),
    EnrollmentStatus.IN_ENROLLMENT: ("… grace", "… grace", "yellow"),
    EnrollmentStatus.PRE_ENROLLMENT: ("… pre-enroll", "… pre", "yellow"),
}
ENROLLMENT_STYLES: dict[str, str] = {status: look[2] for status, look in _ENROLLMENT_LOOK.items()}

# An activated account is the usual case: plain; the others stand out.
USER_STATE_STYLES: dict[str, str] = {
    UserState.ACTIVATED: "",
    UserState.SUSPENDED: "red",
    UserState.STAGED: "yellow",
}


def _text(label: str, style: str) -> Text:
    # rich on first use: `protect-console ... --json` and the times below never load it.
    from rich.text import Text

    return Text(label, style=style, end="")


def status_style(status: object) -> str:
    """The colour of a push status, an enrollment status or an account state ('' for anything else)."""
    key = str(getattr(status, "value", status))
    return PUSH_STATUS_STYLES.get(key) or ENROLLMENT_STYLES.get(key) or USER_STATE_STYLES.get(key, "")


def push_status_text(status: PushStatus | str, *, fraud: bool = False) -> Text:
    """``denied``, or ``denied FRAUD`` when the user reported it; styled by :data:`PUSH_STATUS_STYLES`."""
    text = _text(printable(status), PUSH_STATUS_STYLES.get(str(status), ""))
    if fraud:
        text.append(FRAUD_MARK, style=FRAUD_STYLE)
    return text


def enrollment_text(status: EnrollmentStatus | str) -> Text:
    label, _short, style = _ENROLLMENT_LOOK.get(str(status), (printable(status).lower(), "", ""))
    return _text(label, style)


def enrollment_short(status: EnrollmentStatus | str) -> Text:
    """As :func:`enrollment_text`, for narrow table columns (7 cells)."""
    look = _ENROLLMENT_LOOK.get(str(status))
    if look is None:
        return _text(printable(status).lower(), "")
    return _text(look[1], look[2])


def user_state_text(state: UserState | str) -> Text:
    """``activated``, ``suspended`` (red), ``staged`` (yellow)."""
    return _text(printable(state).lower(), USER_STATE_STYLES.get(str(state), ""))


# ------------------------------------------------------------------ people


def user_name(user: SystemUser) -> str:
    """The person's name as the directory has it (cleaned), or ''."""
    return printable(user.displayname or f"{user.firstname} {user.lastname}".strip())


def user_label(user: SystemUser, max_length: int = 60) -> str:
    """``Name (username)`` for titles, confirmations and toasts: cleaned and cropped."""
    name = user_name(user)
    username = printable(user.username, max_length=max_length)
    if name and name != username:
        return f"{printable(name, max_length=max_length)} ({username})"
    return username


# ------------------------------------------------------------------ facts in words


def min_os_words() -> str:
    """``iOS 13+ or Android 8+``: the systems enrolment accepts (models.MIN_OS_MAJOR)."""
    return " or ".join(f"{system} {major}+" for system, major in MIN_OS_MAJOR.items())


def window_words(window: timedelta = BOMBING_WINDOW) -> str:
    """``last hour``, ``last 2 hours``, ``last 30 minutes``: a window (the push-bombing one by default)."""
    minutes = int(window.total_seconds() // 60)
    if minutes == 60:
        return "last hour"
    if minutes % 60 == 0:
        return f"last {minutes // 60} hours"
    return f"last {minutes} minutes"


# ------------------------------------------------------------------ times


def now() -> datetime:
    """The time every relative display reads (aware, UTC). Patch this one function to freeze them."""
    return datetime.now(UTC)


def _current(given: datetime | None) -> datetime:
    # Looked up at call time, so a patched ``display.now`` is what every formatter sees.
    return given if given is not None else now()


def aware(when: datetime) -> datetime:
    """``when`` with a zone: a naive datetime is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def local(when: datetime) -> datetime | None:
    """``when`` in the local zone; None when it cannot be (9999-12-31 seen from east of UTC)."""
    try:
        return aware(when).astimezone()
    except (OverflowError, ValueError):
        return None


def zone_name(when: datetime) -> str:
    """``CET``, or the offset (``+0900``) where the zone has no name."""
    return when.tzname() or when.strftime("%z")


def _today(given: datetime | None) -> datetime | None:
    return local(_current(given))


# Relative: how long ago.


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """A compact age like ``5m ago`` (``in 5m`` ahead), the date after 60 days; '' for None."""
    if when is None:
        return ""
    when = aware(when)
    seconds = int((_current(now) - when).total_seconds())
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


def since(when: datetime, now: datetime | None = None) -> str:
    """``12s ago``, ``7m ago``, ``3h ago``: seconds up to two minutes, minutes up to two hours (live panels)."""
    seconds = max(0, int((_current(now) - aware(when)).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 120 * 60:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


# Local: what a person reads on their own screen.


def stamp(when: datetime | None) -> str:
    """A local date and time to the minute; '' for None."""
    if when is None:
        return ""
    there = local(when)
    return there.strftime("%Y-%m-%d %H:%M") if there is not None else utc_minute(when)


def stamp_zone(when: datetime | None) -> str:
    """Like :func:`stamp`, with the zone it is in (``2026-12-02 14:05 CET``): for modals and toasts,
    where a bare time could be read in the wrong zone."""
    if when is None:
        return ""
    there = local(when)
    if there is None:
        return utc_minute(when)  # already says UTC
    return f"{there.strftime('%Y-%m-%d %H:%M')} {zone_name(there)}"


def stamp_seconds_zone(when: datetime) -> str:
    """``2026-12-02 14:05:09 CET``: one event in full."""
    there = local(when)
    if there is None:
        return aware(when).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{there.strftime('%Y-%m-%d %H:%M:%S')} {zone_name(there)}"


def local_text(when: datetime | None, fmt: str) -> str:
    """``when`` in the local zone as ``fmt`` (in UTC where it cannot be local); '' for None."""
    if when is None:
        return ""
    there = local(when)
    return (there or aware(when)).strftime(fmt)


def day(when: datetime | None) -> str:
    """The local date; '' for None."""
    return local_text(when, "%Y-%m-%d")


def clock(
    when: datetime,
    now: datetime | None = None,
    *,
    time: str = "%H:%M",
    other_day: str = "%Y-%m-%d %H:%M",
    zone: bool = False,
) -> str:
    """The local time (``14:05``) today, with the date (``other_day``) on another day; ``zone`` adds it."""
    there = local(when)
    if there is None:
        return utc_minute(when)
    today = _today(now)
    text = there.strftime(time if today is not None and there.date() == today.date() else other_day)
    return f"{text} {zone_name(there)}" if zone else text


def clock_zone(when: datetime | None, now: datetime | None = None) -> str:
    """A local time with its zone, the date only when it is not today: ``14:05 CET``, ``Dec 03 14:05 CET``."""
    if when is None:
        return ""
    return clock(when, now, other_day="%b %d %H:%M", zone=True)


# UTC: what is copied and compared (CLI output, JSON, the audit trail's details).


def utc_stamp(when: datetime | None, missing: str = "") -> str:
    """``2026-12-02 14:05:09Z``; ``missing`` for None."""
    if when is None:
        return missing
    return aware(when).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def utc_minute(when: datetime) -> str:
    """``2026-12-02 14:05 UTC``."""
    return aware(when).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def utc_compact(when: datetime, at: datetime | None = None) -> str:
    """``09:38 UTC`` on the day of ``at`` (an event's own time), else ``2026-12-05 09:38 UTC``."""
    utc = aware(when).astimezone(UTC)
    if at is not None and utc.date() == aware(at).astimezone(UTC).date():
        return utc.strftime("%H:%M UTC")
    return utc_minute(utc)


def iso_z(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z`` (``2026-12-02T14:05:09.123456Z``), for JSON; None for None."""
    if when is None:
        return None
    return aware(when).astimezone(UTC).isoformat().replace("+00:00", "Z")
