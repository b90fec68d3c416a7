"""API search and paging over loopback: first page + totalCount (goal <= 50 ms p95 for 3+ characters).

    .venv/bin/python bench/api_search.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--repeat 20]

The real `protect-console serve` runs in its own process on 127.0.0.1; this process is the client
(httpx, one keep-alive connection, as the console holds one). A sample is one request until its
JSON is parsed: ``GET /api/systemusers?search=...&limit=100`` (what the console's search sends), the
first page and the exact ``totalCount``. Queries go round-robin (one untimed call of each first),
so the machine's noise spreads over all of them. Rows:

* 3+ character queries (the goal): common and rare substrings, a whole username that exists, a
  string that matches nobody, the whole directory's email domain; their pooled p95 is judged too;
* 1-2 characters and several words (`mary g`): reported, the issue sets no figure for them;
* POST /api/search/systemusers over all five name fields;
* the page at 90 % depth: by ``skip`` (offset) and by keyset (``after=<endCursor of the page before>``,
  with and without ``count=false``), and ``before=end``; skipped, saying so, while the server returns
  no ``endCursor``;
* an exact email (``filter=email:$eq:...``), the index lookup behind jump-by-key (goal <= 100 ms);
* the first search after a change: the service keeps the exact counts of unfiltered searches until a
  user is added, removed or renamed (by the names' version, migration 0010), so the rows above are
  repeats after their first call. Here a user's display name is set (untimed, and put back at the
  end) before each sample, so each is counted in full: what a search costs the first time.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import httpx
from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served, some_users

GOAL_MS = 50.0
JUMP_GOAL_MS = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=20)
    args = parser.parse_args()
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        picks = some_users(db.value, 3)
        with served(db.value, workers=args.workers) as service:
            rows, notes = run(service.url, service.key, db.users, picks, args.repeat)
    notes.append(machine_note())
    print_table(
        f"API search and paging, {db.users:,} users, {db.label} ({db.note}), serve --workers {args.workers}",
        rows,
        notes,
    )


def run(url: str, key: str, total: int, picks: list[dict[str, str]], repeat: int) -> tuple[list[Row], list[str]]:
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
    answers: dict[str, Any] = {}
    for name, call in calls.items():  # one untimed call each: connections, caches, the first query plan
        answers[name] = call()
    changes = 0
    try:
        for _, (name, call) in zip(range(repeat * len(calls)), itertools.cycle(calls.items())):
            if name in cold:
                rename(changes)
                changes += 1
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
    finally:
        if changes % 2:
            rename(changes)
    client.close()

    def found(name: str) -> str:
        page = answers[name]
        count = page.get("totalCount")
        return f"{'?' if count is None else f'{count:,}'} found, {len(page.get('results', []))} on the page"

    rows = [Row(name, samples[name], GOAL_MS, note=found(name)) for name in three]
    pooled = [value for name in three for value in samples[name]]
    rows.append(Row("all 3+ character queries, pooled", pooled, GOAL_MS))
    rows += [
        Row(name, samples[name], JUMP_GOAL_MS if name.startswith("exact") else None, note=found(name)) for name in other
    ]
    rows += [Row(name, samples[name], GOAL_MS, note=found(name)) for name in cold]
    for name in paging:
        first = (answers[name].get("results") or [{}])[0].get("username", "-")
        rows.append(Row(name, samples[name], None, note=f"first row {first}"))
    if cursor:
        offset_first = (answers[f"page at row {deep:,} by skip (offset)"].get("results") or [{}])[0].get("id")
        keyset_first = (answers[f"page at row {deep:,} by keyset (after)"].get("results") or [{}])[0].get("id")
        notes.append(
            "keyset page starts on the offset page's first row: "
            + ("yes" if offset_first == keyset_first else f"NO ({offset_first} vs {keyset_first})")
        )
    notes.append(
        "the 3+ character rows are repeats (exact counts kept until a name changes); the 'first after a "
        "change' rows count in full (a display name set, untimed, before each)"
    )
    notes.append(
        f"rare user picked from the database: {rare['username']} ({rare['email']}); "
        f"{repeat} samples per row, round-robin after one untimed call each"
    )
    return rows, notes


if __name__ == "__main__":
    main()
