"""TOTP: enrolment through the app and verification with replay and lock-out rules."""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import pyotp
from sqlalchemy import BindParameter, DateTime, bindparam, or_, select, true, update

from ...models import ProtectSettings, Role, TotpEnrollResult, TotpVerifyResult
from .. import secretbox
from ..errors import ApiProblem, not_found
from ..metrics import TotpOutcome, totp_lockout, totp_outcome
from ..store import BEGIN, COMMIT, Batch, Call, Decision, Step, Store, read_one, users, write_count
from . import ratelimit
from .audit import record
from .common import Principal
from .keys import KEY_IS_LIVE, key_is_live, revoked
from .lockout import CLEAR, TotpFailures, after_wrong_code, is_locked
from .settings import cached_settings, read_settings, settings_at, settings_version
from .users import ENROLLED, require_user

STEP_SECONDS = 30
ISSUER = "Protect"
WRONG_CODE = "code does not match"
NOT_ENROLLED = "TOTP is not enrolled for this user"


def enroll(store: Store, device: Any, now: datetime) -> TotpEnrollResult:
    """The app becomes the user's authenticator; any earlier secret stops working."""
    secret = pyotp.random_base32()
    with store.write() as conn:
        user = require_user(conn, device.user_id, lock=True)
        conn.execute(
            update(users)
            .where(users.c.id == user.id)
            .values(
                totp_secret=_sealed(store, conn, user.id, secret), totp_status="ENROLLED", totp_last_step=None, **CLEAR
            )
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
    locked_out = False
    with store.write() as conn:
        max_failures = read_settings(conn)[0].totp.maxFailures
        user = require_user(conn, user_id, lock=True)
        state = _failures(user)
        result, step, outcome = _check(_opened(store, user_id, user), state, code, now, max_failures)
        if result.valid:
            # A good code does not clear the failures: they leave the window as it slides (lockout.py).
            conn.execute(update(users).where(users.c.id == user.id).values(totp_last_step=step))
        elif outcome is TotpOutcome.WRONG_CODE:
            # Only wrong codes count toward the lock-out (it is against guessing); a replay of
            # an accepted code proves the secret, and a double-submitted login must not lock.
            after, lockout = after_wrong_code(state, now, max_failures)
            conn.execute(update(users).where(users.c.id == user.id).values(**_columns(after)))
            if lockout is not None:
                _record_lockout(conn, actor, user.id, after, lockout, max_failures, now)
                locked_out = True
        if audited and actor is not None:
            record(conn, actor, "totp.verify", user.id, {"valid": result.valid, "reason": result.reason}, now)
    totp_outcome(outcome)
    if locked_out:
        totp_lockout()
    return result


def _failures(user: Any) -> TotpFailures:
    return TotpFailures.of(user.totp_failures, user.totp_failure_at, user.totp_locked_until, user.totp_lockouts)


def _columns(state: TotpFailures) -> dict[str, Any]:
    return {
        "totp_failures": state.failures,
        "totp_failure_at": state.failure_at,
        "totp_locked_until": state.locked_until,
        "totp_lockouts": state.lockouts,
    }


def _record_lockout(
    conn: Any,
    actor: Principal | None,
    user_id: str,
    after: TotpFailures,
    lockout: timedelta,
    max_failures: int,
    now: datetime,
) -> None:
    """The lock-out's audit event, in the transaction that locks (actor: the key whose wrong code locked it)."""
    until = after.locked_until
    details = {
        "failures": max_failures,
        "minutes": int(lockout.total_seconds() // 60),
        "lockouts": after.lockouts,
        "lockedUntil": until.replace(tzinfo=UTC).isoformat() if until is not None else None,  # set by a lock-out
    }
    record(conn, actor if actor is not None else "service", "totp.lockout", user_id, details, now)


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
    user: Any, state: TotpFailures, code: str, now: datetime, max_failures: int
) -> tuple[TotpVerifyResult, int | None, TotpOutcome]:
    if user.totp_secret is None or user.totp_status != "ENROLLED":
        return TotpVerifyResult(valid=False, reason=NOT_ENROLLED), None, TotpOutcome.NOT_ENROLLED
    if state.locked_until is not None and is_locked(state, now):
        until = state.locked_until.replace(tzinfo=UTC).isoformat()
        reason = f"TOTP locked until {until} (too many wrong codes); try again then, or an admin can reset TOTP"
        return TotpVerifyResult(valid=False, reason=reason), None, TotpOutcome.LOCKED
    step = _matching_step(user.totp_secret, code, now)
    if step is None:
        return TotpVerifyResult(valid=False, reason=WRONG_CODE), None, TotpOutcome.WRONG_CODE
    if user.totp_last_step is not None and step <= user.totp_last_step:
        return TotpVerifyResult(valid=False, reason="code was already used"), None, TotpOutcome.REPLAY
    return TotpVerifyResult(valid=True), step, TotpOutcome.VALID


# ------------------------------------------------------------------ the hot path (unaudited checks)

_USER: BindParameter[Any] = bindparam("user_id")
_NOW = bindparam("now", type_=DateTime)
# Everything one check needs in one statement: the user's TOTP state, the settings' version, the key's life.
_READ = select(
    users.c.totp_secret,
    users.c.totp_status,
    users.c.totp_last_step,
    users.c.totp_failures,
    users.c.totp_failure_at,
    users.c.totp_locked_until,
    users.c.totp_lockouts,
    settings_version.label("settings_version"),
    key_is_live.label("key_live"),
).where(users.c.id == _USER)
_SETTINGS_VERSION = select(settings_version.label("settings_version"))
_NOT_LOCKED = or_(users.c.totp_locked_until.is_(None), users.c.totp_locked_until <= _NOW)
# The decisions, each one conditional on what the check was made against: a concurrent acceptance, a
# new secret, another wrong code or a lock-out meanwhile makes it change nothing (rowcount 0), and the
# check is made again on the row as it is now.
_ACCEPT = (
    update(users)
    .where(
        users.c.id == _USER,
        users.c.totp_status == ENROLLED,
        users.c.totp_secret == bindparam("secret"),
        _NOT_LOCKED,
        or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < bindparam("step")),
    )
    .values(totp_last_step=bindparam("step"))
)
_COUNT_FAILURE = (
    update(users)
    .where(
        users.c.id == _USER,
        users.c.totp_status == ENROLLED,
        users.c.totp_secret == bindparam("secret"),
        _NOT_LOCKED,
        users.c.totp_failures == bindparam("was_failures"),
        users.c.totp_failure_at.is_not_distinct_from(bindparam("was_failure_at", type_=DateTime)),
        users.c.totp_lockouts == bindparam("was_lockouts"),
    )
    .values(
        totp_failures=bindparam("failures"),
        totp_failure_at=bindparam("failure_at", type_=DateTime),
        totp_locked_until=bindparam("locked_until", type_=DateTime),
        totp_lockouts=bindparam("lockouts"),
    )
)
_ROUNDS = 32  # each round lost means another check on this user was decided meanwhile


_FUSED_READS: dict[int, Any] = {}  # by the number of subjects counted (the key, the address)


def _counted_read(counting: ratelimit.Counting, user_id: str, key_id: str) -> Step:
    """PostgreSQL: the count and the read in one statement (the UPSERT as a CTE): (subject, hits, *_READ)."""
    fused = _FUSED_READS.get(len(counting.subjects))
    if fused is None:
        counted = counting.step.statement.cte("counted")
        read = _READ.subquery("checked")
        fused = _FUSED_READS[len(counting.subjects)] = select(counted.c.subject, counted.c.hits, *read.c).select_from(
            counted.outerjoin(read, true())
        )
    return Step(fused, {**counting.step.params, "user_id": user_id, "key_id": key_id}, "all", writes=True)


class _TotpRow(NamedTuple):
    totp_secret: str | None
    totp_status: str
    totp_last_step: int | None


# A check's verdict: decided (result, outcome, locked out), None when a concurrent check changed the row first
# (read it again), or a lock-out still to record (in a durable transaction of its own, see _lock_out).
_Decided = tuple[TotpVerifyResult, TotpOutcome, bool]


class _LockOut(NamedTuple):
    result: TotpVerifyResult
    outcome: TotpOutcome
    params: dict[str, Any]
    after: TotpFailures
    lockout: timedelta
    max_failures: int


def verify_unaudited(
    store: Store, actor: Principal, user_id: str, code: str, now: datetime, *, address: str | None = None
) -> TotpVerifyResult:
    """:func:`verify` for callers whose checks are not audited (login flows), without a lock: the rate-limit
    count (one UPSERT), one read, then one conditional UPDATE that both decides and records (see ``_ACCEPT``
    and ``_COUNT_FAILURE``). A wrong code that starts a lock-out is recorded with its audit event in one
    durable transaction of its own (rare: once per ``maxFailures`` wrong codes).

    SQLite: the count, the read and the UPDATE in one transaction (one pass of the write gate, one commit);
    a refusal (429, 401, 404) commits the count all the same. PostgreSQL: the count and the read in one
    statement (the UPSERT as a CTE), the UPDATE by itself: the count's rows (one per key and per address,
    shared by every check they make) stay locked only for that statement's own implicit transaction.

    For service keys an unknown user gets the answer of a user without TOTP (no enumeration of users)."""
    return store.run_steps(partial(_verify_steps, store, actor, user_id, code, now, address))


async def verify_unaudited_on_loop(
    store: Store, actor: Principal, user_id: str, code: str, now: datetime, *, address: str | None = None
) -> TotpVerifyResult:
    """:func:`verify_unaudited` on PostgreSQL, its statements awaited on the event loop (Store.run_steps_on_loop)."""
    return await store.run_steps_on_loop(partial(_verify_steps, store, actor, user_id, code, now, address))


def _verify_steps(
    store: Store, actor: Principal, user_id: str, code: str, now: datetime, address: str | None
) -> Decision[TotpVerifyResult]:
    """:func:`verify_unaudited`'s rules, as steps (store.Step)."""
    counting = ratelimit.Counting(store, ratelimit.Route.TOTP_VERIFY, key_id=actor.key_id, address=address, now=now)
    read = read_one(_READ, user_id=user_id, key_id=actor.key_id)

    def check(hits: ratelimit.Hits, row: Any) -> Decision[_Decided | _LockOut | None]:
        if row is None:
            if not (yield read_one(KEY_IS_LIVE, key_id=actor.key_id))[0]:
                raise revoked(store, actor)
            version = (yield read_one(_SETTINGS_VERSION))[0]
            hits.check((yield from _settings(version)))
            if actor.role == Role.SERVICE:
                return TotpVerifyResult(valid=False, reason=NOT_ENROLLED), TotpOutcome.NOT_ENROLLED, False
            raise not_found(f"user {user_id}")
        if not row[8]:
            raise revoked(store, actor)
        cfg = yield from _settings(row[7])
        hits.check(cfg)
        user = _TotpRow(*row[:3])
        state = TotpFailures.of(row[3], store.dt_out(row[4]), store.dt_out(row[5]), row[6])
        max_failures = cfg.totp.maxFailures
        result, step, outcome = _check(_opened(store, user_id, user), state, code, now, max_failures)
        if outcome is TotpOutcome.VALID:
            changed = yield write_count(_ACCEPT, user_id=user_id, secret=user.totp_secret, now=now, step=step)
        elif outcome is TotpOutcome.WRONG_CODE:
            # Only wrong codes count toward the lock-out (see verify).
            after, lockout = after_wrong_code(state, now, max_failures)
            params = {
                "user_id": user_id,
                "secret": user.totp_secret,
                "now": now,
                "was_failures": state.failures,
                "was_failure_at": state.failure_at,
                "was_lockouts": state.lockouts,
                **_bind(after),
            }
            if lockout is not None:
                return _LockOut(result, outcome, params, after, lockout, max_failures)
            changed = yield write_count(_COUNT_FAILURE, **params)
        else:
            return result, outcome, False  # not enrolled, locked, replay: nothing to record
        return (result, outcome, False) if changed == 1 else None

    def _settings(version: int) -> Decision[ProtectSettings]:
        """From the process's cache when it holds ``version`` (no step: on the loop a Call is a thread hop)."""
        cached = cached_settings(store, version)
        if cached is not None:
            return cached
        settings: ProtectSettings = yield Call(lambda conn: settings_at(store, conn, version))
        return settings

    verdict: _Decided | _LockOut | None
    if store.is_sqlite:
        yield BEGIN
        hits = yield from counting.hits((yield counting.step))
        try:
            verdict = yield from check(hits, (yield read))
        except ApiProblem:
            yield COMMIT  # refused requests count too: the count commits
            raise
        yield COMMIT
    elif counting.subjects:
        # One statement, not a pipeline of two: less of psycopg's work per check (641 -> 464 Python calls
        # per check measured in-process), and the UPDATE after it is the check's second and last round trip.
        rows = yield _counted_read(counting, user_id, actor.key_id)
        hits = yield from counting.hits([r[:2] for r in rows])
        verdict = yield from check(hits, rows[0][2:] if rows and rows[0][-1] is not None else None)
    else:
        counted, row = yield Batch((counting.step, read))
        hits = yield from counting.hits(counted)
        verdict = yield from check(hits, row)
    for _ in range(_ROUNDS):
        if isinstance(verdict, _LockOut):
            lock = verdict
            changed = yield Call(partial(_locking_out, store, actor, user_id, lock, now))
            verdict = (lock.result, lock.outcome, True) if changed == 1 else None
        if verdict is not None:
            result, outcome, locked_out = verdict
            totp_outcome(outcome)
            if locked_out:
                totp_lockout()
            return result
        verdict = yield from check(hits, (yield read))
    raise ApiProblem(503, "too many simultaneous checks for this user; try again")


def _bind(after: TotpFailures) -> dict[str, Any]:
    return {
        "failures": after.failures,
        "failure_at": after.failure_at,
        "locked_until": after.locked_until,
        "lockouts": after.lockouts,
    }


def _locking_out(store: Store, actor: Principal, user_id: str, lock: _LockOut, now: datetime, _conn: Any) -> int:
    """A Call step: :func:`_lock_out` (on a connection of its own: durable, unlike the hot ones)."""
    return _lock_out(store, actor, user_id, lock.params, lock.after, lock.lockout, lock.max_failures, now)


def _lock_out(
    store: Store,
    actor: Principal,
    user_id: str,
    params: dict[str, Any],
    after: TotpFailures,
    lockout: timedelta,
    max_failures: int,
    now: datetime,
) -> int:
    """The wrong code that locks: the conditional UPDATE and the audit event in one transaction."""
    with store.write() as conn:
        changed = conn.execute(_COUNT_FAILURE, params).rowcount
        if changed == 1:
            _record_lockout(conn, actor, user_id, after, lockout, max_failures, now)
    return changed


def verify_audited(
    store: Store, user_id: str, code: str, now: datetime, actor: Principal, *, address: str | None = None
) -> TotpVerifyResult:
    """The support desk's check (audited): the key confirmed live and the request counted against the rate
    limits, then :func:`verify` under the user's lock."""
    with store.read() as conn:
        if not conn.execute(KEY_IS_LIVE, {"key_id": actor.key_id}).scalar():
            raise revoked(store, actor)
    ratelimit.admit(store, ratelimit.Route.TOTP_VERIFY, key_id=actor.key_id, address=address, now=now)
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
        raise ApiProblem(
            409, f"the stored TOTP secret of user {user_id} cannot be used: it {exc}; reset TOTP and enrol again"
        ) from None


def _sealed(store: Store, conn: Any, user_id: str, secret: str) -> str:
    """``secret`` encrypted for the user under the database's current key; 503 naming the key when it is missing."""
    try:
        return secretbox.seal(store, conn, user_id, secret)
    except secretbox.SecretKeyError as exc:
        raise ApiProblem(503, exc.for_api) from None
