"""The admin API calls the console makes while an admin scrolls and searches, timed over loopback.

    .venv/bin/python bench/directory.py [--users 100000] [--db PATH|URL|temp-postgresql] [--repeat 20]

The directory comes from bench/_store.py (a cached seeded database: seeded once, reused after;
`--fresh` seeds again), the service is the real `protect-console serve` in its own process, and
this process is the client (the console's own ProtectClient, one keep-alive connection). Prints a
table: p50/p95 per call, with the goal where issue 8 sets one (search 50 ms, exact lookup 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served, some_users

from console.client import ProtectClient


async def measure(api: ProtectClient, total: int, email: str, repeat: int) -> dict[str, list[float]]:
    calls = {
        "first page (100, by username)": lambda: api.list_users(limit=100),
        "deep page (skip 90%)": lambda: api.list_users(skip=int(total * 0.9), limit=100),
        "sort -created": lambda: api.list_users(limit=100, sort="-created"),
        "filter push ENROLLED": lambda: api.list_users(limit=100, filters=["mfaEnrollment.pushStatus:$eq:ENROLLED"]),
        "search 'mar' (substring)": lambda: api.list_users(search="mar", limit=100),
        "exact email lookup": lambda: api.list_users(limit=1, filters=[f"email:$eq:{email}"]),
        "push attempts page": lambda: api.push_attempts(limit=100),
        "privacy summary": lambda: api.privacy_summary(),
    }
    results: dict[str, list[float]] = {name: [] for name in calls}
    for name, call in calls.items():
        await call()  # untimed: connection and first query plan
        for _ in range(repeat):
            started = time.perf_counter()
            await call()
            results[name].append((time.perf_counter() - started) * 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=20)
    parser.set_defaults(users=100_000)
    args = parser.parse_args()
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        email = some_users(db.value, 1)[0]["email"]
        with served(db.value, workers=args.workers) as service:

            async def run() -> dict[str, list[float]]:
                async with ProtectClient(service.url, service.key) as api:
                    return await measure(api, db.users, email, args.repeat)

            results = asyncio.run(run())
    goals = {"search 'mar' (substring)": 50.0, "exact email lookup": 100.0}
    print_table(
        f"Directory calls, {db.users:,} users, {db.label} ({db.note}), serve --workers {args.workers}",
        [Row(name, samples, goals.get(name)) for name, samples in results.items()],
        ["the console's ProtectClient (response models parsed) in this process; serve in its own", machine_note()],
    )


if __name__ == "__main__":
    main()
