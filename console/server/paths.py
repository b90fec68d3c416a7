"""Where the service keeps its data by default."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_dir


def default_db_path() -> Path:
    return Path(user_data_dir("protect-console", appauthor=False)) / "protect.db"
