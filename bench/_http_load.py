"""A lean HTTP/1.1 load generator for the hot-path benchmarks, and a ``serve --workers N`` to aim it at.

Each client process keeps ``connections`` keep-alive sockets busy (one request in flight per socket)
with a small selector loop and pre-formatted requests: a client that costs a few microseconds per
request, so that on a 2-core machine most of the CPU is left to the service under test. Latency is
measured per request, from the send to the last byte of the answer.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)  # requests answered inside the measured window
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: dict[str, int] = field(default_factory=dict)  # answer classes, as the bench's classify() names them
    errors: int = 0
    answered: int = 0  # every answer, warm-up included (to divide the service's CPU time by)
    service_cpu: float = 0.0  # seconds, set by measure()
    database_cpu: float | None = None  # PostgreSQL: seconds used by the service's backends (None: SQLite)
    machine_busy: float = 0.0  # seconds of CPU used by every process on the machine meanwhile
    elapsed: float = 0.0


# A request source: given the connection's index, the next (body bytes) to POST, or None when done.
Source = Callable[[int], "bytes | None"]
Classify = Callable[[int, bytes], str]


def _request(host: str, path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _client(
    index: int,
    host: str,
    port: int,
    path: str,
    key: str,
    connections: int,
    make_source: Callable[[int], Source],
    classify: Classify,
    start_at: float,
    warmup: float,
    seconds: float,
    interval: float | None,
    out: multiprocessing.Queue[ClientResult],
) -> None:
    """One client process. ``interval``: None sends the next request as soon as the answer is in (closed
    loop); else each connection sends one request every ``interval`` seconds (paced), and latency counts
    from the planned moment, so a service that falls behind is charged for the wait too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = make_source(index)
    result = ClientResult()
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    for _ in range(connections):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    for i, s in enumerate(socks):
        selector.register(s, selectors.EVENT_READ, i)
    sent_at = [0.0] * connections
    buffers = [b""] * connections
    now = time.time()
    if start_at > now:
        time.sleep(start_at - now)
    perf_start = time.perf_counter()
    perf_offset = time.time() - perf_start  # perf_counter -> wall clock, to compare with the window
    measure_from, stop_at = start_at + warmup - perf_offset, start_at + warmup + seconds - perf_offset
    # Paced: connection i's first request at a phase of its own, so the connections do not send in step.
    phase = random.Random(index)
    due: list[float | None] = [
        perf_start + (interval * phase.random() if interval else 0.0) for _ in range(connections)
    ]
    busy = [False] * connections
    live = connections

    def send(i: int, planned: float) -> bool:
        body = source(i)
        if body is None:
            return False
        sent_at[i] = planned
        socks[i].sendall(_request(host, path, key, body))
        busy[i] = True
        return True

    def start_due() -> None:
        nonlocal live
        clock = time.perf_counter()
        for i in range(connections):
            planned = due[i]
            if (
                planned is not None
                and not busy[i]
                and planned <= clock
                and (clock >= stop_at or not send(i, planned if interval else clock))
            ):
                due[i] = None
                live -= 1

    start_due()
    while live or any(busy):
        waiting = [d for i, d in enumerate(due) if d is not None and not busy[i]]
        timeout = max(0.0, min(waiting) - time.perf_counter()) if waiting else 5.0
        for selected, _ in selector.select(timeout=timeout):
            i = selected.data
            chunk = socks[i].recv(65536)
            if not chunk:
                result.errors += 1
                selector.unregister(socks[i])
                busy[i] = False
                if due[i] is not None:
                    due[i] = None
                    live -= 1
                continue
            buffers[i] += chunk
            data = buffers[i]
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = data[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if len(data) < head_end + 4 + length:
                continue
            done = time.perf_counter()
            body = data[head_end + 4 : head_end + 4 + length]
            buffers[i] = data[head_end + 4 + length :]
            busy[i] = False
            result.answered += 1
            status = int(head[9:12])
            if measure_from <= done <= stop_at:
                result.latencies_ms.append((done - sent_at[i]) * 1000)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                kind = classify(status, body)
                result.bodies[kind] = result.bodies.get(kind, 0) + 1
            if due[i] is not None:
                due[i] = (due[i] + interval) if interval else done
        start_due()
    for s in socks:
        s.close()
    out.put(result)


def run_clients(
    host: str,
    port: int,
    path: str,
    key: str,
    *,
    processes: int,
    connections: int,
    make_source: Callable[[int], Source],
    classify: Classify,
    warmup: float,
    seconds: float,
    rate: float | None = None,
) -> ClientResult:
    """Run ``processes`` client processes of ``connections`` sockets each; the merged result of the window.

    ``rate``: None keeps every connection busy (the most the service answers); else all connections
    together send ``rate`` requests per second at a steady pace (latency at that load)."""
    interval = processes * connections / rate if rate else None
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5 + 0.02 * processes  # every client connected before the clock starts
    procs = [
        ctx.Process(
            target=_client,
            args=(
                i,
                host,
                port,
                path,
                key,
                connections,
                make_source,
                classify,
                start_at,
                warmup,
                seconds,
                interval,
                out,
            ),
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    merged = ClientResult()
    for _ in procs:
        part: ClientResult = out.get(timeout=warmup + seconds + 120)
        merged.latencies_ms += part.latencies_ms
        merged.errors += part.errors
        merged.answered += part.answered
        for k, v in part.statuses.items():
            merged.statuses[k] = merged.statuses.get(k, 0) + v
        for kind, n in part.bodies.items():
            merged.bodies[kind] = merged.bodies.get(kind, 0) + n
    for p in procs:
        p.join(10)
    return merged


def measure(served: Serve, run: Callable[[], ClientResult]) -> ClientResult:
    """``run()``, with the service's CPU time and the whole machine's over the same span."""
    db_before = served.database_cpu()
    cpu, busy, started = served.cpu_seconds(), machine_busy_seconds(), time.perf_counter()
    result = run()
    result.service_cpu = served.cpu_seconds() - cpu
    db_after = served.database_cpu()
    if db_before is not None and db_after is not None:
        # A backend opened meanwhile counts from its start; one closed meanwhile is lost (run_raw keeps its own).
        result.database_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
    result.machine_busy = machine_busy_seconds() - busy
    result.elapsed = time.perf_counter() - started
    return result


def cpu_rows(result: ClientResult) -> list[tuple[str, str, str]]:
    """Table rows that tell the service's own cost from the machine's other load (other processes)."""
    per = result.service_cpu / result.answered * 1000 if result.answered else float("nan")
    cores = os.cpu_count() or 1
    database = []
    if result.database_cpu is not None and result.answered:
        db_per = result.database_cpu / result.answered * 1000
        database.append(
            ("PostgreSQL CPU per answer ms", f"{db_per:.3f}", "(the service's backends; not the WAL writer)")
        )
    return [
        (
            "service CPU per answer ms",
            f"{per:.3f}",
            f"(the service alone, on {cores} idle cores: ~{cores / per * 1000:,.0f}/s)"
            if per == per and per > 0
            else "",
        ),
        (
            "machine busy, all processes",
            f"{result.machine_busy / result.elapsed:.2f} cores",
            f"of {cores}; service {result.service_cpu / result.elapsed:.2f}",
        ),
        *database,
    ]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``protect-console serve --db DB --workers N`` in its own process group, stopped on exit."""

    def __init__(self, db: str, workers: int) -> None:
        self.db, self.workers = db, workers
        self.port = free_port()
        self.app_name = f"protect-bench-serve-{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # libpq names the service's PostgreSQL sessions, so database_cpu() finds their backends.
        env["PGAPPNAME"] = self.app_name
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        import tempfile

        self._log = tempfile.TemporaryFile()  # the access log: a file, never a pipe nobody reads
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "serve",
                "--db",
                self.db,
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"serve exited: {self._log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("serve did not answer /healthz in 60 s")
        # Every worker answers something before the clock starts (imports, first connections).
        for _ in range(4 * self.workers):
            with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as c:
                c.get("/healthz")
        return self

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the service's processes have used so far: the runner and its workers."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        if self.proc is None:
            return 0.0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def database_cpu(self) -> dict[int, float] | None:
        """PostgreSQL: CPU seconds so far of each backend serving this service (by pid); None on SQLite."""
        if not self.db.startswith("postgresql"):
            return None
        import psycopg

        with psycopg.connect(self.db.replace("postgresql+psycopg:", "postgresql:", 1), autocommit=True) as conn:
            pids = [
                r[0]
                for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.app_name,))
            ]
        return {pid: t for pid in pids if (t := _cpu_of(pid)) is not None}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _cpu_of(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found + [g for c in found for g in _children(c)]


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (to tell the service's share from other load)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def chunks(items: list[T], parts: int) -> Iterator[list[T]]:
    for i in range(parts):
        yield items[i::parts]


def table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'what':{width}} {'measured':>14}   goal", f"{'-' * width} {'-' * 14}   {'-' * 24}"]
    lines += [f"{name:{width}} {value:>14}   {goal}" for name, value, goal in rows]
    return "\n".join(lines)
