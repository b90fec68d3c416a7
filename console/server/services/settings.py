"""Service-wide settings, versioned for optimistic concurrency (ETag / If-Match)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func as sql_func
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ...models import ProtectSettings, ProtectSettingsPatch
from ..errors import ApiProblem
from ..store import Store, settings
from .audit import record
from .common import Principal, dumps, loads

ROW_ID = 1


def etag_for(version: int) -> str:
    return f'"settings-{version}"'


# The settings' version as a scalar subquery (0 before the first change): the hot routes read it in the
# same statement as the user, and parse the document again only when it moved.
settings_version = sql_func.coalesce(select(settings.c.version).where(settings.c.id == ROW_ID).scalar_subquery(), 0)
_DOC = select(settings.c.doc, settings.c.version).where(settings.c.id == ROW_ID)
_CACHE = "settings"


def cached_settings(store: Store, version: int) -> ProtectSettings | None:
    """The settings at ``version`` when the per-process cache holds that version, else None (see settings_at)."""
    cached: tuple[int, ProtectSettings] | None = store.caches.get(_CACHE)
    return cached[1] if cached is not None and cached[0] == version else None


def settings_at(store: Store, conn: Any, version: int) -> ProtectSettings:
    """The settings at ``version`` (read in the caller's statement): from the per-process cache when it is
    that version, else read again (``conn`` is a :class:`~console.server.store.RawConn`)."""
    cached = cached_settings(store, version)
    if cached is not None:
        return cached
    current, version = _from_row(conn.one(_DOC))
    store.caches[_CACHE] = (version, current)
    return current


def _from_row(row: Any) -> tuple[ProtectSettings, int]:
    """(settings, version) from a ``(doc, version)`` row; the defaults at version 0 when there is none."""
    if row is None:
        return ProtectSettings(), 0
    return ProtectSettings.model_validate(loads(row[0])), row[1]


def read_settings(conn: Connection) -> tuple[ProtectSettings, int]:
    return _from_row(conn.execute(_DOC).first())


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def _diff(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {}
    for key in after:
        path = f"{prefix}{key}"
        if isinstance(after[key], dict):
            changes.update(_diff(before.get(key, {}), after[key], path + "."))
        elif before.get(key) != after[key]:
            changes[path] = {"before": before.get(key), "after": after[key]}
    return changes


def update_settings(
    store: Store, change: ProtectSettingsPatch, if_match: str | None, actor: Principal, now: datetime
) -> tuple[ProtectSettings, int]:
    if not if_match:
        raise ApiProblem(428, "If-Match header is required: read the settings and send back their ETag")
    with store.write() as conn:
        current, version = read_settings(conn)
        if if_match.removeprefix("W/") != etag_for(version) and if_match != "*":
            raise ApiProblem(412, "settings were changed by someone else since you read them; read them again")
        before = current.model_dump()
        try:
            updated = ProtectSettings.model_validate(_merge(before, change.model_dump(exclude_none=True)))
        except ValidationError as exc:  # pragma: no cover - both models take their bounds from models.SETTINGS
            raise ApiProblem(422, str(exc)) from exc
        after = updated.model_dump()
        changes = _diff(before, after)
        if not changes:
            return current, version  # nothing changed: no new version, no audit event
        new_version = version + 1
        # Conditional on the version read: of concurrent changes with one ETag (in any process, on any
        # host) exactly one writes; the others find the row (or the first insert) already taken: 412.
        stale = ApiProblem(412, "settings were changed by someone else since you read them; read them again")
        if version == 0:
            try:
                with conn.begin_nested():
                    conn.execute(insert(settings).values(id=ROW_ID, doc=dumps(after), version=new_version))
            except IntegrityError:
                raise stale from None
        else:
            written = conn.execute(
                update(settings)
                .where(settings.c.id == ROW_ID, settings.c.version == version)
                .values(doc=dumps(after), version=new_version)
            ).rowcount
            if written != 1:
                raise stale
        record(conn, actor, "settings.update", "settings", {"changes": changes}, now)
    return updated, new_version
