"""Run the service in a background thread: for the demo and for tests over real loopback."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from .limits import LIMITS_ENV, GuardedH11Protocol, Limits, protocol_for


# uvloop for the event loop (a dependency, see pyproject; named so a missing one fails loudly). The HTTP
# parser stays h11: httptools measured no faster on the hot routes here (2,463 vs 2,524 TOTP checks/s,
# bench/totp_verify.py, 2 workers) and answers a header with a control character (an If-Match from a
# hostile client) with a bare "400 Invalid HTTP request" before the app can name the header.
HTTP = "h11"
LOOP = "uvloop"
# The h11 protocol with the connection limits (limits.py); worker processes load it by this name.
GUARDED_HTTP = f"{GuardedH11Protocol.__module__}:{GuardedH11Protocol.__qualname__}"


def _limited(limits: Limits) -> dict:
    """uvicorn settings for the limits: idle keep-alive; the in-progress cap is the app's (503 {"message"})."""
    return {"timeout_keep_alive": limits.keep_alive}


def _limits_of(app: FastAPI) -> Limits:
    return getattr(app.state, "limits", None) or Limits()


class ServerThread:
    """uvicorn on ``host:port`` in a daemon thread. Port 0 picks a free port, kept across restarts."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.quiet = quiet
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            access_log=False,
            # In the demo the terminal belongs to the console: no log lines on it.
            log_config=None if self.quiet else uvicorn.config.LOGGING_CONFIG,
            log_level="critical" if self.quiet else "info",
            lifespan="off",
            http=protocol_for(_limits_of(self.app)),
            loop=LOOP,
            **_limited(_limits_of(self.app)),
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._server = server
        self._thread = threading.Thread(target=server.run, name="protect-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> "ServerThread":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_app(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """``serve`` in one process: uvicorn in the foreground, with the app's limits (limits.py)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="off",
                http=protocol_for(_limits_of(app)), loop=LOOP, **_limited(_limits_of(app)))


def serve_workers(db: str, *, host: str, port: int, workers: int, metrics_require_key: bool = False,
                  log_level: str = "info", access_log: bool = True, limits: Limits | None = None) -> None:
    """``serve --workers N``: N uvicorn worker processes over the app factory, sharing one listening socket.

    Each worker opens its own connections to ``db``; they share nothing else. Metrics are
    collected in prometheus-client's multiprocess mode in a temporary directory made here
    (before any worker imports prometheus-client) and removed when the service stops.
    """
    import os
    import shutil
    import tempfile

    from .app import METRICS_KEY_ENV, SERVE_DB_ENV
    from .metrics import MULTIPROC_ENV

    metrics_dir = tempfile.mkdtemp(prefix="protect-metrics-")
    limits = limits or Limits()
    saved = {name: os.environ.get(name) for name in (SERVE_DB_ENV, METRICS_KEY_ENV, MULTIPROC_ENV, LIMITS_ENV)}
    os.environ[SERVE_DB_ENV] = db
    os.environ[LIMITS_ENV] = limits.to_env()
    os.environ[METRICS_KEY_ENV] = "1" if metrics_require_key else "0"
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "console.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
            log_level=log_level, lifespan="off", http=GUARDED_HTTP, loop=LOOP, **_limited(limits),
            # A line per request costs about a fifth of a TOTP check's CPU (bench/totp_verify.py).
            access_log=access_log,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
