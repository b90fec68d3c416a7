"""API keys: issued once, stored hashed, looked up by hash."""

from __future__ import annotations

import secrets

from sqlalchemy import func, insert, select

from ...models import Role
from ..clock import Clock
from ..store import Store, api_keys
from .common import Principal, digest, new_id

KEY_PREFIX = "pc_"


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
