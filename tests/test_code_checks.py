"""The code checks CI runs, as tests, so the README's one test command (``python -m pytest``) runs them too.

Each tool runs from this interpreter's environment (the versions pinned in ``[test]``) over the whole project, with
the configuration in pyproject.toml; a failure shows the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# mypy from cold takes ~15 s on an idle machine; a loaded CI runner can take several times that.
TIMEOUT = 600


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def _passes(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}", pytrace=False)


def test_ruff_finds_nothing() -> None:
    _passes(_run("-m", "ruff", "check", "--no-fix", "."), "ruff check")


def test_the_code_is_formatted() -> None:
    # The files only (`ruff format --diff` shows the changes; `ruff format` makes them).
    _passes(_run("-m", "ruff", "format", "--check", "."), "ruff format --check")


def test_mypy_finds_nothing() -> None:
    # The files and the strict modules come from [tool.mypy]; the cache (.mypy_cache) is created on a fresh clone.
    _passes(_run("-m", "mypy"), "mypy")


def test_import_contracts_are_kept() -> None:
    # import-linter has no `python -m` entry; this is what its `lint-imports` script runs.
    lint_imports = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = _run("-c", lint_imports)
    _passes(result, "lint-imports")
    assert "0 broken" in result.stdout, result.stdout
