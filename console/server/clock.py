"""The server clock. Expiry is decided here, never by what a device reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload


class Clock:
    """Naive-UTC wall clock; tests substitute a :class:`ManualClock`."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


class ManualClock(Clock):
    """A clock that only moves when told to (time is the one thing tests cannot run)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC).replace(tzinfo=None)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@overload
def to_wire(value: datetime) -> datetime: ...
@overload
def to_wire(value: None) -> None: ...
def to_wire(value: datetime | None) -> datetime | None:
    """Stored naive UTC -> aware UTC for the API."""
    return None if value is None else value.replace(tzinfo=UTC)


EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(9000, 1, 1)


def from_wire(value: datetime) -> datetime:
    """Aware (or naive, taken as UTC) -> stored naive UTC.

    Raises ValueError outside 1970..9000, where offset arithmetic would overflow
    and no real timestamp lives; callers turn it into a 400 naming the field.
    """
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("date-time out of range") from None
    if not EARLIEST <= value <= LATEST:
        raise ValueError("date-time out of range (1970..9000)")
    return value
