"""Async client for the Protect admin API: the only code that speaks HTTP.

Every method returns the pydantic models of :mod:`console.models` or raises an
:class:`ApiError` subclass carrying the server's message. Reads (GET) are
retried with backoff on connection errors, 429 and 5xx; changes are never
retried blindly, since a lost response may hide a change that happened.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Self, TypeVar, cast

# httpx's own command-line tool (httpx._main) pulls in click and pygments, ~40 ms of the console's
# start-up for a `main` this program never calls: a None entry makes that optional import fail,
# and httpx then defines a stub instead (its documented fallback when the CLI extras are missing).
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# httpcore imports the optional `sniffio` inside every async request (to tell asyncio from trio); when
# it is not installed, each of those imports searched sys.path again: ~0.5 ms of the console's CPU per
# request (page fetches while keys are held). A None entry makes the failed import instant; httpcore
# then assumes asyncio, as it does without sniffio.
try:
    import sniffio  # noqa: F401
except ImportError:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from .models import (
    BOMBING_THRESHOLD,
    AuditEvent,
    DeviceEnrollResult,
    DeviceInfo,
    DevicePush,
    DeviceSettingsResult,
    DiagnosticsAccepted,
    EnrollmentCode,
    Page,
    PrivacyDevice,
    PrivacySummary,
    ProtectSettings,
    ProtectSettingsPatch,
    PushAttempt,
    PushBlockLifted,
    PushBlockResult,
    PushCreated,
    PushEndpoint,
    PushStats,
    SystemUser,
    SystemUserCreate,
    SystemUserUpdate,
    TotpEnrollResult,
    TotpResetResult,
    TotpVerifyResult,
    WhoAmI,
)

M = TypeVar("M", bound=BaseModel)

USER_ID_RE = re.compile(r"^[0-9a-f]{24}$")
# What an exact key may look like: an email has one "@" and a dot in its domain; a username is one
# word (no spaces or control characters, as the server requires); anything else is only a search.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_USERNAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,1024}$")
REQUEST_TIMEOUT = 10.0  # seconds a call may take in all, its retries included (a profile's ``timeout``)
CONNECT_TIMEOUT = 3.0  # seconds for one connection attempt, within that
DEFAULT_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
CURSOR_END = "end"  # before=end: the last rows of a listing (keyset paging)


def user_key_kind(text: str) -> str | None:
    """Which exact key ``text`` could be: ``"id"``, ``"email"``, ``"username"``, or None (only a search).

    An id-shaped or email-shaped text may still be a username: :meth:`ProtectClient.lookup_user` tries
    that too."""
    text = text.strip()
    if USER_ID_RE.match(text):
        return "id"
    if _EMAIL_RE.match(text):
        return "email"
    if _USERNAME_RE.match(text):
        return "username"
    return None


@dataclass
class CursorPage(Generic[M]):
    """One page of a keyset-paged list (see the wire contract: ``after``/``before``/``count``).

    ``total`` is None when the server was asked not to count; ``cursors`` is False for a server that
    predates keyset paging (its answers carry no cursor fields: page it with skip/limit only)."""

    results: list[M]
    total: int | None
    start_cursor: str | None
    end_cursor: str | None
    cursors: bool


def _no_tls_needed(base_url: str) -> bool:
    """A plain-http URL with no proxy configured: this client will never speak TLS."""
    if not base_url.lower().startswith("http://"):
        return False
    return not any(os.environ.get(name) for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def _unused_tls_context() -> ssl.SSLContext:
    # httpx builds a default context (loading the CA bundle, ~60 ms at start-up) even for http://
    # URLs. For those a context with no trust anchors stands in: still verifying, so should TLS ever
    # be attempted it fails closed rather than trusting anything.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ApiError(Exception):
    """The server refused a request, or could not be reached."""

    status: int = 0

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class BackendUnavailable(ApiError):
    """No answer: connection refused, timed out, or the reply was not the API's."""


class InvalidConnection(ApiError):
    """The URL or API key given cannot be used for a request at all (nothing was sent)."""


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    """The resource changed since it was read (stale ETag)."""

    status = 412


class ValidationFailed(ApiError):
    status = 422


class RateLimited(ApiError):
    status = 429


class ServerError(ApiError):
    status = 500


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    428: PreconditionFailed,
    422: ValidationFailed,
    429: RateLimited,
}


def _error_from_response(response: httpx.Response) -> ApiError:
    message = ""
    retry_after: float | None = None
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or "")
            if body.get("retryAfter") is not None:
                retry_after = float(body["retryAfter"])
    except ValueError:
        pass
    if retry_after is None and response.headers.get("retry-after", "").isdigit():
        retry_after = float(response.headers["retry-after"])
    if not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ApiError
    return cls(message, status=response.status_code, retry_after=retry_after)


def _iso(value: datetime) -> str:
    return value.isoformat()


Params = list[tuple[str, "str | int"]]
# (path, params, the answer) -> the GETs a warm start sends next (see WarmStart.begin)
FollowUp = Callable[[str, Params, httpx.Response], Sequence[tuple[str, Params]]]


class WarmStart:
    """GETs sent while the console is still importing its UI, answered to the first matching request.

    The console's first screen always asks for the same things (who am I, the first page of users
    with its total). Sent from a thread as soon as the connection profile is known, they travel
    and the server answers while Textual loads (~0.3 s), so the total is on screen with the first
    frames instead of a round trip later. Each answer is used once, and only within ``max_age``
    seconds; anything unusual (an error status, a failure, no answer yet by then) is simply not used,
    and the request goes out as usual, with its retries and error reporting.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        requests: Sequence[tuple[str, Params]],
        *,
        follow: FollowUp | None = None,
        max_age: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_age = max_age
        self._started = time.monotonic()
        self._follow = follow
        self._answers: dict[tuple[str, tuple[tuple[str, str | int], ...]], Future[httpx.Response]] = {}
        self._sends: list[tuple[tuple[str, tuple[tuple[str, str | int], ...]], Future[httpx.Response]]] = []
        self._add(requests)
        self._thread = threading.Thread(target=self._run, args=(api_key,), name="warm-start", daemon=True)
        self._thread.start()

    @classmethod
    def begin(
        cls, base_url: str, api_key: str, requests: Sequence[tuple[str, Params]], *, follow: FollowUp | None = None
    ) -> WarmStart | None:
        """Start, for a plain-http URL without a proxy (else None: nothing to gain over TLS set-up twice).

        ``follow(path, params, response)``: further GETs to send once that answer is in (the pages the
        first screen asks for next, which need a cursor from the first page)."""
        if not _no_tls_needed(base_url) or not api_key:
            return None
        return cls(base_url, api_key, requests, follow=follow)

    def _add(self, requests: Sequence[tuple[str, Params]]) -> None:
        for path, params in requests:
            key = (path, tuple(params))
            if key not in self._answers:
                answer: Future[httpx.Response] = Future()
                self._answers[key] = answer
                self._sends.append((key, answer))  # the thread's own list: take() pops from the dict

    def _run(self, api_key: str) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url,
                timeout=DEFAULT_TIMEOUT,
                verify=_unused_tls_context(),
                headers={"accept": "application/json", "user-agent": "protect-console", "x-api-key": api_key},
            ) as http:
                sent = 0
                while sent < len(self._sends):  # follow-ups are appended while this runs
                    (path, params), answer = self._sends[sent]
                    sent += 1
                    try:
                        response = http.get(path, params=list(params))
                        response.read()
                    except Exception as exc:  # noqa: BLE001 - unused then: the console asks again
                        answer.set_exception(exc)
                        continue
                    answer.set_result(response)
                    if self._follow is not None and response.status_code < 400:
                        try:
                            self._add(self._follow(path, list(params), response))
                        except Exception:  # noqa: BLE001 - an answer it cannot read: nothing to follow
                            pass
        except Exception as exc:  # noqa: BLE001
            for _request, answer in self._sends:
                if not answer.done():
                    answer.set_exception(exc)

    def take_now(self, path: str, params: Params) -> httpx.Response | None:
        """The early answer to exactly this GET if it has already arrived (never waits), else None.

        Nothing is used up when it has not arrived yet: the request's :meth:`take` still gets it."""
        key = (path, tuple(params))
        answer = self._answers.get(key)
        if answer is None or not answer.done() or time.monotonic() - self._started > self.max_age:
            return None
        del self._answers[key]
        if answer.exception() is not None:
            return None
        response = answer.result()
        return response if response.status_code < 400 else None

    async def take(self, path: str, params: Any) -> httpx.Response | None:
        """The early answer to exactly this GET (once), or None."""
        if params is None:
            params = []
        if not isinstance(params, list):
            return None
        answer = self._answers.pop((path, tuple(params)), None)
        if answer is None or time.monotonic() - self._started > self.max_age:
            return None
        try:
            response = await asyncio.wait_for(asyncio.wrap_future(answer), timeout=DEFAULT_TIMEOUT.read)
        except Exception:  # noqa: BLE001 - failed or too slow: asked again as usual
            return None
        return response if response.status_code < 400 else None


class _Http:
    """Shared request/retry machinery for the admin and device clients."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.25,
        max_retry_wait: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        warm: WarmStart | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown_url = shown_url(self.base_url)
        # The whole call, retries included, gives up after ``timeout``; one connection attempt
        # after at most CONNECT_TIMEOUT of it, so a retry can still go to another address.
        self.timeout = REQUEST_TIMEOUT if timeout is None else float(timeout)
        self._warm = warm if warm is not None and warm.base_url == base_url.rstrip("/") else None
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        extra: dict[str, Any] = {}
        if transport is None and _no_tls_needed(self.base_url):
            extra["verify"] = _unused_tls_context()
        try:
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"accept": "application/json", "user-agent": "protect-console", **headers},
                timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
                transport=transport,
                **extra,
            )
        except httpx.InvalidURL as exc:
            raise InvalidConnection(f"cannot use the URL {self.shown_url}: {exc}") from None
        except UnicodeError:  # a header value httpx cannot encode: never repeat it, it may be the key
            raise InvalidConnection(
                "cannot send the API key: it is not plain ASCII (check where it came from)"
            ) from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._attempts(method, path, deadline, params=params, json=json, headers=headers)
        except TimeoutError:
            raise BackendUnavailable(f"no answer from {self.shown_url} within {self.timeout:g} s") from None
        except httpx.InvalidURL as exc:
            raise InvalidConnection(f"cannot use the URL {self.shown_url}: {exc}") from None
        except UnicodeError:  # a bad host name or header: never repeat the header, it may be the key
            raise InvalidConnection(
                f"cannot send a request to {self.shown_url}: the host name or the API key is not valid (check both)"
            ) from None

    async def _attempts(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """Send once, and again (reads only) while an error may pass and ``deadline`` leaves time."""
        idempotent = method in ("GET", "HEAD")
        if self._warm is not None and method == "GET" and kwargs["json"] is None and kwargs["headers"] is None:
            early = await self._warm.take(path, kwargs["params"])
            if early is not None:
                return early
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                delay = self._delay(attempt + 1, None)
                again = not isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol))  # same every time
                if again and idempotent and attempt < self.retries and loop.time() + delay < deadline:
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                if isinstance(exc, httpx.TimeoutException):
                    raise BackendUnavailable(f"no answer from {self.shown_url} within {self.timeout:g} s") from exc
                if isinstance(exc, httpx.LocalProtocolError):  # h11's message quotes the header: not repeated
                    raise InvalidConnection(
                        f"cannot send a request to {self.shown_url}: a header is not valid in HTTP "
                        f"(does the API key have a line break or control character?)"
                    ) from None
                raise BackendUnavailable(f"cannot reach {self.shown_url}: {_describe(exc)}") from exc
            if response.status_code < 400:
                return response
            error = _error_from_response(response)
            retryable = response.status_code == 429 or response.status_code >= 500
            delay = self._delay(attempt + 1, error.retry_after)
            if idempotent and retryable and attempt < self.retries and loop.time() + delay < deadline:
                attempt += 1
                await asyncio.sleep(delay)
                continue
            raise error

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_wait)
        base: float = self.backoff * (2 ** (attempt - 1))
        return min(base + random.uniform(0, base / 2), self.max_retry_wait)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.decode(await self.request(method, path, **kwargs), path)

    def decode(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise BackendUnavailable(f"{self.shown_url} answered {path} with something that is not JSON") from exc

    async def model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return cast(M, _parse(model, await self.json(method, path, **kwargs), path))

    async def page(self, item: type[M], path: str, method: str = "GET", **kwargs: Any) -> Page[M]:
        return cast("Page[M]", _parse(Page[item], await self.json(method, path, **kwargs), path))  # type: ignore[valid-type]

    async def cursor_page(self, item: type[M], path: str, method: str = "GET", **kwargs: Any) -> CursorPage[M]:
        """A list answer read for keyset paging: the rows, the total (None if not counted), the cursors."""
        data = await self.json(method, path, **kwargs)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ApiError(f"unexpected answer from {path}: no results list")
        total = data.get("totalCount")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
            raise ApiError(f"unexpected answer from {path}: totalCount is not a count")
        start, end = data.get("startCursor"), data.get("endCursor")
        if not all(c is None or isinstance(c, str) for c in (start, end)):
            raise ApiError(f"unexpected answer from {path}: a cursor is not a string")
        results = _parse(list[item], data["results"], path)  # type: ignore[valid-type]
        return CursorPage(results, total, start, end, "startCursor" in data or "endCursor" in data)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _parse(model: Any, data: Any, path: str) -> Any:
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        adapter = _ADAPTERS.get(model)
        if adapter is None:  # building an adapter costs far more than using one: once per type
            adapter = _ADAPTERS[model] = TypeAdapter(model)
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise ApiError(f"unexpected answer from {path}: {exc.error_count()} field(s) did not match") from exc


def shown_url(url: str) -> str:
    """``url`` fit to show: a password in it masked (``user:***@``)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@", r"\1:***@", url.strip())


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and the members of any exception group among them."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend((current.__cause__, current.__context__))
    return found


def _describe(exc: Exception) -> str:
    """Why a request could not be sent or answered, in words (never a header: the API key travels in one)."""
    if isinstance(exc, httpx.ConnectError):
        causes = _causes(exc)
        if any(isinstance(c, socket.gaierror) for c in causes):
            return "the host name could not be resolved (check the host in the URL, or DNS)"
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return "connection refused (is the service running, on that port?)"
        tls = [c for c in causes if isinstance(c, ssl.SSLError)]
        if tls:
            reason = getattr(tls[0], "verify_message", None) or tls[0].reason or "no reason given"
            return f"the TLS handshake failed ({str(reason).lower()})"
        reasons = [c.strerror for c in causes if isinstance(c, OSError) and c.strerror]
        return f"cannot connect ({reasons[0].lower()})" if reasons else "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection or did not answer in HTTP (is the scheme, http or https, right?)"
    if isinstance(exc, httpx.ProxyError):
        return "the proxy refused the connection"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
        return "the connection was lost"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the URL must start with http:// or https://"
    return type(exc).__name__


class ProtectClient(_Http):
    """The admin API, authenticated with an ``x-api-key``."""

    def __init__(self, base_url: str, api_key: str, **kwargs: Any) -> None:
        super().__init__(base_url, {"x-api-key": api_key}, **kwargs)

    # ------------------------------------------------------------- identity
    async def whoami(self) -> WhoAmI:
        return await self.model(WhoAmI, "GET", ProtectClient.WHOAMI_PATH)

    def whoami_if_answered(self) -> WhoAmI | None:
        """Who the key is, from the warm start's answer if it is already here (no waiting), else None.

        The console sets it before its first screen is built, so the keys and the header are right in
        the first frame instead of being redrawn when the answer would have been taken later."""
        path = ProtectClient.WHOAMI_PATH
        early = self._warm.take_now(path, []) if self._warm is not None else None
        if early is None:
            return None
        try:
            return cast(WhoAmI, _parse(WhoAmI, self.decode(early, path), path))
        except ApiError:
            return None  # asked again as usual, and reported if it is still wrong

    # ---------------------------------------------------------------- users
    async def list_users(
        self,
        *,
        skip: int = 0,
        limit: int = 100,
        sort: str | Sequence[str] | None = None,
        filters: Sequence[str] = (),
        search: str | None = None,
    ) -> Page[SystemUser]:
        """``filters`` are ``field:$op:value`` strings, ANDed; ``sort`` like ``-created username``."""
        path, params = self.user_page_request(skip=skip, limit=limit, sort=sort, filters=filters, search=search)
        return await self.page(SystemUser, path, params=params)

    async def user_page(
        self,
        *,
        skip: int = 0,
        limit: int = 100,
        sort: str | Sequence[str] | None = None,
        filters: Sequence[str] = (),
        search: str | None = None,
        after: str | None = None,
        before: str | None = None,
        count: bool = True,
    ) -> CursorPage[SystemUser]:
        """:meth:`list_users` with keyset paging: ``after``/``before`` a cursor (``before="end"``: the
        last ``limit`` rows), ``skip`` counted from the cursor, ``count=False`` once the total is known.

        A server without keyset paging ignores those parameters: the answer says so
        (``cursors=False``), and the caller must then page with skip/limit only."""
        path, params = self.user_page_request(
            skip=skip, limit=limit, sort=sort, filters=filters, search=search, after=after, before=before, count=count
        )
        return await self.cursor_page(SystemUser, path, params=params)

    @staticmethod
    def user_page_request(
        *,
        skip: int = 0,
        limit: int = 100,
        sort: str | Sequence[str] | None = None,
        filters: Sequence[str] = (),
        search: str | None = None,
        after: str | None = None,
        before: str | None = None,
        count: bool = True,
    ) -> tuple[str, Params]:
        """The GET :meth:`user_page` sends (path, query), e.g. for a :class:`WarmStart`."""
        params: Params = [("skip", skip), ("limit", limit)]
        if sort:
            params.append(("sort", sort if isinstance(sort, str) else " ".join(sort)))
        params.extend(("filter", f) for f in filters)
        if search:
            params.append(("search", search))
        if after is not None:
            params.append(("after", after))
        if before is not None:
            params.append(("before", before))
        if not count:
            params.append(("count", "false"))
        return "/api/systemusers", params

    WHOAMI_PATH = "/api/v2/protect/whoami"

    async def search_users(
        self,
        term: str,
        *,
        fields: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[SystemUser]:
        search_filter: dict[str, Any] = {"searchTerm": term}
        if fields:
            search_filter["fields"] = list(fields)
        body: dict[str, Any] = {"searchFilter": search_filter}
        if filter:
            body["filter"] = dict(filter)
        return await self.page(
            SystemUser, "/api/search/systemusers", method="POST", params={"skip": skip, "limit": limit}, json=body
        )

    async def get_user(self, user_id: str) -> SystemUser:
        return await self.model(SystemUser, "GET", f"/api/systemusers/{user_id}")

    async def find_user(self, ref: str) -> SystemUser:
        """A user by id, email or username (exact), as an admin types it."""
        user = await self.lookup_user(ref)
        if user is None:
            raise NotFound(f"no user with id, username or email {ref.strip()!r}")
        return user

    async def lookup_user(self, ref: str) -> SystemUser | None:
        """The user whose id, email or username is exactly ``ref`` (emails and usernames case-folded),
        or None. Each question is answered by a unique index: one round trip, two at most (an
        id-shaped or email-shaped ref may also be someone's username; both are asked at once)."""
        ref = ref.strip()
        kind = user_key_kind(ref)
        if kind is None:
            return None

        async def by_id() -> SystemUser | None:
            try:
                return await self.get_user(ref)
            except (NotFound, BadRequest):
                return None

        async def by_field(field: str) -> SystemUser | None:
            page = await self.list_users(filters=[f"{field}:$eq:{ref}"], limit=1)
            return page.results[0] if page.results else None

        if kind == "id":
            asks = [by_id(), by_field("username")]
        elif kind == "email":
            asks = [by_field("email"), by_field("username")]
        else:
            asks = [by_field("username")]
        for found in await asyncio.gather(*asks):
            if found is not None:
                return found
        return None

    async def create_user(self, user: SystemUserCreate) -> SystemUser:
        return await self.model(SystemUser, "POST", "/api/systemusers", json=user.model_dump(exclude_none=True))

    async def update_user(self, user_id: str, change: SystemUserUpdate) -> SystemUser:
        return await self.model(
            SystemUser, "PUT", f"/api/systemusers/{user_id}", json=change.model_dump(exclude_none=True, mode="json")
        )

    async def reset_mfa(self, user_id: str, *, grace_days: int | None = None) -> SystemUser:
        """Reset TOTP and remove the push device; a grace period lets the user enroll again."""
        body: dict[str, Any] = {"exclusion": bool(grace_days)}
        if grace_days:
            body["exclusionDays"] = grace_days
        return await self.model(SystemUser, "POST", f"/api/systemusers/{user_id}/resetmfa", json=body)

    async def unlock_user(self, user_id: str) -> SystemUser:
        """Clear ``account_locked`` (admin only); answers the user."""
        return await self.model(SystemUser, "POST", f"/api/systemusers/{user_id}/unlock")

    async def delete_user(self, user_id: str) -> SystemUser:
        """Delete the user (admin only); answers the user as it was. Audit and attempt history are kept."""
        return await self.model(SystemUser, "DELETE", f"/api/systemusers/{user_id}")

    async def reset_totp(self, user_id: str) -> TotpResetResult:
        return await self.model(TotpResetResult, "POST", f"/api/v2/protect/users/{user_id}/totp/reset")

    async def create_enrollment(self, user_id: str) -> EnrollmentCode:
        return await self.model(EnrollmentCode, "POST", f"/api/v2/protect/users/{user_id}/enrollments")

    async def verify_totp(self, user_id: str, code: str) -> TotpVerifyResult:
        return await self.model(
            TotpVerifyResult, "POST", "/api/v2/protect/totp/verify", json={"userId": user_id, "code": code}
        )

    # --------------------------------------------------------- push devices
    async def push_endpoints(self, user_id: str) -> list[PushEndpoint]:
        endpoints = _parse(
            list[PushEndpoint], await self.json("GET", f"/api/v2/users/{user_id}/pushendpoints"), "pushendpoints"
        )
        return cast("list[PushEndpoint]", endpoints)

    async def get_push_endpoint(self, user_id: str, endpoint_id: str) -> PushEndpoint:
        return await self.model(PushEndpoint, "GET", f"/api/v2/users/{user_id}/pushendpoints/{endpoint_id}")

    async def update_push_endpoint(
        self, user_id: str, endpoint_id: str, *, name: str | None = None, state: str | None = None
    ) -> PushEndpoint:
        body = {k: v for k, v in {"name": name, "state": state}.items() if v is not None}
        return await self.model(
            PushEndpoint, "PATCH", f"/api/v2/users/{user_id}/pushendpoints/{endpoint_id}", json=body
        )

    async def unenroll_device(self, user_id: str, endpoint_id: str) -> PushEndpoint:
        return await self.model(PushEndpoint, "DELETE", f"/api/v2/users/{user_id}/pushendpoints/{endpoint_id}")

    # ------------------------------------------------------------- settings
    async def get_settings(self) -> tuple[ProtectSettings, str]:
        """The settings and their ETag, to send back with :meth:`update_settings`."""
        response = await self.request("GET", "/api/v2/protect/settings")
        return _parse(ProtectSettings, self.decode(response, "settings"), "settings"), response.headers.get("etag", "")

    async def update_settings(
        self, change: ProtectSettingsPatch | Mapping[str, Any], etag: str
    ) -> tuple[ProtectSettings, str]:
        """Apply a partial change; raises :class:`PreconditionFailed` if someone changed them first."""
        body = change.model_dump(exclude_none=True) if isinstance(change, BaseModel) else dict(change)
        response = await self.request("PATCH", "/api/v2/protect/settings", json=body, headers={"if-match": etag})
        return _parse(ProtectSettings, self.decode(response, "settings"), "settings"), response.headers.get("etag", "")

    # -------------------------------------------------------------- privacy
    async def privacy_summary(self) -> PrivacySummary:
        return await self.model(PrivacySummary, "GET", "/api/v2/protect/privacy/summary")

    async def privacy_devices(
        self, *, opted_out: bool | None = None, skip: int = 0, limit: int = 100
    ) -> Page[PrivacyDevice]:
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        if opted_out is not None:
            params["optedOut"] = "true" if opted_out else "false"
        return await self.page(PrivacyDevice, "/api/v2/protect/privacy/devices", params=params)

    # ------------------------------------------------------- activity/audit
    async def push_attempts(
        self,
        *,
        user_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[PushAttempt]:
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        if user_id:
            params["userId"] = user_id
        if status:
            params["status"] = status
        if since:
            params["since"] = _iso(since)
        return await self.page(PushAttempt, "/api/v2/protect/pushattempts", params=params)

    async def push_stats(self, user_id: str, *, since: datetime | None = None) -> PushStats:
        """One user's push attempts counted on the server, since ``since`` (default: the bombing window)."""
        params: dict[str, Any] = {}
        if since:
            params["since"] = _iso(since)
        return await self.model(PushStats, "GET", f"/api/v2/protect/users/{user_id}/pushstats", params=params)

    async def push_suspects(
        self, *, since: datetime | None = None, min_hostile: int = BOMBING_THRESHOLD, limit: int = 50
    ) -> Page[PushStats]:
        """Users with at least ``min_hostile`` blocked+denied attempts since ``since``, or a block in force."""
        params: dict[str, Any] = {"minHostile": min_hostile, "limit": limit}
        if since:
            params["since"] = _iso(since)
        return await self.page(PushStats, "/api/v2/protect/pushstats", params=params)

    async def block_push(
        self,
        user_id: str,
        *,
        minutes: int = 15,
        cancel_pending: bool = True,
        require_user_verification: bool = False,
    ) -> PushBlockResult:
        """Stop attack: cancel pending pushes and refuse new ones for ``minutes``."""
        body = {
            "minutes": minutes,
            "cancelPending": cancel_pending,
            "requireUserVerification": require_user_verification,
        }
        return await self.model(PushBlockResult, "POST", f"/api/v2/protect/users/{user_id}/push/block", json=body)

    async def lift_push_block(self, user_id: str) -> PushBlockLifted:
        return await self.model(PushBlockLifted, "DELETE", f"/api/v2/protect/users/{user_id}/push/block")

    async def audit(
        self,
        *,
        skip: int = 0,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        kind: str | None = None,
    ) -> Page[AuditEvent]:
        """``action`` is exact, or a prefix when it ends with ``.``; ``target`` a user id or username;
        ``kind`` is ``admin`` (an API key did it) or ``device`` (the app/device did)."""
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        for name, value in (("actor", actor), ("action", action), ("target", target), ("kind", kind)):
            if value:
                params[name] = value
        return await self.page(AuditEvent, "/api/v2/protect/audit", params=params)

    # ------------------------------------------------- resource-facing API
    async def create_push(
        self, user_id: str, resource: str, *, app: str | None = None, location: str | None = None, ip: str | None = None
    ) -> PushCreated:
        body = {"userId": user_id, "resource": resource, "context": {"app": app, "location": location, "ip": ip}}
        return await self.model(PushCreated, "POST", "/api/v2/protect/push", json=body)

    async def get_push(self, attempt_id: str) -> PushAttempt:
        return await self.model(PushAttempt, "GET", f"/api/v2/protect/push/{attempt_id}")


class DeviceClient(_Http):
    """What the Protect mobile app calls; used by the demo simulator and tests."""

    def __init__(self, base_url: str, token: str = "", **kwargs: Any) -> None:
        super().__init__(base_url, {"authorization": f"Bearer {token}"} if token else {}, **kwargs)

    def use_token(self, token: str) -> None:
        self._http.headers["authorization"] = f"Bearer {token}"

    async def enroll(self, code: str, name: str, device: DeviceInfo) -> DeviceEnrollResult:
        body = {"code": code, "name": name, "device": device.model_dump()}
        result = await self.model(DeviceEnrollResult, "POST", "/device/v1/enroll", json=body)
        self.use_token(result.token)
        return result

    async def pushes(self) -> list[DevicePush]:
        return cast("list[DevicePush]", _parse(list[DevicePush], await self.json("GET", "/device/v1/pushes"), "pushes"))

    async def respond(
        self, attempt_id: str, decision: str, *, user_verified: bool = False, report_fraud: bool = False
    ) -> PushAttempt:
        body = {"decision": decision, "userVerified": user_verified, "reportFraud": report_fraud}
        return await self.model(PushAttempt, "POST", f"/device/v1/pushes/{attempt_id}/respond", json=body)

    async def settings(
        self, *, diagnostics_opt_out: bool | None = None, notifications_enabled: bool | None = None
    ) -> DeviceSettingsResult:
        body = {
            k: v
            for k, v in {
                "diagnosticsOptOut": diagnostics_opt_out,
                "notificationsEnabled": notifications_enabled,
            }.items()
            if v is not None
        }
        return await self.model(DeviceSettingsResult, "PUT", "/device/v1/settings", json=body)

    async def diagnostics(self, report: Mapping[str, Any]) -> DiagnosticsAccepted:
        return await self.model(DiagnosticsAccepted, "POST", "/device/v1/diagnostics", json=dict(report))

    async def enroll_totp(self) -> TotpEnrollResult:
        return await self.model(TotpEnrollResult, "POST", "/device/v1/totp")
