"""Real ``protect-console serve`` processes for the ops and multi-process tests.

Each :class:`Served` is one ``serve`` (optionally ``--workers N``) on 127.0.0.1 and a free port,
started as a subprocess with its own temp dir (``TMPDIR``: the metrics directory the runner
makes lands there, so tests can see it, and see it removed). Stopping sends SIGTERM to the
process group and waits; nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0  # two cores shared by several test runs: generous, and a bounded loop
IPHONE = {
    "make": "Apple",
    "model": "iPhone 15",
    "os": "iOS",
    "osVersion": "17.4",
    "appVersion": "2.6.0",
    "uvEnabled": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    db: str
    home: Path
    workers: int = 1
    extra: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen | None = None
    key: str = ""  # the bootstrap admin key, when this instance created it
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "serve.log"

    @property
    def out(self) -> Path:
        return self.home / "serve.out"

    def start(self) -> Served:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "tmp").mkdir(exist_ok=True)
        self.port = self.port or free_port()
        env = {**os.environ, "TMPDIR": str(self.home / "tmp"), "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        argv = [
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
            *self.extra,
        ]
        with open(self.out, "wb") as out, open(self.log, "wb") as log:  # the child keeps its own copies
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise AssertionError(f"serve did not answer /healthz in {START_TIMEOUT:.0f} s")
        # stdout: the bootstrap key alone, when serve created one (the logs are on stderr: serve.log).
        self.stdout_lines = self.out.read_text().splitlines()
        keys = [line for line in self.stdout_lines if line.startswith("pc_")]
        self.key = keys[0] if keys else ""
        return self

    def worker_pids(self) -> set[int]:
        """The pids that wrote metric samples (multiprocess mode): the workers that served requests."""
        pids: set[int] = set()
        for path in (self.home / "tmp").glob("protect-metrics-*/*.db"):
            pids.add(int(path.stem.rsplit("_", 1)[1]))
        return pids

    def metrics_dirs(self) -> list[Path]:
        return list((self.home / "tmp").glob("protect-metrics-*"))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # SIGTERM to serve alone, as systemd's KillMode=mixed does: it stops its workers itself. Sent to
            # the whole group, a worker could exit first and the supervisor start a replacement during shutdown.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code


def client(url: str, key: str = "", **headers: str) -> httpx.AsyncClient:
    all_headers = {"x-api-key": key, **headers} if key else dict(headers)
    return httpx.AsyncClient(
        base_url=url,
        headers=all_headers,
        timeout=60,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=0),
    )


async def create_user(http: httpx.AsyncClient, name: str) -> dict:
    response = await http.post("/api/systemusers", json={"username": name, "email": f"{name}@ops.example"})
    assert response.status_code == 201, response.text
    return response.json()


async def enrollment_code(http: httpx.AsyncClient, user_id: str) -> str:
    response = await http.post(f"/api/v2/protect/users/{user_id}/enrollments")
    assert response.status_code in (200, 201), response.text
    return response.json()["code"]


async def enroll(http: httpx.AsyncClient, user_id: str) -> str:
    code = await enrollment_code(http, user_id)
    response = await http.post("/device/v1/enroll", json={"code": code, "name": "phone", "device": IPHONE})
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def enroll_totp(http: httpx.AsyncClient, token: str) -> pyotp.TOTP:
    response = await http.post("/device/v1/totp", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 201), response.text
    secret = parse_qs(urlparse(response.json()["otpauthUri"]).query)["secret"][0]
    return pyotp.TOTP(secret)


async def set_push_cap(http: httpx.AsyncClient, maximum: int) -> None:
    got = await http.get("/api/v2/protect/settings")
    response = await http.patch(
        "/api/v2/protect/settings",
        json={"push": {"concurrentLimit": {"enabled": True, "max": maximum}}},
        headers={"if-match": got.headers["etag"]},
    )
    assert response.status_code == 200, response.text


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        if sample != name:
            continue
        got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
        if got == want:
            return float(value)
    return 0.0
