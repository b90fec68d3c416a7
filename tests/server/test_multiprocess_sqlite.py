"""`serve --workers 2` on one SQLite file: the cross-process rules (see tests/server/multiprocess_cases.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.multiprocess_cases import CrossProcessRules, Deployment, require_two_workers_served, start_deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("mp-sqlite")
    dep = start_deployment(str(home / "protect.db"), home, workers=[2])
    try:
        require_two_workers_served(dep)
        yield dep
    finally:
        for served in dep.instances:
            served.stop()


class TestSqliteTwoWorkers(CrossProcessRules):
    pass
