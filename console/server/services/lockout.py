"""The TOTP lock-out rule, in one place: verification enforces it, user answers report it."""

from __future__ import annotations

from ...models import TotpLockState


def totp_lock(failures: int | None, max_failures: int) -> TotpLockState:
    """``failures`` consecutive wrong codes against the ``maxFailures`` setting in force.

    Locked means every code is refused until an admin resets TOTP. Lowering the setting
    below a user's count locks them; raising it above unlocks them.
    """
    count = int(failures or 0)
    return TotpLockState(failures=count, maxFailures=max_failures, locked=count >= max_failures)
