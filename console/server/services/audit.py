"""The audit trail: every change through the admin API, in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from ...models import AuditEvent, Page
from ..clock import to_wire
from ..store import audit, users
from .common import Principal, dumps, loads


def record(
    conn: Connection, actor: Principal | str, action: str, target: str, details: dict[str, Any], now: datetime
) -> None:
    name = actor.name if isinstance(actor, Principal) else actor
    conn.execute(insert(audit).values(at=now, actor=name, action=action, target=target, details=dumps(details)))


def list_events(conn: Connection, skip: int, limit: int) -> Page[AuditEvent]:
    total = conn.execute(select(func.count()).select_from(audit)).scalar_one()
    rows = conn.execute(
        select(audit, users.c.username)
        .select_from(audit.outerjoin(users, users.c.id == audit.c.target))
        .order_by(audit.c.id.desc())
        .offset(skip)
        .limit(limit)
    ).mappings()
    return Page[AuditEvent](
        totalCount=total,
        results=[
            AuditEvent(
                id=r["id"], at=to_wire(r["at"]), actor=r["actor"], action=r["action"], target=r["target"],
                targetName=r["username"], details=loads(r["details"]),
            )
            for r in rows
        ],
    )
