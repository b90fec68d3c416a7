"""Seed a directory and time the admin API's directory calls over loopback.

    .venv/bin/python bench/directory.py [--users 100000] [--db PATH|URL|temp-postgresql] [--repeat 20]

Prints a table: seeding time, then p50/p95 latency for the calls the console
makes while an admin scrolls and searches.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from console.client import ProtectClient
from console.models import Role
from console.server.app import create_app
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key

from _store import add_db_argument, bench_store  # noqa: E402 - bench/ is the script's folder


async def measure(api: ProtectClient, total: int, repeat: int) -> list[tuple[str, list[float]]]:
    calls = {
        "first page (100, by username)": lambda: api.list_users(limit=100),
        "deep page (skip 90%)": lambda: api.list_users(skip=int(total * 0.9), limit=100),
        "sort -created": lambda: api.list_users(limit=100, sort="-created"),
        "filter push ENROLLED": lambda: api.list_users(limit=100, filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"]),
        "search 'mar' (substring)": lambda: api.search_users("mar", limit=100),
        "exact email lookup": lambda: api.list_users(limit=1, filters=["email:$eq:zoe.martin@example.com"]),
        "push attempts page": lambda: api.push_attempts(limit=100),
        "privacy summary": lambda: api.privacy_summary(),
    }
    results = []
    for name, call in calls.items():
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - started) * 1000)
        results.append((name, samples))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    add_db_argument(parser, "bench.db")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with bench_store(args.db, "bench.db") as (store, db):
        run_bench(args, store, db)


def run_bench(args: argparse.Namespace, store, db: str) -> None:  # noqa: ANN001
    started = time.perf_counter()
    report = seed_directory(store, args.users)
    seed_seconds = time.perf_counter() - started
    key = create_key(store, "bench", Role.ADMIN)
    server = ServerThread(create_app(store))
    url = server.start()

    async def run() -> list[tuple[str, list[float]]]:
        async with ProtectClient(url, key) as api:
            return await measure(api, args.users, args.repeat)

    try:
        rows = asyncio.run(run())
    finally:
        server.stop()
    print(f"\nDirectory benchmark: {args.users:,} users, {report['devices']:,} devices, "
          f"{report['pushAttempts']:,} push attempts (db {db})")
    print(f"{'what':36} {'p50 ms':>9} {'p95 ms':>9}")
    print(f"{'seed (whole directory)':36} {seed_seconds * 1000:>9.0f} {'':>9}")
    for name, samples in rows:
        samples.sort()
        p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
        print(f"{name:36} {statistics.median(samples):>9.1f} {p95:>9.1f}")


if __name__ == "__main__":
    main()
