"""Two `serve` instances (one with `--workers 2`) on one PostgreSQL database: the cross-instance rules.

The same cases as on SQLite (tests/server/multiprocess_cases.py); here the races are split between two
instances, as between two hosts behind a load balancer, and only the database is shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.multiprocess_cases import CrossProcessRules, Deployment, require_two_workers_served, start_deployment


@pytest.fixture(scope="module")
def deployment(pg_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("mp-postgres")
    db = pg_cluster.create_database(migrated=False)  # empty: the first `serve` makes the schema
    dep = start_deployment(db, home, workers=[2, 1])
    try:
        require_two_workers_served(dep)
        yield dep
    finally:
        for served in dep.instances:
            served.stop()
        pg_cluster.drop_database(db)


class TestPostgresTwoInstances(CrossProcessRules):
    pass
