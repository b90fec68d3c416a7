"""TOTP: enrolment through the app and verification with replay and lock-out rules."""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pyotp
from sqlalchemy import bindparam, or_, select, update

from ...models import TotpEnrollResult, TotpVerifyResult
from .. import secretbox
from ..errors import ApiProblem, not_found
from ..metrics import TotpOutcome, totp_outcome
from ..store import RawConn, Store, users
from .audit import record
from .common import Principal
from .keys import KEY_IS_LIVE, key_is_live, revoked
from .lockout import totp_lock
from .settings import read_settings, settings_at, settings_version
from .users import ENROLLED, require_user

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
            .values(totp_secret=_sealed(store, conn, user.id, secret), totp_status="ENROLLED", totp_last_step=None, totp_failures=0)
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
        result, step, outcome = _check(_opened(store, user_id, user), code, now, max_failures)
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
    try:
        key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    except (binascii.Error, ValueError):
        return None  # not a secret any code can match
    step = current_step(now)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(_hotp(key, candidate), code):
            return candidate
    return None


def _hotp(key: bytes, counter: int) -> str:
    """RFC 4226 with pyotp's defaults (SHA-1, 6 digits), the key decoded once for the three steps tried."""
    mac = hmac.digest(key, struct.pack(">Q", counter), "sha1")
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack_from('>I', mac, offset)[0] & 0x7FFFFFFF) % 1_000_000:06d}"


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



# ------------------------------------------------------------------ the hot path (unaudited checks)

_USER = bindparam("user_id")
# Everything one check needs in one statement: the user's TOTP state, the settings' version, the key's life.
_READ = select(
    users.c.totp_secret, users.c.totp_status, users.c.totp_last_step, users.c.totp_failures,
    settings_version.label("settings_version"), key_is_live.label("key_live"),
).where(users.c.id == _USER)
# The decisions, each one conditional on what the check was made against: a concurrent acceptance, a
# new secret, or the lock-out reached meanwhile makes it change nothing (rowcount 0), and the check is
# made again on the row as it is now.
_ACCEPT = (
    update(users)
    .where(
        users.c.id == _USER, users.c.totp_status == ENROLLED, users.c.totp_secret == bindparam("secret"),
        users.c.totp_failures < bindparam("max_failures"),
        or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < bindparam("step")),
    )
    .values(totp_last_step=bindparam("step"), totp_failures=0)
)
_COUNT_FAILURE = (
    update(users)
    .where(
        users.c.id == _USER, users.c.totp_status == ENROLLED, users.c.totp_secret == bindparam("secret"),
        users.c.totp_failures < bindparam("max_failures"),
    )
    .values(totp_failures=users.c.totp_failures + 1)
)
_ROUNDS = 32  # each round lost means another check on this user was decided meanwhile


class _TotpRow(NamedTuple):
    totp_secret: str | None
    totp_status: str
    totp_last_step: int | None
    totp_failures: int


def verify_unaudited(store: Store, actor: Principal, user_id: str, code: str, now: datetime) -> TotpVerifyResult:
    """:func:`verify` for callers whose checks are not audited (login flows), without a lock: one read, then
    one conditional UPDATE that both decides and records (see ``_ACCEPT`` and ``_COUNT_FAILURE``)."""

    def decide(conn: RawConn) -> tuple[TotpVerifyResult, TotpOutcome]:
        for _ in range(_ROUNDS):
            row = conn.one(_READ, user_id=user_id, key_id=actor.key_id)
            if row is None:
                if not conn.one(KEY_IS_LIVE, key_id=actor.key_id)[0]:
                    raise revoked(store, actor)
                raise not_found(f"user {user_id}")
            if not row[5]:
                raise revoked(store, actor)
            max_failures = settings_at(store, conn, row[4]).totp.maxFailures
            user = _TotpRow(*row[:4])
            result, step, outcome = _check(_opened(store, user_id, user), code, now, max_failures)
            if outcome is TotpOutcome.VALID:
                changed = conn.write(_ACCEPT, user_id=user_id, secret=user.totp_secret, max_failures=max_failures,
                                     step=step)
            elif outcome is TotpOutcome.WRONG_CODE:
                # Only wrong codes count toward the lock-out (see verify).
                changed = conn.write(_COUNT_FAILURE, user_id=user_id, secret=user.totp_secret,
                                     max_failures=max_failures)
            else:
                return result, outcome  # not enrolled, locked, replay: nothing to record
            if changed == 1:
                return result, outcome
        raise ApiProblem(503, "too many simultaneous checks for this user; try again")

    result, outcome = store.run_raw(decide)
    totp_outcome(outcome)
    return result


def verify_audited(store: Store, user_id: str, code: str, now: datetime, actor: Principal) -> TotpVerifyResult:
    """The support desk's check (audited): the key confirmed live, then :func:`verify` under the user's lock."""
    with store.read() as conn:
        if not conn.execute(KEY_IS_LIVE, {"key_id": actor.key_id}).scalar():
            raise revoked(store, actor)
    return verify(store, user_id, code, now, actor=actor, audited=True)


# ------------------------------------------------------------------ secrets at rest (secretbox.py)


class _Opened:
    """A user's row as _check reads it, with the TOTP secret decrypted. Writes still compare the stored form."""

    __slots__ = ("_row", "totp_secret")

    def __init__(self, row: Any, secret: str | None) -> None:
        self._row, self.totp_secret = row, secret

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _opened(store: Store, user_id: str, user: Any) -> Any:
    """``user`` with its secret decrypted: 503 naming the key when the server lacks it, 409 when the stored
    secret is not one sealed for this user (altered, copied from another row, or left in plain text)."""
    if user.totp_secret is None:
        return user
    try:
        return _Opened(user, secretbox.reveal(store, user_id, user.totp_secret))
    except secretbox.SecretKeyError as exc:
        raise ApiProblem(503, exc.for_api) from None
    except secretbox.SecretUnreadable as exc:
        raise ApiProblem(409, f"the stored TOTP secret of user {user_id} cannot be used: it {exc}; "
                              f"reset TOTP and enrol again") from None


def _sealed(store: Store, conn: Any, user_id: str, secret: str) -> str:
    """``secret`` encrypted for the user under the database's current key; 503 naming the key when it is missing."""
    try:
        return secretbox.seal(store, conn, user_id, secret)
    except secretbox.SecretKeyError as exc:
        raise ApiProblem(503, exc.for_api) from None
