"""API keys: issued once, stored hashed, looked up by hash.

``protect-console keys create|list|revoke`` act on the database directly with these functions;
the key itself exists only in :func:`create_key`'s return value, and nothing here returns a hash.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, or_, select, update

from ...models import Role
from ..clock import Clock
from ..errors import ApiProblem
from ..store import Store, api_keys
from .audit import record
from .common import Principal, digest, new_id

KEY_PREFIX = "pc_"
LOCAL_ACTOR = "local cli"  # the audit actor for changes made on the database host, without an API key


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its hash."""

    id: str
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


_INFO_COLUMNS = (
    api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.prefix, api_keys.c.created_at, api_keys.c.revoked_at
)


def _info(row) -> ApiKeyInfo:  # noqa: ANN001 - a SQLAlchemy row
    return ApiKeyInfo(id=row.id, name=row.name, role=row.role, prefix=row.prefix, created_at=row.created_at,
                      revoked_at=row.revoked_at)


def create_key(store: Store, name: str, role: Role | str, *, clock: Clock | None = None) -> str:
    """Create a key and return it in plain text: the only time it exists outside the caller."""
    role = Role(role)
    name = name.strip()
    if not name:
        raise ValueError("name: must not be empty")
    key = KEY_PREFIX + secrets.token_urlsafe(30)
    now = (clock or Clock()).now()
    with store.write() as conn:
        conn.execute(
            insert(api_keys).values(
                id=new_id(), name=name, role=role.value, key_hash=digest(key), prefix=key[:8], created_at=now
            )
        )
    return key


def list_keys(store: Store) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, oldest first."""
    with store.read() as conn:
        rows = conn.execute(select(*_INFO_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)).all()
    return [_info(r) for r in rows]


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


def revoke_key(store: Store, key_id: str, *, actor: str = LOCAL_ACTOR, clock: Clock | None = None) -> ApiKeyInfo | None:
    """Revoke one key (audited ``key.revoke``); None when it was already revoked (nothing changed, no audit)."""
    now = (clock or Clock()).now()
    with store.write() as conn:
        done = conn.execute(
            update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        ).rowcount
        if not done:
            return None
        row = conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id)).one()
        # An admin action (audit kind "admin"), done on the database host rather than with a key.
        who = Principal(key_id="", name=actor, role=Role.ADMIN)
        record(conn, who, "key.revoke", key_id, {"name": row.name, "role": row.role, "prefix": row.prefix}, now)
    return _info(row)


def ensure_bootstrap_key(store: Store) -> str | None:
    """On a database with no keys, create an ``admin`` key and return it (else None)."""
    with store.read() as conn:
        if conn.execute(select(func.count()).select_from(api_keys)).scalar_one():
            return None
    return create_key(store, "admin", Role.ADMIN)


def authenticate(store: Store, key: str) -> Principal | None:
    with store.read() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.role).where(
                api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
            )
        ).first()
    return None if row is None else Principal(key_id=row.id, name=row.name, role=Role(row.role))


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


def cached_authenticate(store: Store, key: str) -> Principal | None:
    """Like :func:`authenticate`, from a small per-process cache whose entries are trusted for CACHE_SECONDS.

    Only for the hot routes (TOTP verify, push), which also confirm the key in their own statements.
    """
    cache: dict[str, tuple[Principal, float]] = store.caches.setdefault(_CACHE, {})
    hashed = digest(key)
    now = time.monotonic()
    entry = cache.get(hashed)
    if entry is not None and now - entry[1] < CACHE_SECONDS:
        return entry[0]
    principal = authenticate(store, key)
    if principal is None:
        cache.pop(hashed, None)
        return None
    if len(cache) >= CACHE_SIZE:
        cache.clear()  # keys in use are few; a flood of distinct ones must not grow memory
    cache[hashed] = (principal, now)
    return principal


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
