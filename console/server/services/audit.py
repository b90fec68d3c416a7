"""The audit trail: every change through the admin API, in the same transaction as the change.

An event is ``admin`` when an API key did it (the actor is the key's name) and ``device``
when the user's app did it (enrolment, replacing a device, enrolling TOTP; the actor is
``user:<username>``). The kind is stored with the event, not guessed from the actor text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Connection

from ...models import AuditEvent, Page
from ..clock import to_wire
from ..errors import bad_request
from ..store import audit, users
from . import paging
from .common import Principal, dumps, loads

KINDS = ("admin", "device")


def record(
    conn: Connection, actor: Principal | str, action: str, target: str, details: dict[str, Any], now: datetime
) -> None:
    """``actor`` is the API key (an admin action) or ``user:<username>`` (the user's device did it)."""
    if isinstance(actor, Principal):
        name, kind = actor.name, "admin"
    else:
        name, kind = actor, "device"
    conn.execute(
        insert(audit).values(at=now, actor=name, action=action, target=target, details=dumps(details), kind=kind)
    )


def keep_target_name(conn: Connection, user_id: str, username: str) -> None:
    """Before a user is deleted: their events keep naming them."""
    conn.execute(update(audit).where(audit.c.target == user_id).values(target_name=username))


def list_events(
    conn: Connection,
    skip: int,
    limit: int,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    kind: Literal["admin", "device"] | None = None,
    after: str | None = None,
    before: str | None = None,
    count: bool = True,
) -> Page[AuditEvent]:
    """Newest first. ``action`` ending in ``.`` is a prefix (``push.``); ``target`` is a user id or username.

    ``after``/``before`` page by keyset (cursors of this listing, ``before="end"``: the oldest page);
    ``count=False`` leaves the total out (null)."""
    where: list[Any] = []
    if actor:
        where.append(audit.c.actor == actor)
    if action:
        if action.endswith("."):
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(audit.c.action.like(f"{escaped}%", escape="\\"))
        else:
            where.append(audit.c.action == action)
    if target:
        # A username names the live user, or a deleted one through the name kept on their events.
        named = select(users.c.id).where(users.c.username_ci == target.casefold()).scalar_subquery()
        where.append(or_(audit.c.target == target, audit.c.target == named, audit.c.target_name == target))
    if kind:
        if kind not in KINDS:
            raise bad_request(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        where.append(audit.c.kind == kind)
    keys = [paging.Key(audit.c.id, descending=True)]
    fp = paging.fingerprint("audit", actor, action, target, kind)
    bound, reverse = paging.window(keys, fp, after, before)
    total = conn.execute(select(func.count()).select_from(audit).where(*where)).scalar_one() if count else None
    query = (
        select(audit, users.c.username, *paging.labels(keys))
        .select_from(audit.outerjoin(users, users.c.id == audit.c.target))
        .where(*where)
    )
    rows = paging.read(conn, query, keys, bound, reverse, skip, limit)
    return Page[AuditEvent](
        totalCount=total,
        results=[
            AuditEvent(
                id=r.id, at=to_wire(r.at), actor=r.actor, action=r.action, target=r.target,
                targetName=r.username or r.target_name, details=loads(r.details), kind=r.kind,
            )
            for r in rows
        ],
        **paging.ends(rows, keys, fp),
    )
