"""TOTP: enrolment through the app and verification with replay and lock-out rules."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import pyotp
from sqlalchemy import update

from ...models import TotpEnrollResult, TotpVerifyResult
from ..metrics import TotpOutcome, totp_outcome
from ..store import Store, users
from .audit import record
from .common import Principal
from .lockout import totp_lock
from .settings import read_settings
from .users import require_user

STEP_SECONDS = 30
ISSUER = "Protect"
WRONG_CODE = "code does not match"


def enroll(store: Store, device: Any, now: datetime) -> TotpEnrollResult:
    """The app becomes the user's authenticator; any earlier secret stops working."""
    secret = pyotp.random_base32()
    with store.write() as conn:
        user = require_user(conn, device.user_id, lock=True)
        conn.execute(
            update(users)
            .where(users.c.id == user.id)
            .values(totp_secret=secret, totp_status="ENROLLED", totp_last_step=None, totp_failures=0)
        )
        record(conn, f"user:{user.username}", "totp.enroll", user.id, {"replaced": user.totp_secret is not None}, now)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return TotpEnrollResult(otpauthUri=uri)


def current_step(now: datetime) -> int:
    return int(now.replace(tzinfo=UTC).timestamp()) // STEP_SECONDS


def verify(
    store: Store, user_id: str, code: str, now: datetime, *, actor: Principal | None = None, audited: bool = False
) -> TotpVerifyResult:
    """Accept the current step or one either side, never a step at or before the last accepted."""
    with store.write() as conn:
        max_failures = read_settings(conn)[0].totp.maxFailures
        user = require_user(conn, user_id, lock=True)
        result, step, outcome = _check(user, code, now, max_failures)
        if result.valid:
            conn.execute(update(users).where(users.c.id == user.id).values(totp_last_step=step, totp_failures=0))
        elif result.reason == WRONG_CODE and not totp_lock(user.totp_failures, max_failures).locked:
            # Only wrong codes count toward the lock-out (it is against guessing); a replay of
            # an accepted code proves the secret, and a double-submitted login must not lock.
            conn.execute(update(users).where(users.c.id == user.id).values(totp_failures=users.c.totp_failures + 1))
        if audited and actor is not None:
            record(conn, actor, "totp.verify", user.id, {"valid": result.valid, "reason": result.reason}, now)
    totp_outcome(outcome)
    return result


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    totp = pyotp.TOTP(secret)
    step = current_step(now)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def _check(
    user: Any, code: str, now: datetime, max_failures: int
) -> tuple[TotpVerifyResult, int | None, TotpOutcome]:
    if user.totp_secret is None or user.totp_status != "ENROLLED":
        return TotpVerifyResult(valid=False, reason="TOTP is not enrolled for this user"), None, TotpOutcome.NOT_ENROLLED
    if totp_lock(user.totp_failures, max_failures).locked:
        reason = f"TOTP locked after {max_failures} failed codes; an admin must reset TOTP"
        return TotpVerifyResult(valid=False, reason=reason), None, TotpOutcome.LOCKED
    step = _matching_step(user.totp_secret, code, now)
    if step is None:
        return TotpVerifyResult(valid=False, reason=WRONG_CODE), None, TotpOutcome.WRONG_CODE
    if user.totp_last_step is not None and step <= user.totp_last_step:
        return TotpVerifyResult(valid=False, reason="code was already used"), None, TotpOutcome.REPLAY
    return TotpVerifyResult(valid=True), step, TotpOutcome.VALID

