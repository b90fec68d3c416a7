"""The boundaries the code relies on, checked rather than hoped for.

* The console's start-up path (``protect-console`` with no command) loads no service stack: FastAPI,
  SQLAlchemy, uvicorn and the database drivers cost start-up time and belong to ``serve`` alone.
* The headless modules (wire models, client, config, display facts) load no Textual: the CLI and scripts use them
  without a terminal UI.

import-linter's layer contracts (pyproject.toml, ``[tool.importlinter]``) run with the other code checks, in
tests/test_code_checks.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE_STACK = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "psycopg", "console.server")
HEADLESS = ("console.models", "console.client", "console.config", "console.display")


def _loaded_after(imports: str, wanted: tuple[str, ...]) -> list[str]:
    """The modules in (or under) `wanted` that a fresh interpreter has loaded after running `imports`.

    A fresh interpreter because this one has the server and the TUI loaded by other tests.
    """
    probe = (
        "import json, sys\n"
        f"{imports}\n"
        f"wanted = {wanted!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == w or m.startswith(w + '.') for w in wanted))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_console_start_up_path_loads_no_service_stack() -> None:
    # The modules cmd_tui imports.
    loaded = _loaded_after(
        "import console.cli, console.client, console.tui.startup\nfrom console.tui.app import ProtectConsoleApp",
        SERVICE_STACK,
    )
    assert loaded == [], f"the console's start-up imports service modules: {loaded}"


@pytest.mark.parametrize("module", HEADLESS)
def test_headless_modules_load_no_textual(module: str) -> None:
    loaded = _loaded_after(f"import {module}", ("textual",))
    assert loaded == [], f"{module} imports Textual: {loaded[:5]}"
