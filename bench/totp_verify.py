"""TOTP verification throughput over loopback (the later target is 1,000/s on two cores).

    .venv/bin/python bench/totp_verify.py [--users 2000] [--seconds 5] [--concurrency 16] [--db PATH|URL|temp-postgresql]

Seeds users, reads their secrets straight from the store (a benchmark may; the
API never returns them), then has a pool of clients verify current codes for
random users through POST /api/v2/protect/totp/verify. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import pyotp
from sqlalchemy import select

from console.client import ProtectClient
from console.models import Role
from console.server.app import create_app
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key
from console.server.store import users

from _store import add_db_argument, bench_store  # noqa: E402 - bench/ is the script's folder


async def hammer(url: str, key: str, secrets: list[tuple[str, str]], seconds: float, concurrency: int):
    latencies: list[float] = []
    outcomes = {"valid": 0, "invalid": 0, "error": 0}
    deadline = time.perf_counter() + seconds

    async def worker(api: ProtectClient) -> None:
        while time.perf_counter() < deadline:
            user_id, secret = random.choice(secrets)
            started = time.perf_counter()
            try:
                result = await api.verify_totp(user_id, pyotp.TOTP(secret).now())
                outcomes["valid" if result.valid else "invalid"] += 1
            except Exception:  # noqa: BLE001 - counted, the table shows it
                outcomes["error"] += 1
            latencies.append((time.perf_counter() - started) * 1000)

    async with ProtectClient(url, key) as api:
        started = time.perf_counter()
        await asyncio.gather(*(worker(api) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, outcomes, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    add_db_argument(parser, "totp.db")
    args = parser.parse_args()
    with bench_store(args.db, "totp.db") as (store, db):
        run_bench(args, store, db)


def run_bench(args: argparse.Namespace, store, db: str) -> None:  # noqa: ANN001
    seed_directory(store, args.users)
    with store.read() as conn:
        secrets = [(r.id, r.totp_secret) for r in conn.execute(select(users.c.id, users.c.totp_secret).where(users.c.totp_secret.is_not(None)))]
    key = create_key(store, "bench", Role.SERVICE)
    server = ServerThread(create_app(store))
    url = server.start()
    try:
        latencies, outcomes, elapsed = asyncio.run(hammer(url, key, secrets, args.seconds, args.concurrency))
    finally:
        server.stop()
    latencies.sort()
    total = sum(outcomes.values())
    print(f"\nTOTP verify: {len(secrets):,} enrolled users, {args.concurrency} concurrent clients, one uvicorn process"
          f" (db {db})")
    print(f"{'what':28} {'value':>12}")
    print(f"{'verifications':28} {total:>12,}")
    print(f"{'per second':28} {total / elapsed:>12,.0f}")
    print(f"{'valid / invalid / error':28} {outcomes['valid']:>4,} / {outcomes['invalid']:,} / {outcomes['error']:,}")
    print(f"{'p50 ms':28} {statistics.median(latencies):>12.1f}")
    print(f"{'p95 ms':28} {latencies[int(len(latencies) * 0.95)]:>12.1f}")
    print("(invalid: the same user drew twice within one 30 s step; replay protection refuses the second)")


if __name__ == "__main__":
    main()
