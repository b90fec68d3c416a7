"""The boundaries the code relies on, checked rather than hoped for.

* import-linter's contracts (pyproject.toml, ``[tool.importlinter]``): the service imports no console code,
  the console reaches the service only over HTTP, the wire models import neither side.
* The console's start-up path (``protect-console`` with no command) loads no service stack: FastAPI,
  SQLAlchemy, uvicorn and the database drivers cost start-up time and belong to ``serve`` alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_STACK = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "psycopg", "console.server")


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_console_start_up_path_loads_no_service_stack() -> None:
    # The modules cmd_tui imports, in a fresh interpreter (this one has the server loaded by other tests).
    probe = (
        "import json, sys\n"
        "import console.cli, console.client, console.tui.startup\n"
        "from console.tui.app import ProtectConsoleApp\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_STACK!r} "
        f"or m.startswith('console.server'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded == [], f"the console's start-up imports service modules: {loaded}"
