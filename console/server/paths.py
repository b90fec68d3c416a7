"""Where the service keeps its data by default."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_dir


def default_db_path() -> Path:
    return Path(user_data_dir("protect-console", appauthor=False)) / "protect.db"


def default_postgres_key_file() -> Path:
    """The secret key file for PostgreSQL databases served from this account (secretbox.py): one per host and
    user, beside where the SQLite default lives. Every host serving one database needs the same key."""
    return Path(user_data_dir("protect-console", appauthor=False)) / "secret.key"
