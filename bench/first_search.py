"""A new `serve` process's first search of a word, two code trees paired and interleaved (an A/B).

    .venv/bin/python bench/first_search.py --base /path/to/old/checkout [--users 1000000] [--db ...] [--rounds 3]

What api_search.py's "cold process" rows time, for the code in ``--base`` and for this checkout, one
after the other in each round (the order alternates between rounds, so drift in the machine's speed
falls on both alike): `serve` started anew with ``PYTHONPATH`` set to the tree, one request that counts
nothing (an exact email) untimed, then one search: ``GET /api/systemusers?search=WORD&limit=100``,
with the count an earlier process stored in the database, and the first count ever (the stored counts
deleted just before the process starts). Beside each row: the server's CPU for that request (the
`serve` process and, on PostgreSQL, its database backends) and the load averages while it ran.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import httpx
from _store import ROOT, Row, add_bench_arguments, machine_note, print_table, seeded_db, served, some_users
from api_search import GOAL_MS, ServerCpu, _mean, forget_stored_counts, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=3)
    parser.add_argument("--base", required=True, help="the other code tree (a checkout or worktree of the old commit)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each starts every case once per tree")
    parser.add_argument("--words", nargs="+", default=["example", "son"])
    args = parser.parse_args()
    trees = {"base": str(Path(args.base).resolve()), "this": str(ROOT)}
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        rare = some_users(db.value, 1)[0]
        cases = [(word, stored) for word in args.words for stored in (False, True)]
        wall: dict[tuple[str, str, bool], list[float]] = {}
        cpu: dict[tuple[str, str, bool], list[float]] = {}
        loads: list[float] = []
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
            for (word, stored), name in itertools.product(cases, order):
                if not stored:
                    forget_stored_counts(db.value)
                spent_wall, spent_cpu = first_search(db.value, args.workers, trees[name], rare, word)
                wall.setdefault((name, word, stored), []).append(spent_wall)
                cpu.setdefault((name, word, stored), []).append(spent_cpu)
                loads.append(os.getloadavg()[0])
    rows = [
        Row(
            f"{name}: '{word}', {'count stored before' if stored else 'first count ever'}",
            wall[name, word, stored],
            GOAL_MS,
            note=f"server CPU {_mean(cpu[name, word, stored]):.1f} ms/op "
            f"({', '.join(f'{v:.0f}' for v in cpu[name, word, stored])})",
        )
        for word, stored in cases
        for name in trees
    ]
    notes = [
        f"base = {trees['base']}, this = {trees['this']}; {args.rounds} rounds, order alternating",
        f"1-minute load average during the runs: {min(loads):.2f}-{max(loads):.2f}",
        machine_note(),
    ]
    print_table(f"First search in a new serve process, {db.users:,} users, {db.label}, A/B", rows, notes)


def first_search(db: str, workers: int, tree: str, rare: dict[str, str], word: str) -> tuple[float, float]:
    """(wall ms, server CPU ms) of a new `serve` process's first search of ``word``, running the code in ``tree``."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tree  # the serve subprocess imports `console` from there
    try:
        with served(db, workers=workers) as service:
            cpu = ServerCpu(db, service.pid)
            with httpx.Client(base_url=service.url, headers={"x-api-key": service.key}, timeout=60) as client:
                lookup: dict[str, str | int] = {"filter": f"email:$eq:{rare['email']}", "limit": 1}
                client.get("/api/systemusers", params=lookup).raise_for_status()  # counts nothing
                cpu.find_backends()

                def search() -> Any:
                    response = client.get("/api/systemusers", params={"search": word, "limit": 100})
                    response.raise_for_status()
                    return response.json()

                spent_wall, spent_cpu, _ = timed(search, cpu)
            cpu.close()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return spent_wall, spent_cpu


if __name__ == "__main__":
    main()
