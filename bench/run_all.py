"""Every row of issue 8's table, one script each, then one summary table.

    .venv/bin/python bench/run_all.py [--users 1000000] [--db PATH|URL|temp-postgresql] [--quick] [--only NAME ...]

The seeded database is made (or reused: bench/_store.py) once here and handed to every script as
``--db``, so nothing seeds the directory twice. Each script runs as its own process and its output is
shown as it comes; the summary repeats every row with p50/p95, the goal and the verdict. A script
that is not there yet, or fails, is listed as such. The hot-path scripts (TOTP, push) write to the
database (TOTP steps, push attempts), so they run after the console and search rows. ``bench/seed.py``
seeds its own databases (it times seeding itself). ``--quick`` takes fewer samples (for trying it out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _store import TEMP_PG, seeded_db

HERE = Path(__file__).resolve().parent
GOAL_PUSH_RATE = 1000  # push_admission.GOAL_RATE: its p99 goal is read at this offered rate


def scripts(users: int, db: str, quick: bool) -> list[tuple[str, str, list[str]]]:
    """(row of the issue's table, script, arguments)."""
    few = quick
    return [
        (
            "console start to the directory total",
            "console_start.py",
            ["--users", str(users), "--db", db, "--repeat", "3" if few else "10"],
        ),
        (
            "Down / PgDn / End, key to repaint",
            "console_keys.py",
            ["--users", str(users), "--db", db, "--repeat", "10" if few else "30"],
        ),
        (
            "search: last key to the one match painted",
            "console_search.py",
            ["--users", str(users), "--db", db, "--repeat", "3" if few else "10"],
        ),
        (
            "API search, first page + totalCount",
            "api_search.py",
            ["--users", str(users), "--db", db, "--repeat", "5" if few else "20"],
        ),
        (
            "console RSS after scrolling 100k rows",
            "console_rss.py",
            ["--users", str(users), "--db", db, "--rows", str(min(users, 20_000 if few else 100_000))],
        ),
        (
            "VirtualTable widget work per key (no service)",
            "virtual_table.py",
            ["--rows", str(users), "--moves", "50" if few else "200"],
        ),
        (
            "TOTP verification over loopback",
            "totp_verify.py",
            ["--users", str(users), "--db", db, "--workers", "2", "--clients", "8", "--seconds", "3" if few else "10"],
        ),
        (
            "push admission, as fast as answered (the most per second)",
            "push_admission.py",
            ["--users", str(users), "--db", db, "--workers", "2", "--clients", "64", "--seconds", "3" if few else "10"],
        ),
        (
            "push admission paced at 1,000/s (the goal's p99)",
            "push_admission.py",
            [
                *("--users", str(users), "--db", db, "--workers", "2", "--clients", "64"),
                *("--seconds", "3" if few else "10", "--rate", str(GOAL_PUSH_RATE)),
            ],
        ),
        ("seed --users N", "seed.py", ["--users", str(min(users, 100_000) if few else users)]),
    ]


def accepted(script: Path, args: list[str]) -> list[str]:
    """Only the options the script knows (other helpers' scripts take their own sets)."""
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    kept: list[str] = []
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            if args[i] in helptext:
                kept.extend(args[i : i + 1 + has_value])
            i += 1 + has_value
        else:
            kept.append(args[i])
            i += 1
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument(
        "--db",
        metavar="PATH|URL",
        default=None,
        help=f"SQLite file, postgresql:// URL, or {TEMP_PG} (default: the cached SQLite)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run (e.g. api_search console_rss)")
    parser.add_argument("--fresh", action="store_true", help="seed the cached database again")
    args = parser.parse_args()
    summary: list[str] = []
    with seeded_db(args.db, args.users, fresh=args.fresh) as db:
        print(f"[run_all] database: {db.label}, {db.users:,} users ({db.note})", flush=True)
        for row, name, script_args in scripts(db.users, db.value, args.quick):
            if args.only and name.removesuffix(".py") not in args.only and name not in args.only:
                continue
            script = HERE / name
            if not script.exists():
                summary.append(f"{row}: bench/{name} is not there yet (skipped)")
                continue
            command = [sys.executable, str(script), *accepted(script, script_args)]
            shown = " ".join(a if "://" not in a else "<db url>" for a in command[1:])
            print(f"\n[run_all] {row}: {shown}", flush=True)
            started = time.perf_counter()
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, text=True, cwd=HERE.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
            tables: list[dict] = []
            lines: list[str] = []
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("BENCH-JSON "):
                    tables.append(json.loads(line[len("BENCH-JSON ") :]))
                    continue
                print(line, end="", flush=True)
                lines.append(line.rstrip("\n"))
            code = process.wait()
            took = time.perf_counter() - started
            if code:
                summary.append(f"{row}: bench/{name} FAILED (exit {code}) after {took:.0f} s; its output is above")
                continue
            if not tables:  # a script with its own table format: repeat it (from its title line on)
                summary.append(f"{row} (bench/{name}, {took:.0f} s):")
                shown = [x for x in lines if x.strip()]
                start = max(
                    (i for i, x in enumerate(shown) if x.lstrip().startswith(("what", "operation"))),
                    default=max(0, len(shown) - 16),
                )
                summary.extend(f"    {line}" for line in shown[max(0, start - 1) :][:24])
                continue
            for table in tables:
                summary.append(f"{row} (bench/{name}, {took:.0f} s):")
                for r in table.get("rows", []):
                    if "what" not in r or "p50" not in r:  # another shape (e.g. seed.py's): as it is
                        summary.append("    " + ", ".join(f"{k} {v}" for k, v in r.items()))
                    elif not r.get("n"):
                        summary.append(f"    {r['what']:<46} skipped  {r.get('note', '')}".rstrip())
                    else:
                        goal = "-" if r.get("goal") is None else f"<= {r['goal']:g}"
                        summary.append(
                            f"    {r['what']:<46} p50 {r['p50']:>9.1f}  p95 {r['p95']:>9.1f}  "
                            f"goal {goal:>8}  {r.get('verdict', '-'):<5} {r.get('unit', '')}"
                            f"{'  ' + r['note'] if r.get('note') else ''}"
                        )
    print(f"\n===== summary: {db.users:,} users, {db.label} =====")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
