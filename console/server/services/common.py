"""Small helpers shared by the services."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...models import Role


def new_id() -> str:
    """24 hex characters, the shape of JumpCloud's object ids."""
    return secrets.token_hex(12)


def digest(secret: str) -> str:
    """Keys, device tokens and enrolment codes are stored only as this hash.

    They are long random strings, so a fast hash is enough (no dictionary to attack).
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id, name and role, and what limits the key carries."""

    key_id: str
    name: str
    role: Role
    resources: frozenset[str] | None = None  # a service key scoped to these resources (None: any)
    expires_at: datetime | None = None  # naive UTC; None: never
