"""Console start to the directory total on screen (goal <= 0.5 s), in a real terminal.

    .venv/bin/python bench/console_start.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--repeat 10]

The real `protect-console` (the installed command, connection from PROTECT_CONSOLE_URL and
PROTECT_CONSOLE_API_KEY, an empty config folder) is started in a 140x40 tmux window against the
real `protect-console serve` (its own process) over loopback. The clock starts when Enter is sent
to the shell prompt that execs the console, and stops at the frame in which the Users screen shows
the total (`users 1/1,000,000`); a second figure stops when the first rows are painted too (no
`loading…` left). How frames are timed: bench/_terminal.py (tmux's %output notifications, screen
captured after each). Each run is a new process (Python start and imports included), quit with `q`.
"""

from __future__ import annotations

import argparse
import re
import statistics

from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served
from _terminal import Tmux, console_argv, console_env, cpu_ms

GOAL_MS = 500.0


def label_re(total: int) -> re.Pattern[str]:
    return re.compile(rf"\busers 1/{total:,}\b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=10)
    parser.add_argument("--poll-ms", type=float, default=5.0, help="longest wait between captures (default 5)")
    args = parser.parse_args()
    with seeded_db(args.db, args.users, fresh=args.fresh) as db, served(db.value, workers=args.workers) as service:
        total = db.users
        total_re = label_re(total)
        env = console_env(service.url, service.key)
        to_total: list[float] = []
        to_rows: list[float] = []
        to_first: list[float] = []
        console_cpu: list[float] = []
        serve_cpu: list[float] = []
        with Tmux() as tmux:
            for run in range(args.repeat + 1):  # run 0 warms the OS file cache and the service: not counted
                pane = tmux.spawn(console_argv(), env)
                started = pane.go()
                served_cpu = cpu_ms(service.pid)
                shown = pane.wait_for(
                    lambda s: any(total_re.search(line) for line in s),
                    since=started,
                    timeout=60,
                    poll=args.poll_ms / 1000,
                )
                rows = pane.wait_for(
                    lambda s: (
                        any(total_re.search(line) for line in s)
                        and not any("loading…" in line for line in s)
                        and sum("@" in line for line in s) >= 5
                    ),
                    since=started,
                    timeout=60,
                    poll=args.poll_ms / 1000,
                )
                console_cpu.append(pane.cpu_ms())  # the process's whole life so far: start-up included
                serve_cpu.append(cpu_ms(service.pid) - served_cpu)
                if run:
                    first = pane.first_output()
                    if first is not None:
                        to_first.append((first - started) * 1000)
                    to_total.append((shown.at - started) * 1000)
                    to_rows.append((rows.at - started) * 1000)
                pane.keys("q")
                pane.wait_gone()
            capture = statistics.median(tmux.stats.capture_ms)
    print_table(
        f"Console start, {total:,} users, 140x40 tmux, {db.label} ({db.note}), serve --workers {args.workers}",
        [
            Row("start -> alternate screen (Python, imports, app)", to_first, None),
            Row("start -> total on screen", to_total, GOAL_MS),
            Row("start -> first rows painted", to_rows, None),
            Row(
                "console CPU until its rows were painted",
                console_cpu[1:],
                None,
                note=f"serve CPU meanwhile p50 {sorted(serve_cpu)[len(serve_cpu) // 2]:.0f} ms",
            ),
        ],
        [
            (
                f"frames timed by tmux %output (captures every <= {args.poll_ms:g} ms and after each output; "
                f"capture round trip p50 {capture:.2f} ms); one warm-up run not counted"
            ),
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
