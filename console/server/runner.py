"""Run the service in a background thread: for the demo and for tests over real loopback."""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from typing import Any
from urllib.parse import quote, unquote_plus

import uvicorn
import uvicorn.logging
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import api_routes, dependants
from .limits import LIMITS_ENV, ConnectionGuard, GuardedH11Protocol, Limits, protocol_for

# uvloop for the event loop (a dependency, see pyproject; named so a missing one fails loudly).
LOOP = "uvloop"
HTTP_ENV = "PROTECT_SERVE_HTTP"  # "h11": the pure-Python parser even with httptools installed (an A/B, a fallback)


def guarded_protocol() -> type[ConnectionGuard]:
    """The HTTP protocol with the connection limits (limits.py): httptools' when it is installed (a
    dependency, see pyproject; a fifth of h11's CPU per request), else h11's."""
    if os.environ.get(HTTP_ENV, "").lower() != "h11":
        try:
            from .httptools_protocol import GuardedHttpToolsProtocol
        except ImportError:
            pass
        else:
            return GuardedHttpToolsProtocol
    return GuardedH11Protocol


def _by_name(protocol: type[ConnectionGuard]) -> str:
    """How ``serve --workers``' processes load ``protocol`` (uvicorn imports it by name)."""
    return f"{protocol.__module__}:{protocol.__qualname__}"


# ----------------------------------------------------------------------------------------------- logs
#
# ``serve`` keeps stdout for the bootstrap key alone (cli.cmd_serve): everything here goes to stderr, the
# access lines to stderr or to the file given by ``serve --access-log``. An access line names the time,
# the client's address, the method, the path (ids are fine there), the names of the query parameters the
# routes declare (never a value: searches carry emails), the status and the duration; never a body or a header.

ACCESS_LOGGER = "protect.access"
UNDECLARED = "*"  # a query parameter no route declares: its name could be anything a client typed
_access = logging.getLogger(ACCESS_LOGGER)


class AccessFormatter(logging.Formatter):
    """``2026-12-02T11:40:03.412Z <message>``: UTC, to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class ServiceFormatter(uvicorn.logging.DefaultFormatter):
    """uvicorn's format for the service's messages; a traceback keeps each exception's first line only.

    The lines after it can carry request data: PostgreSQL's ``DETAIL:  Key (email)=(…) already exists``
    under an unexpected constraint violation, say (SQLAlchemy already hides the statement's parameters).
    """

    def formatException(self, ei: Any) -> str:
        chain, exc = [], ei[1]
        while exc is not None and exc not in chain:
            chain.append(exc)
            exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
        parts = []
        for exc in reversed(chain):
            lines = str(exc).strip().splitlines()
            cut = " […]" if len(lines) > 1 else ""
            parts.append(
                "Traceback (most recent call last):\n"
                + "".join(traceback.format_tb(exc.__traceback__))
                + f"{type(exc).__module__}.{type(exc).__qualname__}: {lines[0] if lines else ''}{cut}"
            )
        return "\n\nwhich led to:\n\n".join(parts)


def log_config(access_log: str | None = None) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``serve`` (every worker process applies it too): the service's and
    uvicorn's messages on stderr; the access lines on stderr, or appended to the file ``access_log``."""
    access_handler: dict[str, Any] = (
        {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
        if access_log is None
        else {"class": "logging.FileHandler", "filename": access_log, "encoding": "utf-8", "delay": True}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": f"{__name__}.ServiceFormatter", "fmt": "%(levelprefix)s %(message)s", "use_colors": None},
            "access": {"()": f"{__name__}.AccessFormatter", "fmt": "%(asctime)s %(message)s"},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", **access_handler},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            # uvicorn's own access line carries the query string: never used (access_log=False), never shown.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "protect.server": {"handlers": ["default"], "level": "INFO", "propagate": False},
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def declared_query_names(app: FastAPI) -> frozenset[str]:
    """Every query parameter name some route of ``app`` declares."""
    return frozenset(
        param.alias
        for route in api_routes(app.routes)
        for dependant in dependants(route.dependant)
        for param in dependant.query_params
    )


def query_names(query_string: bytes, declared: frozenset[str]) -> str:
    """``?search&limit``: the parameters' names, each undeclared one as ``*``; never a value."""
    names = []
    for pair in query_string.split(b"&"):
        if pair:
            name = unquote_plus(pair.partition(b"=")[0].decode("latin-1"))
            names.append(name if name in declared else UNDECLARED)
    return "?" + "&".join(names) if names else ""


class AccessLog:
    """ASGI middleware: one access line per HTTP request once it is answered (module comment above)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.declared = declared_query_names(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what uvicorn answers when the app fails before it starts a response

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._line(scope, status, time.perf_counter() - started)

    def _line(self, scope: Scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else "-"
        if not address.isprintable():  # a trusted proxy's X-Forwarded-For may hold any visible byte
            address = address.encode("unicode_escape").decode("ascii")
        # raw_path: as sent, percent-encoded (h11 admits only visible ASCII in it), so no line can be forged.
        path = scope["raw_path"].decode("ascii", "backslashreplace") if scope.get("raw_path") else quote(scope["path"])
        query = query_names(scope["query_string"], self.declared) if scope.get("query_string") else ""
        _access.info("%s %s %s%s %d %.1fms", address, scope["method"], path, query, status, seconds * 1000)


def app_from_env_with_access_log() -> ASGIApp:
    """The worker processes' app factory when the access log is on (``console.server.app.app_from_env``'s app)."""
    from .app import app_from_env

    return AccessLog(app_from_env())


def _limited(limits: Limits) -> dict[str, Any]:
    """uvicorn settings for the limits: idle keep-alive; the in-progress cap is the app's (503 {"message"})."""
    return {"timeout_keep_alive": limits.keep_alive}


def _limits_of(app: FastAPI) -> Limits:
    return getattr(app.state, "limits", None) or Limits()


class ServerThread:
    """uvicorn on ``host:port`` in a daemon thread. Port 0 picks a free port, kept across restarts.
    ``protocol``: the HTTP protocol, by default the one ``serve`` uses (tests run the limits on both)."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
        protocol: type[ConnectionGuard] | None = None,
    ) -> None:
        self.app = app
        self.protocol = protocol or guarded_protocol()
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
            http=protocol_for(_limits_of(self.app), self.protocol),
            loop=LOOP,
            **_limited(_limits_of(self.app)),
        )
        server = uvicorn.Server(config)  # off the main thread it leaves the signals alone (uvicorn >= 0.29)
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

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_app(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    access_log: bool = True,
    access_log_file: str | None = None,
) -> None:
    """``serve`` in one process: uvicorn in the foreground, with the app's limits (limits.py) and logs (above)."""
    from .app import start_gathering_counts, warm_up

    warm_up(app)
    start_gathering_counts(app)
    uvicorn.run(
        AccessLog(app) if access_log else app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        log_config=log_config(access_log_file),
        access_log=False,
        http=protocol_for(_limits_of(app), guarded_protocol()),
        loop=LOOP,
        **_limited(_limits_of(app)),
    )


def serve_workers(
    db: str,
    *,
    host: str,
    port: int,
    workers: int,
    metrics_require_key: bool = False,
    log_level: str = "info",
    access_log: bool = True,
    access_log_file: str | None = None,
    limits: Limits | None = None,
) -> None:
    """``serve --workers N``: N uvicorn worker processes over the app factory, sharing one listening socket.

    Each worker opens its own connections to ``db``; they share nothing else. Metrics are
    collected in prometheus-client's multiprocess mode in a temporary directory made here
    (before any worker imports prometheus-client) and removed when the service stops.
    """
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
        # A line per request cost about a fifth of a TOTP check's CPU (uvicorn's own line, bench/totp_verify.py).
        factory = f"{__name__}:app_from_env_with_access_log" if access_log else "console.server.app:app_from_env"
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            lifespan="off",
            log_config=log_config(access_log_file),
            access_log=False,
            http=_by_name(guarded_protocol()),
            loop=LOOP,
            **_limited(limits),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
