"""Search: last key of a username typed into the Users search to the one matching row painted (goal <= 250 ms).

    .venv/bin/python bench/console_search.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--repeat 10]

The real `protect-console` in a 140x40 tmux window against the real `protect-console serve` (its own
process) over loopback, as in console_start.py. Each sample searches a different user that exists
(a username ending in five digits, like the issue's `wei.lewis99193`, picked from the database, kept
when the API finds exactly that one user): `/`, the username but its last key at once, then, after
``--type-ms`` (40, less than the console's debounce, as a quick typist), its last key. A name whose
prefix's own answer is already on screen before the last key (the console queried the prefix, which
finds the same single user) is left out and counted: it would time nothing. The clock starts when
the last key is handed to tmux and stops at the frame that shows `users 1/1 match` with that user's
row in the table (bench/_terminal.py times frames by tmux's %output). Then Esc Esc, and the
directory is back before the next name. The console's own debounce (it waits for typing to pause
before asking the server) is part of what the user waits for, so it is part of the figure.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served, some_users
from _terminal import Tmux, console_argv, console_env, cpu_ms

GOAL_MS = 250.0
LABEL = re.compile(r"\busers ([\d,]+)/([\d,]+)( match)?")


def label(screen: list[str]) -> tuple[str, int | None]:
    for line in screen[:4]:
        match = LABEL.search(line)
        if match:
            return match[0], (int(match[2].replace(",", "")))
    return "", None


def one_match(url: str, key: str, candidates: list[str], count: int) -> list[str]:
    """The candidates whose search finds exactly one user (`ana.lee12345` also finds `diana.lee12345`)."""
    import httpx

    names: list[str] = []
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=60) as client:
        for name in candidates:
            page = client.get("/api/systemusers", params={"search": name, "limit": 2}).json()
            if page.get("totalCount") == 1:
                names.append(name)
                if len(names) == count:
                    break
    if len(names) < 2:
        raise SystemExit("not enough usernames that match exactly one user")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=10)
    parser.add_argument(
        "--type-ms", type=float, default=40.0, help="time between the rest of the name and its last key (default 40)"
    )
    parser.add_argument("--poll-ms", type=float, default=5.0, help="longest wait between captures (default 5)")
    args = parser.parse_args()
    poll = args.poll_ms / 1000
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        candidates = [u["username"] for u in some_users(db.value, 5 * args.repeat + 10)]
        with served(db.value, workers=args.workers) as service:
            names = one_match(service.url, service.key, candidates, args.repeat + 1)
            total = db.users
            home = f"users 1/{total:,}"
            samples: list[float] = []
            early = 0
            cpu = [0.0, 0.0]  # console, serve: from `/` to the answer painted
            with Tmux() as tmux:
                pane = tmux.spawn(console_argv(), console_env(service.url, service.key))
                pane.go()
                pane.wait_for(
                    lambda s: label(s)[0] == home and not any("loading…" in x for x in s), timeout=60, poll=poll
                )
                time.sleep(0.5)  # start-up work (device columns) settles
                for run, name in enumerate(names):  # the first name warms up: not counted
                    cpu_before = pane.cpu_ms(), cpu_ms(service.pid)
                    pane.keys("/")
                    pane.keys(name[:-1], literal=True)  # all but the last key at once: no query for a prefix
                    time.sleep(args.type_ms / 1000)
                    if label(pane.screen())[0] == "users 1/1 match":
                        early += 1  # the prefix's own answer is on screen already: this name proves nothing
                        last = None
                    else:
                        last = pane.keys(name[-1], literal=True)

                    def found(screen: list[str], name: str = name) -> bool:
                        text, _ = label(screen)
                        return text == "users 1/1 match" and any(name in line for line in screen[3:])

                    frame = pane.wait_for(found, since=last, timeout=60, poll=poll)
                    if run and last is not None:
                        samples.append((frame.at - last) * 1000)
                        cpu[0] += pane.cpu_ms() - cpu_before[0]
                        cpu[1] += cpu_ms(service.pid) - cpu_before[1]
                    pane.keys("Escape")
                    pane.keys("Escape")
                    pane.wait_for(
                        lambda s: label(s)[0] == home and not any("loading…" in x for x in s), timeout=60, poll=poll
                    )
                    time.sleep(0.3)
                pane.keys("q")
                pane.wait_gone()
                capture = statistics.median(tmux.stats.capture_ms)
    typing = f"all but the last key at once, the last key {args.type_ms:g} ms later"
    print_table(
        f"Console search, {total:,} users, 140x40 tmux, {db.label} ({db.note}), serve --workers {args.workers}",
        [
            Row(
                "last key -> the one match painted",
                samples,
                GOAL_MS,
                note=f"CPU per search (whole name): console {cpu[0] / max(1, len(samples)):.0f} ms, "
                f"serve {cpu[1] / max(1, len(samples)):.0f} ms",
            )
        ],
        [
            (
                f"names typed {typing}, e.g. {names[1] if len(names) > 1 else names[0]}; one warm-up name not counted; "
                f"{early} names left out because their prefix's answer was on screen before the last key"
            ),
            (
                f"frames timed by tmux %output (captures every <= {args.poll_ms:g} ms and after each output; capture "
                f"round trip p50 {capture:.2f} ms)"
            ),
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
