"""Down / PgDn / End, key to repaint (goal <= 16 ms, one frame), in a real terminal.

    .venv/bin/python bench/console_keys.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--repeat 30]

The real `protect-console` runs in a 140x40 tmux window against the real `protect-console serve`
(its own process) over loopback, as in console_start.py. Once the Users screen shows its rows:

* Down, ``--repeat`` times, half of them inside the viewport and half scrolling it: key sent -> the
  frame whose position label reads the next row;
* PgDn, ``--repeat`` times from the top: key sent -> the frame with the label past the previous row and
  no `loading…` row on screen (when the move crosses into a page not fetched yet, the fetch counts:
  the user waits for it);
* End, ``--repeat`` times: key sent -> the frame at the last row with its rows painted. Before each End
  the sort is reversed (`S`, untimed), so every End is a fresh query, never a page the console holds;
  then the bench waits until the console is quiet (``--settle-ms`` with no output and no CPU: the new
  order's pages fetched ahead, the device details of the rows shown), so End is timed alone, not with
  the work `S` started. ``--settle-ms 0`` times End 50 ms after `S` painted, as before.

"Key sent" is when the benchmark handed the key to tmux (it writes it to the console's pty); the
frame time is tmux's %output for the frame (bench/_terminal.py), so the figure is what a person at
the terminal sees, minus their terminal's own drawing. ``--gap-ms`` of idle separate the presses.
Beside each row: the CPU time the console and the service processes spent per key (from
/proc/<pid>/stat, 10 ms ticks summed over the presses), which a busy machine does not inflate, and
the console's CPU in the idle gap before each key (what it does while keys rest, e.g. drawing ahead).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from _store import Row, add_bench_arguments, machine_note, print_table, seeded_db, served
from _terminal import Tmux, console_argv, console_env, cpu_ms

GOAL_MS = 16.0
LABEL = re.compile(r"\busers ([\d,]+)/([\d,]+)\b")


def position(screen: list[str]) -> tuple[int, int] | None:
    for line in screen[:4]:
        match = LABEL.search(line)
        if match:
            return int(match[1].replace(",", "")), int(match[2].replace(",", ""))
    return None


def painted(screen: list[str]) -> bool:
    return not any("loading…" in line for line in screen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=30)
    parser.add_argument("--gap-ms", type=float, default=50.0, help="idle time between presses (default 50)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="longest wait between captures (default 5)")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=500.0,
        help="quiet time (no output, no CPU) awaited after `S`, before End (default 500; 0: none)",
    )
    args = parser.parse_args()
    poll = args.poll_ms / 1000
    with seeded_db(args.db, args.users, fresh=args.fresh) as db, served(db.value, workers=args.workers) as service:
        total = db.users
        results: dict[str, list[float]] = {"Down, cursor moves": [], "Down, view scrolls": [], "PgDn": [], "End": []}
        with Tmux() as tmux:
            pane = tmux.spawn(console_argv(), console_env(service.url, service.key))
            pane.go()
            pane.wait_for(lambda s: position(s) == (1, total) and painted(s), timeout=60, poll=poll)
            time.sleep(0.5)  # let the start-up work (device columns) settle

            # console, serve (key sent -> frame), console during the gap before the key (idle work)
            cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in results}

            def press(key: str, done) -> None:
                idle = pane.cpu_ms()
                time.sleep(args.gap_ms / 1000)
                console, server = pane.cpu_ms(), cpu_ms(service.pid)
                cpu[label][2] += console - idle
                sent = pane.keys(key)
                frame = pane.wait_for(done, since=sent, timeout=30, poll=poll)
                results[label].append((frame.at - sent) * 1000)
                cpu[label][0] += pane.cpu_ms() - console
                cpu[label][1] += cpu_ms(service.pid) - server

            # Half the Down presses move inside the viewport, half scroll it (a repaint of every row).
            visible = sum("@" in line for line in pane.screen())
            start = max(1, visible - args.repeat // 2)
            if start > 1:
                pane.keys("Down", times=start - 1)
                pane.wait_for(lambda s: (position(s) or (0, 0))[0] == start, timeout=30, poll=poll)
            for index in range(start, start + args.repeat):
                label = "Down, cursor moves" if index < visible else "Down, view scrolls"
                press("Down", lambda s, want=index + 1: (position(s) or (0, 0))[0] == want)
            pane.keys("Home")
            pane.wait_for(lambda s: (position(s) or (0, 0))[0] == 1 and painted(s), timeout=30, poll=poll)

            label = "PgDn"
            for _ in range(args.repeat):
                before = position(pane.screen())[0]  # type: ignore[index]
                press("NPage", lambda s, was=before: (position(s) or (0, 0))[0] > was and painted(s))

            label = "End"
            for _ in range(args.repeat):
                pane.keys("S")  # reverse the sort: a fresh query, the cursor back on row 1
                pane.wait_for(lambda s: (position(s) or (0, 0))[0] == 1 and painted(s), timeout=30, poll=poll)
                if args.settle_ms > 0:
                    pane.wait_quiet(args.settle_ms / 1000)
                press("End", lambda s: (position(s) or (0, 0))[0] == total and painted(s))
            pane.keys("q")
            pane.wait_gone()
            capture = statistics.median(tmux.stats.capture_ms)
            bounded = tmux.stats.bounded
    print_table(
        f"Console keys, {total:,} users, 140x40 tmux, {db.label} ({db.note}), serve --workers {args.workers}",
        [
            Row(
                f"{name}: key -> repaint",
                samples,
                GOAL_MS,
                note=f"CPU per key: console {cpu[name][0] / max(1, len(samples)):.1f} ms, "
                f"serve {cpu[name][1] / max(1, len(samples)):.1f} ms; "
                f"console in the gap before it {cpu[name][2] / max(1, len(samples)):.1f} ms",
            )
            for name, samples in results.items()
        ],
        [
            (
                f"frames timed by tmux %output (captures every <= {args.poll_ms:g} ms and after each output; capture "
                f"round trip p50 {capture:.2f} ms; {bounded} frames timed by a capture's return, an upper "
                f"bound); {args.gap_ms:g} ms idle between presses; End after {args.settle_ms:g} ms of quiet after `S`"
            ),
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
