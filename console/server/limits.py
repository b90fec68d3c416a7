"""Bounded resources: what one request and one connection may cost the service.

Two layers, both acting before a request body is read:

* :class:`RequestGuard`, the first thing :class:`~console.server.app.ProtectApp` runs for every HTTP
  request: it caps the requests in progress (503), refuses a body over ``max_body`` (413) from its
  ``Content-Length`` or while reading a chunked one, and checks the ``x-api-key`` of an ``/api/`` request
  that carries a body (401), so an unauthenticated client cannot make the service read or parse one.
* :class:`ConnectionGuard`, mixed into uvicorn's HTTP protocols (:class:`GuardedH11Protocol` here,
  ``httptools_protocol.GuardedHttpToolsProtocol`` when httptools is installed): a connection must complete
  each request head within ``header_timeout`` seconds of opening (or of its previous answer), so idle
  and slow-header connections are closed; and the open connections stay under ``max_connections``
  (from the open-file limit) by closing the longest-idle one when a new one arrives.

The values live in :class:`Limits`; ``serve`` passes them to its worker processes in ``PROTECT_SERVE_LIMITS``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ApiProblem, api_routes, dependants, invalid_query
from .metrics import METHODS, UNMATCHED, count_http

LIMITS_ENV = "PROTECT_SERVE_LIMITS"  # set by `serve --workers N` for its worker processes
MIB = 1024 * 1024
FD_RESERVE = 64  # open files kept for the database, logs and the listening socket, out of RLIMIT_NOFILE
API_PREFIX = "/api/"  # every route under it takes an x-api-key (tests/server/test_openapi_contract.py checks)

_IDLE_ORDER = itertools.count()  # when a connection became idle, in order (the loop's clock is too coarse)

TOO_LARGE = "request body larger than {limit} bytes: refused before reading it"
BUSY = "the service is busy (too many requests in progress); try again shortly"


@dataclass(frozen=True)
class Limits:
    """What one process of the service admits. The defaults are the documented ones (README)."""

    max_body: int = MIB  # bytes of request body
    max_requests: int = 256  # requests in progress in this process; more get 503
    max_connections: int = 0  # open connections; 0: the open-file limit minus FD_RESERVE
    header_timeout: float = 10.0  # seconds to send a complete request head
    keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)

    def connection_cap(self) -> int:
        if self.max_connections:
            return self.max_connections
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 65536
        return max(16, soft - FD_RESERVE)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Limits:
        raw = os.environ.get(LIMITS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
    payload = json.dumps({"message": message, **extra}, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


# On an answer given before the body is read: uvicorn then closes the connection instead of reading the
# rest of the body to discard it.
_CLOSE = {"Connection": "close"}


def too_large(limits: Limits) -> ApiProblem:
    return ApiProblem(413, TOO_LARGE.format(limit=limits.max_body), headers=_CLOSE)


async def send_problem(send: Send, problem: ApiProblem) -> None:
    await _answer(send, problem.status, problem.message, problem.headers, **problem.extra)


async def _refusal(fastapi: Any, scope: Scope, authenticate: Any, credentials: Any) -> ApiProblem | None:
    """Run one of auth.py's dependencies as the route would: None when it admits the caller, else its 401,
    with ``Connection: close``: the request's body is then never read."""
    scope.setdefault("app", fastapi)  # what Request.app reads; Starlette sets the same later
    request = Request(scope)
    try:
        if fastapi.state.store.is_sqlite:
            authenticate(request, credentials)
        else:  # a network round trip: not on the event loop
            await anyio.to_thread.run_sync(authenticate, request, credentials)
    except ApiProblem as problem:
        problem.headers = {**(problem.headers or {}), **_CLOSE}
        return problem
    return None


async def key_problem(fastapi: Any, scope: Scope, key: bytes | None) -> ApiProblem | None:
    """None when ``key`` is a live API key; else the 401 the routes' own authentication gives (auth.py)."""
    from .auth import current_principal

    return await _refusal(fastapi, scope, current_principal, key.decode("latin-1") if key else None)


async def device_token_problem(fastapi: Any, scope: Scope, authorization: bytes | None) -> ApiProblem | None:
    """None when ``Authorization: Bearer`` carries an enrolled device's token; else the 401 the device routes give."""
    from .auth import current_device

    scheme, _, token = (authorization or b"").decode("latin-1").partition(" ")
    bearer = scheme.lower() == "bearer" and token.strip()
    credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip()) if bearer else None
    return await _refusal(fastapi, scope, current_device, credentials)


async def read_limited(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes (the rest is never read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive, *, more: bool = False) -> Receive:
    """``receive`` as if nothing had been read: ``body`` first (``more``: the stream has more of it), then
    whatever the stream says next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


class RequestGuard:
    """The checks every HTTP request passes before its body is read (module doc). ``hot`` answers the hot
    routes, which check their key themselves at the same point (hot_routes.py); ``app`` every other request."""

    def __init__(self, app: ASGIApp, hot: ASGIApp, hot_paths: frozenset[str], fastapi: Any, limits: Limits) -> None:
        self.app, self.hot, self.hot_paths, self.fastapi, self.limits = app, hot, hot_paths, fastapi, limits
        self.in_progress = 0
        self._device_paths: list[Any] | None = None

    def _takes_device_token(self, path: str) -> bool:
        """Whether a route on ``path`` authenticates a device (auth.current_device), from the routes themselves."""
        if self._device_paths is None:
            from .auth import current_device

            self._device_paths = [
                r.path_regex
                for r in api_routes(self.fastapi.routes)
                if any(d.call is current_device for d in dependants(r.dependant))
            ]
        return any(pattern.match(path) for pattern in self._device_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.in_progress >= self.limits.max_requests:
            await self._refuse(scope, send, ApiProblem(503, BUSY, headers={"Retry-After": "1"}))
            return
        self.in_progress += 1
        try:
            if scope["path"] in self.hot_paths and scope["method"] == "POST":
                await self.hot(scope, receive, send)
            else:
                await self._checked(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        length, chunked, key, authorization = 0, False, None, None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)  # h11 admits only digits here
            elif name == b"transfer-encoding":
                chunked = True  # h11 admits only chunked
            elif name == b"x-api-key":
                key = value
            elif name == b"authorization":
                authorization = value
        if length > self.limits.max_body:
            await self._refuse(scope, send, too_large(self.limits))
            return
        if scope["query_string"] and (problem := invalid_query(scope["query_string"])) is not None:
            await self._refuse(scope, send, problem)
            return
        if length or chunked:  # the caller first, then the body
            problem = None
            try:
                if scope["path"].startswith(API_PREFIX):
                    problem = await key_problem(self.fastapi, scope, key)
                elif self._takes_device_token(scope["path"]):
                    problem = await device_token_problem(self.fastapi, scope, authorization)
            except Exception as exc:  # noqa: BLE001 - a database outage: the app's own handler answers (503)
                await self._handled(scope, receive, send, exc)
                return
            if problem is not None:
                await self._refuse(scope, send, problem)
                return
        if chunked:
            body = await read_limited(receive, self.limits.max_body)
            if body is None:
                await self._refuse(scope, send, too_large(self.limits))
                return
            receive = replay(body, receive)
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, problem: ApiProblem) -> None:
        """Answer ``problem``, counted in the metrics as the app counts its answers (no route matched yet)."""
        started = time.perf_counter()
        await send_problem(send, problem)
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        count_http(method, UNMATCHED, problem.status, time.perf_counter() - started)

    async def _handled(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handlers = self.fastapi.exception_handlers
        handler = next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)
        if handler is None:
            raise exc
        response = await handler(Request(scope), exc)
        await response(scope, receive, send)


class ConnectionGuard(asyncio.Protocol):
    """The head deadline and the connection cap (module doc), mixed into uvicorn's HTTP protocols.

    The protocol calls :meth:`_head_complete` once a request head is parsed. ``limits`` is set on a
    subclass per server (:func:`protocol_for`); the classes themselves, which ``serve``'s worker
    processes load by name, read them from ``PROTECT_SERVE_LIMITS``.
    """

    limits: Limits | None = None
    # uvicorn's protocols set these
    transport: Any
    loop: Any
    connections: Any
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = Limits.from_env()
        self._limits: Limits = cls.limits
        self._head_deadline: Any = None
        self._idle_since = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._await_head()
        if len(self.connections) > self._limits.connection_cap():
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # uvicorn's protocols define it
        # A pipelined request may have started in it: its head is already in.
        if not self.transport.is_closing() and not self._in_request():
            self._await_head()

    def _head_complete(self) -> None:
        if self._head_deadline is not None and self._in_request():
            self._cancel_head_deadline()  # the app has the request now

    def _in_request(self) -> bool:
        cycle = self.cycle  # None until the first request comes (uvicorn types it as always set)
        return cycle is not None and not cycle.response_complete

    def _await_head(self) -> None:
        self._cancel_head_deadline()
        self._idle_since = next(_IDLE_ORDER)
        self._head_deadline = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the connection idle the longest (no request in progress); with none idle, this new one."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, ConnectionGuard) and c is not self and not c._in_request() and not c.transport.is_closing()
        ]
        victim = min(idle, key=lambda c: c._idle_since) if idle else self
        victim.transport.close()


class GuardedH11Protocol(ConnectionGuard, H11Protocol):
    """uvicorn's pure-Python h11 protocol with the guards: used when httptools is not installed."""

    def handle_events(self) -> None:
        super().handle_events()
        self._head_complete()


def protocol_for(limits: Limits, protocol: type[ConnectionGuard]) -> type[ConnectionGuard]:
    """``protocol`` for one in-process server (tests, the demo): its own limits, not the environment's."""
    return type(protocol.__name__, (protocol,), {"limits": limits})
