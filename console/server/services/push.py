"""Push approval: creation under the concurrency cap, device answers, history.

An attempt is stored ``pending`` with an ``expires_at``; once the server clock
passes it, it *is* expired (computed in SQL), whatever the row says, so no
sweeper process is needed and several service processes agree.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, literal, select, update
from sqlalchemy.engine import Connection

from ...models import DevicePush, Page, ProtectSettings, PushAttempt, PushContext, PushCreated, PushRequest, PushResponse, PushStatus
from ..clock import from_wire, to_wire
from ..errors import ApiProblem, bad_request, not_found
from ..store import Store, devices, push_attempts, users
from .common import new_id
from .settings import read_settings
from .users import require_user


def status_expr(now: datetime) -> ColumnElement[str]:
    return case(
        (and_(push_attempts.c.status == "pending", push_attempts.c.expires_at <= now), literal("expired")),
        else_=push_attempts.c.status,
    )


def _columns(now: datetime) -> list[Any]:
    return [
        push_attempts.c.id,
        push_attempts.c.user_id,
        users.c.username,
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


def _select(now: datetime):  # noqa: ANN202
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
) -> Page[PushAttempt]:
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
    total = conn.execute(select(func.count()).select_from(push_attempts).where(*where)).scalar_one()
    rows = conn.execute(
        _select(now).where(*where).order_by(push_attempts.c.created_at.desc(), push_attempts.c.id.desc()).offset(skip).limit(limit)
    )
    return Page[PushAttempt](totalCount=total, results=[_to_attempt(r) for r in rows])


class PushCapReached(ApiProblem):
    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(
            429,
            f"too many concurrent push attempts for this user and resource (limit {limit}); try again later",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
        )


def create_attempt(store: Store, body: PushRequest, now: datetime) -> PushCreated:
    """Admit a push unless the user already has ``max`` pending for this resource.

    The count and the insert happen under the user's row lock (``BEGIN IMMEDIATE``
    on SQLite, ``FOR UPDATE`` on PostgreSQL), so concurrent requests cannot both
    see room for one more.
    """
    blocked_retry: int | None = None
    with store.write() as conn:
        cfg: ProtectSettings = read_settings(conn)[0]
        user = require_user(conn, body.userId, lock=True)
        if user.state == "SUSPENDED" or user.account_locked:
            raise ApiProblem(409, f"user {user.id} is suspended or locked")
        device = conn.execute(select(devices.c.id, devices.c.state).where(devices.c.user_id == user.id)).first()
        if device is None or device.state != "active":
            raise ApiProblem(409, f"user {user.id} has no active push device")
        attempt_id = new_id()
        ctx = body.context
        values = dict(
            id=attempt_id, user_id=user.id, device_id=device.id, resource=body.resource, fraud=False, created_at=now,
            app=ctx.app, location=ctx.location, ip=ctx.ip,
        )
        limit = cfg.push.concurrentLimit
        if limit.enabled:
            pending = conn.execute(
                select(func.count(), func.min(push_attempts.c.expires_at)).where(
                    push_attempts.c.user_id == user.id,
                    push_attempts.c.resource == body.resource,
                    push_attempts.c.status == "pending",
                    push_attempts.c.expires_at > now,
                )
            ).one()
            if pending[0] >= limit.max:
                # The refusal itself is evidence (push bombing): record it.
                conn.execute(insert(push_attempts).values(**values, status="blocked", expires_at=now))
                blocked_retry = max(1, math.ceil((pending[1] - now).total_seconds()))
        if blocked_retry is None:
            expires = now + timedelta(seconds=cfg.push.timeoutSeconds)
            conn.execute(insert(push_attempts).values(**values, status="pending", expires_at=expires))
    if blocked_retry is not None:
        raise PushCapReached(blocked_retry, limit.max)
    return PushCreated(id=attempt_id, status=PushStatus.PENDING, expiresAt=to_wire(expires))


def pending_for_device(conn: Connection, device: Any, now: datetime) -> list[DevicePush]:
    """Every unanswered, unexpired attempt: how a lost notification is still answered."""
    rows = conn.execute(
        select(push_attempts)
        .where(
            push_attempts.c.user_id == device.user_id,
            push_attempts.c.status == "pending",
            push_attempts.c.expires_at > now,
        )
        .order_by(push_attempts.c.created_at.desc())
        .limit(100)
    )
    return [
        DevicePush(
            id=r.id, resource=r.resource, createdAt=to_wire(r.created_at), expiresAt=to_wire(r.expires_at),
            context=PushContext.model_construct(app=r.app, location=r.location, ip=r.ip),
        )
        for r in rows
    ]


def respond(store: Store, device: Any, attempt_id: str, body: PushResponse, now: datetime) -> PushAttempt:
    problem: ApiProblem | None = None
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
        elif body.decision == "approve" and cfg.push.requireUserVerification and not body.userVerified:
            raise ApiProblem(422, "userVerified: approving requires biometric or passcode verification")
        else:
            status = "approved" if body.decision == "approve" else "denied"
            conn.execute(
                update(push_attempts)
                .where(push_attempts.c.id == attempt_id)
                .values(
                    status=status, responded_at=now, user_verified=body.userVerified,
                    fraud=body.decision == "deny" and body.reportFraud,
                )
            )
            conn.execute(update(devices).where(devices.c.id == device.id).values(last_used_at=now))
        result = get_attempt(conn, attempt_id, now)
    if problem is not None:
        raise problem
    return result

