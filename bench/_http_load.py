"""A lean HTTP/1.1 load generator for the hot-path benchmarks, and a ``serve --workers N`` to aim it at.

Each client process keeps ``connections`` keep-alive sockets busy (one request in flight per socket)
with a small selector loop and pre-formatted requests: a client that costs a few microseconds per
request, so that on a 2-core machine most of the CPU is left to the service under test. Latency is
measured per request, from the send to the last byte of the answer.
"""

from __future__ import annotations

import multiprocessing
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)  # requests answered inside the measured window
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: dict[str, int] = field(default_factory=dict)  # answer classes, as the bench's classify() names them
    errors: int = 0


# A request source: given the connection's index, the next (body bytes) to POST, or None when done.
Source = Callable[[int], "bytes | None"]
Classify = Callable[[int, bytes], str]


def _request(host: str, path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _client(
    index: int, host: str, port: int, path: str, key: str, connections: int, make_source: Callable[[int], Source],
    classify: Classify, start_at: float, warmup: float, seconds: float, out: "multiprocessing.Queue",
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = make_source(index)
    result = ClientResult()
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    for _ in range(connections):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    measure_from, stop_at = start_at + warmup, start_at + warmup + seconds
    sent_at = [0.0] * connections
    buffers = [b""] * connections
    now = time.time()
    if start_at > now:
        time.sleep(start_at - now)
    perf_offset = time.time() - time.perf_counter()  # perf_counter -> wall clock, to compare with the window

    def send(i: int) -> bool:
        body = source(i)
        if body is None:
            return False
        sent_at[i] = time.perf_counter()
        socks[i].sendall(_request(host, path, key, body))
        return True

    live = 0
    for i, s in enumerate(socks):
        if send(i):
            selector.register(s, selectors.EVENT_READ, i)
            live += 1
    while live:
        for selected, _ in selector.select(timeout=5.0):
            i = selected.data
            chunk = socks[i].recv(65536)
            if not chunk:
                result.errors += 1
                selector.unregister(socks[i])
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
            status = int(head[9:12])
            wall = done + perf_offset
            if measure_from <= wall <= stop_at:
                result.latencies_ms.append((done - sent_at[i]) * 1000)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                kind = classify(status, body)
                result.bodies[kind] = result.bodies.get(kind, 0) + 1
            if wall >= stop_at or not send(i):
                selector.unregister(socks[i])
                live -= 1
    for s in socks:
        s.close()
    out.put(result)


def run_clients(
    host: str, port: int, path: str, key: str, *, processes: int, connections: int,
    make_source: Callable[[int], Source], classify: Classify, warmup: float, seconds: float,
) -> ClientResult:
    """Run ``processes`` client processes of ``connections`` sockets each; the merged result of the window."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5 + 0.02 * processes  # every client connected before the clock starts
    procs = [
        ctx.Process(target=_client, args=(i, host, port, path, key, connections, make_source, classify, start_at,
                                          warmup, seconds, out), daemon=True)
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    merged = ClientResult()
    for _ in procs:
        part: ClientResult = out.get(timeout=warmup + seconds + 120)
        merged.latencies_ms += part.latencies_ms
        merged.errors += part.errors
        for k, v in part.statuses.items():
            merged.statuses[k] = merged.statuses.get(k, 0) + v
        for k, v in part.bodies.items():
            merged.bodies[k] = merged.bodies.get(k, 0) + v
    for p in procs:
        p.join(10)
    return merged


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``protect-console serve --db DB --workers N`` in its own process group, stopped on exit."""

    def __init__(self, db: str, workers: int) -> None:
        self.db, self.workers = db, workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Serve":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        import tempfile

        self._log = tempfile.TemporaryFile()  # the access log: a file, never a pipe nobody reads
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--db", self.db, "--port", str(self.port),
             "--workers", str(self.workers)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
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

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def chunks(items: list, parts: int) -> Iterator[list]:
    for i in range(parts):
        yield items[i::parts]


def table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'what':{width}} {'measured':>14}   goal", f"{'-' * width} {'-' * 14}   {'-' * 24}"]
    lines += [f"{name:{width}} {value:>14}   {goal}" for name, value, goal in rows]
    return "\n".join(lines)
