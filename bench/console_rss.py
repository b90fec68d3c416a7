"""Console memory after scrolling 100,000 rows (goal: RSS <= 150 MB), in a real terminal.

    .venv/bin/python bench/console_rss.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--rows 100000]

The real `protect-console` in a 140x40 tmux window against the real `protect-console serve` (its own
process) over loopback, as in console_start.py. PgDn is "held": sent at ``--rate`` keys a second (a
terminal's key repeat is 25-40/s) without waiting for frames, until the position label passes
``--rows`` (capped at the directory's size). Then the benchmark waits for the rows to be painted and
one more second, and reads the console process's VmRSS and VmHWM (peak) from /proc/<pid>/status (the
pane's shell execs the console, so the pane's pid is the console's). RSS is also sampled while
scrolling. ``--repeat`` runs are separate console processes; the goal applies to the largest RSS.
"""

from __future__ import annotations

import argparse
import re
import time

from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served
from _terminal import Tmux, console_argv, console_env

GOAL_MB = 150.0
LABEL = re.compile(r"\busers ([\d,]+)/([\d,]+)\b")


def row_of(screen: list[str]) -> int:
    for line in screen[:4]:
        match = LABEL.search(line)
        if match:
            return int(match[1].replace(",", ""))
    return 0


def painted(screen: list[str]) -> bool:
    return not any("loading…" in line for line in screen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=1)
    parser.add_argument("--rows", type=int, default=100_000, help="scroll past this row (default 100,000)")
    parser.add_argument("--rate", type=float, default=40.0, help="PgDn keys a second (default 40)")
    args = parser.parse_args()
    with seeded_db(args.db, args.users, fresh=args.fresh) as db, served(db.value, workers=args.workers) as service:
        total = db.users
        target = min(args.rows, total)
        at_start: list[float] = []
        after: list[float] = []
        peak: list[float] = []
        during: list[float] = []
        seconds: list[float] = []
        with Tmux() as tmux:
            for _ in range(args.repeat):
                pane = tmux.spawn(console_argv(), console_env(service.url, service.key))
                pane.go()
                pane.wait_for(lambda s: row_of(s) == 1 and painted(s), timeout=60)
                time.sleep(1.0)
                at_start.append(pane.rss_mb()[0])
                started = time.perf_counter()
                next_key = started
                most = 0.0
                while True:
                    now = time.perf_counter()
                    if now < next_key:
                        time.sleep(next_key - now)
                    pane.keys("NPage")
                    next_key += 1 / args.rate
                    if int((next_key - started) * args.rate) % 20 == 0:
                        most = max(most, pane.rss_mb()[0])
                        if row_of(pane.screen()) >= target:
                            break
                    if time.perf_counter() - started > 900:
                        raise TimeoutError(f"not past row {target:,} after 15 minutes of PgDn")
                seconds.append(time.perf_counter() - started)
                pane.wait_for(lambda s: painted(s), timeout=60)
                time.sleep(1.0)
                rss, hwm = pane.rss_mb()
                after.append(rss)
                peak.append(hwm)
                during.append(max(most, rss))
                reached = row_of(pane.screen())
                pane.keys("q")
                pane.wait_gone()
    print_table(
        f"Console memory, {total:,} users, 140x40 tmux, {db.label} ({db.note}), serve --workers {args.workers}",
        [
            Row("RSS at start (rows painted)", at_start, None, unit="MB"),
            Row(f"RSS after PgDn past row {target:,}", after, GOAL_MB, unit="MB", judge="max"),
            Row("largest RSS sampled while scrolling", during, GOAL_MB, unit="MB", judge="max"),
            Row("VmHWM (peak RSS of the process)", peak, None, unit="MB"),
            Row(
                "time to scroll there",
                [s * 1000 for s in seconds],
                None,
                unit="ms",
                note=f"reached row {reached:,}, PgDn at {args.rate:g}/s",
            ),
        ],
        ["RSS from /proc/<pid>/status of the console process", machine_note()],
    )


if __name__ == "__main__":
    main()
