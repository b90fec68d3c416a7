"""Users search and keyset paging in the service layer (no HTTP): p50/p95 per query, with the goal beside it.

    python bench/search_paging.py --db /tmp/protect-bench-1000000.db [--db postgresql://...] [--runs 30]

Uses an existing seeded directory (``protect-console seed``); it only reads. Each row times
``list_users`` as the endpoints call it (a read transaction, the first page of ``--limit`` rows, and
the exact ``totalCount`` unless the row says otherwise). The API adds its HTTP cost on top
(bench/api_search.py measures that).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from sqlalchemy import func, select

from console.server.clock import Clock
from console.server.services import users as user_service
from console.server.store import open_store, users

GOAL_MS = 50.0


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm: the first call pays for cold pages and the case-fold table
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]


def bench(db: str, runs: int, limit: int) -> None:
    store = open_store(db)
    now = Clock().now()
    try:
        with store.read() as conn:
            total = conn.execute(select(func.count()).select_from(users)).scalar_one()
            # A real username with digits (the seed's collisions), as a support desk would paste it.
            someone = (
                conn.execute(
                    select(users.c.username)
                    .where(users.c.username_ci.like("wei.lewis%"))
                    .order_by(users.c.username.desc())
                    .limit(1)
                ).scalar()
                or "wei.lewis"
            )

        def page(skip: int = 0, **kw):
            def run():
                with store.read() as conn:
                    return user_service.list_users(conn, now, skip=skip, limit=limit, **kw)

            return run

        depth = int(total * 0.9)
        with store.read() as conn:  # the cursor of the row at 90% (found once, by offset; not timed)
            deep = user_service.list_users(conn, now, skip=depth, limit=1).startCursor
            deep_search = user_service.list_users(conn, now, skip=0, limit=1, search="mar")
        print(f"{'what':58} {'p50 ms':>8} {'p95 ms':>8}  goal", flush=True)
        for label, kw in (
            ("search 'mar' + count", {"search": "mar"}),
            (f"search '{someone}' + count", {"search": someone}),
            ("search 'Mary Garcia' + count", {"search": "Mary Garcia"}),
            ("search 'mary g' + count", {"search": "mary g"}),
            ("search 'garcia' + count", {"search": "garcia"}),
            ("search 'ma' + count (1-2 chars: substring, scans)", {"search": "ma"}),
            ("search 'mar', count=false", {"search": "mar", "count": False}),
            (
                "search 'mar' page 2 by cursor, count=false",
                {"search": "mar", "count": False, "after": deep_search.endCursor},
            ),
            ("list + count (first page)", {}),
            (f"list, keyset page at row {depth:,} (count=false)", {"after": deep, "count": False}),
            (f"list, offset page at row {depth:,} (count=false)", {"skip": depth, "count": False}),
            ("list, last page (before=end, count=false)", {"before": "end", "count": False}),
            ("list sort=lastname, keyset at 90% (count=false)", None),
        ):
            if kw is None:
                with store.read() as conn:
                    cursor = user_service.list_users(conn, now, skip=depth, limit=1, sort="lastname").startCursor
                kw = {"sort": "lastname", "after": cursor, "count": False}
            p50, p95 = timed(page(**kw), runs)
            goal = "≤ 50 ms p95" if "search" in label and "1-2" not in label else "≈ first page"
            print(f"{label:58} {p50:8.1f} {p95:8.1f}  {goal}", flush=True)
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", required=True, help="a seeded SQLite file or postgresql:// URL")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    for db in args.db:
        store = open_store(db)
        with store.read() as conn:
            total = conn.execute(select(func.count()).select_from(users)).scalar_one()
        kind = "SQLite" if store.is_sqlite else "PostgreSQL"
        store.dispose()
        print(f"\n{kind}, {total:,} users, first page of {args.limit}, {args.runs} runs each")
        bench(db, args.runs, args.limit)


if __name__ == "__main__":
    main()
