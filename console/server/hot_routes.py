"""The two hot routes answered at the ASGI level: ``POST /api/v2/protect/totp/verify`` and ``POST /api/v2/protect/push``.

Login flows call them for every sign-in, so their cost per request is the service's capacity. FastAPI's
routing, dependency solving and response validation cost more than the decision itself, so a request
that is well-formed, from a key the process knows and whose role may call the route, is answered here
with the same service functions the FastAPI routes call (``console/server/services``). Everything else
(no key, an unknown key, a role without the permission, a body that does not validate, an audited
caller) goes on to the FastAPI route unchanged, with the body replayed, and gets exactly the answer it
got before. The FastAPI routes stay the declaration (OpenAPI, docs) and the path for those cases.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..models import ROLE_PERMISSIONS, Permission, PushCreated, PushRequest, TotpVerifyRequest
from .batching import Batcher
from .limits import key_problem, read_limited, replay, too_large
from .metrics import count_http
from .routers import resource
from .services import push as push_service
from .services import totp as totp_service
from .services.common import Principal
from .services.keys import cached_authenticate
from .services.ratelimit import client_address

TOTP_VERIFY = "/api/v2/protect/totp/verify"
PUSH = "/api/v2/protect/push"
_JSON = b"application/json"
MAX_BODY = 64 * 1024  # the hot routes' bodies are a few hundred bytes
# An answer: status, JSON body, extra headers.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


# PostgreSQL: the push batches are decided in threads, at most this many per process (anyio's default pool is 40).
# Each holds its thread for one or two round trips of well under a millisecond (commits do not wait for the
# flush: store.HOT_ROUTES_SYNCHRONOUS_COMMIT); with 32 threads per process fighting for the GIL the service
# spent ~2.0 ms of CPU per push admission, with 8 ~1.1 ms (bench/push_admission.py, 64 clients, a loaded
# machine). TOTP checks take no thread: their two statements are awaited on the event loop
# (Store.run_steps_on_loop), which cut the service's CPU per check by about a third against 8 threads.
# On SQLite both decide inline: microseconds under the write gate, less than a thread hop.
HOT_THREADS = 8


# One limiter per event loop (a limiter belongs to the loop it was made on; tests run several).
_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


# PostgreSQL: the push admissions that arrive together are decided together (console/server/batching.py),
# at most BATCH_SIZE in one and BATCHES_IN_FLIGHT batches at a time per process: while one is in the database
# the next gathers what arrives meanwhile. One in flight makes the larger batches: at 64 clients 1,132/s p99
# 116 ms with one, 916/s p99 168 ms with two, 392/s p99 535 ms one admission at a time (a loaded machine,
# load 5-8; bench/push_admission.py). TOTP checks stay one at a time: batched (services.totp had it, see git
# history) they measured 0.1 ms more service CPU per check at 8 clients, where batches held ~1.3-2 checks.
BATCH_SIZE = 64
BATCHES_IN_FLIGHT = 1


def _push_batcher(app: FastAPI) -> Batcher[push_service.PushAdmission, PushCreated]:
    """This app's push batcher on the running loop (made on first use)."""
    loop = asyncio.get_running_loop()
    batchers = _BATCHERS.setdefault(loop, {})
    batcher = batchers.get(id(app))
    if batcher is None:
        state = app.state
        limiter = _LIMITERS.get(loop)
        if limiter is None:
            limiter = _LIMITERS[loop] = anyio.CapacityLimiter(HOT_THREADS)
        batcher = batchers[id(app)] = Batcher(
            lambda admissions: push_service.create_many(state.store, admissions, state.clock.now()),
            lambda admission: admission.body.userId,
            limiter=limiter,
            max_size=BATCH_SIZE,
            in_flight=BATCHES_IN_FLIGHT,
        )
    return batcher


_BATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Any]] = weakref.WeakKeyDictionary()


async def _totp(app: FastAPI, actor: Principal, body: bytes, address: str | None) -> Answer | None:
    if Permission.READ in ROLE_PERMISSIONS[actor.role]:
        return None  # the support desk's check is audited: the FastAPI route does it
    request = TotpVerifyRequest.model_validate_json(body)
    store, now = app.state.store, app.state.clock.now()
    if store.is_sqlite:  # microseconds under the write gate: inline (see HOT_THREADS)
        result = totp_service.verify_unaudited(store, actor, request.userId, request.code, now, address=address)
    else:  # round trips awaited on the loop: no thread per check (Store.run_steps_on_loop)
        result = await totp_service.verify_unaudited_on_loop(
            store, actor, request.userId, request.code, now, address=address
        )
    return 200, result.model_dump_json().encode(), []


async def _push(app: FastAPI, actor: Principal, body: bytes, address: str | None) -> Answer | None:
    request = PushRequest.model_validate_json(body)
    store = app.state.store
    if not store.is_sqlite:
        created = await _push_batcher(app).decide(push_service.PushAdmission(actor, request, address))
        return 201, created.model_dump_json().encode(), []
    created = push_service.create_attempt(store, request, app.state.clock.now(), actor=actor, address=address)
    return 201, created.model_dump_json().encode(), []


_ROUTES: dict[str, tuple[Permission, Callable[[FastAPI, Principal, bytes, str | None], Awaitable[Any]]]] = {
    TOTP_VERIFY: (Permission.TOTP_VERIFY, _totp),
    PUSH: (Permission.PUSH_CREATE, _push),
}


HOT_PATHS = frozenset(_ROUTES)


class HotRoutes:
    """Answers the hot routes' ordinary requests (see the module doc); ``app`` gets every other one.

    Called by :class:`~console.server.app.ProtectApp` before Starlette's middleware stack, so it counts
    its own answers in the metrics (by route template, like the metrics middleware does).
    """

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self._routes: dict[str, Any] = {}

    def _route(self, path: str) -> Any:
        route = self._routes.get(path)
        if route is None:
            route = next(
                r
                for r in resource.router.routes
                if getattr(r, "path", None) == path and "POST" in getattr(r, "methods", ())
            )
            self._routes[path] = route
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = _ROUTES.get(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if hot is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        key = content_type = None
        length = 0
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = int(value)  # h11 admits only digits here
        # Before the body is read: its size, then the key (limits.py).
        state = self.fastapi.state
        actor = None
        if length > state.limits.max_body:
            problem: Exception | None = too_large(state.limits)
        else:
            try:
                actor = cached_authenticate(state.store, key.decode("latin-1"), state.clock.now()) if key else None
                problem = None if actor is not None else await key_problem(self.fastapi, scope, key)
            except Exception as exc:  # noqa: BLE001 - a database outage: the app's handler answers (503)
                problem = exc
        if problem is not None:
            await self._send(send, scope, await self._problem(scope, problem), started)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= MAX_BODY:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        if more:  # a chunked body past MAX_BODY: not an ordinary request, but bounded all the same
            rest = await read_limited(receive, state.limits.max_body - size)
            if rest is None:
                await self._send(send, scope, await self._problem(scope, too_large(state.limits)), started)
                return
            chunks.append(rest)
            more = False
        body = b"".join(chunks)
        permission, handle = hot
        answer = None
        if actor is not None and content_type is not None and content_type.split(b";")[0].strip() == _JSON:
            try:
                answer = await self._answer(scope, actor, permission, handle, body)
            except Exception as exc:  # noqa: BLE001 - answered by the app's own handler, as the route would be
                answer = await self._problem(scope, exc)
        if answer is None:
            await self.app(scope, replay(body, receive, more=more), send)
            return
        await self._send(send, scope, answer, started)

    async def _send(self, send: Send, scope: Scope, answer: Answer, started: float) -> None:
        status, payload, headers = answer
        route = scope["route"] = self._route(scope["path"])
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", _JSON), (b"content-length", str(len(payload)).encode()), *headers],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        finally:
            count_http("POST", route.path, status, time.perf_counter() - started)

    async def _answer(
        self, scope: Scope, actor: Principal, permission: Permission, handle: Callable[..., Awaitable[Any]], body: bytes
    ) -> Answer | None:
        if permission not in ROLE_PERMISSIONS[actor.role]:
            return None  # 401/403: the route says it
        try:
            answer: Answer | None = await handle(self.fastapi, actor, body, client_address(scope.get("client")))
        except ValidationError:
            return None  # 422 naming the field: the route says it
        return answer

    async def _problem(self, scope: Scope, exc: Exception) -> Answer:
        handlers = self.fastapi.exception_handlers
        handler = next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)
        if handler is None:
            raise exc
        response = handler(Request(scope), exc)
        if inspect.isawaitable(response):
            response = await response
        headers = [(k, v) for k, v in response.raw_headers if k not in (b"content-type", b"content-length")]
        return response.status_code, bytes(response.body), headers
