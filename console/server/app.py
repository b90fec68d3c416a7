"""The FastAPI application: the Protect MFA service and its admin API.

``create_app`` builds it around an open store (tests, the demo, single-process ``serve``);
``app_from_env`` is the factory uvicorn's worker processes call under ``serve --workers N``:
each worker opens its own connections to the database named in ``PROTECT_SERVE_DB``. Workers
share nothing but the database, so every rule is enforced there (row locks, conditional
updates, constraints). Process memory holds only what the database confirms per request: the hot
routes (TOTP verify, push) keep API keys and the settings document in small caches, and read the
key's revocation and the settings' version in the same statement as the user (services/keys.py,
services/settings.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.types import Receive, Scope, Send

from .clock import Clock
from .errors import document_errors, install_error_handlers
from .health import watch_sqlite_file
from .hot_routes import HOT_PATHS, HotRoutes
from .limits import Limits, RequestGuard
from .metrics import MetricsMiddleware
from .routers import device, keys, ops, protect, pushendpoints, resource, systemusers
from .services.users import gather_counts, warm_search
from .store import CannotConnect, Store, buffer_advice, connect_reason, open_store

# The resource router first: its two hot routes are matched before the admin API's many others
# (routing tries each route in order). No path of one router shadows another's.
ROUTERS = (resource.router, systemusers.router, pushendpoints.router, protect.router, device.router, keys.router)

SERVE_DB_ENV = "PROTECT_SERVE_DB"  # set by `serve` for its worker processes
METRICS_KEY_ENV = "PROTECT_METRICS_KEY"  # "1": /metrics needs an API key
WORKER_RETRY_SECONDS = 2.0  # a worker that finds the database down waits this long before it exits


class ProtectApp(FastAPI):
    """The FastAPI app, with the two hot routes' ordinary requests answered before Starlette's middleware
    stack and FastAPI's routing (hot_routes.py); every other request, and every unusual one to those
    routes, goes through FastAPI as usual. Every HTTP request first passes the limits' checks (limits.py)."""

    def __init__(self, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.limits = limits
        self._hot = HotRoutes(super().__call__, self)
        self._guard = RequestGuard(super().__call__, self._hot, HOT_PATHS, self, limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._guard(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    store: Store | str | Path,
    *,
    clock: Clock | None = None,
    metrics_require_key: bool = False,
    limits: Limits | None = None,
) -> FastAPI:
    if not isinstance(store, Store):
        store = open_store(store)
    app = ProtectApp(
        title="Protect MFA service",
        version="0.1.0",
        description="Push and TOTP multi-factor authentication with a JumpCloud-shaped admin API.",
        # No OpenTelemetry (metrics are Prometheus, metrics.py): not even its per-request "is it set up?" check.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        limits=limits or Limits(),
    )
    if store.is_sqlite and store.engine.url.database not in (None, "", ":memory:"):
        watch_sqlite_file(store.engine, Path(store.engine.url.database))
    app.state.store = store
    app.state.clock = clock or Clock()
    app.state.metrics_require_key = metrics_require_key
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ops.router)
    document_errors(app, ROUTERS)  # every operation's error statuses, derived from its route (errors.py)
    return app


def app_from_env() -> FastAPI:
    """The app factory for uvicorn workers (``console.server.app:app_from_env``, ``factory=True``)."""
    db = os.environ.get(SERVE_DB_ENV)
    if not db:
        raise RuntimeError(f"{SERVE_DB_ENV} is not set: start workers with `protect-console serve --workers N`")
    try:
        store = open_store(db)
    except (CannotConnect, OperationalError) as exc:
        # A worker (re)started while the database is down (uvicorn replaces a worker that died or hung):
        # one line instead of a traceback, a pause so replacements do not spin, then exit 1, which the
        # supervisor answers with another worker (its "can never start" code is 3, which would stop serve).
        reason = str(exc) if isinstance(exc, CannotConnect) else connect_reason(exc)
        logging.getLogger("uvicorn.error").error("worker not started: the database does not answer: %s", reason)
        time.sleep(WORKER_RETRY_SECONDS)
        raise SystemExit(1) from None
    app = create_app(store, metrics_require_key=os.environ.get(METRICS_KEY_ENV) == "1", limits=Limits.from_env())
    # Beside the worker's first requests, not before them: a worker that listens late takes no share of the
    # first connections (the kernel hands them to the workers already accepting on the shared socket).
    threading.Thread(target=warm_up_then_gather, args=(app,), name="protect-warm-up", daemon=True).start()
    return app


def warm_up_then_gather(app: FastAPI) -> None:
    warm_up(app)
    keep_counts_gathered(app)


WARM_CONNECTIONS = 2  # a search's own, and the one that stores its count (services/users.py, _keep_count)


def warm_up(app: FastAPI) -> None:
    """In a serving process, before it listens: what would otherwise land in its first requests (a new
    process's first search cost 55-75 ms against 15-30 ms after, bench/first_search.py): the search
    statements compiled (services/users.py, warm_search), the pool's first connections opened, and one full
    garbage collection. A new process has counted no long-lived objects yet, so its first full collection
    (~60 ms over start-up's objects) comes after ten young ones, within the first requests; after one here,
    the next waits until a quarter as many objects again have piled up. (``gc.freeze()`` was tried first and
    reverted in e78171b for an outage-test failure with the symptom of a bug found later: pooled connections
    with no file identity, see health.opened_this_file.)

    Once per serving process (``serve``; each ``--workers`` process, beside its first requests), never per
    app: tests make many. Best effort: a database that fails here fails the first request as it would anyway."""
    store = app.state.store
    try:
        with store.read() as conn:
            advice = buffer_advice(conn)
        if advice:
            logging.getLogger("uvicorn.error").warning("%s", advice)
        with contextlib.ExitStack() as opened:
            for n in range(WARM_CONNECTIONS):  # each in use while the next opens: the pool keeps both
                conn = opened.enter_context(store.engine.connect())
                with conn.begin():
                    warm_search(conn, app.state.clock.now(), walks=n == 0)  # compiled once, for the engine
    except SQLAlchemyError as exc:
        logging.getLogger("uvicorn.error").warning("warm-up skipped: %s", exc.__class__.__name__)
    gc.collect()


GATHER_CHECK_SECONDS = 60.0  # between looks at whether the search counts are due to be gathered


def keep_counts_gathered(app: FastAPI, stop: threading.Event | None = None) -> None:
    """In a serving process, for its life (a daemon thread) or until ``stop`` is set: gather the search counts
    whenever they are due (services/users.py, gather_counts: after a bulk load, or once the names changed
    enough), one process at a time. A database that fails is tried again at the next look."""
    log = logging.getLogger("uvicorn.error")
    stop = stop or threading.Event()
    while not stop.is_set():
        started = time.monotonic()
        try:
            stored = gather_counts(app.state.store)
        except SQLAlchemyError as exc:
            log.warning("search counts not gathered: %s", exc.__class__.__name__)
        else:
            if stored is not None:
                log.info("search counts gathered: %d stored in %.0f s", stored, time.monotonic() - started)
        stop.wait(GATHER_CHECK_SECONDS)


def start_gathering_counts(app: FastAPI) -> threading.Event:
    """Start keep_counts_gathered in a daemon thread; set the event returned to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=keep_counts_gathered, args=(app, stop), name="protect-count-gathering")
    thread.daemon = True
    thread.start()
    return stop
