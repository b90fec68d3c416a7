"""The TOTP lock-out rule, in one place: verification enforces it, user answers report it.

Wrong codes are counted in a window that slides with each one: a wrong code less than
``FAILURE_WINDOW`` after the previous one adds to the count, a later one starts it again at 1.
A good code does not clear the count (it would give a guesser ``maxFailures - 1`` more tries
after every real login). Reaching ``maxFailures`` locks TOTP for the next step of ``BACKOFF``
(1, 5, 15, then 60 minutes); when it ends the count starts again; a day after a lock-out ended
(``LOCKOUT_MEMORY``) the back-off starts again from its first step. A TOTP reset by an admin
clears everything.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from ...models import TotpLockState
from ..clock import to_wire

FAILURE_WINDOW = timedelta(minutes=15)
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=60))
LOCKOUT_MEMORY = timedelta(hours=24)


class TotpFailures(NamedTuple):
    """The lock-out columns of a user's row (``users.totp_failures`` ... ``totp_lockouts``)."""

    failures: int
    failure_at: datetime | None  # the last wrong code
    locked_until: datetime | None  # the last lock-out's end (in force while in the future)
    lockouts: int  # lock-outs in a row

    @classmethod
    def of(
        cls, failures: int | None, failure_at: datetime | None, locked_until: datetime | None, lockouts: int | None
    ) -> TotpFailures:
        return cls(int(failures or 0), failure_at, locked_until, int(lockouts or 0))


CLEAR = {"totp_failures": 0, "totp_failure_at": None, "totp_locked_until": None, "totp_lockouts": 0}


def is_locked(state: TotpFailures, now: datetime) -> bool:
    return state.locked_until is not None and state.locked_until > now


def counted_failures(state: TotpFailures, now: datetime) -> int:
    """The wrong codes that still count: 0 once the window has slid past the last one, or once the lock-out
    they started has ended (a lock-out keeps its count while in force, so it reads "5 of 5")."""
    if state.failure_at is None or now - state.failure_at >= FAILURE_WINDOW:
        return 0
    if state.locked_until is not None and state.failure_at < state.locked_until <= now:
        return 0
    return state.failures


def after_wrong_code(state: TotpFailures, now: datetime, max_failures: int) -> tuple[TotpFailures, timedelta | None]:
    """The state after one more wrong code (never called while locked), and the lock-out it starts, if any."""
    count = counted_failures(state, now) + 1
    if count < max_failures:
        return state._replace(failures=count, failure_at=now), None
    level = _level(state, now)
    duration = BACKOFF[min(level, len(BACKOFF) - 1)]
    return TotpFailures(count, now, now + duration, level + 1), duration


def totp_lock(state: TotpFailures, max_failures: int, now: datetime) -> TotpLockState:
    """What the admin API shows: the failures that count, and the lock-out in force."""
    locked = is_locked(state, now)
    return TotpLockState(
        failures=counted_failures(state, now),
        maxFailures=max_failures,
        locked=locked,
        lockedUntil=to_wire(state.locked_until) if locked else None,
        lockouts=_level(state, now),
    )


def _level(state: TotpFailures, now: datetime) -> int:
    """Lock-outs in a row that the next one builds on (forgotten ``LOCKOUT_MEMORY`` after the last ended)."""
    if state.locked_until is None or now - state.locked_until >= LOCKOUT_MEMORY:
        return 0
    return state.lockouts
