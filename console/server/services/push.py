"""Push approval: creation under the concurrency cap, device answers, history.

An attempt is stored ``pending`` with an ``expires_at``; once the server clock
passes it, it *is* expired (computed in SQL), whatever the row says, so no
sweeper process is needed and several service processes agree.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    DateTime,
    Select,
    String,
    Subquery,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    text,
    true,
    union,
    update,
)
from sqlalchemy.engine import Connection

from ...models import (
    BOMBING_WINDOW,
    DevicePush,
    Page,
    ProtectSettings,
    PushAttempt,
    PushBlockLifted,
    PushBlockRequest,
    PushBlockResult,
    PushContext,
    PushCreated,
    PushRequest,
    PushResponse,
    PushStats,
    PushStatus,
)
from ..clock import from_wire, to_wire
from ..errors import ApiProblem, bad_request, not_found
from ..metrics import PushOutcome, push_outcome
from ..store import (
    BEGIN,
    COMMIT,
    PUSH_IS_PENDING,
    SYNC,
    Batch,
    Call,
    Decision,
    Step,
    Store,
    devices,
    push_attempts,
    read_one,
    users,
    write_only,
)
from . import paging, ratelimit
from .audit import record
from .common import Principal, new_id
from .keys import KEY_IS_LIVE, key_is_live, require_resource, revoked
from .settings import read_settings, settings_at, settings_version
from .users import cancel_pending_pushes, push_block_from, push_block_until_expr, require_user


def status_expr(now: datetime) -> ColumnElement[str]:
    return case(
        (and_(push_attempts.c.status == "pending", push_attempts.c.expires_at <= now), literal("expired")),
        else_=push_attempts.c.status,
    )


def _columns(now: datetime) -> list[Any]:
    return [
        push_attempts.c.id,
        push_attempts.c.user_id,
        func.coalesce(users.c.username, push_attempts.c.username).label("username"),
        push_attempts.c.resource,
        status_expr(now).label("status_now"),
        push_attempts.c.fraud,
        push_attempts.c.created_at,
        push_attempts.c.expires_at,
        push_attempts.c.responded_at,
        push_attempts.c.app,
        push_attempts.c.location,
        push_attempts.c.ip,
    ]


def _to_attempt(row: Any) -> PushAttempt:
    return PushAttempt(
        id=row.id,
        userId=row.user_id,
        username=row.username or "",
        resource=row.resource,
        status=row.status_now,
        fraud=bool(row.fraud),
        createdAt=to_wire(row.created_at),
        expiresAt=to_wire(row.expires_at),
        respondedAt=to_wire(row.responded_at),
        context=PushContext.model_construct(app=row.app, location=row.location, ip=row.ip),
    )


def _select(now: datetime) -> Select[Any]:
    return select(*_columns(now)).select_from(push_attempts.outerjoin(users, users.c.id == push_attempts.c.user_id))


def get_attempt(conn: Connection, attempt_id: str, now: datetime) -> PushAttempt:
    row = conn.execute(_select(now).where(push_attempts.c.id == attempt_id)).first()
    if row is None:
        raise not_found(f"push attempt {attempt_id}")
    return _to_attempt(row)


def list_attempts(
    conn: Connection,
    now: datetime,
    *,
    user_id: str | None,
    status: PushStatus | None,
    since: datetime | None,
    skip: int,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    count: bool = True,
) -> Page[PushAttempt]:
    """Newest first; ``after``/``before`` page by keyset (``before="end"``: the oldest page)."""
    where: list[Any] = []
    if user_id:
        where.append(push_attempts.c.user_id == user_id)
    if status:
        # Keep the stored-status index usable: expired = stored expired OR pending past its time.
        if status == PushStatus.EXPIRED:
            where.append(
                (push_attempts.c.status == "expired")
                | and_(push_attempts.c.status == "pending", push_attempts.c.expires_at <= now)
            )
        elif status == PushStatus.PENDING:
            where.append(and_(push_attempts.c.status == "pending", push_attempts.c.expires_at > now))
        else:
            where.append(push_attempts.c.status == status.value)
    if since:
        try:
            where.append(push_attempts.c.created_at >= from_wire(since))
        except ValueError:
            raise bad_request("since: date-time out of range (1970..9000)") from None
    keys = [paging.Key(push_attempts.c.created_at, descending=True), paging.Key(push_attempts.c.id, descending=True)]
    fp = paging.fingerprint("pushattempts", user_id, status, since)
    bound, reverse = paging.window(keys, fp, after, before)
    total = conn.execute(select(func.count()).select_from(push_attempts).where(*where)).scalar_one() if count else None
    rows = paging.read(
        conn, _select(now).add_columns(*paging.labels(keys)).where(*where), keys, bound, reverse, skip, limit
    )
    return Page[PushAttempt](totalCount=total, results=[_to_attempt(r) for r in rows], **paging.ends(rows, keys, fp))


class PushCapReached(ApiProblem):
    def __init__(self, retry_after: int, limit: int, *, across_resources: bool = False) -> None:
        scope = "across all resources" if across_resources else "and resource"
        super().__init__(
            429,
            f"too many concurrent push attempts for this user {scope} (limit {limit}); try again later",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
        )
        self.across_resources = across_resources


class PushBlocked(ApiProblem):
    """429 while a Stop-attack block is in force for the user."""

    def __init__(self, until: datetime, now: datetime) -> None:
        retry_after = max(1, math.ceil((until - now).total_seconds()))
        ends = to_wire(until).isoformat()
        super().__init__(
            429,
            f"pushes to this user are blocked until {ends} (an admin stopped a push attack); try again later",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
            blockedUntil=ends,
        )


# Admission reads everything it decides on in one statement, with the user's row locked (FOR UPDATE on
# PostgreSQL; on SQLite the transaction holds the write lock from BEGIN IMMEDIATE): the user, their
# device, the block in force, the settings' version and whether the calling key is still live.
_USER: BindParameter[Any] = bindparam("user_id")
_NOW: BindParameter[Any] = bindparam("now", type_=DateTime)
_ADMISSION = (
    select(
        users.c.state,
        users.c.account_locked,
        push_block_until_expr(cast(datetime, _NOW)).label("blocked_until"),
        devices.c.id,
        devices.c.state,
        settings_version.label("settings_version"),
        key_is_live.label("key_live"),
    )
    .select_from(users.outerjoin(devices, devices.c.user_id == users.c.id))
    .where(users.c.id == _USER)
    .with_for_update(of=users)
)
# Read after the lock is held, so it counts every admission committed before ours: the user's pending
# attempts for this resource and across all resources, and when the earliest of each expires.
_FOR_RESOURCE = push_attempts.c.resource == bindparam("resource")
_PENDING = select(
    func.coalesce(func.sum(case((_FOR_RESOURCE, 1), else_=0)), 0),
    func.min(case((_FOR_RESOURCE, push_attempts.c.expires_at))),
    func.count(),
    func.min(push_attempts.c.expires_at),
).where(
    push_attempts.c.user_id == _USER,
    PUSH_IS_PENDING,
    push_attempts.c.expires_at > _NOW,
)
_RECORD = insert(push_attempts).values(
    id=bindparam("attempt_id"),
    user_id=bindparam("for_user"),
    device_id=bindparam("device"),
    resource=bindparam("for_resource"),
    status=bindparam("outcome"),
    fraud=False,
    created_at=_NOW,
    expires_at=bindparam("until", type_=DateTime),
    app=bindparam("ctx_app"),
    location=bindparam("ctx_location"),
    ip=bindparam("ctx_ip"),
)


def create_attempt(
    store: Store, body: PushRequest, now: datetime, *, actor: Principal, address: str | None = None
) -> PushCreated:
    """Admit a push unless the user's pushes are blocked, or they already have ``max`` pending for this resource
    or ``maxPendingPerUser`` across all resources, or the key or ``address`` is over its rate limit.

    One short transaction: the user's row locked (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on
    PostgreSQL) while the pending attempts are counted and the new one inserted, so concurrent
    requests (in any process) cannot both see room for one more. Refusals are recorded as
    ``blocked`` attempts: they are the evidence of push bombing. ``actor``'s key is confirmed live
    in the same statement that reads the user.
    """
    require_resource(actor, body.resource)  # a service key scoped to other resources: 403, nothing recorded
    return store.run_steps(partial(_admission, store, body, now, actor, address))


def _admission(
    store: Store, body: PushRequest, now: datetime, actor: Principal, address: str | None
) -> Decision[PushCreated]:
    """:func:`create_attempt`'s rules, as steps (store.Step).

    SQLite: the count in the admission's transaction (one pass of the write gate, one commit); an answer
    refused before anything is recorded (429, 401, 404, 409) still commits the count. PostgreSQL, two round
    trips: the count (committed by itself at a SYNC, so the key's and the address's counter rows, which
    every push of theirs updates, are not held during admission), BEGIN, the user's row locked and read
    and then their pending attempts counted; then the attempt recorded with the COMMIT."""
    counting = ratelimit.Counting(store, ratelimit.Route.PUSH, key_id=actor.key_id, address=address, now=now)
    admission = read_one(_ADMISSION, user_id=body.userId, now=now, key_id=actor.key_id)
    pending = read_one(_PENDING, user_id=body.userId, resource=body.resource, now=now)

    def decide(hits: ratelimit.Hits, row: Any, pending_row: Any) -> Decision[tuple[ApiProblem | None, datetime]]:
        if row is None:
            if not (yield read_one(KEY_IS_LIVE, key_id=actor.key_id))[0]:
                raise revoked(store, actor)
            raise not_found(f"user {body.userId}")
        state, account_locked, blocked_until, device_id, device_state, version, key_live = row
        if not key_live:
            raise revoked(store, actor)
        cfg = yield Call(lambda conn: settings_at(store, conn, version))
        refusal, expires = _admission_rules(
            store, body, cfg, hits, (state, account_locked, blocked_until), device_id, device_state, pending_row, now
        )
        ctx = body.context
        record = write_only(
            _RECORD,
            attempt_id=attempt_id,
            for_user=body.userId,
            device=device_id,
            for_resource=body.resource,
            outcome="blocked" if refusal is not None else "pending",
            now=now,
            until=expires,
            ctx_app=ctx.app,
            ctx_location=ctx.location,
            ctx_ip=ctx.ip,
        )
        yield Batch((record, COMMIT))  # one round trip on PostgreSQL
        return refusal, expires

    attempt_id = new_id()
    if store.is_sqlite:
        yield BEGIN
        hits = yield from counting.hits((yield counting.step))
        try:
            refusal, expires = yield from decide(hits, (yield admission), (yield pending))
        except ApiProblem:
            yield COMMIT  # refused before anything was recorded: the count commits all the same
            raise
    else:
        # Read after the lock is held (the pipeline runs them in order), so the pending count sees every
        # admission committed before ours.
        counted, _, _, row, pending_row = yield Batch((counting.step, SYNC, BEGIN, admission, pending))
        hits, prune = counting.tally(counted)
        refusal, expires = yield from decide(hits, row, pending_row)
        if prune is not None:
            yield prune  # after the COMMIT: old windows' rows are not held by the admission's transaction
    if refusal is not None:
        push_outcome(_refusal_outcome(refusal))
        raise refusal  # after the commit: the blocked attempt stays recorded
    push_outcome(PushOutcome.ADMITTED)
    return PushCreated(id=attempt_id, status=PushStatus.PENDING, expiresAt=to_wire(expires))


# ------------------------------------------------------------ admissions decided together (PostgreSQL)


class PushAdmission(NamedTuple):
    """One admission waiting for its batch (console/server/batching.py)."""

    actor: Principal
    body: PushRequest
    address: str | None


# _ADMISSION for the users of a batch, locked in id order (batches in several processes cannot deadlock).
_ADMISSION_MANY = (
    select(
        users.c.id,
        users.c.state,
        users.c.account_locked,
        push_block_until_expr(cast(datetime, _NOW)).label("blocked_until"),
        devices.c.id,
        devices.c.state,
    )
    .select_from(users.outerjoin(devices, devices.c.user_id == users.c.id))
    .where(users.c.id == any_(bindparam("user_ids", type_=ARRAY(String))))
    .order_by(users.c.id)
    .with_for_update(of=users)
)
# _PENDING for each (user, resource) of a batch (i: its place in the batch, from 1). PostgreSQL only (unnest).
_PENDING_MANY = text(
    "SELECT v.i, COALESCE(SUM(CASE WHEN push_attempts.resource = v.resource THEN 1 ELSE 0 END), 0),"
    " MIN(CASE WHEN push_attempts.resource = v.resource THEN push_attempts.expires_at END),"
    " COUNT(push_attempts.id), MIN(push_attempts.expires_at)"
    " FROM unnest(CAST(:user_ids AS TEXT[]), CAST(:resources AS TEXT[])) WITH ORDINALITY AS v(user_id, resource, i)"
    " LEFT JOIN push_attempts ON push_attempts.user_id = v.user_id"
    f" AND {PUSH_IS_PENDING} AND push_attempts.expires_at > :now"
    " GROUP BY v.i"
)
# The settings' version and which of a batch's keys are live (not revoked), as _ADMISSION reads them for one.
_LIVE_KEYS = text("ARRAY(SELECT id FROM api_keys WHERE id = ANY(CAST(:keys AS TEXT[])) AND revoked_at IS NULL)")
_META = select(settings_version.label("settings_version"), _LIVE_KEYS)
_RECORD_MANY = text(
    "INSERT INTO push_attempts (id, user_id, device_id, resource, status, fraud, created_at, expires_at, app,"
    " location, ip)"
    " SELECT v.id, v.user_id, v.device_id, v.resource, v.status, false, :now, v.expires_at, v.app, v.location, v.ip"
    " FROM unnest(CAST(:ids AS TEXT[]), CAST(:user_ids AS TEXT[]), CAST(:device_ids AS TEXT[]),"
    " CAST(:resources AS TEXT[]), CAST(:statuses AS TEXT[]), CAST(:expires AS TIMESTAMP[]), CAST(:apps AS TEXT[]),"
    " CAST(:locations AS TEXT[]), CAST(:ips AS TEXT[]))"
    " AS v(id, user_id, device_id, resource, status, expires_at, app, location, ip)"
)


def create_many(store: Store, admissions: list[PushAdmission], now: datetime) -> list[PushCreated | Exception]:
    """:func:`create_attempt` for admissions of distinct users that arrived together (PostgreSQL), each with the
    answer (or the refusal to raise) it would have got alone: one round trip counts them all (committed by
    itself), then in one transaction locks every user's row (in id order), reads them and counts their pending
    attempts; the decisions are :func:`create_attempt`'s; one more round trip records them and commits.
    An admission alone takes :func:`create_attempt`'s path."""
    if len(admissions) == 1:
        admission = admissions[0]
        try:
            return [create_attempt(store, admission.body, now, actor=admission.actor, address=admission.address)]
        except ApiProblem as exc:
            return [exc]
    return store.run_steps(partial(_admit_many, store, admissions, now))


def _admit_many(
    store: Store, admissions: list[PushAdmission], now: datetime
) -> Decision[list[PushCreated | Exception]]:
    outcomes: list[PushCreated | Exception | None] = [None] * len(admissions)
    counted_ones: list[int] = []
    for i, admission in enumerate(admissions):
        try:
            require_resource(admission.actor, admission.body.resource)  # 403, nothing counted or recorded
        except ApiProblem as exc:
            outcomes[i] = exc
        else:
            counted_ones.append(i)
    if not counted_ones:
        return [o for o in outcomes if o is not None]
    batch = [admissions[i] for i in counted_ones]
    counting = ratelimit.CountingMany(ratelimit.Route.PUSH, [(a.actor.key_id, a.address) for a in batch], now=now)
    user_ids = [a.body.userId for a in batch]
    counted, meta, _, _, read, pending = yield Batch(
        (
            counting.step,
            read_one(_META, keys=sorted({a.actor.key_id for a in batch})),
            SYNC,
            BEGIN,
            Step(_ADMISSION_MANY, {"user_ids": user_ids, "now": now}, "all"),
            Step(
                _PENDING_MANY, {"user_ids": user_ids, "resources": [a.body.resource for a in batch], "now": now}, "all"
            ),
        )
    )
    hits, prune = counting.tally(counted)
    version, live = meta
    live_keys = set(live or ())
    cfg = yield Call(lambda conn: settings_at(store, conn, version))
    rows = {row[0]: row[1:] for row in read}
    pendings = {row[0] - 1: row[1:] for row in pending}
    records: list[tuple[int, str, str, ApiProblem | None, datetime]] = []  # (place, attempt id, device, ...)
    for j, admission in enumerate(batch):
        body, actor = admission.body, admission.actor
        try:
            if actor.key_id not in live_keys:
                raise revoked(store, actor)
            row = rows.get(body.userId)
            if row is None:
                raise not_found(f"user {body.userId}")
            state, account_locked, blocked_until, device_id, device_state = row
            refusal, expires = _admission_rules(
                store,
                body,
                cfg,
                hits[j],
                (state, account_locked, blocked_until),
                device_id,
                device_state,
                pendings[j],
                now,
            )
        except ApiProblem as exc:
            outcomes[counted_ones[j]] = exc
            continue
        records.append((j, new_id(), device_id, refusal, expires))
    steps: list[Step | Any] = []
    if records:
        ctxs = [batch[j].body.context for j, *_ in records]
        steps.append(
            write_only(
                _RECORD_MANY,
                ids=[attempt_id for _, attempt_id, *_ in records],
                user_ids=[batch[j].body.userId for j, *_ in records],
                device_ids=[device for _, _, device, _, _ in records],
                resources=[batch[j].body.resource for j, *_ in records],
                statuses=["blocked" if refusal is not None else "pending" for *_, refusal, _ in records],
                expires=[expires for *_, expires in records],
                apps=[c.app for c in ctxs],
                locations=[c.location for c in ctxs],
                ips=[c.ip for c in ctxs],
                now=now,
            )
        )
    yield Batch((*steps, COMMIT))  # refusals before recording commit their counts all the same (at the SYNC)
    if prune is not None:
        yield prune  # after the COMMIT, as create_attempt does
    for j, attempt_id, _, refusal, expires in records:
        if refusal is not None:
            push_outcome(_refusal_outcome(refusal))
            outcomes[counted_ones[j]] = refusal  # the blocked attempt stays recorded
        else:
            push_outcome(PushOutcome.ADMITTED)
            outcomes[counted_ones[j]] = PushCreated(
                id=attempt_id, status=PushStatus.PENDING, expiresAt=to_wire(expires)
            )
    return [o if o is not None else ApiProblem(503, "not decided") for o in outcomes]


def _admission_rules(
    store: Store,
    body: PushRequest,
    cfg: ProtectSettings,
    hits: ratelimit.Hits,
    user: tuple[Any, Any, Any],
    device_id: Any,
    device_state: Any,
    pending_row: Any,
    now: datetime,
) -> tuple[ApiProblem | None, datetime]:
    """The admission rules for one push, once for both paths: raises the refusals that record nothing;
    returns (the refusal recorded as a blocked attempt, or None; the attempt's expiry)."""
    state, account_locked, blocked_until = user
    hits.check(cfg)  # 429 before anything is recorded
    if state == "SUSPENDED" or account_locked:
        raise ApiProblem(409, f"user {body.userId} is suspended or locked")
    refusal: ApiProblem | None = None
    if blocked_until is not None:
        # Stop attack is in force (checked before the device: the block is the answer that matters).
        refusal = PushBlocked(store.dt_out(blocked_until), now)
    elif device_id is None or device_state != "active":
        raise ApiProblem(409, f"user {body.userId} has no active push device")
    else:
        refusal = _cap_refusal(store, pending_row, body, cfg, now)
    expires = now if refusal is not None else now + timedelta(seconds=cfg.push.timeoutSeconds)
    return refusal, expires


def _cap_refusal(
    store: Store, pending: Any, body: PushRequest, cfg: ProtectSettings, now: datetime
) -> ApiProblem | None:
    """The concurrency caps, read under the user's lock: ``concurrentLimit`` per resource (when enabled), then
    ``maxPendingPerUser`` across all resources (always: varying the free-text resource must not get past it)."""
    limit = cfg.push.concurrentLimit
    pending_here, earliest, pending_all, earliest_all = pending
    if limit.enabled and pending_here >= limit.max:
        return PushCapReached(_seconds_until(store, earliest, now), limit.max)
    if pending_all >= cfg.push.maxPendingPerUser:
        return PushCapReached(
            _seconds_until(store, earliest_all, now), cfg.push.maxPendingPerUser, across_resources=True
        )
    return None


def _seconds_until(store: Store, earliest: Any, now: datetime) -> int:
    until: datetime = store.dt_out(earliest)
    return max(1, math.ceil((until - now).total_seconds()))


def _refusal_outcome(refusal: ApiProblem) -> PushOutcome:
    if isinstance(refusal, PushBlocked):
        return PushOutcome.BLOCKED_ATTACK
    if isinstance(refusal, PushCapReached) and refusal.across_resources:
        return PushOutcome.BLOCKED_USER_CAP
    return PushOutcome.BLOCKED_CAP


def pending_for_device(conn: Connection, device: Any, now: datetime) -> list[DevicePush]:
    """Every unanswered, unexpired attempt: how a lost notification is still answered."""
    rows = conn.execute(
        select(push_attempts)
        .where(
            push_attempts.c.user_id == device.user_id,
            PUSH_IS_PENDING,
            push_attempts.c.expires_at > now,
        )
        .order_by(push_attempts.c.created_at.desc())
        .limit(100)
    )
    return [
        DevicePush(
            id=r.id,
            resource=r.resource,
            createdAt=to_wire(r.created_at),
            expiresAt=to_wire(r.expires_at),
            context=PushContext.model_construct(app=r.app, location=r.location, ip=r.ip),
        )
        for r in rows
    ]


def respond(store: Store, device: Any, attempt_id: str, body: PushResponse, now: datetime) -> PushAttempt:
    problem: ApiProblem | None = None
    outcome = PushOutcome.EXPIRED
    with store.write() as conn:
        cfg = read_settings(conn)[0]
        current = conn.execute(select(devices.c.state).where(devices.c.id == device.id)).scalar()
        if current is None:
            raise ApiProblem(401, "device is no longer enrolled")
        if current != "active":
            raise ApiProblem(403, "device is inactive")
        row = conn.execute(
            select(push_attempts).where(push_attempts.c.id == attempt_id, push_attempts.c.user_id == device.user_id)
        ).first()
        if row is None:
            raise not_found(f"push attempt {attempt_id}")
        if row.status != "pending":
            raise ApiProblem(409, f"push attempt already {row.status}")
        if row.expires_at <= now:
            # The server clock decides; record the expiry so the history is plain.
            conn.execute(update(push_attempts).where(push_attempts.c.id == attempt_id).values(status="expired"))
            problem = ApiProblem(409, f"push attempt expired at {to_wire(row.expires_at).isoformat()}")
        elif (
            body.decision == "approve"
            and not body.userVerified
            and (cfg.push.requireUserVerification or _user_requires_verification(conn, device.user_id))
        ):
            raise ApiProblem(422, "userVerified: approving requires biometric or passcode verification")
        else:
            status = "approved" if body.decision == "approve" else "denied"
            outcome = PushOutcome(status) if not (status == "denied" and body.reportFraud) else PushOutcome.FRAUD
            conn.execute(
                update(push_attempts)
                .where(push_attempts.c.id == attempt_id)
                .values(
                    status=status,
                    responded_at=now,
                    user_verified=body.userVerified,
                    fraud=body.decision == "deny" and body.reportFraud,
                )
            )
            conn.execute(update(devices).where(devices.c.id == device.id).values(last_used_at=now))
        result = get_attempt(conn, attempt_id, now)
    push_outcome(outcome)  # committed: the attempt ended approved, denied, fraud or (answered late) expired
    if problem is not None:
        raise problem
    return result


def _user_requires_verification(conn: Connection, user_id: str) -> bool:
    """The per-user requirement set by Stop attack (the global setting is checked by the caller)."""
    return bool(conn.execute(select(users.c.require_user_verification).where(users.c.id == user_id)).scalar())


# ------------------------------------------------------------ stop attack


def block_push(store: Store, user_id: str, body: PushBlockRequest, actor: Principal, now: datetime) -> PushBlockResult:
    """Stop attack: cancel pending pushes (they end as expired), refuse new ones until ``now + minutes``,
    and optionally require biometric approval for this user from now on.

    A new block replaces one in force (its end is what the admin chose now). The per-user
    verification requirement is only ever switched on here; ``PUT /api/systemusers/{id}``
    with ``requireUserVerification: false`` switches it off.
    """
    until = now + timedelta(minutes=body.minutes)
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        # Whether a block is in force is decided in SQL against the server clock, like every expiry.
        current = conn.execute(select(push_block_until_expr(now)).where(users.c.id == user_id)).scalar()
        before = {
            "pushBlock": (
                {"blockedUntil": to_wire(current).isoformat(), "blockedBy": row.push_blocked_by} if current else None
            ),
            "requireUserVerification": bool(row.require_user_verification),
        }
        cancelled = cancel_pending_pushes(conn, user_id, now) if body.cancelPending else 0
        require_uv = bool(row.require_user_verification) or body.requireUserVerification
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                push_blocked_until=until,
                push_blocked_by=actor.name,
                push_blocked_at=now,
                require_user_verification=require_uv,
            )
        )
        after = {
            "pushBlock": {"blockedUntil": to_wire(until).isoformat(), "blockedBy": actor.name},
            "requireUserVerification": require_uv,
        }
        record(
            conn,
            actor,
            "push.block",
            user_id,
            {"before": before, "after": after, "minutes": body.minutes, "cancelled": cancelled},
            now,
        )
    push_outcome(PushOutcome.EXPIRED, cancelled)  # the cancelled pushes end as expired
    return PushBlockResult(blockedUntil=to_wire(until), cancelled=cancelled)


def lift_push_block(store: Store, user_id: str, actor: Principal, now: datetime) -> PushBlockLifted:
    """End a block in force. Without one nothing changes and nothing is audited (``lifted: false``).

    The per-user verification requirement stays: it was asked for "from now on".
    """
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        until = conn.execute(select(push_block_until_expr(now)).where(users.c.id == user_id)).scalar()
        if until is None:
            return PushBlockLifted(lifted=False)
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(push_blocked_until=None, push_blocked_by=None, push_blocked_at=None)
        )
        record(
            conn,
            actor,
            "push.unblock",
            user_id,
            {
                "before": {"pushBlock": {"blockedUntil": to_wire(until).isoformat(), "blockedBy": row.push_blocked_by}},
                "after": {"pushBlock": None},
            },
            now,
        )
    return PushBlockLifted(lifted=True)


# ------------------------------------------------------------ push stats


def window_start(since: datetime | None, now: datetime) -> datetime:
    """``since`` as stored time, defaulting to the bombing window; 400 outside 1970..9000."""
    if since is None:
        return now - BOMBING_WINDOW
    try:
        return from_wire(since)
    except ValueError:
        raise bad_request("since: date-time out of range (1970..9000)") from None


def _aggregate(now: datetime, since: datetime) -> Subquery:
    """Counts by status (as of ``now``) of each user's attempts created at or after ``since``."""
    status = status_expr(now)

    def count(value: str) -> Any:
        return func.coalesce(func.sum(case((status == value, 1), else_=0)), 0)

    return (
        select(
            push_attempts.c.user_id.label("user_id"),
            func.count().label("total"),
            *(count(s.value).label(s.value) for s in PushStatus),
            func.coalesce(func.sum(case((push_attempts.c.fraud == true(), 1), else_=0)), 0).label("fraud"),
            func.max(push_attempts.c.created_at).label("last_at"),
            func.max(push_attempts.c.username).label("kept_username"),
        )
        .where(push_attempts.c.created_at >= since)
        .group_by(push_attempts.c.user_id)
        .subquery("agg")
    )


def push_stats(
    conn: Connection,
    now: datetime,
    since: datetime | None,
    *,
    user_id: str | None = None,
    min_hostile: int = 0,
    limit: int = 50,
) -> Page[PushStats]:
    """The one aggregate behind both the user's counts and the bombing panel.

    With ``user_id``: that user only (one row, zeros when they had no attempts). Without:
    users with at least ``min_hostile`` blocked+denied attempts in the window, plus users
    with a block in force; most hostile first, then the most recent attack.
    """
    start = window_start(since, now)
    agg = _aggregate(now, start)
    hostile = func.coalesce(agg.c.blocked, 0) + func.coalesce(agg.c.denied, 0)
    if user_id is not None:
        require_user_or_history(conn, user_id)
        candidates = select(literal(user_id).label("id")).subquery("cand")
    else:
        candidates = union(
            select(agg.c.user_id.label("id")).where(agg.c.blocked + agg.c.denied >= min_hostile),
            select(users.c.id.label("id")).where(users.c.push_blocked_until > now),
        ).subquery("cand")
    block_until = push_block_until_expr(now)
    query = select(
        candidates.c.id,
        func.coalesce(users.c.username, agg.c.kept_username, "").label("username"),
        *(func.coalesce(agg.c[c], 0).label(c) for c in ("total", *(s.value for s in PushStatus), "fraud")),
        agg.c.last_at,
        block_until.label("blocked_until"),
        users.c.push_blocked_by,
        users.c.push_blocked_at,
    ).select_from(
        candidates.outerjoin(agg, agg.c.user_id == candidates.c.id).outerjoin(users, users.c.id == candidates.c.id)
    )
    total = conn.execute(select(func.count()).select_from(candidates)).scalar_one()
    rows = conn.execute(query.order_by(hostile.desc(), agg.c.last_at.desc(), candidates.c.id).limit(limit)).all()
    resources = _resources(conn, [r.id for r in rows], start)
    results = [
        PushStats(
            userId=r.id,
            username=r.username or "",
            since=to_wire(start),
            total=r.total,
            approved=r.approved,
            denied=r.denied,
            blocked=r.blocked,
            expired=r.expired,
            pending=r.pending,
            fraud=r.fraud,
            resources=resources.get(r.id, []),
            lastAttemptAt=to_wire(r.last_at),
            pushBlock=push_block_from(r.blocked_until, r.push_blocked_by, r.push_blocked_at),
        )
        for r in rows
    ]
    return Page[PushStats](totalCount=total, results=results)


def user_push_stats(conn: Connection, now: datetime, user_id: str, since: datetime | None) -> PushStats:
    return push_stats(conn, now, since, user_id=user_id, limit=1).results[0]


def require_user_or_history(conn: Connection, user_id: str) -> None:
    """404 unless the id is a user, or a deleted user whose attempts are kept."""
    if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is not None:
        return
    if conn.execute(select(push_attempts.c.id).where(push_attempts.c.user_id == user_id).limit(1)).first() is None:
        raise not_found(f"user {user_id}")


def _resources(conn: Connection, user_ids: list[str], since: datetime) -> dict[str, list[str]]:
    """Each user's resources in the window, most attempted first."""
    if not user_ids:
        return {}
    n = func.count().label("n")
    rows = conn.execute(
        select(push_attempts.c.user_id, push_attempts.c.resource, n)
        .where(push_attempts.c.user_id.in_(user_ids), push_attempts.c.created_at >= since)
        .group_by(push_attempts.c.user_id, push_attempts.c.resource)
        .order_by(push_attempts.c.user_id, n.desc(), push_attempts.c.resource)
    )
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r.user_id, []).append(r.resource)
    return found
