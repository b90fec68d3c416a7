"""The audit log's words: one-line summaries of an event's details, its changes, and its JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from ..client import USER_ID_RE
from ..display import aware, utc_compact
from ..models import AuditEvent
from ..safe_text import printable


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"push": {"timeoutSeconds": 60}}`` -> ``{"push.timeoutSeconds": 60}``."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value} if prefix else {}


_ISO_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")


def _as_time(value: Any) -> datetime | None:
    """An ISO timestamp in the details (the server writes naive ones in UTC), else None."""
    if not isinstance(value, str) or not _ISO_TIME_RE.fullmatch(value):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return aware(when)


def short_id(value: Any) -> str:
    """A 24-hex id cut to its first 8 digits (enough to tell apart; the full one is on Enter)."""
    text = str(value)
    return f"{text[:8]}…" if USER_ID_RE.match(text) else text


def _span(seconds: float) -> str:
    """``45s``, ``10m``, ``3h``, ``7d``: rounded, a length of time at a glance."""
    if seconds < 90:
        return f"{round(seconds)}s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)}m"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)}h"
    return f"{round(seconds / 86400)}d"


def _short(value: Any, at: datetime | None = None, *, short_ids: bool = False) -> str:
    when = _as_time(value)
    if when is not None:
        return utc_compact(when, at)
    if isinstance(value, str):
        return short_id(value) if short_ids else value
    return json.dumps(value, ensure_ascii=False, default=str)


def change_lines(details: dict[str, Any], at: datetime | None = None, *, short_ids: bool = False) -> list[str]:
    """``key: old -> new`` for each changed value, from either shape the server writes:
    ``{"changes": {key: {"before", "after"}}}`` or ``{"before": ..., "after": ...}``."""

    def show(value: Any) -> str:
        return _short(value, at, short_ids=short_ids)

    changes = details.get("changes")
    if (
        isinstance(changes, dict)
        and changes
        and all(isinstance(c, dict) and ("before" in c or "after" in c) for c in changes.values())
    ):
        return [f"{key}: {show(c.get('before'))} -> {show(c.get('after'))}" for key, c in changes.items()]
    if "before" not in details and "after" not in details:
        return []
    before, after = details.get("before"), details.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        old = _flatten(before if isinstance(before, dict) else {})
        new = _flatten(after if isinstance(after, dict) else {})
        return [
            f"{key}: {show(old.get(key, '-'))} -> {show(new.get(key, '-'))}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
    return [f"{show(before)} -> {show(after)}"]


def _device_words(device: dict[str, Any]) -> str:
    """``Apple iPhone 13 (iOS 17.1)`` from a push endpoint's ``device`` object."""
    name = " ".join(str(device.get(k) or "").strip() for k in ("make", "model")).strip()
    system = " ".join(str(device.get(k) or "").strip() for k in ("os", "osVersion")).strip()
    return f"{name} ({system})" if name and system else name or system


def _action_summary(action: str, details: dict[str, Any], at: datetime | None) -> list[str] | None:
    """The human part first for the actions people look up most; None: use the generic summary."""
    before, after = details.get("before"), details.get("after")
    if action == "device.enroll" and isinstance(after, dict):
        # Model and OS are what a caller can confirm ("yes, my Galaxy"); the new id comes last.
        what = ", ".join(str(after[k]) for k in ("model", "os") if after.get(k))
        parts = [what] if what else []
        if after.get("device"):
            parts.append(f"device {short_id(after['device'])}")
        return parts
    if action == "device.replace" and isinstance(before, str) and isinstance(after, str):
        return [f"device {short_id(before)} replaced by {short_id(after)}"]
    if action == "device.unenroll" and isinstance(before, dict):
        device = before.get("device")
        parts = [f"removed {_device_words(device)}" if isinstance(device, dict) else "removed the push device"]
        if before.get("id"):
            parts.append(f"device {short_id(before['id'])}")
        return parts
    if action == "enrollment.create":
        expires = _as_time(details.get("expiresAt"))
        if expires is None:
            return None
        # The time first: at 80 columns the cell is about 26 cells wide.
        valid = f" ({_span((expires - at).total_seconds())})" if at and expires > at else ""
        return [f"expires {utc_compact(expires, at)}{valid}"]
    if action == "totp.verify" and "valid" in details:
        if details.get("valid"):
            return ["code valid"]
        reason = details.get("reason")
        return [f"code NOT valid: {reason}" if reason else "code NOT valid"]
    return None


def summarize_details(details: dict[str, Any], action: str = "", at: datetime | None = None) -> str:
    """One line: what changed (``key: old -> new``), then any other details as ``key=value``.

    Times read as ``09:38 UTC`` and ids as their first 8 digits: the full event is on Enter.
    """
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    special = _action_summary(action, details, at) if action else None
    if special is not None:
        return printable("; ".join(special))
    parts = change_lines(details, at, short_ids=True)
    skip = ("changes", "before", "after") if parts else ()
    rest = {k: v for k, v in details.items() if k not in skip}
    parts.extend(
        f"{key}={_short(value, at, short_ids=True)}" for key, value in _flatten(rest).items() if value is not None
    )
    return printable("; ".join(parts))


def summarize(event: AuditEvent) -> str:
    return summarize_details(event.details, event.action, event.at)


def target_text(event: AuditEvent) -> str:
    """The username when the target is a user (the server joins it), else the raw target."""
    return printable(event.targetName or event.target)


def pretty_json(value: Any) -> Text:
    """Indented JSON as literal text; every line cleaned (JSON escapes C0 controls, not bidi marks)."""
    dumped = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    return Text("\n".join(printable(line) for line in dumped.splitlines()))
