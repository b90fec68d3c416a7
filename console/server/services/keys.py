"""API keys: issued once, stored hashed, looked up by hash; optionally expiring, scoped to resources.

``protect-console keys create|list|revoke|rotate`` act on the database directly with these functions,
and ``/api/v2/protect/keys`` (admin) with the same ones; the key itself exists only in :func:`issue_key`'s
and :func:`rotate_key`'s return value, and nothing here returns a hash. Every change is audited.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update

from ...models import ApiKey, ApiKeyStatus, Role
from ..clock import Clock, from_wire, to_wire
from ..errors import ApiProblem
from ..store import Store, api_keys
from .audit import record
from .common import Principal, digest, dumps, loads, new_id

KEY_PREFIX = "pc_"
LOCAL_ACTOR = "local cli"  # the audit actor for changes made on the database host, without an API key
LAST_USED_EVERY = 60.0  # seconds: "last used" is written at most this often per key and process
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its hash."""

    id: str
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    resources: tuple[str, ...] | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def status(self, now: datetime) -> ApiKeyStatus:
        if self.revoked_at is not None:
            return ApiKeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return ApiKeyStatus.EXPIRED
        return ApiKeyStatus.ACTIVE

    def wire(self, now: datetime) -> ApiKey:
        return ApiKey(
            id=self.id,
            prefix=self.prefix,
            name=self.name,
            role=Role(self.role),
            status=self.status(now),
            createdAt=to_wire(self.created_at),
            lastUsedAt=to_wire(self.last_used_at),
            expiresAt=to_wire(self.expires_at),
            revokedAt=to_wire(self.revoked_at),
            resources=list(self.resources) if self.resources is not None else None,
        )

    def audit_details(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "prefix": self.prefix,
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "resources": list(self.resources) if self.resources is not None else None,
        }


_INFO_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.role,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.expires_at,
    api_keys.c.last_used_at,
    api_keys.c.resources,
)


def _resources(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(loads(text))


def _info(row: Any) -> ApiKeyInfo:  # a SQLAlchemy row
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        resources=_resources(row.resources),
    )


def parse_expiry(text: str, now: datetime) -> datetime:
    """``90d``, ``12h``, ``30m``, ``2w`` from now, or an ISO date or date-time (UTC unless it says otherwise)."""
    match = _DURATION.match(text)
    if match:
        amount = int(match.group(1))
        if amount == 0:
            raise ValueError("expires: must be in the future")
        return now + timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
        when = from_wire(when)
    except ValueError:
        raise ValueError(f"expires: {text!r} is neither a duration (90d, 12h, 30m, 2w) nor an ISO date") from None
    return when


def _check_new_key(
    name: str, role: Role, expires_at: datetime | None, resources: Iterable[str] | None, now: datetime
) -> tuple[str, tuple[str, ...] | None]:
    name = name.strip()
    if not name:
        raise ValueError("name: must not be empty")
    if "\x00" in name:
        raise ValueError("name: must not contain NUL characters")
    if expires_at is not None and expires_at <= now:
        raise ValueError("expires: must be in the future")
    scoped = None
    if resources is not None:
        scoped = tuple(dict.fromkeys(resources))  # matched exactly against the push's resource
        if role != Role.SERVICE:
            raise ValueError(
                f"resource: only service keys push, so only they are scoped to resources (not {role.value})"
            )
        if not scoped or any(not r.strip() or "\x00" in r for r in scoped):
            raise ValueError("resource: must have a visible character and no NUL")
    return name, scoped


def _insert_key(
    conn: Any, name: str, role: Role, expires_at: datetime | None, resources: tuple[str, ...] | None, now: datetime
) -> tuple[str, ApiKeyInfo]:
    key = KEY_PREFIX + secrets.token_urlsafe(30)
    info = ApiKeyInfo(
        id=new_id(),
        name=name,
        role=role.value,
        prefix=key[:8],
        created_at=now,
        expires_at=expires_at,
        resources=resources,
    )
    conn.execute(
        insert(api_keys).values(
            id=info.id,
            name=name,
            role=role.value,
            key_hash=digest(key),
            prefix=info.prefix,
            created_at=now,
            expires_at=expires_at,
            resources=None if resources is None else dumps(list(resources)),
        )
    )
    return key, info


def _who(actor: Principal | str) -> Principal:
    # A change made on the database host (the CLI) is an admin action without a key.
    return actor if isinstance(actor, Principal) else Principal(key_id="", name=actor, role=Role.ADMIN)


def issue_key(
    store: Store,
    name: str,
    role: Role | str,
    *,
    expires_at: datetime | None = None,
    resources: list[str] | tuple[str, ...] | None = None,
    actor: Principal | str = LOCAL_ACTOR,
    clock: Clock | None = None,
) -> tuple[str, ApiKeyInfo]:
    """Create a key (audited ``key.create``): the key in plain text, the only time it exists outside the caller."""
    role = Role(role)
    now = (clock or Clock()).now()
    name, scoped = _check_new_key(name, role, expires_at, resources, now)
    with store.write() as conn:
        key, info = _insert_key(conn, name, role, expires_at, scoped, now)
        record(conn, _who(actor), "key.create", info.id, info.audit_details(), now)
    return key, info


def create_key(store: Store, name: str, role: Role | str, *, clock: Clock | None = None, **options: Any) -> str:
    """:func:`issue_key`, the key alone."""
    return issue_key(store, name, role, clock=clock, **options)[0]


def list_keys(store: Store) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, oldest first."""
    with store.read() as conn:
        rows = conn.execute(select(*_INFO_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)).all()
    return [_info(r) for r in rows]


def get_key(store: Store, key_id: str) -> ApiKeyInfo | None:
    with store.read() as conn:
        row = conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id)).first()
    return None if row is None else _info(row)


def find_keys(store: Store, ref: str) -> list[ApiKeyInfo]:
    """Keys whose id, prefix (``pc_xxxxx``) or name is exactly ``ref``, oldest first."""
    ref = ref.strip()
    with store.read() as conn:
        rows = conn.execute(
            select(*_INFO_COLUMNS)
            .where(or_(api_keys.c.id == ref, api_keys.c.prefix == ref, api_keys.c.name == ref))
            .order_by(api_keys.c.created_at, api_keys.c.id)
        ).all()
    return [_info(r) for r in rows]


def revoke_key(
    store: Store, key_id: str, *, actor: Principal | str = LOCAL_ACTOR, clock: Clock | None = None
) -> ApiKeyInfo | None:
    """Revoke one key (audited ``key.revoke``); None when it was already revoked (nothing changed, no audit).

    Every process refuses it from the next request on the admin API, and within
    :data:`CACHE_SECONDS` (at once, in practice: see ``key_is_live``) on the hot routes."""
    now = (clock or Clock()).now()
    with store.write() as conn:
        done = conn.execute(
            update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        ).rowcount
        if not done:
            return None
        info = _info(conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id)).one())
        record(
            conn, _who(actor), "key.revoke", key_id, {"name": info.name, "role": info.role, "prefix": info.prefix}, now
        )
    return info


class KeyNotUsable(ValueError):
    """The key to rotate is revoked or expired (rotate replaces a working key; create makes a new one)."""


def rotate_key(
    store: Store,
    key_id: str,
    *,
    grace_seconds: int = 0,
    actor: Principal | str = LOCAL_ACTOR,
    clock: Clock | None = None,
) -> tuple[str, ApiKeyInfo, ApiKeyInfo] | None:
    """A new key with the old one's name, role and resources (and its lifetime, if it had one), audited
    ``key.rotate``. The old key is revoked at once, or with ``grace_seconds`` expires that much later.

    Returns (the new key in plain text, the new key's info, the old key's) or None when ``key_id`` is unknown."""
    now = (clock or Clock()).now()
    with store.write() as conn:
        row = conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id).with_for_update()).first()
        if row is None:
            return None
        old = _info(row)
        if old.status(now) != ApiKeyStatus.ACTIVE:
            raise KeyNotUsable(f"key {old.name!r} ({old.prefix}) is {old.status(now).value}: create a new one instead")
        lifetime = None if old.expires_at is None else old.expires_at - old.created_at
        key, new = _insert_key(
            conn, old.name, Role(old.role), None if lifetime is None else now + lifetime, old.resources, now
        )
        if grace_seconds > 0:
            until = now + timedelta(seconds=grace_seconds)
            change: dict[str, Any] = {"expires_at": min(until, old.expires_at or until)}
        else:
            change = {"revoked_at": now}
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**change))
        old = _info(conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id)).one())
        record(
            conn,
            _who(actor),
            "key.rotate",
            key_id,
            {
                "name": old.name,
                "role": old.role,
                "prefix": old.prefix,
                "graceSeconds": grace_seconds,
                "newKeyId": new.id,
                "newPrefix": new.prefix,
            },
            now,
        )
    return key, new, old


def ensure_bootstrap_key(store: Store) -> str | None:
    """On a database with no keys, create an ``admin`` key and return it (else None)."""
    with store.read() as conn:
        if conn.execute(select(func.count()).select_from(api_keys)).scalar_one():
            return None
    return create_key(store, "admin", Role.ADMIN)


def _lookup(store: Store, key: str) -> Principal | None:
    """The key's principal if it exists and is not revoked (expired or not)."""
    with store.read() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.expires_at, api_keys.c.resources).where(
                api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    resources = _resources(row.resources)
    return Principal(
        key_id=row.id,
        name=row.name,
        role=Role(row.role),
        expires_at=row.expires_at,
        resources=None if resources is None else frozenset(resources),
    )


def expired(principal: Principal, now: datetime) -> bool:
    return principal.expires_at is not None and principal.expires_at <= now


def expired_problem(principal: Principal) -> ApiProblem:
    assert principal.expires_at is not None, "only an expired key gets this answer"
    when = to_wire(principal.expires_at).isoformat().replace("+00:00", "Z")
    return ApiProblem(401, f"API key expired at {when}: ask an admin for a new one")


def touch(store: Store, principal: Principal, now: datetime) -> None:
    """Record the key's use ("last used"), at most once per :data:`LAST_USED_EVERY` per key and process."""
    written: dict[str, float] = store.caches.setdefault("api_keys_used", {})
    at = time.monotonic()
    if at - written.get(principal.key_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
        return
    written[principal.key_id] = at
    if len(written) > CACHE_SIZE:
        written.clear()
    with store.write() as conn:
        conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == principal.key_id,
                or_(
                    api_keys.c.last_used_at.is_(None),
                    api_keys.c.last_used_at < now - timedelta(seconds=LAST_USED_EVERY),
                ),
            )
            .values(last_used_at=now)
        )


def identify(store: Store, key: str, now: datetime) -> Principal:
    """The caller of the admin API: a live, unexpired key, or 401 saying why."""
    principal = _lookup(store, key)
    if principal is None:
        raise ApiProblem(401, INVALID_KEY)
    if expired(principal, now):
        raise expired_problem(principal)
    touch(store, principal, now)
    return principal


def authenticate(store: Store, key: str, now: datetime | None = None) -> Principal | None:
    """The key's principal when it is live and unexpired, else None."""
    principal = _lookup(store, key)
    if principal is None or expired(principal, now or Clock().now()):
        return None
    return principal


def require_resource(actor: Principal, resource: str) -> None:
    """A service key scoped to resources may push only for those (403 otherwise)."""
    if actor.resources is not None and resource not in actor.resources:
        raise ApiProblem(403, f"resource: this API key may not push for {resource!r} (it is scoped to other resources)")


# ------------------------------------------------------------------ the hot routes' key cache

INVALID_KEY = "invalid or revoked API key"  # the 401 for a key that is not (or no longer) one of ours

CACHE_SECONDS = 1.0  # a revoked key is refused by every process within this long, whatever it is used for
CACHE_SIZE = 1024
_CACHE = "api_keys"

# For the hot routes' own statements: 1 while the key is live. They read it in the same statement as
# the user, so a key revoked anywhere is refused from the next request on, even inside CACHE_SECONDS.
key_is_live = (
    select(func.count())
    .select_from(api_keys)
    .where(api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None))
    .scalar_subquery()
)
KEY_IS_LIVE = select(key_is_live.label("live"))


def cached_authenticate(store: Store, key: str, now: datetime | None = None) -> Principal | None:
    """Like :func:`authenticate`, from a small per-process cache whose entries are trusted for CACHE_SECONDS.

    Only for the hot routes (TOTP verify, push), which also confirm the key is not revoked in their own
    statements; expiry is checked here on every call (the principal carries it). "Last used" is written
    when the entry is refreshed, at most once a minute (:func:`touch`).
    """
    cache: dict[str, tuple[Principal, float]] = store.caches.setdefault(_CACHE, {})
    hashed = digest(key)
    at = time.monotonic()
    now = now or Clock().now()
    entry = cache.get(hashed)
    principal: Principal | None
    if entry is not None and at - entry[1] < CACHE_SECONDS:
        principal = entry[0]
    else:
        principal = _lookup(store, key)
        if principal is None:
            cache.pop(hashed, None)
            return None
        if len(cache) >= CACHE_SIZE:
            cache.clear()  # keys in use are few; a flood of distinct ones must not grow memory
        cache[hashed] = (principal, at)
        if not expired(principal, now):
            touch(store, principal, now)
    return None if expired(principal, now) else principal


def forget_key(store: Store, key_id: str) -> None:
    """A hot route found the key revoked: drop it, so the next request is refused before its body is read."""
    cache: dict[str, tuple[Principal, float]] = store.caches.get(_CACHE, {})
    for hashed, (principal, _) in list(cache.items()):
        if principal.key_id == key_id:
            cache.pop(hashed, None)


def revoked(store: Store, actor: Principal) -> ApiProblem:
    """The hot routes found ``actor``'s key revoked: forget it here, and answer as authentication does."""
    forget_key(store, actor.key_id)
    return ApiProblem(401, INVALID_KEY)
