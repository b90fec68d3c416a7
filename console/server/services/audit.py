"""The audit trail: every change through the admin API, in the same transaction as the change.

An event is ``admin`` when an API key did it (the actor is the key's name; ``actor_key_id`` and
``actor_role`` say which key) and ``device`` when the user's app did it (enrolment, replacing a
device, enrolling TOTP, changing its settings; the actor is ``user:<username>``). The kind is stored
with the event, not guessed from the actor text.

The trail is tamper-evident: each event carries ``hash`` = sha256 over its canonical fields and
``prev_hash``, the previous event's hash, and ``audit_chain`` holds the last event's id and hash.
:func:`record` is the only way events are written: it appends under a lock on that row (FOR UPDATE on
PostgreSQL; on SQLite the write transaction already holds the database's write lock), so appends from
any number of processes form one chain. :func:`verify_chain` walks it and names the first broken event.
``target_name`` is left out of the hash: it is filled in when the target user is deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Connection

from ...models import AuditEvent, Page
from ..clock import to_wire
from ..errors import bad_request
from ..store import audit, audit_chain, users
from . import paging
from .common import Principal, dumps, loads

KINDS = ("admin", "device")
GENESIS = "0" * 64  # the "previous hash" of the first event
CHAIN_ROW = 1
# The fields an event's hash covers, in this order (``target_name`` is not one: see the module doc).
HASHED_FIELDS = ("at", "actor", "actor_key_id", "actor_role", "action", "target", "details", "kind")


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")  # as PostgreSQL stores it (text cannot hold NUL)
    return value


def event_hash(event: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 (hex) over the event's :data:`HASHED_FIELDS` and the previous event's hash, as canonical JSON."""
    fields = [_canonical(event[name]) for name in HASHED_FIELDS]
    encoded = json.dumps([*fields, prev_hash], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


_CHAIN_HEAD = (
    select(audit_chain.c.last_id, audit_chain.c.last_hash).where(audit_chain.c.id == CHAIN_ROW).with_for_update()
)


def record(
    conn: Connection, actor: Principal | str, action: str, target: str, details: dict[str, Any], now: datetime
) -> None:
    """Append one event. ``actor`` is the API key (an admin action) or ``user:<username>`` (the user's device).

    The single entry point for audit events (every service calls it), in the caller's write transaction.
    """
    if isinstance(actor, Principal):
        name, kind, key_id, role = actor.name, "admin", actor.key_id or None, actor.role.value
    else:
        name, kind, key_id, role = actor, "device", None, None
    event = {
        "at": now,
        "actor": name,
        "actor_key_id": key_id,
        "actor_role": role,
        "action": action,
        "target": target,
        "details": dumps(details),
        "kind": kind,
    }
    head = conn.execute(_CHAIN_HEAD).first()
    prev = head.last_hash if head is not None else GENESIS
    digest = event_hash(event, prev)
    inserted = conn.execute(insert(audit).values(**event, prev_hash=prev, hash=digest)).inserted_primary_key
    assert inserted is not None  # a single-row INSERT always has it
    event_id = inserted[0]
    if head is None:  # the row is made by migration 0009; should it be gone, verify_chain says so
        conn.execute(insert(audit_chain).values(id=CHAIN_ROW, last_id=event_id, last_hash=digest))
    else:
        conn.execute(
            update(audit_chain).where(audit_chain.c.id == CHAIN_ROW).values(last_id=event_id, last_hash=digest)
        )


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: ``broken_id`` and ``problem`` name the first broken event (None: intact)."""

    checked: int
    last_id: int | None
    broken_id: int | None = None
    problem: str | None = None
    last_hash: str | None = None  # intact: the last event's hash, to keep elsewhere and compare later

    @property
    def ok(self) -> bool:
        return self.problem is None


_VERIFY_BATCH = 2000
_VERIFY_COLUMNS = (audit.c.id, *(audit.c[name] for name in HASHED_FIELDS), audit.c.prev_hash, audit.c.hash)


def _events(conn: Connection) -> Iterator[Any]:
    last = None
    while True:
        query = select(*_VERIFY_COLUMNS).order_by(audit.c.id).limit(_VERIFY_BATCH)
        rows = conn.execute(query if last is None else query.where(audit.c.id > last)).all()
        yield from rows
        if len(rows) < _VERIFY_BATCH:
            return
        last = rows[-1].id


def _short(value: str | None) -> str:
    return "none" if value is None else value[:12] + "…"


def verify_chain(conn: Connection) -> ChainReport:
    """Walk every event in id order: each must link to the one before and match its own hash; the chain head
    must name the last. Call it first thing in a fresh read transaction (see below)."""
    if conn.dialect.name == "postgresql":
        # One snapshot for every batch and the head, so events appended meanwhile are not half seen.
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    prev, prev_id, checked = GENESIS, None, 0
    for row in _events(conn):
        before = f"event {prev_id}'s hash" if prev_id is not None else "the start of the chain"
        if row.prev_hash != prev:
            return ChainReport(
                checked,
                prev_id,
                row.id,
                f"its prev_hash ({_short(row.prev_hash)}) is not {before} ({_short(prev)}): an event before it "
                "was deleted, inserted or moved",
            )
        computed = event_hash(row._mapping, row.prev_hash)
        if row.hash != computed:
            return ChainReport(
                checked,
                prev_id,
                row.id,
                f"its fields do not match its hash (stored {_short(row.hash)}, computed {_short(computed)}): "
                f"one of {', '.join(HASHED_FIELDS)} was changed",
            )
        prev, prev_id, checked = row.hash, row.id, checked + 1
    head = conn.execute(select(audit_chain.c.last_id, audit_chain.c.last_hash)).first()
    if head is None:
        return ChainReport(checked, prev_id, None, "the chain head (table audit_chain) is missing")
    if (head.last_id, head.last_hash) != (prev_id or 0, prev):
        return ChainReport(
            checked,
            prev_id,
            head.last_id,
            f"the chain head names event {head.last_id} ({_short(head.last_hash)}) as the last, but the last is "
            f"{prev_id} ({_short(prev)}): events at the end were deleted or the head was changed",
        )
    return ChainReport(checked, prev_id, last_hash=prev)


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
                id=r.id,
                at=to_wire(r.at),
                actor=r.actor,
                action=r.action,
                target=r.target,
                targetName=r.username or r.target_name,
                details=loads(r.details),
                kind=r.kind,
                actorKeyId=r.actor_key_id,
                actorRole=r.actor_role,
                hash=r.hash,
            )
            for r in rows
        ],
        **paging.ends(rows, keys, fp),
    )
