"""Where a key's CPU goes inside the console: cProfile around scrolling Down, PgDn or End presses.

    .venv/bin/python bench/profile_keys.py --users 1000000 --key Down --presses 200 --out /tmp/keys.prof

Runs the console as console_keys.py does (real serve, 140x40 tmux), under a profiler that the
benchmark switches on (SIGUSR1) as each key is sent and off (SIGUSR2) once its frame is on screen (so not
start-up, nor the re-sort before each End), and dumps (SIGALRM) to ``--out`` after the presses. Prints the top functions by
cumulative and own time; open the file with ``python -m pstats`` or snakeviz for more.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

from _store import add_bench_arguments, seeded_db, served
from _terminal import Tmux, console_env
from console_keys import painted, position

WRAPPER = """
import cProfile, collections, os, signal, sys, time
from console.cli import main
from textual.widget import Widget
profile = cProfile.Profile(time.process_time)
# Own CPU of each widget class's render_lines (the compositor asks every widget in a dirty region).
per_widget = collections.defaultdict(lambda: [0, 0.0, 0])
counting = False
_render_lines = Widget.render_lines
def render_lines(self, crop):
    if not counting:
        return _render_lines(self, crop)
    started = time.process_time()
    try:
        return _render_lines(self, crop)
    finally:
        entry = per_widget[f"{type(self).__name__}#{self.id}"]
        entry[0] += 1
        entry[1] += time.process_time() - started
        entry[2] += crop.height
Widget.render_lines = render_lines
def timed(cls, name, label):
    original = getattr(cls, name)
    def wrapper(*args, **kwargs):
        if not counting:
            return original(*args, **kwargs)
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            entry = per_widget[label]
            entry[0] += 1
            entry[1] += time.process_time() - started
    setattr(cls, name, wrapper)
from textual.screen import Screen
from console.tui.widgets import virtual_table
timed(Screen, "_compositor_refresh", "= a frame: Screen._compositor_refresh")
timed(Screen, "_refresh_layout", "= a layout: Screen._refresh_layout")
timed(virtual_table.VirtualTable, "render_lines", "VirtualTable.render_lines")
timed(virtual_table._TableScrollBar, "render_lines", "_TableScrollBar.render_lines (hits too)")
def switch(on):
    global counting
    counting = on
    if os.environ.get("PROTECT_PROFILE_CALLS") == "0":
        return  # per-widget times only: without cProfile's overhead per call
    if on:
        profile.enable()
    else:
        profile.disable()
signal.signal(signal.SIGUSR1, lambda *_: switch(True))
signal.signal(signal.SIGUSR2, lambda *_: switch(False))
def dump(*_):
    profile.dump_stats(os.environ["PROTECT_PROFILE_OUT"])
    with open(os.environ["PROTECT_PROFILE_OUT"] + ".widgets", "w") as out:
        for name, (calls, seconds, lines) in sorted(per_widget.items(), key=lambda kv: -kv[1][1]):
            out.write(f"{name:50} {calls:6} calls {lines:7} lines {seconds * 1000:9.1f} ms\\n")
signal.signal(signal.SIGALRM, dump)
sys.argv[0] = "protect-console"
sys.exit(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser, repeat=200)
    parser.add_argument("--key", default="Down", choices=["Down", "NPage", "End"])
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "protect-keys.prof"))
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--widgets-only", action="store_true", help="time render_lines per widget, no cProfile")
    args = parser.parse_args()
    wrapper = Path(tempfile.mkstemp(prefix="protect-profile-", suffix=".py")[1])
    wrapper.write_text(WRAPPER)
    out = Path(args.out)
    out.unlink(missing_ok=True)
    with seeded_db(args.db, args.users, fresh=args.fresh) as db, served(db.value, workers=args.workers) as service:
        total = db.users
        with Tmux() as tmux:
            env = console_env(service.url, service.key) | {
                "PROTECT_PROFILE_OUT": str(out),
                "PROTECT_PROFILE_CALLS": "0" if args.widgets_only else "1",
            }
            pane = tmux.spawn([sys.executable, str(wrapper)], env)
            pane.go()
            pane.wait_for(lambda s: position(s) == (1, total) and painted(s), timeout=60)
            time.sleep(1.5)
            visible = sum("@" in line for line in pane.screen())
            pane.keys("Down", times=visible - 1)
            pane.wait_for(lambda s: (position(s) or (0, 0))[0] == visible, timeout=30)
            time.sleep(1.0)
            cpu = 0.0
            for _ in range(args.repeat):
                before = position(pane.screen())[0]  # type: ignore[index]
                if args.key == "End":
                    pane.keys("S")
                    pane.wait_for(lambda s: (position(s) or (0, 0))[0] == 1 and painted(s), timeout=30)
                    pane.wait_quiet(0.5)
                    want = lambda s: (position(s) or (0, 0))[0] == total and painted(s)  # noqa: E731
                else:
                    want = lambda s, was=before: (position(s) or (0, 0))[0] > was and painted(s)  # noqa: E731
                time.sleep(args.gap_ms / 1000)
                os.kill(pane.pid, signal.SIGUSR1)  # on: only the key to its frame is profiled
                cpu_before = pane.cpu_ms()
                sent = pane.keys(args.key)
                pane.wait_for(want, since=sent, timeout=30)
                cpu += pane.cpu_ms() - cpu_before
                os.kill(pane.pid, signal.SIGUSR2)  # off
            os.kill(pane.pid, signal.SIGALRM)  # dump
            deadline = time.monotonic() + 20
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            pane.keys("q")
            pane.wait_gone()
    wrapper.unlink()
    print(Path(str(out) + ".widgets").read_text())
    print(f"{args.repeat} x {args.key}: console CPU {cpu / args.repeat:.2f} ms per key (profiled: inflated)")
    if args.widgets_only:
        return
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
