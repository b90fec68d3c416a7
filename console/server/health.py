"""What a database outage looks like to the service, on either store.

PostgreSQL: the server stops or restarts; pooled connections die (``pool_pre_ping`` replaces
them) and new ones are refused until it is back. Every call then fails with an
``OperationalError``, which the API answers with 503 (see errors.py), and the pool reconnects
by itself once the server answers again.

SQLite has no server: its outage is the database *file* becoming unavailable (the volume is
unmounted or fails, an operator moves the file away to restore a backup). A connection already
open keeps reading and writing the old, now unreachable file, which would silently lose every
later write. :func:`watch_sqlite_file` makes the pool notice: a connection is handed out only
while the file at the path is the one it opened, and no connection creates a new, empty file
in place of a missing one. Both end in ``OperationalError`` (so 503), and once the file is back
new connections open it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

_IDENTITY = "protect_file_identity"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def watch_sqlite_file(engine: Engine, path: Path) -> None:
    """Hand out connections to ``path`` only while it is the file they opened (see the module doc)."""
    if getattr(engine, "_protect_watched", False):
        return
    engine._protect_watched = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "do_connect")
    def _refuse_missing(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        if _identity(path) is None:
            # sqlite3 would create an empty database here and the service would answer from it.
            raise sqlite3.OperationalError(f"unable to open database file: {path} is missing")

    @event.listens_for(engine, "connect")
    def _remember(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDENTITY] = _identity(path)

    @event.listens_for(engine, "checkout")
    def _still_the_file(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if not opened_this_file(record.info, path):
            # The pool discards this connection and opens a new one (which _refuse_missing may refuse).
            raise DisconnectionError(f"{path} is no longer the file this connection opened")


def opened_this_file(info: dict[Any, Any], path: Path) -> bool:
    """Whether the connection whose pool record holds ``info`` opened the file now at ``path``.

    Not when either is unknown: a connection opened before the watch began (open_store's own, still in
    the pool) has no identity recorded, and a missing file has none; taken as equal, such a connection
    answered from the moved-away file (a push got 404, not 503, in the outage test)."""
    opened = info.get(_IDENTITY)
    return opened is not None and opened == _identity(path)
