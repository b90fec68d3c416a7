"""Time VirtualTable cursor moves, page moves and jumps over a million-row source.

    .venv/bin/python bench/virtual_table.py [--rows 1000000] [--moves 200]

Runs the real widget in a headless Textual app (no service: an in-process page source
that answers at once), and prints p50/p95 per operation next to the goal: a cursor move
within one 16 ms frame, a page move or a jump to a far row within a couple of frames
(the page fetch itself excluded). Timing lives here, not in the unit tests, which only
assert what is fetched (a timing threshold in a unit test fails on a loaded machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from textual.app import App, ComposeResult

from console.tui.widgets.virtual_table import Column, VirtualTable

GOALS_MS = {"cursor down": 16.0, "page down": 33.0, "jump (end/home)": 33.0}


class Source:
    def __init__(self, total: int) -> None:
        self.total = total
        self.calls = 0

    async def __call__(self, skip: int, limit: int) -> tuple[int, list[dict]]:
        self.calls += 1
        return self.total, [{"id": i, "name": f"user{i}"} for i in range(skip, min(skip + limit, self.total))]


class BenchApp(App):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        yield VirtualTable(
            [Column("n", "#", 8, lambda r: str(r["id"])), Column("name", "Name", 20, lambda r: r["name"])],
            self.source,
        )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(rows: int, moves: int) -> dict[str, list[float]]:
    source = Source(rows)
    app = BenchApp(source)
    results: dict[str, list[float]] = {name: [] for name in GOALS_MS}
    async with app.run_test(size=(100, 40)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        while table.row_at(0) is None:
            await pilot.pause(0.01)

        async def timed(name: str, action, loaded) -> None:
            # The widget's own work for one key: the action, then drawing every line on screen (an upper
            # bound: a cursor move inside the viewport repaints two lines). Then the page fetch, untimed.
            started = time.perf_counter()
            action()
            for y in range(table.size.height):
                table.render_line(y)
            results[name].append((time.perf_counter() - started) * 1000)
            await pilot.pause()
            while not loaded():
                await pilot.pause(0)
            started = time.perf_counter()
            for y in range(table.size.height):
                table.render_line(y)
            if name != "cursor down":
                results[name][-1] += (time.perf_counter() - started) * 1000  # the frame once the rows landed

        for _ in range(moves):
            await timed("cursor down", table.action_cursor_down, lambda: True)
        for _ in range(max(1, moves // 4)):
            await timed("page down", table.action_page_down, lambda: table.row_at(table.cursor_row) is not None)
        for index in range(max(1, moves // 10)):
            action = table.action_last if index % 2 == 0 else table.action_first
            await timed("jump (end/home)", action, lambda: table.row_at(table.cursor_row) is not None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--moves", type=int, default=200)
    args = parser.parse_args()
    results = asyncio.run(run(args.rows, args.moves))
    print(f"VirtualTable over {args.rows:,} rows: ms of widget work per key (action + drawing the viewport)")
    print(f"{'operation':<18} {'n':>5} {'p50':>8} {'p95':>8} {'goal':>8}  verdict")
    for name, samples in results.items():
        p50, p95 = statistics.median(samples), percentile(samples, 0.95)
        goal = GOALS_MS[name]
        verdict = "ok" if p95 <= goal else "SLOW"
        print(f"{name:<18} {len(samples):>5} {p50:>8.2f} {p95:>8.2f} {goal:>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
