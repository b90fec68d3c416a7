"""API search and paging over loopback: first page + totalCount (goal <= 50 ms p95 for 3+ characters).

    .venv/bin/python bench/api_search.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--repeat 20]

The real `protect-console serve` runs in its own process on 127.0.0.1; this process is the client
(httpx, one keep-alive connection, as the console holds one). A sample is one request until its
JSON is parsed: ``GET /api/systemusers?search=...&limit=100`` (what the console's search sends), the
first page and the exact ``totalCount``. Queries go round-robin (one untimed call of each first),
so the machine's noise spreads over all of them. Rows:

* 3+ character queries (the goal): common and rare substrings, first and last names (one late in the
  alphabet, one of 5+ letters, one with a diacritic whose users' usernames spell it without: their
  matches all come late in username order), a whole username that exists, a string that matches
  nobody, the whole directory's email domain; their pooled p95 is judged too;
* 1-2 characters and several words (`mary g`): reported, the issue sets no figure for them;
* POST /api/search/systemusers over all five name fields;
* the page at 90 % depth: by ``skip`` (offset) and by keyset (``after=<endCursor of the page before>``,
  with and without ``count=false``), and ``before=end``; skipped, saying so, while the server returns
  no ``endCursor``;
* an exact email (``filter=email:$eq:...``), the index lookup behind jump-by-key (goal <= 100 ms);
* the first search after a change: the service keeps the exact counts of unfiltered searches until a
  user is added, removed or renamed (by the names' version, migration 0010), so the rows above are
  repeats after their first call. Here a user's display name is set (untimed, and put back at the
  end) before each sample: the count kept before it is brought forward through the change log
  (migration 0011), not counted again;
* a cold process: `serve` started anew (no counts of its own), one request that counts nothing (the
  exact email) untimed, then its first search: of a word many users have, whose count the gathering
  stored (`protect-console db gather-counts`, which seeded_db runs before anything is timed, as `serve`
  does in the background after a bulk load) and the process brings forward through the log; and first
  counts ever (that query's stored count deleted before the process starts): a lone first name (its
  cost before the gathering reaches it), and several words, which the gathering leaves to searches.
  The database's pages are warm in the OS cache (the same files were just read): not a cold machine.

Each row's note gives the server's CPU per request: the `serve` process (every thread) plus, on
PostgreSQL, the database backends serving it, from /proc's schedstat (nanoseconds of CPU); unlike
the wall-clock figures it barely moves with other work on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served, some_users
from sqlalchemy import text as sql_text

from console.server import search_index
from console.server.services.users import GATHERED, stored_count_key
from console.server.store import _connected, parse_db

GOAL_MS = 50.0
JUMP_GOAL_MS = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=20)
    parser.add_argument("--cold", type=int, default=3, help="cold-process samples per word (0: none)")
    args = parser.parse_args()
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        picks = some_users(db.value, 3)
        with served(db.value, workers=args.workers) as service:
            cpu = ServerCpu(db.value, service.pid)
            rows, notes = run(service.url, service.key, db.users, picks, args.repeat, cpu)
            cpu.close()
        rows += cold_rows(db.value, args.workers, picks[0], args.cold)
    notes.append(machine_note())
    print_table(
        f"API search and paging, {db.users:,} users, {db.label} ({db.note}), serve --workers {args.workers}",
        rows,
        notes,
    )


class ServerCpu:
    """CPU time (ms) of the service: every thread of `serve`, and on PostgreSQL its database backends."""

    def __init__(self, db: str, pid: int) -> None:
        self.pid = pid
        self.engine = None if parse_db(db).is_sqlite else _connected(parse_db(db))
        self.backends: list[int] = []

    def find_backends(self) -> None:
        """After the first requests: the backends holding the service's connections (not this one)."""
        if self.engine is not None:
            with self.engine.connect() as conn:
                self.backends = list(
                    conn.exec_driver_sql(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).scalars()
                )

    def ms(self) -> float:
        total = 0
        for path in [
            *Path(f"/proc/{self.pid}/task").glob("*/schedstat"),
            *(Path(f"/proc/{b}/schedstat") for b in self.backends),
        ]:
            try:
                total += int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread or backend that ended meanwhile
        return total / 1e6

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def timed(call: Callable[[], Any], cpu: ServerCpu) -> tuple[float, float, Any]:
    """(wall ms, server CPU ms, answer) of one request."""
    used = cpu.ms()
    started = time.perf_counter()
    answer = call()
    wall = (time.perf_counter() - started) * 1000
    return wall, cpu.ms() - used, answer


def cold_rows(db: str, workers: int, rare: dict[str, str], repeat: int) -> list[Row]:
    """The first search of a query in a process that has counted nothing yet, ``repeat`` times each: a word many
    users have (its count stored by the gathering, or by an earlier search), and first counts ever (that
    search's stored count deleted): a lone first name (what a word costs before the gathering reaches it),
    and several words, which the gathering leaves to searches (only lone words are gathered)."""
    first_name = rare["username"].split(".")[0].casefold()  # the seed's usernames: first.last + digits
    cases = [
        ("example", True),
        ("son", True),
        (first_name, False),
        (f"{first_name} example", False),
        ("son example", False),
    ]
    samples: dict[tuple[str, bool], list[float]] = {c: [] for c in cases}
    used: dict[tuple[str, bool], list[float]] = {c: [] for c in cases}
    found: dict[tuple[str, bool], Any] = {}
    for _, (word, stored) in zip(range(repeat * len(cases)), itertools.cycle(cases)):
        if not stored:
            forget_stored_counts(db, word)
        with served(db, workers=workers) as service:
            cpu = ServerCpu(db, service.pid)
            with httpx.Client(base_url=service.url, headers={"x-api-key": service.key}, timeout=60) as client:
                lookup = {"filter": f"email:$eq:{rare['email']}", "limit": 1}
                client.get("/api/systemusers", params=lookup).raise_for_status()  # counts nothing
                cpu.find_backends()

                def search(term: str = word) -> Any:
                    response = client.get("/api/systemusers", params={"search": term, "limit": 100})
                    response.raise_for_status()
                    return response.json()

                wall, spent, found[word, stored] = timed(search, cpu)
            cpu.close()
        samples[word, stored].append(wall)
        used[word, stored].append(spent)
    return [
        Row(
            f"cold process, '{word}': {'count stored (gathered)' if stored else 'first count ever'}",
            samples[word, stored],
            GOAL_MS,
            note=f"{found[word, stored].get('totalCount', 0):,} found; server CPU {_mean(used[word, stored]):.1f} ms/op",
        )
        for word, stored in cases
        if samples[word, stored]
    ]


def forget_stored_counts(db: str, search: str | None = None) -> None:
    """Delete the stored count of ``search``, or else all of them (by searches and by the gathering): the next
    search counts in full. Not the gathering's marker: no process gathers them again meanwhile."""
    engine = _connected(parse_db(db))
    try:
        with engine.begin() as conn:
            if search is None:
                forget, values = "query <> :marker", {"marker": GATHERED}
            else:
                forget, values = "query = :key", {"key": stored_count_key(search)}
            conn.execute(sql_text(f"DELETE FROM {search_index.COUNTS_TABLE} WHERE {forget}"), values)
    finally:
        engine.dispose()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def run(
    url: str, key: str, total: int, picks: list[dict[str, str]], repeat: int, cpu: ServerCpu
) -> tuple[list[Row], list[str]]:
    client = httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=60)
    rare = picks[0]
    fields = ["username", "email", "firstname", "lastname", "displayname"]

    def get(params: dict[str, Any]) -> Any:
        response = client.get("/api/systemusers", params=params)
        response.raise_for_status()
        return response.json()

    def search(term: str):
        return lambda: get({"search": term, "limit": 100})

    def post(term: str):
        def call() -> Any:
            response = client.post(
                "/api/search/systemusers",
                params={"limit": 100},
                json={"searchFilter": {"searchTerm": term, "fields": fields}},
            )
            response.raise_for_status()
            return response.json()

        return call

    three = {  # (label, call): the goal's rows
        "search 'mar' (common, 3 chars)": search("mar"),
        "search 'garcia' (a last name)": search("garcia"),
        "search 'tanaka' (a last name late in the alphabet)": search("tanaka"),
        "search 'karen' (a first name of 5 letters)": search("karen"),
        "search 'zoë' (usernames say zoe)": search("zoë"),
        "search 'son' (inside many names)": search("son"),
        f"search '{rare['username'][-7:]}' (rare digits)": search(rare["username"][-7:]),
        "search whole username (1 match)": search(rare["username"]),
        "search 'qqxz' (no match)": search("qqxz"),
        "search 'example' (most emails)": search("example"),
    }
    other = {
        "search 'm' (1 char)": search("m"),
        "search 'ma' (2 chars)": search("ma"),
        "search 'Mary Garcia' (2 words)": search("Mary Garcia"),
        "search 'mary g' (word + 1 char)": search("mary g"),
        "search 'ó briain' (1 char + word)": search("ó briain"),
        "POST search 'garcia', 5 fields": post("garcia"),
        "exact email (filter email:$eq)": lambda: get({"filter": f"email:$eq:{rare['email']}", "limit": 1}),
    }
    deep = max(0, int(total * 0.9) // 100 * 100)
    paging: dict[str, Any] = {
        f"page at row {deep:,} by skip (offset)": lambda: get({"skip": deep, "limit": 100}),
    }
    notes: list[str] = []
    before_deep = get({"skip": max(0, deep - 100), "limit": 100})
    cursor = before_deep.get("endCursor")
    if cursor:
        paging[f"page at row {deep:,} by keyset (after)"] = lambda: get({"after": cursor, "limit": 100})
        paging[f"page at row {deep:,} by keyset, count=false"] = lambda: get(
            {"after": cursor, "limit": 100, "count": "false"}
        )
        paging["last page (before=end)"] = lambda: get({"before": "end", "limit": 100})
    else:
        notes.append("keyset rows skipped: the server returns no endCursor (keyset paging not there yet)")
    changer = picks[1] if len(picks) > 1 else rare
    display = get({"filter": f"_id:$eq:{changer['id']}", "limit": 1})["results"][0]["displayname"]

    def rename(step: int) -> None:
        response = client.put(
            f"/api/systemusers/{changer['id']}", json={"displayname": display if step % 2 else f"{display} (bench)"}
        )
        response.raise_for_status()

    cold = {f"first after a change: '{term}'": search(term) for term in ("mar", "garcia", "son", "example")}
    calls = {**three, **other, **paging, **cold}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    used: dict[str, list[float]] = {name: [] for name in calls}
    answers: dict[str, Any] = {}
    for name, call in calls.items():  # one untimed call each: connections, caches, the first query plan
        answers[name] = call()
    cpu.find_backends()
    changes = 0
    try:
        for _, (name, call) in zip(range(repeat * len(calls)), itertools.cycle(calls.items())):
            if name in cold:
                rename(changes)
                changes += 1
            wall, spent, _ = timed(call, cpu)
            samples[name].append(wall)
            used[name].append(spent)
    finally:
        if changes % 2:
            rename(changes)
    client.close()

    def found(name: str) -> str:
        page = answers[name]
        count = page.get("totalCount")
        return (
            f"{'?' if count is None else f'{count:,}'} found, {len(page.get('results', []))} on the page; "
            f"server CPU {_mean(used[name]):.1f} ms/op"
        )

    rows = [Row(name, samples[name], GOAL_MS, note=found(name)) for name in three]
    pooled = [value for name in three for value in samples[name]]
    rows.append(Row("all 3+ character queries, pooled", pooled, GOAL_MS))
    rows += [
        Row(name, samples[name], JUMP_GOAL_MS if name.startswith("exact") else None, note=found(name)) for name in other
    ]
    rows += [Row(name, samples[name], GOAL_MS, note=found(name)) for name in cold]
    for name in paging:
        first = (answers[name].get("results") or [{}])[0].get("username", "-")
        rows.append(Row(name, samples[name], None, note=f"first row {first}; server CPU {_mean(used[name]):.1f} ms/op"))
    if cursor:
        offset_first = (answers[f"page at row {deep:,} by skip (offset)"].get("results") or [{}])[0].get("id")
        keyset_first = (answers[f"page at row {deep:,} by keyset (after)"].get("results") or [{}])[0].get("id")
        notes.append(
            "keyset page starts on the offset page's first row: "
            + ("yes" if offset_first == keyset_first else f"NO ({offset_first} vs {keyset_first})")
        )
    notes.append(
        "the 3+ character rows follow changes too (the 'first after a change' rows set a display name, untimed, "
        "before each): their kept counts come forward through the change log"
    )
    notes.append(
        f"rare user picked from the database: {rare['username']} ({rare['email']}); "
        f"{repeat} samples per row, round-robin after one untimed call each"
    )
    return rows, notes


if __name__ == "__main__":
    main()
